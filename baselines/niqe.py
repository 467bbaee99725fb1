"""NIQE: the "completely blind" natural image quality evaluator (lower = better).

Reference: A. Mittal, R. Soundararajan, A. C. Bovik, "Making a 'completely
blind' image quality analyzer", IEEE SPL 2013; MATLAB release
``niqe_release.zip``.  The score is computed by our implementation of the
MATLAB release (`baselines.niqe_features`), which follows pyiqa's port of it
(``pyiqa.archs.niqe_arch``, through BasicSR) where the two differ, and is
parity-tested against pyiqa (``tests/test_niqe_parity.py``: equal to the last
bit on this project's test images; pyiqa itself is not imported here):

1. Y channel of the image on the 0-255 scale (YIQ luma by default, BT.601
   YCbCr luma with ``color_space=ycbcr``; rounded), cropped to a whole number
   of blocks.
2. Two scales (the second a MATLAB-style bicubic antialiased 0.5x resize); per
   scale, MSCN coefficients (7x7 Gaussian window, sigma 7/6, replicated
   border, C = 1) and per block (96x96, then 48x48) 18 features: an AGGD fit
   of the coefficients (shape, mean of the left and right scales) and, for
   the four neighbour products, AGGD fits (shape, mean, left and right
   scale).  36 features per block.
3. A multivariate Gaussian (mean, covariance) over the image's blocks; the
   score is ``sqrt((mu1 - mu2)' pinv((S1 + S2) / 2) (mu1 - mu2))`` against the
   pristine model (mu1, S1).

The block size can be changed (with parameters fitted at that size); with the
default block size and parameters the scores equal
`pyiqa.create_metric('niqe')`'s (tested with a generated parameter file).

Pristine parameters (``params``):

- ``official`` (default): ``niqe_modelparameters.mat`` from the MATLAB
  release (fitted on 125 pristine photographs), downloaded on first use from
  pyiqa's weights hub (cached in ``~/.cache/torch/hub/pyiqa``, where pyiqa
  keeps it too).
- a local ``.mat`` with ``mu_prisparam`` (1x36) and ``cov_prisparam``
  (36x36), as the MATLAB release and pyiqa store them, or a ``.npz`` with
  ``mu_pris_param`` / ``cov_pris_param`` as BasicSR ships them
  (``basicsr/metrics/niqe_pris_params.npz``).
- ``agiqa-synth``: the project's own pristine model for the built-in
  synthetic dataset (``baselines/weights/niqe-agiqa-synth.mat``): fitted by
  `fit_pristine` on clean renders of SynthAGIQA's world with 32x32 blocks
  (the set's images are 96 px: a 96x96 block would leave one block per image
  and no covariance).  Command in ``baselines/weights/README.md``.

`fit_pristine` follows the MATLAB ``estimatemodelparam.m``: per image, the
36 block features and the block sharpness (the sum of the local standard
deviation over the block at the first scale); only blocks whose sharpness
exceeds ``sharpness`` (0.75) times the image's sharpest block are kept; the
model is the mean and covariance of the kept blocks of all images.  (The
features are listed column by column and the sharpness row by row, as the
shipped file was fitted; see `baselines.niqe_features.block_sharpness`.)  The
parameters only make sense with the block size they were fitted with: the
file records it (``block_size``) and `NIQE` refuses a mismatch.

Images smaller than one block in either side cannot be scored: `NIQE` raises
an error naming the image and the ``block_size`` option.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Iterable, Sequence

import numpy as np

from agiqa_bench.cache import FeatureCache, namespace_for
from agiqa_bench.errors import ConfigError, DataError, MethodUnavailable
from agiqa_bench.weights import Source, available, identity, resolve
from agiqa_bench.images import load_rgb
from agiqa_bench.method import Method, MethodSpec, Weights
from agiqa_bench.params import param
from agiqa_bench.records import Item

SPEC = MethodSpec(
    name="niqe",
    default_run=True,
    family="handcrafted",
    factory="baselines.niqe:NIQE",
    kind="zero-shot",
    summary="NIQE: distance of the image's natural-scene-statistics MVG to a pristine MVG (our implementation of the "
            "MATLAB release, parity-tested against pyiqa).",
    lower_is_better=True,
    weights=(Weights("NIQE pristine MVG parameters (official, niqe_modelparameters.mat)", "params",
                     "downloaded on first use (from pyiqa's weights hub); offline, pass a .mat/.npz with --set niqe.params=PATH "
                     "or fit one with `agiqa-bench pretrain niqe`",
                     check="baselines.niqe:params_available"),),
    reference="Mittal, Soundararajan, Bovik, IEEE SPL 2013; our implementation of the MATLAB release "
              "(niqe_release), parity-tested against pyiqa's niqe_arch",
    dataset_defaults={"synthetic": {"params": "agiqa-synth", "block_size": 32}},
    smoke={"params": "agiqa-synth", "block_size": 32},
)

NIQE_VERSION = "1"
OFFICIAL = "official"
SYNTH_TAG = "agiqa-synth"
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
SYNTH_PARAMS = WEIGHTS_DIR / "niqe-agiqa-synth.mat"
DEFAULT_BLOCK = 96
OFFICIAL_FILE = "niqe_modelparameters.mat"


# -- pristine parameters -------------------------------------------------------------
#: The `params` tags and their files (resolved by `agiqa_bench.weights`, like every weights file).
PARAM_SOURCES = {
    OFFICIAL: Source("NIQE's official pristine parameters",
                     url="https://huggingface.co/chaofengc/IQA-PyTorch-Weights/resolve/main/" + OFFICIAL_FILE,
                     cache_folder="pyiqa"),  # where pyiqa caches it too
    SYNTH_TAG: Source("NIQE pristine parameters fitted on SynthAGIQA", shipped=SYNTH_PARAMS),
}
PARAMS_WHAT = ("the pristine parameter file (a .mat with mu_prisparam/cov_prisparam, BasicSR's niqe_pris_params.npz, "
               "or one fitted by `agiqa-bench pretrain niqe --images DIR --out FILE.mat`)")


def resolve_params_file(value: str, *, download: bool = True) -> Path:
    """Path of the pristine parameter file for a ``params`` value (downloads `official` if needed)."""
    return resolve(str(value).strip() or OFFICIAL, method="niqe", param="params", sources=PARAM_SOURCES,
                   what=PARAMS_WHAT, download=download)


def load_pristine(path: str | Path) -> tuple[np.ndarray, np.ndarray, int | None]:
    """(mu (36,), cov (36, 36), block size or None) from a .mat or .npz parameter file."""
    path = Path(path)
    try:
        if path.suffix.lower() == ".npz":
            with np.load(path, allow_pickle=False) as data:
                table = {k: data[k] for k in data.files}
        else:
            import scipy.io

            table = scipy.io.loadmat(path)
    except Exception as exc:
        raise MethodUnavailable(f"niqe: cannot read the pristine parameter file {path}: {exc}") from None
    mu = table.get("mu_prisparam", table.get("mu_pris_param"))
    cov = table.get("cov_prisparam", table.get("cov_pris_param"))
    if mu is None or cov is None:
        raise MethodUnavailable(
            f"niqe: {path} has no mu_prisparam/cov_prisparam (or mu_pris_param/cov_pris_param); keys: "
            f"{', '.join(k for k in table if not k.startswith('__'))}"
        )
    mu, cov = np.ravel(np.asarray(mu, dtype=np.float64)), np.asarray(cov, dtype=np.float64)
    if mu.shape != (36,) or cov.shape != (36, 36):
        raise MethodUnavailable(f"niqe: {path} holds a mean of shape {mu.shape} and a covariance of shape {cov.shape}; expected (36,) and (36, 36)")
    block = table.get("block_size")
    return mu, cov, (int(np.ravel(block)[0]) if block is not None else None)


def params_available(params: dict[str, Any]) -> bool:
    """For `agiqa-bench methods`: is the parameter file there without downloading?"""
    return available(str(params.get("params", OFFICIAL)).strip() or OFFICIAL, sources=PARAM_SOURCES)


# -- features ----------------------------------------------------------------------
def niqe_score(rgb: np.ndarray, mu: np.ndarray, cov: np.ndarray, block_size: int = DEFAULT_BLOCK,
               color_space: str = "yiq") -> float:
    """NIQE of an RGB uint8 image against the pristine (mu, cov) (computequality.m)."""
    from baselines.niqe_features import luma_255, niqe

    return niqe(luma_255(rgb, color_space), mu, cov, block_size)


def block_features(rgb: np.ndarray, block_size: int = DEFAULT_BLOCK, color_space: str = "yiq") -> tuple[np.ndarray, np.ndarray]:
    """(features (n_blocks, 36), sharpness (n_blocks,)) of an image, as estimatemodelparam.m computes them.

    The features are listed column by column, the sharpness row by row (see
    `baselines.niqe_features.block_sharpness`).
    """
    import torch

    from baselines.niqe_features import block_sharpness, luma_255, multiscale_features

    with torch.no_grad():
        features, img = multiscale_features(luma_255(rgb, color_space), block_size)
        sharpness = block_sharpness(img, block_size)
    return features.numpy().astype(np.float64), sharpness.numpy().astype(np.float64)


def fit_pristine(images: Iterable[np.ndarray], block_size: int = DEFAULT_BLOCK, sharpness: float = 0.75,
                 color_space: str = "yiq") -> tuple[np.ndarray, np.ndarray, int]:
    """Pristine MVG (mu, cov, number of blocks kept) from clean RGB uint8 images."""
    kept = []
    for rgb in images:
        if min(rgb.shape[:2]) < block_size:
            continue
        features, sharp = block_features(rgb, block_size, color_space)
        keep = sharp > sharpness * sharp.max() if sharp.max() > 0 else np.zeros(len(sharp), dtype=bool)
        rows = features[keep]
        kept.append(rows[np.isfinite(rows).all(axis=1)])
    table = np.concatenate(kept) if kept else np.zeros((0, 36))
    if len(table) < 2:
        raise DataError(f"niqe: only {len(table)} usable {block_size}x{block_size} blocks; give more (or larger) clean images")
    return table.mean(axis=0), np.cov(table, rowvar=False), len(table)


def save_pristine(path: str | Path, mu: np.ndarray, cov: np.ndarray, block_size: int, **info: Any) -> Path:
    """Write a .mat in the MATLAB/pyiqa layout (plus the block size it was fitted with)."""
    import scipy.io

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    scipy.io.savemat(path, {"mu_prisparam": mu[None, :], "cov_prisparam": cov, "block_size": np.array([[block_size]]),
                            **{k: str(v) for k, v in info.items()}})
    return path


# -- the method --------------------------------------------------------------------
@dataclass(frozen=True)
class NIQEParams:
    """The pristine model NIQE compares against and how images are cut into blocks."""

    params: str = param(OFFICIAL, help='pristine parameters: "official" | "agiqa-synth" | path to .mat / .npz')
    block_size: int = param(DEFAULT_BLOCK, ge=8, help="side of the square blocks (as the pristine file was fitted)")
    color_space: str = param("yiq", choices=("yiq", "ycbcr"), help="luma: yiq (as pyiqa) or ycbcr (BT.601, as BasicSR)")


class NIQE(Method):
    """Zero-shot NIQE: one score per image (lower = better; the spec says so)."""

    per_image: ClassVar[bool] = True  # per-image values cached: computed once each in the map phase

    params: ClassVar[type] = NIQEParams

    def __init__(self, spec, config=None, context=None, *, name=None):
        super().__init__(spec, config, context, name=name)
        self._pristine: tuple[np.ndarray, np.ndarray] | None = None

    def weights_identity(self) -> dict[str, str]:
        """The pristine parameter file's identity (shipped, cached or local; empty while not downloaded)."""
        try:
            return {"params": identity(resolve_params_file(self.config["params"], download=False))}
        except MethodUnavailable:
            return {}

    def pristine(self) -> tuple[np.ndarray, np.ndarray]:
        if self._pristine is None:
            path = resolve_params_file(self.config["params"])
            mu, cov, fitted_block = load_pristine(path)
            block = int(self.config["block_size"])
            if fitted_block is not None and fitted_block != block:
                raise ConfigError(
                    f"niqe: {path} was fitted with {fitted_block}x{fitted_block} blocks but block_size is {block}; "
                    f"use --set niqe.block_size={fitted_block}"
                )
            self._pristine = (mu, cov)
        return self._pristine

    def predict(self, items: Sequence[Item]) -> np.ndarray:
        if not items:
            return np.zeros(0, dtype=np.float64)
        mu, cov = self.pristine()
        block = int(self.config["block_size"])
        root = self.context.cache_dir / "features" if self.context.cache_dir else None
        digest = {"version": NIQE_VERSION, "block": block, "color": self.config["color_space"],
                  "mu": np.round(mu, 10).tolist(), "cov": float(np.round(cov.sum(), 8))}

        def score(item: Item) -> np.ndarray:
            rgb = load_rgb(item.image)
            if min(rgb.shape[:2]) < block:
                raise DataError(
                    f"niqe: {item.image} is {rgb.shape[1]}x{rgb.shape[0]} px, smaller than one {block}x{block} block; "
                    "use larger images or a smaller --set niqe.block_size with parameters fitted at that size"
                )
            return np.array([niqe_score(rgb, mu, cov, block, self.config["color_space"])])

        return FeatureCache(root).get(namespace_for("niqe", digest), items, score)[:, 0].astype(np.float64)
