"""CPBD ("DSIQA"), CEIQ and the shared feature SVR."""

from __future__ import annotations

from itertools import pairwise
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage
from scipy.stats import spearmanr

from agiqa_bench.errors import ConfigError
from agiqa_bench.method import MethodContext, MethodSpec
from agiqa_bench.records import Item
from agiqa_bench.registry import create_method
from baselines import ceiq as ceiq_mod
from baselines import cpbd as cpbd_mod
from baselines import svr as svr_mod
from baselines.ceiq import CEIQ, ceiq_features, histeq_matlab, imhist_uint8, ssim_matlab
from baselines.cpbd import (
    CPBD,
    canny_edges,
    cpbd_from_maps,
    cpbd_sharpness,
    gradient_angles,
    marziliano_widths,
    matlab_round,
    sobel_edges,
)
from baselines.svr import FeatureSVR, apply_scaling, fit_scaling


# -- helpers ------------------------------------------------------------------------
def rectangles(size: int = 192, seed: int = 0) -> np.ndarray:
    """A sharp synthetic scene: random flat rectangles on a gray background (0-255)."""
    rng = np.random.default_rng(seed)
    img = np.full((size, size), 40.0)
    for _ in range(40):
        x0, y0 = rng.integers(0, size, 2)
        w, h = rng.integers(6, 60, 2)
        img[y0 : y0 + h, x0 : x0 + w] = rng.integers(0, 256)
    return img


def blurred(img: np.ndarray, sigma: float) -> np.ndarray:
    return np.round(ndimage.gaussian_filter(img, sigma)) if sigma else img


def write_png(path: Path, array: np.ndarray) -> Path:
    Image.fromarray(np.asarray(array, dtype=np.uint8)).save(path)
    return path


def make_item(path: Path, target: float, group: str) -> Item:
    return Item(id=path.name, image=path, prompt="", targets={"quality": float(target)}, group=group)


# -- CPBD: behaviour -------------------------------------------------------------------
def test_cpbd_decreases_with_blur_and_stays_in_unit_interval():
    for seed in (0, 1):
        scores = [cpbd_sharpness(blurred(rectangles(seed=seed), s)) for s in (0, 0.6, 1.0, 1.5, 2.0, 3.0)]
        assert all(0.0 <= s <= 1.0 for s in scores)
        assert scores[0] > scores[1] > scores[2] > scores[3], scores  # strictly sharper first
        assert all(a >= b for a, b in pairwise(scores)), scores  # and never rising
        assert scores[0] > 0.9 and scores[-1] < 0.05


def test_cpbd_degenerate_images_do_not_crash():
    assert cpbd_sharpness(np.full((128, 128), 77.0)) == 0.0  # no edge block
    assert cpbd_sharpness(rectangles(size=48)) == 0.0  # no complete 64x64 block
    assert cpbd_sharpness(np.zeros((1, 300))) == 0.0
    value = cpbd_sharpness(rectangles(size=200)[:65, :130])  # one block row, ragged border
    assert 0.0 <= value <= 1.0
    with pytest.raises(ValueError):
        cpbd_sharpness(np.zeros((64, 64, 3)))


def test_matlab_round_goes_away_from_zero():
    assert matlab_round(np.array([0.5, 1.5, 2.5, -0.5, -2.5])).tolist() == [1, 2, 3, -1, -3]


# -- CPBD: the vectorised pieces equal plain loops written from the MATLAB code -------------
def _widths_by_loop(edges: np.ndarray, image: np.ndarray) -> np.ndarray:
    """marziliano_method of CPBD_compute.m, loop for loop (0-based indices)."""
    rows, cols = image.shape
    quantised = 45 * matlab_round(gradient_angles(image) / 45)
    out = np.zeros(image.shape)
    for m in range(1, rows - 1):
        for n in range(1, cols - 1):
            if not edges[m, n]:
                continue
            for sign, ok in ((1, quantised[m, n] == 0), (-1, abs(quantised[m, n]) == 180)):
                if not ok:
                    continue
                for k in range(101):  # walk right: pairs (n+1+k, n+2+k)
                    if n + 2 + k > cols - 1 or sign * (image[m, n + 2 + k] - image[m, n + 1 + k]) <= 0:
                        break
                right = k + 1
                for k in range(101):  # walk left: pairs (n-2-k, n-1-k)
                    if n - 2 - k < 0 or sign * (image[m, n - 1 - k] - image[m, n - 2 - k]) <= 0:
                        break
                out[m, n] = right + k + 1
    return out


