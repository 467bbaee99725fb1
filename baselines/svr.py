"""Shared RBF-SVR regression for handcrafted-feature methods (CEIQ, GMLF, HIGRADE).

A subclass of `FeatureSVR` only says how to turn an RGB image into a 1-D
feature vector (`extract`) and names the features (`feature_name`,
`feature_version`).  This module does the rest, as LIBSVM users do:

- Features are computed once per image and kept in the run's `FeatureCache`
  (``<cache_dir>/features``), so the repeats of a benchmark, which build a new
  method object each, reuse them.
- ``svm-scale``-style min-max scaling of each feature to [-1, 1], fitted on the
  training part only.  A feature that is constant over the training part maps
  to 0 (svm-scale drops it); test values outside the training range are *not*
  clipped.
- ``sklearn.svm.SVR`` (LIBSVM's epsilon-SVR) with an RBF kernel on the raw
  target (MOS).  Defaults are LIBSVM's: C = 1, gamma = 1/d ("auto"),
  epsilon = 0.1.
- ``search="grid"``: C in 2^-5, 2^-3, ..., 2^15 and gamma in 2^-15, ..., 2^3
  (the usual LIBSVM grid; narrow it with ``grid_log2_C`` / ``grid_log2_gamma``
  = "start:stop:step", e.g. ``--set ceiq.grid.grid_log2_C=-3:9:2``: fits at
  C = 2^15 take tens of seconds on a few thousand items, so the full grid costs
  hours on AGIQA-3k), scored by grouped K-fold cross-validation inside the
  training part (`GroupKFold` on `Item.group`, so one prompt never sits on both
  sides of a fold; scaling is refitted inside each fold).  The pair with the
  highest mean fold SRCC wins (SRCC because it is the benchmark's headline
  metric and is insensitive to the SVR's output scale; a fold whose
  predictions are constant counts as SRCC 0).  Ties keep the first pair in
  grid order (smaller C, then smaller gamma).  The validation and test parts
  are never looked at.  With fewer than two groups the search is skipped and
  the given C / gamma are used.

The chosen hyperparameters are recorded in ``self.selected`` and in each result row's info (``svr``: C,
gamma, the grid search's cross-validated SRCC, the number of support vectors).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from agiqa_bench.cache import FeatureCache, namespace_for
from agiqa_bench.errors import ConfigError
from agiqa_bench.images import load_rgb
from agiqa_bench.method import Method, MethodContext, MethodSpec
from agiqa_bench.params import param
from agiqa_bench.records import Item

#: LIBSVM's grid.py ranges: log2 C in -5..15, log2 gamma in -15..3, step 2.
LIBSVM_LOG2_C = "-5:15:2"
LIBSVM_LOG2_GAMMA = "-15:3:2"
SEARCH_MODES = ("none", "grid")


def log2_grid(spec: str, name: str) -> tuple[float, ...]:
    """'-5:15:2' -> (2^-5, 2^-3, ..., 2^15), both ends included."""
    try:
        start, stop, step = (int(v) for v in str(spec).split(":"))
        if step <= 0 or stop < start:
            raise ValueError
    except ValueError:
        raise ConfigError(f"{name} must read 'start:stop:step' in log2 units with step > 0, e.g. -5:15:2; got {spec!r}") from None
    return tuple(2.0**k for k in range(start, stop + 1, step))


# -- svm-scale ----------------------------------------------------------------------
def fit_scaling(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature (min, max) over the rows given (the training part)."""
    return features.min(axis=0), features.max(axis=0)


