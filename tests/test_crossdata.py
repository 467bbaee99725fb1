"""Cross-dataset evaluation: fit on one dataset, test on every image of another (agiqa_bench.crossdata)."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import replace
from pathlib import Path

import pytest
from typer.testing import CliRunner

from agiqa_bench.cli import app
from agiqa_bench.crossdata import PROTOCOL, combine, cross_splits, match_targets, parse_target_map
from agiqa_bench.errors import ConfigError
from agiqa_bench.records import Dataset, Item
from agiqa_bench.runner import data_hash, plan_run

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


def toy(name: str, targets: tuple[str, ...], n_groups: int = 6, per_group: int = 3) -> Dataset:
    items = [Item(id=f"{g}_{k}.png", image=Path(f"/nowhere/{name}/{g}_{k}.png"), prompt=f"prompt {g}",
                  targets={t: float(g + k + i) for i, t in enumerate(targets)}, group=str(g), generator=f"gen{k}")
             for g in range(n_groups) for k in range(per_group)]
    return Dataset(name=name, items=items, targets=targets)


def test_target_map_reads_train_equals_test_pairs():
    assert parse_target_map(["overall=quality", "overall=alignment"]) == {"quality": "overall", "alignment": "overall"}
    assert parse_target_map(["a=b,c=d"]) == {"b": "a", "d": "c"}
    for bad in ("overall", "=quality", "overall="):
        with pytest.raises(ConfigError, match="TRAIN_TARGET=TEST_TARGET"):
            parse_target_map([bad])
    with pytest.raises(ConfigError, match="two training targets"):
        parse_target_map(["a=quality", "b=quality"])


def test_targets_match_by_name_or_by_map_and_a_mismatch_is_an_error():
    three, one = toy("three", ("quality", "alignment")), toy("one", ("overall",))
    big = toy("big", ("quality", "authenticity", "alignment"))
    assert match_targets(three, big, None, None) == {"quality": "quality", "alignment": "alignment"}
    with pytest.raises(ConfigError, match="--target-map overall=quality"):
        match_targets(one, three, None, None)
    assert match_targets(one, three, None, {"quality": "overall"}) == {"quality": "overall"}
    with pytest.raises(ConfigError, match="authenticity"):  # asked for explicitly, no counterpart
        match_targets(three, big, ["authenticity"], None)
    with pytest.raises(ConfigError, match="has no target 'overall'"):
        match_targets(three, big, None, {"quality": "overall"})
    with pytest.raises(ConfigError, match="test dataset 'three' has no target 'authenticity'"):
        match_targets(big, three, None, {"authenticity": "quality"})


def test_combined_dataset_keeps_the_two_sides_apart():
    train, test = toy("a", ("overall",)), toy("b", ("quality", "alignment"))
    ds = combine(train, test, {"quality": "overall"})
    assert ds.targets == ("quality",) and len(ds) == len(train) + len(test)
    trained = [it for it in ds.items if it.id.startswith("train:")]
    assert len(trained) == len(train) and all(it.group.startswith("train:") for it in trained)
    assert trained[0].targets == {"quality": train.items[0].targets["overall"]}
    tested = [it for it in ds.items if not it.id.startswith("train:")]
    assert [it.id for it in tested] == ["test:" + it.id for it in test.items]  # same file names on both sides are fine
    assert tested[0].targets == {"quality": test.items[0].targets["quality"]}


def test_cross_splits_vary_the_validation_part_and_test_every_image():
    ds = combine(toy("a", ("quality",), n_groups=20), toy("b", ("quality",), n_groups=5), {"quality": "quality"})
    splits = cross_splits(ds, repeats=4, seed=0, val_fraction=0.2)
    test_ids = tuple(it.id for it in ds.items if not it.id.startswith("train:"))
    vals = set()
    for s in splits.splits:
        assert s.test == test_ids
        assert all(i.startswith("train:") for i in s.train + s.val)
        assert len(s.train) + len(s.val) == 60 and len(s.val) == 12  # 4 of 20 groups x 3 images
        train_groups = {ds.items[ds._index[i]].group for i in s.train}
        val_groups = {ds.items[ds._index[i]].group for i in s.val}
        assert not train_groups & val_groups
        vals.add(s.val)
    assert len(vals) == 4
    assert cross_splits(ds, repeats=2, seed=0, val_fraction=0.2).splits[1] == splits.splits[1]  # repeat r fixed


def test_plan_scores_zero_shot_methods_once_and_takes_the_training_datasets_defaults(tiny_agiqa3k):
    from agiqa_bench.datasets import load_dataset

    test = load_dataset("agiqa3k", tiny_agiqa3k)
    train = replace(test, name="other", items=[replace(it, targets={"overall": it.targets["quality"]})
                                               for it in test.items], targets=("overall",))
    plan = plan_run(["cpbd", "ceiq"], test, train_dataset=train, target_map={"quality": "overall"}, repeats=3)
    assert plan.splits.protocol == PROTOCOL and plan.cross["train_dataset"] == "other"
    assert plan.cross["test_data_hash"] == data_hash(test) and plan.cross["train_data_hash"] == data_hash(train)
    jobs = plan.jobs()
    assert sum(j.method.name == "cpbd" for j in jobs) == 1 and sum(j.method.name == "ceiq" for j in jobs) == 3
    assert plan.store_dataset == "agiqa3k"
    with pytest.raises(ConfigError, match="--train-dataset"):
        plan_run(["cpbd"], test, target_map={"quality": "overall"})
    with pytest.raises(ConfigError, match="does not apply"):
        plan_run(["cpbd"], test, train_dataset=train, target_map={"quality": "overall"}, split_protocol="all-images")


@pytest.fixture(scope="module")
def two_worlds(tmp_path_factory):
    """Two SynthAGIQA worlds of different seeds: a stand-in for two real datasets."""
    root = tmp_path_factory.mktemp("worlds")
    for seed in (3, 4):
        result = invoke("synth", "--out", root / f"s{seed}", "--n-prompts", "10", "--image-size", "64", "--seed", seed)
        assert result.exit_code == 0, result.output
    return root / "s3", root / "s4"


def test_a_cross_dataset_run_is_stored_resumes_and_has_its_table(two_worlds, tmp_path):
    train_root, test_root = two_worlds
    args = ["run", "--dataset", "synthetic", "--data-root", test_root, "--train-dataset", "synthetic",
            "--train-data-root", train_root, "--methods", "cpbd,ceiq", "--repeats", "2", "--target", "quality",
            "--out", tmp_path, "--executor", "local", "--workers", "2"]
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    with sqlite3.connect(tmp_path / "results.sqlite") as conn:
        rows = conn.execute("SELECT method, repeat, dataset, train_dataset, train_data_hash, test_data_hash, "
                            "data_hash, split_protocol, n_train, n_val, n_test FROM results ORDER BY method, repeat").fetchall()
    assert [(r[0], r[1]) for r in rows] == [("ceiq", 0), ("ceiq", 1), ("cpbd", 0)]
    from agiqa_bench.datasets import load_dataset

    test_hash = data_hash(load_dataset("synthetic", test_root))
    train_hash = data_hash(load_dataset("synthetic", train_root))
    for r in rows:
        assert r[2:4] == ("synthetic", "synthetic") and r[4] == train_hash and r[5] == test_hash
        assert r[6] not in (train_hash, test_hash) and r[7] == PROTOCOL
        assert r[10] == 60 and r[8] + r[9] == 60  # every test image; the training world split into fit + val
    again = invoke(*args)
    assert again.exit_code == 0 and "skipped 3 finished row(s)" in again.output.replace("\n", " ")
    report = invoke("report", "--out", tmp_path, "--no-figures", "--bootstrap", "50")
    assert report.exit_code == 0, report.output
    text = (tmp_path / "leaderboard.md").read_text()
    assert "Cross-dataset generalisation" in text and "synthetic → synthetic (quality) SRCC" in text
    assert "Table 1 layout" not in text  # cross rows never enter the within-dataset tables
    line = next(row for row in text.splitlines() if row.startswith("| ceiq"))
    assert line.count("[") == 2  # SRCC and PLCC, each with its interval
    html = invoke("report", "--out", tmp_path, "--no-figures", "--bootstrap", "50", "--format", "html")
    assert html.exit_code == 0 and "Cross-dataset generalisation" in (tmp_path / "leaderboard.html").read_text()
    as_json = invoke("report", "--out", tmp_path, "--format", "json", "--bootstrap", "0")
    summary = json.loads((tmp_path / "leaderboard.json").read_text())["summary"]
    assert as_json.exit_code == 0 and {line["train_dataset"] for line in summary} == {"synthetic"}


def test_cross_dataset_cli_errors_are_one_line(two_worlds, tiny_agiqa3k, tmp_path):
    train_root, test_root = two_worlds
    result = invoke("run", "--dataset", "synthetic", "--data-root", test_root, "--train-dataset", "agiqa3k",
                    "--train-data-root", tiny_agiqa3k, "--target-map", "overall=quality", "--methods", "ceiq",
                    "--out", tmp_path)
    assert result.exit_code == 2 and "no target 'overall'" in result.output and "Traceback" not in result.output
    result = invoke("run", "--train-data-root", train_root, "--methods", "ceiq", "--out", tmp_path)
    assert result.exit_code == 2 and "--train-dataset" in result.output


def test_ids_that_look_like_the_other_side_never_collide():
    """A test item named like a prefixed training item (or carrying the prefix itself) stays on its side."""
    from agiqa_bench.crossdata import is_train_item, original_id

    train, test = toy("a", ("quality",)), toy("b", ("quality",))
    test = replace(test, items=[replace(it, id="train:" + it.id) for it in test.items])
    ds = combine(train, test, {"quality": "quality"})
    assert len({it.id for it in ds.items}) == len(train) + len(test)
    tested = [it for it in ds.items if not is_train_item(it.id)]
    assert [original_id(it.id) for it in tested] == [it.id for it in test.items]
    splits = cross_splits(ds, repeats=1)
    assert len(splits[0].test) == len(test) and not set(splits[0].test) & set(splits[0].train)


def test_training_and_testing_on_the_same_files_warns(tmp_path):
    from agiqa_bench.datasets._common import DataWarning

    train = toy("a", ("quality",))
    with pytest.warns(DataWarning, match="same files as training images"):
        ds = combine(train, replace(train, name="b"), {"quality": "quality"})
    assert any("not generalisation" in n for n in ds.notes)
