"""Uncertainty and significance for results over repeated random splits.

Published AGIQA numbers are single means over splits.  Here every mean comes
with its spread, a bootstrap interval, and paired tests against other methods
on the *same* splits.

Prompt-cluster bootstrap (`cluster_bootstrap`)
    Images of one prompt are not independent (same content, same alignment
    difficulty), so the unit of resampling is the group (prompt / object pair),
    as in the splits.  For replicate b and repeat r, the test groups of split r
    are drawn with replacement (as many draws as groups), every drawn group
    brings all its images, and the metric is computed on that sample; the
    replicate's value is the mean over repeats.  The 95% interval is the
    2.5 and 97.5 percentiles over replicates.  Seeded: same seed, same
    interval.
    Resampling is done with multiplicities (a cluster drawn k times gives its
    items weight k), and the resampled SRCC, PLCC and KRCC (tau-b) below equal
    the plain metrics of the explicitly resampled sample (copies tie with each
    other), which the tests check against scipy.  That makes 1,000 replicates
    a few matrix products over clusters instead of 1,000 Python loops.

Paired comparisons (`paired_comparison`)
    Two methods evaluated on identical splits give per-repeat differences d_r.
    - Wilcoxon signed-rank test on d (scipy; exact for small J without ties).
    - Paired t-test with the Nadeau-Bengio corrected variance: random splits
      overlap, so the d_r are positively correlated and the naive t-test is far
      too liberal.  Nadeau & Bengio (2003, Machine Learning 52) replace
      var/J by (1/J + n_test/n_train) * var, with t on J - 1 degrees of freedom.
    - Holm's step-down correction (`holm`) across the methods compared with the
      best one.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np
from scipy import stats

METRICS = ("srcc", "plcc", "krcc")


# -- metrics of a cluster resample (multiplicities instead of copies) ---------------
@dataclass(frozen=True)
class Clusters:
    """Items grouped into clusters, with everything the resampled metrics need precomputed.

    A resample is a row of cluster counts c (how often each cluster was drawn);
    item i then has multiplicity c[group(i)].  All metrics below cost O(B x n)
    or O(B x G^2) for B resamples, n items and G clusters.
    """

    prediction: np.ndarray
    mos: np.ndarray
    member: np.ndarray  # (n,) cluster index of each item
    n_clusters: int

    @classmethod
    def of(cls, prediction, mos, groups) -> "Clusters":
        _, member = np.unique(np.asarray(groups), return_inverse=True)
        return cls(np.asarray(prediction, float), np.asarray(mos, float), member, int(member.max()) + 1)

    def weights(self, counts: np.ndarray) -> np.ndarray:
        return counts[:, self.member]

    def value_table(self, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(items of cluster g with distinct value u: (G, u) matrix, distinct-value index of each item)."""
        _, index = np.unique(values, return_inverse=True)
        table = np.zeros((self.n_clusters, index.max() + 1))
        np.add.at(table, (self.member, index), 1.0)
        return table, index


def _weighted_pearson(x: np.ndarray, y: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Pearson r per row of weights w (B, n); x, y shape (n,) or (B, n)."""
    total = w.sum(axis=1, keepdims=True)
    mx = (w * x).sum(axis=1, keepdims=True) / total
    my = (w * y).sum(axis=1, keepdims=True) / total
    dx, dy = x - mx, y - my
    cov = (w * dx * dy).sum(axis=1)
    var = np.sqrt((w * dx * dx).sum(axis=1) * (w * dy * dy).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(var > 0, cov / np.where(var > 0, var, 1.0), np.nan)


def _midranks(data: Clusters, values: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Average (1-based) rank every copy of each item gets in the resample, (B, n)."""
    table, index = data.value_table(values)
    per_value = counts @ table  # (B, u): copies of each distinct value
    mid = np.cumsum(per_value, axis=1) - (per_value - 1) / 2
    return mid[:, index]


def resampled_srcc(data: Clusters, counts: np.ndarray) -> np.ndarray:
    w = data.weights(counts)
    return _weighted_pearson(_midranks(data, data.prediction, counts), _midranks(data, data.mos, counts), w)


def resampled_plcc(data: Clusters, counts: np.ndarray) -> np.ndarray:
    return _weighted_pearson(data.prediction, data.mos, data.weights(counts))


def resampled_krcc(data: Clusters, counts: np.ndarray) -> np.ndarray:
    """Kendall tau-b of each resample (copies of an item tie with each other in both variables)."""
    sx = np.sign(data.prediction[:, None] - data.prediction[None, :])
    sy = np.sign(data.mos[:, None] - data.mos[None, :])
    member = np.zeros((len(data.member), data.n_clusters))
    member[np.arange(len(data.member)), data.member] = 1.0
    between = member.T @ (sx * sy) @ member  # (G, G): concordance minus discordance of cluster pairs
    concordance = ((counts @ between) * counts).sum(axis=1) / 2
    n = counts @ np.bincount(data.member, minlength=data.n_clusters).astype(float)
    pairs = n * (n - 1) / 2

    def tied_pairs(values):
        table, _ = data.value_table(values)
        per_value = counts @ table
        return (per_value * (per_value - 1) / 2).sum(axis=1)

    denom = np.sqrt((pairs - tied_pairs(data.prediction)) * (pairs - tied_pairs(data.mos)))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, concordance / np.where(denom > 0, denom, 1.0), np.nan)


