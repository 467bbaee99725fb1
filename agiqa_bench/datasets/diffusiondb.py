"""DiffusionDB (Wang et al., ACL 2023): image-prompt pairs read part by part, with bounded memory.

Layout (`iter_diffusiondb`)
---------------------------
The root holds parts as folders `part-000001/` and/or zip files
`part-000001.zip` (as downloaded from poloclub/diffusiondb); each part holds its
images (.png/.webp/.jpg) and `part-000001.json` mapping file name to
{"p": prompt, "se": seed, "c": cfg scale, "st": steps, "sa": sampler}.  When a
part is there both as a folder and a zip, the folder is read.  Parts are read
in numeric order, files in sorted order.  A json entry whose image is missing,
an image without json entry and an unreadable image are skipped with a warning
naming the file (the first 20; the rest are counted) and counted in `SkipCounts`.

Hostile files (`ReadLimits`)
----------------------------
A zip member is never inflated past `member_bytes` (64 MB by default; a DiffusionDB
image is ~0.5 MB): it is refused when its declared size is larger, and the
stream is cut when the actual output grows past the cap whatever the header
says.  A zip whose members declare more than `part_bytes` in all (16 GB; a real
part is ~1 GB) is refused as a whole, and so is one with more than
`part_members` members.  Folder files are capped by their size on disk.  Decoded
images obey the pixel cap of `agiqa_bench.images` (a decompression bomb in a
PNG is skipped like any unreadable image, naming the file).  Every refusal is a
one-line skip naming the part and member; a broken part never aborts the read.
"""

from __future__ import annotations

import json
import os
import re
import warnings
import zipfile
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import NamedTuple

from agiqa_bench.errors import DataError, ImageReadError

IMAGE_SUFFIXES = (".png", ".webp", ".jpg", ".jpeg", ".bmp")
PART_NAME = re.compile(r"^part-(\d+)$")
MAX_LISTED_SKIPS = 20
LAYOUT_HELP = (
    "expected DiffusionDB parts: folders part-000001/ (each holding its images and part-000001.json, "
    "which maps file name -> {\"p\": prompt, ...}) and/or zip files part-000001.zip with the same content, "
    "as downloaded from https://huggingface.co/datasets/poloclub/diffusiondb"
)


@dataclass(frozen=True)
class ReadLimits:
    """Caps on what one part may make us inflate or read (see the module docstring)."""

    member_bytes: int = 64 * 2**20
    part_bytes: int = 16 * 2**30
    part_members: int = 200_000

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

    def __init__(self, name: str, path: Path, limits: ReadLimits | None = None):
        self.name = name
        self.path = path
        self.limits = limits or ReadLimits()
        self.is_zip = path.suffix == ".zip"
        self._zip: zipfile.ZipFile | None = None
        self._members: dict[str, zipfile.ZipInfo] = {}  # base name -> member (zip)
        if self.is_zip:
            try:
                self._zip = zipfile.ZipFile(path)
                infos = [info for info in self._zip.infolist() if not info.is_dir()]
            except (zipfile.BadZipFile, OSError, ValueError) as exc:
                raise DataError(f"cannot open {path}: {exc} (the zip file is damaged; download it again)") from None
            declared = sum(info.file_size for info in infos)
            if len(infos) > self.limits.part_members or declared > self.limits.part_bytes:
                self.close()
                raise DataError(f"{path} declares {len(infos)} members and {declared:,} bytes uncompressed, over the "
                                f"caps of {self.limits.part_members} members and {self.limits.part_bytes:,} bytes per "
                                "part (not a DiffusionDB part, or a zip bomb)")
            for info in infos:
                self._members[info.filename.rsplit("/", 1)[-1]] = info  # a repeated name: the last wins, as in zipfile

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
        """The file's bytes, never more than `limits.member_bytes` of them (ImageReadError beyond)."""
        cap = self.limits.member_bytes
        try:
            if self._zip is not None:
                info = self._members[file]
                if info.file_size > cap:
                    raise ImageReadError(f"{self.label(file)} declares {info.file_size:,} bytes uncompressed, over the "
                                         f"cap of {cap:,} per file (a zip bomb, or not a DiffusionDB image)")
                with self._zip.open(info) as stream:
                    data = stream.read(cap + 1)
            else:
                path = self.path / file
                if path.stat().st_size > cap:
                    raise ImageReadError(f"{self.label(file)} is {path.stat().st_size:,} bytes, over the cap of "
                                         f"{cap:,} per file")
                with open(path, "rb") as f:
                    data = f.read(cap + 1)
            if len(data) > cap:
                raise ImageReadError(f"{self.label(file)} inflates past the cap of {cap:,} bytes per file (its header "
                                     "declares less: a zip bomb)")
            return data
        except KeyError:
            raise ImageReadError(f"{self.label(file)} is missing") from None
        except FileNotFoundError:
            raise ImageReadError(f"{self.label(file)} is missing") from None
        except (OSError, zipfile.BadZipFile, EOFError, ValueError, NotImplementedError) as exc:
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
    """A fully decoded RGB PIL image (pixel cap applied); ImageReadError naming `label` when it is not one."""
    from agiqa_bench.images import decode, to_rgb

    return to_rgb(decode(data, label), label)


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
    limits: ReadLimits | None = None,
) -> Iterator[DiffusionDBPair]:
    """Every image-prompt pair of a DiffusionDB folder, one at a time, in a fixed order.

    Args:
        root: folder holding `part-XXXXXX/` folders and/or `part-XXXXXX.zip` files.
        skips: counts what was skipped (pass one to read the counts afterwards).
        decode: decode images (skipping unreadable ones); False yields the raw bytes unchecked.
        parts: read only these part names (default: all).
        limits: caps on member and part sizes (see `ReadLimits`).
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
            reader = PartReader(name, path, limits)
        except DataError as exc:
            skips.record("bad_parts", str(path), str(exc))
            continue
        with reader:
            yield from iter_part(reader, skips, decode)
    if skips.total:
        warnings.warn(f"DiffusionDB {root}: skipped {skips.describe()}", stacklevel=2)


class ReaderCache:
    """A few open PartReaders (least recently used closed first)."""

    def __init__(self, root: Path, size: int = 8, limits: ReadLimits | None = None):
        self.paths = dict(find_parts(root))
        self.size = size
        self.limits = limits
        self.open: OrderedDict[str, PartReader] = OrderedDict()

    def get(self, part: str) -> PartReader:
        if part not in self.open:
            if part not in self.paths:
                raise DataError(f"DiffusionDB part {part} (in the kept-pair index) is no longer in the corpus")
            self.open[part] = PartReader(part, self.paths[part], self.limits)
            while len(self.open) > self.size:
                self.open.popitem(last=False)[1].close()
        self.open.move_to_end(part)
        return self.open[part]

    def close(self) -> None:
        for reader in self.open.values():
            reader.close()
        self.open.clear()
