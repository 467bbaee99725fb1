"""GMLF (GM-LOG) and HIGRADE-1/-2 features and their SVR methods."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from agiqa_test_support import blurred_shapes, write_image
from scipy import ndimage, signal
from scipy.stats import spearmanr

from agiqa_bench.errors import ConfigError
from agiqa_bench.method import MethodContext
from agiqa_bench.records import Item
from agiqa_bench.registry import create_method
from baselines import gmlf as gmlf_mod
from baselines import higrade as higrade_mod
from baselines.gmlf import (
    GMLF,
    gmlf_features,
    gradient_magnitude,
    joint_adaptive_normalisation,
    joint_histogram,
    marginal_and_dependency,
)
from baselines.higrade import (
    HIGRADE,
    coherency_statistics,
    dog_kernels,
    gradient_coherency,
    higrade_features,
    higrade_spatial,
    rgb_to_lab8,
)
from baselines.nss import ggd_fit, imresize_half, keys_cubic

BINS = np.arange(1, 11)


def textured(size: int, seed: int) -> np.ndarray:
    """Random rectangles plus smooth texture, float RGB on 0-255 (a stand-in for a natural image)."""
    rng = np.random.default_rng(seed)
    base = blurred_shapes(size, 0, seed).astype(np.float64)
    return base + ndimage.gaussian_filter(rng.normal(0, 20, base.shape), (1.5, 1.5, 0))


def to_uint8(image: np.ndarray) -> np.ndarray:
    return np.clip(np.round(image), 0, 255).astype(np.uint8)


def blur(image: np.ndarray, sigma: float) -> np.ndarray:
    return ndimage.gaussian_filter(image, (sigma, sigma, 0))


def add_noise(image: np.ndarray, std: float, seed: int = 0) -> np.ndarray:
    return image + np.random.default_rng(seed).normal(0, std, image.shape)


def mean_bin(distribution: np.ndarray) -> float:
    return float((distribution * BINS).sum())


# -- shapes and degenerate inputs ---------------------------------------------------------------
EXTRACTORS = {
    "gmlf": (gmlf_features, 40),
    "higrade.1": (lambda rgb: higrade_features(rgb, 1), 216),
    "higrade.2": (lambda rgb: higrade_features(rgb, 2), 120),
}
DEGENERATE = {
    "black": np.zeros((40, 50, 3), np.uint8),
    "grey": np.full((40, 50, 3), 128, np.uint8),
    "white": np.full((48, 48, 3), 255, np.uint8),
    "tiny": to_uint8(textured(64, 1)[:17, :23]),
    "smaller than a coherency block": to_uint8(textured(64, 2)[:8, :12]),
    "non-square": to_uint8(textured(96, 3)[:40, :96]),
}


@pytest.mark.parametrize("name", EXTRACTORS)
@pytest.mark.parametrize("case", DEGENERATE)
def test_feature_dimensions_and_finiteness(name, case):
    extract, dim = EXTRACTORS[name]
    features = extract(DEGENERATE[case])
    assert features.shape == (dim,) and features.dtype == np.float64
    assert np.all(np.isfinite(features))


@pytest.mark.parametrize("name", EXTRACTORS)
def test_features_are_deterministic(name):
    extract, _ = EXTRACTORS[name]
    image = to_uint8(textured(48, 4))
    np.testing.assert_array_equal(extract(image), extract(image.copy()))


# -- GMLF ------------------------------------------------------------------------------------------
def test_gmlf_parts_each_sum_to_one():
    for image in (to_uint8(textured(64, 5)), DEGENERATE["black"]):
        features = gmlf_features(image)
        for part in features.reshape(4, 10):
            assert part.sum() == pytest.approx(1.0) and np.all(part >= 0)


def test_gaussian_derivative_matches_the_2d_matlab_window():
    """winx = w(2:end-1,2:end-1) - w(2:end-1,3:end) of the 7x7 Gaussian, / sum|winx|, as filter2."""
    x = np.arange(7) - 3.0
    w = np.exp(-(x[:, None] ** 2 + x[None, :] ** 2) / (2 * 0.5**2))
    w /= w.sum()
    winx = w[1:-1, 1:-1] - w[1:-1, 2:]
    winx /= np.abs(winx).sum()
    winy = w[1:-1, 1:-1] - w[2:, 1:-1]
    winy /= np.abs(winy).sum()
    image = textured(40, 6)[..., 0]
    gx = ndimage.correlate(image, winx, mode="constant")
    gy = ndimage.correlate(image, winy, mode="constant")
    np.testing.assert_allclose(gradient_magnitude(image), np.hypot(gx, gy), rtol=1e-12, atol=1e-9)


def test_normalisation_crops_two_pixels_per_side():
    gm, log = joint_adaptive_normalisation(np.ones((30, 41)), np.ones((30, 41)))
    assert gm.shape == log.shape == (26, 37)


def test_joint_histogram_puts_out_of_range_values_in_the_edge_bins():
    """ceil(x / 0.2) with hist3 centres 1..10: 0 goes to bin 1, anything >= 1.8 to bin 10."""
    gm = np.array([0.0, 0.1, 0.2, 0.21, 1.79, 1.81, 50.0])
    log = np.array([0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 3.0])
    joint = joint_histogram(gm, log) * gm.size
    expected = np.zeros((10, 10))
    expected[0, 0] = 3  # 0 -> q 0, 0.1 and 0.2 -> q 1
    expected[1, 0] = 1  # 0.21 -> q 2
    expected[8, 0] = 1  # 1.79 -> q 9
    expected[9, 0] = 1  # 1.81 -> q 10
    expected[9, 9] = 1  # 50 -> q 250, 3 -> q 15: both to the last bin
    np.testing.assert_allclose(joint, expected, atol=1e-12)


def test_dependency_equals_marginal_for_independent_responses():
    rng = np.random.default_rng(7)
    p_g, p_l = rng.dirichlet(np.ones(10)), rng.dirichlet(np.ones(10))
    features = marginal_and_dependency(np.outer(p_g, p_l))
    np.testing.assert_allclose(features[:10], p_g, atol=1e-12)
    np.testing.assert_allclose(features[10:20], p_l, atol=1e-12)
    np.testing.assert_allclose(features[20:30], p_g, atol=1e-3)  # up to alpha = 1e-4
    np.testing.assert_allclose(features[30:40], p_l, atol=1e-3)


def test_gmlf_blur_shifts_the_joint_statistics_towards_gm_and_noise_towards_log():
    """JAN divides both responses by their joint local energy: blur removes Laplacian detail
    faster than gradient, so the LoG marginal moves to low bins and the GM marginal up; noise
    moves the LoG marginal up."""
    for seed in range(3):
        image = textured(64, seed)
        sharp = gmlf_features(to_uint8(image))
        blurred = gmlf_features(to_uint8(blur(image, 3)))
        noisy = gmlf_features(to_uint8(add_noise(image, 15, seed)))
        assert mean_bin(blurred[10:20]) < mean_bin(sharp[10:20]) - 0.4
        assert mean_bin(blurred[:10]) > mean_bin(sharp[:10]) + 0.2
        assert mean_bin(noisy[10:20]) > mean_bin(sharp[10:20]) + 1.0


def test_gmlf_features_use_matlab_rgb2gray(monkeypatch):
    seen = []
    monkeypatch.setattr(gmlf_mod, "gmlf_features_gray", lambda gray: seen.append(gray) or np.zeros(40))
    rgb = to_uint8(textured(24, 8))
    gmlf_mod.gmlf_features(rgb)
    expected = np.floor(rgb[..., 0] * 0.298936021293775 + rgb[..., 1] * 0.587043074451121
                        + rgb[..., 2] * 0.114020904255103 + 0.5)
    np.testing.assert_array_equal(seen[0], expected)
    assert seen[0].max() > 1  # the 0-255 scale, not NTIA's /256


# -- shared NSS pieces ----------------------------------------------------------------------------
def matlab_imresize_matrix(n: int, scale: float = 0.5) -> np.ndarray:
    """imresize.m's contributions() for the cubic kernel, as a dense (n_out, n) matrix."""
    n_out = int(np.ceil(n * scale))
    width = 4 / scale
    u = np.arange(1, n_out + 1) / scale + 0.5 * (1 - 1 / scale)
    indices = np.floor(u - width / 2)[:, None] + np.arange(int(np.ceil(width)) + 2)[None, :]
    weights = scale * keys_cubic(scale * (u[:, None] - indices))
    weights /= weights.sum(axis=1, keepdims=True)
    mirror = np.concatenate([np.arange(n), np.arange(n)[::-1]])
    indices = mirror[np.mod(indices - 1, 2 * n).astype(int)]
    matrix = np.zeros((n_out, n))
    for row in range(n_out):
        np.add.at(matrix[row], indices[row], weights[row])
    return matrix


