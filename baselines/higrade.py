"""HIGRADE: Lab scene statistics with gradient (HIGRADE-1) or coherency (HIGRADE-2) features, with an RBF SVR.

Reference: D. Kundu, D. Ghadiyaram, A. C. Bovik, B. L. Evans, "No-reference
quality assessment of tone-mapped HDR pictures", IEEE TIP 26(6), 2017.
Features from the official MATLAB release (utlive/higrade: ``higrade_1.m``,
``higrade_2.m``, ``higrade_spatial.m``, ``higrade_grad_log.m``,
``higrade_grad_coherency.m``, ``grad_coherence.m``, ``nakafit.m``; the GGD fit
``gaussian_para_esti`` and the DoG kernels of ``difference_of_gaussian_kernels``
come with DESIQUE/C-DIIVINE and the structure-tensor demo).  Independent port,
no code copied.  The released models were trained on ESPL-LIVE HDR and do not
apply to generated images, so the SVR is retrained on each training split
(`baselines.svr.FeatureSVR`; the release used LIBSVM's gamma = 1/d, which is
this harness's default).

Algorithm.  The RGB image goes to 8-bit-encoded CIE Lab
(``applycform(uint8, makecform('srgb2lab'))``) and each channel x of L, a, b
gives

- ``higrade_spatial(x, 2)``, 18 features at each of 2 scales (the second is
  ``imresize(x, 0.5)``):

  - structdis = (x - mu) / (sigma + 1), mu and sigma from a 7x7 Gaussian
    window (sigma 7/6), zero padded;
  - Nakagami-style fit of the sigma field: mean and (mean / std)^2 (2);
  - GGD fit (std, shape) of structdis (2);
  - on d = log(|structdis| + 0.1): GGD fits of d minus its circular shifts by
    (0, 1), (1, 0), (1, 1), (-1, 1) (8), of
    d + d(1, 1) - d(0, 1) - d(1, 0) (2), and of d correlated with
    [0 1 0; -1 0 -1; 0 1 0] and [1 0 -1; 0 0 0; -1 0 1] (4);

- HIGRADE-1 (``version=1``): spatial(x) and spatial(|Sobel gradient of x|),
  72 per channel, 216 in all;
- HIGRADE-2 (``version=2``): spatial(x) and mean, std, skewness, kurtosis of
  the gradient coherency ((l1 - l2) / (l1 + l2))^2 of the structure tensor of
  each non-overlapping 9x9 block (DoG derivative kernels from the 9x9 Gaussian
  of sigma 0.5, ``conv2(block, k, 'same')`` inside the block), 40 per
  channel, 120 in all.

Features are ordered as MATLAB concatenates them: channel L, then a, then b;
within a channel the spatial features of x (scale 1, then 2) come first.

Where this port cannot (or does not) follow MATLAB exactly:

- Lab.  MATLAB returns uint8 Lab for uint8 input: L * 255 / 100 and a + 128,
  b + 128, rounded.  That encoding is emulated here, because the constant 1 in
  the MSCN denominator makes the features depend on the channel's scale;
  ``skimage.color.rgb2lab`` (float L in 0-100, D65 white) is *not* used.  The
  conversion is sRGB (IEC 61966-2-1 transfer curve) to XYZ with the
  D50-adapted sRGB primaries of the ICC sRGB profile (Bradford), then Lab
  relative to that matrix's white (the row sums, ~D50, so neutral greys get
  a = b = 0), with the exact CIE constants.  MATLAB's ICC engine (its
  ``sRGB.icm`` tone curve, s15Fixed16 colorants, whitepoint('ICC')) may round
  a pixel to the neighbouring code value now and then.  UNVERIFIED against
  MATLAB itself, which was not available.
- ``imresize(x, 0.5)``: MATLAB's bicubic antialiasing kernel and symmetric
  border, in float64 (`baselines.nss.imresize_half`, checked against a
  direct transcription of imresize.m's weights; matches
  ``pyiqa.matlab_utils.imresize`` to float32 precision).
- Filters.  ``filter2(..., 'same')`` (MSCN window, 3x3 kernels) and
  ``conv2(..., 'same')`` (DoG inside each 9x9 block) zero-pad, as here;
  ``imgradient`` (Sobel, replicate border) is ``ndimage.sobel`` in
  ``nearest`` mode on the double channel.  ``circshift`` is ``np.roll``.
- Non-finite features.  The release sets NaN features to 0
  (``feat(isnan(feat)) = 0``); here +-Inf become 0 as well (a flat zero
  channel gives sigma = eps everywhere, hence std 0 and (mean / std)^2 = Inf),
  so the SVR always sees finite values.  As in MATLAB, a single all-zero 9x9
  block (0/0 coherency) makes all four coherency statistics of that channel
  NaN, hence 0.
- Statistics follow MATLAB's defaults: ``std`` with N - 1, ``skewness`` and
  ``kurtosis`` biased (kurtosis not in excess); GGD fits as in
  `baselines.nss.ggd_fit`.  Round-off only otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
from scipy import ndimage

from agiqa_bench.method import MethodSpec
from agiqa_bench.params import param
from baselines.nss import filter2_same, gaussian_taps, ggd_fit, imresize_half, mscn
from baselines.svr import FeatureSVR, FeatureSVRParams

SPEC = MethodSpec(
    name="higrade",
    default_run=True,
    family="svr",
    factory="baselines.higrade:HIGRADE",
    kind="trainable",
    summary="HIGRADE: Lab scene statistics + gradient (HIGRADE-1, 216-d) or coherency (HIGRADE-2, 120-d) with an RBF SVR.",
    variants={"1": {"version": 1}, "2": {"version": 2},
              "1.grid": {"version": 1, "search": "grid"}, "2.grid": {"version": 2, "search": "grid"}},
    default_variants=("1", "2"),
    reference="Kundu, Ghadiyaram, Bovik, Evans, TIP 2017; features from the official utlive/higrade release",
)

VERSIONS = (1, 2)
N_SCALES = 2
MSCN_WINDOW = gaussian_taps(7, 7 / 6)
LOG_OFFSET = 0.1  # structdis -> log(|structdis| + 0.1)
SHIFTS = ((0, 1), (1, 0), (1, 1), (-1, 1))
CROSS_KERNEL = np.array([[0.0, 1.0, 0.0], [-1.0, 0.0, -1.0], [0.0, 1.0, 0.0]])
DIAGONAL_KERNEL = np.array([[1.0, 0.0, -1.0], [0.0, 0.0, 0.0], [-1.0, 0.0, 1.0]])
COHERENCY_BLOCK = 9
DOG_SIGMA = 0.5  # fspecial('gaussian', 9) default sigma
MATLAB_EPS = np.finfo(np.float64).eps

#: Linear sRGB to XYZ, D50-adapted (Bradford) primaries of the ICC sRGB profile.
SRGB_TO_XYZ_D50 = np.array(
    [
        [0.4360747, 0.3850649, 0.1430804],
        [0.2225045, 0.7168786, 0.0606169],
        [0.0139322, 0.0971045, 0.7141733],
    ]
)
LAB_EPSILON = (6 / 29) ** 3


# -- colour ------------------------------------------------------------------------------
def srgb_to_linear(rgb: np.ndarray) -> np.ndarray:
    """IEC 61966-2-1 decoding of uint8 sRGB to linear [0, 1] (via a 256-entry table)."""
    code = np.arange(256, dtype=np.float64) / 255
    table = np.where(code <= 0.04045, code / 12.92, ((code + 0.055) / 1.055) ** 2.4)
    return table[np.asarray(rgb, dtype=np.uint8)]


def _lab_f(t: np.ndarray) -> np.ndarray:
    return np.where(t > LAB_EPSILON, np.cbrt(t), t / (3 * (6 / 29) ** 2) + 4 / 29)


def rgb_to_lab8(rgb: np.ndarray) -> np.ndarray:
    """uint8 RGB -> uint8-encoded Lab (L * 255/100, a + 128, b + 128, rounded), D50, as float64 (H, W, 3)."""
    xyz = srgb_to_linear(rgb) @ SRGB_TO_XYZ_D50.T
    f = _lab_f(xyz / SRGB_TO_XYZ_D50.sum(axis=1))
    lightness = 116 * f[..., 1] - 16
    a = 500 * (f[..., 0] - f[..., 1])
    b = 200 * (f[..., 1] - f[..., 2])
    encoded = np.stack([lightness * 255 / 100, a + 128, b + 128], axis=-1)
    return np.clip(np.floor(encoded + 0.5), 0, 255)  # values are >= 0 here: MATLAB round


# -- spatial (scene-statistics) features ----------------------------------------------------
def nakagami_fit(x: np.ndarray) -> tuple[float, float]:
    """``nakafit``: (mean, (mean / std)^2), std with N - 1 (0 for one value, as MATLAB)."""
    x = np.asarray(x, dtype=np.float64).ravel()
    mean = np.float64(x.mean())
    std = np.float64(x.std(ddof=1) if x.size > 1 else 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return float(mean), float((mean / std) ** 2)


def log_derivative_maps(d: np.ndarray) -> list[np.ndarray]:
    """The 7 DESIQUE-style log-derivative maps of d = log(|structdis| + 0.1)."""
    shifted = [np.roll(d, shift, axis=(0, 1)) for shift in SHIFTS]
    maps = [d - s for s in shifted]
    maps.append(d + shifted[2] - shifted[0] - shifted[1])
    maps.append(filter2_same(CROSS_KERNEL, d))
    maps.append(filter2_same(DIAGONAL_KERNEL, d))
    return maps


def spatial_features_one_scale(image: np.ndarray) -> list[float]:
    """18 features: Nakagami fit of sigma (2), GGD of structdis (2), GGD of 7 log-derivative maps (14)."""
    structdis, sigma = mscn(image, MSCN_WINDOW, 1.0)
    features = list(nakagami_fit(sigma + MATLAB_EPS))
    features += ggd_fit(structdis)
    for derivative in log_derivative_maps(np.log(np.abs(structdis) + LOG_OFFSET)):
        features += ggd_fit(derivative)
    return features


def higrade_spatial(image: np.ndarray, n_scales: int = N_SCALES) -> np.ndarray:
    """``higrade_spatial(x, n)``: 18 features per scale, each scale a 0.5x imresize of the previous."""
    image = np.asarray(image, dtype=np.float64)
    features: list[float] = []
    for scale in range(n_scales):
        if scale:
            image = imresize_half(image)
        features += spatial_features_one_scale(image)
    return np.array(features, dtype=np.float64)


# -- gradient and coherency ---------------------------------------------------------------------
def sobel_magnitude(image: np.ndarray) -> np.ndarray:
    """``imgradient(x)``: Sobel gradient magnitude, replicate border."""
    image = np.asarray(image, dtype=np.float64)
    return np.hypot(ndimage.sobel(image, axis=1, mode="nearest"), ndimage.sobel(image, axis=0, mode="nearest"))


def dog_kernels(size: int = COHERENCY_BLOCK, sigma: float = DOG_SIGMA) -> tuple[np.ndarray, np.ndarray]:
    """(Gx, Gy) of ``difference_of_gaussian_kernels(size)``: the Gaussian minus its copy shifted by one column (row)."""
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2
    g = np.exp(-(x[:, None] ** 2 + x[None, :] ** 2) / (2 * sigma**2))
    g[g < MATLAB_EPS * g.max()] = 0
    g /= g.sum()
    gx = g.copy()
    gx[:, 1:] -= g[:, :-1]
    gy = g.copy()
    gy[1:, :] -= g[:-1, :]
    return gx, gy


def block_convolution_matrix(kernel: np.ndarray, block: int) -> np.ndarray:
    """M with M @ B.ravel() == conv2(B, kernel, 'same').ravel() for a block x block B (odd kernel)."""
    half = kernel.shape[0] // 2
    i = np.arange(block)
    # out[i, j] = sum_{p, q} B[p, q] * kernel[i - p + half, j - q + half] where the index is valid
    di = i[:, None] - i[None, :] + half  # [i, p]
    valid = (di >= 0) & (di < kernel.shape[0])
    rows = np.where(valid, di, 0)
    taps = kernel[rows[:, None, :, None], rows[None, :, None, :]]  # [i, j, p, q]
    taps = taps * (valid[:, None, :, None] & valid[None, :, None, :])
    return taps.reshape(block * block, block * block)


def gradient_coherency(image: np.ndarray, block: int = COHERENCY_BLOCK) -> np.ndarray:
    """``grad_coherence``: ((l1 - l2) / (l1 + l2))^2 of each non-overlapping block's structure tensor.

    Blocks tile the top-left floor(H / 9) x floor(W / 9) area; each block is
    filtered on its own, with zeros outside it.  An all-zero block gives NaN.
    """
    image = np.asarray(image, dtype=np.float64)
    n_rows, n_cols = image.shape[0] // block, image.shape[1] // block
    if n_rows == 0 or n_cols == 0:
        return np.zeros(0)
    tiles = image[: n_rows * block, : n_cols * block].reshape(n_rows, block, n_cols, block)
    tiles = tiles.transpose(0, 2, 1, 3).reshape(-1, block * block)
    gx, gy = dog_kernels(block)
    ix = tiles @ block_convolution_matrix(gx, block).T
    iy = tiles @ block_convolution_matrix(gy, block).T
    jxx, jyy, jxy = (ix * ix).sum(axis=1), (iy * iy).sum(axis=1), (ix * iy).sum(axis=1)
    # (l1 - l2)^2 = (jxx - jyy)^2 + 4 jxy^2 and l1 + l2 = jxx + jyy for the 2x2 tensor
    with np.errstate(divide="ignore", invalid="ignore"):
        return ((jxx - jyy) ** 2 + 4 * jxy**2) / (jxx + jyy) ** 2


def coherency_statistics(coherency: np.ndarray) -> np.ndarray:
    """mean, std, skewness, kurtosis with MATLAB's defaults (std with N - 1; skewness and
    kurtosis biased, kurtosis not in excess); all NaN if any block is NaN, as MATLAB's would be."""
    if coherency.size == 0 or np.isnan(coherency).any():
        return np.full(4, np.nan)
    centred = coherency - coherency.mean()
    m2, m3, m4 = (np.mean(centred**k) for k in (2, 3, 4))
    std = np.sqrt(m2 * coherency.size / (coherency.size - 1)) if coherency.size > 1 else 0.0
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.array([coherency.mean(), std, m3 / m2**1.5, m4 / m2**2])


