"""Statistics of the leaderboard against hand-computed cases and scipy."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from leaderboard.statistics import (
    Clusters,
    SplitPredictions,
    cluster_bootstrap,
    cluster_counts,
    holm,
    nadeau_bengio_ttest,
    paired_comparison,
    resampled_krcc,
    resampled_plcc,
    resampled_srcc,
    wilcoxon_p,
)


def _explicit(data: Clusters, counts_row: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The resample written out: every item repeated as often as its cluster was drawn."""
    reps = counts_row[data.member].astype(int)
    return np.repeat(data.prediction, reps), np.repeat(data.mos, reps)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_resampled_metrics_equal_scipy_on_the_explicit_resample(seed):
    rng = np.random.default_rng(seed)
    groups = np.repeat([f"p{i}" for i in range(7)], rng.integers(1, 5, 7))
    mos = np.round(rng.normal(3, 1, len(groups)), 1)  # ties inside and across clusters
    pred = np.round(mos + rng.normal(0, 0.8, len(groups)), 1)
    data = Clusters.of(pred, mos, groups)
    counts = cluster_counts(data.n_clusters, 6, rng)
    got = {"srcc": resampled_srcc(data, counts), "plcc": resampled_plcc(data, counts), "krcc": resampled_krcc(data, counts)}
    for b in range(len(counts)):
        p, m = _explicit(data, counts[b])
        np.testing.assert_allclose(got["srcc"][b], stats.spearmanr(p, m).statistic, atol=1e-12)
        np.testing.assert_allclose(got["plcc"][b], stats.pearsonr(p, m).statistic, atol=1e-12)
        np.testing.assert_allclose(got["krcc"][b], stats.kendalltau(p, m).statistic, atol=1e-12)  # tau-b


def test_bootstrap_is_reproducible_and_brackets_the_estimate():
    rng = np.random.default_rng(4)
    splits = []
    for _ in range(3):
        groups = np.repeat(np.arange(20), 5).astype(str)
        mos = rng.normal(size=100)
        splits.append(SplitPredictions(mos + rng.normal(0, 1, 100), mos, groups))
    a = cluster_bootstrap(splits, "srcc", n_boot=400, seed=3)
    assert a == cluster_bootstrap(splits, "srcc", n_boot=400, seed=3)
    assert a != cluster_bootstrap(splits, "srcc", n_boot=400, seed=4)
    point = np.mean([stats.spearmanr(s.prediction, s.mos).statistic for s in splits])
    assert a[0] < point < a[1] and a[1] - a[0] < 0.3
    # a cluster is the unit: duplicating every image inside its cluster does not narrow the interval
    doubled = [SplitPredictions(np.repeat(s.prediction, 2), np.repeat(s.mos, 2), np.repeat(s.groups, 2)) for s in splits]
    b = cluster_bootstrap(doubled, "srcc", n_boot=400, seed=3)
    assert (b[1] - b[0]) > 0.8 * (a[1] - a[0])
    with pytest.raises(ValueError, match="bootstrap metric"):
        cluster_bootstrap(splits, "rmse")


def test_nadeau_bengio_by_hand():
    d = [0.01, 0.02, 0.03, 0.00, 0.04]
    t, p = nadeau_bengio_ttest(d, n_train=240, n_test=60)
    corrected = (1 / 5 + 60 / 240) * 0.00025  # sample variance of d is 0.00025
    assert t == pytest.approx(0.02 / math.sqrt(corrected))
    assert p == pytest.approx(2 * stats.t.sf(0.02 / math.sqrt(corrected), 4))
    naive = stats.ttest_1samp(d, 0).pvalue
    assert p > naive  # the correction is more conservative than the naive paired t-test
    assert math.isnan(nadeau_bengio_ttest([0.1], 10, 5)[0])


def test_wilcoxon_matches_scipy_and_handles_all_zero():
    d = [0.03, -0.01, 0.02, 0.05, 0.04, 0.01, -0.02, 0.06, 0.07, 0.015]
    assert wilcoxon_p(d) == pytest.approx(stats.wilcoxon(d).pvalue)
    assert wilcoxon_p([0.0, 0.0, 0.0]) == 1.0


def test_holm_by_hand():
    adjusted = holm([0.01, 0.04, 0.03, 0.005, float("nan")])
    np.testing.assert_allclose(adjusted[:4], [0.03, 0.06, 0.06, 0.02])
    assert math.isnan(adjusted[4])
    np.testing.assert_allclose(holm([0.5, 0.9]), [1.0, 1.0])  # monotone: never below an earlier step
    np.testing.assert_allclose(holm([0.2, 0.9]), [0.4, 0.9])


def test_paired_comparison_uses_only_shared_splits():
    a = {"h0": 0.80, "h1": 0.82, "h2": 0.81, "h3": 0.79}
    b = {"h0": 0.70, "h1": 0.75, "h2": 0.74}
    comp = paired_comparison("a", "b", "srcc", a, b, {"h0": 0, "h1": 1, "h2": 2, "h3": 3}, 240, 60)
    assert comp.repeats == (0, 1, 2) and comp.wins == 3
    np.testing.assert_allclose(comp.differences, [0.10, 0.07, 0.07])
    assert comp.nb_p == pytest.approx(nadeau_bengio_ttest([0.10, 0.07, 0.07], 240, 60)[1])
