"""AIGCIQA2023 (Wang et al. 2023): 2,400 images of 6 generators, three MOS.

100 prompts, 4 images per prompt and generator.  Two layouts are found automatically under the data
root (`--dataset-opt layout=official|csv` picks one when both are there; default: official):

The official release:
    Image/allimg/{i}.png              i = 0..2399
    DATA/MOS/mosz1.mat, mosz2.mat, mosz3.mat
                                      MOSz (2400 x 1, image-index order): quality, authenticity, correspondence
    DATA/STD/SD1.mat, SD2.mat, SD3.mat  (optional) SD, the standard deviations in the same order
    AIGCIQA2023_Prompts.xlsx          (at the root or under DATA/) 100 rows: Style, Object, prompt

  Image i was made by generator block i // 400 (in the order of the dataset's index sheet: Controlnet,
  DALLE, Glide, Lafite, stable-diffusion, Unidiffuser) from the prompt of sheet row (i % 400) // 4.

The one-file conversion that circulates with the dataset:
    AIGCIQA2023.csv                   an unnamed index column, then name, prompt, style, class,
                                      quality_mos, authenticity_mos, correspondence_mos,
                                      quality_std, authenticity_std, correspondence_std
    Image/allimg/ | Images/ | .       the images, named 0.png .. 2399.png

  The generator comes from a `generator` column if there is one, else from the name's index (i // 400);
  the prompt index is (i % 400) // 4 as in the official layout.  Rows are taken in image-index order.

Items (the same from both layouts, given the same numbers):
- id = "{i}.png"; targets `quality`, `authenticity`, `alignment` (= correspondence).
- group = the prompt index (100 groups), so no prompt is in both parts of a split.
- meta: `style`, `class` (the prompt's object class; both are `Dataset.attributes`), `prompt_index`,
  `image_index`, and `std_quality`, `std_authenticity`, `std_alignment` where the release has them.

MATLAB files are read with scipy.io.loadmat (v7 and older).  MATLAB v7.3 files (HDF5) are read with h5py
when it is installed; otherwise the error says to re-save them as v7 or to install h5py.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from agiqa_bench.datasets import _common as c
from agiqa_bench.datasets.spec import DatasetOption, DatasetSpec
from agiqa_bench.errors import ConfigError, DataError
from agiqa_bench.records import Dataset, Item

NAME = "aigciqa2023"
N_IMAGES = 2400
N_PROMPTS = 100
IMAGES_PER_PROMPT = 4  # per generator
#: Generator of each block of 400 consecutive image indices, as the dataset's index sheet lists them.
GENERATORS = ("Controlnet", "DALLE", "Glide", "Lafite", "stable-diffusion", "Unidiffuser")
PER_GENERATOR = N_IMAGES // len(GENERATORS)
#: Target -> (official MOS file, official std file, CSV MOS column, CSV std column).
TARGETS = {
    "quality": ("mosz1.mat", "SD1.mat", "quality_mos", "quality_std"),
    "authenticity": ("mosz2.mat", "SD2.mat", "authenticity_mos", "authenticity_std"),
    "alignment": ("mosz3.mat", "SD3.mat", "correspondence_mos", "correspondence_std"),
}
MOS_KEY, STD_KEY = "MOSz", "SD"
MOS_DIR, STD_DIR = Path("DATA") / "MOS", Path("DATA") / "STD"
PROMPT_SHEET = "AIGCIQA2023_Prompts.xlsx"
CSV_FILE = "AIGCIQA2023.csv"
IMAGE_DIRS = ("Image/allimg", "Images", "")
ATTRIBUTES = ("style", "class")
LAYOUTS = ("auto", "official", "csv")
_INDEX_NAME = re.compile(r"^(\d+)\.png$", re.IGNORECASE)


def generator_of(index: int) -> str:
    """The generator of image `index` (its block of 400)."""
    return GENERATORS[index // PER_GENERATOR]


def ipce_name(index: int) -> str:
    """The name IPCE's fold files give image `index` (`<generator>/<prompt:03d>-<k>.png`, k = 1..4), kept as an
    alias so `run --splits` can read those folds (pf0607/IPCE, `Database/AIGCIQA2023/<k>/`)."""
    within = index % PER_GENERATOR
    return f"{generator_of(index)}/{within // IMAGES_PER_PROMPT:03d}-{within % IMAGES_PER_PROMPT + 1}.png"


def prompt_index_of(index: int) -> int:
    """The prompt (sheet row, 0-based) of image `index`: four images per prompt within each block."""
    return (index % PER_GENERATOR) // IMAGES_PER_PROMPT


# -- MATLAB files ----------------------------------------------------------------------------
def _read_hdf5_mat(path: Path, key: str) -> tuple[dict, list[str]]:
    try:
        import h5py
    except ImportError:
        raise DataError(
            f"{path} is a MATLAB v7.3 (HDF5) file, which scipy cannot read: save it again as v7 in MATLAB "
            f"(save('{path.name}', '{key}', '-v7')), or install h5py (pip install h5py) to read it as it is"
        ) from None
    try:
        with h5py.File(path, "r") as f:
            names = list(f.keys())
            # MATLAB writes column-major: a 2400 x 1 array is stored as 1 x 2400; flattening reads both
            return ({key: np.asarray(f[key])} if key in f else {}), names
    except (OSError, TypeError, ValueError, AttributeError) as exc:
        raise DataError(f"cannot read MATLAB v7.3 file {path}: {exc}") from None


def read_mat_vector(path: Path, key: str, length: int = N_IMAGES) -> np.ndarray:
    """Variable `key` of a .mat file as `length` finite floats (one per image index), or a DataError."""
    import scipy.io

    c.check_label_file(path)
    try:
        content = scipy.io.loadmat(path)
        names = [k for k in content if not k.startswith("__")]
    except NotImplementedError:  # scipy's answer to a v7.3 (HDF5) file
        content, names = _read_hdf5_mat(path, key)
    except Exception as exc:  # scipy raises MatReadError, ValueError, TypeError, OSError ... for a bad file
        raise DataError(f"cannot read MATLAB file {path}: {exc}") from None
    if key not in content:
        raise DataError(f"{path}: no variable {key!r}; it holds: {', '.join(names) or 'nothing'}")
    raw = np.asarray(content[key])
    if raw.dtype.kind not in "biuf":  # complex, text, cells, structs: never coerced (a complex MOS lost its part)
        raise DataError(f"{path}: variable {key!r} is not a real number array (dtype {raw.dtype}); expected "
                        f"{length} real MOS values")
    values = raw.astype(np.float64)
    if values.ndim > 2 or (values.ndim == 2 and min(values.shape) != 1):
        raise DataError(f"{path}: variable {key!r} has shape {values.shape}; expected {length} x 1")
    values = values.reshape(-1)
    if values.size != length:
        raise DataError(f"{path}: variable {key!r} has {values.size} values; expected {length}, one per image "
                        f"(0.png .. {length - 1}.png)")
    bad = np.flatnonzero(~np.isfinite(values))
    if bad.size:
        more = f" (and {bad.size - 1} more)" if bad.size > 1 else ""
        raise DataError(f"{path}: {key} of image index {bad[0]} ({bad[0]}.png) is {values[bad[0]]}, not a "
                        f"finite number{more}")
    return values


# -- the official layout -----------------------------------------------------------------------
def find_prompt_sheet(root: Path) -> Path:
    for place in (root / PROMPT_SHEET, root / "DATA" / PROMPT_SHEET):
        if place.is_file():
            return place
    raise DataError(f"{NAME}: expected the prompt sheet {PROMPT_SHEET} at {root / PROMPT_SHEET} or "
                    f"{root / 'DATA' / PROMPT_SHEET}, but it is in neither place (it comes with the release)")


def read_prompt_sheet(path: Path) -> list[dict]:
    """The sheet's rows as {"prompt", "style", "class"}, in row order; an empty prompt is an error."""
    frame = c.read_table(path, ["Style", "Object", "prompt"])
    rows = []
    for i, row in enumerate(frame.to_dict("records")):
        prompt = c.prompt_text(row["prompt"])
        if not prompt:
            raise DataError(f"{c.row_label(path, i)}: empty prompt")
        rows.append({"prompt": prompt, "style": c.text(row["Style"]), "class": c.text(row["Object"])})
    return rows


