"""NIQE's features and distance, written from the MATLAB release (``niqe_release``).

Mittal, Soundararajan, Bovik, "Making a 'completely blind' image quality
analyzer", IEEE SPL 2013.  The MATLAB files this follows: computequality.m
(score), computefeature.m (18 features of a block), estimateaggdparam.m (AGGD
moment matching) and estimatemodelparam.m (pristine fit).  The numbers are
those of pyiqa's port (``pyiqa.archs.niqe_arch``), which is what the project
used before; ``tests/test_niqe_parity.py`` checks that, where pyiqa is
installed.  Where pyiqa departs from MATLAB we do as pyiqa does, so that the
stored results stay the same:

- Luma: computed in float32 from the [0, 1] image and rounded to an integer
  on the 0-255 scale (half to even): YIQ's ``0.299 R + 0.587 G + 0.114 B``
  by default, BT.601's ``16 + (65.481 R + 128.553 G + 24.966 B) / 255`` with
  ``color_space="ycbcr"`` (computequality.m calls ``rgb2gray``, whose
  weights 0.2989/0.5870/0.1140 give another luma for some colours).
- Local mean and deviation: a 7x7 Gaussian window (sigma 7/6, coefficients
  rounded to float32), border replicated (``imfilter(.., 'replicate')`` as
  in the release); ``sigma = sqrt(|E[x^2] - mu^2| + eps)`` for the MSCN
  coefficients (the release has no eps; the sharpness has none either).
- AGGD shapes are searched on ``0.2:0.001:10`` made as a float32
  ``torch.arange`` (the release's grid is float64).
- The second scale is ``imresize(x, 0.5)`` (bicubic, antialiased, mirrored
  border) computed in float32 on the image divided by 255.

Everything else is float64.  Torch does the sums whose order decides the last
bit (the window filter, the resize, the block statistics, covariance and
pseudo-inverse), on tensors laid out as pyiqa lays them out, so that they are
added in the same order as in pyiqa.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from baselines.nss import gaussian_taps, keys_cubic

WINDOW_SIZE = 7
WINDOW_SIGMA = 7.0 / 6
MSCN_C = 1.0
#: (row shift, column shift) of the neighbour in the four products (computefeature.m's circshifts).
NEIGHBOUR_SHIFTS = ((0, 1), (1, 0), (1, 1), (1, -1))


# -- luma ----------------------------------------------------------------------------
def luma_255(rgb: np.ndarray, color_space: str = "yiq") -> np.ndarray:
    """(H, W) float64 luma of an RGB uint8 image, integers on the 0-255 scale.

    The arithmetic is float32, term by term (``r * wr + g * wg + b * wb``),
    then ``* 255`` and rounding half to even.
    """
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected an RGB image (H, W, 3), got shape {rgb.shape}")
    unit = rgb.astype(np.float32) / np.float32(255)
    r, g, b = unit[..., 0], unit[..., 1], unit[..., 2]
    if color_space == "yiq":
        y = r * np.float32(0.299) + g * np.float32(0.587) + b * np.float32(0.114)
    elif color_space == "ycbcr":
        y = (r * np.float32(65.481) + g * np.float32(128.553) + b * np.float32(24.966) + np.float32(16)) / np.float32(255)
    else:
        raise ValueError(f"color_space must be 'yiq' or 'ycbcr', got {color_space!r}")
    return np.round(y * np.float32(255)).astype(np.float64)


# -- local statistics ------------------------------------------------------------------
def gaussian_window() -> torch.Tensor:
    """``fspecial('gaussian', 7, 7/6)`` as float64 holding float32-rounded coefficients."""
    taps = gaussian_taps(WINDOW_SIZE, WINDOW_SIGMA)
    return torch.from_numpy(np.outer(taps, taps).astype(np.float32).astype(np.float64))


def local_moments(img: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(mu, E_w[x^2]) of an (H, W) float64 image: the Gaussian window, border replicated."""
    half = WINDOW_SIZE // 2
    window = gaussian_window()[None, None]

    def smooth(x: torch.Tensor) -> torch.Tensor:  # one image per call, as pyiqa filters them
        return F.conv2d(F.pad(x[None, None], (half, half, half, half), mode="replicate"), window)[0, 0]

    return smooth(img), smooth(img * img)


