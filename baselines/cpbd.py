"""CPBD: cumulative probability of blur detection (the paper's "DSIQA").

Reference: N. D. Narvekar and L. J. Karam, "A no-reference perceptual image
sharpness metric based on a cumulative probability of blur detection",
QoMEX 2009 (TIP 2011 extension).  This is an independent port of the official
``CPBD_compute.m`` (Oct. 2009, embedded verbatim in
NTIA/NRMetricFramework ``reports/nrff_cpbd.m``); no code was copied.

Algorithm (input: grayscale, 0-255, double):

1. ``E_c = edge(I, 'canny')`` decides which 64x64 blocks are *edge blocks*
   (more than 0.2 % of the block's pixels are Canny edges).
2. ``E_s = edge(I, 'Sobel', 2, 'vertical')`` gives the pixels whose edge width
   is measured.
3. Marziliano edge width, at each interior ``E_s`` pixel whose gradient angle
   (from ``gradient(I)``, quantised to 45 degrees) is 0 or +-180: walk left and
   right along the row while the intensity keeps rising (angle 0) or falling
   (angle 180); each side counts ``min(steps, 100) + 1``.  The walk starts one
   pixel away from the edge pixel, exactly as in the reference.
4. Per edge block: contrast = max - min; the just-noticeable width is 5 when
   ``floor(contrast) <= 50`` and 3 otherwise; every width w in the block gives
   ``P_blur = 1 - exp(-|w / w_JNB|^3.6)``.
5. Histogram of ``round(100 * P_blur)`` over all edge blocks (101 bins),
   normalised; CPBD = mass of bins 0..63 (``sum(hist_pblur(1:64))``), i.e. the
   probability that ``P_blur <= 0.63``.  Higher = sharper, in [0, 1].

Points where this port cannot (or does not) follow MATLAB exactly:

- Canny.  ``CPBD_compute.m`` calls MATLAB's ``edge(I, 'canny')``; its
  behaviour depends on the MATLAB release.  We port the R2011a+ algorithm
  (the one every current MATLAB runs): sigma = sqrt(2), 13-tap normalised
  Gaussian and derivative-of-Gaussian kernels (``smoothGradient``) with
  replicate padding, magnitude normalised by its maximum, high threshold =
  (first 64-bin ``imhist`` bin whose cumulative count exceeds 70 % of the
  pixels) / 64, low = 0.4 * high, the 4-sector interpolated non-maximum
  suppression on interior pixels, and 8-connected hysteresis (``bwselect``).
  The 2009 release the authors used differed (sigma = 1, unnormalised 9-tap
  kernels, a final ``bwmorph(e, 'thin', 1)``); we do not emulate it.  We also
  do not use ``skimage.feature.canny``: its smoothing, Sobel-on-smoothed
  gradient and absolute default thresholds mark edges very differently from
  MATLAB (cpbd-py312 uses it and flags almost every textured block).  MATLAB
  runs a compiled (TBB) version of the same M-code; we assume equal results.
- Sobel.  Ported from MATLAB's ``edge`` M-code: correlation with
  ``fspecial('sobel')'/8`` (replicate padding), ``b = bx.^2`` for
  'vertical', cutoff = 2^2 on the 0-255 scale, and MATLAB's thinning rule
  (``b > cutoff`` and either ``|bx| >= |by|`` with a horizontal local maximum
  of b, or a vertical local maximum of b, since ``ky = 0`` makes that branch's
  direction test always true).  cpbd-py312 instead uses Octave's automatic
  threshold and Octave's thinning.
- Gradient angle.  The reference fills ``angle_A`` element-wise and leaves
  pixels with ``Gx == 0`` and ``Gy`` not in {0, pi/2} unassigned (0 once the
  array has grown past them); we use 0 there too.  In the degenerate case
  where the last columns are never assigned MATLAB raises an index error; we
  return the value the rule implies instead.
- Rounding.  MATLAB's ``round`` (half away from zero) is emulated for the
  angle quantisation and the histogram index; NumPy's round-half-even is not
  used.  Floating-point sums (Gaussian filtering) may differ from MATLAB's in
  the last bits, which can flip a pixel lying exactly on a threshold.
- Contrast above 255 (input outside 0-255) would be an index error in MATLAB;
  here it simply gives w_JNB = 3.
- No edge block (flat images, or images smaller than 64 px in a dimension,
  which have no complete block): the reference normalises an all-zero
  histogram to zeros and returns 0.0; so do we.  Pixels outside the last
  complete block row/column are ignored, as in the reference.
- Colour input.  ``CPBD.predict`` converts RGB with MATLAB's ``rgb2gray``
  weights and rounds to uint8, as ``rgb2gray`` does for the uint8 images
  ``imread`` returns; ``cpbd_sharpness`` itself takes the gray image as is.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import numpy as np
from scipy import ndimage

from agiqa_bench.cache import FeatureCache, namespace_for
from agiqa_bench.images import load_rgb, to_gray
from agiqa_bench.method import Method, MethodSpec
from agiqa_bench.params import NoParams
from agiqa_bench.records import Item

SPEC = MethodSpec(
    name="cpbd",
    default_run=True,
    family="handcrafted",
    factory="baselines.cpbd:CPBD",
    kind="zero-shot",
    summary="Cumulative probability of blur detection (sharpness), the paper's 'DSIQA'.",
    aliases=("dsiqa",),
    reference="Narvekar & Karam, TIP 2011; port of the official CPBD_compute.m",
)

#: Bump when the computation changes, so cached scores are recomputed.
CPBD_VERSION = "1"

BLOCK = 64  # rb = rc = 64
EDGE_BLOCK_FRACTION = 0.002  # threshold T
BETA = 3.6
WIDTH_JNB_LOW_CONTRAST = 5.0  # contrast <= 50
WIDTH_JNB_HIGH_CONTRAST = 3.0
MAX_WALK = 100  # `for k = 0:100`
CPBD_BINS = 64  # sum(hist_pblur(1:64)): P_blur index 0..63

SOBEL_THRESHOLD = 2.0
CANNY_SIGMA = np.sqrt(2.0)
CANNY_NOT_EDGE_FRACTION = 0.7  # PercentOfPixelsNotEdges
CANNY_LOW_RATIO = 0.4  # ThresholdRatio
MATLAB_EPS = np.finfo(np.float64).eps


def matlab_round(x: np.ndarray | float) -> np.ndarray:
    """MATLAB's ``round``: halves go away from zero."""
    x = np.asarray(x, dtype=np.float64)
    return np.sign(x) * np.floor(np.abs(x) + 0.5)