def test_marziliano_widths_match_reference_loop():
    rng = np.random.default_rng(3)
    for image in (blurred(rectangles(96, 5), 1.2), np.round(rng.uniform(0, 255, (40, 60)))):
        edges = sobel_edges(image, 2.0, "vertical")
        assert edges.any()
        np.testing.assert_array_equal(marziliano_widths(edges, image), _widths_by_loop(edges, image))
    # long monotone ramps hit the 100-step cap on both sides: width 101 + 101
    ramp = np.tile(np.arange(300, dtype=np.float64), (3, 1))
    edges = np.zeros(ramp.shape, dtype=bool)
    edges[1, 150] = True
    assert marziliano_widths(edges, ramp)[1, 150] == 202


def _sobel_vertical_by_loop(image: np.ndarray, threshold: float) -> np.ndarray:
    """edge(I,'sobel',t,'vertical') with thinning, per pixel as MATLAB's portable code."""
    padded = np.pad(image, 1, mode="edge")
    rows, cols = image.shape
    bx = np.zeros(image.shape)
    by = np.zeros(image.shape)
    for r in range(rows):
        for c in range(cols):
            win = padded[r : r + 3, c : c + 3]
            bx[r, c] = (win[:, 0] @ [1, 2, 1] - win[:, 2] @ [1, 2, 1]) / 8
            by[r, c] = (win[0] @ [1, 2, 1] - win[2] @ [1, 2, 1]) / 8
    b = bx * bx
    out = np.zeros(image.shape, dtype=bool)
    for r in range(rows):
        for c in range(cols):
            b1 = c == 0 or b[r, c - 1] <= b[r, c]
            b2 = c == cols - 1 or b[r, c] > b[r, c + 1]
            b3 = r == 0 or b[r - 1, c] <= b[r, c]
            b4 = r == rows - 1 or b[r, c] > b[r + 1, c]
            horizontal = abs(bx[r, c]) >= abs(by[r, c]) - 1e-13 and b1 and b2
            vertical = abs(by[r, c]) >= -1e-13 and b3 and b4
            out[r, c] = b[r, c] > threshold**2 and (horizontal or vertical)
    return out


def test_sobel_vertical_matches_reference_loop():
    image = blurred(rectangles(64, 2), 0.8)[:30, :40]
    expected = _sobel_vertical_by_loop(image, 2.0)
    assert expected.any()
    np.testing.assert_array_equal(sobel_edges(image, 2.0, "vertical"), expected)


def _canny_maxima_by_loop(ix, iy, mag, low):
    """cannyFindLocalMaximaPortable of MATLAB's edge.m, 0-based."""
    rows, cols = mag.shape
    out = np.zeros(mag.shape, dtype=bool)
    for r in range(1, rows - 1):
        for c in range(1, cols - 1):
            x, y, g = ix[r, c], iy[r, c], mag[r, c]
            cases = []
            if (y <= 0 and x > -y) or (y >= 0 and x < -y):
                d = abs(y / x)
                cases.append(
                    (mag[r, c + 1] * (1 - d) + mag[r - 1, c + 1] * d, mag[r, c - 1] * (1 - d) + mag[r + 1, c - 1] * d)
                )
            if (x > 0 and -y >= x) or (x < 0 and -y <= x):
                d = abs(x / y)
                cases.append(
                    (mag[r - 1, c] * (1 - d) + mag[r - 1, c + 1] * d, mag[r + 1, c] * (1 - d) + mag[r + 1, c - 1] * d)
                )
            if (x <= 0 and x > y) or (x >= 0 and x < y):
                d = abs(x / y)
                cases.append(
                    (mag[r - 1, c] * (1 - d) + mag[r - 1, c - 1] * d, mag[r + 1, c] * (1 - d) + mag[r + 1, c + 1] * d)
                )
            if (y < 0 and x <= y) or (y > 0 and x >= y):
                d = abs(y / x)
                cases.append(
                    (mag[r, c - 1] * (1 - d) + mag[r - 1, c - 1] * d, mag[r, c + 1] * (1 - d) + mag[r + 1, c + 1] * d)
                )
            out[r, c] = any(g >= a and g >= b and g > low for a, b in cases)
    return out


