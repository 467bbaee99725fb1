"""Tiny DiffusionDB corpora for the reader and Image2Prompt tests: coloured shapes with their prompts."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 60), "blue": (40, 60, 220), "yellow": (230, 220, 40)}
SHAPES = ("square", "circle", "stripe")
PARTS, PER_PART = 3, 6


def shape_image(k: int) -> np.ndarray:
    colour, shape = list(COLOURS)[k % 4], SHAPES[k % 3]
    img = np.full((64, 64, 3), 20 + 7 * (k % 5), dtype=np.uint8)
    yy, xx = np.mgrid[:64, :64]
    mask = {"square": (abs(xx - 32) < 16) & (abs(yy - 32) < 16),
            "circle": (xx - 32) ** 2 + (yy - 32) ** 2 < 18 ** 2,
            "stripe": abs(yy - 32) < 6}[shape]
    img[mask] = COLOURS[colour]
    return img


def png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, "PNG")
    return buf.getvalue()


def part_files(part: int) -> dict[str, bytes]:
    """File name -> bytes of one part: PER_PART images and part-XXXXXX.json."""
    files, table = {}, {}
    for i in range(PER_PART):
        k = (part - 1) * PER_PART + i
        name = f"{(k * 2654435761) % 2**32:08x}-{i}.png"  # DiffusionDB-like names, not in creation order
        files[name] = png(shape_image(k))
        table[name] = {"p": f"a {list(COLOURS)[k % 4]} {SHAPES[k % 3]}", "se": k, "c": 7.0, "st": 50, "sa": "k_lms"}
    files[f"part-{part:06d}.json"] = json.dumps(table).encode()
    return files


def write_part(root: Path, part: int, files: dict[str, bytes], as_zip: bool) -> None:
    name = f"part-{part:06d}"
    if as_zip:
        with zipfile.ZipFile(root / f"{name}.zip", "w") as z:
            for file, data in files.items():
                z.writestr(file, data)
    else:
        (root / name).mkdir(parents=True)
        for file, data in files.items():
            (root / name / file).write_bytes(data)


def make_corpus(root: Path, form: str = "folder") -> Path:
    """PARTS parts of PER_PART pairs; form: folder, zip, or mix (part 2 zipped)."""
    root.mkdir(parents=True, exist_ok=True)
    for part in range(1, PARTS + 1):
        write_part(root, part, part_files(part), as_zip=form == "zip" or (form == "mix" and part == 2))
    return root