def rgb2gray_uint8(rgb: np.ndarray) -> np.ndarray:
    """MATLAB ``rgb2gray`` on a uint8 image: BT.601 luma rounded to uint8."""
    return np.clip(matlab_round(to_gray(rgb)), 0, 255).astype(np.uint8)


# -- edge detectors ---------------------------------------------------------------
def _smooth_gradient(image: np.ndarray, sigma: float) -> tuple[np.ndarray, np.ndarray]:
    """MATLAB ``smoothGradient``: derivative-of-Gaussian gradients (dx, dy)."""
    extent = int(np.ceil(4 * sigma))
    x = np.arange(-extent, extent + 1, dtype=np.float64)
    gauss = np.exp(-(x**2) / (2 * sigma**2))
    gauss /= gauss.sum()
    deriv = np.gradient(gauss)  # MATLAB gradient(): central differences
    pos, neg = deriv > 0, deriv < 0
    deriv[pos] /= deriv[pos].sum()
    deriv[neg] /= abs(deriv[neg].sum())
    smooth_y = ndimage.convolve1d(image, gauss, axis=0, mode="nearest")
    dx = ndimage.convolve1d(smooth_y, deriv, axis=1, mode="nearest")
    smooth_x = ndimage.convolve1d(image, gauss, axis=1, mode="nearest")
    dy = ndimage.convolve1d(smooth_x, deriv, axis=0, mode="nearest")
    return dx, dy


