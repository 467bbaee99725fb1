"""`agiqa-bench compare A B`: two methods on the splits they share, per block."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from agiqa_bench.errors import ConfigError
from leaderboard.aggregate import method_label
from leaderboard.statistics import METRICS, Comparison, paired_comparison


@dataclass
class BlockComparison:
    rows: list[tuple[int, float, float]]  # (repeat, value of A, value of B)
    result: Comparison


def _pick(frame: pd.DataFrame, name: str) -> pd.DataFrame:
    """Rows of a method given by its stored name or its report label (e.g. 'ceiq {C=10}')."""
    labels = pd.Series([method_label(m, o, c) for m, o, c in zip(frame["method"], frame["overrides_json"],
                                                                   frame["config_json"])], index=frame.index)
    hit = frame[(frame["method"] == name) | (labels == name)]
    if hit.empty:
        known = ", ".join(sorted(set(labels)))
        raise ConfigError(f"no finished results for {name!r} in this store; it has: {known}")
    return hit


def compare_methods(frame: pd.DataFrame, a: str, b: str, metric: str = "srcc", *, dataset: str | None = None,
                    target: str | None = None) -> list[tuple[str, BlockComparison]]:
    """Paired comparisons of A and B in every (dataset, split family, target) block that has both."""
    if metric not in METRICS:
        raise ConfigError(f"--metric must be one of {', '.join(METRICS)}, not {metric!r}")
    frame = frame[frame["status"] == "ok"]
    if dataset:
        frame = frame[frame["dataset"] == dataset]
    if target:
        frame = frame[frame["target"] == target]
    rows_a, rows_b = _pick(frame, a), _pick(frame, b)
    out = []
    keys = ["dataset", "data_hash", "split_family", "target"]
    for key, part_a in rows_a.groupby(keys, sort=True):
        part_b = rows_b[(rows_b[keys] == pd.Series(key, index=keys)).all(axis=1)]
        if part_b.empty:
            continue
        values_a = dict(zip(part_a["split_hash"], part_a[metric].astype(float)))
        values_b = dict(zip(part_b["split_hash"], part_b[metric].astype(float)))
        repeats = dict(zip(part_a["split_hash"], part_a["repeat"].astype(int)))
        shared = [h for h in values_a if h in values_b]
        n_train = float(part_a[part_a["split_hash"].isin(shared)]["n_train"].mean())
        n_test = float(part_a[part_a["split_hash"].isin(shared)]["n_test"].mean())
        result = paired_comparison(a, b, metric, values_a, values_b, repeats, n_train, n_test)
        rows = sorted((repeats[h], values_a[h], values_b[h]) for h in shared)
        out.append((f"{key[0]} / {key[3]} ({key[2]})", BlockComparison(rows, result)))
    if not out:
        raise ConfigError(f"{a!r} and {b!r} share no split in this store (same dataset, labels, split family and target)")
    return out
