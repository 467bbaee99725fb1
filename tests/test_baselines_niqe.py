"""NIQE: pyiqa parity with a generated parameter file, the pristine fit, and the method's errors."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from agiqa_bench.errors import ConfigError, DataError, MethodUnavailable
from agiqa_bench.method import MethodContext
from agiqa_bench.records import Item
from agiqa_bench.registry import create_method
from agiqa_test_support import write_image
from baselines.niqe import SYNTH_PARAMS, block_features, fit_pristine, load_pristine, niqe_score, params_available, save_pristine


def scene(size: int, seed: int) -> np.ndarray:
    """A sharp, textured RGB scene: smooth gradients, edges and fine texture."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    base = 90 + 60 * np.sin(6 * xx + rng.uniform(0, 3)) * np.cos(5 * yy)
    for _ in range(12):
        x0, y0, w, h = rng.integers(0, size - 10, 4) // [1, 1, 3, 3]
        base[y0:y0 + h + 6, x0:x0 + w + 6] += rng.uniform(-70, 70)
    base += ndimage.gaussian_filter(rng.normal(0, 12, base.shape), 0.7)
    rgb = np.stack([base, base * 0.9 + 10, base * 0.8 + 25], axis=-1)
    return rgb.clip(0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def pristine_file(tmp_path_factory):
    """A pristine model fitted on clean scenes, 32x32 blocks."""
    mu, cov, kept = fit_pristine((scene(128, s) for s in range(40)), block_size=32)
    assert kept > 36
    return save_pristine(tmp_path_factory.mktemp("niqe") / "pristine.mat", mu, cov, 32)


def test_scores_equal_pyiqa_niqe_with_the_same_parameter_file(pristine_file, tmp_path):
    """Default path (96x96 blocks): identical to pyiqa's own NIQE module fed the same file."""
    import torch

    pytest.importorskip("pyiqa", reason="parity with pyiqa needs the dev extra (pip install -e .[dev])")
    from pyiqa.archs.niqe_arch import NIQE as PyiqaNIQE

    mu, cov, _ = load_pristine(pristine_file)
    unblocked = tmp_path / "no-block.mat"
    save_pristine(unblocked, mu, cov, 96)
    reference = PyiqaNIQE(pretrained_model_path=str(unblocked))
    for seed, shape in ((0, (200, 230)), (1, (288, 197))):
        rgb = scene(max(shape), seed)[: shape[0], : shape[1]]
        x = torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 255.0
        ours = niqe_score(rgb, mu, cov, 96)
        assert ours == pytest.approx(float(reference(x)), rel=1e-12, abs=1e-12)


def test_distortions_raise_the_score(pristine_file):
    mu, cov, _ = load_pristine(pristine_file)
    clean = scene(160, 42)
    blurred = ndimage.gaussian_filter(clean.astype(float), (2.5, 2.5, 0)).astype(np.uint8)
    noisy = (clean + np.random.default_rng(0).normal(0, 25, clean.shape)).clip(0, 255).astype(np.uint8)
    base = niqe_score(clean, mu, cov, 32)
    assert niqe_score(blurred, mu, cov, 32) > base + 1
    assert niqe_score(noisy, mu, cov, 32) > base + 1


def test_pristine_fit_keeps_only_sharp_blocks():
    """estimatemodelparam.m's selection: a flat half contributes no block."""
    half = scene(128, 3)
    half[:, :64] = 120
    features, sharpness = block_features(half, 32)
    assert features.shape == (16, 36) and sharpness.shape == (16,)
    flat = sharpness.reshape(4, 4)[:, :2]
    assert np.all(flat < 0.75 * sharpness.max())
    _, _, kept = fit_pristine([half, scene(128, 4)], block_size=32)
    assert kept <= 16 + 8


def test_method_uses_the_parameter_file_and_caches(pristine_file, tmp_path):
    items = []
    for i, sigma in enumerate((0.0, 1.0, 2.0, 3.0)):
        img = ndimage.gaussian_filter(scene(128, 9).astype(float), (sigma, sigma, 0)).astype(np.uint8)
        items.append(Item(f"i{i}", write_image(tmp_path / f"i{i}.png", img), "", {"quality": 4 - i}, f"g{i}"))
    context = MethodContext(cache_dir=tmp_path / "cache")
    method = create_method("niqe", {"params": str(pristine_file), "block_size": 32}, context)
    scores = method.predict(items)
    assert np.all(np.diff(scores) > 0), scores  # more blur, higher (worse) NIQE
    assert list((tmp_path / "cache" / "features").glob("niqe-*.npz"))
    again = create_method("niqe", {"params": str(pristine_file), "block_size": 32}, context).predict(items)
    np.testing.assert_array_equal(scores, again)


def test_basicsr_npz_layout_is_accepted(pristine_file, tmp_path):
    mu, cov, _ = load_pristine(pristine_file)
    npz = tmp_path / "niqe_pris_params.npz"
    np.savez(npz, mu_pris_param=mu[None], cov_pris_param=cov)
    mu2, cov2, block = load_pristine(npz)
    np.testing.assert_array_equal(mu2, mu)
    np.testing.assert_array_equal(cov2, cov)
    assert block is None


def test_errors_name_the_file_and_the_fix(pristine_file, tmp_path):
    img = write_image(tmp_path / "small.png", scene(64, 1)[:20])
    item = Item("small", img, "", {"quality": 1.0}, "g")
    missing = tmp_path / "nope.mat"
    with pytest.raises(MethodUnavailable, match=r"nope\.mat.*--set niqe\.params=PATH"):
        create_method("niqe", {"params": str(missing)}).predict([item])
    assert not params_available({"params": str(missing)})
    assert params_available({"params": "agiqa-synth"})
    with pytest.raises(ConfigError, match="fitted with 32x32 blocks.*block_size=32"):
        create_method("niqe", {"params": str(pristine_file), "block_size": 96}).predict([item])
    with pytest.raises(DataError, match=r"small\.png is 64x20 px"):
        create_method("niqe", {"params": str(pristine_file), "block_size": 32}).predict([item])
    bad = tmp_path / "bad.mat"
    save_pristine(bad, np.zeros(10), np.eye(10), 32)
    with pytest.raises(MethodUnavailable, match="expected \\(36,\\)"):
        create_method("niqe", {"params": str(bad), "block_size": 32}).predict([item])


def test_synthetic_defaults_use_the_shipped_model():
    method = create_method("niqe", dataset="synthetic")
    assert method.config["params"] == "agiqa-synth" and method.config["block_size"] == 32
    mu, cov, block = load_pristine(SYNTH_PARAMS)
    assert block == 32 and np.all(np.linalg.eigvalsh(cov) > -1e-9)


def test_pretrain_niqe_cli(tmp_path):
    from typer.testing import CliRunner

    from agiqa_bench.cli import app

    for s in range(4):
        write_image(tmp_path / "clean" / f"{s}.png", scene(96, s))
    out = tmp_path / "p.mat"
    result = CliRunner().invoke(app, ["pretrain", "niqe", "--images", str(tmp_path / "clean"), "--block-size", "32",
                                      "--out", str(out)])
    assert result.exit_code == 0, result.output
    mu, cov, block = load_pristine(out)
    assert mu.shape == (36,) and block == 32
    result = CliRunner().invoke(app, ["pretrain", "niqe", "--out", str(out)])
    assert result.exit_code != 0 and "exactly one of --images DIR or --synthetic N" in result.output
