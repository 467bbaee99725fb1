"""The researcher's workflow: LaTeX tables, readable HTML notes, logs under a scheduler, managing results,
the methods listing, the help text."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from agiqa_test_support import BRIGHTNESS, register
from typer.testing import CliRunner

from agiqa_bench.cli import app
from leaderboard.tables import Cell, Table, latex_escape

runner = CliRunner()
TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent


def invoke(*args, **kwargs):
    return runner.invoke(app, [str(a) for a in args], **kwargs)


@pytest.fixture(scope="module")
def small_store(tmp_path_factory):
    """A store with two zero-shot methods and ceiq on a small synthetic set (3 repeats), plus a cross-dataset
    run between two synthetic worlds."""
    out = tmp_path_factory.mktemp("store") / "runs"
    opts = ["--dataset-opt", "n_prompts=12", "--dataset-opt", "image_size=64"]
    done = invoke("run", "--methods", "cpbd,ceiq,sisblim.approx", "--repeats", 3, "--out", out, *opts)
    assert done.exit_code == 0, done.output
    cross = invoke("run", "--methods", "ceiq", "--repeats", 1, "--out", out, *opts, "--train-dataset", "synthetic",
                   "--train-dataset-opt", "seed=1", "--train-dataset-opt", "n_prompts=12",
                   "--train-dataset-opt", "image_size=64")
    assert cross.exit_code == 0, cross.output
    return out


# -- LaTeX -----------------------------------------------------------------------------------------------
def test_latex_escapes_names_and_marks_best_and_second():
    table = Table("Table 1: quality", ["Method", "A_1 (q) SRCC", "A_1 (q) PLCC", "B (q) SRCC", "B (q) PLCC"],
                  caption="3 repeats (split set ab12); use `--set x_y=1` & 50% of #items", key="t1")
    table.sections[0] = "Deep & co"
    table.rows = [[Cell("my_net {lr=1e-3}"), Cell("0.9 ⁿˢ", bold=True), Cell("0.8", underline=True),
                   Cell("0.5 ± 0.1"), Cell("—")],
                  [Cell("100%_net & $x$ #1 ~ ^ \\ é 中"), Cell("0.1"), Cell("0.2"), Cell("0.3"), Cell("0.4 †")]]
    tex = table.to_latex()
    assert "\\toprule" in tex and "\\midrule" in tex and "\\bottomrule" in tex
    assert "\\multicolumn{2}{c}{A\\_1 (q)} & \\multicolumn{2}{c}{B (q)}" in tex
    assert "\\cmidrule(lr){2-3} \\cmidrule(lr){4-5}" in tex and "Method & SRCC & PLCC & SRCC & PLCC" in tex
    assert "\\textbf{0.9 \\textsuperscript{ns}}" in tex and "\\underline{0.8}" in tex
    assert "0.5 $\\pm$ 0.1" in tex and "---" in tex and "\\dag{}" in tex
    assert "\\multicolumn{5}{l}{\\textit{Deep \\& co}}" in tex
    assert "my\\_net \\{lr=1e-3\\}" in tex
    assert "100\\%\\_net \\& \\$x\\$ \\#1 \\textasciitilde{} \\textasciicircum{} \\textbackslash{} e [U+4E2D]" in tex
    assert "\\texttt{--set x\\_y=1} \\& 50\\% of \\#items" in tex and "\\label{tab:t1}" in tex
    assert tex.isascii()
    table.rows.append([Cell("[odd] name"), Cell("1"), Cell("2"), Cell("3"), Cell("4")])
    assert "\\\\\n{}[odd] name &" in table.to_latex()  # not read as the spacing argument of the previous \\\\


def test_latex_escape_leaves_nothing_latex_would_read():
    hostile = "\\input{/etc/passwd} $\\x$ %comment &#_{}~^"
    out = latex_escape(hostile)
    assert "\\input" not in out.replace("\\textbackslash{}input", "")
    assert re.sub(r"\\(textbackslash|textasciitilde|textasciicircum)\{\}|\\[%$&#_{}]", "", out).count("\\") == 0


def test_report_latex_has_the_paper_tables_and_compiles(small_store, tmp_path):
    target = tmp_path / "tables.tex"
    done = invoke("report", "--out", small_store, "--format", "latex", "--output", target, "--bootstrap", 50)
    assert done.exit_code == 0, done.output
    tex = target.read_text()
    assert tex.count("\\begin{table}") >= 3 and "\\usepackage{booktabs}" in tex and tex.rstrip().endswith("\\end{document}")
    first = tex[tex.index("\\caption{Table 1 layout"):]
    caption = first[:first.index("\\label")]
    assert "3 repeats shared by every row (split set" in caption and "grouped" in caption and "synthetic" in caption
    assert "synthetic (seed=1) $\\to$ synthetic (defaults)" in tex  # two worlds of one dataset told apart
    if shutil.which("pdflatex") is None:
        pytest.skip("no pdflatex here: the LaTeX is checked for structure only")
    compiled = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", target.name],
                              cwd=tmp_path, capture_output=True, text=True, timeout=180)
    assert compiled.returncode == 0, compiled.stdout[-3000:]
    assert (tmp_path / "tables.pdf").stat().st_size > 1000


# -- HTML and markdown ---------------------------------------------------------------------------------------
def test_html_renders_the_notes_and_captions(small_store, tmp_path):
    target = tmp_path / "r.html"
    done = invoke("report", "--out", small_store, "--format", "html", "--output", target, "--bootstrap", 50,
                  "--no-figures")
    assert done.exit_code == 0, done.output
    page = target.read_text()
    notes = page[page.index("Notes and provenance"):]
    assert "<pre>" not in page and "<h3>Provenance</h3>" in notes and "<li>" in notes
    assert "**" not in notes and "## " not in notes and "<code>" in notes  # markdown rendered, not shown
    assert "<strong>synthetic</strong>" in notes
    assert "<code>--dataset-opt size=3k</code>" in page  # a caption's code span
    assert "ⁿˢ" in page and "≈:" not in page  # ≈ is the approximation mark of `methods`
    assert "max-width:100%" in page  # figures scale to the page
    markdown = invoke("report", "--out", small_store, "--bootstrap", 50, "--no-figures").output
    assert "`--dataset-opt size=3k`" in markdown and "\\`" not in markdown


def test_breakdown_names_no_nan_column_and_says_what_is_left_out(small_store):
    text = invoke("report", "--out", small_store, "--by", "style", "--bootstrap", 0, "--no-figures").output
    block = text[text.index("## By style"):]
    headers = [line for line in block.splitlines() if line.startswith("| Method")]
    assert headers and all("nan" not in h for h in headers)
    assert re.search(r"Test predictions of items without a style \(\d+ of \d+\) are left out", block)


# -- runs -----------------------------------------------------------------------------------------------------
PROGRESS_DRIVER = """
import sys
sys.path.insert(0, {tests!r})
from agiqa_test_support import SLEEPER
from agiqa_bench import registry
registry.register(SLEEPER)
from agiqa_bench.cli import main
sys.argv = ["agiqa-bench", "run", "--methods", "sleeper", "--dataset", "agiqa3k", "--data-root", {root!r},
            "--repeats", "3", "--target", "quality", "--executor", "serial", "--out", {out!r}]
