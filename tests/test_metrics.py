import math
import warnings

import numpy as np
import pytest
from scipy import stats

from agiqa_bench import metrics as M


@pytest.fixture
def pair():
    rng = np.random.default_rng(3)
    mos = rng.uniform(0, 5, 200)
    pred = mos + rng.normal(0, 1.0, 200)
    return pred, mos


def test_correlations_match_scipy(pair):
    pred, mos = pair
    assert M.srcc(pred, mos) == pytest.approx(stats.spearmanr(pred, mos)[0], abs=1e-12)
    assert M.plcc(pred, mos) == pytest.approx(stats.pearsonr(pred, mos)[0], abs=1e-12)
    assert M.krcc(pred, mos) == pytest.approx(stats.kendalltau(pred, mos)[0], abs=1e-12)
    assert M.rmse(pred, mos) == pytest.approx(np.sqrt(np.mean((pred - mos) ** 2)))


def test_krcc_is_tau_b_with_ties():
    pred = np.array([1, 1, 2, 2, 3, 4, 4, 5], dtype=float)
    mos = np.array([1, 2, 2, 3, 3, 4, 5, 5], dtype=float)
    assert M.krcc(pred, mos) == pytest.approx(stats.kendalltau(pred, mos, variant="b")[0])
    assert M.krcc(pred, mos) != pytest.approx(stats.kendalltau(pred, mos, variant="c")[0])


def test_logistic_plcc_recovers_a_monotone_nonlinearity():
    rng = np.random.default_rng(0)
    pred = rng.uniform(-3, 3, 300)
    # MOS saturates at both ends of the scale: raw PLCC underestimates the agreement
    mos = 5.0 / (1.0 + np.exp(-2.0 * pred)) + rng.normal(0, 0.05, 300)
    assert M.plcc_logistic(pred, mos) > M.plcc(pred, mos) + 0.02
    assert M.plcc_logistic(pred, mos) > 0.97


def test_logistic_fit_maps_onto_mos_scale():
    x = np.linspace(-3, 3, 50)
    y = M.logistic4(x, 5.0, 1.0, 0.5, 0.7)
    params = M.fit_logistic4(x, y)
    assert params is not None
    np.testing.assert_allclose(M.logistic4(x, *params), y, atol=1e-4)


def test_failed_logistic_fit_is_nan_with_warning(monkeypatch):
    monkeypatch.setattr(M, "fit_logistic4", lambda pred, mos: None)
    with pytest.warns(M.LogisticFitWarning):
        assert math.isnan(M.plcc_logistic([1.0, 2.0, 3.0], [1.0, 3.0, 2.0]))


def test_constant_prediction_gives_nan_and_warns():
    with pytest.warns(M.ConstantInputWarning):
        assert math.isnan(M.srcc([2.0, 2.0, 2.0], [1.0, 2.0, 3.0]))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        scores = M.evaluate([1.0, 1.0, 1.0], [1.0, 2.0, 3.0])
    assert math.isnan(scores.srcc) and math.isnan(scores.plcc) and math.isnan(scores.krcc)
    assert any(issubclass(w.category, M.ConstantInputWarning) for w in caught)


def test_lower_is_better_is_flipped(pair):
    pred, mos = pair
    flipped = M.evaluate(-pred, mos, lower_is_better=True)
    plain = M.evaluate(pred, mos)
    assert flipped.srcc == pytest.approx(plain.srcc)
    assert flipped.plcc == pytest.approx(plain.plcc)
    assert flipped.srcc > 0


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="2 values but mos has 3"):
        M.srcc([1, 2], [1, 2, 3])
    with pytest.raises(ValueError, match="NaN"):
        M.plcc([1, np.nan, 3], [1, 2, 3])
