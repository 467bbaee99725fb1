"""AIGIQA-20K (NTIRE 2024 AIGC quality challenge; released as AIGCQA-30K-Image): 15 generators, one MOS.

Layout expected under the data root:
    info_train.csv                name, prompt, mos   (14,000 rows; no header row, or that header)
    train/ | images/ | .          the training images
    info_val.csv                  name, prompt        (the validation part: its labels are not public)
    val/ | images/ | .            the validation images

Items:
- id = name; target `overall` = the one coupled MOS (as AGIQA-1k).
- generator = the name before its last `_NNNN` (`SDXL_Turbo_0012.png` -> `SDXL_Turbo`,
  `LCM_SD1.5_0003.png` -> `LCM_SD1.5`).  The dataset's own generator label is the first part of the name
  only (`LCM`); we keep the longer form because the name is all the release gives and the longer form is
  better founded: it separates models that share a family prefix (`LCM_SD1.5` and `LCM_SDXL`, `SD1.5` and
  `SDXL_Turbo` are different generators), so a per-generator breakdown does not pool them.
- group = the prompt text with whitespace collapsed and case folded, so every image of a prompt
  stays on one side of a split.

The files are read with a real CSV parser: prompts may hold commas inside quoted fields.

`--dataset-opt part=val --dataset-opt allow_unlabelled=true` loads the validation part, which has no
targets (`Dataset.targets == ()`): it is for scoring new images only.  The runner and `splits export`
refuse a dataset without targets, so its items never reach a metric.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

from agiqa_bench.datasets import _common as c
from agiqa_bench.datasets.spec import DUPLICATES, DatasetOption, DatasetSpec
from agiqa_bench.errors import ConfigError, DataError
from agiqa_bench.records import Dataset, Item

NAME = "aigiqa20k"
#: part -> (label file, its fields, image folders to look in).
PARTS = {
    "train": ("info_train.csv", ("name", "prompt", "mos"), ("train", "images", "")),
    "val": ("info_val.csv", ("name", "prompt"), ("val", "images", "")),
}
_NAME_RE = re.compile(r"^(?P<generator>.+)_(?P<index>\d+)\.\w+$")


def split_name(name: str) -> tuple[str, int]:
    """'SDXL_Turbo_0012.png' -> ('SDXL_Turbo', 12); ValueError if it does not end in _NNNN."""
    m = _NAME_RE.match(name)
    if m is None:
        raise ValueError(name)
    return m["generator"], int(m["index"])


def prompt_group(prompt: str) -> str:
    """The group key of a prompt: whitespace collapsed, case folded."""
    return " ".join(prompt.split()).casefold()


def read_rows(path: Path, fields: tuple[str, ...]) -> tuple[list[list[str]], int]:
    """The data rows of a label file and the number of header rows before them (0 or 1)."""
    c.check_label_file(path)
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            rows = list(csv.reader(f, strict=True))
    except csv.Error as exc:
        raise DataError(f"cannot read label file {path}: {exc}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read label file {path}: {exc}") from None
    header = 1 if rows and [cell.strip().lower() for cell in rows[0]] == list(fields) else 0
    return rows[header:], header


def read_items(path: Path, part: str) -> list[Item]:
    _, fields, _ = PARTS[part]
    rows, header = read_rows(path, fields)
    items = []
    for i, row in enumerate(rows):
        where = c.row_label(path, i, header)
        if not any(cell.strip() for cell in row):
            continue  # a blank line (a trailing newline, an empty row an editor left)
        if len(row) != len(fields):
            raise DataError(f"{where}: expected {len(fields)} fields ({', '.join(fields)}), got {len(row)}"
                            + (" (quote a prompt that holds commas)" if len(row) > len(fields) else ""))
        name, prompt = row[0].strip(), row[1].strip()
        try:
            generator, index = split_name(name)
        except ValueError:
            raise DataError(f"{where}: image name {name!r} does not end in _NNNN (as in 'SDXL_Turbo_0012.png'), "
                            "so its generator cannot be read from it") from None
        if not prompt:
            raise DataError(f"{where}: empty prompt for {name}")
        targets = {"overall": c.parse_float(row[2], path, i, "mos", header_rows=header)} if part == "train" else {}
        items.append(Item(id=name, image=Path(name), prompt=prompt, targets=targets, group=prompt_group(prompt),
                          generator=generator, meta={"index": index, "part": part, "row": i + 1 + header}))
    return items


def load(
    data_root: str | Path | None = None,
    *,
    duplicates: str = "first",
    part: str = "train",
    allow_unlabelled: bool | str = False,
) -> Dataset:
    if part not in PARTS:
        raise ConfigError(f"{NAME}: part must be train or val, got {part!r}")
    unlabelled_ok = c.flag(allow_unlabelled, NAME, "allow_unlabelled")
    if part == "val" and not unlabelled_ok:
        raise ConfigError(f"{NAME}: part=val has no public labels (info_val.csv holds names and prompts only); it "
                          "loads only for scoring new images, never for metrics: add --dataset-opt allow_unlabelled=true")
    root = c.resolve_root(NAME, data_root)
    filename, _, folders = PARTS[part]
    label_file = c.require_file(root, filename, NAME,
                                " Download it with the images from the NTIRE 2024 AIGC quality release (see README, 'Datasets').")
    rows = read_items(label_file, part)
    if not rows:
        raise DataError(f"label file {label_file} has no rows")
    items, notes = c.dedupe(rows, label_file, duplicates)
    image_dir = c.find_image_dir(root, folders, items[0].id)
    targets = ("overall",) if part == "train" else ()
    return c.labels_only(NAME, items, targets, label_file, image_dir, notes, root)


SPEC = DatasetSpec(
    name=NAME,
    summary="AIGIQA-20K (NTIRE 2024, AIGCQA-30K-Image): 14,000 labelled images of 15 generators, one MOS",
    targets=("overall",),
    loader="agiqa_bench.datasets.aigiqa20k:load",
    files="info_train.csv + images (train/ or images/); info_val.csv + val/ with part=val (unlabelled)",
    options=(DUPLICATES, DatasetOption("part", "train (labelled) or val (no public labels: scoring only)"),
             DatasetOption("allow_unlabelled", "load part=val, which has no targets (scoring only)")),
)
