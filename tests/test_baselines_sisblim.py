"""SISBLIM-approx: each step moves the right way, degenerate inputs, the method path."""

from __future__ import annotations

import io
from itertools import pairwise
from pathlib import Path

import numpy as np
import pytest
from agiqa_test_support import blurred_shapes, write_image
from PIL import Image
from scipy import ndimage

from agiqa_bench.method import MethodContext
from agiqa_bench.records import Item
from agiqa_bench.registry import create_method, get_spec
from baselines import sisblim as sis
from baselines.sisblim import (
    SISBLIMApprox,
    crete_blur,
    estimate_noise_sigma,
    free_energy_bits,
    jpeg_blockiness,
    sisblim_approx,
    sisblim_components,
    wsb_score,
)


# -- helpers ------------------------------------------------------------------------
def smooth_field(size: int = 160) -> np.ndarray:
    """A smooth gray image (slow sinusoids), away from 0 and 255."""
    yy, xx = np.mgrid[0:size, 0:size]
    return 128 + 40 * np.sin(xx / 23.0) * np.cos(yy / 31.0)


def scene(size: int = 192, seed: int = 0) -> np.ndarray:
    """Flat rectangles over a low-pass random texture: edges and texture, like a small photograph."""
    rng = np.random.default_rng(seed)
    img = 110 + 25 * ndimage.gaussian_filter(rng.normal(0, 1, (size, size)), 1.5) / 0.19
    for _ in range(25):
        x0, y0 = rng.integers(0, size, 2)
        w, h = rng.integers(8, 60, 2)
        img[y0 : y0 + h, x0 : x0 + w] = rng.integers(20, 236) + 0.3 * (img[y0 : y0 + h, x0 : x0 + w] - 110)
    return np.clip(np.round(img), 0, 255)


def noisy(img: np.ndarray, sigma: float, seed: int = 0) -> np.ndarray:
    return np.clip(np.round(img + np.random.default_rng(seed).normal(0, sigma, img.shape)), 0, 255)


def blurred(img: np.ndarray, sigma: float) -> np.ndarray:
    return np.round(ndimage.gaussian_filter(img, sigma)) if sigma else img


def jpeg(img: np.ndarray, quality: int) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(np.asarray(img, dtype=np.uint8)).save(buf, format="JPEG", quality=quality)
    buf.seek(0)
    return np.asarray(Image.open(buf), dtype=np.float64)


# -- step 1: noise -------------------------------------------------------------------
def test_noise_sigma_tracks_added_gaussian_noise_on_a_smooth_image():
    base = smooth_field()
    assert estimate_noise_sigma(np.round(base)) < 1.0  # only uint8 rounding
    for sigma in (3.0, 5.0, 10.0, 20.0):
        estimate = estimate_noise_sigma(noisy(base, sigma, seed=int(sigma)))
        assert estimate == pytest.approx(sigma, rel=0.2), (sigma, estimate)
    estimates = [estimate_noise_sigma(noisy(scene(), s)) for s in (0, 2, 5, 10, 20)]
    assert all(a < b for a, b in pairwise(estimates)), estimates  # textured content: still monotone


def test_noise_sigma_degenerate_inputs():
    assert estimate_noise_sigma(np.full((64, 64), 90.0)) == 0.0
    assert estimate_noise_sigma(np.zeros((5, 40))) == 0.0  # under one 7x7 patch
    ramp = np.add.outer(np.arange(50.0), 2 * np.arange(70.0))  # a plane: no noise at all
    assert estimate_noise_sigma(ramp) < 1e-6


# -- step 3: blur --------------------------------------------------------------------
def test_blur_measures_follow_gaussian_blur():
    base = scene(seed=1)
    comps = [sisblim_components(blurred(base, s)) for s in (0, 1.0, 2.0, 3.0)]
    crete = [c["crete_blur"] for c in comps]
    cpbd = [c["cpbd"] for c in comps]
    q_blur = [c["q_blur"] for c in comps]
    assert all(a < b for a, b in pairwise(crete)), crete
    assert all(a >= b for a, b in pairwise(cpbd)) and cpbd[0] > cpbd[1], cpbd
    assert all(a > b for a, b in pairwise(q_blur)), q_blur
    assert crete_blur(np.full((32, 32), 5.0)) == 1.0  # flat: nothing sharp


def test_blur_falls_back_to_crete_without_a_cpbd_block():
    small = sisblim_components(scene(60))  # under 64 px: CPBD cannot measure
    assert np.isnan(small["cpbd"])
    assert small["q_blur"] == pytest.approx(1 - small["crete_blur"])
    flat = sisblim_components(np.full((128, 128), 77.0))  # no Canny edge block either
    assert np.isnan(flat["cpbd"]) and flat["q_blur"] == pytest.approx(0.01)  # floor
    sharp = sisblim_components(scene())
    assert 0 < sharp["cpbd"] <= 1
    assert sharp["q_blur"] == pytest.approx(np.sqrt(sharp["cpbd"] * (1 - sharp["crete_blur"])))


