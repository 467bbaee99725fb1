"""Drawing a SynthAGIQA image: the clean render of a spec, then the quality defects.

The spec is a `world.PromptSpec` (for a benchmark image, the *drawn* spec of its
plan; see `agiqa_bench.synthetic.dataset.render_plan`).

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
"""

from __future__ import annotations

import io
import math

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage

from agiqa_bench.synthetic.world import BACKGROUND_COLOURS, OBJECT_COLOURS, PromptSpec

SUPERSAMPLE = 4


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


__all__ = ["apply_defects", "render_clean"]
