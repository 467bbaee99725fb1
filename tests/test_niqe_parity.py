"""NIQE: our implementation of the MATLAB release (`baselines.niqe_features`) against pyiqa's port, piece by piece.

pyiqa is only the reference here (it is PolyForm Noncommercial; `baselines.niqe` must not import it).  Every
comparison asks for 1e-10 relative agreement (where we ran it, the numbers were equal to the last bit).
"""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import ndimage

pytest.importorskip("pyiqa", reason="parity with pyiqa needs the dev extra (pip install -e .[dev]): pyiqa is not "
                                    "installed")

from pyiqa.archs.func_util import (
    diff_round,
    estimate_aggd_param,
    normalize_img_with_gauss,
)
from pyiqa.archs.niqe_arch import compute_feature
from pyiqa.archs.niqe_arch import niqe as pyiqa_niqe
from pyiqa.matlab_utils import blockproc, fspecial, imfilter, imresize
from pyiqa.utils.color_util import to_y_channel

from agiqa_bench.errors import MethodUnavailable
from baselines import niqe_features as nf
from baselines.niqe import (
    SYNTH_PARAMS,
    block_features,
    fit_pristine,
    load_pristine,
    niqe_score,
    resolve_params_file,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # steadier on a busy machine; one test varies it

RTOL = 1e-10
ROOT = Path(__file__).resolve().parents[1]
#: (height, width): not multiples of the block, just above one block, odd and even, wide and tall, and grids of
#: a single row or column of blocks (pyiqa lays those out in memory differently, which shows in the last bit).
SHAPES_96 = ((200, 230), (97, 101), (96, 193), (289, 150), (300, 400))
SHAPES_32 = ((33, 45), (65, 97), (96, 96), (130, 71), (40, 130), (100, 33))


def scene(h: int, w: int, seed: int, black_patch: bool = False) -> np.ndarray:
    """A textured RGB scene (gradients, edges, fine noise); optionally a black corner that gives NaN features."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    base = 90 + 60 * np.sin(6 * xx + rng.uniform(0, 3)) * np.cos(5 * yy)
    for _ in range(10):
        y0, x0 = rng.integers(0, h - 4), rng.integers(0, w - 4)
        base[y0:y0 + rng.integers(3, h // 2), x0:x0 + rng.integers(3, w // 2)] += rng.uniform(-70, 70)
    base += ndimage.gaussian_filter(rng.normal(0, 12, base.shape), 0.7)
    rgb = np.stack([base, base * 0.9 + 10 + rng.normal(0, 4, base.shape), base * 0.8 + 25], axis=-1)
    rgb = rgb.clip(0, 255).astype(np.uint8)
    if black_patch:
        rgb[: h // 2 + 8, : w // 2 + 8] = 0
    return rgb


# -- pyiqa's side -----------------------------------------------------------------------------
def pyiqa_luma(rgb: np.ndarray, color_space: str) -> torch.Tensor:
    """(1, 1, H, W) float64: the Y input pyiqa's NIQE gets (as its calculate_niqe prepares it)."""
    x = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)[None].to(torch.float32) / 255.0
    return diff_round(to_y_channel(x, 255, color_space)).to(torch.float64)


def pyiqa_score(y: torch.Tensor, mu: np.ndarray, cov: np.ndarray, block: int) -> float:
    with torch.no_grad():
        return float(pyiqa_niqe(y, torch.from_numpy(mu)[None], torch.from_numpy(cov)[None], block, block).reshape(-1)[0])


