"""Image2Prompt incremental pretraining of CLIP's image encoder (IP-IQA, Qu et al., ICME 2024).

The idea
--------
Before the IQA fine-tuning, IP-IQA teaches CLIP's image encoder to predict the
prompt an image was generated from: for image-prompt pairs from DiffusionDB,
the image embedding f_img(I) is pulled towards the embedding of its prompt under
the *frozen* CLIP text encoder h_txt(T), with

    loss = mean over the batch of  1 - cos(f_img(I), h_txt(T))

(the reference code's `nn.CosineEmbeddingLoss` with target +1).  Only pairs that
the *initial* CLIP already finds related are used: image-text cosine >= 0.35.

What `pretrain_image2prompt` does
---------------------------------
1. Filter pass.  The initial CLIP (eval mode, no gradient, fp32) encodes every
   image and prompt of the corpus in batches, streaming part by part.  Pairs with
   cosine >= threshold are kept: their (part, file, cosine) go to
   `OUT.index.jsonl` (one JSON object per line, in corpus order) and the
   normalised text embeddings of their prompts to `OUT.text_emb.npy` (float32,
   one row per index line).  Training therefore never runs the text encoder
   again, and no image is ever held in memory beyond the current batch.
2. Training.  Only `clip.visual` is trained (the text tower is not even in the
   optimizer), images are read back from the corpus batch by batch.
   Preprocessing: bicubic square resize to `image_size` (aspect ratio not kept,
   as in the rest of this project), optional horizontal flip, CLIP mean/std
   normalisation.  BatchNorm layers (ResNet CLIPs) are in train mode.
   Order of an epoch: the parts in a shuffled order, then the kept pairs in that
   order shuffled inside consecutive windows of `shuffle_buffer` pairs; it is a
   pure function of (seed, epoch), so a resumed run sees the same order.
3. Resume.  `OUT.state.pt` (written atomically: temporary file + rename) holds
   the configuration, the filter-pass progress (saved after every part; done
   flag), the visual weights, the optimizer state, the step, the running losses
   and the torch RNG state.  It is written every `save_every` steps, at each
   epoch end and when `stop_after_steps` ends a call.  Calling again with the
   same arguments continues where it stopped and, on the CPU, ends with the same
   weights as an uninterrupted run.  An interrupted filter pass continues after
   the last finished part.
4. Output.  `torch.save` of a dict (format `agiqa-bench/image2prompt@1`) with
   `visual` (the image encoder's state dict), `clip_model`, `pretrained`,
   `image_size`, `threshold`, `pairs_seen`, `pairs_kept`, `epochs` and the other
   settings, written atomically; the state file is then removed (the index and
   the embeddings stay, as a record of the kept pairs).  This is what
   `ipiqa.model.load_image2prompt` reads.  The positional embedding of the
   visual tower is always stored at the architecture's *native* grid, so the
   file loads into `load_clip(clip_model, ...)`; when training ran at another
   `image_size` it is resized there for training and back (bicubic) for saving,
   and the trained-size one is also kept under `positional_embedding_at_image_size`.

DiffusionDB layout (`iter_diffusiondb`)
---------------------------------------
The root holds parts as folders `part-000001/` and/or zip files
`part-000001.zip` (as downloaded from poloclub/diffusiondb); each part holds its
images (.png/.webp/.jpg) and `part-000001.json` mapping file name to
{"p": prompt, "se": seed, "c": cfg scale, "st": steps, "sa": sampler}.  When a
part is there both as a folder and a zip, the folder is read.  Parts are read
in numeric order, files in sorted order.  A json entry whose image is missing,
an image without json entry and an unreadable image are skipped with a warning
naming the file (the first 20; the rest are counted) and counted in `SkipCounts`.

Defaults: what the paper states and what we chose
-------------------------------------------------
From the paper / reference code: DiffusionDB pairs, the 0.35 cosine threshold
under the initial CLIP, the loss 1 - cos against the frozen text encoder, the
RN50 CLIP (`RN50-quickgelu` / `openai` here).
Our choices (the paper and code do not publish them): AdamW, lr 1e-5, weight
decay 0, batch 32, 1 epoch, cosine decay to 0 with a linear warm-up of
min(1000, 5 % of the steps), no flip, the model's native input size (224 for
RN50), filtering at the training input size, fp32 filtering and bf16 autocast
for training on CUDA, the shuffled order described above.

UNVERIFIED about the paper's setup: which DiffusionDB subset (2M or large; how
many parts) was used and how many pairs survived the filter; the image
resolution and preprocessing used for filtering and for training; whether the
threshold applies to CLIP's normalised embeddings exactly as here (it is the
usual meaning of "cosine"); optimizer, learning rate, schedule, batch size,
number of epochs or steps; whether BatchNorm statistics were updated; whether
the attention pooling was trained with the rest of the image encoder (here it
is: all of `clip.visual`).
"""

