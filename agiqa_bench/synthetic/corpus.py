"""A caption corpus from SynthAGIQA's world, in DiffusionDB's layout (for pretraining a small CLIP).

Offline, CLIP-based methods only have random weights.  This corpus lets a small
CLIP be really pretrained on the world SynthAGIQA draws from, so that its text
encoder knows colours, shapes, counts, backgrounds and styles and its image
encoder sees them (`agiqa_bench.synthetic.clip_pretrain.pretrain_clip` trains on it).

Content
-------
Image k (k = 0 .. size-1, the corpus order) has its own seed
``se = SeedSequence([seed, 0x434F5250 ("CORP"), k]).generate_state(1)[0]``
and every draw of the image comes from ``numpy.random.default_rng(se)``, so an
image can be regenerated from its json entry alone (`render_entry`), does not
depend on generation order, and never coincides with a SynthAGIQA benchmark
image (those draw from 4-element seed lists ``[config seed, prompt index,
crc32(generator), purpose]``).

Its caption is drawn independently of every other image, uniformly from the
whole grammar (a wider one than the benchmark prompts):

- with probability `empty_fraction` an *empty* image: only the background,
  caption ``"an empty <background> background"``;
- otherwise a `PromptSpec`: background uniform over the 6 background colours,
  count uniform over 1-4 (the benchmark prompts use 1-3; 4 objects appear there
  through count errors), colour uniform over the object colours that contrast
  with the background (`colours_on`), shape uniform over the 8 shapes, style
  uniform over none / outlined / striped; caption ``spec.text``, e.g. "four red
  stars on a navy background, striped".

The image is `render_clean` of exactly that spec (random placement, sizes and
rotations, background gradient and blobs).  A `defect_fraction` share of the
images then gets one mild quality defect (one of blur, noise, JPEG, low
resolution, banding, chosen uniformly, severity uniform in [0.05, 0.4]),
applied with SynthAGIQA's own defect functions; the caption stays exact (it
never mentions quality).  Images are PNG.

Files
-----
``part-000001/`` ... (or ``part-000001.zip`` ... with `zip_parts`), each with
`part_size` images ``0000000.png`` ... (global index, 7 digits, so sorted file
order is corpus order) and ``part-000001.json`` mapping file name ->
``{"p": caption, "se": seed, "c": 0, "st": 0, "sa": "synth"}`` plus the spec
(``"spec": {count, colour, shape, background, style}``, count 0 for empty
images) and the defect (``"defect": [name, severity]`` or null).  ``corpus.json``
(written last) records the parameters and the format version.  The corpus is
built in a temporary sibling folder and renamed into place.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
import zipfile
from dataclasses import asdict
from pathlib import Path

import numpy as np
from PIL import Image

from agiqa_bench.datasets._common import swap_in_folder
from agiqa_bench.synthetic.render import apply_defects, render_clean
from agiqa_bench.synthetic.world import (
    BACKGROUND_COLOURS,
    QUALITY_DEFECTS,
    SHAPES,
    STYLES,
    PromptSpec,
    colours_on,
)

CORPUS_FORMAT = "agiqa-bench/synth-corpus@1"
MARKER_FILE = "corpus.json"
CORPUS_COUNTS = (1, 2, 3, 4)
SEED_TAG = 0x434F5250  # "CORP"
MAX_DEFECT_SEVERITY = 0.4
MIN_DEFECT_SEVERITY = 0.05


def image_seed(seed: int, index: int) -> int:
    """The per-image seed of image `index` of the corpus of `seed` (its json "se")."""
    return int(np.random.SeedSequence([int(seed), SEED_TAG, int(index)]).generate_state(1)[0])


def empty_caption(background: str) -> str:
    return f"an empty {background} background"


def sample_entry(se: int, *, defect_fraction: float = 0.2, empty_fraction: float = 0.03) -> tuple[PromptSpec, tuple[str, float] | None, np.random.Generator]:
    """(spec, defect or None, the generator positioned for rendering) of the image with seed `se`."""
    rng = np.random.default_rng(se)
    backgrounds = list(BACKGROUND_COLOURS)
    background = backgrounds[rng.integers(len(backgrounds))]
    palette = colours_on(background)
    empty = rng.random() < empty_fraction
    spec = PromptSpec(
        count=0 if empty else int(CORPUS_COUNTS[rng.integers(len(CORPUS_COUNTS))]),
        colour=palette[rng.integers(len(palette))],
        shape=SHAPES[rng.integers(len(SHAPES))],
        background=background,
        style=STYLES[rng.integers(len(STYLES))],
    )
    if empty:
        spec = PromptSpec(count=0, colour="", shape="", background=background, style="")
    defect = None
    if rng.random() < defect_fraction:
        name = QUALITY_DEFECTS[rng.integers(len(QUALITY_DEFECTS))]
        severity = round(float(rng.uniform(MIN_DEFECT_SEVERITY, MAX_DEFECT_SEVERITY)), 4)
        defect = (name, severity)
    return spec, defect, rng


def caption_of(spec: PromptSpec) -> str:
    return empty_caption(spec.background) if spec.count == 0 else spec.text


def render_entry(se: int, image_size: int = 64, *, defect_fraction: float = 0.2, empty_fraction: float = 0.03) -> tuple[str, PromptSpec, tuple[str, float] | None, np.ndarray]:
    """(caption, spec, defect, uint8 RGB image) of the corpus image whose seed is `se`."""
    spec, defect, rng = sample_entry(se, defect_fraction=defect_fraction, empty_fraction=empty_fraction)
    clean = render_clean(spec, image_size, rng)
    image = apply_defects(clean, {defect[0]: defect[1]} if defect else {}, rng)
    return caption_of(spec), spec, defect, image


def part_name(number: int) -> str:
    return f"part-{number:06d}"


def _looks_like_corpus(folder: Path) -> bool:
    return folder.is_dir() and (folder / MARKER_FILE).is_file() and all(
        p.name == MARKER_FILE or p.name.startswith("part-") for p in folder.iterdir()
    )


def _write_part(folder: Path, name: str, entries: dict[str, dict], images: dict[str, bytes], zip_parts: bool) -> None:
    table = json.dumps(entries, indent=None, sort_keys=True)
    if zip_parts:
        with zipfile.ZipFile(folder / f"{name}.zip", "w", compression=zipfile.ZIP_STORED) as zf:
            for file in sorted(images):
                info = zipfile.ZipInfo(file, date_time=(1980, 1, 1, 0, 0, 0))  # fixed time: reproducible bytes
                zf.writestr(info, images[file])
            info = zipfile.ZipInfo(f"{name}.json", date_time=(1980, 1, 1, 0, 0, 0))
            zf.writestr(info, table, compress_type=zipfile.ZIP_DEFLATED)
    else:
        part = folder / name
        part.mkdir()
        for file, data in images.items():
            (part / file).write_bytes(data)
        (part / f"{name}.json").write_text(table, encoding="utf-8")


def _render_part(args: tuple) -> tuple[dict[str, dict], dict[str, bytes], dict]:
    """Entries, PNG bytes and counts of the images [lo, hi) of the corpus (a worker's job)."""
    import io

    seed, lo, hi, image_size, defect_fraction, empty_fraction = args
    entries: dict[str, dict] = {}
    images: dict[str, bytes] = {}
    stats = {"empty": 0, "defects": {k: 0 for k in QUALITY_DEFECTS}, "captions": []}
    for index in range(lo, hi):
        se = image_seed(seed, index)
        caption, spec, defect, image = render_entry(
            se, image_size, defect_fraction=defect_fraction, empty_fraction=empty_fraction)
        file = f"{index:07d}.png"
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="PNG")
        images[file] = buffer.getvalue()
        entries[file] = {"p": caption, "se": se, "c": 0, "st": 0, "sa": "synth",
                         "spec": asdict(spec), "defect": list(defect) if defect else None}
        stats["captions"].append(caption)
        stats["empty"] += spec.count == 0
        if defect:
            stats["defects"][defect[0]] += 1
    return entries, images, stats


