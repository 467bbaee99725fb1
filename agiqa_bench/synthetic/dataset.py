"""SynthAGIQA: a built-in synthetic AGIQA dataset with known ground truth.

The world it draws from (the prompt grammar, the simulated generators, the
true-score model, and why the dataset exists) is `agiqa_bench.synthetic.world`;
how an image is drawn is `agiqa_bench.synthetic.render`.  This module makes one
set: the config, the per-image draws (plans), the MOS labels, the files, and
the loader behind `load_dataset("synthetic")`.

Per-image draws
---------------
For each image, each quality defect k of generator g is present with
probability p_gk and then has severity clip(m_gk + 0.2 z, 0.05, 1) (z ~ N(0, 1),
rounded to 4 decimals), else severity 0; each alignment error j is present with
probability r_gj.  All draws are independent.

Labels
------
The true scores are `world.quality_true`, `world.alignment_true` and
`world.overall_true` of the plan's severities and indicators.
The MOS columns add independent Gaussian label noise (one draw per target and
image, sigma = ``label_noise``, default 0.15) and clip to [0, 5]::

    mos_quality = clip(quality_true   + N(0, label_noise^2), 0, 5)
    mos_align   = clip(alignment_true + N(0, label_noise^2), 0, 5)
    mos_overall = clip(overall_true   + N(0, label_noise^2), 0, 5)

The std columns are a rater-spread proxy: raters agree at the ends of the
scale and disagree in the middle.  With p = x_true / 5 and z ~ N(0, 1)::

    std_x = 0.25 + 0.45 * 4 p (1 - p) + label_noise * |z|

Quality and alignment are sampled independently within a generator, and the
generators' strengths are balanced, so the two targets are only weakly
correlated across the dataset.

Files (`write_synthetic`)
-------------------------
``data.csv`` in AGIQA-3k's layout (name, prompt, adj1, adj2, style,
mos_quality, std_quality, mos_align, std_align; adj1/adj2 are empty, style
holds the style word) plus mos_overall, generator, the q_* and a_* columns,
the requested spec (count, colour, shape, background) and the drawn spec
(drawn_count, drawn_colour, drawn_shape, drawn_style).  Images are
``images/{generator}_{idx:03d}.png``.  ``synth.json`` holds the config and
the format version; it is written last, and the folder appears under its final
name only when complete (built in a temporary sibling and renamed).

Determinism: every random draw comes from a numpy Generator seeded with
(config seed, prompt index, crc32(generator name), purpose), so image k never
depends on generation order and the same config gives byte-identical files.
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
import shutil
import tempfile
import zlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
from PIL import Image

from agiqa_bench.datasets._common import swap_in_folder
from agiqa_bench.errors import ConfigError, DataError
from agiqa_bench.records import Dataset
from agiqa_bench.synthetic.render import _to_uint8, apply_defects, render_clean
from agiqa_bench.synthetic.world import (
    ALIGNMENT_ERRORS,
    BUILTIN_GENERATORS,
    QUALITY_DEFECTS,
    SHAPES,
    GeneratorProfile,
    PromptSpec,
    alignment_true,
    builtin_generator,
    colours_on,
    overall_true,
    quality_true,
    sample_prompts,
)

#: Bump when the output for a given config changes (it is part of the cache key).
FORMAT_VERSION = 1

_NAME_RE = re.compile(r"^[A-Za-z0-9.\-]+(?:_[A-Za-z0-9.\-]+)*$")


# --------------------------------------------------------------------------- config


@dataclass(frozen=True)
class SynthConfig:
    """Everything that determines a SynthAGIQA dataset.

    `generators` accepts profiles or built-in names (names are resolved).
    """

    n_prompts: int = 60
    generators: tuple[GeneratorProfile, ...] = field(default=BUILTIN_GENERATORS)
    image_size: int = 96
    seed: int = 0
    label_noise: float = 0.15

    def __post_init__(self) -> None:
        gens = tuple(builtin_generator(g) if isinstance(g, str) else g for g in self.generators)
        object.__setattr__(self, "generators", gens)
        if self.n_prompts < 1:
            raise ValueError("n_prompts must be >= 1")
        if self.n_prompts > 999:
            raise ValueError("n_prompts must be <= 999 (file names use a 3-digit prompt index)")
        if self.image_size < 32:
            raise ValueError("image_size must be >= 32 pixels")
        if self.label_noise < 0:
            raise ValueError("label_noise must be >= 0")
        if not gens:
            raise ValueError("at least one generator is needed")
        names = [g.name for g in gens]
        if len(set(names)) != len(names):
            raise ValueError(f"generator names must be unique: {names}")
        for name in names:
            if not _NAME_RE.match(name):
                raise ValueError(f"generator name {name!r} must be letters, digits, '.', '-' or single '_' separators")

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def key(self) -> str:
        """Short hash of the config and the format version (the cache folder name)."""
        payload = json.dumps({"format_version": FORMAT_VERSION, "config": self.to_dict()}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:12]


def default_config() -> SynthConfig:
    return SynthConfig()


# --------------------------------------------------------------------------- plans


@dataclass(frozen=True)
class ImagePlan:
    """One image before rendering: what was asked, what is drawn, and what went wrong."""

    name: str
    prompt_index: int
    generator: str
    requested: PromptSpec
    drawn: PromptSpec
    severities: dict[str, float]
    errors: dict[str, int]

    @property
    def group(self) -> int:
        return self.prompt_index


def _rng(config_seed: int, prompt_index: int, generator: str, purpose: int) -> np.random.Generator:
    """Per-image, per-purpose random stream; independent of generation order."""
    return np.random.default_rng([config_seed, prompt_index, zlib.crc32(generator.encode()), purpose])


_PURPOSE_PLAN, _PURPOSE_LAYOUT, _PURPOSE_DEFECTS, _PURPOSE_LABELS = 1, 2, 3, 4


def _sample_severities(profile: GeneratorProfile, rng: np.random.Generator) -> dict[str, float]:
    severities = {}
    for name, (prob, mean) in zip(QUALITY_DEFECTS, profile.defects):
        present = rng.random() < prob
        level = float(np.clip(mean + 0.2 * rng.standard_normal(), 0.05, 1.0))
        severities[name] = round(level, 4) if present else 0.0
    return severities


def _other(options: Sequence, exclude, rng: np.random.Generator):
    choices = [o for o in options if o != exclude]
    return choices[rng.integers(len(choices))]


def _sample_errors(
    profile: GeneratorProfile, requested: PromptSpec, rng: np.random.Generator
) -> tuple[dict[str, int], PromptSpec]:
    """Draw the alignment errors and the spec the generator actually renders."""
    hits = {name: int(rng.random() < prob) for name, prob in zip(ALIGNMENT_ERRORS, profile.errors)}
    if not requested.style:
        hits["style"] = 0
    if hits["missing"]:
        hits = {name: int(name == "missing") for name in ALIGNMENT_ERRORS}
        return hits, replace(requested, count=0)
    drawn = requested
    if hits["colour"]:
        drawn = replace(drawn, colour=_other(colours_on(requested.background), requested.colour, rng))
    if hits["shape"]:
        drawn = replace(drawn, shape=_other(SHAPES, requested.shape, rng))
    if hits["count"]:
        drawn = replace(drawn, count=int(_other((1, 2, 3, 4), requested.count, rng)))
    if hits["style"]:
        drawn = replace(drawn, style="")
    return hits, drawn


def image_name(generator: str, prompt_index: int) -> str:
    return f"{generator}_{prompt_index:03d}.png"


def parse_name(name: str) -> tuple[str, int]:
    """(generator, prompt index) from an AGIQA-3k-style file name."""
    stem = name.rsplit(".", 1)[0]
    generator, index = stem.rsplit("_", 1)
    return generator, int(index)


def plan_dataset(config: SynthConfig) -> list[ImagePlan]:
    """All image plans, prompt-major then generator order (the CSV row order)."""
    prompts = sample_prompts(config.n_prompts, config.seed)
    plans = []
    for idx, requested in enumerate(prompts):
        for profile in config.generators:
            rng = _rng(config.seed, idx, profile.name, _PURPOSE_PLAN)
            severities = _sample_severities(profile, rng)
            errors, drawn = _sample_errors(profile, requested, rng)
            plans.append(ImagePlan(image_name(profile.name, idx), idx, profile.name, requested, drawn, severities, errors))
    return plans


# --------------------------------------------------------------------------- rendering


def render_plan(plan: ImagePlan, config: SynthConfig, *, defects: bool = True) -> np.ndarray:
    """The image of `plan` as uint8 RGB; `defects=False` gives the clean render (same layout)."""
    layout_rng = _rng(config.seed, plan.prompt_index, plan.generator, _PURPOSE_LAYOUT)
    clean = render_clean(plan.drawn, config.image_size, layout_rng)
    if not defects:
        return _to_uint8(clean)
    return apply_defects(clean, plan.severities, _rng(config.seed, plan.prompt_index, plan.generator, _PURPOSE_DEFECTS))


# --------------------------------------------------------------------------- labels


def _rater_spread(true_score: float, label_noise: float, z: float) -> float:
    p = true_score / 5.0
    return 0.25 + 0.45 * 4 * p * (1 - p) + label_noise * abs(z)


def labels_for(plan: ImagePlan, config: SynthConfig) -> dict[str, float]:
    """MOS and std columns of one image (see the module docstring for the formulas)."""
    rng = _rng(config.seed, plan.prompt_index, plan.generator, _PURPOSE_LABELS)
    q = quality_true(plan.severities)
    a = alignment_true(plan.errors)
    o = overall_true(q, a)
    noise = config.label_noise * rng.standard_normal(3)
    spread = rng.standard_normal(2)
    return {
        "mos_quality": float(np.clip(q + noise[0], 0, 5)),
        "std_quality": _rater_spread(q, config.label_noise, spread[0]),
        "mos_align": float(np.clip(a + noise[1], 0, 5)),
        "std_align": _rater_spread(a, config.label_noise, spread[1]),
        "mos_overall": float(np.clip(o + noise[2], 0, 5)),
    }


# --------------------------------------------------------------------------- writing

AGIQA3K_COLUMNS = ("name", "prompt", "adj1", "adj2", "style", "mos_quality", "std_quality", "mos_align", "std_align")
EXTRA_COLUMNS = (
    ("mos_overall", "generator")
    + tuple(f"q_{k}" for k in QUALITY_DEFECTS)
    + tuple(f"a_{k}" for k in ALIGNMENT_ERRORS)
    + ("count", "colour", "shape", "background", "drawn_count", "drawn_colour", "drawn_shape", "drawn_style")
)
COLUMNS = AGIQA3K_COLUMNS + EXTRA_COLUMNS
MARKER_FILE = "synth.json"


def _row(plan: ImagePlan, labels: dict[str, float]) -> list[str]:
    def num(x: float) -> str:
        return f"{x:.6f}"

    req, drawn = plan.requested, plan.drawn
    return (
        [plan.name, req.text, "", "", req.style]
        + [num(labels[c]) for c in ("mos_quality", "std_quality", "mos_align", "std_align", "mos_overall")]
        + [plan.generator]
        + [num(plan.severities[k]) for k in QUALITY_DEFECTS]
        + [str(plan.errors[k]) for k in ALIGNMENT_ERRORS]
        + [str(req.count), req.colour, req.shape, req.background]
        + [str(drawn.count), drawn.colour, drawn.shape, drawn.style]
    )


def _write_contents(folder: Path, config: SynthConfig) -> int:
    """Write images, data.csv and (last) synth.json into `folder`; returns the image count."""
    image_dir = folder / "images"
    image_dir.mkdir(parents=True, exist_ok=True)
    plans = plan_dataset(config)
    with open(folder / "data.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(COLUMNS)
        for plan in plans:
            Image.fromarray(render_plan(plan, config)).save(image_dir / plan.name, format="PNG")
            writer.writerow(_row(plan, labels_for(plan, config)))
    marker = {
        "dataset": "SynthAGIQA",
        "format_version": FORMAT_VERSION,
        "config": config.to_dict(),
        "config_key": config.key,
        "n_images": len(plans),
        "columns": list(COLUMNS),
    }
    (folder / MARKER_FILE).write_text(json.dumps(marker, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return len(plans)


def is_complete(folder: str | Path, config: SynthConfig | None = None) -> bool:
    """True when `folder` holds a finished SynthAGIQA write (of `config`, if given)."""
    folder = Path(folder)
    try:
        marker = json.loads((folder / MARKER_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if marker.get("format_version") != FORMAT_VERSION:
        return False
    if config is not None and marker.get("config_key") != config.key:
        return False
    if not (folder / "data.csv").is_file():
        return False
    n_images = sum(1 for _ in (folder / "images").glob("*.png")) if (folder / "images").is_dir() else 0
    return n_images == marker.get("n_images")


def _looks_synthetic(folder: Path) -> bool:
    return {p.name for p in folder.iterdir()} <= {"data.csv", "images", MARKER_FILE}


def write_synthetic(out_dir: str | Path, config: SynthConfig | None = None) -> Path:
    """Generate SynthAGIQA into `out_dir` (replacing an earlier SynthAGIQA write there).

    The dataset is built in a temporary sibling folder and renamed into place,
    so `out_dir` is either absent, an earlier complete write, or complete.
    """
    config = config or default_config()
    out_dir = Path(out_dir)
    if out_dir.exists() and not (out_dir.is_dir() and _looks_synthetic(out_dir)):
        raise FileExistsError(f"{out_dir} exists and is not a SynthAGIQA folder; choose an empty or new folder")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        _write_contents(tmp, config)
        swap_in_folder(tmp, out_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


def ensure_synthetic(cache_root: str | Path, config: SynthConfig | None = None) -> Path:
    """The folder of `config` under `cache_root` (``synth-<config key>``), generated if absent or incomplete."""
    config = config or default_config()
    folder = Path(cache_root) / f"synth-{config.key}"
    if is_complete(folder, config):
        return folder
    try:
        write_synthetic(folder, config)
    except OSError:
        # Another process may have published the same folder meanwhile; that is fine.
        if not is_complete(folder, config):
            raise
    return folder


def generator_names(config: SynthConfig | None = None) -> list[str]:
    return [g.name for g in (config or default_config()).generators]


# --------------------------------------------------------------------------- loading

#: Generation options of the built-in (cached) set; a folder given as `data_root` is used as it is.
SYNTH_OPTIONS = ("size", "n_prompts", "image_size", "seed")

#: Named sizes of the built-in set (prompts; each prompt is drawn by every generator, 6 by default).
#: `default` (60 prompts, 360 images) is for the quick run: there the trained methods are starved of data
#: (IP-IQA alignment SRCC ~0.3 vs CLIPScore ~0.65).  `1k` and `3k` have the prompt counts of AGIQA-1k-like
#: (180 prompts, 1,080 images) and AGIQA-3k (300 prompts, 1,800 images): the paper-scale workload.
SIZES = {"default": 60, "1k": 180, "3k": 300}


def size_prompts(size: str) -> int:
    if size not in SIZES:
        raise ConfigError(f"synthetic: unknown size {size!r}; known: " + ", ".join(
            f"{name} ({n} prompts, {n * len(BUILTIN_GENERATORS)} images)" for name, n in SIZES.items()))
    return SIZES[size]


def load(data_root=None, **options) -> Dataset:
    """A SynthAGIQA folder made by `agiqa-bench synth`, or the cached built-in one (`size`, or `n_prompts`,
    `image_size` and `seed`: each configuration generated once and cached, keyed by its hash)."""
    from agiqa_bench.datasets import agiqa3k, cache_root

    gen = {k: options.pop(k) for k in SYNTH_OPTIONS if k in options}
    if "size" in gen:
        if "n_prompts" in gen:
            raise ConfigError("synthetic: give size or n_prompts, not both")
        gen["n_prompts"] = size_prompts(str(gen.pop("size")))
    if data_root is None:
        config = default_config()
        if gen:
            try:
                config = SynthConfig(**{**config.__dict__, **{k: int(v) for k, v in gen.items()}})
            except ValueError as exc:
                raise ConfigError(f"synthetic: {exc} (--dataset-opt {', '.join(f'{k}={v}' for k, v in gen.items())})") from None
        data_root = ensure_synthetic(cache_root() / "synthetic", config)
    elif gen:
        raise ConfigError(f"synthetic: {', '.join(gen)} only apply to the built-in set; "
                          "a folder given with --data-root is used as it is")
    elif not (Path(data_root) / "data.csv").exists():
        raise DataError(f"no SynthAGIQA set at {data_root} (data.csv missing); make one with `agiqa-bench synth --out {data_root}`")
    return agiqa3k.load(data_root, name="synthetic", **options)


def _spec():
    from agiqa_bench.datasets.spec import DUPLICATES, DatasetOption, DatasetSpec

    return DatasetSpec(
        name="synthetic",
        summary="SynthAGIQA: built-in prompt-conditioned shapes with simulated generator defects (offline, default)",
        targets=("quality", "alignment", "overall"),
        loader="agiqa_bench.synthetic.dataset:load",
        files="data.csv + images/ (made by `agiqa-bench synth`; the built-in set is generated on first use)",
        options=(DUPLICATES, DatasetOption("size", "built-in set: default, 1k or 3k (60, 180 or 300 prompts)"),
                 *(DatasetOption(name, "built-in set: generation parameter") for name in SYNTH_OPTIONS
                   if name != "size")),
        attributes=("style",),
    )


SPEC = _spec()


__all__ = [
    "FORMAT_VERSION",
    "ImagePlan",
    "SynthConfig",
    "default_config",
    "ensure_synthetic",
    "generator_names",
    "image_name",
    "is_complete",
    "labels_for",
    "load",
    "SPEC",
    "parse_name",
    "plan_dataset",
    "render_plan",
    "write_synthetic",
]