from __future__ import annotations

import io
import json
import math
import os
import re
import time
import warnings
import zipfile
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

from agiqa_bench.device import resolve_device
from agiqa_bench.errors import ConfigError, DataError, ImageReadError
from agiqa_bench.training import warmup_cosine

FORMAT = "agiqa-bench/image2prompt@1"
STATE_FORMAT = "agiqa-bench/image2prompt-state@1"
IMAGE_SUFFIXES = (".png", ".webp", ".jpg", ".jpeg", ".bmp")
PART_NAME = re.compile(r"^part-(\d+)$")
MAX_LISTED_SKIPS = 20
LAYOUT_HELP = (
    "expected DiffusionDB parts: folders part-000001/ (each holding its images and part-000001.json, "
    "which maps file name -> {\"p\": prompt, ...}) and/or zip files part-000001.zip with the same content, "
    "as downloaded from https://huggingface.co/datasets/poloclub/diffusiondb"
)


# -- reading DiffusionDB -------------------------------------------------------------------
class DiffusionDBPair(NamedTuple):
    """One image-prompt pair: `image` is a decoded RGB PIL image, or the file's bytes with decode=False."""

    part: str
    file: str
    prompt: str
    image: object
    meta: dict


@dataclass
class SkipCounts:
    """What a read of DiffusionDB skipped, by reason; the first few skips are also warned about."""

    missing_image: int = 0  # a json entry whose image file is not in the part
    missing_prompt: int = 0  # an image file with no (usable) json entry
    unreadable: int = 0  # an image that cannot be decoded
    bad_parts: int = 0  # a part that cannot be opened or whose json cannot be read
    listed: int = 0  # how many skips were warned about one by one

    def record(self, kind: str, where: str, why: str, n: int = 1) -> None:
        setattr(self, kind, getattr(self, kind) + n)
        if self.listed < MAX_LISTED_SKIPS:
            warnings.warn(f"DiffusionDB: skipped {where}: {why}", stacklevel=3)
        elif self.listed == MAX_LISTED_SKIPS:
            warnings.warn("DiffusionDB: further skipped files are counted, not listed", stacklevel=3)
        self.listed += 1

    @property
    def total(self) -> int:
        return self.missing_image + self.missing_prompt + self.unreadable + self.bad_parts

    def as_dict(self) -> dict:
        return asdict(self)

    def describe(self) -> str:
        return (f"{self.missing_image} json entries without image, {self.missing_prompt} images without prompt, "
                f"{self.unreadable} unreadable images, {self.bad_parts} unreadable parts")


