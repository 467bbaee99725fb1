"""Published folds: run on the folds a paper used (`run --splits FILE`) and audit any split set for leaks.

Most published AGIQA numbers come from folds that put images of one prompt on both sides of a split (IPCE's
AGIQA-1k and AIGIQA-20K folds share tens to a hundred test prompts with train; its AIGCIQA2023 folds are
random by image).  To reproduce a published row, run on its folds; to see why it is optimistic, audit them.

`load_splits(path, dataset)` reads either

- a JSON file written by `agiqa-bench splits export` (format `agiqa-bench/splits@1`).  When it is what its
  declared protocol gives for this dataset (regenerated from its parameters and compared by hash), it *is*
  that protocol: same protocol name, same split hashes, so its rows are the protocol's rows.  Otherwise (an
  edited or foreign file in our format) it is imported like any other file; or
- per-fold CSV lists of image names, as papers publish them: a folder with one subfolder per fold, each
  holding `train.csv` and `test.csv` (optionally `val.csv` as the validation part), or flat files
  `train_1.csv`, `test_1.csv`, ... (also `train1.csv`, `train-1.csv`).  A fold with `train.csv` and
  `val.csv` but no `test.csv` is read the way IPCE's `Database/<dataset>/<k>/` folders mean it: `val.csv` is
  the *test* part (IPCE reports on it).  Each CSV has a header; the image name is the column named `name`,
  `image`, `image_name`, `img`, `filename` or `file` (any case), else the first column; a `model` (or
  `generator`) column, when present, may prefix it (`Controlnet/000-1.png`).  A name matches an item by its
  id, its image path relative to the image folder, its file name, or an alias the loader declares
  (`Item.meta["aliases"]`).

Imported folds get the protocol `imported`, and their split family names the file and its content hash, so
their rows never mix with a protocol's rows and every table labels them.  Without a validation list, a
validation part is carved out of each fold's training images by prompt group (`val_fraction`, seeded like
the protocols), so the default honest model selection still never looks at the test part.

`audit(splits, dataset)` reports, per fold, the sizes of the parts and how many test groups and exact test
prompts (whitespace-normalised) also occur in train or validation.
"""

from __future__ import annotations

import csv
import hashlib
import io
import re
import warnings
from pathlib import Path

import numpy as np

from agiqa_bench.datasets._common import DataWarning
from agiqa_bench.errors import ConfigError, DataError
from agiqa_bench.records import Dataset
from agiqa_bench.splits import PROTOCOLS, Split, SplitSet, _carve_val, make_splits

IMPORTED = "imported"
NAME_COLUMNS = ("name", "image", "image_name", "img", "filename", "file", "image_path", "path")
PREFIX_COLUMNS = ("model", "generator")
PART_FILE = re.compile(r"^(train|val|valid|validation|test)(?:[_-]?(\d+))?\.csv$", re.IGNORECASE)
#: Label and fold files are small; a larger "fold file" is refused before it is read.
MAX_FOLD_BYTES = 64 * 2**20


def content_hash(paths: list[Path]) -> str:
    h = hashlib.sha256()
    for path in paths:
        h.update(path.name.encode() + b"\0" + _read_bytes(path) + b"\0")
    return h.hexdigest()[:16]


def _read_bytes(path: Path) -> bytes:
    if not path.is_file():
        raise DataError(f"split file {path} is not a regular file")
    if path.stat().st_size > MAX_FOLD_BYTES:
        raise DataError(f"split file {path} is larger than {MAX_FOLD_BYTES // 2**20} MiB; fold lists are small")
    try:
        return path.read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read split file {path}: {exc.strerror or exc}") from None


def normalise_prompt(text: str) -> str:
    return " ".join(str(text).split())


