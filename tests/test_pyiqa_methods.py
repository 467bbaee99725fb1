"""`pyiqa:<metric>`: pyiqa's no-reference metrics as zero-shot methods (baselines/pyiqa_metrics.py)."""

from __future__ import annotations

import re
import sqlite3
import subprocess
import sys

import numpy as np
import pytest
from typer.testing import CliRunner

from agiqa_bench.cli import app
from agiqa_bench.errors import ConfigError, MethodUnavailable
from agiqa_bench.method import MethodContext
from agiqa_bench.registry import canonical_name, create_method, get_spec, list_methods, split_name
from baselines import pyiqa_metrics

runner = CliRunner()
#: What runs with nothing downloaded (the end-to-end metric, and the one that parity is also checked on).
OFFLINE_METRIC = "piqe"


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def pyiqa_table():
    """pyiqa's own view of its metrics, through its public API (this imports pyiqa and torch)."""
    import pyiqa
    from pyiqa.default_model_configs import DEFAULT_CONFIGS

    return pyiqa.list_models(metric_mode="NR"), DEFAULT_CONFIGS


# -- names ----------------------------------------------------------------------------------------
def test_names_parse_and_the_family_lists_what_pyiqa_lists(pyiqa_table):
    nr, table = pyiqa_table
    spec, variant = get_spec("pyiqa:musiq")
    assert (spec.name, variant, spec.kind) == ("pyiqa:musiq", None, "zero-shot")
    assert canonical_name("pyiqa:topiq_nr-flive") == "pyiqa:topiq_nr-flive"
    assert split_name("pyiqa:topiq_nr-flive.x") == ("pyiqa:topiq_nr-flive", "x")
    with pytest.raises(ConfigError, match="no variant 'x'"):
        get_spec("pyiqa:topiq_nr-flive.x")
    # the whole family, read from pyiqa's table without importing pyiqa, is pyiqa's NR list less its set metrics
    listed = {n for n in list_methods(families=True) if n.startswith("pyiqa:")}
    set_level = {"fid", "sfid", "fid_dinov2", "inception_score"}
    assert listed == {f"pyiqa:{m}" for m in nr if m not in set_level}
    assert set_level <= set(nr)  # pyiqa still calls them NR: they are refused on purpose
    assert not any(n.startswith("pyiqa:") for n in list_methods())  # the library's to list, not the registry's
    assert dict(pyiqa_metrics.configs()) == dict(table)


def test_naming_a_member_imports_no_model_code():
    code = ("import sys; from agiqa_bench.registry import get_spec; s = get_spec('pyiqa:niqe')[0];"
            "assert s.lower_is_better; heavy = [m for m in ('torch', 'pyiqa') if m in sys.modules];"
            "print(heavy); assert not heavy")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_direction_comes_from_pyiqa_metadata(pyiqa_table):
    _, table = pyiqa_table
    for name in list_methods("pyiqa:*", families=True):
        metric = name.split(":", 1)[1]
        assert get_spec(name)[0].lower_is_better is bool(table[metric].get("lower_better", False)), name
    assert all(get_spec(f"pyiqa:{m}")[0].lower_is_better for m in ("niqe", "brisque", "piqe", "ilniqe"))
    assert not get_spec("pyiqa:musiq")[0].lower_is_better and not get_spec("pyiqa:entropy")[0].lower_is_better


def test_full_reference_metric_is_refused_in_one_line(tmp_path):
    with pytest.raises(ConfigError) as err:
        get_spec("pyiqa:lpips")
    assert "\n" not in str(err.value) and "full-reference" in str(err.value)
    result = invoke("run", "--methods", "pyiqa:ssim", "--repeats", "1", "--out", tmp_path / "runs")
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: pyiqa:ssim is a full-reference metric"), result.output
    assert not (tmp_path / "runs" / "results.sqlite").exists()  # refused while planning


def test_unknown_metric_and_set_metrics_are_refused_with_close_matches():
    with pytest.raises(ConfigError, match=r"no metric 'musiqq' \(close matches: pyiqa:musiq,"):
        get_spec("pyiqa:musiqq")
    with pytest.raises(ConfigError, match="a distribution metric"):
        get_spec("pyiqa:fid")
    with pytest.raises(ConfigError, match=r"unknown method 'musiq'.*or pyiqa:<member>"):
        get_spec("musiq")


def test_the_colon_survives_overrides_and_file_names(tmp_path):
    from agiqa_bench.method import path_safe
    from agiqa_bench.runner import parse_overrides

    assert parse_overrides(["pyiqa:musiq.pretrained_model_path=/w/m.pth", "pyiqa:clipiqa+.x=1"]) == {
        "pyiqa:musiq": {"pretrained_model_path": "/w/m.pth"}, "pyiqa:clipiqa+": {"x": "1"}}
    from agiqa_bench.checkpoints import checkpoint_path

    method = create_method("pyiqa:clipiqa+", {}, MethodContext(dataset="synthetic", workdir=tmp_path, repeat=3))
    path = checkpoint_path(tmp_path, "synthetic", method.name, 3, ("quality",), "0123456789abcdef")
    assert path.name == "synthetic-pyiqa_clipiqa+-r3-quality-01234567.pt"
    assert path.name.startswith(f"synthetic-{path_safe(method.name)}-r3")
    with pytest.raises(ConfigError, match=r"method 'pyiqa:musiq' has no parameter x"):
        create_method("pyiqa:musiq", {"x": "1"})


