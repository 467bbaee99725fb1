"""Hostile and broken inputs, through the command line as a user meets them.

One case per class of the hardening issue: each asserts the exit status, that the message
names the file (and row), that no traceback is printed, and that nothing already stored is lost.
"""

from __future__ import annotations

import errno
import json
import sqlite3
import zipfile

import numpy as np
import pandas as pd
import pytest
from agiqa_test_support import BRIGHTNESS, register
from PIL import Image
from typer.testing import CliRunner

from agiqa_bench.cli import app
from agiqa_bench.images import MAX_PIXELS_ENV

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def one_line_error(result, *needles, status=2):
    """Exit `status`, one `error:` line holding every needle, no traceback."""
    assert result.exit_code == status, result.output
    assert "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert errors, result.output
    text = " ".join(result.output.split())
    for needle in needles:
        assert needle in text, (needle, result.output)
    return text


@pytest.fixture(autouse=True)
def _pixel_cap_restored(monkeypatch):
    monkeypatch.setenv(MAX_PIXELS_ENV, "40000000")  # --max-pixels writes the variable: restored after each test


def run_args(root, out, *more):
    return ["run", "--methods", "cpbd", "--dataset", "agiqa3k", "--data-root", root, "--repeats", "1",
            "--out", out, *more]


# -- security -------------------------------------------------------------------------------
def test_a_checkpoint_with_pickled_code_is_refused_and_never_runs(tmp_path):
    import torch

    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    bad = tmp_path / "evil.pt"
    torch.save({"format": "agiqa-bench/ipiqa@1", "config": Payload()}, bad, pickle_protocol=2)
    image = tmp_path / "x.png"
    Image.new("RGB", (8, 8)).save(image)
    result = invoke("score", image, "--checkpoint", bad, "--prompt", "p", "--device", "cpu")
    one_line_error(result, "evil.pt is not a readable agiqa-bench checkpoint", "never pickled objects")
    assert not marker.exists()


def test_rows_naming_images_outside_the_image_folder_are_refused(tiny_agiqa3k, tmp_path):
    outside = tmp_path / "outside_003.png"
    Image.new("RGB", (128, 128), (9, 9, 9)).save(outside)
    labels = pd.read_csv(tiny_agiqa3k / "data.csv")
    labels.loc[3, "name"] = "../../outside_003.png"
    labels.to_csv(tiny_agiqa3k / "data.csv", index=False)
    text = one_line_error(invoke(*run_args(tiny_agiqa3k, tmp_path / "runs")), "data.csv", "outside the image folder",
                          "../../outside_003.png", "--allow-outside-root")
    assert "1 row(s)" in text


def test_a_zip_bomb_in_the_pretraining_corpus_is_skipped_naming_the_member(tmp_path):
    from diffusiondb_support import make_corpus

    corpus = make_corpus(tmp_path / "ddb", "zip")
    with zipfile.ZipFile(corpus / "part-000001.zip", "a", zipfile.ZIP_DEFLATED) as z:
        z.writestr("bomb.png", bytes(80 * 2**20))  # 80 MB of zeros, ~80 KB in the zip
        table = json.loads(z.read("part-000001.json"))
    table["bomb.png"] = {"p": "a bomb"}
    with zipfile.ZipFile(corpus / "part-000001.zip", "a") as z:  # a second json entry: the reader takes the last one
        z.writestr("part-000001.json", json.dumps(table))
    result = invoke("pretrain", "image2prompt", "--diffusiondb", corpus, "--out", tmp_path / "i2p.pt",
                    "--clip-model", "agiqa-tiny-rn", "--pretrained", "", "--threshold", "-1", "--batch-size", "6",
                    "--device", "cpu", "--workers", "0")
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "part-000001.zip:bomb.png declares 83,886,080 bytes uncompressed, over the cap" in text
    assert "Traceback" not in result.output and (tmp_path / "i2p.pt").is_file()