class PartReader:
    """One DiffusionDB part, a folder or a zip file: its prompts, its image names, their bytes."""

    def __init__(self, name: str, path: Path):
        self.name = name
        self.path = path
        self.is_zip = path.suffix == ".zip"
        self._zip: zipfile.ZipFile | None = None
        self._members: dict[str, str] = {}  # base name -> member name (zip)
        if self.is_zip:
            try:
                self._zip = zipfile.ZipFile(path)
            except (zipfile.BadZipFile, OSError) as exc:
                raise DataError(f"cannot open {path}: {exc} (the zip file is damaged; download it again)") from None
            for info in self._zip.infolist():
                if not info.is_dir():
                    self._members.setdefault(info.filename.rsplit("/", 1)[-1], info.filename)

    def label(self, file: str) -> str:
        """How a file of this part is named in messages."""
        return self.label_for(self.path, file)

    @staticmethod
    def label_for(path: Path, file: str) -> str:
        return f"{path}:{file}" if path.suffix == ".zip" else f"{path}/{file}"

    def file_names(self) -> list[str]:
        if self.is_zip:
            return sorted(self._members)
        return sorted(entry.name for entry in os.scandir(self.path) if entry.is_file())

    def image_names(self) -> list[str]:
        return [name for name in self.file_names() if name.lower().endswith(IMAGE_SUFFIXES)]

    def prompts(self) -> dict[str, dict]:
        """The part's json: file name -> {"p": prompt, ...}.  DataError if absent or malformed."""
        json_name = f"{self.name}.json"
        if json_name not in self.file_names():
            raise DataError(f"{self.label(json_name)} is missing")
        try:
            table = json.loads(self.read(json_name))
        except (ValueError, UnicodeDecodeError) as exc:
            raise DataError(f"{self.label(json_name)} is not valid JSON: {exc}") from None
        if not isinstance(table, dict):
            raise DataError(f"{self.label(json_name)} must map file names to {{\"p\": prompt, ...}}")
        return table

    def read(self, file: str) -> bytes:
        try:
            if self._zip is not None:
                return self._zip.read(self._members[file])
            return (self.path / file).read_bytes()
        except KeyError:
            raise ImageReadError(f"{self.label(file)} is missing") from None
        except FileNotFoundError:
            raise ImageReadError(f"{self.label(file)} is missing") from None
        except (OSError, zipfile.BadZipFile, EOFError) as exc:
            raise ImageReadError(f"cannot read {self.label(file)}: {exc}") from None

    def close(self) -> None:
        if self._zip is not None:
            self._zip.close()
            self._zip = None

    def __enter__(self) -> PartReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def find_parts(root: str | Path) -> list[tuple[str, Path]]:
    """(part name, folder or zip path) in numeric order; a folder wins over a zip of the same part."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataError(f"DiffusionDB folder not found: {root}; {LAYOUT_HELP}")
    found: dict[str, Path] = {}
    for entry in sorted(root.iterdir()):
        name = entry.name[:-4] if entry.name.endswith(".zip") and entry.is_file() else entry.name
        if not PART_NAME.match(name) or not (entry.is_dir() or entry.suffix == ".zip"):
            continue
        if name not in found or entry.is_dir():
            found[name] = entry
    if not found:
        raise DataError(f"no DiffusionDB part in {root}; {LAYOUT_HELP}")
    return sorted(found.items(), key=lambda kv: (int(PART_NAME.match(kv[0]).group(1)), kv[0]))


def decode_image(data: bytes, label: str):
    """A fully decoded RGB PIL image; ImageReadError naming `label` when the bytes are not an image."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            return img.convert("RGB")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ImageReadError(f"cannot decode image {label}: {exc} (the file is corrupt or truncated)") from None


def entry_prompt(entry) -> str | None:
    """The prompt of a json entry, or None when the entry has no usable "p"."""
    if isinstance(entry, dict) and isinstance(entry.get("p"), str):
        return entry["p"]
    return None


def entry_meta(entry: dict) -> dict:
    """Generation settings of a json entry, with readable keys (unknown keys kept as they are)."""
    names = {"se": "seed", "c": "cfg", "st": "steps", "sa": "sampler"}
    return {names.get(k, k): v for k, v in entry.items() if k != "p"}


def iter_part(reader: PartReader, skips: SkipCounts, decode: bool = True) -> Iterator[DiffusionDBPair]:
    """The pairs of one part, in sorted file order, skipping (and counting) what is broken."""
    try:
        table = reader.prompts()
    except DataError as exc:
        images = reader.image_names()
        skips.record("bad_parts", str(reader.path), f"{exc}; its {len(images)} image(s) have no prompt")
        skips.missing_prompt += len(images)
        return
    images = set(reader.image_names())
    for file in sorted(images | set(table)):
        prompt = entry_prompt(table.get(file))
        if file not in images:
            skips.record("missing_image", reader.label(file), f"listed in {reader.name}.json but the image is missing")
            continue
        if prompt is None:
            skips.record("missing_prompt", reader.label(file), f"no prompt for it in {reader.name}.json")
            continue
        try:
            data = reader.read(file)
            image = decode_image(data, reader.label(file)) if decode else data
        except ImageReadError as exc:
            skips.record("unreadable", reader.label(file), str(exc))
            continue
        yield DiffusionDBPair(reader.name, file, prompt, image, entry_meta(table[file]))


