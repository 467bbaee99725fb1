"""Shared pieces of the dataset loaders: label-file reading, image folders, checks."""

from __future__ import annotations

import math
import os
import stat
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Iterable, Sequence

import pandas as pd

from agiqa_bench.errors import BadImagesError, ConfigError, DataError, MissingImagesError
from agiqa_bench.records import Dataset, Item

#: Environment variable naming a folder that holds one sub-folder per dataset
#: (`$AGIQA_BENCH_DATA/agiqa1k`, `$AGIQA_BENCH_DATA/agiqa3k`, ...).
DATA_ENV = "AGIQA_BENCH_DATA"


def swap_in_folder(tmp: Path, out: Path) -> None:
    """Move a fully written folder `tmp` to `out`, replacing any older `out` only at the last moment."""
    import shutil

    if out.exists():
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        os.replace(out, old)
        os.replace(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, out)


class DataWarning(UserWarning):
    """Something in the labels was handled in a way the user should know about."""


#: Label files shipped with the package (see labels/SOURCE.md): one folder per dataset.
SHIPPED_LABELS = Path(__file__).resolve().parent / "labels"


def shipped_labels(name: str) -> Path | None:
    """The folder of a dataset's shipped label file, if the package ships one."""
    folder = SHIPPED_LABELS / name
    return folder if folder.is_dir() else None


def resolve_root(name: str, data_root: str | Path | None, *, shipped: bool = False) -> Path:
    """The dataset folder: `--data-root`, else `$AGIQA_BENCH_DATA/<name>`, else (with `shipped`) the
    package's label folder, whose images then come from `--images`."""
    if data_root is not None:
        root = Path(data_root).expanduser()
    elif os.environ.get(DATA_ENV):
        root = Path(os.environ[DATA_ENV]).expanduser() / name
    elif shipped and shipped_labels(name) is not None:
        return shipped_labels(name)
    else:
        raise DataError(
            f"dataset {name!r} needs its files: pass --data-root DIR (the folder holding its label file "
            f"and images) or set {DATA_ENV} to a folder containing a '{name}' sub-folder."
        )
    if not root.is_dir():
        raise DataError(f"data root for {name!r} does not exist or is not a folder: {root}")
    return root


def inside(path: Path, root: Path) -> bool:
    """Whether `path`, with every symbolic link resolved, lies under `root` (resolved too)."""
    real, base = os.path.realpath(path), os.path.realpath(root)
    return real == base or os.path.commonpath([base, real]) == base


def contained(path: Path, root: Path, what: str) -> Path:
    """`path` unless a symbolic link takes it outside the data root `root`: then a DataError that names the
    path and where it leads (never its content)."""
    if not inside(path, root):
        raise DataError(f"{what} {path} leads outside the data root {root} (to {os.path.realpath(path)}) through a "
                        f"symbolic link; agiqa-bench reads only inside the data root: copy the file in, or pass the "
                        f"folder it lives in as --data-root (images: --images)")
    return path


def require_file(root: Path, filename: str, dataset: str, hint: str = "") -> Path:
    """The label file under `root` (a --data-root must hold its own; without one the shipped file is used), which
    must lie inside `root` once links are resolved, and be a regular file (a FIFO would block the read)."""
    path = root / filename
    if path.is_file():
        return contained(path, root, "label file")
    if path.exists() or path.is_symlink():
        contained(path, root, "label file")
        raise DataError(f"{dataset}: the label file {path} is not a regular file (a folder, FIFO or device)")
    if shipped_labels(dataset) is not None:
        hint += (f" Or leave out --data-root (and {DATA_ENV}) to use the label file that ships with agiqa-bench, "
                 "with --images DIR for the images.")
    raise DataError(f"{dataset}: expected the label file {filename} at {path}, but it is not there.{hint}")