# -- step 4: blockiness ----------------------------------------------------------------
def test_wsb_formula_and_grid_indexing():
    # Steps of 10 at every 8-px boundary (between pixels 7|8, 15|16, ...): blockiness only on the grid.
    steps = np.tile((np.arange(64) // 8) * 10.0, (64, 1))
    out = jpeg_blockiness(steps)
    # Horizontal B = 10; vertical differences are all 0; B is the mean of the two directions.
    assert out["blockiness"] == pytest.approx(5.0)
    assert out["blockiness_off_grid"] == pytest.approx(0.0)
    assert out["wsb_drop"] > 0
    # The published formula with the published constants (ICIP 2002).
    b, a, z = 4.0, 6.0, 0.3
    expected = -245.8909 + 261.9373 * b ** (-239.8886 / 1e4) * a ** (160.1664 / 1e4) * z ** (64.2859 / 1e4)
    assert wsb_score(b, a, z) == pytest.approx(expected, rel=1e-12)
    assert np.isfinite(wsb_score(0.0, 0.0, 0.0))  # floored features
    short = jpeg_blockiness(np.zeros((10, 12)))  # no 8-px boundary in either direction
    assert np.isnan(short["wsb_score"]) and short["wsb_drop"] == 0.0


def test_blockiness_rises_with_jpeg_compression():
    base = scene(seed=2)
    outs = [jpeg_blockiness(img) for img in (base, jpeg(base, 75), jpeg(base, 30), jpeg(base, 10), jpeg(base, 3))]
    drops = [o["wsb_drop"] for o in outs]
    assert all(a < b for a, b in pairwise(drops)), drops
    assert outs[-1]["blockiness"] > outs[0]["blockiness"]
    assert outs[-1]["blockiness"] > 1.5 * outs[-1]["blockiness_off_grid"]
    q_jpeg = [sisblim_components(img)["q_jpeg"] for img in (base, jpeg(base, 30), jpeg(base, 3))]
    assert q_jpeg[0] > q_jpeg[1] > q_jpeg[2], q_jpeg


# -- step 5: free energy ----------------------------------------------------------------
def test_free_energy_of_predictable_and_noisy_images():
    assert free_energy_bits(np.full((40, 40), 3.0)) == 0.0
    ramp = np.add.outer(np.arange(60.0), 0.5 * np.arange(80.0))
    assert free_energy_bits(ramp) < 0.1  # an AR(8) model predicts a plane
    base = smooth_field(96)
    energies = [free_energy_bits(noisy(base, s)) for s in (0, 2, 8, 30)]
    assert all(a < b for a, b in pairwise(energies)), energies
    assert free_energy_bits(np.zeros((2, 50))) == 0.0
    # The joint term: denoising removes the noise's free energy, so q_free_energy falls with noise.
    q = [sisblim_components(noisy(scene(seed=3), s))["q_free_energy"] for s in (0, 5, 15)]
    assert q[0] > q[1] > q[2], q
    assert sisblim_components(ramp)["q_free_energy"] == 1.0  # nothing to denoise


# -- step 6: the score ---------------------------------------------------------------------
@pytest.mark.parametrize("seed", [0, 4])
def test_score_drops_for_blur_noise_and_jpeg(seed):
    base = scene(seed=seed)
    clean = sisblim_approx(base)
    assert 0 < clean <= 1
    for distorted in (blurred(base, 1.5), blurred(base, 3.0), noisy(base, 8), noisy(base, 25), jpeg(base, 20),
                      jpeg(base, 5), jpeg(blurred(base, 1.0), 20)):
        assert sisblim_approx(distorted) < clean
    assert sisblim_approx(blurred(base, 3.0)) < sisblim_approx(blurred(base, 1.0))
    assert sisblim_approx(noisy(base, 25)) < sisblim_approx(noisy(base, 5))
    assert sisblim_approx(jpeg(base, 5)) < sisblim_approx(jpeg(base, 40))


def test_score_on_the_flat_shape_images_of_the_test_helpers():
    rgb = blurred_shapes(128, 0, seed=3)
    clean = sisblim_approx(rgb)
    assert sisblim_approx(blurred_shapes(128, 4, seed=3)) < clean
    assert sisblim_approx(noisy(rgb.astype(float), 10).astype(np.uint8)) < clean
    gray = rgb.astype(float).mean(axis=2)
    assert sisblim_approx(jpeg(np.round(gray), 10)) < sisblim_approx(np.round(gray))


def test_components_combine_as_documented():
    comps = sisblim_components(noisy(jpeg(scene(seed=5), 30), 6))
    product = comps["q_noise"] * comps["q_blur"] * comps["q_jpeg"] * comps["q_free_energy"]
    assert comps["score"] == pytest.approx(product**0.25)
    assert comps["q_noise"] == pytest.approx(1 / (1 + (comps["sigma"] / 10) ** 2))
    assert comps["q_free_energy"] == pytest.approx(2.0 ** -(comps["free_energy"] - comps["free_energy_denoised"]))
    assert comps["q_jpeg"] == pytest.approx(min(1.0, 1 - comps["wsb_drop"] / 9))
    looser = sisblim_components(noisy(jpeg(scene(seed=5), 30), 6), noise_half_sigma=40.0)
    assert looser["q_noise"] > comps["q_noise"] and looser["score"] > comps["score"]


@pytest.mark.parametrize(
    "image",
    [
        np.full((128, 128, 3), 120, dtype=np.uint8),  # flat
        np.zeros((64, 64, 3), dtype=np.uint8),  # black
        blurred_shapes(40, 0, seed=1),  # tiny
        blurred_shapes(200, 1, seed=2)[:50, :130],  # non-square, ragged 8-px grid
        blurred_shapes(200, 1, seed=2)[:130, :50],
        np.full((1, 1, 3), 9, dtype=np.uint8),
        np.arange(5 * 300 * 3, dtype=np.uint8).reshape(5, 300, 3),  # a strip
    ],
    ids=["flat", "black", "tiny", "wide", "tall", "1px", "strip"],
)
def test_degenerate_images_give_finite_scores(image):
    comps = sisblim_components(image)
    for key in ("sigma", "crete_blur", "wsb_drop", "free_energy", "q_noise", "q_blur", "q_jpeg",
                "q_free_energy", "score"):
        assert np.isfinite(comps[key]), key
    assert 0 < comps["score"] <= 1


def test_input_forms_and_determinism():
    rgb = blurred_shapes(96, 1, seed=8)
    first = sisblim_components(rgb)
    np.testing.assert_equal(sisblim_components(rgb.copy()), first)  # bit-identical (NaN == NaN here)
    gray_rgb = np.repeat(rgb[..., :1], 3, axis=2)
    assert sisblim_approx(gray_rgb) == sisblim_approx(rgb[..., 0])  # rgb2gray keeps gray values
    with pytest.raises(ValueError):
        sisblim_components(np.zeros((8, 8, 4)))
    with pytest.raises(ValueError):
        sisblim_components(np.zeros((0, 8)))


# -- the method ----------------------------------------------------------------------------
def make_item(path: Path, target: float, group: str) -> Item:
    return Item(id=path.name, image=path, prompt="", targets={"quality": float(target)}, group=group)


def test_method_through_registry_caches_scores(tmp_path, monkeypatch):
    base = scene(128, seed=6).astype(np.uint8)
    images = [base, blurred(base, 2.0).astype(np.uint8), noisy(base, 20).astype(np.uint8),
              np.repeat(blurred_shapes(96, 0, seed=6)[..., :1], 3, axis=2)]
    items = [make_item(write_image(tmp_path / f"im{k}.png", img), 0.0, str(k)) for k, img in enumerate(images)]
    spec, _ = get_spec("sisblim")
    assert spec.name == "sisblim.approx" and spec.kind == "zero-shot" and not spec.lower_is_better
    context = MethodContext(cache_dir=tmp_path / "cache")
    method = create_method("sisblim", context=context)
    assert isinstance(method, SISBLIMApprox)
    method.fit(items, [], ("quality",))
    scores = method.predict(items)
    assert scores.shape == (4,) and scores.dtype == np.float64 and np.all(np.isfinite(scores))
    assert scores[0] > scores[1] and scores[0] > scores[2]
    assert scores[0] == pytest.approx(sisblim_approx(base))  # gray PNG: rgb2gray keeps the values
    assert len(list((tmp_path / "cache" / "features").glob("sisblim-approx-*.npz"))) == 1

    def fail(*_args, **_kwargs):
        raise AssertionError("score recomputed although cached")

    monkeypatch.setattr(sis, "sisblim_approx", fail)
    again = create_method("sisblim.approx", context=context).predict(items)  # new object, same cache
    np.testing.assert_array_equal(again, scores)
    with pytest.raises(AssertionError, match="recomputed"):  # other params: another namespace
        create_method("sisblim.approx", {"noise_half_sigma": 20.0}, context).predict(items[:1])
    monkeypatch.undo()
    other = create_method("sisblim.approx", {"noise_half_sigma": 20.0}, context).predict(items)
    assert other[2] > scores[2]  # the noisy image is forgiven more
    assert len(list((tmp_path / "cache" / "features").glob("sisblim-approx-*.npz"))) == 2
    assert create_method("sisblim").predict([]).shape == (0,)
