"""AIGCIQA2023 and AIGIQA-20K loaders on generated files in each official layout (made-up numbers)."""

from __future__ import annotations

import csv
import io
import json
import shutil
import sys

import numpy as np
import pandas as pd
import pytest
import scipy.io
from PIL import Image
from typer.testing import CliRunner

from agiqa_bench.cli import app
from agiqa_bench.datasets import accepted_options, aigciqa2023, dataset_specs, load_dataset
from agiqa_bench.errors import ConfigError, DataError, MissingImagesError
from agiqa_bench.records import KNOWN_TARGETS

runner = CliRunner()
N = aigciqa2023.N_IMAGES
STD_NAMES = {"quality": "SD1.mat", "authenticity": "SD2.mat", "alignment": "SD3.mat"}
MOS_NAMES = {"quality": "mosz1.mat", "authenticity": "mosz2.mat", "alignment": "mosz3.mat"}


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def one_line_error(result, *needles):
    """Exit 2, an `error:` line holding every needle, no traceback."""
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert any(line.startswith("error:") for line in result.output.splitlines()), result.output
    text = " ".join(result.output.split())
    for needle in needles:
        assert needle in text, (needle, result.output)
    return text


def png_bytes(size: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((size, size, 3), 128, dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def write_images(folder, names, size=4):
    folder.mkdir(parents=True, exist_ok=True)
    data = png_bytes(size)
    for name in names:
        (folder / name).write_bytes(data)


# -- AIGCIQA2023 -------------------------------------------------------------------------------
def made_up_numbers(seed=0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    out = {t: rng.normal(50, 10, N).round(4) for t in MOS_NAMES}
    out.update({f"std_{t}": rng.uniform(5, 15, N).round(4) for t in MOS_NAMES})
    return out


def sheet_rows() -> list[dict]:
    """100 prompts; style and class cycle with different periods so a wrong row index shows."""
    return [{"Style": f"style{p % 3}", "Object": f"class{p % 7}", "prompt": f"a picture, number {p}"}
            for p in range(aigciqa2023.N_PROMPTS)]


def write_official(root, numbers, *, sheet_in_data=True, std=True, images=True):
    (root / "DATA" / "MOS").mkdir(parents=True, exist_ok=True)
    for target, name in MOS_NAMES.items():
        scipy.io.savemat(root / "DATA" / "MOS" / name, {"MOSz": numbers[target].reshape(N, 1)})
    if std:
        (root / "DATA" / "STD").mkdir(parents=True, exist_ok=True)
        for target, name in STD_NAMES.items():
            scipy.io.savemat(root / "DATA" / "STD" / name, {"SD": numbers[f"std_{target}"].reshape(N, 1)})
    sheet = root / ("DATA" if sheet_in_data else "") / aigciqa2023.PROMPT_SHEET
    pd.DataFrame(sheet_rows()).to_excel(sheet, index=False)
    if images:
        write_images(root / "Image" / "allimg", [f"{i}.png" for i in range(N)])
    return root


def write_csv(root, numbers, *, image_dir="Images", images=True, generator_col=False, quoted=False):
    sheet = sheet_rows()
    rows = []
    for i in range(N):
        p = sheet[aigciqa2023.prompt_index_of(i)]
        # a circulating copy wraps every prompt in literal quotes, and some end in a space
        prompt = f'"{p["prompt"]}' + ("  " if i % 7 == 0 else "") + '"' if quoted else p["prompt"]
        row = {"name": f"{i}.png", "prompt": prompt, "style": p["Style"], "class": p["Object"],
               "quality_mos": numbers["quality"][i], "authenticity_mos": numbers["authenticity"][i],
               "correspondence_mos": numbers["alignment"][i], "quality_std": numbers["std_quality"][i],
               "authenticity_std": numbers["std_authenticity"][i], "correspondence_std": numbers["std_alignment"][i]}
        if generator_col:
            row["generator"] = f"gen{i % 2}"
        rows.append(row)
    root.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(root / aigciqa2023.CSV_FILE)  # with its unnamed index column, as circulated
    if images:
        write_images(root / image_dir if image_dir else root, [f"{i}.png" for i in range(N)])
    return root


@pytest.fixture(scope="session")
def aigc_numbers():
    return made_up_numbers()


@pytest.fixture(scope="session")
def aigc_official(tmp_path_factory, aigc_numbers):
    """The full official layout, 2,400 4x4 PNGs: read it, never modify it."""
    return write_official(tmp_path_factory.mktemp("aigc") / "official", aigc_numbers)


@pytest.fixture(scope="session")
def aigc_csv(tmp_path_factory, aigc_numbers):
    return write_csv(tmp_path_factory.mktemp("aigc") / "csv", aigc_numbers)


def test_official_layout_maps_every_column(aigc_official, aigc_numbers):
    ds = load_dataset("aigciqa2023", aigc_official)
    assert ds.targets == ("quality", "authenticity", "alignment")
    assert ds.attributes == ("style", "class") and ds.attribute_names() == ("generator", "style", "class")
    assert len(ds) == N and ds.image_dir == aigc_official / "Image" / "allimg"
    assert ds.label_file == aigc_official / "DATA" / "MOS" / "mosz1.mat"
    sheet = sheet_rows()
    for i in (0, 3, 4, 399, 400, 401, 1234, 1999, 2000, N - 1):
        item = ds.items[i]
        p = (i % 400) // 4
        assert item.id == f"{i}.png" and item.image == aigc_official / "Image" / "allimg" / f"{i}.png"
        assert item.targets == {t: aigc_numbers[t][i] for t in ("quality", "authenticity", "alignment")}
        for t in ("quality", "authenticity", "alignment"):
            assert item.meta[f"std_{t}"] == aigc_numbers[f"std_{t}"][i]
        assert item.prompt == sheet[p]["prompt"] and item.group == str(p)
        assert item.meta["style"] == sheet[p]["Style"] and item.meta["class"] == sheet[p]["Object"]
        assert ds.attribute(item, "class") == sheet[p]["Object"]
    blocks = [ds.items[b * 400].generator for b in range(6)]
    assert blocks == ["Controlnet", "DALLE", "Glide", "Lafite", "stable-diffusion", "Unidiffuser"]
    assert all(item.generator == blocks[i // 400] for i, item in enumerate(ds.items))
    assert len(ds.groups) == 100
    sizes = pd.Series([item.group for item in ds.items]).value_counts()
    assert (sizes == 24).all()  # 6 generators x 4 images per prompt


def test_csv_layout_gives_the_same_items_as_the_official_one(aigc_official, aigc_csv):
    official = load_dataset("aigciqa2023", aigc_official)
    converted = load_dataset("aigciqa2023", aigc_csv)
    assert converted.image_dir == aigc_csv / "Images" and converted.label_file == aigc_csv / "AIGCIQA2023.csv"
    assert converted.targets == official.targets and converted.attributes == official.attributes
    strip = lambda ds: [(it.id, it.prompt, it.targets, it.group, it.generator, it.image.name) for it in ds]
    assert strip(converted) == strip(official)
    keys = ("style", "class", "prompt_index", "std_quality", "std_authenticity", "std_alignment")
    assert [[it.meta[k] for k in keys] for it in converted] == [[it.meta[k] for k in keys] for it in official]


def test_a_copy_with_quoted_prompts_and_trailing_spaces_gives_the_same_prompts(tmp_path, aigc_official, aigc_numbers):
    """The prompt feeds every prompt-aware method and the grouping: every layout gives identical text."""
    official = load_dataset("aigciqa2023", aigc_official)
    quoted = load_dataset("aigciqa2023", write_csv(tmp_path / "quoted", aigc_numbers, quoted=True))
    raw = (tmp_path / "quoted" / aigciqa2023.CSV_FILE).read_text()
    assert '"a picture, number 0  ""' in raw  # the quotes and the spaces are really in the file
    assert [it.prompt for it in quoted] == [it.prompt for it in official]
    assert [it.group for it in quoted] == [it.group for it in official]


def test_csv_layout_images_beside_it_a_generator_column_and_row_order(tmp_path, aigc_numbers):
    root = write_csv(tmp_path / "d", aigc_numbers, image_dir="", generator_col=True)
    frame = pd.read_csv(root / "AIGCIQA2023.csv", index_col=0)
    frame.iloc[::-1].to_csv(root / "AIGCIQA2023.csv")  # rows in any order: items come in image-index order
    ds = load_dataset("aigciqa2023", root)
    assert ds.image_dir == root
    assert [it.id for it in ds] == [f"{i}.png" for i in range(N)]
    assert ds.items[3].generator == "gen1" and ds.items[4].generator == "gen0"
    assert ds.items[7].targets["alignment"] == aigc_numbers["alignment"][7]


def test_prompt_sheet_at_the_root_and_std_optional(tmp_path, aigc_numbers):
    root = write_official(tmp_path / "d", aigc_numbers, sheet_in_data=False, std=False, images=False)
    ds = load_dataset("aigciqa2023", root, check_images=False)
    assert ds.items[805].prompt == "a picture, number 1"  # (805 % 400) // 4 = 1
    assert "std_quality" not in ds.items[0].meta


@pytest.mark.parametrize("layout", ["official", "csv"])
def test_splits_export_keeps_each_prompt_on_one_side(layout, aigc_official, aigc_csv, tmp_path):
    root = aigc_official if layout == "official" else aigc_csv
    out = tmp_path / "splits.json"
    result = invoke("splits", "export", "--dataset", "aigciqa2023", "--data-root", root, "--output", out)
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    prompt_of = {f"{i}.png": (i % 400) // 4 for i in range(N)}
    for split in data["splits"]:
        parts = [split["train"], split["val"], split["test"]]
        assert sum(map(len, parts)) == N and len(set().union(*map(set, parts))) == N
        groups = [{prompt_of[i] for i in part} for part in parts]
        assert len(set().union(*groups)) == 100
        assert not groups[0] & groups[2] and not groups[1] & groups[2] and not groups[0] & groups[1]
        assert len(split["test_groups"]) == 20 and len(split["test"]) == 20 * 24


def test_both_layouts_give_the_same_splits(aigc_official, aigc_csv, tmp_path):
    for name, root in (("a", aigc_official), ("b", aigc_csv)):
        assert invoke("splits", "export", "--dataset", "aigciqa2023", "--data-root", root,
                      "--output", tmp_path / f"{name}.json").exit_code == 0
    assert json.loads((tmp_path / "a.json").read_text()) == json.loads((tmp_path / "b.json").read_text())


def labels_only(tmp_path, numbers=None):
    return write_official(tmp_path / "d", numbers if numbers is not None else made_up_numbers(), images=False)


def export(root, tmp_path):
    return invoke("splits", "export", "--dataset", "aigciqa2023", "--data-root", root, "--output", tmp_path / "s.json")


def test_a_mat_without_its_key_names_the_file_and_the_key(tmp_path):
    root = labels_only(tmp_path)
    scipy.io.savemat(root / "DATA" / "MOS" / "mosz2.mat", {"MOS": np.zeros((N, 1))})
    one_line_error(export(root, tmp_path), "mosz2.mat", "no variable 'MOSz'", "it holds: MOS")


@pytest.mark.parametrize("where, length", [("MOS/mosz3.mat", N - 1), ("STD/SD1.mat", N + 4)])
def test_a_mat_of_the_wrong_length_is_refused(tmp_path, where, length):
    root = labels_only(tmp_path)
    key = "MOSz" if where.startswith("MOS") else "SD"
    scipy.io.savemat(root / "DATA" / where, {key: np.ones((length, 1))})
    one_line_error(export(root, tmp_path), where.split("/")[1], f"has {length} values; expected 2400")


def test_a_2d_mat_is_refused_naming_its_shape(tmp_path):
    root = labels_only(tmp_path)
    scipy.io.savemat(root / "DATA" / "MOS" / "mosz1.mat", {"MOSz": np.ones((1200, 2))})
    one_line_error(export(root, tmp_path), "mosz1.mat", "shape (1200, 2)")


def test_a_prompt_sheet_of_the_wrong_length_is_refused(tmp_path):
    root = labels_only(tmp_path)
    pd.DataFrame(sheet_rows()[:99]).to_excel(root / "DATA" / aigciqa2023.PROMPT_SHEET, index=False)
    one_line_error(export(root, tmp_path), "AIGCIQA2023_Prompts.xlsx", "has 99 prompt rows; expected 100")


def test_a_nan_mos_names_the_image_index(tmp_path):
    numbers = made_up_numbers()
    numbers["authenticity"][1234] = np.nan
    root = labels_only(tmp_path, numbers)
    one_line_error(export(root, tmp_path), "mosz2.mat", "image index 1234 (1234.png)", "not a finite number")


def test_an_unreadable_mat_is_one_line(tmp_path):
    root = labels_only(tmp_path)
    (root / "DATA" / "MOS" / "mosz1.mat").write_bytes(b"this is not a MATLAB file")
    one_line_error(export(root, tmp_path), "cannot read MATLAB file", "mosz1.mat")


def _fake_v73(path):
    """The 128-byte header of a MATLAB v7.3 file (version 0x0200): scipy refuses it before reading on."""
    text = b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Mon Jan  1 00:00:00 2024 HDF5 schema 1.00 ."
    path.write_bytes(text.ljust(116, b" ") + b"\0" * 8 + b"\x00\x02IM" + b"\0" * 384)


def test_a_v73_mat_without_h5py_says_how_to_convert_it(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "h5py", None)  # as if h5py were not installed
    root = labels_only(tmp_path)
    _fake_v73(root / "DATA" / "MOS" / "mosz3.mat")
    one_line_error(export(root, tmp_path), "mosz3.mat", "MATLAB v7.3", "'-v7'", "pip install h5py")


def test_a_v73_mat_is_read_with_h5py(tmp_path):
    h5py = pytest.importorskip("h5py")
    numbers = made_up_numbers()
    root = labels_only(tmp_path, numbers)
    path = root / "DATA" / "MOS" / "mosz2.mat"
    with h5py.File(path, "w", userblock_size=512) as f:
        f["MOSz"] = numbers["authenticity"].reshape(1, N)  # MATLAB's column-major 2400 x 1
    with open(path, "r+b") as f:
        head = b"MATLAB 7.3 MAT-file, Platform: GLNXA64, HDF5 schema 1.00 .".ljust(116, b" ")
        f.write(head + b"\0" * 8 + b"\x00\x02IM")
    ds = load_dataset("aigciqa2023", root, check_images=False)
    assert [it.targets["authenticity"] for it in ds.items[:5]] == list(numbers["authenticity"][:5])


def test_an_empty_prompt_in_the_sheet_names_the_row(tmp_path):
    root = labels_only(tmp_path)
    rows = sheet_rows()
    rows[41]["prompt"] = "  "
    pd.DataFrame(rows).to_excel(root / "DATA" / aigciqa2023.PROMPT_SHEET, index=False)
    one_line_error(export(root, tmp_path), "AIGCIQA2023_Prompts.xlsx row 43", "empty prompt")


@pytest.mark.parametrize("change, needles", [
    (lambda f: f.assign(quality_mos=f["quality_mos"].where(f.index != 17, np.nan)), ("row 19", "'quality_mos'")),
    (lambda f: f.assign(correspondence_std=f["correspondence_std"].astype(object).where(f.index != 5, "high")),
     ("row 7", "'correspondence_std'", "'high'")),
    (lambda f: f.assign(prompt=f["prompt"].where(f.index != 9, "")), ("row 11", "empty prompt")),
    (lambda f: f.assign(name=f["name"].where(f.index != 3, "img3.png")), ("row 5", "'img3.png'", "0.png .. 2399.png")),
    (lambda f: f.assign(name=f["name"].where(f.index != 8, "2.png")), ("row 10", "2.png is listed again", "row 4")),
    (lambda f: f.iloc[:-1], ("has 2399 image rows; expected 2400", "2399.png")),
    (lambda f: f.drop(columns="authenticity_mos"), ("lacks column(s) authenticity_mos",)),
])
def test_bad_csv_rows_are_named(tmp_path, aigc_numbers, change, needles):
    root = write_csv(tmp_path / "d", aigc_numbers, images=False)
    frame = pd.read_csv(root / "AIGCIQA2023.csv", index_col=0)
    change(frame).to_csv(root / "AIGCIQA2023.csv")
    one_line_error(export(root, tmp_path), "AIGCIQA2023.csv", *needles)


def test_missing_images_are_the_usual_error(tmp_path, aigc_numbers):
    root = write_csv(tmp_path / "d", aigc_numbers, image_dir="Image/allimg")
    (root / "Image" / "allimg" / "1500.png").unlink()
    with pytest.raises(MissingImagesError, match=r"1 image\(s\) listed in .*AIGCIQA2023\.csv are missing .*1500\.png"):
        load_dataset("aigciqa2023", root)
    official = labels_only(tmp_path / "o")
    result = invoke("run", "--methods", "cpbd", "--dataset", "aigciqa2023", "--data-root", official,
                    "--repeats", "1", "--out", tmp_path / "runs")
    one_line_error(result, "2400 image(s) listed in", "mosz1.mat", "Image/allimg")


def test_no_layout_found_and_layout_option(tmp_path, aigc_numbers):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="found neither the official release .* nor the one-file conversion"):
        load_dataset("aigciqa2023", tmp_path / "empty")
    both = write_csv(labels_only(tmp_path), aigc_numbers, images=False)
    official = load_dataset("aigciqa2023", both, check_images=False)
    assert official.label_file.name == "mosz1.mat" and any("AIGCIQA2023.csv" in n for n in official.notes)
    assert load_dataset("aigciqa2023", both, check_images=False, layout="csv").label_file.name == "AIGCIQA2023.csv"
    with pytest.raises(ConfigError, match="layout must be one of auto, official, csv"):
        load_dataset("aigciqa2023", both, layout="mat")


# -- AIGIQA-20K --------------------------------------------------------------------------------
def write_20k(root, rows, *, filename="info_train.csv", header=None, images="train"):
    root.mkdir(parents=True, exist_ok=True)
    with open(root / filename, "w", newline="") as f:
        w = csv.writer(f)
        if header:
            w.writerow(header)
        w.writerows(rows)
    if images is not None:
        write_images(root / images if images else root, [r[0] for r in rows], size=1)
    return root


TRAIN = [
    ("SDXL_Turbo_0012.png", "A cat, sitting on a mat", 3.25),
    ("LCM_SD1.5_0003.png", "a  CAT, sitting on a mat ", 2.5),
    ("DALLE3_0000.png", "a red car at night", 4.0),
    ("Midjourney_v5.2_0101.png", "a red car   at night", 1.75),
    ("SDXL_Turbo_0013.png", "mountains, lakes, and a \"quoted\" sky", 3.0),
]


def test_aigiqa20k_generators_groups_and_quoted_prompts(tmp_path):
    root = write_20k(tmp_path / "d", TRAIN)
    ds = load_dataset("aigiqa20k", root)
    assert ds.targets == ("overall",) and ds.image_dir == root / "train"
    assert [it.generator for it in ds] == ["SDXL_Turbo", "LCM_SD1.5", "DALLE3", "Midjourney_v5.2", "SDXL_Turbo"]
    assert [it.targets for it in ds] == [{"overall": r[2]} for r in TRAIN]
    assert ds.items[4].prompt == 'mountains, lakes, and a "quoted" sky'
    assert ds.items[1].prompt == "a  CAT, sitting on a mat"
    assert ds.items[0].group == ds.items[1].group == "a cat, sitting on a mat"
    assert ds.items[2].group == ds.items[3].group != ds.items[0].group
    assert len(ds.groups) == 3 and ds.items[1].meta["index"] == 3


def test_aigiqa20k_header_row_is_detected(tmp_path):
    plain = load_dataset("aigiqa20k", write_20k(tmp_path / "a", TRAIN))
    headed = load_dataset("aigiqa20k", write_20k(tmp_path / "b", TRAIN, header=["name", "prompt", "mos"], images="images"))
    assert headed.image_dir == tmp_path / "b" / "images"
    assert [(it.id, it.prompt, it.targets, it.group) for it in headed] == [(it.id, it.prompt, it.targets, it.group) for it in plain]
    assert [it.meta["row"] for it in headed] == [r + 1 for r in [it.meta["row"] for it in plain]]


def test_aigiqa20k_14000_rows_through_splits_export(tmp_path):
    rows = [(f"gen{g}_{i:04d}.png", f"prompt {i // 15}, shared", 1 + (i * 7 % 40) / 10)
            for i in range(14000) for g in [i % 15]]
    root = write_20k(tmp_path / "d", rows, images=None)
    out = tmp_path / "s.json"
    result = invoke("splits", "export", "--dataset", "aigiqa20k", "--data-root", root, "--output", out)
    assert result.exit_code == 0, result.output
    split = json.loads(out.read_text())["splits"][0]
    assert split["n_train"] + split["n_val"] + split["n_test"] == 14000
    group_of = {name: prompt for name, prompt, _ in rows}
    assert not {group_of[i] for i in split["train"]} & {group_of[i] for i in split["test"]}


def test_aigiqa20k_val_part_is_unlabelled_and_never_benchmarked(tmp_path):
    root = write_20k(tmp_path / "d", TRAIN)
    write_20k(root, [(r[0].replace("_0", "_9"), r[1]) for r in TRAIN], filename="info_val.csv", images="val")
    with pytest.raises(ConfigError, match="part=val has no public labels.*allow_unlabelled=true"):
        load_dataset("aigiqa20k", root, part="val")
    one_line_error(invoke("splits", "export", "--dataset", "aigiqa20k", "--data-root", root, "--output",
                          tmp_path / "s.json", "--dataset-opt", "part=val"), "allow_unlabelled=true")
    val = load_dataset("aigiqa20k", root, part="val", allow_unlabelled="true")
    assert val.targets == () and all(it.targets == {} for it in val) and len(val) == 5
    assert val.image_dir == root / "val" and val.items[1].id == "LCM_SD1.5_9003.png"
    with pytest.raises(ConfigError, match="bad value|true or false"):
        load_dataset("aigiqa20k", root, part="val", allow_unlabelled="maybe")
    from agiqa_bench.runner import plan_run

    with pytest.raises(ConfigError, match="has no targets .* cannot be benchmarked"):
        plan_run(["cpbd"], "aigiqa20k", data_root=root, dataset_options={"part": "val", "allow_unlabelled": "true"})
    one_line_error(invoke("splits", "export", "--dataset", "aigiqa20k", "--data-root", root, "--output",
                          tmp_path / "s.json", "--dataset-opt", "part=val", "--dataset-opt", "allow_unlabelled=true"),
                   "has no targets")
    one_line_error(invoke("run", "--methods", "cpbd", "--dataset", "aigiqa20k", "--data-root", root, "--out",
                          tmp_path / "runs", "--dataset-opt", "part=val", "--dataset-opt", "allow_unlabelled=true"),
                   "has no targets", "cannot be benchmarked")


@pytest.mark.parametrize("text, needles", [
    ("SDXL_Turbo_0012.png,a cat\n", ("info_train.csv row 1", "expected 3 fields", "got 2")),
    ("a_0001.png,a cat,3.0\nb_0002.png,a dog, sitting,2.0\n", ("row 2", "got 4", "quote a prompt")),
    ("a_0001.png,a cat,3.0\nb_0002.png,a dog,high\n", ("row 2", "'mos' must be a number", "'high'")),
    ("name,prompt,mos\na_0001.png,a cat,3.0\nb_0002.png,a dog,nan\n", ("row 3", "'mos' must be a number")),
    ("a_0001.png,a cat,3.0\nb_0002.png,  ,2.0\n", ("row 2", "empty prompt for b_0002.png")),
    ("a_0001.png,a cat,3.0\na_0002.png,a dog,2.0\nSDXL_Turbo.png,a cow,2.0\n", ("row 3", "'SDXL_Turbo.png'", "_NNNN")),
    ('a_0001.png,"a cat,3.0\n', ("cannot read label file", "info_train.csv")),
])
def test_aigiqa20k_bad_rows_are_named(tmp_path, text, needles):
    root = tmp_path / "d"
    root.mkdir()
    (root / "info_train.csv").write_text(text)
    one_line_error(invoke("splits", "export", "--dataset", "aigiqa20k", "--data-root", root, "--output",
                          tmp_path / "s.json"), "info_train.csv", *needles)


def test_aigiqa20k_missing_image_is_the_usual_error(tmp_path):
    root = write_20k(tmp_path / "d", TRAIN)
    (root / "train" / "DALLE3_0000.png").unlink()
    with pytest.raises(MissingImagesError, match=r"1 image\(s\) listed in .*info_train\.csv are missing .*DALLE3_0000"):
        load_dataset("aigiqa20k", root)
    shutil.rmtree(root / "train")
    with pytest.raises(DataError, match="expected the label file info_train.csv"):
        load_dataset("aigiqa20k", tmp_path)


# -- both: registry, CLI listing, targets ------------------------------------------------------
def test_both_are_registered_and_listed(monkeypatch):
    from agiqa_bench import console

    assert "authenticity" in KNOWN_TARGETS
    assert dataset_specs()["aigciqa2023"].targets == ("quality", "authenticity", "alignment")
    assert dataset_specs()["aigiqa20k"].targets == ("overall",)
    assert "layout" in accepted_options("aigciqa2023")
    assert {"part", "allow_unlabelled", "check_images"} <= set(accepted_options("aigiqa20k"))
    with pytest.raises(ConfigError, match="has no option nope"):
        load_dataset("aigiqa20k", None, nope=1)
    monkeypatch.setattr(console.console, "_width", 400)
    result = invoke("datasets")
    assert result.exit_code == 0, result.output
    lines = {line.split("│")[1].strip(): line for line in result.output.splitlines() if line.count("│") > 2}
    assert "quality, authenticity, alignment" in lines["aigciqa2023"] and "mosz1-3.mat" in lines["aigciqa2023"]
    assert "overall" in lines["aigiqa20k"] and "info_train.csv" in lines["aigiqa20k"]


def test_targets_of_aigciqa2023_are_ordered_in_the_tables():
    from leaderboard.tables import TARGET_ORDER

    assert TARGET_ORDER.index("quality") < TARGET_ORDER.index("authenticity") < TARGET_ORDER.index("alignment")