def iter_diffusiondb(
    root: str | Path,
    *,
    skips: SkipCounts | None = None,
    decode: bool = True,
    parts: Iterable[str] | None = None,
) -> Iterator[DiffusionDBPair]:
    """Every image-prompt pair of a DiffusionDB folder, one at a time, in a fixed order.

    Args:
        root: folder holding `part-XXXXXX/` folders and/or `part-XXXXXX.zip` files.
        skips: counts what was skipped (pass one to read the counts afterwards).
        decode: decode images (skipping unreadable ones); False yields the raw bytes unchecked.
        parts: read only these part names (default: all).
    Yields:
        DiffusionDBPair(part, file, prompt, image, meta), meta = {"seed", "cfg", "steps", "sampler"}.
    Raises:
        DataError: the folder does not exist or holds no part.
    """
    skips = skips if skips is not None else SkipCounts()
    wanted = set(parts) if parts is not None else None
    for name, path in find_parts(root):
        if wanted is not None and name not in wanted:
            continue
        try:
            reader = PartReader(name, path)
        except DataError as exc:
            skips.record("bad_parts", str(path), str(exc))
            continue
        with reader:
            yield from iter_part(reader, skips, decode)
    if skips.total:
        warnings.warn(f"DiffusionDB {root}: skipped {skips.describe()}", stacklevel=2)


# -- preprocessing ---------------------------------------------------------------------------
def to_pixels(image, size: int) -> np.ndarray:
    """(size, size, 3) uint8: bicubic square resize of an RGB PIL image (aspect ratio not kept)."""
    from PIL import Image

    if image.size != (size, size):
        image = image.resize((size, size), Image.BICUBIC)
    return np.asarray(image, dtype=np.uint8)


def prepare(data: bytes, label: str, size: int) -> np.ndarray:
    """Decode and resize one image file's bytes."""
    return to_pixels(decode_image(data, label), size)


def to_input(pixels: list[np.ndarray], device: str, flips=None):
    """Normalised float batch (B, 3, S, S) on `device`; `flips` (bool tensor (B,)) mirrors rows."""
    import torch

    from agiqa_bench.training import normalise

    batch = torch.from_numpy(np.stack(pixels)).permute(0, 3, 1, 2)
    if flips is not None and bool(flips.any()):
        batch = torch.where(flips.view(-1, 1, 1, 1), batch.flip(-1), batch)
    return normalise(batch.to(device))


# -- the model ------------------------------------------------------------------------------
def pos_embed_owner(visual):
    """The module holding the visual tower's grid positional embedding (ResNet: attnpool; ViT: itself)."""
    return visual.attnpool if hasattr(visual, "attnpool") else visual


def native_image_size(visual) -> int:
    size = visual.image_size
    return int(size[0] if isinstance(size, (tuple, list)) else size)


def grid_for(visual, image_size: int) -> int:
    """Token grid side at `image_size`; ConfigError when the size does not fit the architecture."""
    if hasattr(visual, "attnpool"):
        if image_size % 32:
            raise ConfigError(f"a ResNet CLIP needs an image size divisible by 32, got {image_size}")
        return image_size // 32
    patch = visual.conv1.kernel_size[0]
    if image_size % patch:
        raise ConfigError(f"this ViT CLIP needs an image size divisible by its patch size {patch}, got {image_size}")
    return image_size // patch


def resized_pos_embed(visual, image_size: int):
    """The visual positional embedding resized (bicubic, leading token kept) to the grid of `image_size`."""
    from agiqa_bench.clip import resize_attnpool_pos_embed

    pos = pos_embed_owner(visual).positional_embedding.data
    return resize_attnpool_pos_embed(pos, grid_for(visual, image_size))


def set_image_size(visual, image_size: int) -> None:
    """Make the visual tower take `image_size` inputs (resizes its positional embedding)."""
    import torch

    owner = pos_embed_owner(visual)
    trainable = owner.positional_embedding.requires_grad
    owner.positional_embedding = torch.nn.Parameter(resized_pos_embed(visual, image_size), requires_grad=trainable)
    if hasattr(visual, "grid_size"):
        grid = grid_for(visual, image_size)
        visual.grid_size = (grid, grid)
        visual.image_size = (image_size, image_size)
    else:
        visual.image_size = image_size


def pos_embed_key(visual) -> str:
    return "attnpool.positional_embedding" if hasattr(visual, "attnpool") else "positional_embedding"


def build_clip(clip_model: str, pretrained: str, image_size: int | None, seed: int):
    """(CLIP at `image_size`, native size).  Random weights (pretrained "") are drawn from `seed`."""
    import torch

    torch.manual_seed(seed)
    clip = load_clip(clip_model, pretrained)
    native = native_image_size(clip.visual)
    size = image_size or native
    grid_for(clip.visual, size)
    if size != native:
        set_image_size(clip.visual, size)
    return clip, native


