"""The Image2Prompt data side: the filter pass over DiffusionDB and the kept pairs it leaves on disk.

See `ipiqa.image2prompt` for the whole procedure.  The filter pass scores every
pair under the initial CLIP, appends the kept ones to `OUT.index.jsonl` and their
normalised text embeddings to `OUT.text_emb.npy`, and is resumable part by part;
`KeptPairs` memory-maps the result and `iter_batches` reads its images back
(decoding the next batch while the current one trains).  Reading DiffusionDB
itself (limits against hostile zips included) is `agiqa_bench.datasets.diffusiondb`.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from agiqa_bench.datasets.diffusiondb import (
    DiffusionDBPair,
    PartReader,
    ReaderCache,
    SkipCounts,
    decode_image,
    find_parts,
    iter_part,
)
from agiqa_bench.errors import DataError, ImageReadError
from agiqa_bench.images import to_pixels


# -- preprocessing ---------------------------------------------------------------------------
def prepare(data: bytes, label: str, size: int) -> np.ndarray:
    """Decode and resize one image file's bytes."""
    return to_pixels(decode_image(data, label), size)


def to_input(pixels: list[np.ndarray], device: str, flips=None):
    """Normalised float batch (B, 3, S, S) on `device`; `flips` (bool tensor (B,)) mirrors rows."""
    import torch

    from agiqa_bench.batches import normalise

    batch = torch.from_numpy(np.stack(pixels)).permute(0, 3, 1, 2)
    if flips is not None and bool(flips.any()):
        batch = torch.where(flips.view(-1, 1, 1, 1), batch.flip(-1), batch)
    return normalise(batch.to(device))


# -- files next to the output ------------------------------------------------------------------
@dataclass(frozen=True)
class Paths:
    out: Path

    @property
    def state(self) -> Path:
        return self.out.with_name(self.out.name + ".state.pt")

    @property
    def index(self) -> Path:
        return self.out.with_suffix(".index.jsonl")

    @property
    def embeddings(self) -> Path:
        return self.out.with_suffix(".text_emb.npy")

    @property
    def partial_embeddings(self) -> Path:
        return self.out.with_suffix(".text_emb.f32.partial")


def atomic_torch_save(obj, path: Path) -> None:
    import torch

    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


# -- filter pass -------------------------------------------------------------------------------
def new_filter_progress() -> dict:
    return {"done": False, "parts_done": [], "pairs_seen": 0, "pairs_kept": 0, "index_bytes": 0,
            "embed_dim": 0, "skips": SkipCounts().as_dict()}


def restore_filter_files(paths: Paths, progress: dict) -> dict:
    """Cut the index and the partial embeddings back to the last saved part; restart if they are gone."""
    rows, dim = progress["pairs_kept"], progress["embed_dim"]
    index_ok = paths.index.is_file() and paths.index.stat().st_size >= progress["index_bytes"]
    emb_ok = rows == 0 or (paths.partial_embeddings.is_file() and paths.partial_embeddings.stat().st_size >= rows * dim * 4)
    if not (index_ok and emb_ok):
        return new_filter_progress()
    with open(paths.index, "r+b") as f:
        f.truncate(progress["index_bytes"])
    if paths.partial_embeddings.is_file():
        with open(paths.partial_embeddings, "r+b") as f:
            f.truncate(rows * dim * 4)
    return progress


@dataclass
class FilterWriter:
    """Appends kept pairs to the index and their text embeddings to the partial embedding file."""

    index: object
    embeddings: object
    progress: dict

    def add(self, items: list[DiffusionDBPair], cosines: np.ndarray, text_emb: np.ndarray, threshold: float) -> None:
        keep = cosines >= threshold
        for item, cos, k in zip(items, cosines, keep):
            if k:
                row = {"part": item.part, "file": item.file, "cosine": round(float(cos), 6)}
                self.index.write((json.dumps(row) + "\n").encode())
        self.embeddings.write(np.ascontiguousarray(text_emb[keep], dtype=np.float32).tobytes())
        self.progress["pairs_seen"] += len(items)
        self.progress["pairs_kept"] += int(keep.sum())
        self.progress["embed_dim"] = int(text_emb.shape[1])

    def checkpoint(self) -> None:
        self.index.flush()
        self.embeddings.flush()
        self.progress["index_bytes"] = self.index.tell()