# -- reading -------------------------------------------------------------------------------------
def load_splits(path: str | Path, dataset: Dataset, val_fraction: float = 0.1) -> SplitSet:
    """The splits in `path` (a `splits export` JSON, or a folder / file of per-fold CSV lists) over `dataset`."""
    path = Path(path).expanduser()
    if not path.exists():
        raise ConfigError(f"--splits {path}: no such file or folder")
    if path.is_file() and path.suffix.lower() == ".json":
        return _load_json(path, dataset, val_fraction)
    folds = _fold_files(path)
    resolver = _Resolver(dataset)
    splits = []
    all_files = [f for fold in folds for f in fold.values()]
    val_is_test = False
    for r, fold in enumerate(folds):
        if "test" not in fold and "val" in fold:
            fold = {"train": fold["train"], "test": fold["val"]}
            val_is_test = True
        if "train" not in fold or "test" not in fold:
            raise DataError(f"fold {r + 1} of {path} needs a train and a test list; found: "
                            f"{', '.join(p.name for p in fold.values())}")
        parts = {name: resolver.ids(file) for name, file in fold.items()}
        test = set(parts["test"])
        for name in ("train", "val"):
            overlap = [i for i in parts.get(name, ()) if i in test]
            if len(overlap) > max(1, len(test) // 20):
                raise DataError(f"{fold[name]}: {len(overlap)} image(s) are also in the test list {fold['test']} "
                                f"(first: {overlap[0]}); a fold's parts must be disjoint")
            if overlap:  # e.g. a name listed twice in a label file, once per side (IPCE's AGIQA-1k folds)
                warnings.warn(DataWarning(f"{fold[name]}: {', '.join(overlap)} also in the test list "
                                          f"{fold['test'].name}: kept in the test part only"), stacklevel=2)
                parts[name] = [i for i in parts[name] if i not in test]
        if "val" in parts:
            train, val = parts["train"], parts["val"]
        else:
            train, val = _carve(dataset, parts["train"], val_fraction, r)
        splits.append(_split(dataset, r, train, val, parts["test"]))
    params = {"repeats": len(splits), "file": path.name, "file_hash": content_hash(all_files),
              "val": "from the files" if all("val" in f and "test" in f for f in folds) else
              f"{val_fraction:g} of the training groups", **({"val_is_test": True} if val_is_test else {})}
    return SplitSet(dataset.name, IMPORTED, params, splits)


def _load_json(path: Path, dataset: Dataset, val_fraction: float) -> SplitSet:
    loaded = SplitSet.load(path)
    if loaded.dataset != dataset.name:
        raise DataError(f"{path} holds splits of dataset {loaded.dataset!r}, not {dataset.name!r}")
    known = {it.id for it in dataset.items}
    for s in loaded.splits:
        for part in (s.train, s.val, s.test):
            unknown = [i for i in part if i not in known]
            if unknown:
                raise DataError(f"{path} repeat {s.repeat}: {len(unknown)} item(s) are not in dataset {dataset.name!r} "
                                f"(first: {unknown[0]!r}); the file was written for other labels")
    if loaded.protocol in PROTOCOLS:
        p = loaded.params
        try:
            again = make_splits(dataset, loaded.protocol, int(p.get("repeats", len(loaded))), p.get("seed"),
                                float(p.get("val_fraction", 0.1)), float(p.get("test_fraction", 0.2)))
        except (ConfigError, DataError, TypeError, ValueError):
            again = None
        if again is not None and again.hash == loaded.hash:
            return loaded  # it is that protocol's split set: same protocol, same split hashes, same rows
    params = {"repeats": len(loaded), "file": path.name, "file_hash": content_hash([path]),
              "declared_protocol": loaded.protocol}
    return SplitSet(dataset.name, IMPORTED, params, list(loaded.splits))


def _fold_files(path: Path) -> list[dict[str, Path]]:
    """[{part: csv path}] per fold, in fold order (numeric where the names carry numbers)."""
    def key(p: Path):
        digits = re.findall(r"\d+", p.name)
        return (int(digits[-1]) if digits else -1, p.name)

    if path.is_dir():
        subdirs = sorted((d for d in path.iterdir() if d.is_dir() and not d.is_symlink()), key=key)
        folds = [_parts_in(d) for d in subdirs]
        folds = [f for f in folds if f]
        if folds:
            return folds
        flat = _numbered(list(path.iterdir()))
        if flat:
            return flat
        raise DataError(f"--splits {path}: found no fold files (expected one subfolder per fold with train.csv and "
                        f"test.csv, or train_1.csv/test_1.csv ... beside each other)")
    single = _parts_in(path.parent) if PART_FILE.match(path.name) else {}
    if single:
        return [single]
    raise DataError(f"--splits {path}: not a split file (a `splits export` .json) nor a folder of per-fold CSV lists")


def _parts_in(folder: Path) -> dict[str, Path]:
    out = {}
    for p in sorted(folder.iterdir()):
        m = PART_FILE.match(p.name)
        if m and not m.group(2) and p.is_file():
            out[_part(m.group(1))] = p
    return out


def _numbered(files: list[Path]) -> list[dict[str, Path]]:
    by_fold: dict[int, dict[str, Path]] = {}
    for p in files:
        m = PART_FILE.match(p.name)
        if m and m.group(2) and p.is_file():
            by_fold.setdefault(int(m.group(2)), {})[_part(m.group(1))] = p
    return [by_fold[k] for k in sorted(by_fold)]


def _part(word: str) -> str:
    return {"valid": "val", "validation": "val"}.get(word.lower(), word.lower())


class _Resolver:
    """Image names in fold files -> item ids of the dataset."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset
        self.index: dict[str, set[str]] = {}
        root = dataset.image_dir
        for it in dataset.items:
            names = {it.id, Path(it.id).name, Path(str(it.image)).name, *it.meta.get("aliases", ())}
            if root is not None:
                try:
                    names.add(Path(it.image).relative_to(root).as_posix())
                except ValueError:
                    pass
            for name in names:
                self.index.setdefault(str(name), set()).add(it.id)

    def ids(self, path: Path) -> list[str]:
        text = _read_bytes(path).decode("utf-8-sig", errors="replace")
        rows = list(csv.reader(io.StringIO(text)))
        if not rows:
            raise DataError(f"{path} is empty")
        header = [h.strip().lower() for h in rows[0]]
        col = next((header.index(c) for c in NAME_COLUMNS if c in header), 0)
        prefix = next((header.index(c) for c in PREFIX_COLUMNS if c in header), None)
        out, seen = [], set()
        for line, row in enumerate(rows[1:], start=2):
            if not row or not any(cell.strip() for cell in row):
                continue
            if col >= len(row):
                raise DataError(f"{path} row {line}: no column {col + 1} (the image name)")
            name = row[col].strip()
            candidates = [name, name.replace("\\", "/"), Path(name.replace("\\", "/")).name]
            if prefix is not None and prefix < len(row) and row[prefix].strip():
                candidates.insert(0, f"{row[prefix].strip()}/{name}")
            found = next((self.index[c] for c in candidates if c in self.index), None)
            if not found:
                raise DataError(f"{path} row {line}: image {name!r} is not in dataset {self.dataset.name!r} "
                                f"(matched by id, file name, path under the image folder or alias)")
            if len(found) > 1:
                raise DataError(f"{path} row {line}: image {name!r} matches {len(found)} items of "
                                f"{self.dataset.name!r} ({', '.join(sorted(found)[:3])}); name them by id")
            item_id = next(iter(found))
            if item_id not in seen:  # a name listed twice counts once
                seen.add(item_id)
                out.append(item_id)
        if not out:
            raise DataError(f"{path} lists no image")
        return out


def _carve(dataset: Dataset, train_ids: list[str], val_fraction: float, repeat: int) -> tuple[list[str], list[str]]:
    """A validation part from the fold's training images, by whole prompt groups."""
    by_id = {it.id: it for it in dataset.items}
    groups = list(dict.fromkeys(by_id[i].group for i in train_ids))
    _, val_groups = _carve_val(groups, val_fraction, np.random.default_rng([0, repeat, 1]))
    keep = set(val_groups)
    return [i for i in train_ids if by_id[i].group not in keep], [i for i in train_ids if by_id[i].group in keep]


def _split(dataset: Dataset, repeat: int, train, val, test) -> Split:
    order = {it.id: k for k, it in enumerate(dataset.items)}
    sort = lambda ids: tuple(sorted(set(ids), key=order.__getitem__))  # noqa: E731
    by_id = {it.id: it for it in dataset.items}
    test_groups = tuple(dict.fromkeys(by_id[i].group for i in sort(test)))
    return Split(repeat, sort(train), sort(val), sort(test), test_groups)


# -- auditing -----------------------------------------------------------------------------------
def audit(splits: SplitSet, dataset: Dataset) -> list[dict]:
    """Per fold: part sizes, and what of the test part also occurs in train or validation."""
    by_id = {it.id: it for it in dataset.items}
    out = []
    for s in splits.splits:
        seen = [by_id[i] for i in (*s.train, *s.val) if i in by_id]
        test = [by_id[i] for i in s.test if i in by_id]
        seen_groups = {it.group for it in seen}
        seen_prompts = {normalise_prompt(it.prompt) for it in seen if it.prompt.strip()}
        test_groups = {it.group for it in test}
        test_prompts = {normalise_prompt(it.prompt) for it in test if it.prompt.strip()}
        out.append({
            "fold": s.repeat, "n_train": len(s.train), "n_val": len(s.val), "n_test": len(s.test),
            "test_groups": len(test_groups), "shared_groups": len(test_groups & seen_groups),
            "test_prompts": len(test_prompts), "shared_prompts": len(test_prompts & seen_prompts),
            "test_images_with_shared_prompt": sum(1 for it in test if normalise_prompt(it.prompt) in seen_prompts
                                                  and it.prompt.strip()),
            "split_hash": s.hash,
        })
    return out


def describe(splits: SplitSet) -> str:
    """One line on where a split set came from (for the run header)."""
    if splits.protocol != IMPORTED:
        return f"{len(splits)} {splits.protocol} splits (hash {splits.hash})"
    p = splits.params
    extra = "; val.csv read as the test part (IPCE's layout)" if p.get("val_is_test") else ""
    return (f"{len(splits)} folds imported from {p.get('file')} (file hash {p.get('file_hash')}, split-set hash "
            f"{splits.hash}; validation: {p.get('val', 'from the file')}{extra})")