def _canny_thresholds(magnitude: np.ndarray) -> tuple[float, float]:
    """MATLAB ``selectThresholds`` on a magnitude normalised to [0, 1]."""
    bins = np.clip(matlab_round(magnitude * 63), 0, 63).astype(np.int64)  # imhist(mag, 64)
    cumulative = np.cumsum(np.bincount(bins.ravel(), minlength=64))
    first = int(np.argmax(cumulative > CANNY_NOT_EDGE_FRACTION * magnitude.size))
    high = (first + 1) / 64
    return CANNY_LOW_RATIO * high, high


def _canny_local_maxima(dx: np.ndarray, dy: np.ndarray, mag: np.ndarray, low: float) -> np.ndarray:
    """Interpolated non-maximum suppression of MATLAB's Canny (interior pixels only)."""
    out = np.zeros(mag.shape, dtype=bool)
    if min(mag.shape) < 3:
        return out
    ix, iy, c = dx[1:-1, 1:-1], dy[1:-1, 1:-1], mag[1:-1, 1:-1]
    east, west = mag[1:-1, 2:], mag[1:-1, :-2]
    north, south = mag[:-2, 1:-1], mag[2:, 1:-1]
    n_east, n_west = mag[:-2, 2:], mag[:-2, :-2]
    s_east, s_west = mag[2:, 2:], mag[2:, :-2]
    with np.errstate(divide="ignore", invalid="ignore"):
        d_yx = np.abs(iy / ix)
        d_xy = np.abs(ix / iy)
    sectors = (
        (((iy <= 0) & (ix > -iy)) | ((iy >= 0) & (ix < -iy)), d_yx, east, n_east, west, s_west),
        (((ix > 0) & (-iy >= ix)) | ((ix < 0) & (-iy <= ix)), d_xy, north, n_east, south, s_west),
        (((ix <= 0) & (ix > iy)) | ((ix >= 0) & (ix < iy)), d_xy, north, n_west, south, s_east),
        (((iy < 0) & (ix <= iy)) | ((iy > 0) & (ix >= iy)), d_yx, west, n_west, east, s_east),
    )
    is_max = np.zeros(c.shape, dtype=bool)
    for in_sector, d, a1, b1, a2, b2 in sectors:
        with np.errstate(invalid="ignore"):
            side1 = a1 * (1 - d) + b1 * d
            side2 = a2 * (1 - d) + b2 * d
            is_max |= in_sector & (c >= side1) & (c >= side2)
    out[1:-1, 1:-1] = is_max & (c > low)
    return out


def canny_edges(image: np.ndarray, sigma: float = CANNY_SIGMA) -> np.ndarray:
    """MATLAB ``edge(image, 'canny')`` (R2011a+ defaults) as a boolean map."""
    image = np.asarray(image, dtype=np.float64)
    dx, dy = _smooth_gradient(image, sigma)
    mag = np.hypot(dx, dy)
    peak = mag.max() if mag.size else 0.0
    if peak > 0:
        mag = mag / peak
    low, high = _canny_thresholds(mag)
    weak = _canny_local_maxima(dx, dy, mag, low)
    strong = weak & (mag > high)
    if not strong.any():
        return np.zeros(image.shape, dtype=bool)
    labels, _ = ndimage.label(weak, structure=np.ones((3, 3), dtype=bool))  # bwselect(..., 8)
    keep = np.unique(labels[strong])
    return np.isin(labels, keep[keep > 0])


