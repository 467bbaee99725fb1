"""Label scales: trainable methods see their training labels on one scale, whatever the dataset's.

MOS come on many scales: AGIQA-3k's are z-scores rescaled to mean 2.5 and std 1 (0..4.5), AGIQA-1k's xlsx
0..5, AIGCIQA2023's MOSz about 26..72, other sets 1..5 or 0..100.  A method tuned on one scale (a head
initialised near 0, an SVR's epsilon tube, IPCE's five levels mapped onto [0, 5]) breaks on another:
measured on SynthAGIQA with every label mapped by y -> 26 + 9y, IP-IQA's quality SRCC fell from 0.644 to
0.149 before this module existed.

So the harness, not each method, puts the labels on one scale.  Before a trainable method's `fit`, the
runner computes, per target and from the *training part only*, the mean and (population) standard deviation
of the labels, and hands the method train and validation items whose labels are

    y' = scale.mean + scale.std * (y - mean_train) / std_train

(`LabelMap.forward`).  The method's predictions are mapped back with the inverse (`LabelMap.inverse`), so
stored predictions, RMSE and every report stay in the dataset's own MOS units.  Both maps are affine with a
positive slope, so a method's ranking, and so its SRCC/KRCC, do not depend on the affine scale the labels
came in (up to float rounding): the registry-wide test `tests/test_label_scale.py` checks it for every
trainable method.

A method declares the scale it was designed for as `Method.label_scale` (a `LabelScale`; a plugin inherits
the default, `STANDARD`: mean 0, std 1).  Methods whose official recipe fixes a label range declare that
range's scale instead: IP-IQA and IPCE were written for AGIQA-3k's MOS (`AGIQA3K_SCALE`, mean 2.5 and std 1,
so on AGIQA-3k itself their labels are the raw MOS up to the split's own mean and spread), and IPCE maps its
five levels onto [0, 5].  This replaces what the official code does by hand per dataset (IPCE divides
AIGCIQA2023's MOS by 20).  A method that handles scale itself may set `label_scale = None` (raw labels);
the same registry-wide test holds it to the same invariance.

Validation items (model selection) and, under the labelled test-oracle protocol, the test items the runner
hands over with `set_oracle` are mapped with the same training-part statistics.  A target that is constant
over the training part has no scale: the map then only shifts it (std taken as 1).  Standardised values are
rounded to `DECIMALS` decimals, so labels that differ by an affine map reach a method bit for bit alike.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Mapping, Sequence

import numpy as np

from agiqa_bench.records import Item


#: Standardised labels are rounded to this many decimals, far above float noise (about 1e-15): the statistics of
#: a*y + b differ from those of y in the last bits, and a method whose solver stops at a tolerance (an SVR) would
#: otherwise turn that into differences of 1e-3 in its predictions.  Rounded, both reach the method bit for bit.
DECIMALS = 10


@dataclass(frozen=True)
class LabelScale:
    """The scale a method's training labels are put on: this mean and this standard deviation."""

    mean: float = 0.0
    std: float = 1.0
    name: str = "standard"

    def __post_init__(self) -> None:
        if not (math.isfinite(self.mean) and math.isfinite(self.std) and self.std > 0):
            raise ValueError(f"a label scale needs a finite mean and a positive std, got {self.mean}, {self.std}")

    def describe(self) -> str:
        return f"{self.name} (mean {self.mean:g}, std {self.std:g})"


#: The default: training labels standardised (mean 0, std 1) on the training part.
STANDARD = LabelScale()
#: AGIQA-3k's MOS scale (both columns: mean 2.50, std 1.00 over the 2,982 images), for which IP-IQA's and
#: IPCE's official recipes were written (IPCE maps its five levels onto [0, 5]).
AGIQA3K_SCALE = LabelScale(2.5, 1.0, "agiqa3k")


@dataclass(frozen=True)
class LabelMap:
    """Per target: the affine map from a dataset's labels to a method's label scale, fitted on training labels."""

    targets: tuple[str, ...]
    offset: tuple[float, ...]  # the training part's mean, per target
    spread: tuple[float, ...]  # the training part's std (1 where the target is constant), per target
    scale: LabelScale = STANDARD

    @classmethod
    def fit(cls, items: Sequence[Item], targets: Sequence[str], scale: LabelScale = STANDARD) -> "LabelMap":
        offsets, spreads = [], []
        for target in targets:
            y = np.array([item.targets[target] for item in items], dtype=np.float64)
            if y.size == 0:
                raise ValueError("a label map needs at least one training item")
            mean = float(y.mean())
            std = float(y.std())
            offsets.append(mean)
            spreads.append(std if std > 0 and math.isfinite(std) else 1.0)
        return cls(tuple(targets), tuple(offsets), tuple(spreads), scale)

    def forward(self, target: str, y):
        """Dataset labels -> the method's scale."""
        j = self.targets.index(target)
        standard = np.round((np.asarray(y, dtype=np.float64) - self.offset[j]) / self.spread[j], DECIMALS)
        return self.scale.mean + self.scale.std * standard

    def inverse(self, predictions: np.ndarray) -> np.ndarray:
        """Predictions on the method's scale, (n,) or (n, len(targets)) -> dataset units."""
        p = np.asarray(predictions, dtype=np.float64)
        offset, spread = np.asarray(self.offset), np.asarray(self.spread)
        standard = (p - self.scale.mean) / self.scale.std
        if p.ndim == 1:
            return standard * spread[0] + offset[0] if len(self.targets) else p
        return standard * spread[None, :] + offset[None, :]

    def items(self, items: Sequence[Item]) -> list[Item]:
        """Copies of `items` whose labels of the mapped targets are on the method's scale (others unchanged)."""
        out = []
        for item in items:
            targets = dict(item.targets)
            for target in self.targets:
                if target in targets:
                    targets[target] = float(self.forward(target, targets[target]))
            out.append(replace(item, targets=targets))
        return out

    def to_dict(self) -> dict:
        """Plain data (checkpoints, result info)."""
        return {"scale": {"name": self.scale.name, "mean": self.scale.mean, "std": self.scale.std},
                "targets": list(self.targets), "offset": list(self.offset), "spread": list(self.spread)}

    @classmethod
    def from_dict(cls, data: Mapping) -> "LabelMap":
        scale = data.get("scale") or {}
        return cls(tuple(data["targets"]), tuple(float(v) for v in data["offset"]),
                   tuple(float(v) for v in data["spread"]),
                   LabelScale(float(scale.get("mean", 0.0)), float(scale.get("std", 1.0)), str(scale.get("name", "standard"))))
