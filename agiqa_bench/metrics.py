"""Correlation metrics as pure functions on arrays.

SRCC, KRCC (tau-b), PLCC on raw scores, PLCC after a 4-parameter logistic
mapping, and RMSE.  Scores whose direction is "lower is better" are negated by
`evaluate` before anything is computed, so every reported correlation is
"higher is better".

Conventions:
- `plcc` is on raw predictions, as in the IP-IQA reference code.
- `plcc_logistic` first maps predictions through the 4-parameter logistic
  f(x) = (b1 - b2) / (1 + exp(-(x - b3) / |b4|)) + b2, fitted on the evaluated
  set itself (the VQEG convention).  A fit that fails to converge yields NaN
  and a `LogisticFitWarning`; it never raises.
- A constant prediction (or constant MOS) makes every correlation NaN with a
  `ConstantInputWarning`.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass

import numpy as np
from scipy import optimize, stats


class ConstantInputWarning(UserWarning):
    """Predictions or targets are constant: correlations are undefined."""


class LogisticFitWarning(UserWarning):
    """The 4-parameter logistic could not be fitted."""


def _check(pred, mos) -> tuple[np.ndarray, np.ndarray]:
    pred = np.asarray(pred, dtype=np.float64).ravel()
    mos = np.asarray(mos, dtype=np.float64).ravel()
    if pred.shape != mos.shape:
        raise ValueError(f"pred has {pred.size} values but mos has {mos.size}")
    if pred.size < 2:
        raise ValueError("need at least two scores to correlate")
    if not np.all(np.isfinite(pred)):
        raise ValueError(f"{int(np.sum(~np.isfinite(pred)))} prediction(s) are NaN or infinite")
    return pred, mos


def _constant(pred: np.ndarray, mos: np.ndarray) -> bool:
    if np.ptp(pred) == 0 or np.ptp(mos) == 0:
        which = "predictions" if np.ptp(pred) == 0 else "MOS values"
        warnings.warn(f"{which} are constant; correlation is undefined (NaN)", ConstantInputWarning, stacklevel=3)
        return True
    return False


def srcc(pred, mos) -> float:
    """Spearman rank-order correlation."""
    pred, mos = _check(pred, mos)
    if _constant(pred, mos):
        return math.nan
    return float(stats.spearmanr(pred, mos).statistic)


def krcc(pred, mos) -> float:
    """Kendall rank-order correlation, tau-b (ties handled)."""
    pred, mos = _check(pred, mos)
    if _constant(pred, mos):
        return math.nan
    return float(stats.kendalltau(pred, mos, variant="b").statistic)


def plcc(pred, mos) -> float:
    """Pearson linear correlation on raw predictions."""
    pred, mos = _check(pred, mos)
    if _constant(pred, mos):
        return math.nan
    return float(stats.pearsonr(pred, mos).statistic)


def logistic4(x, b1, b2, b3, b4):
    """The 4-parameter logistic used to map objective scores onto the MOS scale."""
    z = np.clip(-(np.asarray(x, dtype=np.float64) - b3) / (abs(b4) + 1e-12), -500, 500)
    return (b1 - b2) / (1.0 + np.exp(z)) + b2


def _logistic4_jac(x, b1, b2, b3, b4):
    scale = abs(b4) + 1e-12
    s = 1.0 / (1.0 + np.exp(np.clip(-(x - b3) / scale, -500, 500)))
    ds = s * (1.0 - s) * (b1 - b2)
    return np.stack([s, 1.0 - s, -ds / scale, -ds * (x - b3) / scale**2 * np.sign(b4 or 1.0)], axis=1)


def fit_logistic4(pred, mos) -> np.ndarray | None:
    """Least-squares fit of `logistic4` (analytic Jacobian); None when it does not converge.

    The fit runs on standardised predictions, so it behaves the same whatever
    the scale of a method's scores; the returned parameters apply to raw `pred`.
    """
    pred, mos = _check(pred, mos)
    mu, sd = float(np.mean(pred)), float(np.std(pred)) or 1.0
    z = (pred - mu) / sd
    p0 = [float(mos.max()), float(mos.min()), 0.0, 1.0]
    if np.corrcoef(z, mos)[0, 1] < 0:
        p0[:2] = p0[1], p0[0]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            params, _ = optimize.curve_fit(logistic4, z, mos, p0=p0, jac=_logistic4_jac, maxfev=20000)
    except (RuntimeError, ValueError, optimize.OptimizeWarning):
        return None
    if not np.all(np.isfinite(params)):
        return None
    b1, b2, b3, b4 = params
    return np.array([b1, b2, b3 * sd + mu, b4 * sd])


def plcc_logistic(pred, mos) -> float:
    """Pearson correlation after the 4-parameter logistic mapping (NaN if the fit fails)."""
    pred, mos = _check(pred, mos)
    if _constant(pred, mos):
        return math.nan
    params = fit_logistic4(pred, mos)
    if params is None:
        warnings.warn("4-parameter logistic fit failed; plcc_logistic is NaN", LogisticFitWarning, stacklevel=2)
        return math.nan
    mapped = logistic4(pred, *params)
    if np.ptp(mapped) == 0:
        warnings.warn("logistic fit collapsed to a constant; plcc_logistic is NaN", LogisticFitWarning, stacklevel=2)
        return math.nan
    return float(stats.pearsonr(mapped, mos).statistic)


def rmse(pred, mos) -> float:
    """Root mean squared error on the raw scale (meaningful only for regressors of the MOS)."""
    pred, mos = _check(pred, mos)
    return float(np.sqrt(np.mean((pred - mos) ** 2)))


@dataclass(frozen=True)
class Scores:
    """All metrics of one (method, target, repeat) on its test part."""

    srcc: float
    plcc: float
    krcc: float
    plcc_logistic: float
    rmse: float
    n: int

    def as_dict(self) -> dict:
        return asdict(self)


METRICS = ("srcc", "plcc", "krcc", "plcc_logistic", "rmse")


def evaluate(pred, mos, *, lower_is_better: bool = False) -> Scores:
    """Every metric at once.  Lower-is-better scores are negated first.

    RMSE is reported on the scores as predicted (before any flip): it is only
    meaningful for methods that regress the MOS directly.
    """
    pred, mos = _check(pred, mos)
    oriented = -pred if lower_is_better else pred
    return Scores(
        srcc=srcc(oriented, mos),
        plcc=plcc(oriented, mos),
        krcc=krcc(oriented, mos),
        plcc_logistic=plcc_logistic(oriented, mos),
        rmse=rmse(pred, mos),
        n=int(pred.size),
    )