def test_canny_non_maximum_suppression_matches_reference_loop():
    image = blurred(rectangles(64, 4), 1.0)[:32, :32] + np.random.default_rng(0).normal(0, 2, (32, 32))
    dx, dy = cpbd_mod._smooth_gradient(image, np.sqrt(2))
    mag = np.hypot(dx, dy)
    mag /= mag.max()
    low, high = cpbd_mod._canny_thresholds(mag)
    assert 0 < low < high <= 1
    fast = cpbd_mod._canny_local_maxima(dx, dy, mag, low)
    np.testing.assert_array_equal(fast, _canny_maxima_by_loop(dx, dy, mag, low))
    edges = canny_edges(image)
    assert edges.any() and not (edges & ~fast).any()  # hysteresis only removes maxima


def test_canny_thresholds_follow_imhist_64():
    # 100 pixels: 70 at 0, 30 at 1 -> cumulative count passes 70 % at the last bin only.
    mag = np.array([0.0] * 70 + [1.0] * 30).reshape(10, 10)
    low, high = cpbd_mod._canny_thresholds(mag)
    assert high == 64 / 64 and low == pytest.approx(0.4)
    mag = np.array([0.0] * 71 + [1.0] * 29).reshape(10, 10)
    assert cpbd_mod._canny_thresholds(mag)[1] == 1 / 64


# -- CPBD: the method ---------------------------------------------------------------------
def test_cpbd_method_through_registry_caches_scores(tmp_path, monkeypatch):
    sharp = rectangles(128, 7)
    items = [
        make_item(write_png(tmp_path / f"s{sigma}.png", blurred(sharp, sigma)), 0.0, str(k))
        for k, sigma in enumerate((0, 1.0, 2.5))
    ]
    context = MethodContext(cache_dir=tmp_path / "cache")
    method = create_method("dsiqa", context=context)
    assert isinstance(method, CPBD) and method.name == "cpbd"
    method.fit(items, [], ("quality",))
    scores = method.predict(items)
    assert scores.shape == (3,) and scores.dtype == np.float64
    assert scores[0] > scores[1] >= scores[2]
    assert scores[0] == pytest.approx(cpbd_sharpness(sharp))  # gray PNG: rgb2gray keeps the values
    assert list((tmp_path / "cache" / "features").glob("cpbd-*.npz"))

    def fail(_gray):
        raise AssertionError("score recomputed although cached")

    monkeypatch.setattr(cpbd_mod, "cpbd_sharpness", fail)
    again = create_method("cpbd", context=context).predict(items)  # a new object, same cache dir
    np.testing.assert_array_equal(again, scores)
    assert create_method("cpbd").predict([]).shape == (0,)


# -- CPBD: agreement with the cpbd-py312 package -------------------------------------------
def _fidelity_images() -> list[np.ndarray]:
    skimage_data = pytest.importorskip("skimage.data")
    from skimage import color, transform

    camera = transform.resize(skimage_data.camera().astype(float), (192, 192), anti_aliasing=True)
    astronaut = transform.resize(color.rgb2gray(skimage_data.astronaut()) * 255, (192, 192), anti_aliasing=True)
    bases = [rectangles(128, 0), rectangles(128, 1), camera, astronaut]
    return [np.round(blurred(base, s)) for base in bases for s in (0, 0.5, 1.0, 1.5, 2.5)]


def test_cpbd_pieces_equal_cpbd_py312_given_the_same_edge_maps():
    compute = pytest.importorskip("cpbd.compute")
    if not hasattr(compute, "_calculate_sharpness_metric"):
        pytest.skip("this cpbd version has no _calculate_sharpness_metric")
    for image in _fidelity_images()[::3]:
        sobel = sobel_edges(image, 2.0, "vertical")
        ours = marziliano_widths(sobel, image)
        np.testing.assert_array_equal(ours, compute.marziliano_method(sobel.astype(int), image))
        canny = canny_edges(image)
        assert cpbd_from_maps(image, canny, ours) == pytest.approx(
            compute._calculate_sharpness_metric(image, canny, ours), abs=1e-12
        )