def read_official(root: Path) -> tuple[list[Item], Path]:
    """Items from DATA/MOS/*.mat (+ DATA/STD/*.mat) and the prompt sheet; the label file is mosz1.mat."""
    sheet_file = c.contained(find_prompt_sheet(root), root, "prompt sheet")
    sheet = read_prompt_sheet(sheet_file)
    if len(sheet) != N_PROMPTS:
        raise DataError(f"{sheet_file} has {len(sheet)} prompt rows; expected {N_PROMPTS} (x {len(GENERATORS)} "
                        f"generators x {IMAGES_PER_PROMPT} images = {N_IMAGES}, one row per prompt)")
    mos, std = {}, {}
    for target, (mos_name, std_name, _, _) in TARGETS.items():
        path = root / MOS_DIR / mos_name
        if not path.is_file():
            raise DataError(f"{NAME}: expected the MOS file {path} (variable {MOS_KEY}, {target}), but it is not there")
        mos[target] = read_mat_vector(c.contained(path, root, "MOS file"), MOS_KEY)
        std_path = root / STD_DIR / std_name
        if std_path.is_file():
            std[target] = read_mat_vector(c.contained(std_path, root, "std file"), STD_KEY)
    items = []
    for i in range(N_IMAGES):
        p = prompt_index_of(i)
        meta = {"style": sheet[p]["style"], "class": sheet[p]["class"], "prompt_index": p, "image_index": i,
                "aliases": (ipce_name(i),)}
        meta.update({f"std_{t}": float(v[i]) for t, v in std.items()})
        items.append(Item(id=f"{i}.png", image=Path(f"{i}.png"), prompt=sheet[p]["prompt"],
                          targets={t: float(v[i]) for t, v in mos.items()}, group=str(p),
                          generator=generator_of(i), meta=meta))
    return items, root / MOS_DIR / TARGETS["quality"][0]


