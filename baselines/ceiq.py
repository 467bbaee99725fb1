"""CEIQ: contrast-enhancement features + RBF SVR trained per split.

Reference: J. Yan, J. Li, X. Fu, "No-reference quality assessment of
contrast-distorted images using contrast enhancement", arXiv 1904.08879;
features from the official ``ceiq.m`` (mtobeiyf/CEIQ).  Independent port, no
code copied.

Features (``ceiq.m``), on g = ``rgb2gray(I)`` (uint8) and its histogram-
equalised pseudo-reference e = ``histeq(g)``:

- f1 = mean SSIM(g, e) (MATLAB ``ssim`` defaults);
- h1, h2 = 128-bin ``imhist`` of g and e, divided by the pixel count; only
  bins where both are > 0 are kept;
- f2 = -sum h1 log2 h1, f3 = -sum h2 log2 h2 (entropies),
  f4 = -sum h1 log2 h2, f5 = -sum h2 log2 h1 (cross-entropies).

The released model (``model.mat``, LIBSVM trained on all of CCID2014) is not
available offline, so the SVR is retrained on each training split
(`baselines.svr.FeatureSVR`).

How the MATLAB functions are emulated, and where that may deviate:

- ``rgb2gray``: BT.601 weights of MATLAB, rounded half away from zero to
  uint8, as MATLAB does for uint8 input.
- ``histeq(g)`` (default: 64 output levels) follows histeq.m: a flat target
  histogram of 64 bins, the 256-bin input histogram, and for each input level
  the output level minimising ``cumd(i) - cum(j) + tol(j)`` (tol = half the
  level's count, 0 for levels 0 and 255; errors below
  ``-numel * sqrt(eps)`` are excluded), then ``uint8(255 * T)``.  At most 64
  distinct output values.  ``skimage.exposure.equalize_hist`` (256 bins,
  float output, CDF mapping) is *not* used: it gives a different image.
- ``ssim``: Gaussian weights (sigma 1.5, 11x11 window, i.e. radius
  ceil(3 sigma)), replicate padding, K1 = 0.01, K2 = 0.03, L = 255, mean over
  the full-size map.  ``skimage.metrics.structural_similarity`` would reflect
  at the border and crop 5 px before averaging; we follow MATLAB instead.
  Filtering round-off differs from MATLAB's in the last bits only.
- ``imhist(x, 128)`` on uint8: bin centres at ``linspace(0, 255, 128)``,
  each value goes to the nearest centre (``round(v * 127 / 255)``).  This is
  what the documented bin locations imply; MATLAB's compiled ``imhistc`` was
  not available to check against.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
from scipy import ndimage

from baselines.cpbd import matlab_round, rgb2gray_uint8
from baselines.svr import FeatureSVR
from agiqa_bench.method import MethodSpec

SPEC = MethodSpec(
    name="ceiq",
    default_run=True,
    family="svr",
    factory="baselines.ceiq:CEIQ",
    kind="trainable",
    summary="Contrast-enhancement features (SSIM + 4 entropies) with an RBF SVR trained per split.",
    variants={"grid": {"search": "grid"}},
    reference="Yan, Li, Fu, arXiv 1904.08879; features from the official ceiq.m",
)

HISTEQ_LEVELS = 64
HIST_BINS = 128
SSIM_SIGMA = 1.5
SSIM_K1, SSIM_K2 = 0.01, 0.03
DYNAMIC_RANGE = 255.0


def imhist_uint8(image: np.ndarray, n_bins: int) -> np.ndarray:
    """MATLAB ``imhist(I, n)`` for a uint8 image: counts per bin, length n."""
    index = matlab_round(np.asarray(image, dtype=np.float64) * (n_bins - 1) / 255.0).astype(np.int64)
    return np.bincount(index.ravel(), minlength=n_bins).astype(np.float64)


def histeq_transform(counts: np.ndarray, n_levels: int = HISTEQ_LEVELS) -> np.ndarray:
    """histeq.m's mapping T (values in [0, 1]) from a 256-bin input histogram."""
    n_pixels = counts.sum()
    cumulative = np.cumsum(counts)
    desired = np.cumsum(np.full(n_levels, n_pixels / n_levels))
    tolerance = counts / 2
    tolerance[0] = tolerance[-1] = 0.0  # min([nn(1:n-1),0; 0,nn(2:n)]) / 2
    error = desired[:, None] - cumulative[None, :] + tolerance[None, :]
    error[error < -n_pixels * np.sqrt(np.finfo(np.float64).eps)] = n_pixels
    return np.argmin(error, axis=0) / (n_levels - 1)


def histeq_matlab(gray: np.ndarray, n_levels: int = HISTEQ_LEVELS) -> np.ndarray:
    """MATLAB ``histeq(I, n)`` of a uint8 image (default 64 levels), uint8 out."""
    gray = np.asarray(gray, dtype=np.uint8)
    transform = histeq_transform(imhist_uint8(gray, 256), n_levels)
    return matlab_round(255.0 * transform[gray]).astype(np.uint8)


def _gaussian_window(sigma: float) -> np.ndarray:
    radius = int(np.ceil(3 * sigma))
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    window = np.exp(-(x**2) / (2 * sigma**2))
    return window / window.sum()


def _blur(image: np.ndarray, window: np.ndarray) -> np.ndarray:
    out = ndimage.correlate1d(image, window, axis=0, mode="nearest")
    return ndimage.correlate1d(out, window, axis=1, mode="nearest")


def ssim_matlab(a: np.ndarray, b: np.ndarray, sigma: float = SSIM_SIGMA) -> float:
    """Mean SSIM as MATLAB ``ssim(A, ref)`` computes it for uint8 images."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    window = _gaussian_window(sigma)
    c1, c2 = (SSIM_K1 * DYNAMIC_RANGE) ** 2, (SSIM_K2 * DYNAMIC_RANGE) ** 2
    mu_a, mu_b = _blur(a, window), _blur(b, window)
    var_a = _blur(a * a, window) - mu_a**2
    var_b = _blur(b * b, window) - mu_b**2
    cov = _blur(a * b, window) - mu_a * mu_b
    numerator = (2 * mu_a * mu_b + c1) * (2 * cov + c2)
    denominator = (mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2)
    return float(np.mean(numerator / denominator))


def ceiq_features(rgb: np.ndarray) -> np.ndarray:
    """The 5 CEIQ features [f1..f5] of an RGB uint8 image."""
    gray = rgb2gray_uint8(rgb)
    enhanced = histeq_matlab(gray)
    f1 = ssim_matlab(gray, enhanced)
    h1 = imhist_uint8(gray, HIST_BINS) / gray.size
    h2 = imhist_uint8(enhanced, HIST_BINS) / gray.size
    both = (h1 > 0) & (h2 > 0)
    p, q = h1[both], h2[both]
    f2 = -np.sum(p * np.log2(p))
    f3 = -np.sum(q * np.log2(q))
    f4 = -np.sum(p * np.log2(q))
    f5 = -np.sum(q * np.log2(p))
    return np.array([f1, f2, f3, f4, f5], dtype=np.float64)


class CEIQ(FeatureSVR):
    """CEIQ features with an RBF SVR retrained on each training split."""

    feature_name: ClassVar[str] = "ceiq"
    feature_version: ClassVar[str] = "1"

    def extract(self, rgb: np.ndarray) -> np.ndarray:
        return ceiq_features(rgb)