def pyiqa_block_features(rgb: np.ndarray, block: int, color_space: str) -> tuple[np.ndarray, np.ndarray]:
    """The project's block features as they were computed with pyiqa's pieces (before the rewrite)."""
    img = pyiqa_luma(rgb, color_space)
    rows, cols = img.shape[-2] // block, img.shape[-1] // block
    img = img[..., : rows * block, : cols * block]
    with torch.no_grad():
        kernel = fspecial(7, 7.0 / 6, 1).to(img)
        mu = imfilter(img, kernel, padding="replicate")
        sigma = (imfilter(img**2, kernel, padding="replicate") - mu**2).abs().sqrt()
        sharpness = sigma[0, 0].reshape(rows, block, cols, block).sum(dim=(1, 3)).reshape(-1)
        first = blockproc(normalize_img_with_gauss(img, padding="replicate"), [block, block], fun=compute_feature)
        half = imresize(img / 255.0, scale=0.5, antialiasing=True) * 255.0
        second = blockproc(normalize_img_with_gauss(half, padding="replicate"), [block // 2, block // 2],
                           fun=compute_feature)
    return torch.cat((first, second), -1)[0].numpy(), sharpness.numpy()


def close(ours, theirs) -> None:
    ours = ours.numpy() if torch.is_tensor(ours) else np.asarray(ours)
    theirs = theirs.numpy() if torch.is_tensor(theirs) else np.asarray(theirs)
    assert ours.shape == theirs.shape
    np.testing.assert_allclose(ours, theirs, rtol=RTOL, atol=0, equal_nan=True)


# -- parameter files ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def parameter_sets() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The shipped agiqa-synth model, one fitted here on generated scenes, and the official file if cached."""
    sets = {"agiqa-synth": load_pristine(SYNTH_PARAMS)[:2]}
    mu, cov, _ = fit_pristine((scene(100, 130, s) for s in range(12)), block_size=32)
    sets["fitted"] = (mu, cov)
    try:
        sets["official"] = load_pristine(resolve_params_file("official", download=False))[:2]
    except MethodUnavailable:  # not downloaded (offline machines): the other two sets cover the arithmetic
        pass
    return sets


# -- pieces ------------------------------------------------------------------------------------
def test_no_pyiqa_import_in_our_niqe():
    for name in ("niqe.py", "niqe_features.py", "nss.py"):
        tree = ast.parse((ROOT / "baselines" / name).read_text())
        imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                    for alias in node.names}
        imported |= {node.module.split(".")[0] for node in ast.walk(tree)
                     if isinstance(node, ast.ImportFrom) and node.module and node.level == 0}
        assert "pyiqa" not in imported, name


@pytest.mark.parametrize("color_space", ["yiq", "ycbcr"])
def test_luma_equals_pyiqa_including_the_colours_on_a_rounding_tie(color_space):
    """Random colours, plus every colour whose exact luma ends in .5 (float32 round-off decides those)."""
    level = np.arange(256, dtype=np.int64)
    rg = (level[:, None] << 16 | level[None, :] << 8).ravel()  # every (R, G), B = 0
    if color_space == "yiq":
        exact = ((299 * level[:, None] + 587 * level[None, :]).ravel()[:, None] + 114 * level[None, :]) % 1000 == 500
    else:
        exact = ((65481 * level[:, None] + 128553 * level[None, :]).ravel()[:, None] + 24966 * level[None, :]) % 255000 == 127500
    ties = (rg[:, None] | level[None, :])[exact]
    assert len(ties) > 50
    picked = np.concatenate([ties, np.random.default_rng(0).integers(0, 2**24, 2**17)])
    picked = np.pad(picked, (0, -len(picked) % 512))
    rgb = np.stack([picked >> 16, (picked >> 8) & 255, picked & 255], axis=-1).astype(np.uint8).reshape(-1, 512, 3)
    np.testing.assert_array_equal(nf.luma_255(rgb, color_space), pyiqa_luma(rgb, color_space)[0, 0].numpy())


