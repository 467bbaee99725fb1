"""Reading images, with errors that name the file.

Every method reads pixels through `load_rgb` (or `load_gray`, or `open_image`
for a PIL image in its own mode), so a corrupt or truncated file always
surfaces as an `ImageReadError` naming the path, never as a traceback from
inside PIL.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from agiqa_bench.errors import ImageReadError


def open_image(path: str | Path) -> Image.Image:
    """Decode an image file into a PIL image in its own mode (errors name the file)."""
    path = Path(path)
    try:
        with Image.open(path) as img:
            img.load()
            return img.copy()
    except FileNotFoundError:
        raise ImageReadError(f"image not found: {path}") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ImageReadError(f"cannot decode image {path}: {exc} (the file is corrupt or truncated; replace it)") from None


def load_rgb(path: str | Path, size: int | tuple[int, int] | None = None) -> np.ndarray:
    """Decode an image to an RGB uint8 array of shape (H, W, 3).

    Args:
        path: image file.
        size: optional square side (or (width, height)) to resize to, bicubic.
    """
    img = open_image(path).convert("RGB")
    if size is not None:
        wh = (size, size) if isinstance(size, int) else tuple(size)
        img = img.resize(wh, Image.BICUBIC)
    return np.asarray(img, dtype=np.uint8).copy()


def to_gray(rgb: np.ndarray) -> np.ndarray:
    """ITU-R BT.601 luma, as MATLAB's rgb2gray, on the 0-255 scale (float64)."""
    rgb = np.asarray(rgb, dtype=np.float64)
    return rgb[..., 0] * 0.298936021293775 + rgb[..., 1] * 0.587043074451121 + rgb[..., 2] * 0.114020904255103


def load_gray(path: str | Path) -> np.ndarray:
    """Grayscale float64 image on the 0-255 scale."""
    return to_gray(load_rgb(path))
