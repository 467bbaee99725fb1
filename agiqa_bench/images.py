"""Reading images, with errors that name the file.

Every method reads pixels through `load_rgb` (or `load_gray`, or `open_image`
for a PIL image in its own mode), so a corrupt or truncated file always
surfaces as an `ImageReadError` naming the path, never as a traceback from
inside PIL.

Decompression bombs: before any pixel is decoded, the header's width x height
is checked against a pixel cap (`max_pixels()`: `$AGIQA_BENCH_MAX_PIXELS`, set by
`--max-pixels`, default 40 megapixels, ~120 MB as RGB); PIL's own
`DecompressionBombError` becomes the same one-line `ImageReadError`.
`check_image` is the cheap up-front test the dataset loaders run on every image.

Modes (`to_rgb`): every method sees 8-bit RGB.  16-bit and 32-bit integer
grey (`I;16*`, `I`) is scaled to 8 bit (v / 257, rounded), not clipped; PIL
already reads 16-bit-per-channel RGB(A) PNGs as 8-bit (the high byte); float
grey (`F`) is clipped to 0..255; CMYK, YCbCr, LAB, HSV and bilevel go through
PIL's conversion.  Transparency (RGBA, LA, PA, a palette or grey image with a
transparent colour) is composited onto white, as an image viewer on a white page
shows it, so fully transparent pixels never leak their hidden colour.
"""

from __future__ import annotations

import io
import os
import stat
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from agiqa_bench.errors import ImageReadError


MAX_PIXELS_ENV = "AGIQA_BENCH_MAX_PIXELS"
DEFAULT_MAX_PIXELS = 40_000_000


def max_pixels() -> int:
    """The pixel cap of every image read: `$AGIQA_BENCH_MAX_PIXELS` (`--max-pixels`), else 40 megapixels."""
    value = os.environ.get(MAX_PIXELS_ENV, "").strip()
    if not value:
        return DEFAULT_MAX_PIXELS
    try:
        cap = int(float(value))
    except ValueError:
        cap = 0
    if cap <= 0:
        raise ImageReadError(f"{MAX_PIXELS_ENV}={value!r} must be a positive number of pixels (e.g. 40000000)")
    return cap


BOMB_HINT = f"a decompression bomb, or a genuine large image: then pass --max-pixels N or set {MAX_PIXELS_ENV}"


def _error(message: str, reason: str) -> ImageReadError:
    """An ImageReadError whose `reason` says what is wrong without the path (for lists of many files)."""
    exc = ImageReadError(message)
    exc.reason = reason
    return exc


def _undecodable(label: str, exc: BaseException) -> ImageReadError:
    why = " ".join(str(exc).replace(f"'{label}'", "").replace(label, "").split()) or type(exc).__name__
    return _error(f"cannot decode image {label}: {exc} (the file is corrupt or truncated; replace it)",
                  f"cannot decode: {why}")


def _opened(source, label: str, cap: int | None):
    """`Image.open` of a path or bytes, the size checked against the cap before any pixel is decoded."""
    cap = max_pixels() if cap is None else cap
    Image.MAX_IMAGE_PIXELS = max(cap, 1)  # PIL's own bomb check follows ours (it errors above twice this)
    if not isinstance(source, (bytes, bytearray)):
        try:
            mode = os.stat(source).st_mode
        except FileNotFoundError:
            raise _error(f"image not found: {label}", "not found") from None
        except OSError as exc:
            raise _undecodable(label, exc) from None
        if not stat.S_ISREG(mode):  # a FIFO would block the read, a device never end
            raise _error(f"image {label} is not a regular file (a folder, FIFO or device)", "not a regular file")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our cap decides, not PIL's warning
        try:
            img = Image.open(io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else source)
        except FileNotFoundError:
            raise _error(f"image not found: {label}", "not found") from None
        except Image.DecompressionBombError as exc:  # PIL's own check (at twice our cap) came first
            import re

            found = re.search(r"\((\d+) pixels\)", str(exc))
            size = f"{int(found.group(1)):,} pixels, " if found else ""
            raise _error(f"image {label} is {size}over the cap of {cap:,} ({BOMB_HINT})",
                         f"{size}over the cap of {cap:,}") from None
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
            raise _undecodable(label, exc) from None
    width, height = img.size
    if width * height > cap:
        img.close()
        raise _error(f"image {label} is {width}x{height} = {width * height:,} pixels, over the cap of {cap:,} "
                     f"({BOMB_HINT})", f"{width}x{height} = {width * height:,} pixels, over the cap of {cap:,}")
    return img