@pytest.mark.parametrize("shape", [(40, 50), (41, 37), (9, 7), (3, 2), (1, 4)])
def test_imresize_half_matches_matlab_contributions(shape):
    image = np.random.default_rng(9).normal(100, 50, shape)
    expected = matlab_imresize_matrix(shape[0]) @ image @ matlab_imresize_matrix(shape[1]).T
    np.testing.assert_allclose(imresize_half(image), expected, rtol=0, atol=1e-10)


def test_ggd_fit_recovers_known_shapes():
    rng = np.random.default_rng(10)
    sigma, shape = ggd_fit(rng.normal(0, 3, 200_000))
    assert shape == pytest.approx(2.0, abs=0.05) and sigma == pytest.approx(3.0, rel=0.01)
    assert ggd_fit(rng.laplace(0, 1, 200_000))[1] == pytest.approx(1.0, abs=0.05)
    assert ggd_fit(np.full(50, 4.0)) == (0.0, 0.2)  # MATLAB: min over all-NaN picks the first shape


# -- HIGRADE ---------------------------------------------------------------------------------------
def test_lab_uses_matlab_8bit_encoding_with_d50_white():
    rgb = np.array([[[255, 255, 255], [0, 0, 0], [128, 128, 128], [255, 0, 0], [0, 255, 0], [0, 0, 255]]], np.uint8)
    lab = rgb_to_lab8(rgb)[0]
    expected = [
        [255, 128, 128],  # white: L 100, neutral
        [0, 128, 128],
        [137, 128, 128],  # L 53.59 -> 136.6
        [138, 209, 198],  # red in D50 Lab (54.29, 80.81, 69.89)
        [224, 49, 209],  # green (87.82, -79.29, 80.99)
        [75, 196, 16],  # blue (29.57, 68.30, -112.03)
    ]
    np.testing.assert_array_equal(lab, expected)