def test_cpbd_end_to_end_close_to_cpbd_py312():
    """The two ports differ only in their edge detectors (previous test): cpbd-py312 uses
    skimage's Canny and Octave's automatic Sobel threshold, we port MATLAB's edge().  On
    these 20 images (measured when written): max |diff| 0.100 (a synthetic image at
    sigma 0.5, on the steep part of the curve), mean |diff| 0.019, Pearson 0.997,
    Spearman 0.992.  The bounds below leave about 2x headroom."""
    ref = pytest.importorskip("cpbd")
    images = _fidelity_images()
    ours = np.array([cpbd_sharpness(img) for img in images])
    theirs = np.array([ref.compute(img) for img in images])
    diff = np.abs(ours - theirs)
    assert diff.max() <= 0.2, diff
    assert diff.mean() <= 0.05
    assert np.corrcoef(ours, theirs)[0, 1] >= 0.98
    assert spearmanr(ours, theirs).statistic >= 0.95


# -- CEIQ features ------------------------------------------------------------------------
def _ramp_rgb(low: int, high: int, size: int = 64) -> np.ndarray:
    """A natural-ish gray image with intensities spread over [low, high]."""
    rng = np.random.default_rng(0)
    field = ndimage.gaussian_filter(rng.normal(size=(size, size)), 3)
    ranks = field.ravel().argsort().argsort().reshape(size, size) / (size * size - 1)
    gray = np.round(low + ranks * (high - low)).astype(np.uint8)
    return np.repeat(gray[..., None], 3, axis=2)


def test_ceiq_features_are_five_finite_values():
    feats = ceiq_features(_ramp_rgb(30, 220))
    assert feats.shape == (5,) and np.all(np.isfinite(feats))
    assert 0 < feats[0] <= 1
    assert np.all(feats[1:] >= 0)


def test_histeq_uses_at_most_64_levels_and_flattens_the_histogram():
    gray = _ramp_rgb(60, 120)[..., 0]
    out = histeq_matlab(gray)
    assert out.dtype == np.uint8
    assert len(np.unique(out)) <= 64
    assert set(np.unique(out)) <= {int(matlab_round(255 * k / 63)) for k in range(64)}
    assert out.min() <= 8 and out.max() == 255  # stretched to the full range
    counts = np.bincount(out.ravel())
    counts = counts[counts > 0]
    assert counts.max() <= 2.5 * gray.size / 64  # roughly flat
    assert np.all(np.diff(out.ravel()[np.argsort(gray.ravel(), kind="stable")].astype(int)) >= 0)  # monotone map


def test_histeq_transform_equals_the_matrix_formula_of_histeq_m():
    """T from histeq.m written out literally (tol from the 2-row min, err matrix, first argmin)."""
    rng = np.random.default_rng(1)
    for counts in (rng.integers(0, 50, 256).astype(float), np.r_[900.0, np.zeros(254), 700.0]):
        counts[rng.integers(0, 256, 40)] = 0
        n, m, total = 256, 64, counts.sum()
        cum = np.cumsum(counts)
        cumd = np.cumsum(np.ones(m) * total / m)
        tol = np.vstack([np.r_[counts[: n - 1], 0], np.r_[0, counts[1:]]]).min(axis=0) / 2
        err = cumd[:, None] * np.ones((1, n)) - np.ones((m, 1)) * cum[None, :] + tol
        err[err < -total * np.sqrt(np.finfo(float).eps)] = total
        expected = np.argmin(err, axis=0) / (m - 1)
        np.testing.assert_array_equal(ceiq_mod.histeq_transform(counts), expected)


def test_equalised_image_is_closer_to_its_histeq_than_a_low_contrast_one():
    wide = ceiq_features(_ramp_rgb(0, 255))
    narrow = ceiq_features(_ramp_rgb(110, 145))
    assert wide[0] > narrow[0] + 0.2  # f1 = SSIM(g, histeq(g))


def test_ssim_matlab_is_an_ssim():
    metrics = pytest.importorskip("skimage.metrics")
    a = _ramp_rgb(20, 230, 96)[..., 0]
    b = histeq_matlab(a)
    assert ssim_matlab(a, a) == pytest.approx(1.0)
    ours = ssim_matlab(a, b)
    theirs = metrics.structural_similarity(
        a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255
    )
    assert ours == pytest.approx(theirs, abs=0.03)  # only the border handling differs


def test_imhist_128_bins_on_uint8():
    counts = imhist_uint8(np.array([[0, 1, 2, 3, 254, 255]], dtype=np.uint8), 128)
    assert counts.shape == (128,) and counts.sum() == 6
    assert counts[0] == 2 and counts[1] == 2 and counts[127] == 2