def decode(source, label: str, *, cap: int | None = None) -> Image.Image:
    """A fully decoded PIL image in its own mode from a path or bytes; errors are one line naming `label`."""
    img = _opened(source, label, cap)
    try:
        with img, warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img.load()
            return img.copy()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise _undecodable(label, exc) from None
    except MemoryError:
        raise _error(f"out of memory decoding image {label}; lower --max-pixels or free memory", "out of memory") from None


def open_image(path: str | Path) -> Image.Image:
    """Decode an image file into a PIL image in its own mode (errors name the file)."""
    return decode(Path(path), str(path))


def check_image(path: str | Path, *, cap: int | None = None) -> tuple[int, int]:
    """(width, height) of an image after a cheap test: header, pixel cap, and a decode that catches
    truncation at a small cost (PNG: every chunk's checksum; JPEG: a 1/8-scale decode; others: a full decode).
    ImageReadError naming the file when it fails."""
    label = str(path)
    img = _opened(Path(path), label, cap)
    try:
        with img, warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            size = img.size
            if img.format == "PNG":
                img.verify()
            else:
                if img.format == "JPEG":
                    img.draft("RGB", (max(1, size[0] // 8), max(1, size[1] // 8)))
                img.load()
            return size
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise _undecodable(label, exc) from None


def to_rgb(img: Image.Image, label: str = "") -> Image.Image:
    """8-bit RGB from any PIL mode (see the module docstring for deep, float and transparent images)."""
    mode = img.mode
    if mode == "RGB":
        return img
    if mode.startswith("I;16") or mode == "I":
        arr = np.asarray(img, dtype=np.float64)
        peak = 65535.0 if mode.startswith("I;16") or arr.max(initial=0) <= 65535 else float(arr.max())
        grey = np.clip(np.rint(arr * (255.0 / peak)), 0, 255).astype(np.uint8)
        return Image.fromarray(grey, "L").convert("RGB")
    if mode == "F":
        grey = np.clip(np.rint(np.nan_to_num(np.asarray(img, dtype=np.float64))), 0, 255).astype(np.uint8)
        return Image.fromarray(grey, "L").convert("RGB")
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info:
        try:
            rgba = img.convert("RGBA")
        except (ValueError, OSError) as exc:
            raise ImageReadError(f"cannot convert image {label} ({mode}) to RGB: {exc}") from None
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    try:
        return img.convert("RGB")
    except (ValueError, OSError) as exc:
        raise ImageReadError(f"cannot convert image {label} ({mode}) to RGB: {exc}") from None


def to_pixels(image: Image.Image, size: int) -> np.ndarray:
    """(size, size, 3) uint8: bicubic square resize of an RGB PIL image (aspect ratio not kept)."""
    if image.size != (size, size):
        image = image.resize((size, size), Image.BICUBIC)
    return np.asarray(image, dtype=np.uint8)


def load_rgb(path: str | Path, size: int | tuple[int, int] | None = None) -> np.ndarray:
    """Decode an image to an RGB uint8 array of shape (H, W, 3).

    Args:
        path: image file.
        size: optional square side (or (width, height)) to resize to, bicubic.
    """
    img = to_rgb(open_image(path), str(path))
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
