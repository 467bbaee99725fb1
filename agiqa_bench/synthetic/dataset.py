"""SynthAGIQA: a built-in synthetic AGIQA dataset with known ground truth.

Why it exists
-------------
AGIQA-3k rates every AI-generated image twice: a *perceptual quality* MOS and a
*text-image alignment* MOS.  The paper's central claim is that quality depends
on defects the image alone shows, while alignment depends on mismatches that
only the prompt reveals.  SynthAGIQA builds a dataset where that is true by
construction, so the claim (and the harness) can be tested offline, in seconds.

Every image answers a prompt from a small grammar::

    "<count> <colour> <shape>s on a <background> background[, <style>]"
    e.g. "two red stars on a grey background, striped"

with count in {one, two, three}, eight object colours, eight shapes, six
background colours and the optional style "outlined" or "striped".  A prompt
is one *group* (the AGIQA-3k convention: the prompt index is the integer after
the last underscore of the file name).  Each prompt is answered by every
simulated *generator*; a generator is a probability/severity mix of quality
defects and alignment errors (see `BUILTIN_GENERATORS`):

==============  =====================================================
generator       character (like which AGIQA-3k model)
==============  =====================================================
``pixgan``      old GAN: poor quality, poor alignment (AttnGAN)
``sdlite``      middling on both (SD 1.5)
``sdlite_fast`` few sampling steps: poor quality, middling alignment
``literalist``  low fidelity but follows the prompt (DALL-E 2)
``dreamshot``   beautiful but ignores the prompt (Midjourney)
``xlpro``       good at both (SDXL)
==============  =====================================================

For each image, each quality defect k of generator g is present with
probability p_gk and then has severity clip(m_gk + 0.2 z, 0.05, 1) (z ~ N(0, 1),
rounded to 4 decimals), else severity 0; each alignment error j is present with
probability r_gj.  All draws are independent.

Rendering: the *drawn* spec (the prompt, possibly altered by alignment errors)
is rendered cleanly, then the quality defects are applied in the order
low-resolution, blur, banding, JPEG, noise.  Files are PNG, so only the
intended defects appear.  The clean render: a background of the named colour
with a smooth linear gradient (about +-10 levels) and low-frequency luminance
blobs (about +-6); 1-4 objects of radius 0.11-0.30 of the image side (smaller when there
are more) placed at random with little overlap and a small random rotation;
shape masks drawn at 4x and box-downsampled (anti-aliasing).  "outlined" keeps
a band of width 0.25 r + 0.02 side inside each shape's edge; "striped" keeps
diagonal stripes of period 0.16 side, the background showing between them.

Quality defects (severity s in [0, 1]; 0 = absent; "px" at 96 px, scaled with
the image size):

- ``q_blur``:    Gaussian blur, sigma = 0.4 + 2.6 s px.
- ``q_noise``:   additive Gaussian noise, std = 4 + 30 s (0-255 scale).
- ``q_jpeg``:    JPEG round trip in memory at quality round(45 - 40 s).
- ``q_lowres``:  box-downscale by f = 1.5 + 4.5 s, nearest-neighbour upscale back.
- ``q_banding``: posterise each channel to round(32 - 28 s) levels.

Alignment errors (indicators e in {0, 1}):

- ``a_colour``:  the objects get another object colour.
- ``a_shape``:   the objects get another shape.
- ``a_count``:   another number of objects (1-4, never the requested one).
- ``a_missing``: no object at all, only the background; the other four
  indicators are then 0 (nothing is drawn that could be wrong).
- ``a_style``:   the requested style (outlined/striped) is not drawn; only
  possible when a style is requested.

Ground truth (0-5 scale)
------------------------
True scores, with severities s_k and indicators e_j from the CSV columns::

    quality_true   = 0.4 + 4.4 * prod_k (1 - v_k * s_k)
        v = {blur: 0.55, noise: 0.50, jpeg: 0.45, lowres: 0.45, banding: 0.35}
    alignment_true = 0.4 + 4.4 * prod_j (1 - w_j * e_j)
        w = {colour: 0.40, shape: 0.40, count: 0.30, missing: 0.85, style: 0.25}
    overall_true   = 0.5 * quality_true + 0.5 * alignment_true

Each defect (error) removes a fixed fraction of what is left of the score, so
a clean image scores 4.8 and scores fall smoothly with every added defect.
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
import io
import json
import math
import re
import shutil
import tempfile
import zlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage

from agiqa_bench.datasets._common import swap_in_folder

#: Bump when the output for a given config changes (it is part of the cache key).
FORMAT_VERSION = 1

# --------------------------------------------------------------------------- grammar

COUNT_WORDS = {1: "one", 2: "two", 3: "three", 4: "four"}
PROMPT_COUNTS = (1, 2, 3)

#: Object colours (sRGB).  Pairwise RGB distance >= 80.
OBJECT_COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 170, 50),
    "blue": (40, 70, 220),
    "yellow": (240, 220, 30),
    "purple": (140, 50, 170),
    "orange": (245, 140, 20),
    "white": (245, 245, 245),
    "black": (15, 15, 15),
}

#: Background colours, a separate set so an object never shares the background's name.
BACKGROUND_COLOURS: dict[str, tuple[int, int, int]] = {
    "grey": (128, 128, 128),
    "beige": (222, 205, 170),
    "navy": (30, 40, 90),
    "teal": (20, 120, 120),
    "lavender": (195, 180, 230),
    "pink": (240, 180, 190),
}

SHAPES = ("circle", "square", "triangle", "star", "ring", "cross", "diamond", "hexagon")
STYLES = ("", "outlined", "striped")

#: An object colour is usable on a background only if it stands out this much (RGB distance).
MIN_CONTRAST = 100.0

QUALITY_DEFECTS = ("blur", "noise", "jpeg", "lowres", "banding")
ALIGNMENT_ERRORS = ("colour", "shape", "count", "missing", "style")

#: Fraction of the remaining score each defect removes at severity 1 (see module docstring).
QUALITY_WEIGHTS = {"blur": 0.55, "noise": 0.50, "jpeg": 0.45, "lowres": 0.45, "banding": 0.35}
#: Fraction of the remaining score each alignment error removes (see module docstring).
ALIGNMENT_WEIGHTS = {"colour": 0.40, "shape": 0.40, "count": 0.30, "missing": 0.85, "style": 0.25}
SCORE_FLOOR, SCORE_RANGE = 0.4, 4.4
OVERALL_QUALITY_SHARE = 0.5

SUPERSAMPLE = 4
_NAME_RE = re.compile(r"^[A-Za-z0-9.\-]+(?:_[A-Za-z0-9.\-]+)*$")


def _colour_distance(a: Sequence[int], b: Sequence[int]) -> float:
    return float(np.linalg.norm(np.subtract(a, b, dtype=np.float64)))


def colours_on(background: str) -> list[str]:
    """Object colours that contrast enough with `background`."""
    bg = BACKGROUND_COLOURS[background]
    return [c for c, rgb in OBJECT_COLOURS.items() if _colour_distance(rgb, bg) >= MIN_CONTRAST]


@dataclass(frozen=True)
class PromptSpec:
    """What a prompt asks for (or what an image actually shows).

    `count` 0 means nothing is drawn (the missing-object error).
    """

    count: int
    colour: str
    shape: str
    background: str
    style: str = ""

    @property
    def text(self) -> str:
        noun = self.shape if self.count == 1 else _plural(self.shape)
        words = f"{COUNT_WORDS.get(self.count, str(self.count))} {self.colour} {noun} on a {self.background} background"
        return f"{words}, {self.style}" if self.style else words


def _plural(noun: str) -> str:
    return noun + "es" if noun.endswith(("s", "x", "sh", "ch")) else noun + "s"


def _prompt_space_size() -> int:
    return sum(len(colours_on(bg)) for bg in BACKGROUND_COLOURS) * len(PROMPT_COUNTS) * len(SHAPES) * len(STYLES)


def sample_prompts(n: int, seed: int) -> list[PromptSpec]:
    """`n` distinct prompts drawn uniformly from the grammar, deterministically from `seed`."""
    if n > _prompt_space_size():
        raise ValueError(f"n_prompts={n} exceeds the {_prompt_space_size()} distinct prompts of the grammar")
    rng = np.random.default_rng([seed, 0x50524F4D])  # "PROM"
    backgrounds = list(BACKGROUND_COLOURS)
    seen: set[PromptSpec] = set()
    prompts: list[PromptSpec] = []
    while len(prompts) < n:
        background = backgrounds[rng.integers(len(backgrounds))]
        palette = colours_on(background)
        spec = PromptSpec(
            count=int(PROMPT_COUNTS[rng.integers(len(PROMPT_COUNTS))]),
            colour=palette[rng.integers(len(palette))],
            shape=SHAPES[rng.integers(len(SHAPES))],
            background=background,
            style=STYLES[rng.integers(len(STYLES))],
        )
        if spec not in seen:
            seen.add(spec)
            prompts.append(spec)
    return prompts


# --------------------------------------------------------------------------- generators


@dataclass(frozen=True)
class GeneratorProfile:
    """A simulated text-to-image model.

    Attributes:
        name: file-name safe identifier (letters, digits, '.', '-', '_').
        description: one line for humans.
        defects: per quality defect (in `QUALITY_DEFECTS` order), the pair
            (probability it occurs, mean severity when it does).
        errors: per alignment error (in `ALIGNMENT_ERRORS` order), its probability.
    """

    name: str
    description: str
    defects: tuple[tuple[float, float], ...]
    errors: tuple[float, ...]


def make_profile(
    name: str, description: str, *, defects: dict[str, tuple[float, float]], errors: dict[str, float]
) -> GeneratorProfile:
    """Build a profile from named defect/error rates (unnamed ones are 0)."""
    unknown = (set(defects) - set(QUALITY_DEFECTS)) | (set(errors) - set(ALIGNMENT_ERRORS))
    if unknown:
        raise ValueError(f"unknown defect/error names: {sorted(unknown)}")
    return GeneratorProfile(
        name=name,
        description=description,
        defects=tuple(tuple(map(float, defects.get(k, (0.0, 0.0)))) for k in QUALITY_DEFECTS),
        errors=tuple(float(errors.get(k, 0.0)) for k in ALIGNMENT_ERRORS),
    )


BUILTIN_GENERATORS: tuple[GeneratorProfile, ...] = (
    make_profile(
        "pixgan",
        "old GAN: poor quality and poor alignment",
        defects={"blur": (0.7, 0.6), "noise": (0.4, 0.4), "jpeg": (0.3, 0.5), "lowres": (0.7, 0.6), "banding": (0.3, 0.4)},
        errors={"colour": 0.35, "shape": 0.45, "count": 0.4, "missing": 0.15, "style": 0.5},
    ),
    make_profile(
        "sdlite",
        "middling quality and alignment",
        defects={"blur": (0.3, 0.35), "noise": (0.25, 0.3), "jpeg": (0.2, 0.3), "lowres": (0.15, 0.3), "banding": (0.15, 0.3)},
        errors={"colour": 0.15, "shape": 0.15, "count": 0.25, "missing": 0.05, "style": 0.3},
    ),
    make_profile(
        "sdlite_fast",
        "few sampling steps: poor quality, middling alignment",
        defects={"blur": (0.5, 0.5), "noise": (0.7, 0.6), "jpeg": (0.2, 0.4), "lowres": (0.2, 0.4), "banding": (0.6, 0.6)},
        errors={"colour": 0.15, "shape": 0.15, "count": 0.25, "missing": 0.05, "style": 0.3},
    ),
    make_profile(
        "literalist",
        "low fidelity but follows the prompt",
        defects={"blur": (0.3, 0.4), "noise": (0.2, 0.4), "jpeg": (0.7, 0.7), "lowres": (0.6, 0.6), "banding": (0.3, 0.4)},
        errors={"colour": 0.03, "shape": 0.03, "count": 0.07, "missing": 0.01, "style": 0.05},
    ),
    make_profile(
        "dreamshot",
        "beautiful images that ignore the prompt",
        defects={"blur": (0.08, 0.2), "noise": (0.05, 0.2), "jpeg": (0.05, 0.2), "lowres": (0.05, 0.2), "banding": (0.05, 0.2)},
        errors={"colour": 0.35, "shape": 0.35, "count": 0.4, "missing": 0.12, "style": 0.6},
    ),
    make_profile(
        "xlpro",
        "good quality and good alignment",
        defects={"blur": (0.1, 0.2), "noise": (0.08, 0.2), "jpeg": (0.05, 0.2), "lowres": (0.05, 0.2), "banding": (0.08, 0.2)},
        errors={"colour": 0.05, "shape": 0.05, "count": 0.1, "missing": 0.02, "style": 0.1},
    ),
)

_BUILTIN_BY_NAME = {g.name: g for g in BUILTIN_GENERATORS}


def builtin_generator(name: str) -> GeneratorProfile:
    try:
        return _BUILTIN_BY_NAME[name]
    except KeyError:
        raise ValueError(f"unknown synthetic generator {name!r}; built-in: {', '.join(_BUILTIN_BY_NAME)}") from None


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


def _polygon(kind: str, radius: float) -> list[tuple[float, float]]:
    """Vertices of a shape of circumradius `radius` centred at the origin."""

    def ring_of(n: int, r: float, start: float) -> list[tuple[float, float]]:
        return [(r * math.cos(start + 2 * math.pi * k / n), r * math.sin(start + 2 * math.pi * k / n)) for k in range(n)]

    if kind == "square":
        return ring_of(4, radius, math.pi / 4)
    if kind == "triangle":
        return ring_of(3, radius, -math.pi / 2)
    if kind == "hexagon":
        return ring_of(6, radius, 0.0)
    if kind == "diamond":
        return [(0, -radius), (0.62 * radius, 0), (0, radius), (-0.62 * radius, 0)]
    if kind == "star":
        outer = ring_of(5, radius, -math.pi / 2)
        inner = ring_of(5, 0.45 * radius, -math.pi / 2 + math.pi / 5)
        return [p for pair in zip(outer, inner) for p in pair]
    if kind == "cross":
        a, b = 0.3 * radius, radius
        return [(-a, -b), (a, -b), (a, -a), (b, -a), (b, a), (a, a), (a, b), (-a, b), (-a, a), (-b, a), (-b, -a), (-a, -a)]
    raise ValueError(f"no polygon for shape {kind!r}")


def _draw_filled(draw: ImageDraw.ImageDraw, shape: str, cx: float, cy: float, radius: float, angle: float, fill: int) -> None:
    if shape in ("circle", "ring"):
        draw.ellipse([cx - radius, cy - radius, cx + radius, cy + radius], fill=fill)
        if shape == "ring":
            inner = 0.55 * radius
            draw.ellipse([cx - inner, cy - inner, cx + inner, cy + inner], fill=0 if fill else 255)
        return
    cos, sin = math.cos(angle), math.sin(angle)
    points = [(cx + x * cos - y * sin, cy + x * sin + y * cos) for x, y in _polygon(shape, radius)]
    draw.polygon(points, fill=fill)


def _object_mask(shape: str, cx: float, cy: float, radius: float, angle: float, side: int) -> np.ndarray:
    """Coverage (bool) of one filled object on the supersampled canvas."""
    canvas = Image.new("L", (side, side), 0)
    _draw_filled(ImageDraw.Draw(canvas), shape, cx, cy, radius, angle, 255)
    return np.asarray(canvas) > 127


def _outline(mask: np.ndarray, width: float) -> np.ndarray:
    """The band of `mask` within `width` (supersampled px) of its edge: the outlined style."""
    inside_distance = ndimage.distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1]
    return mask & (inside_distance <= width)


def _stripes(side: int, period: float, phase: float) -> np.ndarray:
    yy, xx = np.mgrid[0:side, 0:side]
    return ((xx + yy + phase) // (period / 2)).astype(np.int64) % 2 == 0


def _layout(count: int, size: int, rng: np.random.Generator) -> list[tuple[float, float, float, float]]:
    """(cx, cy, radius, angle) per object, in final-image pixels; little overlap."""
    lo, hi = {1: (0.22, 0.30), 2: (0.16, 0.21), 3: (0.13, 0.17), 4: (0.11, 0.15)}[count]
    objects: list[tuple[float, float, float, float]] = []
    for _ in range(count):
        radius = rng.uniform(lo, hi) * size
        margin = radius + 0.03 * size
        for _attempt in range(60):
            cx, cy = rng.uniform(margin, size - margin, size=2)
            if all(math.hypot(cx - x, cy - y) >= 0.95 * (radius + r) for x, y, r, _ in objects):
                break
        objects.append((float(cx), float(cy), float(radius), float(rng.uniform(-0.2, 0.2))))
    return objects


def _background(colour: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """Base colour plus a smooth linear gradient and low-frequency luminance blobs."""
    base = np.array(BACKGROUND_COLOURS[colour], dtype=np.float64)
    yy, xx = np.mgrid[0:size, 0:size] / (size - 1) - 0.5
    theta = rng.uniform(0, 2 * math.pi)
    gradient = 20.0 * (xx * math.cos(theta) + yy * math.sin(theta))
    coarse = rng.uniform(-1, 1, size=(4, 4))
    blobs = 6.0 * ndimage.zoom(coarse, size / 4, order=3, mode="nearest")[:size, :size]
    return np.clip(base + (gradient + blobs)[..., None], 0, 255)


def render_clean(spec: PromptSpec, size: int, rng: np.random.Generator) -> np.ndarray:
    """Draw exactly what `spec` says: float RGB (size, size, 3) on the 0-255 scale."""
    image = _background(spec.background, size, rng)
    if spec.count == 0:
        return image
    side, s = size * SUPERSAMPLE, SUPERSAMPLE
    layout = _layout(spec.count, size, rng)
    coverage = np.zeros((side, side), dtype=bool)
    for cx, cy, radius, angle in layout:
        coverage |= _object_mask(spec.shape, cx * s, cy * s, radius * s, angle, side)
    if spec.style == "outlined":
        mean_radius = float(np.mean([obj[2] for obj in layout]))
        coverage = _outline(coverage, (0.25 * mean_radius + 0.02 * size) * s)
    elif spec.style == "striped":
        coverage &= _stripes(side, period=0.16 * side, phase=rng.uniform(0, 0.16 * side))
    alpha = coverage.reshape(size, SUPERSAMPLE, size, SUPERSAMPLE).mean(axis=(1, 3))[..., None]
    colour = np.array(OBJECT_COLOURS[spec.colour], dtype=np.float64)
    return image * (1 - alpha) + colour * alpha


# --------------------------------------------------------------------------- defects


def _to_uint8(image: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def apply_lowres(image: np.ndarray, severity: float) -> np.ndarray:
    size = image.shape[0]
    small = max(4, round(size / (1.5 + 4.5 * severity)))
    pil = Image.fromarray(_to_uint8(image)).resize((small, small), Image.BOX)
    return np.asarray(pil.resize((size, size), Image.NEAREST), dtype=np.float64)


def apply_blur(image: np.ndarray, severity: float) -> np.ndarray:
    sigma = (0.4 + 2.6 * severity) * image.shape[0] / 96
    return ndimage.gaussian_filter(image, sigma=(sigma, sigma, 0), mode="reflect")


def apply_banding(image: np.ndarray, severity: float) -> np.ndarray:
    levels = round(32 - 28 * severity)
    step = 256.0 / levels
    return np.minimum(np.floor(np.clip(image, 0, 255) / step) * step + step / 2, 255)


def apply_jpeg(image: np.ndarray, severity: float) -> np.ndarray:
    buffer = io.BytesIO()
    Image.fromarray(_to_uint8(image)).save(buffer, format="JPEG", quality=max(3, round(45 - 40 * severity)))
    buffer.seek(0)
    with Image.open(buffer) as decoded:
        return np.asarray(decoded.convert("RGB"), dtype=np.float64)


def apply_noise(image: np.ndarray, severity: float, rng: np.random.Generator) -> np.ndarray:
    return image + (4 + 30 * severity) * rng.standard_normal(image.shape)


def apply_defects(image: np.ndarray, severities: dict[str, float], rng: np.random.Generator) -> np.ndarray:
    """Degrade a clean render: low-resolution, blur, banding, JPEG, noise (those with severity > 0)."""
    if severities.get("lowres", 0) > 0:
        image = apply_lowres(image, severities["lowres"])
    if severities.get("blur", 0) > 0:
        image = apply_blur(image, severities["blur"])
    if severities.get("banding", 0) > 0:
        image = apply_banding(image, severities["banding"])
    if severities.get("jpeg", 0) > 0:
        image = apply_jpeg(image, severities["jpeg"])
    if severities.get("noise", 0) > 0:
        image = apply_noise(image, severities["noise"], rng)
    return _to_uint8(image)


def render_plan(plan: ImagePlan, config: SynthConfig, *, defects: bool = True) -> np.ndarray:
    """The image of `plan` as uint8 RGB; `defects=False` gives the clean render (same layout)."""
    layout_rng = _rng(config.seed, plan.prompt_index, plan.generator, _PURPOSE_LAYOUT)
    clean = render_clean(plan.drawn, config.image_size, layout_rng)
    if not defects:
        return _to_uint8(clean)
    return apply_defects(clean, plan.severities, _rng(config.seed, plan.prompt_index, plan.generator, _PURPOSE_DEFECTS))


# --------------------------------------------------------------------------- labels


def quality_true(severities: dict[str, float]) -> float:
    kept = math.prod(1 - QUALITY_WEIGHTS[k] * severities.get(k, 0.0) for k in QUALITY_DEFECTS)
    return SCORE_FLOOR + SCORE_RANGE * kept


def alignment_true(errors: dict[str, int]) -> float:
    kept = math.prod(1 - ALIGNMENT_WEIGHTS[k] * errors.get(k, 0) for k in ALIGNMENT_ERRORS)
    return SCORE_FLOOR + SCORE_RANGE * kept


def overall_true(quality: float, alignment: float) -> float:
    return OVERALL_QUALITY_SHARE * quality + (1 - OVERALL_QUALITY_SHARE) * alignment


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


__all__ = [
    "BUILTIN_GENERATORS",
    "FORMAT_VERSION",
    "GeneratorProfile",
    "ImagePlan",
    "PromptSpec",
    "SynthConfig",
    "alignment_true",
    "apply_defects",
    "default_config",
    "ensure_synthetic",
    "image_name",
    "is_complete",
    "labels_for",
    "make_profile",
    "overall_true",
    "parse_name",
    "plan_dataset",
    "quality_true",
    "render_clean",
    "render_plan",
    "sample_prompts",
    "write_synthetic",
]