def sobel_edges(image: np.ndarray, threshold: float, direction: str = "both") -> np.ndarray:
    """MATLAB ``edge(image, 'Sobel', threshold, direction)`` with its default thinning.

    The threshold applies to the Sobel response scaled by 1/8, on the scale of
    `image` (0-255 here); MATLAB compares ``b > threshold^2``.
    """
    kx, ky = {"both": (1.0, 1.0), "horizontal": (0.0, 1.0), "vertical": (1.0, 0.0)}[direction]
    image = np.asarray(image, dtype=np.float64)
    op = np.array([[1.0, 2.0, 1.0], [0.0, 0.0, 0.0], [-1.0, -2.0, -1.0]]) / 8  # fspecial('sobel')/8
    bx = ndimage.correlate(image, op.T, mode="nearest")
    by = ndimage.correlate(image, op, mode="nearest")
    b = kx * bx * bx + ky * by * by
    bx, by = np.abs(bx), np.abs(by)
    # Neighbour comparisons; a missing neighbour (image border) always passes.
    left_ok = np.ones_like(b, dtype=bool)
    right_ok = np.ones_like(b, dtype=bool)
    up_ok = np.ones_like(b, dtype=bool)
    down_ok = np.ones_like(b, dtype=bool)
    left_ok[:, 1:] = b[:, :-1] <= b[:, 1:]
    right_ok[:, :-1] = b[:, :-1] > b[:, 1:]
    up_ok[1:, :] = b[:-1, :] <= b[1:, :]
    down_ok[:-1, :] = b[:-1, :] > b[1:, :]
    tiny = 100 * MATLAB_EPS
    across_columns = (bx >= kx * by - tiny) & left_ok & right_ok
    across_rows = (by >= ky * bx - tiny) & up_ok & down_ok
    return (b > threshold**2) & (across_columns | across_rows)


# -- edge widths ------------------------------------------------------------------
def _run_from(mask: np.ndarray) -> np.ndarray:
    """Per row, how many consecutive True start at each column (rightwards)."""
    cols = np.arange(mask.shape[1])
    stop = np.where(mask, mask.shape[1], cols)
    next_false = np.minimum.accumulate(stop[:, ::-1], axis=1)[:, ::-1]
    return next_false - cols


def _run_until(mask: np.ndarray) -> np.ndarray:
    """Per row, how many consecutive True end at each column (leftwards)."""
    cols = np.arange(mask.shape[1])
    prev_false = np.maximum.accumulate(np.where(mask, -1, cols), axis=1)
    return cols - prev_false


def _side_widths(steps: np.ndarray) -> np.ndarray:
    """One side's width from the count of monotone steps (`k + 1`, capped by the loop)."""
    return np.minimum(steps, MAX_WALK) + 1


def gradient_angles(image: np.ndarray) -> np.ndarray:
    """Edge angle in degrees as ``marziliano_method`` computes it from ``gradient``."""
    gy, gx = np.gradient(image)
    with np.errstate(divide="ignore", invalid="ignore"):
        angle = np.degrees(np.arctan2(gy, gx))
    fallback = np.where(gy == np.pi / 2, 90.0, 0.0)  # Gx == 0: 0, or 90 if Gy == pi/2
    return np.where(gx != 0, angle, fallback)


def marziliano_widths(edges: np.ndarray, image: np.ndarray) -> np.ndarray:
    """Edge-width map: 0 off-edge, else the Marziliano width along the row.

    Only interior pixels of `edges` whose quantised gradient angle is 0 or
    +-180 degrees get a width, as in the reference ``marziliano_method``.
    """
    image = np.asarray(image, dtype=np.float64)
    rows, cols = image.shape
    widths = np.zeros((rows, cols))
    if rows < 3 or cols < 3:
        return widths
    quantised = 45 * matlab_round(gradient_angles(image) / 45)
    step = np.diff(image, axis=1)  # step[:, c] = I[:, c+1] - I[:, c]
    for sign, angle_ok in ((1, quantised == 0), (-1, np.abs(quantised) == 180)):
        monotone = step * sign > 0  # rising for angle 0, falling for +-180
        ahead = np.zeros((rows, cols), dtype=np.int64)  # steps from pair (c+1, c+2) on
        ahead[:, :-2] = _run_from(monotone)[:, 1:]
        behind = np.zeros((rows, cols), dtype=np.int64)  # steps from pair (c-2, c-1) back
        behind[:, 2:] = _run_until(monotone)[:, :-1]
        width = _side_widths(ahead) + _side_widths(behind)
        take = np.zeros((rows, cols), dtype=bool)
        take[1:-1, 1:-1] = edges[1:-1, 1:-1] & angle_ok[1:-1, 1:-1]
        widths[take] = width[take]
    return widths


