"""AGIQA-1k (Zhang et al. 2023): 1,080 images from two diffusion models, one coupled MOS.

Layout expected under the data root:
    AIGC_MOS_Zscore.xlsx      columns Image, Prompt, MOS  (the file IP-IQA uses)
    file/ | images/ | .       the images from the dataset's file.zip

Items:
- id = image name; target `overall` = the xlsx MOS (0-5, z-scored and rescaled).
- generator = the name's model prefix (`deepai` = SD v2.0, `dreamStudio` = SD
  inpainting v1.0); file names read `{model}_{main}_{second}_{place}_{style}.jpg`.
- group = "main_second" in deepai's index space.  dreamStudio numbers its main
  and second objects differently (no kid/demon/witch; second objects start at
  "having pizza"), so they are remapped exactly as the IP-IQA reference split
  does: main d -> d if d <= 5 else d + 1, second d -> d + 5.  Place and style
  are ignored, so one group holds the 4 (deepai) or 8 (deepai + dreamStudio)
  renderings of an object pair.

Label quirks, handled deterministically and reported by name:
- `dreamStudio_8_5_0_0.jpg` is absent from the xlsx (it is in AIGC_all.csv): the
  image, if present on disk, is simply not benchmarked.
- `dreamStudio_8_9_1_1.jpg` is listed twice (MOS 0.4414, then 2.0841).  Default
  policy `last`: the older raw table AIGC_all.csv scores this image 2.045 (under
  the typo name `dreamStudio_8_9_1_.jpg`), which a linear map fitted on the
  1,078 common images puts at 1.94 on the xlsx scale, matching the second row.
  `--dataset-opt duplicates=first|mean` changes the policy.  The IP-IQA
  reference code trains/tests on both rows; its split does not depend on this.
"""

from __future__ import annotations

import re
from pathlib import Path

from agiqa_bench.datasets import _common as c
from agiqa_bench.datasets.spec import DUPLICATES, DatasetSpec
from agiqa_bench.errors import DataError
from agiqa_bench.records import Dataset, Item

LABEL_FILE = "AIGC_MOS_Zscore.xlsx"
NAME_RE = re.compile(r"^(?P<model>deepai|dreamStudio)_(?P<main>\d+)_(?P<second>\d+)_(?P<place>\d+)_(?P<style>\d+)\.\w+$")
ABSENT_FROM_LABELS = ("dreamStudio_8_5_0_0.jpg",)


def deepai_indices(model: str, main: int, second: int) -> tuple[int, int]:
    """Map a file's (main, second) object indices into deepai's index space."""
    if model == "dreamStudio":
        return (main if main <= 5 else main + 1), second + 5
    return main, second


def group_key(name: str) -> str:
    """The reference split's group code "main_second" for an image name."""
    m = NAME_RE.match(name)
    if m is None:
        raise ValueError(name)
    main, second = deepai_indices(m["model"], int(m["main"]), int(m["second"]))
    return f"{main}_{second}"


def read_rows(label_file: Path) -> list[Item]:
    """Every xlsx row as an Item, in file order, duplicates included (images not resolved)."""
    frame = c.read_table(label_file, ["Image", "Prompt", "MOS"])
    items = []
    for i, row in enumerate(frame.itertuples(index=False)):
        name = c.text(row.Image)
        m = NAME_RE.match(name)
        if m is None:
            raise DataError(
                f"{c.row_label(label_file, i)}: image name {name!r} does not read as "
                "{deepai|dreamStudio}_{main}_{second}_{place}_{style}.jpg"
            )
        mos = c.parse_float(row.MOS, label_file, i, "MOS")
        keywords = [k.strip() for k in c.text(row.Prompt).split(",")]
        items.append(
            Item(
                id=name,
                image=Path(name),
                prompt=c.text(row.Prompt),
                targets={"overall": mos},
                group=group_key(name),
                generator=m["model"],
                meta={"place": int(m["place"]), "style": int(m["style"]), "keywords": keywords, "row": i + 2},
            )
        )
    return items


def load(
    data_root: str | Path | None = None,
    *,
    duplicates: str = "last",
) -> Dataset:
    root = c.resolve_root("agiqa1k", data_root, shipped=True)
    label_file = c.require_file(
        root, LABEL_FILE, "agiqa1k", " Download it from the AGIQA-1k database repository (see README, 'Datasets')."
    )
    rows = read_rows(label_file)
    items, notes = c.dedupe(rows, label_file, duplicates)
    image_dir = c.find_image_dir(root, ["file", "images", ""], items[0].id)
    for absent in ABSENT_FROM_LABELS:
        if (image_dir / absent).exists():
            notes.append(f"{absent} is on disk but has no MOS in {LABEL_FILE}; it is not benchmarked")
    return c.labels_only("agiqa1k", items, ("overall",), label_file, image_dir, notes, root)


SPEC = DatasetSpec(
    name="agiqa1k",
    summary="AGIQA-1k: 1,080 images of 2 diffusion models, one coupled MOS",
    targets=("overall",),
    loader="agiqa_bench.datasets.agiqa1k:load",
    files="AIGC_MOS_Zscore.xlsx (ships with agiqa-bench) + images (file/)",
    options=(DUPLICATES,),
)