def local_sigma(img: torch.Tensor) -> torch.Tensor:
    """Local standard deviation ``sqrt(|E_w[x^2] - mu^2|)`` (estimatemodelparam.m's block sharpness)."""
    mu, second = local_moments(img)
    return (second - mu * mu).abs().sqrt()


def mscn(img: torch.Tensor, c: float = MSCN_C) -> torch.Tensor:
    """Mean-subtracted contrast-normalised coefficients ``(x - mu) / (sigma + c)``.

    ``sigma = sqrt(|E_w[x^2] - mu^2| + eps)`` (float64 eps, as pyiqa adds it).
    """
    mu, second = local_moments(img)
    sigma = ((second - mu * mu).abs() + torch.finfo(img.dtype).eps).sqrt()
    return (img - mu) / (sigma + c)


# -- half-size resize ---------------------------------------------------------------------
#: ``imresize(x, 0.5)``'s weights (antialiased bicubic, 0.5 * cubic(0.5 d)) at distances -4.5 .. 4.5 from
#: the output sample (which sits at input 2k + 0.5): the two outer ones are zero; all are exact binary
#: fractions, in float32 as in float64.
HALF_TAPS = keys_cubic(0.5 * (np.arange(10) - 4.5)) / keys_cubic(0.5 * (np.arange(10) - 4.5)).sum()


def _mirror(index: np.ndarray, n: int) -> np.ndarray:
    """MATLAB's out-of-range indices for resizing: [-1, -2, ..] -> [0, 1, ..], [n, n + 1, ..] -> [n - 1, n - 2, ..]."""
    index = np.where(index < 0, -index - 1, index)
    return np.where(index >= n, 2 * n - 1 - index, index)