def test_a_decompression_bomb_image_is_refused_up_front_naming_it(tiny_agiqa3k, tmp_path):
    name = sorted((tiny_agiqa3k / "images").glob("*.png"))[5].name
    Image.new("L", (9000, 9000)).save(tiny_agiqa3k / "images" / name)  # 81 MP in ~100 KB
    one_line_error(invoke(*run_args(tiny_agiqa3k, tmp_path / "runs")), name, "81,000,000 pixels, over the cap",
                   "over the cap of 40,000,000", "--max-pixels")
    assert not (tmp_path / "runs" / "results.sqlite").exists()
    ok = invoke(*run_args(tiny_agiqa3k, tmp_path / "runs2", "--drop-bad-images"))
    assert ok.exit_code == 0 and "dropped 1 item" in ok.output


# -- input handling -------------------------------------------------------------------------
def test_corrupt_images_are_all_reported_before_any_work(tiny_agiqa3k, tmp_path):
    files = sorted((tiny_agiqa3k / "images").glob("*.png"))
    files[0].write_bytes(files[0].read_bytes()[:60])
    files[1].write_bytes(b"GIF89a but not really")
    text = one_line_error(invoke(*run_args(tiny_agiqa3k, tmp_path / "runs")), "2 image(s)", files[0].name,
                          files[1].name, "--drop-bad-images")
    assert "data.csv" in text and not (tmp_path / "runs" / "results.sqlite").exists()


@pytest.mark.parametrize("setting, needles", [
    ("ceiq.C=-1", ["ceiq.C: must be a number > 0; got -1.0"]),
    ("ceiq.C=nan", ["ceiq.C", "nan"]),
    ("ceiq.C=lots", ["ceiq.C: cannot read 'lots' as a number"]),
    ("ceiq.nope=1", ["has no parameter nope", "its parameters are"]),
    ("cpbd.x=1", ["has no parameter x"]),
    ("niqe.block_size=2", ["niqe.block_size: must be an integer >= 8; got 2"]),
    ("niqe.color_space=rgb", ["niqe.color_space: must be one of yiq, ycbcr; got 'rgb'"]),
])
def test_bad_set_values_are_refused_in_the_plan(tiny_agiqa3k, tmp_path, setting, needles):
    methods = setting.split(".")[0]
    result = invoke("run", "--methods", methods, "--dataset", "agiqa3k", "--data-root", tiny_agiqa3k, "--repeats", "1",
                    "--out", tmp_path / "runs", "--set", setting)
    one_line_error(result, *needles)
    assert not (tmp_path / "runs" / "results.sqlite").exists()  # refused before any work


def test_a_set_for_a_method_not_in_the_run_is_an_error(tiny_agiqa3k, tmp_path):
    result = invoke(*run_args(tiny_agiqa3k, tmp_path / "runs", "--set", "ceiq.C=4"))
    one_line_error(result, "--set ceiq.C", "'ceiq' is not among the methods of this run (cpbd)")
    result = invoke(*run_args(tiny_agiqa3k, tmp_path / "runs", "--set", "nosuchmethod.C=4"))
    one_line_error(result, "nosuchmethod")


def test_an_unknown_dataset_option_lists_the_accepted_ones(tiny_agiqa3k, tmp_path):
    result = invoke(*run_args(tiny_agiqa3k, tmp_path / "runs", "--dataset-opt", "nosuch=1"))
    one_line_error(result, "dataset 'agiqa3k' has no option nosuch", "it takes: images, drop_missing", "duplicates")


def test_too_many_repeats_are_refused_unless_allowed(tiny_agiqa3k, tmp_path):
    result = invoke("run", "--methods", "cpbd", "--dataset", "agiqa3k", "--data-root", tiny_agiqa3k,
                    "--repeats", "100000", "--out", tmp_path / "runs")
    one_line_error(result, "--repeats must be between 1 and 1000", "--allow-many-repeats")
    assert not (tmp_path / "runs").exists()
    one_line_error(invoke(*run_args(tiny_agiqa3k, tmp_path / "r0")[:-4], "--repeats", "0", "--out", tmp_path / "r0"),
                   "--repeats must be between 1")