#: Label files are small (the largest real one, AIGIQA-20K's, is about 2 MB): caps that a hostile file meets
#: before it is parsed, so memory stays bounded.  On disk, inflated (the members of an .xlsx zip, the
#: compressed elements of a .mat), and the columns a sheet may address (a lone far cell such as XFD1500 makes
#: pandas pad 16,384 columns).
MAX_LABEL_BYTES = 64 * 2**20
MAX_INFLATED_BYTES = 256 * 2**20
MAX_SHEET_COLUMNS = 1024


def check_label_file(path: Path) -> Path:
    """`path` if it is a regular file within the caps above, else a one-line DataError naming it."""
    try:
        st = os.stat(path)
    except OSError as exc:
        raise DataError(f"cannot read label file {path}: {exc.strerror or exc}") from None
    if not stat.S_ISREG(st.st_mode):
        raise DataError(f"label file {path} is not a regular file (a folder, FIFO or device)")
    if st.st_size > MAX_LABEL_BYTES:
        raise DataError(f"label file {path} has {st.st_size:,} bytes, over the {MAX_LABEL_BYTES // 2**20} MiB cap for "
                        f"label files")
    suffix = path.suffix.lower()
    if suffix == ".xlsx":
        _check_xlsx(path)
    elif suffix == ".mat":
        _check_mat(path)
    return path


def _check_xlsx(path: Path) -> None:
    """Declared inflated sizes of the zip's members, then (streaming) the columns the sheets' cells address."""
    import re
    import zipfile
    from xml.etree.ElementTree import iterparse

    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
            total = sum(m.file_size for m in members)
            if total > MAX_INFLATED_BYTES:
                raise DataError(f"label file {path} inflates to {total:,} bytes, over the "
                                f"{MAX_INFLATED_BYTES // 2**20} MiB cap (a compressed payload, not a label table)")
            ref = re.compile(r"([A-Z]+)")
            for member in members:
                if not (member.filename.startswith("xl/worksheets/") and member.filename.endswith(".xml")):
                    continue
                with archive.open(member) as fh:
                    for _, element in iterparse(fh):
                        if element.tag.endswith("}c") or element.tag == "c":
                            letters = ref.match(element.get("r", "") or "")
                            if letters and _column_number(letters[1]) > MAX_SHEET_COLUMNS:
                                raise DataError(f"label file {path}: a cell at {element.get('r')} in "
                                                f"{member.filename} lies beyond column {MAX_SHEET_COLUMNS}; a label "
                                                f"table has a few columns (delete the stray cell)")
                        element.clear()
    except DataError:
        raise
    except Exception as exc:  # a broken zip or XML: pandas would fail on it too
        raise DataError(f"cannot read label file {path}: {type(exc).__name__}: {' '.join(str(exc).split())[:200]}") from None


def _column_number(letters: str) -> int:
    n = 0
    for ch in letters:
        n = n * 26 + (ord(ch) - 64)
    return n


def _check_mat(path: Path) -> None:
    """A MATLAB v5 file's compressed elements must inflate within the cap (checked by inflating in bounded
    chunks, nothing kept); v7.3 (HDF5) files are left to h5py, which reads datasets by their declared shape."""
    import struct
    import zlib

    with open(path, "rb") as fh:
        header = fh.read(128)
        if len(header) < 128 or header[:10] == b"\x89HDF\r\n\x1a\n"[:10] or b"MATLAB 7.3" in header[:20]:
            return
        endian = "<" if header[126:128] == b"IM" else ">"
        inflated = 0
        while True:
            tag = fh.read(8)
            if len(tag) < 8:
                return
            kind, size = struct.unpack(endian + "II", tag)
            if kind >> 16:  # small data element: 4 bytes of data packed in the tag
                continue
            if kind != 15:  # miCOMPRESSED
                fh.seek(size + (-size % 8), 1)
                continue
            stream = zlib.decompressobj()
            left = size
            while left > 0:
                chunk = fh.read(min(left, 1 << 16))
                if not chunk:
                    break
                left -= len(chunk)
                data = stream.decompress(chunk, 1 << 20)
                inflated += len(data)
                while stream.unconsumed_tail and inflated <= MAX_INFLATED_BYTES:
                    data = stream.decompress(stream.unconsumed_tail, 1 << 20)
                    inflated += len(data)
                if inflated > MAX_INFLATED_BYTES:
                    raise DataError(f"label file {path} inflates past {MAX_INFLATED_BYTES // 2**20} MiB (a compressed "
                                    f"payload, not a MOS vector); refused before reading")


