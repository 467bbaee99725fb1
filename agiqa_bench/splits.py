"""Train/validation/test splits that keep groups (prompts, object pairs) together.

Splits depend on the labels only (item ids and group keys), never on images,
and are identical for every method of a run.

Protocols:
- `grouped` (default): for repeat r = 0..R-1, a NumPy Generator seeded with
  (seed, r) shuffles the groups; exactly round(test_fraction * G) groups form
  the test part, the rest train.  Repeat r is the same whatever R is.
- `ipiqa-reference`: the folds of the public IP-IQA code, bit for bit.
  AGIQA-1k: Python `random` seeded once with 42; groups in label-file order;
  each fold draws `random.random() < 0.8` per group (train) in that order, folds
  one after another from the same stream (so test sizes vary, 132-316 images).
  AGIQA-3k: `np.random.seed(42)` once, then per fold `np.random.permutation(300)`
  over prompt indices; the first 240 are train.

- `all-images`: one "repeat" whose test part is every image and whose train
  and validation parts are empty: how the AGIQA-3k paper scored its zero-shot
  alignment metrics (CLIPScore, ImageReward, HPS, StairReward).  Only
  zero-shot methods can run under it (the runner refuses trainable ones before
  any work); numbers from it are not comparable with split-based rows and are
  reported under their own protocol heading.

In `grouped` and `ipiqa-reference`, a validation part (default 10% of the train groups, at least one) is
carved out of train for model selection, with its own seeded generator.  The
reference code has no validation part: pass `val_fraction=0` to get its exact
training sets (then only the `last` or `test-oracle` model selection apply).
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from agiqa_bench.errors import ConfigError, DataError
from agiqa_bench.records import Dataset

PROTOCOLS = ("grouped", "ipiqa-reference", "all-images")
FORMAT = "agiqa-bench/splits@1"


@dataclass(frozen=True)
class Split:
    """One repeat: item ids of the train, validation and test parts."""

    repeat: int
    train: tuple[str, ...]
    val: tuple[str, ...]
    test: tuple[str, ...]
    test_groups: tuple[str, ...] = ()

    @property
    def hash(self) -> str:
        """Content hash of this repeat's three parts (the key results are stored under)."""
        body = json.dumps([self.repeat, self.train, self.val, self.test])
        return hashlib.sha256(body.encode()).hexdigest()[:16]


@dataclass
class SplitSet:
    dataset: str
    protocol: str
    params: dict
    splits: list[Split] = field(default_factory=list)

    @property
    def hash(self) -> str:
        """Content hash: two SplitSets with the same hash hold the same parts."""
        body = json.dumps(
            {"dataset": self.dataset, "protocol": self.protocol,
             "splits": [[s.repeat, s.train, s.val, s.test] for s in self.splits]},
            sort_keys=True,
        )
        return hashlib.sha256(body.encode()).hexdigest()[:16]

    @property
    def family(self) -> str:
        """Protocol and parameters without the repeat count: repeat r is the same for any R."""
        params = {k: v for k, v in sorted(self.params.items()) if k != "repeats"}
        return f"{self.protocol} " + json.dumps(params, sort_keys=True)

    def __len__(self) -> int:
        return len(self.splits)

    def __getitem__(self, repeat: int) -> Split:
        return self.splits[repeat]

    def to_json(self) -> dict:
        return {
            "format": FORMAT,
            "dataset": self.dataset,
            "protocol": self.protocol,
            "params": self.params,
            "hash": self.hash,
            "splits": [
                {"repeat": s.repeat, "n_train": len(s.train), "n_val": len(s.val), "n_test": len(s.test),
                 "test_groups": list(s.test_groups), "train": list(s.train), "val": list(s.val), "test": list(s.test)}
                for s in self.splits
            ],
        }

    def save(self, path: str | Path) -> Path:
        from agiqa_bench.outputs import atomic_write_text

        return atomic_write_text(path, json.dumps(self.to_json(), indent=1), what="write the splits file")

    @classmethod
    def load(cls, path: str | Path) -> "SplitSet":
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise DataError(f"cannot read split file {path}: {exc}") from None
        if data.get("format") != FORMAT:
            raise DataError(f"{path} is not an agiqa-bench split file (format {data.get('format')!r})")
        splits = [Split(s["repeat"], tuple(s["train"]), tuple(s["val"]), tuple(s["test"]), tuple(s.get("test_groups", ())))
                  for s in data["splits"]]
        out = cls(data["dataset"], data["protocol"], data["params"], splits)
        if data.get("hash") and data["hash"] != out.hash:
            raise DataError(f"split file {path} was edited: its content no longer matches its hash")
        return out


def _carve_val(train_groups: list[str], val_fraction: float, rng: np.random.Generator) -> tuple[list[str], list[str]]:
    """Split train groups into (train, val); val gets round(fraction * n) groups, at least one."""
    if val_fraction <= 0 or len(train_groups) < 2:
        return train_groups, []
    n_val = min(len(train_groups) - 1, max(1, round(val_fraction * len(train_groups))))
    order = rng.permutation(len(train_groups))
    val = {train_groups[i] for i in order[:n_val]}
    return [g for g in train_groups if g not in val], [g for g in train_groups if g in val]