def write_corpus(
    out: str | Path,
    size: int = 20000,
    seed: int = 1,
    image_size: int = 64,
    part_size: int = 1000,
    zip_parts: bool = False,
    defect_fraction: float = 0.2,
    empty_fraction: float = 0.03,
    workers: int | None = None,
    log=None,
) -> Path:
    """Write a SynthAGIQA caption corpus of `size` images into `out` (DiffusionDB layout); returns `out`.

    `workers` processes render parts in parallel (default: up to 4, at most the CPU
    count); the files do not depend on it.  An earlier corpus at `out` is replaced;
    any other existing path is refused.
    """
    out = Path(out)
    if size < 1:
        raise ValueError("size must be >= 1")
    if part_size < 1:
        raise ValueError("part_size must be >= 1")
    if image_size < 32:
        raise ValueError("image_size must be >= 32 pixels")
    if not 0 <= defect_fraction <= 1 or not 0 <= empty_fraction <= 1:
        raise ValueError("defect_fraction and empty_fraction must be in [0, 1]")
    if out.exists() and not _looks_like_corpus(out):
        raise FileExistsError(f"{out} exists and is not a synthetic caption corpus; choose an empty or new folder")
    params = {
        "size": int(size), "seed": int(seed), "image_size": int(image_size), "part_size": int(part_size),
        "zip_parts": bool(zip_parts), "defect_fraction": float(defect_fraction), "empty_fraction": float(empty_fraction),
    }
    n_parts = (size + part_size - 1) // part_size
    jobs = [(int(seed), p * part_size, min(size, (p + 1) * part_size), int(image_size), float(defect_fraction),
             float(empty_fraction)) for p in range(n_parts)]
    workers = min(4, os.cpu_count() or 1) if workers is None else max(1, int(workers))
    workers = min(workers, n_parts)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    start = time.perf_counter()
    pool = None
    try:
        if workers > 1:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))
            results = pool.map(_render_part, jobs)
        else:
            results = map(_render_part, jobs)
        empty, defects, captions = 0, {k: 0 for k in QUALITY_DEFECTS}, set()
        for p, (entries, images, stats) in enumerate(results):
            name = part_name(p + 1)
            _write_part(tmp, name, entries, images, zip_parts)
            empty += stats["empty"]
            captions.update(stats["captions"])
            for k, v in stats["defects"].items():
                defects[k] += v
            if log is not None:
                log(f"corpus: {name} written ({jobs[p][2]}/{size} images, {time.perf_counter() - start:.1f} s)")
        marker = {
            "format": CORPUS_FORMAT,
            "params": params,
            "n_images": int(size),
            "n_parts": n_parts,
            "distinct_captions": len(captions),
            "empty_images": empty,
            "defects": defects,
        }
        (tmp / MARKER_FILE).write_text(json.dumps(marker, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        swap_in_folder(tmp, out)
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out


def read_corpus_params(folder: str | Path) -> dict | None:
    """The `corpus.json` of a corpus folder, or None when absent / unreadable."""
    try:
        return json.loads((Path(folder) / MARKER_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


__all__ = ["CORPUS_FORMAT", "caption_of", "image_seed", "read_corpus_params", "render_entry", "sample_entry", "write_corpus"]