def apply_scaling(features: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """Map [low, high] to [-1, 1] per feature; constant features become 0; no clipping."""
    span = high - low
    safe = np.where(span > 0, span, 1.0)
    scaled = -1.0 + 2.0 * (features - low) / safe
    return np.where(span > 0, scaled, 0.0)


def srcc(prediction: np.ndarray, target: np.ndarray) -> float:
    """Spearman correlation; 0 when it is undefined (a constant side)."""
    if len(target) < 2 or np.ptp(prediction) == 0 or np.ptp(target) == 0:
        return 0.0
    from scipy.stats import spearmanr  # imported on use: listing methods loads this module

    value = spearmanr(prediction, target).statistic
    return float(value) if np.isfinite(value) else 0.0


@dataclass(frozen=True)
class RBFSVR:
    """A fitted RBF epsilon-SVR as plain arrays: f(x) = sum_i coef_i exp(-gamma |x - sv_i|^2) + intercept.

    What a checkpoint keeps of `sklearn.svm.SVR` (no pickle); its `predict` agrees with sklearn's to
    rounding (`tests/test_checkpoints.py`)."""

    support_vectors: np.ndarray  # (n_sv, d), in scaled feature space
    dual_coef: np.ndarray  # (n_sv,)
    intercept: float
    gamma: float

    @classmethod
    def of(cls, svr) -> "RBFSVR":
        """From a fitted `sklearn.svm.SVR(kernel="rbf")`."""
        return cls(np.asarray(svr.support_vectors_, dtype=np.float64), np.asarray(svr.dual_coef_, np.float64)[0],
                   float(svr.intercept_[0]), float(svr._gamma))

    def predict(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        sv = self.support_vectors
        out = np.empty(len(x))
        for start in range(0, len(x), 1024):  # rows x support vectors at a time
            chunk = x[start:start + 1024]
            d2 = (chunk * chunk).sum(1)[:, None] + (sv * sv).sum(1)[None, :] - 2.0 * chunk @ sv.T
            out[start:start + len(chunk)] = np.exp(-self.gamma * np.maximum(d2, 0.0)) @ self.dual_coef
        return out + self.intercept


@dataclass(frozen=True)
class FeatureSVRParams:
    """The SVR's hyperparameters (LIBSVM's defaults) and its grid search."""

    C: float = param(1.0, gt=0, help="SVR regularisation (LIBSVM's default 1)")
    gamma: str = param("auto", help="RBF width: auto = 1 / n_features (LIBSVM's default), or a positive number")
    epsilon: float = param(0.1, ge=0, help="width of the SVR's insensitive tube")
    search: str = param("none", choices=SEARCH_MODES, help="none: the given C and gamma; grid: grouped-CV grid search")
    cv_folds: int = param(5, ge=2, help="grouped cross-validation folds of the grid search")
    grid_log2_C: str = param(LIBSVM_LOG2_C, help="grid of log2 C as start:stop:step")
    grid_log2_gamma: str = param(LIBSVM_LOG2_GAMMA, help="grid of log2 gamma as start:stop:step")


class FeatureSVR(Method):
    """Base class: handcrafted features + min-max scaling + RBF epsilon-SVR.

    Subclasses set `feature_name` / `feature_version` and implement `extract`.
    One target at a time (the spec's ``joint_targets=False``).
    """

    #: Names the feature cache namespace; also shown in errors.
    feature_name: ClassVar[str] = ""
    #: Bump when `extract` changes, so cached features are recomputed.
    feature_version: ClassVar[str] = "1"

    params: ClassVar[type] = FeatureSVRParams
    per_image: ClassVar[bool] = True  # features once per image, in the map phase

    def __init__(self, spec: MethodSpec, config: dict[str, Any] | None = None, context: MethodContext | None = None,
                 *, name: str | None = None):
        super().__init__(spec, config, context, name=name)
        self._check_config()
        self.selected: dict[str, Any] = {}
        self.scale_low: np.ndarray | None = None
        self.scale_high: np.ndarray | None = None
        self.model = None  # sklearn.svm.SVR once fitted
        self.info: dict[str, Any] = {}
        self._cache: FeatureCache | None = None

    # -- to implement ------------------------------------------------------------
    def extract(self, rgb: np.ndarray) -> np.ndarray:
        """1-D feature vector of an RGB uint8 image (H, W, 3)."""
        raise NotImplementedError

    def feature_params(self) -> dict[str, Any]:
        """Parameters the features depend on (part of the cache namespace)."""
        return {}

    # -- configuration -----------------------------------------------------------
    def _check_config(self) -> None:
        """What the declaration cannot say (C, epsilon, search and cv_folds are checked by it)."""
        name = self.spec.name
        self._gamma(1)  # validates the value
        log2_grid(self.config["grid_log2_C"], f"{name}.grid_log2_C")
        log2_grid(self.config["grid_log2_gamma"], f"{name}.grid_log2_gamma")

    def _gamma(self, n_features: int) -> float:
        """The configured gamma as a number ("auto" = 1/d)."""
        value = self.config["gamma"]
        if isinstance(value, str) and value.strip().lower() == "auto":
            return 1.0 / max(n_features, 1)
        try:
            gamma = float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{self.spec.name}.gamma must be 'auto' or a positive number, not {value!r}") from None
        if not gamma > 0:
            raise ConfigError(f"{self.spec.name}.gamma must be positive, not {value!r}")
        return gamma

    # -- features ------------------------------------------------------------------
    def features(self, items: Sequence[Item]) -> np.ndarray:
        """Feature matrix (n, d), computed once per image and cached."""
        if self._cache is None:
            root = self.context.cache_dir / "features" if self.context.cache_dir else None
            self._cache = FeatureCache(root)
        namespace = namespace_for(
            self.feature_name or type(self).__name__, {"version": self.feature_version, **self.feature_params()}
        )
        return self._cache.get(namespace, items, lambda item: self.extract(load_rgb(item.image)))

    def precompute(self, items: Sequence[Item]) -> None:
        self.features(items)

    # -- training -------------------------------------------------------------------
    def fit(self, train: Sequence[Item], val: Sequence[Item], targets: Sequence[str]) -> None:
        """Fit on `train` only; `val` is unused (the grid search cross-validates inside train)."""
        targets = tuple(targets)
        if len(targets) != 1:
            raise ValueError(f"{self.spec.name} fits one target at a time, got {targets}")
        if not train:
            raise ValueError(f"{self.spec.name}: no training items")
        super().fit(train, val, targets)
        x = self.features(train)
        y = np.array([item.targets[targets[0]] for item in train], dtype=np.float64)
        if self.config["search"] == "grid":
            self.selected = self._grid_search(x, y, [item.group for item in train])
        else:
            self.selected = {"C": float(self.config["C"]), "gamma": self._gamma(x.shape[1]), "search": "none"}
        self.scale_low, self.scale_high = fit_scaling(x)
        self.model = self._svr(self.selected["C"], self.selected["gamma"])
        self.model.fit(apply_scaling(x, self.scale_low, self.scale_high), y)
        # kept with the result row: what the grid search chose (or the given C and gamma), and the model's size
        self.info = {"svr": {**self.selected, "support_vectors": int(len(self.model.support_))}}

    def _svr(self, c: float, gamma: float):
        from sklearn.svm import SVR  # imported on use: listing methods loads this module

        return SVR(kernel="rbf", C=c, gamma=gamma, epsilon=float(self.config["epsilon"]), cache_size=500)

    def _grid_search(self, x: np.ndarray, y: np.ndarray, groups: list[str]) -> dict[str, Any]:
        """Best (C, gamma) by grouped K-fold SRCC inside the training part."""
        n_folds = min(int(self.config["cv_folds"]), len(set(groups)))
        if n_folds < 2:
            return {
                "C": float(self.config["C"]),
                "gamma": self._gamma(x.shape[1]),
                "search": "skipped: fewer than 2 groups in the training part",
            }
        from sklearn.model_selection import GroupKFold

        folds = list(GroupKFold(n_splits=n_folds).split(x, y, groups))
        best: dict[str, Any] = {}
        for c in log2_grid(self.config["grid_log2_C"], "grid_log2_C"):
            for gamma in log2_grid(self.config["grid_log2_gamma"], "grid_log2_gamma"):
                score = float(
                    np.mean([self._fold_srcc(x, y, fit_rows, eval_rows, c, gamma) for fit_rows, eval_rows in folds])
                )
                if not best or score > best["cv_srcc"]:
                    best = {"C": c, "gamma": gamma, "cv_srcc": score}
        return {**best, "search": "grid", "cv_folds": n_folds}

    def _fold_srcc(
        self, x: np.ndarray, y: np.ndarray, fit_rows: np.ndarray, eval_rows: np.ndarray, c: float, gamma: float
    ) -> float:
        """SRCC on one held-out fold, with scaling fitted on the fold's training rows."""
        low, high = fit_scaling(x[fit_rows])
        model = self._svr(c, gamma).fit(apply_scaling(x[fit_rows], low, high), y[fit_rows])
        return srcc(model.predict(apply_scaling(x[eval_rows], low, high)), y[eval_rows])

    # -- checkpoints (`agiqa_bench.checkpoints`) -----------------------------------
    def checkpoint_state(self) -> dict:
        """The SVR as arrays (support vectors, dual coefficients, intercept, gamma), the feature scaling and
        the selected hyperparameters; no pickled sklearn object."""
        import torch

        if self.model is None:
            raise RuntimeError(f"{self.spec.name}: no fitted model to keep")
        svr = self.model if isinstance(self.model, RBFSVR) else RBFSVR.of(self.model)
        tensor = lambda a: torch.from_numpy(np.ascontiguousarray(a, dtype=np.float64))  # noqa: E731
        return {"support_vectors": tensor(svr.support_vectors), "dual_coef": tensor(svr.dual_coef),
                "intercept": svr.intercept, "gamma": svr.gamma, "scale_low": tensor(self.scale_low),
                "scale_high": tensor(self.scale_high), "selected": dict(self.selected)}

    def load_checkpoint_state(self, state: dict) -> None:
        array = lambda key: state[key].double().numpy()  # noqa: E731
        self.model = RBFSVR(array("support_vectors"), array("dual_coef"), float(state["intercept"]),
                            float(state["gamma"]))
        self.scale_low, self.scale_high = array("scale_low"), array("scale_high")
        if self.model.support_vectors.shape[1:] != self.scale_low.shape:
            raise ConfigError(f"{self.name}: the checkpoint's support vectors have "
                              f"{self.model.support_vectors.shape[1:]} features, its scaling {self.scale_low.shape}")
        self.selected = dict(state.get("selected") or {})

    # -- prediction ----------------------------------------------------------------
    def predict(self, items: Sequence[Item]) -> np.ndarray:
        if self.model is None or self.scale_low is None or self.scale_high is None:
            raise RuntimeError(f"{self.spec.name}: call fit() before predict()")
        if not items:
            return np.zeros(0, dtype=np.float64)
        x = apply_scaling(self.features(items), self.scale_low, self.scale_high)
        return np.asarray(self.model.predict(x), dtype=np.float64)
