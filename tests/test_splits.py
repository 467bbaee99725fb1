"""Both split protocols, including bit-exact reproduction of the IP-IQA reference folds."""

from __future__ import annotations

import json
import warnings

import pytest
from agiqa_test_support import DATASETS, REF_SPLITS

from agiqa_bench.datasets import load_dataset
from agiqa_bench.datasets._common import DataWarning
from agiqa_bench.errors import ConfigError, DataError
from agiqa_bench.splits import SplitSet, make_splits


def labels(name: str, **options):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        return load_dataset(name, DATASETS / name, check_images=False, **options)


@pytest.fixture(scope="module")
def ds3k():
    return labels("agiqa3k")


@pytest.fixture(scope="module")
def ds1k():
    return labels("agiqa1k")


def _check_partition(ds, split):
    parts = [set(split.train), set(split.val), set(split.test)]
    assert sum(map(len, parts)) == len(ds)
    assert set().union(*parts) == {it.id for it in ds}
    group = {it.id: it.group for it in ds}
    groups = [{group[i] for i in p} for p in parts]
    assert not groups[0] & groups[1] and not groups[0] & groups[2] and not groups[1] & groups[2]


def test_grouped_is_exactly_80_20_of_groups_and_disjoint(ds3k):
    splits = make_splits(ds3k, "grouped", repeats=10)
    assert len(splits) == 10
    for split in splits.splits:
        _check_partition(ds3k, split)
        test_groups = {ds3k.subset([i])[0].group for i in split.test}
        assert len(test_groups) == 60  # exactly 20% of 300 prompts
        val_groups = {ds3k.subset([i])[0].group for i in split.val}
        assert len(val_groups) == 24  # 10% of the 240 train prompts
    assert len({s.test for s in splits.splits}) == 10  # repeats differ


def test_grouped_is_deterministic_and_prefix_stable(ds3k):
    a = make_splits(ds3k, "grouped", repeats=3, seed=5)
    b = make_splits(ds3k, "grouped", repeats=5, seed=5)
    assert a.splits == b.splits[:3]
    assert make_splits(ds3k, "grouped", repeats=3, seed=6).splits[0] != a.splits[0]
    assert a.hash == make_splits(ds3k, "grouped", repeats=3, seed=5).hash


def test_reference_agiqa3k_matches_reference_folds(ds3k):
    ref = json.loads(REF_SPLITS.read_text())["agiqa3k"]
    splits = make_splits(ds3k, "ipiqa-reference", repeats=10, val_fraction=0)
    for split, fold in zip(splits.splits, ref):
        assert sorted(int(g) for g in split.test_groups) == fold["test_prompt_idx"]
        assert len(split.test) == fold["n_test"] and len(split.train) == fold["n_train"]


def test_reference_agiqa1k_matches_reference_folds(ds1k):
    ref = json.loads(REF_SPLITS.read_text())["agiqa1k"]
    splits = make_splits(ds1k, "ipiqa-reference", repeats=10, val_fraction=0)
    for split, fold in zip(splits.splits, ref):
        assert set(split.test_groups) == set(fold["test_groups"])
        # the reference counts the duplicated xlsx row twice; we keep it once
        dup_in_test = "9_14" in split.test_groups
        assert len(split.test) == fold["n_test"] - dup_in_test
        assert len(split.train) == fold["n_train"] - (not dup_in_test)


def test_reference_agiqa1k_with_validation_keeps_test_folds(ds1k):
    ref = json.loads(REF_SPLITS.read_text())["agiqa1k"]
    splits = make_splits(ds1k, "ipiqa-reference", repeats=10)
    for split, fold in zip(splits.splits, ref):
        assert set(split.test_groups) == set(fold["test_groups"])
        assert len(split.val) > 0
        _check_partition(ds1k, split)


def test_reference_folds_survive_dropped_items(ds1k):
    """Dropping every image of a group must not shift the random stream of later groups."""
    from agiqa_bench.records import Dataset

    kept = [it for it in ds1k.items if it.group != "0_0"]
    smaller = Dataset("agiqa1k", kept, ds1k.targets, label_groups=ds1k.all_label_groups)
    full = make_splits(ds1k, "ipiqa-reference", repeats=3, val_fraction=0)
    part = make_splits(smaller, "ipiqa-reference", repeats=3, val_fraction=0)
    for a, b in zip(full.splits, part.splits):
        assert set(a.test_groups) - {"0_0"} == set(b.test_groups) - {"0_0"}


def test_reference_protocol_rejects_other_datasets(tiny_agiqa3k):
    ds = load_dataset("csv", tiny_agiqa3k, image_col="name", targets="quality=mos_quality", images="images")
    with pytest.raises(ConfigError, match="agiqa1k and agiqa3k only"):
        make_splits(ds, "ipiqa-reference")
    with pytest.raises(ConfigError, match="unknown split protocol"):
        make_splits(ds, "kfold")


def test_split_file_round_trip_and_tamper_check(ds3k, tmp_path):
    splits = make_splits(ds3k, "grouped", repeats=2)
    path = splits.save(tmp_path / "s.json")
    again = SplitSet.load(path)
    assert again.splits == splits.splits and again.hash == splits.hash
    data = json.loads(path.read_text())
    data["splits"][0]["test"] = data["splits"][0]["test"][1:]
    path.write_text(json.dumps(data))
    with pytest.raises(DataError, match="no longer matches its hash"):
        SplitSet.load(path)
