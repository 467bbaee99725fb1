"""Hardening round 2: links out of the data root, compressed payloads in label files, odd MOS types.

Each case goes through the command line and asserts exit 2, one `error:` line naming the file, no traceback,
and (where memory is the point) a bounded peak.
"""

from __future__ import annotations

import re
import resource
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from agiqa_test_support import make_tiny_agiqa3k
from test_bad_inputs import invoke, one_line_error
from test_datasets_aigc import N, labels_only

SECRET = "secret-label-content-7f3a"


def export(dataset, root, tmp_path, *extra):
    return invoke("splits", "export", "--dataset", dataset, "--data-root", root, "--output", tmp_path / "s.json", *extra)


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# -- reads outside the root --------------------------------------------------------------------------
def test_a_label_file_linked_outside_the_root_is_refused_without_showing_its_content(tmp_path):
    root = make_tiny_agiqa3k(tmp_path / "agiqa3k")
    outside = tmp_path / "elsewhere.csv"
    outside.write_text(f"{SECRET}\n1,2,3\n")
    (root / "data.csv").unlink()
    (root / "data.csv").symlink_to(outside)
    text = one_line_error(export("agiqa3k", root, tmp_path), "data.csv", "outside the data root")
    assert SECRET not in text


def test_an_image_folder_linked_outside_the_root_is_refused(tmp_path):
    root = make_tiny_agiqa3k(tmp_path / "agiqa3k")
    (root / "images").rename(tmp_path / "real-images")
    (root / "images").symlink_to(tmp_path / "real-images")
    one_line_error(invoke("run", "--methods", "cpbd", "--dataset", "agiqa3k", "--data-root", root, "--repeats", "1",
                          "--out", tmp_path / "runs", "--executor", "serial"), "image folder", "outside the data root")
    # naming that folder explicitly is the user's choice
    done = invoke("run", "--methods", "cpbd", "--dataset", "agiqa3k", "--data-root", root, "--images",
                  tmp_path / "real-images", "--repeats", "1", "--out", tmp_path / "runs", "--executor", "serial")
    assert done.exit_code == 0, done.output


def test_an_image_linked_outside_the_image_folder_is_refused(tmp_path):
    root = make_tiny_agiqa3k(tmp_path / "agiqa3k")
    first = sorted((root / "images").iterdir())[0]
    (tmp_path / "stolen.png").write_bytes(first.read_bytes())
    first.unlink()
    first.symlink_to(tmp_path / "stolen.png")
    one_line_error(export("agiqa3k", root, tmp_path), "data.csv", "outside the image folder", first.name,
                   "--allow-outside-root")
    done = invoke("run", "--methods", "cpbd", "--dataset", "agiqa3k", "--data-root", root, "--repeats", "1",
                  "--allow-outside-root", "--out", tmp_path / "runs", "--executor", "serial")
    assert done.exit_code == 0, done.output


