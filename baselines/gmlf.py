"""GMLF (GM-LOG): joint statistics of gradient magnitude and Laplacian of Gaussian, with an RBF SVR.

Reference: W. Xue, X. Mou, L. Zhang, A. C. Bovik, X. Feng, "Blind image
quality assessment using joint statistics of gradient magnitude and Laplacian
features", IEEE TIP 23(11), 2014.  Features from the authors' MATLAB
``Grad_LOG_CP_TIP`` (LIVE release; the copy read is embedded in
NTIA/NRMetricFramework ``reports/nrff_log_biqa.m``).  Independent port, no
code copied.  The released LIVE-trained model (``Learned_SVR_model_on_LIVE``)
is not used: the SVR is retrained on each training split
(`baselines.svr.FeatureSVR`).

Algorithm (input: grayscale double on the 0-255 scale, sigma = 0.5):

1. Gaussian-derivative filters: the 7x7 ``fspecial('gaussian', 7, sigma)``
   window, differenced against its neighbour column (row) and cropped to 5x5,
   each normalised by the sum of its absolute values; GM = sqrt(gx^2 + gy^2).
2. LoG: ``fspecial('log', 5, sigma)`` normalised by the sum of its absolute
   values; L = |LoG * I|.
3. GM <- GM / 2.5 (the authors' average GM/LoG ratio on LIVE).
4. Joint adaptive normalisation: N = sqrt(G_1 * (GM^2 + L^2) / 2) + 0.2 with a
   7x7 Gaussian of sigma_N = 1; GM <- GM / N, L <- L / N; then the border is
   cut as MATLAB's ``x(h:end-h+1, h:end-h+1)`` with h = 3 does (2 px a side).
5. Quantise q = ceil(x / 0.2) and count the pairs (q_GM, q_L) in a 10x10
   histogram with bin centres 1..10 (``hist3``: q <= 1 to the first bin,
   q >= 10 to the last); K = counts / total.
6. Features (40): marginals P_G = sum over L of K and P_L = sum over G of K;
   dependency Q_G = sum over L of K / (P_L + 1e-4) and
   Q_L = sum over G of K / (P_G + 1e-4), each normalised to sum 1.
   Order [P_G, P_L, Q_G, Q_L] as in ``out = [NG', NL, cp_GL_H, cp_LG_H]``.

Where this port cannot (or does not) follow MATLAB exactly:

- Input scale.  The function's comment asks for "double type, 0~255" and that
  is what is used: MATLAB ``rgb2gray`` of the uint8 RGB (BT.601 weights,
  rounded to uint8), then double.  NTIA's wrapper divides by 256 first; with
  c0 = 0.2 fixed, that makes c0 dominate N and changes every feature, so the
  NTIA scale is *not* followed.
- Filtering.  ``filter2(..., 'same')`` is correlation with zero padding; the
  Gaussian windows are applied separably (equal up to round-off; see
  `baselines.nss`), the 5x5 LoG as a full 2-D correlation.  The zero padding
  is kept, so the 2-px crop leaves a thin band of border-affected values as in
  MATLAB.
- ``fspecial('log')`` is the long-standing formula (Gaussian normalised to sum
  1, times (x^2 + y^2 - 2 sigma^2) / sigma^4, minus its mean so it sums to 0);
  MATLAB releases that build the LoG differently would change only its shape
  in the last digits, as the result is renormalised by sum |.|.
- ``hist3`` with centres 1..10 puts a value into the bin whose edges (the
  midpoints 1.5, 2.5, ...) enclose it; the quantised values are integers, so
  this is ``clip(q, 1, 10)`` exactly, with no binning ambiguity.
- Round-off only otherwise; the features are deterministic.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from baselines.cpbd import rgb2gray_uint8
from baselines.nss import filter2_same, gaussian_taps, separable_filter2_same
from baselines.svr import FeatureSVR
from agiqa_bench.method import MethodSpec

SPEC = MethodSpec(
    name="gmlf",
    default_run=True,
    family="svr",
    factory="baselines.gmlf:GMLF",
    kind="trainable",
    summary="GM-LOG: joint statistics of gradient magnitude and Laplacian of Gaussian (40 features) with an RBF SVR.",
    variants={"grid": {"search": "grid"}},
    reference="Xue, Mou, Zhang, Bovik, Feng, TIP 2014; features from the authors' Grad_LOG_CP_TIP.m",
)

SIGMA = 0.5
GM_LOG_RATIO = 2.5  # average GM / LoG ratio on LIVE
C0 = 4 * 0.05  # normalisation constant c0 = 0.2
SIGMA_N = 2 * SIGMA  # normalisation window sigma
STEP = 0.20  # quantisation step for both GM and LoG
N_BINS = 10
ALPHA = 1e-4  # regulariser of the dependency ("independency") distributions


def gaussian_derivative_taps(sigma: float) -> tuple[np.ndarray, np.ndarray]:
    """(smoothing, difference) taps whose outer product is the normalised x-derivative window.

    ``winx = w(2:end-1, 2:end-1) - w(2:end-1, 3:end)`` of the
    (2 ceil(3 sigma) + 3)-point Gaussian w, divided by sum |winx|; the y-window
    is its transpose.
    """
    g = gaussian_taps(2 * int(np.ceil(3 * sigma)) + 3, sigma)
    smooth = g[1:-1]
    diff = g[1:-1] - g[2:]
    scale = smooth.sum() * np.abs(diff).sum()
    return smooth, diff / scale


def log_kernel(size: int, sigma: float) -> np.ndarray:
    """``fspecial('log', size, sigma)`` normalised by the sum of its absolute values."""
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2
    r2 = x[:, None] ** 2 + x[None, :] ** 2
    h = np.exp(-r2 / (2 * sigma**2))
    h[h < np.finfo(np.float64).eps * h.max()] = 0
    h /= h.sum()
    h = h * (r2 - 2 * sigma**2) / sigma**4
    h -= h.mean()
    return h / np.abs(h).sum()


def gradient_magnitude(image: np.ndarray, sigma: float = SIGMA) -> np.ndarray:
    """GM from Gaussian-derivative filters (zero padding, as filter2 'same')."""
    smooth, diff = gaussian_derivative_taps(sigma)
    gx = separable_filter2_same(image, smooth, diff)
    gy = separable_filter2_same(image, diff, smooth)
    return np.sqrt(gx**2 + gy**2)


def log_response(image: np.ndarray, sigma: float = SIGMA) -> np.ndarray:
    """|LoG * image| with the (2 ceil(3 sigma) + 1)-point LoG."""
    return np.abs(filter2_same(log_kernel(2 * int(np.ceil(3 * sigma)) + 1, sigma), image))


def joint_adaptive_normalisation(gm: np.ndarray, log: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """GM / N and L / N with N = sqrt(G_sigmaN * mean(GM^2, L^2)) + c0, border cropped as MATLAB."""
    half = int(np.ceil(3 * SIGMA_N))
    window = gaussian_taps(2 * half + 1, SIGMA_N)
    energy = separable_filter2_same((gm**2 + log**2) / 2, window, window)
    norm = np.sqrt(energy) + C0
    crop = (slice(half - 1, gm.shape[0] - half + 1), slice(half - 1, gm.shape[1] - half + 1))
    return (gm / norm)[crop], (log / norm)[crop]


def joint_histogram(gm: np.ndarray, log: np.ndarray) -> np.ndarray:
    """K: 10x10 histogram of (ceil(GM / 0.2), ceil(L / 0.2)) as hist3 with centres 1..10, normalised."""
    q_gm = np.clip(np.ceil(gm / STEP), 1, N_BINS).astype(np.int64) - 1
    q_log = np.clip(np.ceil(log / STEP), 1, N_BINS).astype(np.int64) - 1
    counts = np.bincount((q_gm * N_BINS + q_log).ravel(), minlength=N_BINS * N_BINS).astype(np.float64)
    return counts.reshape(N_BINS, N_BINS) / counts.sum()


def marginal_and_dependency(joint: np.ndarray) -> np.ndarray:
    """[P_G, P_L, Q_G, Q_L] (40 values) from the normalised joint histogram K[G, L]."""
    p_g = joint.sum(axis=1)
    p_l = joint.sum(axis=0)
    q_g = (joint / (p_l[None, :] + ALPHA)).sum(axis=1)
    q_l = (joint / (p_g[:, None] + ALPHA)).sum(axis=0)
    return np.concatenate([p_g, p_l, q_g / q_g.sum(), q_l / q_l.sum()])


def gmlf_features_gray(gray: np.ndarray) -> np.ndarray:
    """The 40 GM-LOG features of a grayscale double image on the 0-255 scale."""
    gray = np.asarray(gray, dtype=np.float64)
    gm = gradient_magnitude(gray) / GM_LOG_RATIO
    gm_n, log_n = joint_adaptive_normalisation(gm, log_response(gray))
    return marginal_and_dependency(joint_histogram(gm_n, log_n))


def gmlf_features(rgb: np.ndarray) -> np.ndarray:
    """The 40 GM-LOG features of an RGB uint8 image (MATLAB rgb2gray, 0-255)."""
    return gmlf_features_gray(rgb2gray_uint8(rgb).astype(np.float64))


class GMLF(FeatureSVR):
    """GM-LOG features with an RBF SVR retrained on each training split."""

    feature_name: ClassVar[str] = "gmlf"
    feature_version: ClassVar[str] = "1"

    def extract(self, rgb: np.ndarray) -> np.ndarray:
        return gmlf_features(rgb)
