"""SynthAGIQA's world: what a prompt can ask for, how the simulated generators differ, and the true scores.

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

How a generator's defects and errors are drawn for one image is in
`agiqa_bench.synthetic.dataset` (the per-image plans); what the defects do to
the pixels is in `agiqa_bench.synthetic.render`.

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
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

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


# --------------------------------------------------------------------------- true scores


def quality_true(severities: dict[str, float]) -> float:
    kept = math.prod(1 - QUALITY_WEIGHTS[k] * severities.get(k, 0.0) for k in QUALITY_DEFECTS)
    return SCORE_FLOOR + SCORE_RANGE * kept


def alignment_true(errors: dict[str, int]) -> float:
    kept = math.prod(1 - ALIGNMENT_WEIGHTS[k] * errors.get(k, 0) for k in ALIGNMENT_ERRORS)
    return SCORE_FLOOR + SCORE_RANGE * kept


def overall_true(quality: float, alignment: float) -> float:
    return OVERALL_QUALITY_SHARE * quality + (1 - OVERALL_QUALITY_SHARE) * alignment


__all__ = [
    "BUILTIN_GENERATORS",
    "GeneratorProfile",
    "PromptSpec",
    "alignment_true",
    "make_profile",
    "overall_true",
    "quality_true",
    "sample_prompts",
]