# -- memory: compressed payloads -----------------------------------------------------------------------
def write_xlsx_with_member(path, name, size):
    """A zip whose member `name` inflates to `size` bytes of one repeated letter (a few hundred KB on disk)."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("[Content_Types].xml", "<Types/>")
        with archive.open(name, "w", force_zip64=True) as fh:
            block = b"a" * (1 << 20)
            for _ in range(size >> 20):
                fh.write(block)


def test_an_xlsx_that_inflates_huge_is_refused_before_parsing(tmp_path):
    root = tmp_path / "agiqa1k"
    root.mkdir()
    write_xlsx_with_member(root / "AIGC_MOS_Zscore.xlsx", "xl/sharedStrings.xml", 400 << 20)
    before = peak_mb()
    one_line_error(export("agiqa1k", root, tmp_path), "AIGC_MOS_Zscore.xlsx", "inflates to")
    assert peak_mb() - before < 300


def test_an_xlsx_with_one_far_away_cell_is_refused(tmp_path):
    import openpyxl

    root = tmp_path / "agiqa1k"
    root.mkdir()
    book = openpyxl.Workbook()
    sheet = book.active
    sheet.append(["Image", "Prompt", "MOS"])
    sheet.append(["a.jpg", "a cat", 1.0])
    sheet["XFD1500"] = 1
    book.save(root / "AIGC_MOS_Zscore.xlsx")
    before = peak_mb()
    one_line_error(export("agiqa1k", root, tmp_path), "AIGC_MOS_Zscore.xlsx", "XFD1500", "beyond column")
    assert peak_mb() - before < 300


def test_a_mat_whose_stream_inflates_huge_is_refused(tmp_path):
    root = labels_only(tmp_path)
    path = root / "DATA" / "MOS" / "mosz1.mat"
    header = b"MATLAB 5.0 MAT-file, hostile".ljust(116, b" ") + b"\0" * 8 + struct.pack("<H", 0x0100) + b"IM"
    squeeze = zlib.compressobj(9)
    body = b"".join(squeeze.compress(b"\0" * (1 << 20)) for _ in range(640)) + squeeze.flush()
    path.write_bytes(header + struct.pack("<II", 15, len(body)) + body)
    before = peak_mb()
    one_line_error(export("aigciqa2023", root, tmp_path), "mosz1.mat", "inflates past")
    assert peak_mb() - before < 300


def test_a_complex_mos_is_refused_naming_the_file(tmp_path):
    root = labels_only(tmp_path)
    scipy.io.savemat(root / "DATA" / "MOS" / "mosz2.mat", {"MOSz": (np.ones(N) + 1j).reshape(N, 1)})
    one_line_error(export("aigciqa2023", root, tmp_path), "mosz2.mat", "not a real number array", "complex")


def test_a_text_mos_is_refused_naming_the_file(tmp_path):
    root = labels_only(tmp_path)
    scipy.io.savemat(root / "DATA" / "MOS" / "mosz3.mat", {"MOSz": np.array(["x"] * N, dtype=object).reshape(N, 1)})
    one_line_error(export("aigciqa2023", root, tmp_path), "mosz3.mat", "not a real number array")


@pytest.mark.parametrize("dataset", ["agiqa3k", "aigiqa20k"])
def test_a_fifo_label_file_never_blocks(dataset, tmp_path):
    import os

    root = tmp_path / dataset
    root.mkdir()
    os.mkfifo(root / ("data.csv" if dataset == "agiqa3k" else "info_train.csv"))
    one_line_error(export(dataset, root, tmp_path), "not a regular file")


# -- a store of another program ----------------------------------------------------------------------
@pytest.mark.parametrize("command", ["run", "report"])
def test_a_foreign_results_table_is_refused_and_never_altered(command, tmp_path):
    import sqlite3

    out = tmp_path / "runs"
    out.mkdir()
    with sqlite3.connect(out / "results.sqlite") as conn:
        conn.execute("CREATE TABLE results (run TEXT, score REAL)")
        conn.execute("INSERT INTO results VALUES ('x', 1.5)")
    args = (["run", "--methods", "cpbd", "--repeats", "1", "--executor", "serial"] if command == "run" else ["report"])
    one_line_error(invoke(*args, "--out", out), "results.sqlite", "not an agiqa-bench results store")
    with sqlite3.connect(out / "results.sqlite") as conn:
        assert [r[1] for r in conn.execute("PRAGMA table_info(results)")] == ["run", "score"]
        assert conn.execute("SELECT * FROM results").fetchall() == [("x", 1.5)]
        assert {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")} == {"results"}


def test_our_store_carries_its_marker_and_an_older_one_is_adopted(tmp_path):
    import sqlite3

    from agiqa_bench.store import APPLICATION_ID, ResultStore

    with ResultStore(tmp_path / "a"):
        pass
    with sqlite3.connect(tmp_path / "a" / "results.sqlite") as conn:
        assert conn.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
        conn.execute("PRAGMA application_id = 0")  # as stores written before the marker
    with ResultStore(tmp_path / "a"):
        pass
    with sqlite3.connect(tmp_path / "a" / "results.sqlite") as conn:
        assert conn.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID


# -- strings from data reaching renderers ---------------------------------------------------------------
@pytest.fixture
def small_store(tmp_path):
    root = make_tiny_agiqa3k(tmp_path / "agiqa3k")
    out = tmp_path / "runs"
    done = invoke("run", "--methods", "cpbd", "--dataset", "agiqa3k", "--data-root", root, "--repeats", "2",
                  "--out", out, "--executor", "serial")
    assert done.exit_code == 0, done.output
    return out


def tamper(out, sql, *args):
    import sqlite3

    with sqlite3.connect(out / "results.sqlite") as conn:
        conn.execute(sql, args)


def test_markdown_and_csv_reports_show_data_literally(small_store):
    import csv
    import io

    evil = "=HYPERLINK(\"x\")|<script>alert(1)</script>\n**x** [y](z)"
    tamper(small_store, "UPDATE results SET method = ?", evil)
    tamper(small_store, "UPDATE predictions SET generator = ?", "gen|<img src=x>\n$\\frac{$")
    done = invoke("report", "--out", small_store, "--bootstrap", "0")
    assert done.exit_code == 0, done.output
    text = (small_store / "leaderboard.md").read_text()
    assert "<script>" not in text and "<img" not in text and "&lt;script&gt;" in text
    width = None
    for line in text.splitlines():  # every row of every table has as many cells as its header
        if not line.startswith("|"):
            width = None
            continue
        cells = len(re.split(r"(?<!\\)\|", line)) - 2
        if width is None:
            width = cells
        assert cells == width, line
    html = invoke("report", "--out", small_store, "--bootstrap", "0", "--format", "html")
    assert html.exit_code == 0 and "<script>alert" not in (small_store / "leaderboard.html").read_text()
    assert invoke("report", "--out", small_store, "--bootstrap", "0", "--format", "csv").exit_code == 0
    rows = list(csv.DictReader(io.StringIO((small_store / "leaderboard.csv").read_text())))
    assert rows and all(r["method"].startswith("'=") for r in rows)
    assert all(not r["label"].startswith(("=", "+", "-", "@")) for r in rows)


def test_markup_and_escape_sequences_in_data_reach_the_terminal_literally(tmp_path):
    root = tmp_path / "data [red] \x1b[31mred"
    root.mkdir()
    (root / "data.csv").write_text("name,prompt,mos_quality,mos_align\n"
                                   "genA_normal_000.png,a cat,[/bold]\x1b[2Jone,2\n")
    result = invoke("splits", "export", "--dataset", "agiqa3k", "--data-root", root, "--output", tmp_path / "s.json")
    one_line_error(result, "[red]", "[/bold]", "data.csv")
    assert "\x1b" not in result.output and "\\x1b" in result.output


# -- run options beyond the machine ------------------------------------------------------------------------
def test_threads_per_job_beyond_the_machine_is_refused(tmp_path):
    import os

    cores = len(os.sched_getaffinity(0))
    one_line_error(invoke("run", "--methods", "cpbd", "--repeats", "1", "--threads-per-job", cores + 1, "--out",
                          tmp_path / "runs"), f"this machine has {cores} core(s)")
    one_line_error(invoke("run", "--methods", "cpbd", "--repeats", "1", "--threads-per-job", 100000,
                          "--executor", "ray", "--out", tmp_path / "runs"), "at most 512")
    assert not (tmp_path / "runs" / "results.sqlite").exists()


def test_an_unreachable_ray_address_fails_fast_in_one_line(tmp_path, monkeypatch):
    import socket
    import sys
    import time

    already = "ray" in sys.modules
    with socket.socket() as s:  # a loopback port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("AGIQA_BENCH_RAY_CONNECT_TIMEOUT", "2")
    monkeypatch.setenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # loopback only, should Ray be imported after all
    t0 = time.monotonic()
    result = invoke("run", "--methods", "cpbd", "--repeats", "1", "--executor", "ray", "--ray-address",
                    f"127.0.0.1:{port}", "--out", tmp_path / "runs")
    one_line_error(result, f"127.0.0.1:{port}", "cannot connect to the Ray cluster")
    assert time.monotonic() - t0 < 20
    assert "ray" not in sys.modules or already, "the refusal imported Ray (it reads its environment once, at import)"


def test_an_out_folder_that_is_not_utf8_still_reports(tmp_path):
    import os

    root = make_tiny_agiqa3k(tmp_path / "agiqa3k")
    out = os.fsdecode(os.fsencode(str(tmp_path)) + b"/bad\xff\xfeout")
    assert invoke("run", "--methods", "cpbd", "--dataset", "agiqa3k", "--data-root", root, "--repeats", "1",
                  "--out", out, "--executor", "serial").exit_code == 0
    for fmt in ("markdown", "html", "json", "csv"):
        done = invoke("report", "--out", out, "--format", fmt, "--bootstrap", "0")
        assert done.exit_code == 0 and "Traceback" not in done.output, done.output
    (Path(out) / "leaderboard.md").read_text(encoding="utf-8")  # valid UTF-8


# -- caches are only caches ---------------------------------------------------------------------------------
@pytest.mark.parametrize("damage", ["truncated", "garbage", "compressed-bomb", "wrong-arrays"])
def test_a_damaged_cache_is_discarded_and_recomputed_with_a_warning(damage, tmp_path):
    from agiqa_bench.cache import CacheWarning, FeatureCache
    from agiqa_bench.records import Item

    items = [Item(str(i), tmp_path / f"{i}.png", "", {}, str(i)) for i in range(4)]
    calls = []

    def compute(item):
        calls.append(item.id)
        return np.array([float(item.id), 1.0])

    FeatureCache(tmp_path / "c").get("ns", items, compute)
    path = tmp_path / "c" / "ns.npz"
    assert len(calls) == 4 and path.is_file()
    if damage == "truncated":
        path.write_bytes(path.read_bytes()[:-40])
    elif damage == "garbage":
        path.write_bytes(b"not a zip at all")
    elif damage == "compressed-bomb":
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
            with archive.open("values.npy", "w", force_zip64=True) as fh:
                for _ in range(1400):
                    fh.write(b"\0" * (1 << 20))
    else:
        np.savez(path, keys=np.array(["0", "1"]), values=np.array(["x", "y"]))
    before = peak_mb()
    with pytest.warns(CacheWarning, match="discarded"):
        again = FeatureCache(tmp_path / "c").get("ns", items, compute)
    assert peak_mb() - before < 300
    assert len(calls) == 8 and np.allclose(again[:, 0], [0, 1, 2, 3])
    assert len(FeatureCache(tmp_path / "c").get("ns", items, compute)) == 4 and len(calls) == 8  # rewritten whole


def test_a_fifo_image_never_blocks(tmp_path):
    import os

    root = make_tiny_agiqa3k(tmp_path / "agiqa3k")
    first = sorted((root / "images").iterdir())[0]
    first.unlink()
    os.mkfifo(first)
    one_line_error(invoke("run", "--methods", "cpbd", "--dataset", "agiqa3k", "--data-root", root, "--repeats", "1",
                          "--out", tmp_path / "runs", "--executor", "serial"), "data.csv", first.name)