main()
"""


def test_plain_progress_lines_appear_while_a_run_works_when_output_is_a_log(tiny_agiqa3k, tmp_path):
    env = {**os.environ, "AGIQA_TEST_SLEEP": "1.0", "AGIQA_BENCH_PROGRESS_SECONDS": "0.25",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    script = PROGRESS_DRIVER.format(tests=str(TESTS), root=str(tiny_agiqa3k), out=str(tmp_path / "runs"))
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)
    seen_while_running = []
    try:
        for line in proc.stdout:
            if line.startswith("progress:") and proc.poll() is None:
                seen_while_running.append(line.strip())
                if len(seen_while_running) >= 2:
                    break
    finally:
        rest, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-2000:]
    assert len(seen_while_running) >= 2, rest
    assert re.match(r"progress: \d/3 jobs finished \(0 failed\), elapsed \d+:\d\d, ETA ", seen_while_running[0])
    assert "progress: 3/3 jobs finished (0 failed)" in rest  # the closing line


def test_repeated_failures_collapse_to_one_line_with_a_count(tiny_agiqa3k, tmp_path, monkeypatch):
    from agiqa_bench.cli_progress import failure_lines

    lines = failure_lines([("m", t, r, "boom") for t in ("quality", "alignment") for r in range(10)]
                          + [("m", "quality", 3, "other")])
    assert lines == ["m: 20 key(s) (alignment, quality; repeats 0-9 (10)): boom",
                     "m: 1 key(s) (quality; repeat 3): other"]
    register(monkeypatch, BRIGHTNESS)
    done = invoke("run", "--methods", "brightness", "--dataset", "agiqa3k", "--data-root", tiny_agiqa3k,
                  "--repeats", 2, "--set", "brightness.fail_on_repeat=1", "--out", tmp_path / "runs",
                  "--executor", "serial")
    assert done.exit_code == 1
    failures = [line for line in done.output.splitlines() if line.startswith("  brightness:")]
    assert len(failures) == 1 and "2 key(s) (alignment, quality; repeat 1)" in failures[0]


def test_ablate_takes_the_run_options_that_apply(tmp_path):
    out = tmp_path / "runs"
    fast = ["--set", "ipiqa.epochs=1", "--set", "ipiqa.batch_size=8"]
    done = invoke("ablate", "--dataset-opt", "n_prompts=10", "--dataset-opt", "image_size=64", "--repeats", 1,
                  "--target", "quality", "--val-fraction", 0.2, "--keep-checkpoints", "--drop-missing",
                  "--out", out, *fast)
    assert done.exit_code == 0, done.output
    from agiqa_bench.store import read_results

    rows = read_results(out)
    assert set(rows["target"]) == {"quality"} and len(rows) == 3
    assert all(json.loads(f)["val_fraction"] == 0.2 for f in [rows["split_family"].iloc[0].split(" ", 1)[1]])
    assert len(list((out / "checkpoints").glob("*.pt"))) == 3


# -- results -------------------------------------------------------------------------------------------------
def test_results_list_and_delete(small_store, tmp_path):
    out = tmp_path / "runs"
    shutil.copytree(small_store, out)
    listed = invoke("results", "list", "--out", out, "--json")
    records = json.loads(listed.output)
    ceiq = [r for r in records if r["method"] == "ceiq" and r["target"] == "quality"]
    assert len(ceiq) == 2 and {r["ok"] for r in ceiq} == {3, 1}  # grouped 0-2 and the cross-dataset run
    assert any(r["repeats"] == "0-2" for r in ceiq)
    table = invoke("results", "list", "--out", out, env={"COLUMNS": "80"}).output
    assert "sisblim.approx" in table  # names are never cut at 80 columns
    refused = invoke("results", "delete", "--out", out, "--method", "cpbd", "--repeat", 1)
    assert refused.exit_code == 2 and "add --yes" in refused.output
    gone = invoke("results", "delete", "--out", out, "--method", "cpbd", "--repeat", 1, "--yes")
    assert gone.exit_code == 0, gone.output
    assert "deleted 3 result row(s)" in gone.output and "repeats 1" in gone.output
    from agiqa_bench.store import read_predictions, read_results

    rows = read_results(out)
    assert sorted(rows[rows.method == "cpbd"]["repeat"].unique()) == [0, 2]
    assert set(read_predictions(out)["result_id"]) <= set(rows["id"])  # predictions went with their rows
    missing = invoke("results", "delete", "--out", out, "--method", "nosuch", "--yes")
    assert missing.exit_code == 2 and "no result row" in missing.output and "cpbd" in missing.output
    rerun = invoke("run", "--methods", "cpbd", "--repeats", 3, "--out", out, "--dataset-opt", "n_prompts=12",
                   "--dataset-opt", "image_size=64")
    assert rerun.exit_code == 0 and "skipped 6 finished row(s)" in rerun.output  # only repeat 1 recomputed


def test_grid_variants_record_what_they_selected(tiny_agiqa3k, tmp_path):
    done = invoke("run", "--methods", "ceiq.grid", "--dataset", "agiqa3k", "--data-root", tiny_agiqa3k,
                  "--repeats", 1, "--target", "quality", "--set", "ceiq.grid.grid_log2_C=-1:1:2",
                  "--set", "ceiq.grid.grid_log2_gamma=-3:-1:2", "--out", tmp_path / "runs")
    assert done.exit_code == 0, done.output
    from agiqa_bench.store import read_results

    svr = json.loads(read_results(tmp_path / "runs")["info_json"].iloc[0])["svr"]
    assert svr["search"] == "grid" and svr["C"] in (0.5, 2.0) and svr["gamma"] in (0.125, 0.5)
    assert svr["support_vectors"] > 0 and -1 <= svr["cv_srcc"] <= 1


# -- methods and help ------------------------------------------------------------------------------------------
def test_methods_list_and_details_agree_and_names_are_never_cut():
    listing = invoke("methods", env={"COLUMNS": "80"}).output
    from agiqa_bench.registry import all_specs

    for spec in all_specs():
        assert re.search(rf"│ {re.escape(spec.name)}\b", listing), spec.name
    for name in ("resnet50", "niqe", "ipiqa", "clipscore", "dbcnn"):
        row = next(line for line in listing.splitlines() if re.match(rf"│ {re.escape(name)} ", line))
        details = invoke("methods", name, env={"COLUMNS": "80"}).output.replace("\n", " ")
        missing_list = row.split("│")[4].count("✗")
        missing_details = len(re.findall(r"— missing", details))
        assert missing_list == missing_details, (name, row, details)
        assert ("?" in row.split("│")[4]) == ("— cannot tell" in details)
        checked = invoke("methods", name, "--check-weights", env={"COLUMNS": "80"}).output.replace("\n", " ")
        assert "cannot tell" not in checked, (name, checked)
    resnet = next(line for line in listing.splitlines() if line.startswith("│ resnet50 "))
    assert "✗ (.imagenet)" in resnet  # its ImageNet weights are the .imagenet variant's, and missing here


def test_flags_show_no_value_and_every_option_has_help():
    text = invoke("run", "--help", env={"COLUMNS": "200"}).output
    assert "--force" in text and "<bool>" not in text
    for command in (["synth"], ["splits", "export"]):
        page = invoke(*command, "--help", env={"COLUMNS": "200"}).output
        for line in page.splitlines():
            if re.match(r"│\s+(\*\s+)?--[a-z]", line) and "--help" not in line:
                assert re.search(r">\s+\S", line), line  # a type, then help text
    synth = invoke("synth", "--help", env={"COLUMNS": "200"}).output
    from agiqa_bench.synthetic.dataset import default_config

    config = default_config()
    for value, option in ((config.n_prompts, "n-prompts"), (config.seed, "seed"), (config.image_size, "image-size")):
        line = next(line for line in synth.splitlines() if f"--{option}" in line)
        assert f"default {value}, as the built-in set" in line