RESAMPLED = {"srcc": resampled_srcc, "plcc": resampled_plcc, "krcc": resampled_krcc}


# -- cluster bootstrap -------------------------------------------------------------
@dataclass(frozen=True)
class SplitPredictions:
    """One repeat's test part: scores (oriented higher = better), MOS and each item's group."""

    prediction: np.ndarray
    mos: np.ndarray
    groups: np.ndarray


def cluster_counts(n_clusters: int, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """(n_boot, n_clusters): how often each cluster is drawn when drawing n_clusters with replacement."""
    draws = rng.integers(0, n_clusters, size=(n_boot, n_clusters))
    counts = np.zeros((n_boot, n_clusters))
    np.add.at(counts, (np.arange(n_boot)[:, None], draws), 1.0)
    return counts


def cluster_bootstrap(splits: Sequence[SplitPredictions], metric: str = "srcc", n_boot: int = 1000,
                      seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile interval of the mean-over-repeats metric under the prompt-cluster bootstrap."""
    if metric not in RESAMPLED:
        raise ValueError(f"bootstrap metric must be one of {', '.join(RESAMPLED)}, not {metric!r}")
    if not splits:
        return (math.nan, math.nan)
    replicates = np.zeros(n_boot)
    for r, part in enumerate(splits):
        data = Clusters.of(part.prediction, part.mos, part.groups)
        counts = cluster_counts(data.n_clusters, n_boot, np.random.default_rng([seed, r]))
        replicates += RESAMPLED[metric](data, counts)
    replicates /= len(splits)
    finite = replicates[np.isfinite(replicates)]
    if len(finite) < n_boot / 2:
        return (math.nan, math.nan)
    alpha = (1 - level) / 2
    low, high = np.quantile(finite, [alpha, 1 - alpha])
    return float(low), float(high)


# -- paired tests ----------------------------------------------------------------
def nadeau_bengio_ttest(differences: Sequence[float], n_train: float, n_test: float) -> tuple[float, float]:
    """(t, two-sided p) of the corrected resampled t-test (Nadeau & Bengio 2003)."""
    d = np.asarray(differences, dtype=float)
    j = len(d)
    if j < 2 or n_train <= 0:
        return (math.nan, math.nan)
    var = d.var(ddof=1)
    corrected = (1.0 / j + n_test / n_train) * var
    if corrected == 0:
        return (math.inf * np.sign(d.mean()) if d.mean() else math.nan, 0.0 if d.mean() else 1.0)
    t = d.mean() / math.sqrt(corrected)
    return float(t), float(2 * stats.t.sf(abs(t), j - 1))


def wilcoxon_p(differences: Sequence[float]) -> float:
    """Two-sided Wilcoxon signed-rank p-value (1.0 when every difference is zero)."""
    d = np.asarray(differences, dtype=float)
    if len(d) == 0 or np.all(d == 0):
        return 1.0
    return float(stats.wilcoxon(d).pvalue)


def holm(pvalues: Sequence[float]) -> np.ndarray:
    """Holm's step-down adjusted p-values (NaN stays NaN and does not count)."""
    p = np.asarray(pvalues, dtype=float)
    out = np.full(len(p), np.nan)
    finite = np.flatnonzero(np.isfinite(p))
    order = finite[np.argsort(p[finite], kind="stable")]
    m, running = len(order), 0.0
    for k, idx in enumerate(order):
        running = max(running, min(1.0, (m - k) * p[idx]))
        out[idx] = running
    return out


@dataclass(frozen=True)
class Comparison:
    """A versus B on the repeats both have (same split hashes), one metric."""

    a: str
    b: str
    metric: str
    repeats: tuple[int, ...]
    differences: tuple[float, ...]  # a - b per repeat
    mean_difference: float
    wins: int  # repeats where a > b
    wilcoxon_p: float
    nb_t: float
    nb_p: float
    n_train: float
    n_test: float

    def as_dict(self) -> dict:
        return asdict(self)


def paired_comparison(a: str, b: str, metric: str, values_a: dict[str, float], values_b: dict[str, float],
                      repeats: dict[str, int], n_train: float, n_test: float) -> Comparison:
    """Compare per-split metric values keyed by split hash (only the splits both have count)."""
    shared = sorted(set(values_a) & set(values_b), key=lambda h: repeats.get(h, 0))
    pairs = [(repeats.get(h, 0), values_a[h] - values_b[h]) for h in shared
             if np.isfinite(values_a[h]) and np.isfinite(values_b[h])]
    d = np.array([v for _, v in pairs], dtype=float)
    t, p_nb = nadeau_bengio_ttest(d, n_train, n_test)
    return Comparison(
        a=a, b=b, metric=metric, repeats=tuple(r for r, _ in pairs), differences=tuple(float(v) for v in d),
        mean_difference=float(d.mean()) if len(d) else math.nan, wins=int((d > 0).sum()),
        wilcoxon_p=wilcoxon_p(d) if len(d) else math.nan, nb_t=t, nb_p=p_nb, n_train=n_train, n_test=n_test,
    )