def _halve32(x: torch.Tensor, axis: int) -> torch.Tensor:
    """Halve one axis (0: rows, 1: columns) of an (H, W) float32 tensor at least 5 long on that axis.

    The 10 weighted taps are laid out as a (10, rows, columns) tensor, columns
    contiguous, and summed over the first axis by torch, in float32: the order
    of that sum depends on the tensor's size (and on the CPU and thread count),
    and with this layout it is the order pyiqa's resize gets, which keeps the
    second scale bit-identical to it.
    """
    n = x.shape[axis]
    taps = torch.from_numpy(_mirror(np.arange(10)[:, None] + 2 * np.arange(-(-n // 2))[None, :] - 4, n))
    samples = x[taps] if axis == 0 else x[:, taps].permute(1, 0, 2).contiguous()
    weights = torch.from_numpy(HALF_TAPS.astype(np.float32))[:, None, None]
    return (samples * weights).sum(dim=0)


def imresize_half(img: torch.Tensor) -> torch.Tensor:
    """``imresize(img / 255, 0.5) * 255`` of an (H, W) float64 image (bicubic, antialiased), resized in float32.

    Output ``ceil(H / 2) x ceil(W / 2)``; rows first, then columns.
    """
    x = (img / 255.0).to(torch.float32)
    x = _halve32(_halve32(x, 0), 1)
    return x.to(torch.float64) * 255.0


# -- block features -------------------------------------------------------------------------
_SHAPES: torch.Tensor | None = None
_RATIOS: torch.Tensor | None = None


def aggd_table() -> tuple[torch.Tensor, torch.Tensor]:
    """(shapes, ratios): the grid 0.2:0.001:10 (float32 arange) and Gamma(2/a)^2 / (Gamma(1/a) Gamma(3/a))."""
    global _SHAPES, _RATIOS
    if _SHAPES is None:
        shapes = torch.arange(0.2, 10 + 0.001, 0.001, dtype=torch.float32).to(torch.float64)
        _RATIOS = (2 * torch.lgamma(2.0 / shapes) - (torch.lgamma(1.0 / shapes) + torch.lgamma(3.0 / shapes))).exp()
        _SHAPES = shapes
    return _SHAPES, _RATIOS


def nearest_index(table: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``argmin(|table - x|)`` per value of x, for a strictly increasing table (first index on ties).

    Only the two entries around x can be nearest (``fl(t - x)`` is monotone in
    t), so a binary search gives what a scan of the whole table gives, the
    lower one on a tie.  A NaN or infinite x gives index 0, as ``argmin`` does
    when every distance is NaN or infinite.
    """
    last = len(table) - 1
    above = torch.searchsorted(table, x.contiguous()).clamp(0, last)
    below = (above - 1).clamp(0, last)
    index = torch.where((table[above] - x).abs() < (table[below] - x).abs(), above, below)
    return torch.where(torch.isfinite(x), index, torch.zeros_like(index))


def aggd_fit(samples: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """estimateaggdparam.m per row of (n, m) samples: (shape alpha, left scale, right scale), each (n,).

    Left/right deviations over the negative/positive samples; the shape is the
    grid value whose ratio is nearest (first on ties) to
    ``rhat (g^3 + 1)(g + 1) / (g^2 + 1)^2`` with ``g = left/right`` and
    ``rhat = E|x|^2 / E[x^2]``.  Rows without negative or positive samples give
    NaN scales.
    """
    shapes, ratios = aggd_table()
    negative, positive = samples < 0, samples > 0
    left = ((samples * negative) ** 2).sum(dim=-1) / negative.sum(dim=-1).to(torch.float32)
    right = ((samples * positive) ** 2).sum(dim=-1) / positive.sum(dim=-1).to(torch.float32)
    left_std, right_std = left.sqrt(), right.sqrt()
    g = left_std / right_std
    rhat = samples.abs().mean(dim=-1) ** 2 / (samples**2).mean(dim=-1)
    rhat_norm = (rhat * (g**3 + 1) * (g + 1)) / (g**2 + 1) ** 2
    alpha = shapes[nearest_index(ratios, rhat_norm)]
    scale = (torch.lgamma(1 / alpha) - torch.lgamma(3 / alpha)).exp().sqrt()
    return alpha, left_std * scale, right_std * scale


def split_blocks(img: torch.Tensor, block: int, rows: int, cols: int) -> torch.Tensor:
    """(rows * cols, block * block): the top-left rows x cols blocks, column by column (MATLAB's order).

    The memory layout matters for the last bit of the block sums (torch adds a
    row of contiguous numbers in another order than numbers strided across
    rows).  It is the one pyiqa's blockproc hands over: rows contiguous when the
    grid has several rows and several columns; otherwise (a single row or
    column of blocks) pixel-major, the blocks side by side in memory.
    """
    cut = img[: rows * block, : cols * block].reshape(rows, block, cols, block)
    if rows > 1 and cols > 1:
        return cut.permute(2, 0, 1, 3).reshape(rows * cols, block * block)
    return cut.permute(1, 3, 2, 0).contiguous().reshape(block * block, rows * cols).T


def block_feature_table(coeffs: torch.Tensor, block: int) -> torch.Tensor:
    """computefeature.m on each (block x block) MSCN block (rows of `coeffs`): (n_blocks, 18).

    AGGD fit of the coefficients (shape, mean of the two scales), then for the
    products with the four neighbours (circular shifts within the block) the
    AGGD shape, mean ``(br - bl) Gamma(2/a) / Gamma(1/a)``, left and right scales.
    """
    n = coeffs.shape[0]
    alpha, left, right = aggd_fit(coeffs)
    columns = [alpha, (left + right) / 2]
    square = coeffs.reshape(n, block, block)  # a view: keeps `split_blocks`' layout, as do the products
    for shift in NEIGHBOUR_SHIFTS:
        products = (square * torch.roll(square, shift, dims=(1, 2))).reshape(n, block * block)
        alpha, left, right = aggd_fit(products)
        mean = (right - left) * (torch.lgamma(2 / alpha) - torch.lgamma(1 / alpha)).exp()
        columns += [alpha, mean, left, right]
    return torch.stack(columns, dim=-1)


def multiscale_features(y: np.ndarray, block: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(features (n_blocks, 36), first-scale image) of an (H, W) luma at least one block in each side.

    The image is cropped to whole blocks; blocks are listed column by column;
    the second scale uses blocks of ``block // 2`` on the halved image, the
    same rows x cols grid (for an odd block size the halved image can hold
    more: pyiqa then counts them and fails to join the two scales).
    """
    rows, cols = y.shape[0] // block, y.shape[1] // block
    if rows < 1 or cols < 1:
        raise ValueError(f"a {y.shape[1]}x{y.shape[0]} image holds no {block}x{block} block")
    img = torch.from_numpy(np.ascontiguousarray(y[: rows * block, : cols * block], dtype=np.float64))
    first = block_feature_table(split_blocks(mscn(img), block, rows, cols), block)
    small = block // 2
    second = block_feature_table(split_blocks(mscn(imresize_half(img)), small, rows, cols), small)
    return torch.cat((first, second), dim=-1), img


# -- the score ---------------------------------------------------------------------------------
def mvg_distance(mu: np.ndarray, cov: np.ndarray, features: torch.Tensor) -> float:
    """computequality.m: ``sqrt((mu - m)' pinv((cov + C) / 2) (mu - m))`` for the blocks' MVG (m, C).

    m is the NaN-ignoring mean per feature; C the covariance of the rows
    without NaN (``nancov``, normalised by n - 1; by n for a single row).
    """
    valid = ~torch.isnan(features)
    mean = torch.where(valid, features, torch.zeros_like(features)).sum(dim=0) / valid.to(torch.float32).sum(dim=0)
    complete = features[valid.all(dim=-1)]
    spread = torch.cov(complete.T, correction=1 if len(complete) > 1 else 0)
    mu_t = torch.as_tensor(mu, dtype=torch.float64)
    cov_t = torch.as_tensor(cov, dtype=torch.float64)
    inverse = torch.linalg.pinv((cov_t + spread) / 2)
    diff = (mu_t - mean)[None, None]
    quality = torch.bmm(torch.bmm(diff, inverse[None]), diff.transpose(1, 2))
    return float(torch.sqrt(quality).reshape(-1)[0])


def niqe(y: np.ndarray, mu: np.ndarray, cov: np.ndarray, block: int = 96) -> float:
    """NIQE of an (H, W) luma on the 0-255 scale against the pristine MVG (mu (36,), cov (36, 36))."""
    with torch.no_grad():
        features, _ = multiscale_features(y, block)
        return mvg_distance(mu, cov, features)


def block_sharpness(img: torch.Tensor, block: int) -> torch.Tensor:
    """Sum of the local standard deviation over each block, listed row by row.

    NB: the features are listed column by column (MATLAB's blkproc order), so
    for a grid of more than one row and column the two lists are not in the
    same order; this is how the project's pristine fit paired them before the
    rewrite (the shipped ``niqe-agiqa-synth.mat`` was fitted so) and is kept
    for reproducibility.  estimatemodelparam.m lists both column by column
    (``feat`` reshaped from blkproc's output, ``sharpness(:)``).
    """
    rows, cols = img.shape[0] // block, img.shape[1] // block
    sigma = local_sigma(img)
    return sigma.reshape(rows, block, cols, block).sum(dim=(1, 3)).reshape(-1)