def score_pairs(clip, tokenizer, items: list[DiffusionDBPair], pixels: list[np.ndarray], device: str):
    """(cosines (B,), normalised text embeddings (B, E)) under the initial CLIP."""
    import torch

    with torch.inference_mode():
        img = clip.encode_image(to_input(pixels, device), normalize=True).float()
        txt = clip.encode_text(tokenizer([it.prompt for it in items]).to(device), normalize=True).float()
        cos = (img * txt).sum(dim=-1)
    return cos.cpu().numpy(), txt.cpu().numpy()


def decode_batch(items: list[DiffusionDBPair], size: int, pool, skips: SkipCounts, label_of) -> tuple[list, list]:
    """Decode the raw images of `items` (in parallel when a pool is given); unreadable ones are skipped."""

    def one(item):
        try:
            return prepare(item.image, label_of(item), size)
        except ImageReadError as exc:
            return exc

    results = list(pool.map(one, items)) if pool is not None else [one(it) for it in items]
    kept_items, pixels = [], []
    for item, res in zip(items, results):
        if isinstance(res, ImageReadError):
            skips.record("unreadable", label_of(item), str(res))
        else:
            kept_items.append(item)
            pixels.append(res)
    return kept_items, pixels


def filter_pass(clip, tokenizer, root: Path, paths: Paths, progress: dict, *, threshold: float, image_size: int,
                batch_size: int, max_pairs: int | None, device: str, pool, save: Callable[[], None], log) -> dict:
    """Score every pair with the initial CLIP and keep those >= threshold (resumable part by part)."""
    clip.eval()
    skips = SkipCounts(**progress["skips"])
    parts = find_parts(root)
    done = set(progress["parts_done"])
    mode = "ab" if progress["index_bytes"] or progress["pairs_kept"] else "wb"
    with open(paths.index, mode) as index, open(paths.partial_embeddings, mode) as emb:
        writer = FilterWriter(index, emb, progress)
        for part, path in parts:
            if part in done:
                continue
            budget_left = None if max_pairs is None else max_pairs - progress["pairs_seen"]
            if budget_left is not None and budget_left <= 0:
                break
            batcher = FilterBatcher(writer, clip, tokenizer, skips, threshold, image_size, device, pool, path)
            filter_part(batcher, PartReader.label_for(path, ""), part, path, skips, batch_size, budget_left)
            writer.checkpoint()
            progress["parts_done"].append(part)
            progress["skips"] = skips.as_dict()
            save()
            log.maybe(f"filter: {len(progress['parts_done'])}/{len(parts)} parts, "
                      f"{progress['pairs_seen']} pairs seen, {progress['pairs_kept']} kept")
    if skips.total:
        warnings.warn(f"DiffusionDB {root}: skipped {skips.describe()}", stacklevel=2)
    return progress


@dataclass
class FilterBatcher:
    """Scores one batch of raw pairs of a part and hands the kept ones to the writer."""

    writer: FilterWriter
    clip: object
    tokenizer: object
    skips: SkipCounts
    threshold: float
    image_size: int
    device: str
    pool: object
    part_path: Path

    def __call__(self, batch: list[DiffusionDBPair]) -> int:
        """Readable pairs of `batch` (the unreadable ones are skipped and counted)."""
        label_of = lambda it: PartReader.label_for(self.part_path, it.file)  # noqa: E731
        items, pixels = decode_batch(batch, self.image_size, self.pool, self.skips, label_of)
        if items:
            cosines, text_emb = score_pairs(self.clip, self.tokenizer, items, pixels, self.device)
            self.writer.add(items, cosines, text_emb, self.threshold)
        return len(items)


def filter_part(batcher: FilterBatcher, where: str, part: str, path: Path, skips: SkipCounts, batch_size: int,
                budget_left: int | None) -> None:
    """Score the pairs of one part in batches, stopping once `budget_left` readable pairs were scored."""
    try:
        reader = PartReader(part, path)
    except DataError as exc:
        skips.record("bad_parts", where, str(exc))
        return
    seen, batch = 0, []
    with reader:
        for item in iter_part(reader, skips, decode=False):
            batch.append(item)
            if len(batch) == batch_size or (budget_left is not None and seen + len(batch) >= budget_left):
                seen += batcher(batch)
                batch = []
                if budget_left is not None and seen >= budget_left:
                    return
        if batch:
            batcher(batch)


def finish_embeddings(paths: Paths, rows: int, dim: int) -> None:
    """Turn the partial raw float32 file into `OUT.text_emb.npy` (chunked copy, atomic rename)."""
    tmp = paths.embeddings.with_name(paths.embeddings.name + ".tmp.npy")
    dest = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(rows, dim))
    src = np.memmap(paths.partial_embeddings, dtype=np.float32, mode="r", shape=(rows, dim))
    for start in range(0, rows, 65536):
        dest[start:start + 65536] = src[start:start + 65536]
    dest.flush()
    del dest, src
    os.replace(tmp, paths.embeddings)


