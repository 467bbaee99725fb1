"""Published folds: `run --splits FILE` (our JSON and per-fold CSV lists) and `splits audit`."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from agiqa_test_support import DATASETS
from typer.testing import CliRunner

from agiqa_bench.cli import app
from agiqa_bench.datasets import load_dataset
from agiqa_bench.errors import DataError
from agiqa_bench.folds import IMPORTED, audit, load_splits
from agiqa_bench.splits import make_splits
from agiqa_bench.store import read_results

runner = CliRunner()


def write_fold(folder, names, header=("Image", "Prompt", "MOS")):
    folder.parent.mkdir(parents=True, exist_ok=True)
    with folder.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        for name in names:
            w.writerow([name, "p", "1.0"])


def leaky_ipce_layout(root, ds, folds=3, seed=0):
    """IPCE's `Database/<dataset>/<k>/train.csv, val.csv` (val = test), random by image: prompts leak."""
    rng = np.random.default_rng(seed)
    ids = [it.id for it in ds.items]
    layout = []
    for k in range(folds):
        order = rng.permutation(len(ids))
        test = [ids[i] for i in order[: len(ids) // 5]]
        train = [ids[i] for i in order[len(ids) // 5:]]
        write_fold(root / str(k) / "train.csv", train)
        write_fold(root / str(k) / "val.csv", test)
        layout.append((train, test))
    return layout


def test_exported_json_runs_with_the_protocols_split_hashes(tiny_agiqa3k, tmp_path):
    exported = tmp_path / "splits.json"
    done = runner.invoke(app, ["splits", "export", "--dataset", "agiqa3k", "--data-root", str(tiny_agiqa3k),
                               "--output", str(exported), "--repeats", "2", "--seed", "5"])
    assert done.exit_code == 0, done.output
    out = tmp_path / "runs"
    done = runner.invoke(app, ["run", "--methods", "cpbd", "--dataset", "agiqa3k", "--data-root", str(tiny_agiqa3k),
                               "--splits", str(exported), "--out", str(out), "--executor", "serial"])
    assert done.exit_code == 0, done.output
    rows = read_results(out)
    written = json.loads(exported.read_text())
    assert sorted(set(rows["split_hash"])) == sorted(
        make_splits(load_dataset("agiqa3k", tiny_agiqa3k), "grouped", 2, 5)[r].hash for r in range(2))
    assert set(rows["split_protocol"]) == {"grouped"} and written["hash"] in done.output
    # the same run through the protocol finds every row done: they are the protocol's rows
    again = runner.invoke(app, ["run", "--methods", "cpbd", "--dataset", "agiqa3k", "--data-root", str(tiny_agiqa3k),
                                "--repeats", "2", "--seed", "5", "--out", str(out), "--executor", "serial"])
    assert again.exit_code == 0 and len(read_results(out)) == len(rows)


def test_an_edited_json_is_imported_under_its_own_protocol(tiny_agiqa3k, tmp_path):
    ds = load_dataset("agiqa3k", tiny_agiqa3k)
    original = make_splits(ds, "grouped", 2, 0)
    data = original.to_json()
    first = data["splits"][0]
    first["test"], first["train"] = first["test"] + first["train"][:1], first["train"][1:]  # move one image
    data.pop("hash")
    path = tmp_path / "edited.json"
    path.write_text(json.dumps(data))
    loaded = load_splits(path, ds)
    assert loaded.protocol == IMPORTED and loaded.params["declared_protocol"] == "grouped"
    assert loaded.family.startswith("imported ") and loaded.params["file_hash"] in loaded.family


def test_per_fold_csv_lists_run_and_are_labelled(tiny_agiqa3k, tmp_path):
    ds = load_dataset("agiqa3k", tiny_agiqa3k)
    folds = tmp_path / "Database" / "AGIQA-3K"
    layout = leaky_ipce_layout(folds, ds, folds=2)
    out = tmp_path / "runs"
    done = runner.invoke(app, ["run", "--methods", "cpbd", "--dataset", "agiqa3k", "--data-root",
                               str(tiny_agiqa3k), "--splits", str(folds), "--out", str(out), "--executor", "serial"])
    assert done.exit_code == 0, done.output
    assert "val.csv read as the test part" in done.output
    rows = read_results(out)
    assert set(rows["split_protocol"]) == {IMPORTED} and set(rows["repeat"]) == {0, 1}
    for r, (train, test) in enumerate(layout):
        part = rows[rows["repeat"] == r]
        assert set(part["n_test"]) == {len(test)} and set(part["n_train"] + part["n_val"]) == {len(train)}
    report = runner.invoke(app, ["report", "--out", str(out), "--no-figures", "--bootstrap", "0"])
    assert report.exit_code == 0, report.output
    text = (out / "leaderboard.md").read_text()
    assert "Splits: agiqa3k: imported" in text and "val_is_test" in text


def test_audit_counts_shared_prompts_on_a_leaky_file_and_none_on_grouped(tmp_path):
    ds = load_dataset("agiqa1k", DATASETS / "agiqa1k", check_images=False)
    folds = tmp_path / "folds"
    layout = leaky_ipce_layout(folds, ds, folds=2, seed=3)
    found = audit(load_splits(folds, ds), ds)
    prompt = {it.id: " ".join(it.prompt.split()) for it in ds.items}
    group = {it.id: it.group for it in ds.items}
    for fold, (train, test) in zip(found, layout):
        seen = {prompt[i] for i in train}
        assert fold["n_test"] == len(set(test))
        assert fold["shared_prompts"] == len({prompt[i] for i in test} & seen) > 0
        assert fold["test_images_with_shared_prompt"] == sum(prompt[i] in seen for i in set(test))
        assert fold["shared_groups"] == len({group[i] for i in test} & {group[i] for i in train})
    grouped = audit(make_splits(ds, "grouped", 3, 0), ds)
    assert all(f["shared_prompts"] == 0 and f["shared_groups"] == 0 for f in grouped)
    done = runner.invoke(app, ["splits", "audit", str(folds), "--dataset", "agiqa1k", "--json"])
    assert done.exit_code == 0, done.output
    listed = json.loads(done.stdout)
    assert [f["shared_prompts"] for f in listed] == [f["shared_prompts"] for f in found]
    assert {"fold", "n_train", "n_test", "shared_groups", "shared_prompts"} <= set(listed[0])


@pytest.mark.parametrize("problem, message", [
    ("unknown", "row 3: image 'nope.jpg' is not in dataset 'agiqa1k'"),
    ("overlap", "are also in the test list"),
    ("empty", "found no fold files"),
])
def test_bad_fold_files_are_one_line_errors(problem, message, tmp_path):
    ds = load_dataset("agiqa1k", DATASETS / "agiqa1k", check_images=False)
    ids = [it.id for it in ds.items]
    folds = tmp_path / "folds"
    folds.mkdir()
    if problem == "unknown":
        write_fold(folds / "1" / "train.csv", [ids[0], "nope.jpg"])
        write_fold(folds / "1" / "test.csv", ids[5:9])
    elif problem == "overlap":
        write_fold(folds / "1" / "train.csv", ids[:10])
        write_fold(folds / "1" / "test.csv", ids[5:20])
    done = runner.invoke(app, ["splits", "audit", str(folds), "--dataset", "agiqa1k"])
    assert done.exit_code == 2 and message in done.output and "Traceback" not in done.output
    errors = [line for line in done.output.splitlines() if not line.startswith("warning:")]
    assert len(errors) == 1 and errors[0].startswith("error:"), done.output
    if problem != "empty":
        with pytest.raises(DataError):
            load_splits(folds, ds)


def test_flat_numbered_files_and_a_validation_list(tmp_path):
    ds = load_dataset("agiqa1k", DATASETS / "agiqa1k", check_images=False)
    ids = [it.id for it in ds.items]
    for k in (1, 2):
        write_fold(tmp_path / f"train_{k}.csv", ids[100 * k: 100 * k + 500])
        write_fold(tmp_path / f"val_{k}.csv", ids[:50])
        write_fold(tmp_path / f"test_{k}.csv", ids[900:1000])
    loaded = load_splits(tmp_path, ds)
    assert len(loaded) == 2 and loaded.params["val"] == "from the files"
    assert [len(s.val) for s in loaded.splits] == [50, 50] and [len(s.test) for s in loaded.splits] == [100, 100]


def test_one_image_on_both_sides_is_kept_in_the_test_part_with_a_warning(tmp_path):
    """IPCE's AGIQA-1k folds list a duplicated label-file name once per side: test keeps it, train drops it."""
    from agiqa_bench.datasets._common import DataWarning

    ds = load_dataset("agiqa1k", DATASETS / "agiqa1k", check_images=False)
    ids = [it.id for it in ds.items]
    write_fold(tmp_path / "1" / "train.csv", ids[:100])
    write_fold(tmp_path / "1" / "test.csv", ids[99:140])
    with pytest.warns(DataWarning, match="kept in the test part only"):
        loaded = load_splits(tmp_path, ds, val_fraction=0)
    assert ids[99] in loaded[0].test and ids[99] not in loaded[0].train and len(loaded[0].train) == 99


def test_ipce_names_of_aigciqa2023_resolve_by_alias():
    from agiqa_bench.datasets.aigciqa2023 import ipce_name

    assert [ipce_name(i) for i in (0, 1, 4, 400, 2399)] == [
        "Controlnet/000-1.png", "Controlnet/000-2.png", "Controlnet/001-1.png", "DALLE/000-1.png",
        "Unidiffuser/099-4.png"]