# -- weights -------------------------------------------------------------------------------------
def _items(n=2):
    from agiqa_bench.datasets import load_dataset

    return load_dataset("synthetic").items[:n]


@pytest.fixture
def empty_pyiqa_cache(tmp_path, monkeypatch):
    """pyiqa's download folder, emptied for the test (pyiqa reads its module global at every download)."""
    import pyiqa.utils.download_util as download_util

    folder = tmp_path / "torch-hub" / "pyiqa"
    monkeypatch.setattr(download_util, "DEFAULT_CACHE_DIR", str(folder))
    pyiqa_metrics._MODEL_MEMO.clear()
    return folder


def test_offline_miss_names_the_file_its_url_and_pyiqa_folder(empty_pyiqa_cache, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    method = create_method("pyiqa:niqe", {}, MethodContext(cache_dir=tmp_path / "cache"))
    with pytest.raises(MethodUnavailable) as err:
        method.predict(_items())
    text = str(err.value)
    shape = (r"pyiqa:niqe: niqe_modelparameters\.mat, a file pyiqa's network needs, is not available \(not in the "
             r"local cache and downloads are off .*\)\. Source: https://huggingface\.co/chaofengc/IQA-PyTorch-Weights/"
             rf"resolve/main/niqe_modelparameters\.mat\. Download it by hand into {re.escape(str(empty_pyiqa_cache))} "
             r"\(pyiqa's cache: .*\), or supply a local copy with --set pyiqa:niqe\.pretrained_model_path=PATH$")
    assert "\n" not in text and re.match(shape, text), text
    assert not empty_pyiqa_cache.exists() or not any(empty_pyiqa_cache.iterdir())  # nothing half-downloaded


def test_a_failed_download_is_one_line_too(empty_pyiqa_cache, tmp_path, monkeypatch):
    """Online, a download that fails says why, with the same file, URL and folder (no network: a stand-in fails)."""
    import pyiqa.utils.download_util as download_util

    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "AGIQA_BENCH_OFFLINE"):
        monkeypatch.delenv(var, raising=False)

    def unreachable(url, dst, *args, **kwargs):
        raise OSError("Temporary failure in name resolution")

    monkeypatch.setattr(download_util, "download_url_to_file", unreachable)
    method = create_method("pyiqa:brisque", {}, MethodContext())
    with pytest.raises(MethodUnavailable) as err:
        method.predict(_items(1))
    text = str(err.value)
    assert "\n" not in text and text.startswith("pyiqa:brisque: brisque_svm_weights.pth, a file pyiqa's network needs")
    assert "(the download failed: OSError: Temporary failure in name resolution)" in text
    assert f"Download it by hand into {empty_pyiqa_cache} " in text
    assert download_util.download_url_to_file is unreachable  # the guard is lifted afterwards


def test_a_local_weights_file_is_checked_and_counted(tmp_path):
    import torch

    from agiqa_bench.runner import plan_run

    plain = tmp_path / "plain.pth"
    torch.save({"w": torch.zeros(2)}, plain)
    plan = plan_run(["pyiqa:musiq"], "synthetic", repeats=1, overrides={"pyiqa:musiq": {"pretrained_model_path": str(plain)}})
    run = plan.methods[0]
    assert run.name == "pyiqa:musiq" and set(run.weights) == {"pyiqa", "pretrained_model_path"}
    other = plan_run(["pyiqa:musiq"], "synthetic", repeats=1).methods[0]
    assert other.config_hash != run.config_hash
    coded = tmp_path / "coded.pth"
    torch.save({"w": np.arange(3)}, coded)  # a numpy array pickles as code weights_only refuses
    with pytest.raises(MethodUnavailable, match=r"pyiqa:musiq\.pretrained_model_path: .*coded\.pth does not load as "
                                                r"plain tensors .*refused"):
        pyiqa_metrics.build_metric("musiq", "pyiqa:musiq", "cpu", str(coded))
    with pytest.raises(ConfigError, match=r"^pyiqa:piqe\.pretrained_model_path: pyiqa's network for piqe takes no "
                                          r"weights file$"):  # refused while planning
        plan_run(["pyiqa:piqe"], "synthetic", repeats=1, overrides={"pyiqa:piqe": {"pretrained_model_path": str(plain)}})