# -- the one-file CSV ------------------------------------------------------------------------
def read_csv_layout(path: Path) -> list[Item]:
    """Items from AIGCIQA2023.csv, in image-index order; every index 0..2399 exactly once."""
    mos_columns = [cols[2] for cols in TARGETS.values()]
    frame = c.read_table(path, ["name", "prompt", *mos_columns])
    has = set(frame.columns)
    by_index: dict[int, tuple[int, Item]] = {}
    for i, row in enumerate(frame.to_dict("records")):
        name = c.text(row["name"])
        match = _INDEX_NAME.match(name)
        index = int(match[1]) if match else -1
        if not 0 <= index < N_IMAGES:
            raise DataError(f"{c.row_label(path, i)}: image name {name!r} is not one of 0.png .. {N_IMAGES - 1}.png")
        if index in by_index:
            raise DataError(f"{c.row_label(path, i)}: image {name} is listed again (first at "
                            f"{c.row_label(path, by_index[index][0])})")
        prompt = c.prompt_text(row["prompt"])
        if not prompt:
            raise DataError(f"{c.row_label(path, i)}: empty prompt")
        targets = {t: c.parse_float(row[cols[2]], path, i, cols[2]) for t, cols in TARGETS.items()}
        p = prompt_index_of(index)
        meta = {"style": c.text(row.get("style")), "class": c.text(row.get("class")), "prompt_index": p,
                "image_index": index, "row": i + 2, "aliases": (ipce_name(index),)}
        meta.update({f"std_{t}": c.parse_float(row[cols[3]], path, i, cols[3])
                     for t, cols in TARGETS.items() if cols[3] in has})
        generator = c.text(row.get("generator")) or generator_of(index)
        by_index[index] = (i, Item(id=f"{index}.png", image=Path(name), prompt=prompt, targets=targets,
                                   group=str(p), generator=generator, meta=meta))
    missing = [i for i in range(N_IMAGES) if i not in by_index]
    if missing:
        shown = ", ".join(f"{i}.png" for i in missing[:5]) + (f" (and {len(missing) - 5} more)" if len(missing) > 5 else "")
        raise DataError(f"{path} has {len(by_index)} image rows; expected {N_IMAGES} (0.png .. {N_IMAGES - 1}.png). "
                        f"Missing: {shown}")
    return [by_index[i][1] for i in range(N_IMAGES)]


# -- the loader ------------------------------------------------------------------------------
def find_layout(root: Path, layout: str) -> str:
    """'official' when DATA/MOS/mosz1.mat is there (or asked for), else 'csv' when AIGCIQA2023.csv is."""
    if layout not in LAYOUTS:
        raise ConfigError(f"{NAME}: layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
    if layout != "auto":
        return layout
    if (root / MOS_DIR / TARGETS["quality"][0]).is_file():
        return "official"
    if (root / CSV_FILE).is_file():
        return "csv"
    raise DataError(
        f"{NAME}: found neither the official release ({root / MOS_DIR}/mosz1.mat, mosz2.mat, mosz3.mat with "
        f"{PROMPT_SHEET} and Image/allimg/) nor the one-file conversion ({root / CSV_FILE}) under {root}. "
        "Download the release from the authors (see README, 'Datasets')."
    )


def load(
    data_root: str | Path | None = None,
    *,
    layout: str = "auto",
) -> Dataset:
    root = c.resolve_root(NAME, data_root)
    chosen = find_layout(root, layout)
    notes: list[str] = []
    if chosen == "official":
        items, label_file = read_official(root)
        if layout == "auto" and (root / CSV_FILE).is_file():
            notes.append(f"{NAME}: read the official release under {root / MOS_DIR}; {CSV_FILE} beside it was not "
                         "read (--dataset-opt layout=csv reads it instead)")
    else:
        label_file = c.require_file(root, CSV_FILE, NAME, " Or lay out the official release (see README, 'Datasets').")
        items = read_csv_layout(label_file)
    image_dir = c.find_image_dir(root, IMAGE_DIRS, items[0].image.name)
    return c.labels_only(NAME, items, tuple(TARGETS), label_file, image_dir, notes, root, ATTRIBUTES)


SPEC = DatasetSpec(
    name=NAME,
    summary="AIGCIQA2023: 2,400 images of 6 generators, 100 prompts; quality, authenticity and correspondence MOS",
    targets=("quality", "authenticity", "alignment"),
    loader="agiqa_bench.datasets.aigciqa2023:load",
    files="DATA/MOS/mosz1-3.mat + AIGCIQA2023_Prompts.xlsx + Image/allimg/, or AIGCIQA2023.csv + images",
    options=(DatasetOption("layout", "auto, official (the .mat release) or csv (the one-file conversion)"),),
    attributes=ATTRIBUTES,
)