# -- the two models ----------------------------------------------------------------------------------
def higrade_grad_log(channel: np.ndarray) -> np.ndarray:
    """72 features: spatial(channel) and spatial(Sobel magnitude)."""
    return np.concatenate([higrade_spatial(channel), higrade_spatial(sobel_magnitude(channel))])


def higrade_grad_coherency(channel: np.ndarray) -> np.ndarray:
    """40 features: spatial(channel) and the 4 coherency statistics."""
    return np.concatenate([higrade_spatial(channel), coherency_statistics(gradient_coherency(channel))])


def higrade_features(rgb: np.ndarray, version: int = 1) -> np.ndarray:
    """HIGRADE-1 (216) or HIGRADE-2 (120) features of an RGB uint8 image; non-finite values -> 0."""
    if version not in VERSIONS:
        raise ValueError(f"HIGRADE version must be 1 or 2, not {version!r}")
    per_channel = higrade_grad_log if version == 1 else higrade_grad_coherency
    lab = rgb_to_lab8(rgb)
    features = np.concatenate([per_channel(lab[..., k]) for k in range(3)])
    return np.where(np.isfinite(features), features, 0.0)


@dataclass(frozen=True)
class HIGRADEParams(FeatureSVRParams):
    """The SVR's parameters and the HIGRADE model."""

    version: int = param(1, choices=VERSIONS, help="1: HIGRADE-1 (216 features); 2: HIGRADE-2 (120)")


class HIGRADE(FeatureSVR):
    """HIGRADE-1 or HIGRADE-2 features with an RBF SVR retrained on each training split."""

    feature_name: ClassVar[str] = "higrade"
    feature_version: ClassVar[str] = "1"
    params: ClassVar[type] = HIGRADEParams

    def feature_params(self) -> dict[str, Any]:
        return {"version": int(self.config["version"])}

    def extract(self, rgb: np.ndarray) -> np.ndarray:
        return higrade_features(rgb, int(self.config["version"]))
