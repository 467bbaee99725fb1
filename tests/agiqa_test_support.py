"""Helpers shared by the tests (importable because pytest puts tests/ on the path)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
DATASETS = SHARED / "datasets"
REF_SPLITS = SHARED / "research" / "ref_ipiqa_splits.json"


def blurred_shapes(size: int, blur: float, seed: int) -> np.ndarray:
    """A small RGB image of random rectangles, box-blurred `blur` times (0 = sharp)."""
    rng = np.random.default_rng(seed)
    img = np.full((size, size, 3), rng.integers(0, 255, 3), dtype=np.float64)
    for _ in range(6):
        x0, y0 = rng.integers(0, size - 8, 2)
        w, h = rng.integers(4, size // 2, 2)
        img[y0:y0 + h, x0:x0 + w] = rng.integers(0, 255, 3)
    for _ in range(int(blur)):
        img = (img + np.roll(img, 1, 0) + np.roll(img, -1, 0) + np.roll(img, 1, 1) + np.roll(img, -1, 1)) / 5
    return img.clip(0, 255).astype(np.uint8)


def write_image(path: Path, array: np.ndarray) -> Path:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path
