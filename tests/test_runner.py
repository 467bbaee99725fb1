"""The runner: one row per key, resume without duplicates, error isolation, hard kills."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from agiqa_test_support import BATCHED, BRIGHTNESS, register

from agiqa_bench.errors import ConfigError
from agiqa_bench.runner import parse_overrides, plan_run, run_benchmark
from agiqa_bench.store import read_results

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent


def _rows(out: Path):
    con = sqlite3.connect(out / "results.sqlite")
    try:
        return con.execute("SELECT method, target, repeat, status FROM results ORDER BY method, target, repeat").fetchall()
    finally:
        con.close()


def test_run_stores_one_row_per_key_and_resumes(tiny_agiqa3k, tmp_path, monkeypatch):
    register(monkeypatch, BRIGHTNESS)
    out = tmp_path / "runs"
    summary = run_benchmark(["brightness", "cpbd"], "agiqa3k", data_root=tiny_agiqa3k, repeats=3, out=out)
    assert summary.ok and summary.done == 2 * 2 * 3 and summary.skipped == 0
    frame = read_results(out)
    assert len(frame) == 12
    assert set(frame["target"]) == {"quality", "alignment"}
    assert frame["split_hash"].nunique() == 3 and frame["split_family"].nunique() == 1
    assert (frame["harness_version"] != "").all()
    assert frame.groupby("repeat")["split_hash"].nunique().eq(1).all()  # same split for every method
    # predictions are stored per item
    con = sqlite3.connect(out / "results.sqlite")
    n_pred = con.execute("SELECT COUNT(*) FROM predictions").fetchone()[0]
    con.close()
    assert n_pred == int(frame["n_test"].sum())
    # cpbd finds the blur that drives the tiny set's quality
    assert frame[(frame.method == "cpbd") & (frame.target == "quality")]["srcc"].mean() > 0.5
    # rerun: nothing redone, nothing duplicated
    again = run_benchmark(["brightness", "cpbd"], "agiqa3k", data_root=tiny_agiqa3k, repeats=3, out=out)
    assert again.done == 0 and again.skipped == 12
    assert len(_rows(out)) == 12
    forced = run_benchmark(["cpbd"], "agiqa3k", data_root=tiny_agiqa3k, repeats=3, out=out, force=True)
    assert forced.done == 6 and len(_rows(out)) == 12
    # more repeats later: only the new ones run
    more = run_benchmark(["cpbd"], "agiqa3k", data_root=tiny_agiqa3k, repeats=4, out=out)
    assert more.done == 2 and more.skipped == 6


def test_failing_method_is_isolated_and_retried(tiny_agiqa3k, tmp_path, monkeypatch):
    register(monkeypatch, BRIGHTNESS)
    out = tmp_path / "runs"
    summary = run_benchmark(["brightness", "cpbd"], "agiqa3k", data_root=tiny_agiqa3k, repeats=3, out=out,
                            overrides={"brightness": {"fail_on_repeat": 1}})
    assert not summary.ok
    assert {(m, r) for m, _, r, _ in summary.failed} == {("brightness", 1)}
    rows = _rows(out)
    assert ("brightness", "quality", 1, "error") in rows
    assert sum(1 for r in rows if r[0] == "cpbd" and r[3] == "ok") == 6
    errors = read_results(out, status="error")
    assert "boom at this repeat" in errors["error"].iloc[0]
    # the same configuration again still fails at repeat 1, but keeps the finished rows
    again = run_benchmark(["brightness"], "agiqa3k", data_root=tiny_agiqa3k, repeats=3, out=out,
                          overrides={"brightness": {"fail_on_repeat": 1}})
    assert again.skipped == 4 and len(again.failed) == 2


def test_overrides_are_validated_and_recorded(tiny_agiqa3k, tmp_path):
    with pytest.raises(ConfigError, match="has no parameter nope; its parameters are: C"):
        plan_run(["ceiq"], "agiqa3k", data_root=tiny_agiqa3k, overrides=parse_overrides(["ceiq.nope=1"]))
    with pytest.raises(ConfigError, match="ceiq.C: cannot read 'x' as a number"):
        plan_run(["ceiq"], "agiqa3k", data_root=tiny_agiqa3k, overrides=parse_overrides(["ceiq.C=x"]))
    with pytest.raises(ConfigError, match="method.param=value"):
        parse_overrides(["C=10"])
    plan = plan_run(["ceiq", "ceiq.grid"], "agiqa3k", data_root=tiny_agiqa3k, repeats=1,
                    overrides=parse_overrides(["ceiq.C=4", "ceiq.grid.cv_folds=3"]))
    configs = {m.name: m.config for m in plan.methods}
    assert configs["ceiq"]["C"] == 4.0 and configs["ceiq.grid"]["C"] == 4.0
    assert configs["ceiq.grid"]["cv_folds"] == 3 and configs["ceiq"]["cv_folds"] != 3
    assert configs["ceiq.grid"]["search"] == "grid"


def test_unknown_target_and_method_are_clear(tiny_agiqa3k):
    with pytest.raises(ConfigError, match="has no target overall"):
        plan_run(["cpbd"], "agiqa3k", data_root=tiny_agiqa3k, targets=["overall"])
    with pytest.raises(ConfigError, match="unknown method 'nima'"):
        plan_run(["nima"], "agiqa3k", data_root=tiny_agiqa3k)


KILL_SCRIPT = textwrap.dedent(
    """
    import sys
    sys.path[:0] = [{tests!r}, {root!r}]
    import agiqa_test_support as s
    from agiqa_bench import registry
    from agiqa_bench.runner import run_benchmark
    registry.register(s.BRIGHTNESS)
    summary = run_benchmark(["cpbd", "brightness"], "agiqa3k", data_root={data!r}, repeats=4, out={out!r})
    print("done", summary.done, "skipped", summary.skipped)
    """
)


def test_hard_kill_then_rerun_completes_without_duplicates(tiny_agiqa3k, tmp_path):
    import os

    out = tmp_path / "runs"
    script = KILL_SCRIPT.format(tests=str(TESTS), root=str(ROOT), data=str(tiny_agiqa3k), out=str(out))
    env = {**os.environ, "AGIQA_TEST_KILL_AT": "2"}
    killed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, env=env)
    assert killed.returncode == -9, killed.stderr[-2000:]
    before = _rows(out)
    assert len(before) == 4 * 2 + 2 * 2  # cpbd finished; brightness repeats 0 and 1 only
    assert all(status == "ok" for *_, status in before)
    env.pop("AGIQA_TEST_KILL_AT")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "done 4 skipped 12" in done.stdout  # only brightness repeats 2 and 3 ran
    after = _rows(out)
    keys = [(m, t, r) for m, t, r, _ in after]
    assert len(keys) == len(set(keys)) == 16
    assert before == [row for row in after if row in before]


PROMPTED = BRIGHTNESS.__class__(name="prompted", factory="agiqa_test_support:Brightness", kind="zero-shot",
                                summary="test toy reading prompts", inputs=("image", "prompt"), default_run=False)


def test_prompt_methods_refuse_datasets_without_prompts_before_any_work(tiny_agiqa3k, tmp_path, monkeypatch):
    import pandas as pd

    register(monkeypatch, PROMPTED)
    table = pd.read_csv(tiny_agiqa3k / "data.csv")
    table.loc[[2, 5], "prompt"] = ""
    table.to_csv(tiny_agiqa3k / "data.csv", index=False)
    with pytest.raises(ConfigError, match=r"2 of 36 items .* have an empty prompt"):
        plan_run(["prompted"], "agiqa3k", data_root=tiny_agiqa3k)
    table["prompt"] = ""
    table.to_csv(tiny_agiqa3k / "data.csv", index=False)
    with pytest.raises(ConfigError, match="has none"):
        plan_run(["prompted"], "agiqa3k", data_root=tiny_agiqa3k)
    assert not (tmp_path / "runs").exists()


def test_all_images_protocol_scores_everything_for_zero_shot_only(tiny_agiqa3k, tmp_path, monkeypatch):
    register(monkeypatch, BRIGHTNESS)
    with pytest.raises(ConfigError, match="'brightness' is trainable and needs a split"):
        plan_run(["cpbd", "brightness"], "agiqa3k", data_root=tiny_agiqa3k, split_protocol="all-images")
    summary = run_benchmark(["cpbd"], "agiqa3k", data_root=tiny_agiqa3k, split_protocol="all-images",
                            out=tmp_path / "runs")
    frame = read_results(tmp_path / "runs")
    assert summary.done == 2 and set(frame["n_test"]) == {36} and set(frame["n_train"]) == {0}
    assert set(frame["split_protocol"]) == {"all-images"} and set(frame["repeat"]) == {0}


def test_runtime_only_parameters_neither_start_new_rows_nor_split_labels(tiny_agiqa3k, tmp_path, monkeypatch):
    register(monkeypatch, BATCHED)
    out = tmp_path / "runs"
    first = run_benchmark(["batched"], "agiqa3k", data_root=tiny_agiqa3k, repeats=2, out=out,
                          overrides={"batched": {"batch_size": "8"}})
    again = run_benchmark(["batched"], "agiqa3k", data_root=tiny_agiqa3k, repeats=2, out=out,
                          overrides={"batched": {"batch_size": "2"}})
    assert first.done == 4 and again.done == 0 and again.skipped == 4
    frame = read_results(out)
    assert frame["config_hash"].nunique() == 1 and set(frame["overrides_json"]) == {"{}"}
    assert '"batch_size": 8' in frame["config_json"].iloc[0]  # still recorded
    other = run_benchmark(["batched"], "agiqa3k", data_root=tiny_agiqa3k, repeats=2, out=out,
                          overrides={"batched": {"fail_on_repeat": "5"}})
    assert other.done == 4  # a parameter that may change scores is a new configuration


def test_a_changed_weights_file_is_a_new_configuration(tiny_agiqa3k, tmp_path, monkeypatch):
    """Same path, new bytes: the weights identity in the config hash makes the rerun compute new rows."""
    from agiqa_test_support import WEIGHTED

    register(monkeypatch, WEIGHTED)
    weights = tmp_path / "scale.txt"
    weights.write_text("1.0")
    out = tmp_path / "runs"
    run = lambda: run_benchmark(["weighted"], "agiqa3k", data_root=tiny_agiqa3k, repeats=2, out=out,  # noqa: E731
                                overrides={"weighted": {"weights": str(weights)}})
    first = run()
    assert first.done == 4 and run().skipped == 4  # unchanged file: reused
    before = read_results(out)
    weights.write_text("-2.0")  # same path, different bytes
    changed = run()
    assert changed.done == 4 and changed.skipped == 0
    frame = read_results(out)
    assert frame["config_hash"].nunique() == 2
    assert set(before["config_hash"]) < set(frame["config_hash"])
    new = frame[~frame["config_hash"].isin(before["config_hash"])]
    assert (new["srcc"].to_numpy() == pytest.approx(-before["srcc"].to_numpy()))  # the new file's scores