def read_table(path: Path, required: Sequence[str]) -> pd.DataFrame:
    """Read a CSV or Excel label file (within the caps of `check_label_file`) and check its columns, naming the
    file on failure."""
    check_label_file(path)
    try:
        if path.suffix.lower() in (".xlsx", ".xls"):
            frame = pd.read_excel(path)
        else:
            frame = pd.read_csv(path)
    except Exception as exc:  # pandas raises many types; all mean "unreadable file"
        raise DataError(f"cannot read label file {path}: {exc}") from None
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise DataError(
            f"label file {path} lacks column(s) {', '.join(missing)}; it has: {', '.join(map(str, frame.columns))}"
        )
    return frame


def row_label(path: Path, index: int, header_rows: int = 1) -> str:
    """'file.csv row 12' with the row number as a spreadsheet shows it (header = row 1)."""
    return f"{path} row {index + 1 + header_rows}"


def parse_float(value, path: Path, index: int, column: str, header_rows: int = 1) -> float:
    try:
        out = float(value)
    except (TypeError, ValueError):
        out = math.nan
    if not math.isfinite(out):
        raise DataError(f"{row_label(path, index, header_rows)}: column {column!r} must be a number, got {value!r}")
    return out


def flag(value, dataset: str, option: str) -> bool:
    """A yes/no dataset option: a bool, or the text --dataset-opt gives (true/false, yes/no, 1/0, on/off)."""
    if isinstance(value, bool):
        return value
    low = str(value).strip().lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{dataset}: option {option} must be true or false, got {value!r}")


