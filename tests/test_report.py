"""The report: intervals, tests against the best, paper layouts, formats, provenance, compare."""

from __future__ import annotations

import json
import sqlite3

import pytest
from agiqa_test_support import BRIGHTNESS, register
from typer.testing import CliRunner

from agiqa_bench.cli import app
from agiqa_bench.method import MethodSpec
from agiqa_bench.runner import run_benchmark
from agiqa_bench.store import ResultStore, read_results
from leaderboard.report import build_report

#: Same predictions as `brightness` under another name: never significantly different from it.
TWIN = MethodSpec(name="twin", factory="agiqa_test_support:Brightness", kind="trainable", summary="test twin",
                  default_run=False, family="svr")


@pytest.fixture
def store(tiny_agiqa3k, tmp_path, monkeypatch):
    register(monkeypatch, BRIGHTNESS, TWIN)
    out = tmp_path / "runs"
    run_benchmark(["brightness", "twin", "cpbd"], "agiqa3k", data_root=tiny_agiqa3k, repeats=4, out=out)
    run_benchmark(["cpbd"], "agiqa3k", data_root=tiny_agiqa3k, split_protocol="all-images", out=out)
    return out


def test_summary_has_intervals_medians_and_tests(store):
    report = build_report(store, n_boot=200, seed=1)
    s = report.summary
    grouped = s[s["split_protocol"] == "grouped"]
    assert set(grouped["n"]) == {4}
    for metric in ("srcc", "plcc", "krcc"):
        assert grouped[f"{metric}_ci_low"].notna().all()
        assert (grouped[f"{metric}_ci_low"] <= grouped[f"{metric}_ci_high"]).all()
        assert grouped[f"{metric}_median"].notna().all()
    for _, block in grouped.groupby("target"):
        assert block["is_best"].sum() == 1
    twins = grouped[grouped["method"].isin(["brightness", "twin"])]
    for _, pair in twins.groupby("target"):
        assert pair["srcc_mean"].nunique() == 1  # identical predictions...
        # ...so whichever is not the best is tied with it (p = 1 after Holm)
        other = pair[~pair["is_best"]]
        if len(other):
            assert bool(other["tied_with_best"].iloc[0])
    # same seed, same intervals
    again = build_report(store, n_boot=200, seed=1).summary
    assert (again["srcc_ci_low"].fillna(-9).to_numpy() == s["srcc_ci_low"].fillna(-9).to_numpy()).all()


def test_every_number_traces_back_to_store_rows(store):
    report = build_report(store, n_boot=50)
    rows = read_results(store)
    provenance = report.provenance()
    grouped = next(b for b in provenance if b["split_protocol"] == "grouped")
    stored = rows[rows["split_protocol"] == "grouped"].drop_duplicates("repeat").set_index("repeat")["split_hash"]
    assert grouped["split_hashes"] == {int(r): h for r, h in stored.items()}
    ids = {i for m in grouped["methods"] for i in m["result_ids"]}
    assert ids == set(rows[rows["split_protocol"] == "grouped"]["id"])
    line = report.summary.iloc[0]
    picked = rows[rows["id"].isin([int(i) for i in line["result_ids"].split(",")])]
    assert picked["srcc"].mean() == pytest.approx(line["srcc_mean"])


def test_paper_layouts_and_every_format(store):
    runner = CliRunner()
    md = runner.invoke(app, ["report", "--out", str(store), "--bootstrap", "100"])
    assert md.exit_code == 0, md.output
    text = (store / "leaderboard.md").read_text()
    assert "Table 1 layout: perceptual quality" in text and "Table 2 layout: text-image alignment on agiqa3k" in text
    assert "*SVR-based*" in text and "*Handcrafted*" in text  # methods grouped by family
    assert "All images, no split" in text and "Provenance" in text
    assert "Splits: agiqa3k: grouped" in text and "PLCC on raw scores" in text and "Model selection" in text
    assert "**" in text and "<u>" in text and "95% CI" in text
    assert list((store / "figures").glob("srcc-*.png")) and list((store / "figures").glob("scatter-*.png"))
    assert list((store / "figures").glob("generators-*.png"))  # the tiny set names three generators

    html = runner.invoke(app, ["report", "--out", str(store), "--format", "html", "--bootstrap", "50"])
    assert html.exit_code == 0, html.output
    page = (store / "leaderboard.html").read_text()
    assert page.count("data:image/png;base64,") >= 3 and "src='http" not in page and 'src="http' not in page
    assert "<table" in page and "Table 1 layout" in page

    csv = runner.invoke(app, ["report", "--out", str(store), "--format", "csv", "--bootstrap", "0"])
    assert csv.exit_code == 0
    header = (store / "leaderboard.csv").read_text().splitlines()[0]
    assert "srcc_median" in header and "result_ids" in header and "p_holm" in header

    out = runner.invoke(app, ["report", "--out", str(store), "--format", "json", "--bootstrap", "0"])
    assert out.exit_code == 0
    body = json.loads((store / "leaderboard.json").read_text())
    assert body["format"] == "agiqa-bench/report@1" and body["comparisons"] and body["provenance"]
    bad = runner.invoke(app, ["report", "--out", str(store), "--format", "pdf"])
    assert bad.exit_code == 2 and "--format must be one of" in bad.output