# -- kept pairs on disk ----------------------------------------------------------------------
class KeptPairs:
    """The filter pass's result: per kept row its part, file, initial cosine and text embedding (memory-mapped)."""

    def __init__(self, paths: Paths):
        part_names: dict[str, int] = {}
        part_of, files, cosines = [], [], []
        with open(paths.index, encoding="utf-8") as f:
            for line in f:
                row = json.loads(line)
                part_of.append(part_names.setdefault(row["part"], len(part_names)))
                files.append(row["file"])
                cosines.append(row["cosine"])
        self.parts = list(part_names)
        self.part_of = np.asarray(part_of, dtype=np.int32)
        self.files = files
        self.cosine = np.asarray(cosines, dtype=np.float64)
        self.text_emb = np.load(paths.embeddings, mmap_mode="r")
        if len(self.text_emb) != len(files):
            raise DataError(f"{paths.embeddings} has {len(self.text_emb)} rows but {paths.index} {len(files)}; "
                            f"delete both and {paths.state} to start over")

    def __len__(self) -> int:
        return len(self.files)


def epoch_order(kept: KeptPairs, seed: int, epoch: int, shuffle_buffer: int) -> np.ndarray:
    """Row order of one epoch: parts shuffled, then rows shuffled within windows of `shuffle_buffer`."""
    rng = np.random.default_rng([seed, epoch, 0x1A2])
    rows_by_part = np.split(np.arange(len(kept)), np.flatnonzero(np.diff(kept.part_of)) + 1)
    order = np.concatenate([rows_by_part[i] for i in rng.permutation(len(rows_by_part))])
    for start in range(0, len(order), max(1, shuffle_buffer)):
        window = order[start:start + shuffle_buffer]
        order[start:start + shuffle_buffer] = window[rng.permutation(len(window))]
    return order


def load_rows(kept: KeptPairs, rows: np.ndarray, readers: ReaderCache, size: int, pool):
    """Start loading the images of `rows`: bytes now (this thread), decode + resize in the pool."""
    jobs = []
    for r in rows:
        reader = readers.get(kept.parts[kept.part_of[r]])
        data, label = reader.read(kept.files[r]), reader.label(kept.files[r])
        jobs.append(pool.submit(prepare, data, label, size) if pool is not None else prepare(data, label, size))
    return jobs


def iter_batches(kept: KeptPairs, batches: list[np.ndarray], readers: ReaderCache, size: int, pool):
    """(rows, list of uint8 images) per batch; the next batch decodes while the caller computes."""
    pending = None
    for rows in batches:
        jobs = load_rows(kept, rows, readers, size, pool)
        if pending is not None:
            yield pending[0], [j.result() if pool is not None else j for j in pending[1]]
        pending = (rows, jobs)
    if pending is not None:
        yield pending[0], [j.result() if pool is not None else j for j in pending[1]]


def run_filter(clip, clip_model, root, paths, state, size, batch_size, max_pairs, threshold, device, pool, save,
               logger) -> None:
    from agiqa_bench.clip import tokenizer_for

    progress = state["filter"]
    if progress["parts_done"]:
        progress = state["filter"] = restore_filter_files(paths, progress)
    clip.to(device)
    filter_pass(clip, tokenizer_for(clip_model), root, paths, progress, threshold=threshold, image_size=size,
                batch_size=batch_size, max_pairs=max_pairs, device=device, pool=pool, save=save, log=logger)
    if progress["pairs_kept"] == 0:
        for leftover in (paths.state, paths.index, paths.partial_embeddings):
            leftover.unlink(missing_ok=True)  # nothing to resume: a new call may use another threshold
        raise DataError(f"no pair of {root} reached the cosine threshold {threshold} ({progress['pairs_seen']} "
                        "readable pairs seen); lower the threshold or check the corpus and the CLIP weights")
    finish_embeddings(paths, progress["pairs_kept"], progress["embed_dim"])
    progress["done"] = True
    save()
    paths.partial_embeddings.unlink(missing_ok=True)
    skips = SkipCounts(**progress["skips"])
    logger.maybe(f"filter pass done: {progress['pairs_kept']} of {progress['pairs_seen']} pairs kept "
                 f"(cosine >= {threshold}); skipped {skips.describe()}", force=True)