def test_feature_layout_follows_the_matlab_concatenation():
    rgb = to_uint8(textured(48, 11))
    lab = rgb_to_lab8(rgb)
    v1, v2 = higrade_features(rgb, 1), higrade_features(rgb, 2)
    spatial_l = higrade_spatial(lab[..., 0])
    assert spatial_l.shape == (36,)
    np.testing.assert_allclose(v1[:36], spatial_l)
    np.testing.assert_allclose(v2[:36], spatial_l)
    np.testing.assert_allclose(v1[72:108], higrade_spatial(lab[..., 1]))
    np.testing.assert_allclose(v2[40:76], higrade_spatial(lab[..., 1]))
    np.testing.assert_allclose(v2[36:40], coherency_statistics(gradient_coherency(lab[..., 0])))


def test_spatial_statistics_respond_to_blur_and_noise():
    """Blur lowers local contrast (Nakagami mean of sigma), spreads it less evenly (Nakagami
    shape), narrows and peaks the MSCN distribution (GGD std and shape down); noise does the
    opposite and pushes the MSCN shape to about Gaussian or beyond."""
    for seed in range(3):
        gray = textured(64, seed)[..., 0]
        sharp = higrade_spatial(gray)
        blurred = higrade_spatial(ndimage.gaussian_filter(gray, 3))
        noisy = higrade_spatial(gray + np.random.default_rng(seed).normal(0, 15, gray.shape))
        for k in range(3):  # Nakagami mean, Nakagami shape, MSCN GGD std
            assert blurred[k] < sharp[k] < noisy[k]
        assert blurred[3] < sharp[3] - 0.5
        assert noisy[3] > max(sharp[3], 2.5)


