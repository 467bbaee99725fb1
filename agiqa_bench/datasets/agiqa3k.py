"""AGIQA-3k (Li et al., TCSVT 2023): 2,982 images from 6 generator families, two MOS.

Layout expected under the data root:
    data.csv                          name, prompt, adj1, adj2, style,
                                      mos_quality, std_quality, mos_align, std_align
    images/ | AGIQA-3K/ | AGIQA-3k/ | .   the images from AGIQA-3K.zip

Items:
- id = name; targets `quality` (mos_quality) and `alignment` (mos_align); the
  std columns, adjectives and style are kept in `meta`.
- group = the prompt index: the integer after the last underscore of the name
  (`sd1.5_lowstep_042.jpg` -> "42"), so all generators of a prompt stay together.
- generator = the name before that underscore (`sd1.5_lowstep`); `meta["family"]`
  is its first token (`sd1.5`).
- attribute `style` (the label file's style column), for `report --by style`.

SynthAGIQA is written in this same layout with an extra `mos_overall` column
(target `overall`) and its defect metadata; every extra column lands in `meta`.
"""

from __future__ import annotations

from pathlib import Path

from agiqa_bench.datasets import _common as c
from agiqa_bench.datasets.spec import DUPLICATES, DatasetSpec
from agiqa_bench.errors import DataError
from agiqa_bench.records import Dataset, Item

LABEL_FILE = "data.csv"
TARGET_COLUMNS = {"quality": "mos_quality", "alignment": "mos_align", "overall": "mos_overall"}
_CORE = {"name", "prompt", *TARGET_COLUMNS.values()}


def split_name(name: str) -> tuple[str, int]:
    """'sd1.5_lowstep_042.jpg' -> ('sd1.5_lowstep', 42)."""
    stem = Path(name).stem
    generator, sep, idx = stem.rpartition("_")
    if not sep or not idx.isdigit():
        raise ValueError(name)
    return generator, int(idx)


def read_rows(label_file: Path, name: str = "agiqa3k") -> tuple[list[Item], tuple[str, ...]]:
    frame = c.read_table(label_file, ["name", "prompt", "mos_quality", "mos_align"])
    targets = tuple(t for t, col in TARGET_COLUMNS.items() if col in frame.columns)
    extra = [col for col in frame.columns if col not in _CORE]
    items = []
    for i, row in enumerate(frame.to_dict("records")):
        image = c.text(row["name"])
        try:
            generator, idx = split_name(image)
        except ValueError:
            raise DataError(
                f"{c.row_label(label_file, i)}: image name {image!r} does not end in _<prompt index>, "
                "as in 'sd1.5_normal_042.jpg'"
            ) from None
        values = {t: c.parse_float(row[TARGET_COLUMNS[t]], label_file, i, TARGET_COLUMNS[t]) for t in targets}
        meta = {col: row[col] for col in extra}
        meta.update(family=generator.split("_")[0], prompt_index=idx, row=i + 2)
        items.append(
            Item(
                id=image,
                image=Path(image),
                prompt=c.text(row["prompt"]),
                targets=values,
                group=str(idx),
                generator=c.text(row.get("generator")) or generator,
                meta=meta,
            )
        )
    return items, targets


def load(
    data_root: str | Path | None = None,
    *,
    duplicates: str = "first",
    name: str = "agiqa3k",
) -> Dataset:
    root = c.resolve_root(name, data_root, shipped=name == "agiqa3k")
    label_file = c.require_file(
        root, LABEL_FILE, name, " Download it from the AGIQA-3k database repository (see README, 'Datasets')."
    )
    rows, targets = read_rows(label_file, name)
    if not rows:
        raise DataError(f"label file {label_file} has no rows")
    items, notes = c.dedupe(rows, label_file, duplicates)
    image_dir = c.find_image_dir(root, ["images", "AGIQA-3K", "AGIQA-3k", ""], items[0].id)
    attributes = ("style",) if any(c.text(it.meta.get("style")) for it in items) else ()
    return c.labels_only(name, items, targets, label_file, image_dir, notes, root, attributes)


SPEC = DatasetSpec(
    name="agiqa3k",
    summary="AGIQA-3k: 2,982 images of 6 generators, perceptual quality and alignment MOS",
    targets=("quality", "alignment"),
    loader="agiqa_bench.datasets.agiqa3k:load",
    files="data.csv (ships with agiqa-bench) + images (images/ or AGIQA-3K/)",
    options=(DUPLICATES,),
    attributes=("style",),
)
