"""Natural-scene-statistics helpers shared by the handcrafted IQA baselines.

MATLAB building blocks, written with numpy/scipy so that the feature code in
`baselines.gmlf` and `baselines.higrade` reads like the MATLAB it ports:

- `gaussian_taps`: one axis of ``fspecial('gaussian', n, sigma)``.  The 2-D
  MATLAB window is the outer product of these taps whenever no entry falls
  below ``eps * max`` (MATLAB zeroes those); that holds for every window used
  here (the smallest relative entry is exp(-36) > eps), so filtering is done
  separably, which is exact up to round-off.
- `filter2_same` / `separable_filter2_same`: ``filter2(h, x, 'same')``, i.e.
  correlation with zero padding.
- `ggd_fit`: ``gaussian_para_esti`` (DESIQUE/C-DIIVINE/HIGRADE): moment
  matching of a zero-mean generalised Gaussian on the grid 0.2:0.001:10.
- `mscn`: the divisive normalisation ``(x - mu) / (sigma + C)``.
- `imresize_half`: ``imresize(x, 0.5)`` on a double image (bicubic,
  antialiased, symmetric border), without MATLAB's round-off.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from scipy.special import gammaln

#: ``gam = 0.2:0.001:10`` of gaussian_para_esti.m.
GGD_SHAPES = 0.2 + 0.001 * np.arange(9801)
#: ``r_gam = gamma(1/g) gamma(3/g) / gamma(2/g)^2`` (decreasing in g).
GGD_RATIOS = np.exp(gammaln(1 / GGD_SHAPES) + gammaln(3 / GGD_SHAPES) - 2 * gammaln(2 / GGD_SHAPES))
#: MATLAB ``imresize(x, 0.5)`` bicubic taps: 0.5 * cubic(0.5 * d) at d = +-0.5 .. +-3.5, normalised.
_CUBIC_AT = np.array([1.75, 1.25, 0.75, 0.25, 0.25, 0.75, 1.25, 1.75])


def keys_cubic(x: np.ndarray) -> np.ndarray:
    """Keys' cubic convolution kernel with a = -0.5 (MATLAB's ``cubic``)."""
    ax = np.abs(x)
    near = (1.5 * ax**3 - 2.5 * ax**2 + 1) * (ax <= 1)
    far = (-0.5 * ax**3 + 2.5 * ax**2 - 4 * ax + 2) * ((ax > 1) & (ax <= 2))
    return near + far


HALF_RESIZE_TAPS = keys_cubic(_CUBIC_AT) / keys_cubic(_CUBIC_AT).sum()


def gaussian_taps(size: int, sigma: float) -> np.ndarray:
    """1-D normalised Gaussian of odd length `size` (one axis of fspecial('gaussian'))."""
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2
    taps = np.exp(-(x**2) / (2 * sigma**2))
    return taps / taps.sum()


def filter2_same(kernel: np.ndarray, image: np.ndarray) -> np.ndarray:
    """MATLAB ``filter2(kernel, image, 'same')``: correlation, zeros outside (odd-sized kernels)."""
    return ndimage.correlate(image, kernel, mode="constant", cval=0.0)


def separable_filter2_same(image: np.ndarray, row_taps: np.ndarray, col_taps: np.ndarray) -> np.ndarray:
    """``filter2(outer(row_taps, col_taps), image, 'same')`` done one axis at a time.

    `row_taps` runs down the rows (axis 0), `col_taps` along the columns (axis 1).
    """
    out = ndimage.correlate1d(image, row_taps, axis=0, mode="constant", cval=0.0)
    return ndimage.correlate1d(out, col_taps, axis=1, mode="constant", cval=0.0)


def ggd_fit(x: np.ndarray) -> tuple[float, float]:
    """``[sigma, shape] = gaussian_para_esti(x)``: GGD scale (std) and shape by moment matching.

    rho = var / E|x - mean|^2 is matched to the nearest tabulated ratio (first
    one on ties).  Constant data (rho = 0/0) gives shape 0.2 and sigma 0, as
    MATLAB's ``min`` over an all-NaN vector returns the first index.
    """
    x = np.asarray(x, dtype=np.float64).ravel()
    centred = x - x.mean()
    variance = float(np.mean(centred**2))
    mean_abs = float(np.mean(np.abs(centred)))
    if mean_abs == 0:
        return float(np.sqrt(variance)), float(GGD_SHAPES[0])
    rho = variance / mean_abs**2
    return float(np.sqrt(variance)), float(GGD_SHAPES[np.argmin(np.abs(rho - GGD_RATIOS))])


def mscn(image: np.ndarray, window_taps: np.ndarray, c: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """(structdis, sigma): ``(x - mu) / (sigma + c)`` with mu, sigma from a zero-padded Gaussian window.

    sigma = sqrt(|E_w[x^2] - mu^2|), as the LIVE MATLAB code writes it.
    """
    mu = separable_filter2_same(image, window_taps, window_taps)
    sigma = np.sqrt(np.abs(separable_filter2_same(image * image, window_taps, window_taps) - mu * mu))
    return (image - mu) / (sigma + c), sigma


def _half_along(image: np.ndarray, axis: int) -> np.ndarray:
    """Halve one axis: output k is centred at input 2k + 0.5, taps at 2k - 3 .. 2k + 4 (0-based)."""
    n = image.shape[axis]
    n_out = -(-n // 2)  # ceil(0.5 * n)
    pad = [(0, 0)] * image.ndim
    pad[axis] = (4, 4)
    padded = np.pad(image, pad, mode="symmetric")  # MATLAB's mirrored indices [1:n, n:-1:1]
    out = np.zeros(image.shape[:axis] + (n_out,) + image.shape[axis + 1:], dtype=np.float64)
    for t, weight in enumerate(HALF_RESIZE_TAPS):
        start = 1 + t  # padded index of input position 2k - 3 + t, for k = 0
        out += weight * np.take(padded, np.arange(start, start + 2 * n_out, 2), axis=axis)
    return out


def imresize_half(image: np.ndarray) -> np.ndarray:
    """MATLAB ``imresize(image, 0.5)`` for a 2-D double image (bicubic, antialiased).

    With scale 0.5 the antialiasing kernel is 0.5 * cubic(0.5 d), 8 non-zero
    taps, the same for every output sample; MATLAB's out-of-range indices are
    mirrored, which is symmetric padding.  Output size ceil(n / 2) per axis.
    """
    image = np.asarray(image, dtype=np.float64)
    return _half_along(_half_along(image, 0), 1)