def coherency_by_loop(image: np.ndarray) -> np.ndarray:
    """grad_coherence.m block by block: conv2 'same' inside each 9x9 block, eig of the tensor."""
    gx, gy = dog_kernels(9)
    values = []
    for r in range(0, image.shape[0] - 8, 9):
        for c in range(0, image.shape[1] - 8, 9):
            block = image[r:r + 9, c:c + 9]
            ix = signal.convolve2d(block, gx, mode="same")
            iy = signal.convolve2d(block, gy, mode="same")
            tensor = np.array([[np.sum(ix * ix), np.sum(ix * iy)], [np.sum(ix * iy), np.sum(iy * iy)]])
            l1, l2 = np.linalg.eigvalsh(tensor)
            values.append(((l1 - l2) / (l1 + l2)) ** 2)
    return np.array(values)


def test_coherency_matches_a_block_by_block_loop():
    image = textured(64, 12)[:58, :47, 0]
    np.testing.assert_allclose(np.sort(gradient_coherency(image)), np.sort(coherency_by_loop(image)), rtol=1e-9)


def test_coherency_is_high_for_stripes_and_low_for_noise():
    """Zero-mean patterns: each block is zero-padded, so an offset would add block-edge gradients."""
    yy, xx = np.mgrid[0:90, 0:90]
    stripes = np.sin(2 * np.pi * (xx + yy) / 3)
    noise = np.random.default_rng(13).normal(size=(90, 90))
    assert gradient_coherency(stripes).mean() > 0.9
    assert gradient_coherency(noise).mean() < 0.3


def test_an_all_zero_block_zeroes_the_channel_coherency_statistics():
    rgb = to_uint8(textured(45, 14))
    rgb[:9, :9] = 0  # L = 0 in the first block: 0/0 coherency, as in MATLAB
    features = higrade_features(rgb, 2)
    np.testing.assert_array_equal(features[36:40], 0.0)
    assert np.all(features[76:80] != 0)  # channel a is unaffected


# -- the methods --------------------------------------------------------------------------------------
def blur_items(root: Path, seeds: range, size: int = 56) -> list[Item]:
    """Five blur levels of each textured image; quality falls with blur; one group per source image."""
    items = []
    for seed in seeds:
        image = textured(size, seed)
        for level in range(5):
            path = write_image(root / f"s{seed}-b{level}.png", to_uint8(blur(image, 0.7 * level)))
            items.append(Item(id=path.name, image=path, prompt="", targets={"quality": 5.0 - level}, group=str(seed)))
    return items


@pytest.fixture(scope="module")
def blur_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("blur")
    return blur_items(root, range(5)), blur_items(root, range(20, 22))


@pytest.mark.parametrize(("name", "cls", "module", "function"), [
    ("gmlf", GMLF, gmlf_mod, "gmlf_features"),
    ("higrade.2", HIGRADE, higrade_mod, "higrade_features"),
])
def test_method_ranks_blurred_images_lower_and_reuses_features(name, cls, module, function, blur_data, tmp_path,
                                                              monkeypatch):
    train, test = blur_data
    context = MethodContext(cache_dir=tmp_path / "cache")
    method = create_method(name, context=context)
    assert isinstance(method, cls)
    method.fit(train, [], ("quality",))
    pred = method.predict(test)
    assert pred.shape == (len(test),) and np.all(np.isfinite(pred))
    assert spearmanr(pred, [item.targets["quality"] for item in test]).statistic > 0.8

    def fail(*_args):
        raise AssertionError("features recomputed although cached")

    monkeypatch.setattr(module, function, fail)
    repeat = create_method(name, context=context)
    repeat.fit(train, [], ("quality",))
    np.testing.assert_array_equal(repeat.predict(test), pred)


def test_higrade_version_parameter():
    assert create_method("higrade").config["version"] == 1
    assert create_method("higrade.2").config["version"] == 2
    assert create_method("higrade", {"version": "2"}).feature_params() == {"version": 2}
    assert create_method("higrade.1.grid").config["search"] == "grid"
    with pytest.raises(ConfigError, match="version"):
        create_method("higrade", {"version": "3"})