def test_window_mscn_and_half_resize_equal_pyiqa():
    np.testing.assert_array_equal(nf.gaussian_window().numpy(), fspecial(7, 7.0 / 6, 1)[0, 0].double().numpy())
    for h, w in ((33, 45), (96, 96), (97, 101), (200, 230), (257, 130)):
        y = pyiqa_luma(scene(h, w, h + w), "yiq")
        close(nf.mscn(y[0, 0]), normalize_img_with_gauss(y, padding="replicate")[0, 0])
        ours = nf.imresize_half(y[0, 0])
        assert ours.shape == (-(-h // 2), -(-w // 2))
        close(ours, (imresize(y / 255.0, scale=0.5, antialiasing=True) * 255.0)[0, 0])


def test_aggd_fit_equals_pyiqa_also_on_degenerate_blocks():
    rng = np.random.default_rng(1)
    rows = rng.normal(0, 1, (40, 1024)) * rng.uniform(0.1, 3, (40, 1)) + rng.uniform(-0.5, 0.5, (40, 1))
    rows[0] = np.abs(rows[0])  # no negative sample: NaN left scale
    rows[1] = -np.abs(rows[1])  # no positive sample
    rows[2] = 0.0  # all zero: NaN everywhere
    rows[3] = rng.laplace(0, 1, 1024) ** 3  # heavy tails: a small shape
    samples = torch.from_numpy(rows)
    theirs = estimate_aggd_param(samples.reshape(40, 1, 32, 32))
    for ours, ref in zip(nf.aggd_fit(samples), theirs):
        close(ours, ref.reshape(-1))


@pytest.mark.parametrize("block", [32, 96])
@pytest.mark.parametrize("rows, cols", [(2, 3), (1, 3), (3, 1), (1, 1)])
def test_block_feature_table_equals_pyiqa_compute_feature(block, rows, cols):
    y = pyiqa_luma(scene(rows * block + 7, cols * block + 5, block), "yiq")[..., : rows * block, : cols * block]
    coeffs = normalize_img_with_gauss(y, padding="replicate")
    theirs = blockproc(coeffs, [block, block], fun=compute_feature)[0]
    close(nf.block_feature_table(nf.split_blocks(coeffs[0, 0], block, rows, cols), block), theirs)


# -- scores ------------------------------------------------------------------------------------
@pytest.mark.parametrize("color_space", ["yiq", "ycbcr"])
@pytest.mark.parametrize("block, shapes", [(96, SHAPES_96), (32, SHAPES_32)])
def test_scores_equal_pyiqa_niqe(parameter_sets, block, shapes, color_space):
    """On the same (mu, cov) and the same Y input; then from the RGB image (our luma)."""
    for i, (h, w) in enumerate(shapes):
        rgb = scene(h, w, 10 * i + block, black_patch=(h, w) in ((130, 71), (300, 400)))  # NaN features too
        y = pyiqa_luma(rgb, color_space)
        for name, (mu, cov) in parameter_sets.items():
            theirs = pyiqa_score(y, mu, cov, block)
            assert np.isfinite(theirs), (name, h, w)
            close(nf.niqe(y[0, 0].numpy(), mu, cov, block), theirs)
            close(niqe_score(rgb, mu, cov, block, color_space), theirs)


def test_scores_do_not_depend_on_the_thread_count(parameter_sets):
    mu, cov = parameter_sets["agiqa-synth"]
    rgb = scene(161, 200, 5)
    before = torch.get_num_threads()
    try:
        scores = []
        for threads in (1, 2, 3):
            torch.set_num_threads(threads)
            scores.append((niqe_score(rgb, mu, cov, 32), pyiqa_score(pyiqa_luma(rgb, "yiq"), mu, cov, 32)))
    finally:
        torch.set_num_threads(before)
    for ours, theirs in scores:
        close(ours, theirs)


def test_default_run_setting_synthetic_images_with_the_shipped_model(parameter_sets):
    """The project's default run: `agiqa-synth` parameters, 32x32 blocks, SynthAGIQA's 96 px images."""
    from agiqa_bench.synthetic.dataset import default_config, plan_dataset, render_plan

    config = default_config()
    mu, cov = parameter_sets["agiqa-synth"]
    for plan in plan_dataset(config)[:5]:
        rgb = render_plan(plan, config)
        close(niqe_score(rgb, mu, cov, 32), pyiqa_score(pyiqa_luma(rgb, "yiq"), mu, cov, 32))


# -- pristine fit ------------------------------------------------------------------------------
@pytest.mark.parametrize("block, shape, color_space", [(32, (130, 71), "yiq"), (32, (96, 96), "ycbcr"),
                                                        (32, (40, 130), "yiq"), (96, (289, 200), "yiq")])
def test_block_features_equal_pyiqa_pieces(block, shape, color_space):
    rgb = scene(*shape, seed=block, black_patch=block == 32)
    features, sharpness = block_features(rgb, block, color_space)
    ref_features, ref_sharpness = pyiqa_block_features(rgb, block, color_space)
    close(features, ref_features)
    close(sharpness, ref_sharpness)


def test_pristine_fit_equals_the_fit_on_pyiqa_features():
    images = [scene(96 + 13 * s, 120 - 7 * s, 50 + s, black_patch=s == 2) for s in range(6)]
    mu, cov, kept = fit_pristine(images, block_size=32)
    table = []
    for rgb in images:
        features, sharp = pyiqa_block_features(rgb, 32, "yiq")
        rows = features[sharp > 0.75 * sharp.max()]
        table.append(rows[np.isfinite(rows).all(axis=1)])
    table = np.concatenate(table)
    assert kept == len(table)
    close(mu, table.mean(axis=0))
    close(cov, np.cov(table, rowvar=False))