# -- faults ---------------------------------------------------------------------------------
def test_a_full_disk_while_storing_stops_with_one_line_and_keeps_finished_rows(tiny_agiqa3k, tmp_path, monkeypatch):
    from agiqa_bench import store

    out = tmp_path / "runs"
    assert invoke(*run_args(tiny_agiqa3k, out)).exit_code == 0
    before = pd.read_sql("SELECT * FROM results", sqlite3.connect(out / "results.sqlite"))
    real = store.ResultStore._write

    def full(self, rows):
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(store.ResultStore, "_write", full)
    result = invoke("run", "--methods", "cpbd", "--dataset", "agiqa3k", "--data-root", tiny_agiqa3k, "--repeats", "2",
                    "--out", out, "--executor", "local", "--workers", "2")  # the driver writes: the patch applies
    one_line_error(result, "cannot write the results store", "results.sqlite", "database or disk is full",
                   "free disk space", "rerun the same command")
    monkeypatch.setattr(store.ResultStore, "_write", real)
    after = pd.read_sql("SELECT * FROM results", sqlite3.connect(out / "results.sqlite"))
    pd.testing.assert_frame_equal(before, after)  # nothing lost, nothing half-written


def test_a_full_disk_while_writing_the_splits_is_one_line(tiny_agiqa3k, tmp_path, monkeypatch):
    import agiqa_bench.outputs as outputs

    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(outputs.tempfile, "mkstemp", no_space)
    one_line_error(invoke(*run_args(tiny_agiqa3k, tmp_path / "runs")), "cannot write the splits file", "splits",
                   "No space left on device", "free disk space")