def test_table1_puts_datasets_side_by_side(store):
    run_benchmark(["cpbd"], "synthetic", dataset_options={"n_prompts": 12, "image_size": 64}, repeats=2, out=store)
    table = build_report(store, n_boot=0).tables()[0]
    assert table.key == "table1"
    assert table.header[1].startswith("agiqa3k (quality)") and table.header[4].startswith("synthetic (quality)")
    cpbd = next(row for row in table.rows if row[0].text == "cpbd")
    assert all(cell.text not in ("—", "n/a") for cell in cpbd[1:])  # a value under both datasets


def test_compare_command(store):
    result = CliRunner().invoke(app, ["compare", "brightness", "cpbd", "--out", str(store), "--target", "quality"])
    assert result.exit_code == 0, result.output
    assert "Wilcoxon signed-rank p" in result.output and "Nadeau-Bengio corrected t" in result.output
    assert "4 shared repeats" in result.output
    missing = CliRunner().invoke(app, ["compare", "brightness", "nope", "--out", str(store)])
    assert missing.exit_code == 2 and "no finished results for 'nope'" in missing.output


def test_old_stores_gain_the_group_columns(tmp_path):
    folder = tmp_path / "old"
    folder.mkdir()
    con = sqlite3.connect(folder / "results.sqlite")
    con.execute("CREATE TABLE predictions (result_id INTEGER NOT NULL, item_id TEXT NOT NULL, prediction REAL NOT NULL,"
                " mos REAL NOT NULL, PRIMARY KEY (result_id, item_id))")
    con.commit()
    con.close()
    with ResultStore(folder) as store:
        assert {"item_group", "generator"} <= set(store.predictions().columns)


def test_paper_tables_compare_methods_on_the_repeats_they_share(tiny_agiqa3k, tmp_path, monkeypatch):
    """cpbd with 3 repeats and twin with 2 in one store: Table 1 shows both over the 2 shared repeats, marks the
    row that lacks one, and its caption states the count and the split-set hash; the detail table keeps n = 3."""
    from leaderboard.aggregate import split_set_hash

    register(monkeypatch, BRIGHTNESS, TWIN)
    out = tmp_path / "runs"
    run_benchmark(["cpbd"], "agiqa3k", data_root=tiny_agiqa3k, repeats=3, out=out)
    run_benchmark(["twin"], "agiqa3k", data_root=tiny_agiqa3k, repeats=2, out=out)
    rows = read_results(out)
    report = build_report(out, n_boot=50)
    full = report.summary[report.summary["target"] == "quality"].set_index("method")
    shared = report.shared[report.shared["target"] == "quality"].set_index("method")
    assert full.loc["cpbd", "n"] == 3 and full.loc["twin", "n"] == 2
    assert set(shared["n"]) == {2}
    cpbd = rows[(rows["method"] == "cpbd") & (rows["target"] == "quality")]
    assert shared.loc["cpbd", "srcc_mean"] == pytest.approx(cpbd[cpbd["repeat"] < 2]["srcc"].mean())
    assert full.loc["cpbd", "srcc_mean"] == pytest.approx(cpbd["srcc"].mean())
    assert shared.loc["cpbd", "srcc_mean"] != pytest.approx(full.loc["cpbd", "srcc_mean"])
    hashes = cpbd[cpbd["repeat"] < 2]["split_hash"]
    table1 = next(t for t in report.tables() if t.key == "table1")
    assert f"2 repeats shared by every row (split set {split_set_hash(hashes)})" in table1.caption
    assert "twin has 2" in table1.caption
    labels = [row[0].text for row in table1.rows]
    assert "twin †" in labels and "cpbd" in labels
    cells = {row[0].text: row[1].text for row in table1.rows}
    assert cells["cpbd"].startswith(f"{shared.loc['cpbd', 'srcc_mean']:.4f}")
    details = [t for t in report.detail_tables() if "quality" in t.title]
    assert any(row[1].text == "3" for t in details for row in t.rows)
    # a failed repeat counts the same as a missing one: make twin's repeat 1 an error row
    with sqlite3.connect(out / "results.sqlite") as conn:
        conn.execute("UPDATE results SET status='error', srcc=NULL WHERE method='twin' AND repeat=1")
    again = build_report(out, n_boot=50).shared
    assert set(again[again["target"] == "quality"]["n"]) == {1}