def load_clip(model: str, pretrained: str):
    """`agiqa_bench.clip.load_clip` (a name of its own so tests can watch the model it makes)."""
    from agiqa_bench.clip import load_clip as load

    return load(model, pretrained)


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


def load_state(path: Path) -> dict | None:
    import torch

    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a damaged state file: say so, do not guess
        raise DataError(f"cannot read the resume state {path}: {exc}; delete it to start over") from None
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise DataError(f"{path} is not an Image2Prompt resume state; delete it to start over")
    return state


def check_same_config(state: dict, config: dict, path: Path) -> None:
    """ConfigError unless the saved run had the same settings as this call."""
    differ = sorted(k for k in set(config) | set(state["config"]) if state["config"].get(k) != config.get(k))
    if differ:
        shown = ", ".join(f"{k}: saved {state['config'].get(k)!r}, now {config.get(k)!r}" for k in differ)
        raise ConfigError(f"{path} holds an interrupted run with other settings ({shown}); "
                          "repeat that run's options to resume it, or delete the file to start over")


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


class ReaderCache:
    """A few open PartReaders (least recently used closed first)."""

    def __init__(self, root: Path, size: int = 8):
        self.paths = dict(find_parts(root))
        self.size = size
        self.open: OrderedDict[str, PartReader] = OrderedDict()

    def get(self, part: str) -> PartReader:
        if part not in self.open:
            if part not in self.paths:
                raise DataError(f"DiffusionDB part {part} (in the kept-pair index) is no longer in the corpus")
            self.open[part] = PartReader(part, self.paths[part])
            while len(self.open) > self.size:
                self.open.popitem(last=False)[1].close()
        self.open.move_to_end(part)
        return self.open[part]

    def close(self) -> None:
        for reader in self.open.values():
            reader.close()
        self.open.clear()


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


# -- training ---------------------------------------------------------------------------------
def flips_for(seed: int, step: int, n: int, enabled: bool):
    """Horizontal flips of update `step`: a pure function of (seed, step), so resuming repeats them."""
    import torch

    if not enabled:
        return None
    gen = torch.Generator().manual_seed((seed * 1_000_003 + step * 7919) % (2**63 - 1))
    return torch.rand(n, generator=gen) < 0.5


def image2prompt_loss(image_features, text_emb):
    """mean(1 - cos(f_img(I), h_txt(T))): CosineEmbeddingLoss with target +1."""
    import torch.nn.functional as F

    return (1.0 - F.cosine_similarity(image_features.float(), text_emb, dim=-1)).mean()


def train_step(visual, optimizer, images, text_emb, amp: bool) -> float:
    """One AdamW update of the image encoder; returns the batch loss."""
    import torch

    visual.train()
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
        features = visual(images)
    loss = image2prompt_loss(features, text_emb)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return float(loss.detach())


def mean_cosine(visual, kept: KeptPairs, rows: np.ndarray, readers, size: int, batch_size: int, device: str, pool) -> float:
    """Mean cos(f_img, h_txt) of `rows` with the image encoder in eval mode."""
    import torch

    visual.eval()
    total = 0.0
    batches = [rows[i:i + batch_size] for i in range(0, len(rows), batch_size)]
    with torch.inference_mode():
        for batch_rows, pixels in iter_batches(kept, batches, readers, size, pool):
            target = torch.from_numpy(np.asarray(kept.text_emb[batch_rows])).to(device)
            feats = visual(to_input(pixels, device)).float()
            total += float(torch.nn.functional.cosine_similarity(feats, target, dim=-1).sum())
    return total / max(1, len(rows))


def new_train_progress() -> dict:
    return {"step": 0, "epoch_loss_sum": 0.0, "epoch_loss_count": 0, "epoch_losses": [], "train_seconds": 0.0,
            "train_images": 0}


class Log:
    """Progress messages to `log`, at most one every `every` seconds unless forced."""

    def __init__(self, log: Callable[[str], None] | None, every: float = 15.0):
        self.log, self.every, self.last = log, every, 0.0

    def maybe(self, message: str, force: bool = False) -> None:
        now = time.monotonic()
        if self.log is not None and (force or now - self.last >= self.every):
            self.log(message)
            self.last = now