def test_an_out_folder_that_cannot_be_made_is_one_line(tiny_agiqa3k, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    one_line_error(invoke(*run_args(tiny_agiqa3k, blocker / "runs")), "cannot", "a-file")


def test_report_opens_the_store_read_only(tiny_agiqa3k, tmp_path):
    out = tmp_path / "runs"
    assert invoke(*run_args(tiny_agiqa3k, out)).exit_code == 0
    from agiqa_bench.store import ResultStore, read_results

    before = read_results(out, status=None)
    result = invoke("report", "--out", out, "--output", tmp_path / "lb.md", "--no-figures", "--bootstrap", "0")
    assert result.exit_code == 0, result.output
    pd.testing.assert_frame_equal(read_results(out, status=None), before)

    with ResultStore(out, readonly=True) as ro, pytest.raises(Exception, match="cannot write|readonly"):
        ro.write([])  # nothing to write is still refused on a read-only handle
        ro._conn.execute("CREATE TABLE x (a)")


def test_ctrl_c_says_what_was_kept_and_the_rerun_resumes(tiny_agiqa3k, tmp_path, monkeypatch):
    from agiqa_bench import jobs as runner_module  # where the executors find `job_rows`

    register(monkeypatch, BRIGHTNESS)
    real, calls = runner_module.job_rows, []

    def interrupt_second(job, plan, **kw):
        calls.append(job.split.repeat)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(job, plan, **kw)

    monkeypatch.setattr(runner_module, "job_rows", interrupt_second)
    args = ["run", "--methods", "brightness", "--dataset", "agiqa3k", "--data-root", tiny_agiqa3k, "--repeats", "3",
            "--target", "quality", "--out", tmp_path / "runs", "--executor", "serial"]  # the patch is in-process
    result = invoke(*args)
    assert result.exit_code == 130
    assert "interrupted; 1 job(s) finished in this run and kept" in result.output and "rerun the same command" in result.output
    monkeypatch.setattr(runner_module, "job_rows", real)
    again = invoke(*args)
    assert again.exit_code == 0 and "skipped 1 finished row(s)" in again.output


def test_warnings_raised_in_a_run_are_summarised_and_reported(tiny_agiqa3k, tmp_path, monkeypatch):
    import warnings

    from agiqa_test_support import Brightness

    register(monkeypatch, BRIGHTNESS)
    real = Brightness.predict

    def noisy(self, items):
        warnings.warn("prompt truncated to 77 tokens")
        return real(self, items)

    monkeypatch.setattr(Brightness, "predict", noisy)
    out = tmp_path / "runs"
    result = invoke("run", "--methods", "brightness", "--dataset", "agiqa3k", "--data-root", tiny_agiqa3k,
                    "--repeats", "2", "--target", "quality", "--out", out, "--executor", "serial")
    assert result.exit_code == 0, result.output
    assert "1 distinct warning(s)" in result.output and "brightness (2 row(s)): prompt truncated to 77 tokens" in result.output
    report = invoke("report", "--out", out, "--no-figures", "--bootstrap", "0")
    assert "## Warnings" in report.output and "prompt truncated to 77 tokens" in report.output


def test_a_16_bit_png_dataset_runs(tmp_path):
    """Not an error: a 16-bit image is read at its full range (see test_datasets for the values)."""
    root = tmp_path / "deep"
    (root / "pics").mkdir(parents=True)
    rows = []
    rng = np.random.default_rng(0)
    for i in range(30):
        Image.fromarray((rng.random((64, 64)) * 65535).astype(np.uint16)).save(root / "pics" / f"{i}.png")
        rows.append({"file": f"{i}.png", "q": float(i), "text": f"p{i}"})
    pd.DataFrame(rows).to_csv(root / "labels.csv", index=False)
    result = invoke("run", "--methods", "cpbd", "--dataset", "csv", "--data-root", root,
                    "--dataset-opt", "label=labels.csv", "--dataset-opt", "image_col=file",
                    "--dataset-opt", "prompt_col=text", "--dataset-opt", "targets=quality=q", "--images", root / "pics",
                    "--repeats", "1", "--out", tmp_path / "runs")
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize("device, needle", [("cuda", "no usable CUDA device"), ("cuda:3", "no usable CUDA device"),
                                            ("cuda:abc", "cuda:N (N a GPU index)"), ("gpu", "--device must be")])
def test_a_device_this_machine_lacks_is_refused_while_planning(device, needle, tmp_path):
    """Without a usable GPU, `--device cuda` is one line and exit 2 before any work: nothing is stored."""
    import torch

    if torch.cuda.is_available() and needle == "no usable CUDA device" and device == "cuda":
        pytest.skip("this machine has a GPU")
    out = tmp_path / "runs"
    result = invoke("run", "--methods", "cpbd", "--repeats", "1", "--device", device, "--out", out,
                    "--executor", "serial")
    one_line_error(result, needle)
    assert not (out / "results.sqlite").exists()


# -- links and special files where the harness writes (hardening round 2: data loss) ---------------------
@pytest.mark.parametrize("name", [".agiqa-bench.lock", "results.sqlite", "results.sqlite-wal"])
def test_a_link_where_a_run_writes_is_refused_and_its_target_untouched(name, tmp_path):
    """A lock, store or side file that is a symbolic link: one line, exit 2, and the file it points at keeps
    every byte (the lock used to be opened for writing and truncated through the link)."""
    victim = tmp_path / "precious.txt"
    victim.write_text("do not truncate me\n")
    out = tmp_path / "runs"
    out.mkdir()
    (out / name).symlink_to(victim)
    result = invoke("run", "--methods", "cpbd", "--repeats", "1", "--out", out, "--executor", "serial")
    one_line_error(result, str(out / name), "symbolic link")
    assert victim.read_text() == "do not truncate me\n"


def test_a_report_or_figure_target_that_is_a_link_is_refused(tmp_path, tiny_agiqa3k):
    out = tmp_path / "runs"
    assert invoke("run", "--methods", "cpbd", "--dataset", "agiqa3k", "--data-root", tiny_agiqa3k, "--repeats", "1",
                  "--out", out, "--executor", "serial").exit_code == 0
    victim = tmp_path / "precious.txt"
    victim.write_text("keep\n")
    (out / "leaderboard.md").symlink_to(victim)
    one_line_error(invoke("report", "--out", out, "--no-figures", "--bootstrap", "0"), "symbolic link")
    assert victim.read_text() == "keep\n"
    (out / "leaderboard.md").unlink()
    assert invoke("report", "--out", out, "--bootstrap", "0").exit_code == 0
    figure = sorted((out / "figures").glob("*.png"))[0]
    figure.unlink()
    figure.symlink_to(victim)
    result = invoke("report", "--out", out, "--bootstrap", "0")
    one_line_error(result, "symbolic link")
    assert victim.read_text() == "keep\n"


def test_a_fifo_store_never_blocks_report(tmp_path):
    import os

    out = tmp_path / "runs"
    out.mkdir()
    os.mkfifo(out / "results.sqlite")
    one_line_error(invoke("report", "--out", out), "results.sqlite", "not a regular file")
