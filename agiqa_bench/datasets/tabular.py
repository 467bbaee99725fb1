"""`csv`: any dataset described by a CSV (or Excel) label file.

For your own data (AIGCIQA2023 and AIGIQA-20K have loaders of their own).  Options (CLI: `--dataset-opt key=value`):

    label        label file, relative to the data root (default: data.csv)
    image_col    column with the image file name/path, relative to the image folder (default: image)
    prompt_col   column with the prompt ("" for none; default: prompt if present)
    targets      target=column pairs, comma separated (default: overall=mos)
    group_col    column whose value keeps items together in splits
                 (default: the prompt column, else each image is its own group)
    generator_col  column naming the generator (optional)

Every other column is kept in the item's `meta`.  Example:

    agiqa-bench run --dataset csv --data-root ~/data/aigciqa2023 \\
        --dataset-opt label=mos.csv --dataset-opt image_col=file \\
        --dataset-opt targets=quality=mos_q,alignment=mos_a
"""

from __future__ import annotations

from pathlib import Path

from agiqa_bench.datasets import _common as c
from agiqa_bench.datasets.spec import DUPLICATES, DatasetOption, DatasetSpec
from agiqa_bench.errors import DataError
from agiqa_bench.records import Dataset, Item


def parse_targets(spec: str) -> dict[str, str]:
    """'quality=mos_q,alignment=mos_a' -> {'quality': 'mos_q', 'alignment': 'mos_a'}."""
    out: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        target, sep, column = part.partition("=")
        if not sep or not target.strip() or not column.strip():
            raise DataError(f"csv dataset: targets must read 'target=column,...', got {spec!r}")
        out[target.strip()] = column.strip()
    if not out:
        raise DataError("csv dataset: no target given; use --dataset-opt targets=overall=<mos column>")
    return out


def load(
    data_root: str | Path | None = None,
    *,
    duplicates: str = "first",
    label: str = "data.csv",
    image_col: str = "image",
    prompt_col: str | None = None,
    targets: str = "overall=mos",
    group_col: str | None = None,
    generator_col: str | None = None,
    attribute_cols: str = "",
) -> Dataset:
    root = c.resolve_root("csv", data_root)
    label_file = Path(label).expanduser()
    if not label_file.is_absolute():  # an absolute --dataset-opt label=FILE is the user's explicit choice
        label_file = c.contained(root / label_file, root, "label file")
    if not label_file.is_file():
        raise DataError(f"csv dataset: expected the label file at {label_file}; set it with --dataset-opt label=FILE")
    columns = parse_targets(targets)
    frame = c.read_table(label_file, [image_col, *columns.values()])
    if prompt_col is None:
        prompt_col = "prompt" if "prompt" in frame.columns else ""
    attributes = tuple(a.strip() for a in str(attribute_cols or "").split(",") if a.strip())
    for opt, col in (("prompt_col", prompt_col), ("group_col", group_col), ("generator_col", generator_col),
                     *(("attribute_cols", a) for a in attributes)):
        if col and col not in frame.columns:
            raise DataError(f"label file {label_file} has no column {col!r} (given as {opt}); it has: "
                            f"{', '.join(map(str, frame.columns))}")
    used = {image_col, prompt_col, group_col, generator_col, *columns.values()}
    extra = [col for col in frame.columns if col not in used]
    items = []
    for i, row in enumerate(frame.to_dict("records")):
        image = c.text(row[image_col])
        if not image:
            raise DataError(f"{c.row_label(label_file, i)}: empty image name in column {image_col!r}")
        prompt = c.text(row[prompt_col]) if prompt_col else ""
        if group_col:
            group = c.text(row[group_col])
        else:
            group = prompt or image
        items.append(
            Item(
                id=image,
                image=Path(image),
                prompt=prompt,
                targets={t: c.parse_float(row[col], label_file, i, col) for t, col in columns.items()},
                group=group,
                generator=c.text(row[generator_col]) if generator_col else "",
                meta={**{col: row[col] for col in extra}, **{a: c.text(row[a]) for a in attributes}, "row": i + 2},
            )
        )
    if not items:
        raise DataError(f"label file {label_file} has no rows")
    items, notes = c.dedupe(items, label_file, duplicates)
    image_dir = c.find_image_dir(root, ["images", ""], items[0].id)
    return c.labels_only("csv", items, tuple(columns), label_file, image_dir, notes, root, attributes)


SPEC = DatasetSpec(
    name="csv",
    summary="Your own dataset from a CSV/Excel label file (columns mapped with --dataset-opt)",
    targets=(),
    loader="agiqa_bench.datasets.tabular:load",
    files="any; see `agiqa_bench.datasets.tabular`",
    options=(DUPLICATES, DatasetOption("label", "the label file, relative to the data root (default data.csv)"),
             DatasetOption("image_col", "the column of image file names (default image)"),
             DatasetOption("prompt_col", "the prompt column (default: prompt, if there is one)"),
             DatasetOption("targets", "target=column pairs, comma-separated (default overall=mos)"),
             DatasetOption("group_col", "the column a split keeps together (default: the prompt)"),
             DatasetOption("generator_col", "the generator column (per-generator breakdowns)"),
             DatasetOption("attribute_cols", "comma-separated columns to break results down by (report --by)")),
)