# -- FeatureSVR ------------------------------------------------------------------------------
class MeanColour(FeatureSVR):
    """Toy features: mean R, mean G (0-1) and a constant."""

    feature_name = "toy-mean-colour"

    def extract(self, rgb: np.ndarray) -> np.ndarray:
        return np.array([rgb[..., 0].mean() / 255, rgb[..., 1].mean() / 255, 1.0])


TOY_SPEC = MethodSpec(name="toy", factory="tests:MeanColour", kind="trainable", summary="toy")


def toy_items(root: Path, n: int, seed: int, red_range=(0, 200), prefix="i") -> list[Item]:
    """Tiny flat PNGs; quality is a smooth monotone function of red plus small noise."""
    rng = np.random.default_rng(seed)
    items = []
    for k in range(n):
        red, green = rng.uniform(*red_range), rng.uniform(0, 255)
        img = np.zeros((8, 8, 3), dtype=np.uint8)
        img[..., 0], img[..., 1] = round(red), round(green)
        quality = 1 + 4 / (1 + np.exp(-(red - 100) / 30)) + rng.normal(0, 0.05)
        items.append(make_item(write_png(root / f"{prefix}{k}.png", img), quality, group=str(k // 2)))
    return items


def test_feature_svr_learns_a_known_relation(tmp_path):
    train = toy_items(tmp_path, 40, seed=0)
    test = toy_items(tmp_path, 20, seed=1, prefix="t")
    method = MeanColour(TOY_SPEC, {}, MethodContext(cache_dir=tmp_path / "cache"))
    method.fit(train, [], ("quality",))
    pred = method.predict(test)
    assert pred.shape == (20,) and pred.dtype == np.float64
    truth = [item.targets["quality"] for item in test]
    assert spearmanr(pred, truth).statistic > 0.8
    assert method.selected == {"C": 1.0, "gamma": pytest.approx(1 / 3), "search": "none"}
    with pytest.raises(ValueError):
        method.fit(train, [], ("quality", "alignment"))


def test_scaling_uses_training_items_only(tmp_path):
    train = toy_items(tmp_path, 30, seed=2, red_range=(50, 150))
    extreme = toy_items(tmp_path, 5, seed=3, red_range=(240, 255), prefix="x")
    method = MeanColour(TOY_SPEC, {}, MethodContext(cache_dir=tmp_path / "cache"))
    method.fit(train, extreme, ("quality",))  # val must not influence anything
    low, high = method.scale_low.copy(), method.scale_high.copy()
    expected_low, expected_high = fit_scaling(method.features(train))
    np.testing.assert_array_equal(low, expected_low)
    np.testing.assert_array_equal(high, expected_high)
    method.predict(extreme)
    np.testing.assert_array_equal(method.scale_low, low)
    np.testing.assert_array_equal(method.scale_high, high)
    scaled = apply_scaling(method.features(extreme), low, high)
    assert np.all(scaled[:, 0] > 1.0)  # out-of-range test values are not clipped
    assert np.all(scaled[:, 2] == 0.0)  # the constant feature maps to 0
    train_scaled = apply_scaling(method.features(train), low, high)
    assert train_scaled[:, :2].min() == -1.0 and train_scaled[:, :2].max() == 1.0


def test_grid_search_sees_only_training_items_and_is_deterministic(tmp_path, monkeypatch):
    train = toy_items(tmp_path, 24, seed=4)
    val = toy_items(tmp_path, 6, seed=5, prefix="v")
    test = toy_items(tmp_path, 6, seed=6, prefix="t")
    extracted: list[float] = []
    fitted_rows: list[int] = []

    original_extract = MeanColour.extract

    def spy_extract(self, rgb):
        extracted.append(float(rgb[0, 0, 0]))
        return original_extract(self, rgb)

    import sklearn.svm

    class SpySVR(sklearn.svm.SVR):
        def fit(self, x, y, sample_weight=None):
            fitted_rows.append(len(x))
            return super().fit(x, y, sample_weight)

    scaled_rows: list[int] = []
    original_fit_scaling = svr_mod.fit_scaling

    def spy_fit_scaling(x):
        scaled_rows.append(len(x))
        return original_fit_scaling(x)

    monkeypatch.setattr(MeanColour, "extract", spy_extract)
    monkeypatch.setattr(sklearn.svm, "SVR", SpySVR)  # svr imports it on use
    monkeypatch.setattr(svr_mod, "fit_scaling", spy_fit_scaling)
    context = MethodContext(cache_dir=None)  # no cache: every image read is visible
    first = MeanColour(TOY_SPEC, {"search": "grid", "cv_folds": "4"}, context)
    first.fit(train, val, ("quality",))
    train_reds = {round(float(np.asarray(Image.open(i.image))[0, 0, 0])) for i in train}
    assert len(extracted) == len(train) and set(extracted) <= train_reds
    c_grid = svr_mod.log2_grid(svr_mod.LIBSVM_LOG2_C, "C")
    gamma_grid = svr_mod.log2_grid(svr_mod.LIBSVM_LOG2_GAMMA, "gamma")
    assert len(c_grid) == 11 and len(gamma_grid) == 10 and c_grid[0] == 2.0**-5 and gamma_grid[-1] == 8.0
    n_grid = len(c_grid) * len(gamma_grid)
    assert len(fitted_rows) == n_grid * 4 + 1
    assert max(fitted_rows) == len(train) and max(fitted_rows[:-1]) < len(train)
    assert scaled_rows[:-1] == fitted_rows[:-1] and scaled_rows[-1] == len(train)  # scaling refitted per fold
    assert first.selected["search"] == "grid" and first.selected["cv_folds"] == 4
    assert first.selected["C"] in c_grid and first.selected["gamma"] in gamma_grid
    assert first.selected["cv_srcc"] > 0.5

    second = MeanColour(TOY_SPEC, {"search": "grid", "cv_folds": 4}, context)
    second.fit(train, val, ("quality",))
    assert second.selected == first.selected
    np.testing.assert_array_equal(first.predict(test), second.predict(test))


def test_grid_search_with_one_group_falls_back_to_defaults(tmp_path):
    items = [make_item(i.image, i.targets["quality"], "same") for i in toy_items(tmp_path, 6, seed=7)]
    method = MeanColour(TOY_SPEC, {"search": "grid"}, MethodContext())
    method.fit(items, [], ("quality",))
    assert method.selected["search"].startswith("skipped") and method.selected["C"] == 1.0


def test_svr_parameters_from_the_command_line(tmp_path):
    assert create_method("ceiq", {"gamma": "0.5"})._gamma(5) == 0.5
    assert create_method("ceiq")._gamma(5) == pytest.approx(0.2)
    assert create_method("ceiq", {"C": "8"}).config["C"] == 8.0
    assert create_method("ceiq.grid").config["search"] == "grid"
    for bad in ({"gamma": "wide"}, {"gamma": "-1"}, {"search": "random"}, {"C": "0"}, {"cv_folds": "1"}):
        with pytest.raises(ConfigError):
            create_method("ceiq", bad)


# -- CEIQ: the method -----------------------------------------------------------------------
def test_ceiq_through_registry_fits_predicts_and_reuses_features(tmp_path, monkeypatch):
    items = []
    for k, (low, high) in enumerate(
        [(0, 255), (40, 200), (80, 160), (100, 140), (115, 130), (20, 240), (60, 180), (90, 150)]
    ):
        path = write_png(tmp_path / f"c{k}.png", _ramp_rgb(low, high, 48))
        items.append(make_item(path, (high - low) / 50, str(k)))
    context = MethodContext(cache_dir=tmp_path / "cache")
    method = create_method("ceiq", context=context)
    assert isinstance(method, CEIQ)
    method.fit(items[:6], [], ("quality",))
    pred = method.predict(items[6:])
    assert pred.shape == (2,) and np.all(np.isfinite(pred))
    assert pred[0] > pred[1]  # wider range (60-180) predicted above narrower (90-150)

    def fail(_rgb):
        raise AssertionError("features recomputed although cached")

    monkeypatch.setattr(ceiq_mod, "ceiq_features", fail)
    repeat = create_method("ceiq", context=context)  # the runner builds a new object per repeat
    repeat.fit(items[:6], [], ("quality",))
    np.testing.assert_array_equal(repeat.predict(items[6:]), pred)


def test_grid_ranges_are_configurable_and_validated(tmp_path):
    from agiqa_bench.errors import ConfigError

    assert svr_mod.log2_grid("-3:3:3", "x") == (0.125, 1.0, 8.0)
    with pytest.raises(ConfigError, match="start:stop:step"):
        MeanColour(TOY_SPEC, {"search": "grid", "grid_log2_C": "1:5"})