# -- the metric --------------------------------------------------------------------
def _per_block(values: np.ndarray, n_rows: int, n_cols: int) -> np.ndarray:
    """View the top-left complete blocks as (n_rows, BLOCK, n_cols, BLOCK)."""
    return values[: n_rows * BLOCK, : n_cols * BLOCK].reshape(n_rows, BLOCK, n_cols, BLOCK)


def cpbd_from_maps(image: np.ndarray, canny: np.ndarray, widths: np.ndarray) -> float:
    """CPBD from the Canny map (edge blocks) and the edge-width map."""
    n_rows, n_cols = image.shape[0] // BLOCK, image.shape[1] // BLOCK
    if n_rows == 0 or n_cols == 0:
        return 0.0
    edge_counts = _per_block(canny, n_rows, n_cols).sum(axis=(1, 3))
    edge_block = edge_counts > BLOCK * BLOCK * EDGE_BLOCK_FRACTION
    blocks = _per_block(np.asarray(image, dtype=np.float64), n_rows, n_cols)
    contrast = blocks.max(axis=(1, 3)) - blocks.min(axis=(1, 3))
    width_jnb = np.where(np.floor(contrast) <= 50, WIDTH_JNB_LOW_CONTRAST, WIDTH_JNB_HIGH_CONTRAST)
    block_widths = _per_block(widths, n_rows, n_cols)
    counted = (block_widths != 0) & edge_block[:, None, :, None]
    jnb = np.broadcast_to(width_jnb[:, None, :, None], block_widths.shape)
    w, w_jnb = block_widths[counted], jnb[counted]
    if w.size == 0:
        return 0.0
    p_blur = 1 - np.exp(-(np.abs(w / w_jnb) ** BETA))
    bins = matlab_round(p_blur * 100).astype(np.int64)
    return float(np.count_nonzero(bins < CPBD_BINS) / w.size)


def cpbd_sharpness(gray: np.ndarray) -> float:
    """CPBD sharpness of a grayscale image on the 0-255 scale (higher = sharper).

    Returns 0.0 when the image has no 64x64 edge block (including images
    smaller than 64 px in a dimension), as the reference does.
    """
    gray = np.asarray(gray, dtype=np.float64)
    if gray.ndim != 2:
        raise ValueError(f"cpbd_sharpness expects a 2-D grayscale image, got shape {gray.shape}")
    if gray.shape[0] < BLOCK or gray.shape[1] < BLOCK:
        return 0.0
    canny = canny_edges(gray)
    widths = marziliano_widths(sobel_edges(gray, SOBEL_THRESHOLD, "vertical"), gray)
    return cpbd_from_maps(gray, canny, widths)


class CPBD(Method):
    """Zero-shot sharpness: one CPBD score per image (higher = sharper)."""

    params: ClassVar[type] = NoParams  # no hyperparameters
    per_image: ClassVar[bool] = True  # scores cached per image: computed once each in the map phase

    def predict(self, items: Sequence[Item]) -> np.ndarray:
        if not items:
            return np.zeros(0, dtype=np.float64)
        root = self.context.cache_dir / "features" if self.context.cache_dir else None
        namespace = namespace_for("cpbd", {"version": CPBD_VERSION})
        scores = FeatureCache(root).get(namespace, items, self._score)
        return scores[:, 0].astype(np.float64)

    @staticmethod
    def _score(item: Item) -> np.ndarray:
        return np.array([cpbd_sharpness(rgb2gray_uint8(load_rgb(item.image)))])