# -- end to end ------------------------------------------------------------------------------------
@pytest.mark.slow
def test_a_no_download_metric_runs_offline_through_the_cli_and_equals_pyiqa(tmp_path, monkeypatch):
    import pyiqa
    import torch

    from agiqa_bench.datasets import load_dataset

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out = tmp_path / "runs"
    name = f"pyiqa:{OFFLINE_METRIC}"
    result = invoke("run", "--methods", name, "--repeats", "2", "--out", out)
    assert result.exit_code == 0, result.output
    with sqlite3.connect(out / "results.sqlite") as db:
        rows = db.execute("SELECT method, status, target, repeat FROM results").fetchall()
        preds = db.execute("SELECT item_id, prediction FROM predictions").fetchall()
    assert {r[:2] for r in rows} == {(name, "ok")} and len(rows) == 2 * 3  # 2 repeats x 3 targets
    # parity: the stored scores are pyiqa's own, pyiqa reading each image file itself
    ds = load_dataset("synthetic")
    by_id = {it.id: it for it in ds.items}
    stored = dict(preds)
    assert len(stored) >= 72  # at least one repeat's test part
    metric = pyiqa.create_metric(OFFLINE_METRIC, device=torch.device("cpu"))
    theirs = np.array([float(metric(str(by_id[i].image))) for i in sorted(stored)])
    ours = np.array([stored[i] for i in sorted(stored)])
    assert np.ptp(ours) > 0 and np.all(np.isfinite(ours))
    np.testing.assert_array_equal(ours, theirs)
    # the per-image score cache: in the run folder under a file-safe name; a second run scores nothing
    caches = list((out / "cache").rglob("*.npz"))
    assert caches and all(":" not in p.name and p.name.startswith(f"pyiqa-{OFFLINE_METRIC}-") for p in caches)

    def no_scoring(*args, **kwargs):
        raise AssertionError("a cached image was scored again")

    monkeypatch.setattr(pyiqa_metrics, "build_metric", no_scoring)
    again = invoke("run", "--methods", name, "--repeats", "2", "--out", out, "--force", "--workers", "1")
    assert again.exit_code == 0, again.output
    report = invoke("report", "--out", out, "--no-figures", "--bootstrap", "0")
    assert report.exit_code == 0 and f"| {name} |" in report.output, report.output


def test_every_no_download_metric_scores_like_pyiqa_offline(empty_pyiqa_cache, tmp_path, monkeypatch):
    """`NO_DOWNLOAD` holds: each builds with an empty pyiqa cache offline, and scores as pyiqa does."""
    import pyiqa
    import torch

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    items = _items(6)
    for metric in sorted(pyiqa_metrics.NO_DOWNLOAD):
        method = create_method(f"pyiqa:{metric}", {}, MethodContext(cache_dir=tmp_path / metric))
        assert method.spec.weights == ()
        ours = method.predict(items)
        reference = pyiqa.create_metric(metric, device=torch.device("cpu"))
        theirs = np.array([float(reference(str(it.image))) for it in items])
        np.testing.assert_array_equal(ours, theirs)


def test_methods_lists_the_family(monkeypatch):
    from agiqa_bench.console import console

    monkeypatch.setattr(console, "width", 200)
    listing = invoke("methods")
    assert listing.exit_code == 0 and "pyiqa:<member>" in listing.output and "pyiqa:piqe" not in listing.output
    members = invoke("methods", "--pyiqa")
    assert members.exit_code == 0, members.output
    for name in list_methods("pyiqa:*", families=True):
        assert f"│ {name} " in members.output, name
    assert "lower is better; no download" in members.output  # piqe's row
    some = invoke("methods", "--pyiqa", "musiq*")
    assert "pyiqa:musiq-ava" in some.output and "pyiqa:niqe" not in some.output
    one = invoke("methods", "pyiqa:niqe")
    assert one.exit_code == 0 and "pyiqa:niqe (zero-shot, handcrafted)" in one.output.replace("\n", " ")
    bad = invoke("methods", "--pyiqq")
    assert bad.exit_code == 2 and "--pyiqa" in bad.output


def test_a_backbone_file_from_the_hub_and_a_missing_package_are_named(tmp_path, monkeypatch):
    """What timm/transformers raise offline (no file name in their message) becomes one line naming the hub file."""
    from huggingface_hub import hf_hub_download

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    try:
        hf_hub_download("timm/resnet50.a1_in1k", "pytorch_model.bin", cache_dir=str(tmp_path / "hf"))
    except Exception as exc:  # LocalEntryNotFoundError (offline, not cached)
        text = str(pyiqa_metrics.build_failure("pyiqa:topiq_nr", "topiq_nr", exc))
    else:
        pytest.fail("an uncached hub file was found offline")
    assert "\n" not in text and text.startswith("pyiqa:topiq_nr: pytorch_model.bin, a backbone file pyiqa's network "
                                                "loads from the Hugging Face hub, is not available (not in the local cache")
    assert "Source: hf-hub:timm/resnet50.a1_in1k/pytorch_model.bin." in text
    missing = ModuleNotFoundError("No module named 'icecream'", name="icecream")
    assert str(pyiqa_metrics.build_failure("pyiqa:qalign", "qalign", missing)) == (
        "pyiqa:qalign: pyiqa's network for qalign needs the Python package 'icecream', which is not installed: "
        "pip install icecream")