def warmup_steps_for(total: int, warmup_steps: int | None) -> int:
    return min(1000, total // 20) if warmup_steps is None else max(0, warmup_steps)


def output_visual_state(visual, native: int, image_size: int) -> tuple[dict, object]:
    """(state dict with the positional embedding at the native grid, trained-size embedding or None)."""
    state = {k: v.detach().cpu().clone() for k, v in visual.state_dict().items()}
    if image_size == native:
        return state, None
    key = pos_embed_key(visual)
    trained = state[key]
    state[key] = resized_pos_embed(visual, native).cpu()
    return state, trained


def pretrain_image2prompt(
    diffusiondb: str | Path,
    out: str | Path,
    *,
    clip_model: str = "RN50-quickgelu",
    pretrained: str = "openai",
    image_size: int | None = None,
    threshold: float = 0.35,
    epochs: int = 1,
    batch_size: int = 32,
    lr: float = 1e-5,
    weight_decay: float = 0.0,
    schedule: str = "cosine",
    warmup_steps: int | None = None,
    hflip: bool = False,
    shuffle_buffer: int = 4096,
    device: str = "cpu",
    max_pairs: int | None = None,
    seed: int = 0,
    workers: int | None = None,
    save_every: int = 1000,
    eval_pairs: int | None = 2048,
    stop_after_steps: int | None = None,
    overwrite: bool = False,
    log: Callable[[str], None] | None = None,
) -> dict:
    """Image2Prompt pretraining of CLIP's image encoder on a DiffusionDB folder (see the module docstring).

    Args:
        diffusiondb: DiffusionDB root (part folders and/or zips).
        out: checkpoint to write (also names `OUT.index.jsonl`, `OUT.text_emb.npy`, `OUT.state.pt`).
        clip_model, pretrained: the CLIP to start from (open_clip name; tag, file or "" for random
            weights drawn from `seed`).
        image_size: training (and filtering) input side; None: the model's native size.
        threshold: keep pairs whose initial image-text cosine is >= this.
        epochs, batch_size, lr, weight_decay, schedule ("cosine" | "constant"), warmup_steps (None:
            min(1000, 5 % of the steps)), hflip, shuffle_buffer, seed: training settings.
        device: cpu, cuda[:N] or auto.
        max_pairs: stop the filter pass after this many readable pairs (None: all).
        workers: image-decoding threads (None: up to 8; 0: decode in this thread).
        save_every: steps between resume states.
        eval_pairs: mean cosine before/after is measured on the first this many kept pairs (None: all).
        stop_after_steps: end this call (saving the resume state) after this many updates; 0 stops
            right after the filter pass.  The output is then not written ("finished": False).
        overwrite: replace an existing `out` (otherwise an existing one is an error, as a finished run).
        log: receives progress lines.
    Returns:
        summary dict: pairs_seen, pairs_kept, skipped, steps, mean_cosine_before/after, first/final
        epoch loss, seconds, images_per_second, resumed, finished, out.
    """
    started = time.monotonic()
    root, out = Path(diffusiondb).expanduser().resolve(), Path(out).expanduser()
    paths = Paths(out)
    check_settings(epochs, batch_size, lr, schedule, threshold)
    device = resolve_device(device)
    find_parts(root)  # a clear error before any model is loaded
    state = load_state(paths.state)
    if state is None and out.exists() and not overwrite:
        raise ConfigError(f"{out} exists (a finished Image2Prompt run); pass overwrite=True (--overwrite) to redo it")
    clip, native = build_clip(clip_model, pretrained, image_size, seed)
    size = image_size or native
    config = {"diffusiondb": str(root), "clip_model": clip_model, "pretrained": pretrained or "", "image_size": size,
              "threshold": float(threshold), "epochs": epochs, "batch_size": batch_size, "lr": float(lr),
              "weight_decay": float(weight_decay), "schedule": schedule, "warmup_steps": warmup_steps,
              "hflip": hflip, "shuffle_buffer": shuffle_buffer, "max_pairs": max_pairs, "seed": seed}
    resumed = state is not None
    if state is None:
        state = {"format": STATE_FORMAT, "config": config, "filter": new_filter_progress(), "train": None}
    else:
        check_same_config(state, config, paths.state)
    out.parent.mkdir(parents=True, exist_ok=True)
    logger = Log(log)
    save = lambda: atomic_torch_save(state, paths.state)  # noqa: E731
    n_workers = min(8, os.cpu_count() or 1) if workers is None else workers
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(n_workers) if n_workers > 0 else _NoPool() as pool:
        pool = pool if n_workers > 0 else None
        if not state["filter"]["done"]:
            run_filter(clip, clip_model, root, paths, state, size, batch_size, max_pairs, threshold, device, pool,
                       save, logger)
        visual = clip.visual.to(device)
        del clip  # the text tower is not needed any more: training uses the stored text embeddings
        kept = KeptPairs(paths)
        return train_and_save(visual, kept, root, paths, state, native, device, pool, save, logger,
                              save_every=save_every, eval_pairs=eval_pairs, stop_after_steps=stop_after_steps,
                              resumed=resumed, started=started)


class _NoPool:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def check_settings(epochs: int, batch_size: int, lr: float, schedule: str, threshold: float) -> None:
    if epochs < 0 or batch_size < 1:
        raise ConfigError(f"epochs must be >= 0 and batch_size >= 1, got {epochs} and {batch_size}")
    if lr <= 0:
        raise ConfigError(f"lr must be positive, got {lr}")
    if schedule not in ("cosine", "constant"):
        raise ConfigError(f"schedule must be cosine or constant, got {schedule!r}")
    if not -1.0 <= threshold <= 1.0:
        raise ConfigError(f"threshold is a cosine and must lie in [-1, 1], got {threshold}")


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


class Trainer:
    """The training phase: updates of `visual` on the kept pairs, with resume states."""

    def __init__(self, visual, kept: KeptPairs, state: dict, device: str, save: Callable[[], None]):
        import torch

        self.visual, self.kept, self.state, self.device, self._save = visual, kept, state, device, save
        self.config = state["config"]
        for p in visual.parameters():
            p.requires_grad_(True)
        self.optimizer = torch.optim.AdamW(visual.parameters(), lr=self.config["lr"],
                                           weight_decay=self.config["weight_decay"])
        if state["train"] is None:
            state["train"] = new_train_progress()
        elif "visual" in state:
            visual.load_state_dict(state["visual"])
            self.optimizer.load_state_dict(state["optimizer"])
            torch.set_rng_state(state["rng"])
        self.progress = state["train"]
        self.per_epoch = math.ceil(len(kept) / self.config["batch_size"])
        self.total = self.config["epochs"] * self.per_epoch
        self.warmup = warmup_steps_for(self.total, self.config["warmup_steps"])

    @property
    def done(self) -> bool:
        return self.progress["step"] >= self.total

    def save(self) -> None:
        import torch

        self.state["visual"] = self.visual.state_dict()
        self.state["optimizer"] = self.optimizer.state_dict()
        self.state["rng"] = torch.get_rng_state()
        self._save()

    def remaining_batches(self) -> tuple[int, list[np.ndarray]]:
        """(epoch, batches of rows left in it) from the current step."""
        bs = self.config["batch_size"]
        epoch, first = divmod(self.progress["step"], self.per_epoch)
        order = epoch_order(self.kept, self.config["seed"], epoch, self.config["shuffle_buffer"])
        return epoch, [order[i * bs:(i + 1) * bs] for i in range(first, self.per_epoch)]

    def update(self, rows: np.ndarray, pixels: list[np.ndarray]) -> float:
        """One optimisation step on a batch; returns its loss."""
        import torch

        step, cfg = self.progress["step"], self.config
        for group in self.optimizer.param_groups:
            group["lr"] = warmup_cosine(step, self.total, cfg["lr"], self.warmup, cfg["schedule"])
        images = to_input(pixels, self.device, flips_for(cfg["seed"], step, len(rows), cfg["hflip"]))
        target = torch.from_numpy(np.asarray(self.kept.text_emb[rows])).to(self.device)
        loss = train_step(self.visual, self.optimizer, images, target, amp=self.device.startswith("cuda"))
        self.progress["step"] = step + 1
        self.progress["epoch_loss_sum"] += loss * len(rows)
        self.progress["epoch_loss_count"] += len(rows)
        self.progress["train_images"] += len(rows)
        return loss

    def end_epoch_if_due(self) -> bool:
        p = self.progress
        if p["step"] % self.per_epoch:
            return False
        p["epoch_losses"].append(p["epoch_loss_sum"] / max(1, p["epoch_loss_count"]))
        p["epoch_loss_sum"], p["epoch_loss_count"] = 0.0, 0
        return True

    def run(self, readers: ReaderCache, pool, logger: Log, save_every: int, stop_after_steps: int | None) -> bool:
        """Train until the end (True) or until `stop_after_steps` updates were made in this call (False)."""
        if stop_after_steps == 0:
            self.save()
            return self.done
        steps_here = 0
        while not self.done:
            epoch, batches = self.remaining_batches()
            tick = time.monotonic()
            for rows, pixels in iter_batches(self.kept, batches, readers, self.config["image_size"], pool):
                loss = self.update(rows, pixels)
                self.progress["train_seconds"] += time.monotonic() - tick  # image loading included
                steps_here += 1
                epoch_end = self.end_epoch_if_due()
                logger.maybe(f"train: step {self.progress['step']}/{self.total} (epoch {epoch + 1}), "
                             f"loss {loss:.4f}", force=epoch_end)
                stop = stop_after_steps is not None and steps_here >= stop_after_steps and not self.done
                if epoch_end or stop or self.progress["step"] % max(1, save_every) == 0:
                    self.save()
                if stop:
                    return False
                tick = time.monotonic()
        return True


def train_and_save(visual, kept, root, paths, state, native, device, pool, save, logger, *, save_every, eval_pairs,
                   stop_after_steps, resumed, started) -> dict:
    """Train (resuming), then measure, write the checkpoint and remove the resume state."""
    trainer = Trainer(visual, kept, state, device, save)
    readers = ReaderCache(root)
    try:
        if not trainer.run(readers, pool, logger, save_every, stop_after_steps):
            return summary(state, paths, finished=False, resumed=resumed, started=started)
        result = finish(visual, kept, readers, paths, state, native, device, pool, eval_pairs)
    finally:
        readers.close()
    paths.state.unlink(missing_ok=True)
    return summary(state, paths, finished=True, resumed=resumed, started=started, **result)


def finish(visual, kept, readers, paths, state, native, device, pool, eval_pairs) -> dict:
    """Measure the mean cosine after training and write the output checkpoint."""
    config = state["config"]
    rows = np.arange(len(kept) if eval_pairs is None else min(eval_pairs, len(kept)))
    after = mean_cosine(visual, kept, rows, readers, config["image_size"], config["batch_size"], device, pool)
    before = float(kept.cosine[rows].mean())
    weights, trained_pos = output_visual_state(visual, native, config["image_size"])
    filt, progress = state["filter"], state["train"]
    ckpt = {"format": FORMAT, "clip_model": config["clip_model"], "pretrained": config["pretrained"],
            "image_size": config["image_size"], "native_image_size": native, "threshold": config["threshold"],
            "pairs_seen": filt["pairs_seen"], "pairs_kept": filt["pairs_kept"], "epochs": config["epochs"],
            "steps": progress["step"], "settings": dict(config), "epoch_losses": list(progress["epoch_losses"]),
            "mean_cosine_before": before, "mean_cosine_after": after, "eval_pairs": len(rows),
            "skipped": {k: v for k, v in filt["skips"].items() if k != "listed"}, "visual": weights}
    if trained_pos is not None:
        ckpt["positional_embedding_at_image_size"] = trained_pos
    atomic_torch_save(ckpt, paths.out)
    return {"mean_cosine_before": before, "mean_cosine_after": after, "eval_pairs": len(rows)}


def summary(state, paths, *, finished, resumed, started, **extra) -> dict:
    """What a call of `pretrain_image2prompt` did (the numbers of the whole run, resumed parts included)."""
    filt, progress = state["filter"], state["train"]
    losses = progress["epoch_losses"]
    seconds = progress["train_seconds"]
    return {"out": str(paths.out), "finished": finished, "resumed": resumed, "pairs_seen": filt["pairs_seen"],
            "pairs_kept": filt["pairs_kept"], "skipped": {k: v for k, v in filt["skips"].items() if k != "listed"},
            "steps": progress["step"], "first_epoch_loss": losses[0] if losses else None,
            "final_loss": losses[-1] if losses else None,
            "images_per_second": progress["train_images"] / seconds if seconds > 0 else None,
            "seconds": time.monotonic() - started, "mean_cosine_before": None, "mean_cosine_after": None,
            "eval_pairs": 0, **extra}