def _parts(dataset: Dataset, repeat: int, train_g, val_g, test_g) -> Split:
    train_g, val_g, test_g = set(train_g), set(val_g), set(test_g)
    ids = lambda keep: tuple(it.id for it in dataset.items if it.group in keep)  # noqa: E731
    ordered_test = tuple(g for g in dataset.all_label_groups if g in test_g)
    return Split(repeat, ids(train_g), ids(val_g), ids(test_g), ordered_test)


def grouped_splits(dataset: Dataset, repeats: int = 10, seed: int = 0, test_fraction: float = 0.2,
                   val_fraction: float = 0.1) -> SplitSet:
    groups = dataset.groups
    if len(groups) < 3:
        raise DataError(f"{dataset.name}: {len(groups)} group(s) cannot be split into train/validation/test")
    if not 0 < test_fraction < 1:
        raise ConfigError(f"test fraction must be in (0, 1), got {test_fraction}")
    n_test = min(len(groups) - 1, max(1, round(test_fraction * len(groups))))
    splits = []
    for r in range(repeats):
        rng = np.random.default_rng([seed, r])
        order = rng.permutation(len(groups))
        test = [groups[i] for i in order[:n_test]]
        rest = [groups[i] for i in order[n_test:]]
        train, val = _carve_val(rest, val_fraction, np.random.default_rng([seed, r, 1]))
        splits.append(_parts(dataset, r, train, val, test))
    params = {"repeats": repeats, "seed": seed, "test_fraction": test_fraction, "val_fraction": val_fraction}
    return SplitSet(dataset.name, "grouped", params, splits)


def reference_test_groups(dataset_name: str, label_groups: list[str], repeats: int, seed: int = 42) -> list[list[str]]:
    """The test groups of each IP-IQA reference fold (AGIQA-1k or AGIQA-3k)."""
    folds: list[list[str]] = []
    if dataset_name == "agiqa1k":
        stream = random.Random(seed)
        for _ in range(repeats):
            folds.append([g for g in label_groups if not stream.random() < 0.8])
    elif dataset_name == "agiqa3k":
        try:
            ids = sorted(int(g) for g in label_groups)
        except ValueError:
            raise DataError("agiqa3k reference split needs integer prompt-index groups") from None
        if ids != list(range(len(ids))):
            raise DataError(f"agiqa3k reference split expects prompt indices 0..{len(ids) - 1} in the label file")
        state = np.random.RandomState(seed)
        n_train = int(len(ids) * 0.8)
        for _ in range(repeats):
            perm = state.permutation(len(ids))
            folds.append([str(i) for i in sorted(perm[n_train:])])
    else:
        raise ConfigError(
            f"split protocol 'ipiqa-reference' exists for agiqa1k and agiqa3k only, not {dataset_name!r}; use 'grouped'"
        )
    return folds


def reference_splits(dataset: Dataset, repeats: int = 10, seed: int = 42, val_fraction: float = 0.1) -> SplitSet:
    label_groups = dataset.all_label_groups
    folds = reference_test_groups(dataset.name, label_groups, repeats, seed)
    present = set(dataset.groups)
    splits = []
    for r, test in enumerate(folds):
        test_set = set(test)
        rest = [g for g in label_groups if g not in test_set and g in present]
        train, val = _carve_val(rest, val_fraction, np.random.default_rng([seed, r, 1]))
        splits.append(_parts(dataset, r, train, val, test))
    params = {"repeats": repeats, "seed": seed, "val_fraction": val_fraction}
    return SplitSet(dataset.name, "ipiqa-reference", params, splits)


def all_images_split(dataset: Dataset) -> SplitSet:
    """Every image in the test part, nothing to train on (zero-shot methods only)."""
    split = Split(0, (), (), tuple(it.id for it in dataset.items), tuple(dataset.groups))
    return SplitSet(dataset.name, "all-images", {"repeats": 1}, [split])


def make_splits(dataset: Dataset, protocol: str = "grouped", repeats: int = 10, seed: int | None = None,
                val_fraction: float = 0.1, test_fraction: float = 0.2) -> SplitSet:
    """Splits of `dataset` under `protocol` (see the module docstring)."""
    if repeats < 1:
        raise ConfigError(f"repeats must be at least 1, got {repeats}")
    if not 0 <= val_fraction < 1:
        raise ConfigError(f"validation fraction must be in [0, 1), got {val_fraction}")
    if protocol == "grouped":
        return grouped_splits(dataset, repeats, 0 if seed is None else seed, test_fraction, val_fraction)
    if protocol == "ipiqa-reference":
        return reference_splits(dataset, repeats, 42 if seed is None else seed, val_fraction)
    if protocol == "all-images":
        return all_images_split(dataset)
    raise ConfigError(f"unknown split protocol {protocol!r}; known: {', '.join(PROTOCOLS)}")