def text(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return str(value).strip()


#: Quote pairs a copy of a label file may wrap around a whole prompt (a CSV written with literal quotes).
_WRAPPING_QUOTES = (('"', '"'), ("'", "'"), ("\u201c", "\u201d"))


def prompt_text(value) -> str:
    """A prompt as every layout of a dataset must give it: whitespace runs collapsed to one space, ends
    stripped, and quotes wrapped around the *whole* prompt removed (`"a corgi"`, and the same in three
    pairs of quotes, give `a corgi`; `"a" and "b"` stays as it is: those quotes belong to the prompt)."""
    out = " ".join(text(value).split())
    for opening, closing in _WRAPPING_QUOTES:
        lead = len(out) - len(out.lstrip(opening))
        trail = len(out) - len(out.rstrip(closing))
        n = min(lead, trail)
        inner = out[n:len(out) - n] if n else out
        if n and opening not in inner and closing not in inner:
            return " ".join(inner.split())
    return out


def find_image_dir(root: Path, candidates: Iterable[str], probe: str) -> Path:
    """The folder holding the images: the first candidate under `root` containing `probe` (else the first
    candidate).  The harness checks it lies inside the data root (`finish_dataset`)."""
    for name in candidates:
        folder = root / name if name else root
        if (folder / probe).exists():
            return folder
    return root / next(iter(candidates))


def labels_only(name: str, items: list[Item], targets: tuple[str, ...], label_file: Path, image_dir: Path,
                notes: list[str], root: Path, attributes: tuple[str, ...] = ()) -> Dataset:
    """What a loader returns: the parsed labels, images named relative to `image_dir`, nothing checked yet
    (`finish_dataset` does that for every dataset, plugins included)."""
    return Dataset(name=name, items=items, targets=targets, label_file=label_file, image_dir=image_dir,
                   notes=list(notes), attributes=attributes, data_root=root)


def attach_images(
    name: str,
    items: list[Item],
    label_file: Path,
    image_dir: Path,
    *,
    check_images: bool,
    drop_missing: bool,
    drop_bad_images: bool = False,
) -> tuple[list[Item], list[str]]:
    """Check that every image exists and decodes (`images.check_image`: header, pixel cap, a cheap decode);
    raise up front listing every bad one, or drop them with a warning when asked."""
    notes: list[str] = []
    if not check_images:
        return items, notes
    if SHIPPED_LABELS in image_dir.resolve().parents or image_dir.resolve() == SHIPPED_LABELS:
        raise DataError(
            f"{name}: its label file ships with agiqa-bench ({label_file}) but its images do not: pass "
            f"--images DIR (the folder holding the dataset's images) or --data-root DIR (the dataset's folder)")
    missing = [item.id for item in items if not item.image.is_file()]
    if missing and not drop_missing:
        raise MissingImagesError(label_file, image_dir, [Path(m).name for m in missing])
    if missing:
        shown = ", ".join(missing[:10]) + (f" (and {len(missing) - 10} more)" if len(missing) > 10 else "")
        msg = f"{name}: dropped {len(missing)} item(s) whose image is missing from {image_dir}: {shown}"
        warnings.warn(msg, DataWarning, stacklevel=3)
        notes.append(msg)
        gone = set(missing)
        items = [item for item in items if item.id not in gone]
    items, more = drop_unreadable(name, items, label_file, drop_bad_images)
    notes += more
    if not items:
        raise DataError(f"{name}: no item is left to benchmark (all images missing or unreadable in {image_dir})")
    return items, notes


def drop_unreadable(name: str, items: list[Item], label_file: Path, drop: bool) -> tuple[list[Item], list[str]]:
    """Every image tested once, before any work: all bad ones reported together (or dropped, with `drop`)."""
    from agiqa_bench.errors import ImageReadError
    from agiqa_bench.images import check_image, max_pixels

    cap = max_pixels()
    bad: list[tuple[Item, str]] = []
    for item in items:
        try:
            check_image(item.image, cap=cap)
        except ImageReadError as exc:
            bad.append((item, getattr(exc, "reason", str(exc))))
    if not bad:
        return items, []
    shown = "; ".join(f"{item.id} ({why})" for item, why in bad[:5]) + (f"; and {len(bad) - 5} more" if len(bad) > 5 else "")
    capped = any("over the" in why and "cap" in why for _, why in bad)
    hint = " A genuine large image needs a higher --max-pixels." if capped else ""
    if not drop:
        raise BadImagesError(f"{len(bad)} image(s) listed in {label_file} cannot be used: {shown}. Replace them, "
                             f"or pass --drop-bad-images to benchmark without them (a warning lists what was dropped).{hint}")
    msg = f"{name}: dropped {len(bad)} item(s) whose image cannot be used: {shown}"
    warnings.warn(msg, DataWarning, stacklevel=4)
    gone = {item.id for item, _ in bad}
    return [item for item in items if item.id not in gone], [msg]


def dedupe(items: list[Item], label_file: Path, policy: str) -> tuple[list[Item], list[str]]:
    """Resolve rows that repeat an image name: keep `first`, `last`, or average (`mean`) their targets."""
    if policy not in ("first", "last", "mean"):
        raise DataError(f"unknown duplicate policy {policy!r}; use first, last or mean")
    by_id: dict[str, list[Item]] = {}
    for item in items:
        by_id.setdefault(item.id, []).append(item)
    notes: list[str] = []
    out: list[Item] = []
    for item in items:
        rows = by_id[item.id]
        if len(rows) == 1:
            out.append(item)
            continue
        if item is not rows[0]:
            continue  # emitted at the first occurrence, to keep row order stable
        if policy == "first":
            kept = rows[0]
        elif policy == "last":
            kept = rows[-1]
        else:
            mean = {t: sum(r.targets[t] for r in rows) / len(rows) for t in rows[0].targets}
            kept = replace(rows[0], targets=mean)
        values = "; ".join(", ".join(f"{t}={v:.4f}" for t, v in r.targets.items()) for r in rows)
        msg = f"{label_file.name}: {item.id} is listed {len(rows)} times ({values}); kept '{policy}'"
        warnings.warn(msg, DataWarning, stacklevel=3)
        notes.append(msg)
        out.append(kept)
    return out, notes


def refuse_outside(items: list[Item], label_file: Path, image_dir: Path) -> None:
    """DataError when an item's image path leaves `image_dir`, compared on real paths: `..`, absolute paths and
    symbolic links (an image, or a folder on the way, linked elsewhere) are all resolved first."""
    outside = [item for item in items if not inside(item.image, image_dir)]
    if outside:
        shown = "; ".join(f"{it.id!r} -> {os.path.realpath(it.image)}" for it in outside[:3])
        more = f" (and {len(outside) - 3} more)" if len(outside) > 3 else ""
        raise DataError(f"{label_file}: {len(outside)} row(s) name an image outside the image folder {image_dir}: "
                        f"{shown}{more}. Pass --allow-outside-root to read them anyway")


def finish_dataset(ds: Dataset, *, images=None, drop_missing=False, drop_bad_images=False, allow_outside_root=False,
                   check_images=True, max_pixels=None) -> Dataset:
    """The image options every dataset shares (`spec.IMAGE_OPTIONS`), applied to what its loader returned.

    `images` (another image folder, the user's explicit choice) replaces the loader's; otherwise the loader's
    folder must lie inside the data root once links are resolved.  Each item's image is resolved against the
    folder; a row whose image resolves outside it (`../x.png`, an absolute path, a link elsewhere) is refused,
    naming the label file and the rows, unless `allow_outside_root`.  Then every image is checked (exists,
    decodes, within the pixel cap), unless `check_images` is false, and the bad ones are listed in one error
    or dropped with a warning (`drop_missing`, `drop_bad_images`).
    """
    name = ds.name
    drop_missing, drop_bad_images = flag(drop_missing, name, "drop_missing"), flag(drop_bad_images, name, "drop_bad_images")
    allow_outside_root, check_images = flag(allow_outside_root, name, "allow_outside_root"), flag(check_images, name, "check_images")
    if max_pixels is not None:  # an environment variable, so that worker processes read with the same cap
        from agiqa_bench.images import MAX_PIXELS_ENV

        try:
            cap = int(max_pixels)
        except (TypeError, ValueError):
            cap = 0
        if cap < 1:
            raise ConfigError(f"{name}: max_pixels must be a positive number of pixels, got {max_pixels!r}")
        os.environ[MAX_PIXELS_ENV] = str(cap)
    if images is not None:
        folder = Path(images).expanduser()
        if not folder.is_absolute() and not folder.exists() and ds.data_root is not None:
            folder = ds.data_root / folder
        if not folder.is_dir():
            raise DataError(f"image folder given with --images does not exist: {folder}")
        image_dir = folder
    elif ds.image_dir is None:
        raise DataError(f"dataset {name!r}: its loader named no image folder (Dataset.image_dir); pass --images DIR")
    else:
        image_dir = ds.image_dir
        if ds.data_root is not None:
            contained(image_dir, ds.data_root, "image folder")
    label_file = ds.label_file if ds.label_file is not None else image_dir
    items = [replace(item, image=image_dir / item.image) for item in ds.items]
    if not allow_outside_root:
        refuse_outside(items, label_file, image_dir)
    label_groups = ds.label_groups if ds.label_groups is not None else list(dict.fromkeys(it.group for it in items))
    items, more = attach_images(name, items, label_file, image_dir, check_images=check_images,
                                drop_missing=drop_missing, drop_bad_images=drop_bad_images)
    return replace(ds, items=items, image_dir=image_dir, notes=list(ds.notes) + more, label_groups=label_groups)