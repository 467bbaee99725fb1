"""Cross-dataset evaluation: fit on one dataset, test on every image of another.

`agiqa-bench run --dataset aigciqa2023 --train-dataset agiqa3k` asks how a model trained on one set's
labels generalises to another's images and raters, the question reviewers ask first.  The two datasets are
joined into one `Dataset` so that the rest of the harness (jobs, executors, metrics, store) is unchanged:

- the training dataset's items get the id and group prefix `train:` and the test dataset's `test:` (the two
  sets may share file names: two SynthAGIQA worlds, or the same set under two seeds; and any id may itself
  start with `train:`), so ids never collide and each side is known by its prefix alone;
- training and testing on the same image files is not generalisation: the run goes on (a sanity check is
  legitimate) with a loud warning that says how many images the two sides share;
- targets are matched by name, or by `--target-map TRAIN=TEST` (e.g. `overall=quality`: AGIQA-1k's one
  coupled MOS stands in for the test set's quality MOS).  A test target with no counterpart is an error
  before any work when asked for with `--target`; otherwise it is left out, and a run where nothing
  matches is an error naming both sides' targets;
- the split protocol `cross-dataset`: repeat r holds out round(val_fraction x G) of the training dataset's
  G groups as the validation part (seeded with (seed, r, 1), as the grouped protocol carves its
  validation part), trains on the rest, and tests on the whole test dataset.  Repeats vary the validation
  part and the training seed; zero-shot methods, which do not train, are scored once (repeat 0);
- a method's dataset defaults are those of the training dataset (the model is trained there);
- rows are stored under the test dataset's name with the training dataset's name, both label hashes and
  the pair's own hash (`data_hash`), so they never mix with within-dataset rows, and resume like any run.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Sequence

import numpy as np

from agiqa_bench.errors import ConfigError, DataError
from agiqa_bench.records import Dataset

PROTOCOL = "cross-dataset"
TRAIN_PREFIX = "train:"
TEST_PREFIX = "test:"


def parse_target_map(pairs: Sequence[str] | None) -> dict[str, str]:
    """['overall=quality'] -> {'quality': 'overall'}: the training target used for each test target."""
    out: dict[str, str] = {}
    for pair in pairs or []:
        for part in (p.strip() for p in pair.split(",")):
            if not part:
                continue
            train, sep, test = (s.strip() for s in part.partition("="))
            if not sep or not train or not test:
                raise ConfigError(f"--target-map takes TRAIN_TARGET=TEST_TARGET (e.g. overall=quality), got {part!r}")
            if test in out and out[test] != train:
                raise ConfigError(f"--target-map gives the test target {test!r} two training targets "
                                  f"({out[test]!r} and {train!r})")
            out[test] = train
    return out


def match_targets(train: Dataset, test: Dataset, wanted: Sequence[str] | None,
                  target_map: dict[str, str] | None) -> dict[str, str]:
    """{test target: training target} for the run, or a ConfigError before any work."""
    target_map = dict(target_map or {})
    for test_t, train_t in target_map.items():
        if test_t not in test.targets:
            raise ConfigError(f"--target-map {train_t}={test_t}: the test dataset {test.name!r} has no target "
                              f"{test_t!r}; it has: {', '.join(test.targets)}")
        if train_t not in train.targets:
            raise ConfigError(f"--target-map {train_t}={test_t}: the training dataset {train.name!r} has no target "
                              f"{train_t!r}; it has: {', '.join(train.targets)}")
    if wanted:
        unknown = [t for t in wanted if t not in test.targets]
        if unknown:
            raise ConfigError(f"dataset {test.name!r} has no target {', '.join(unknown)}; it has: {', '.join(test.targets)}")
    considered = list(wanted or test.targets)
    mapping = {t: target_map.get(t, t) for t in considered if t in target_map or t in train.targets}
    unmatched = [t for t in considered if t not in mapping]
    hint = (f"say which training target stands for each with --target-map TRAIN=TEST (e.g. "
            f"--target-map {train.targets[0]}={considered[0]})" if train.targets and considered else "")
    if not mapping or (wanted and unmatched):
        raise ConfigError(f"no training target for the test target(s) {', '.join(unmatched)} of {test.name!r}: "
                          f"{train.name!r} has {', '.join(train.targets) or 'no targets'}; {hint}")
    return mapping


def combine(train: Dataset, test: Dataset, mapping: dict[str, str]) -> Dataset:
    """One dataset holding the training set's items (prefixed `train:`, targets renamed to the test
    set's names) and the test set's items (targets restricted to the mapped ones)."""
    if not test.items or not train.items:
        raise DataError(f"cross-dataset run needs items on both sides ({train.name}: {len(train)}, {test.name}: {len(test)})")
    items = [replace(it, id=TRAIN_PREFIX + it.id, group=TRAIN_PREFIX + it.group,
                     targets={t: it.targets[src] for t, src in mapping.items()}, meta={**it.meta, "part": "train"})
             for it in train.items]
    items += [replace(it, id=TEST_PREFIX + it.id, group=TEST_PREFIX + it.group,
                      targets={t: it.targets[t] for t in mapping}, meta={**it.meta, "part": "test"})
              for it in test.items]
    notes = [f"train: {n}" for n in train.notes] + list(test.notes)
    shared = _shared_files(train, test)
    if shared:
        import warnings

        from agiqa_bench.datasets._common import DataWarning

        message = (f"cross-dataset run trains on {train.name} and tests on {test.name}, but {shared} of the "
                   f"{len(test)} test images are the same files as training images: this measures fit, not "
                   f"generalisation")
        warnings.warn(DataWarning(message), stacklevel=2)
        notes.append(message)
    return Dataset(name=f"{train.name}-to-{test.name}", items=items, targets=tuple(mapping),
                   label_file=test.label_file, image_dir=test.image_dir, notes=notes,
                   label_groups=[TRAIN_PREFIX + g for g in train.all_label_groups]
                   + [TEST_PREFIX + g for g in test.all_label_groups],
                   attributes=test.attributes)


def _shared_files(train: Dataset, test: Dataset) -> int:
    """How many test images are the same files (by resolved path) as training images."""
    import os

    seen = {os.path.realpath(it.image) for it in train.items if it.image is not None}
    return sum(1 for it in test.items if it.image is not None and os.path.realpath(it.image) in seen)


def is_train_item(item_id: str) -> bool:
    return item_id.startswith(TRAIN_PREFIX)


def original_id(item_id: str) -> str:
    """The id an item of a combined dataset has in its own dataset."""
    for prefix in (TRAIN_PREFIX, TEST_PREFIX):
        if item_id.startswith(prefix):
            return item_id[len(prefix):]
    return item_id


def cross_splits(dataset: Dataset, repeats: int = 10, seed: int = 0, val_fraction: float = 0.1, *,
                 train_name: str = "", train_hash: str = "", train_options: dict | None = None,
                 test_options: dict | None = None):
    """The `cross-dataset` protocol's repeats over a `combine`d dataset (see the module docstring).
    `train_options` / `test_options`: the datasets' label options (e.g. a synthetic world's seed), recorded in
    the split family so a report can tell two worlds of one dataset apart."""
    from agiqa_bench.splits import Split, SplitSet, _carve_val

    if repeats < 1:
        raise ConfigError(f"repeats must be at least 1, got {repeats}")
    if not 0 <= val_fraction < 1:
        raise ConfigError(f"validation fraction must be in [0, 1), got {val_fraction}")
    train_groups = [g for g in dataset.groups if is_train_item(g)]
    test_groups = tuple(g for g in dataset.all_label_groups if not is_train_item(g))
    present_test = {it.group for it in dataset.items if not is_train_item(it.id)}
    test = tuple(it.id for it in dataset.items if not is_train_item(it.id))
    splits = []
    for r in range(repeats):
        fit, val = _carve_val(train_groups, val_fraction, np.random.default_rng([seed, r, 1]))
        fit_set, val_set = set(fit), set(val)
        splits.append(Split(r, tuple(it.id for it in dataset.items if it.group in fit_set),
                            tuple(it.id for it in dataset.items if it.group in val_set), test,
                            tuple(g for g in test_groups if g in present_test)))
    params = {"repeats": repeats, "seed": seed, "val_fraction": val_fraction, "train_dataset": train_name,
              "train_data_hash": train_hash}
    for key, options in (("train_options", train_options), ("test_options", test_options)):
        if options:
            params[key] = {k: str(v) for k, v in sorted(options.items())}
    return SplitSet(dataset.name, PROTOCOL, params, splits)
