"""Loaders on the real AGIQA label files (shared/datasets) with tiny generated images."""

from __future__ import annotations

import shutil
import warnings

import numpy as np
import pandas as pd
import pytest
from agiqa_test_support import DATASETS, blurred_shapes, write_image

from agiqa_bench.datasets import load_dataset
from agiqa_bench.datasets._common import DataWarning
from agiqa_bench.errors import DataError, ImageReadError, MissingImagesError
from agiqa_bench.images import load_rgb


def _labels_only(name: str):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        return load_dataset(name, DATASETS / name, check_images=False)


def test_agiqa1k_labels_groups_and_quirks():
    with pytest.warns(DataWarning, match="dreamStudio_8_9_1_1.jpg is listed 2 times"):
        ds = load_dataset("agiqa1k", DATASETS / "agiqa1k", check_images=False)
    assert len(ds) == 1079  # 1080 rows, one duplicate name
    assert ds.targets == ("overall",)
    assert len(ds.groups) == 180
    sizes = pd.Series([it.group for it in ds]).value_counts()
    # 90 deepai-only groups of 4, 88 deepai+dreamStudio groups of 8, one 7 (the dedupe) and one 8
    assert sorted(sizes.unique().tolist()) == [4, 7, 8]
    assert (sizes == 4).sum() == 90
    item = ds.subset(["dreamStudio_8_9_1_1.jpg"])[0]
    assert item.targets["overall"] == pytest.approx(2.0841, abs=1e-4)  # policy 'last'
    # dreamStudio's main 8 (alien) and second 9 (wearing shirt) map to deepai's 9 and 14
    assert item.group == "9_14" and item.generator == "dreamStudio"
    deepai = ds.subset(["deepai_9_14_0_0.jpg"])[0]
    assert deepai.prompt.startswith("alien, wearing shirt")
    assert deepai.group == item.group
    assert "dreamStudio_8_5_0_0.jpg" not in {it.id for it in ds}


def test_agiqa1k_duplicate_policies():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        first = load_dataset("agiqa1k", DATASETS / "agiqa1k", check_images=False, duplicates="first")
        mean = load_dataset("agiqa1k", DATASETS / "agiqa1k", check_images=False, duplicates="mean")
    assert first.subset(["dreamStudio_8_9_1_1.jpg"])[0].targets["overall"] == pytest.approx(0.4414, abs=1e-4)
    assert mean.subset(["dreamStudio_8_9_1_1.jpg"])[0].targets["overall"] == pytest.approx((0.4414 + 2.0841) / 2, abs=1e-3)


def test_agiqa3k_labels():
    ds = _labels_only("agiqa3k")
    assert len(ds) == 2982
    assert ds.targets == ("quality", "alignment")
    assert len(ds.groups) == 300
    item = ds.subset(["sd1.5_lowstep_042.jpg"])[0]
    assert item.group == "42" and item.generator == "sd1.5_lowstep" and item.meta["family"] == "sd1.5"
    assert "std_quality" in item.meta and "adj1" in item.meta
    families = {it.meta["family"] for it in ds}
    assert families == {"AttnGAN", "DALLE2", "glide", "midjourney", "sd1.5", "xl2.2"}
    q = np.array([it.targets["quality"] for it in ds])
    assert q.mean() == pytest.approx(2.5004, abs=1e-3)


def _agiqa1k_folder(tmp_path, n_rows=40):
    """The real xlsx (first n rows) plus tiny images in file/."""
    root = tmp_path / "agiqa1k"
    root.mkdir()
    frame = pd.read_excel(DATASETS / "agiqa1k" / "AIGC_MOS_Zscore.xlsx").head(n_rows)
    frame.to_excel(root / "AIGC_MOS_Zscore.xlsx", index=False)
    for i, name in enumerate(frame["Image"]):
        write_image(root / "file" / name.replace(".jpg", ".jpg"), blurred_shapes(24, i % 3, i))
    return root, frame


def test_agiqa1k_with_images(tmp_path):
    root, frame = _agiqa1k_folder(tmp_path)
    ds = load_dataset("agiqa1k", root)
    assert len(ds) == len(frame)
    assert ds.image_dir == root / "file"
    assert load_rgb(ds.items[0].image).shape == (24, 24, 3)


def test_missing_images_error_up_front_and_drop_option(tmp_path):
    root, frame = _agiqa1k_folder(tmp_path)
    gone = [frame["Image"][3], frame["Image"][7]]
    for name in gone:
        (root / "file" / name).unlink()
    with pytest.raises(MissingImagesError) as info:
        load_dataset("agiqa1k", root)
    assert "2 image(s)" in str(info.value) and gone[0] in str(info.value) and "--drop-missing" in str(info.value)
    with pytest.warns(DataWarning, match="dropped 2 item"):
        ds = load_dataset("agiqa1k", root, drop_missing=True)
    assert len(ds) == len(frame) - 2
    assert not set(gone) & {it.id for it in ds}
    assert any("dropped 2" in n for n in ds.notes)


def test_missing_label_file_says_where(tmp_path):
    (tmp_path / "agiqa1k").mkdir()
    with pytest.raises(DataError, match=r"AIGC_MOS_Zscore\.xlsx at .*agiqa1k"):
        load_dataset("agiqa1k", tmp_path / "agiqa1k")


def test_no_data_root_says_how(monkeypatch):
    monkeypatch.delenv("AGIQA_BENCH_DATA", raising=False)
    with pytest.raises(DataError, match="--data-root"):
        load_dataset("agiqa3k")


def test_data_root_from_environment(monkeypatch, tiny_agiqa3k):
    parent = tiny_agiqa3k.parent / "data"
    shutil.copytree(tiny_agiqa3k, parent / "agiqa3k")
    monkeypatch.setenv("AGIQA_BENCH_DATA", str(parent))
    assert len(load_dataset("agiqa3k")) == 36


def test_bad_row_is_named(tiny_agiqa3k):
    frame = pd.read_csv(tiny_agiqa3k / "data.csv").astype({"mos_quality": object})
    frame.loc[4, "mos_quality"] = "abc"
    frame.to_csv(tiny_agiqa3k / "data.csv", index=False)
    with pytest.raises(DataError, match=r"data\.csv row 6: column 'mos_quality' must be a number, got 'abc'"):
        load_dataset("agiqa3k", tiny_agiqa3k)


def test_bad_name_is_named(tiny_agiqa3k):
    frame = pd.read_csv(tiny_agiqa3k / "data.csv")
    frame.loc[0, "name"] = "noindex.png"
    frame.to_csv(tiny_agiqa3k / "data.csv", index=False)
    with pytest.raises(DataError, match=r"row 2: image name 'noindex.png'"):
        load_dataset("agiqa3k", tiny_agiqa3k)


def test_missing_column_is_named(tiny_agiqa3k):
    frame = pd.read_csv(tiny_agiqa3k / "data.csv").drop(columns=["mos_align"])
    frame.to_csv(tiny_agiqa3k / "data.csv", index=False)
    with pytest.raises(DataError, match="lacks column.*mos_align"):
        load_dataset("agiqa3k", tiny_agiqa3k)


def test_bad_images_are_all_reported_up_front_or_dropped(tiny_agiqa3k, monkeypatch):
    """A truncated file, a non-image and an image over the pixel cap: one error naming each, before any work."""
    from agiqa_bench.errors import BadImagesError
    from agiqa_bench.images import MAX_PIXELS_ENV

    images = tiny_agiqa3k / "images"
    names = sorted(p.name for p in images.glob("*.png"))
    (images / names[0]).write_bytes((images / names[0]).read_bytes()[:40])  # truncated PNG
    (images / names[1]).write_bytes(b"<html>not an image</html>")
    with pytest.raises(BadImagesError) as info:
        load_dataset("agiqa3k", tiny_agiqa3k)
    text = str(info.value)
    assert "2 image(s) listed in" in text and names[0] in text and names[1] in text and "--drop-bad-images" in text
    assert "\n" not in text
    with pytest.raises(ImageReadError, match=names[0]):  # a read that skipped the check still names the file
        load_rgb(load_dataset("agiqa3k", tiny_agiqa3k, check_images=False).subset([names[0]])[0].image)

    with pytest.warns(DataWarning, match=f"dropped 2 item.*{names[0]}"):
        ds = load_dataset("agiqa3k", tiny_agiqa3k, drop_bad_images=True)
    assert len(ds) == len(names) - 2 and names[0] not in {it.id for it in ds}

    side = load_rgb(images / names[2]).shape[0]
    monkeypatch.setenv(MAX_PIXELS_ENV, str(side * side - 1))  # every image is now one pixel too large
    with pytest.raises(BadImagesError, match=rf"\.png \({side}x{side} = .* over the cap of .*higher --max-pixels"):
        load_dataset("agiqa3k", tiny_agiqa3k, drop_bad_images=False)
    with pytest.raises(ImageReadError, match="over the cap"):
        load_rgb(images / names[2])


def test_image_modes_become_8_bit_rgb_without_clipping(tmp_path):
    """16-bit grey is scaled (not clipped), transparency is composited on white, CMYK and palettes converted."""
    from PIL import Image

    ramp = np.linspace(0, 65535, 64 * 64).reshape(64, 64).astype(np.uint16)
    Image.fromarray(ramp).save(tmp_path / "g16.png")
    assert Image.open(tmp_path / "g16.png").mode.startswith("I")
    rgb = load_rgb(tmp_path / "g16.png")
    assert rgb.dtype == np.uint8 and rgb.shape == (64, 64, 3)
    assert rgb[..., 0].min() == 0 and rgb[..., 0].max() == 255  # the whole range, not clipped at 255 of 65535
    np.testing.assert_array_equal(rgb[..., 0], np.rint(ramp / 257.0).astype(np.uint8))

    rgba = np.zeros((8, 8, 4), dtype=np.uint8)
    rgba[..., 0] = 200  # hidden red under full transparency on the left half
    rgba[:, 4:, 3] = 255
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    out = load_rgb(tmp_path / "a.png")
    assert (out[:, :4] == 255).all() and (out[:, 4:] == (200, 0, 0)).all()
    Image.fromarray(rgba[..., [0, 3]].copy(), "LA").save(tmp_path / "la.png")
    assert (load_rgb(tmp_path / "la.png")[:, :4] == 255).all()

    Image.new("CMYK", (8, 8), (0, 255, 255, 0)).save(tmp_path / "c.jpg", quality=100)
    red = load_rgb(tmp_path / "c.jpg").reshape(-1, 3).mean(axis=0)
    assert red[0] > 200 and red[1] < 60 and red[2] < 60
    pal = Image.new("P", (8, 8), 1)
    pal.putpalette([0, 0, 0, 10, 200, 30] + [0] * 762)
    pal.save(tmp_path / "p.png")
    assert (load_rgb(tmp_path / "p.png") == (10, 200, 30)).all()
    pal.save(tmp_path / "pt.png", transparency=1)  # the palette colour 1 is transparent
    assert (load_rgb(tmp_path / "pt.png") == 255).all()


def test_csv_dataset_maps_columns(tmp_path):
    root = tmp_path / "mine"
    rows = []
    for i in range(6):
        write_image(root / "pics" / f"img{i}.png", blurred_shapes(16, 0, i))
        rows.append({"file": f"img{i}.png", "text": f"p{i // 2}", "q": i * 0.5, "a": 5 - i * 0.5, "gen": "x"})
    pd.DataFrame(rows).to_csv(root / "scores.csv", index=False)
    ds = load_dataset("csv", root, label="scores.csv", image_col="file", prompt_col="text",
                      targets="quality=q,alignment=a", generator_col="gen", images="pics")
    assert ds.targets == ("quality", "alignment")
    assert len(ds.groups) == 3  # grouped by prompt by default
    assert ds.items[2].targets == {"quality": 1.0, "alignment": 4.0}
    with pytest.raises(DataError, match="no column 'nope'"):
        load_dataset("csv", root, label="scores.csv", image_col="file", group_col="nope", targets="quality=q")


def test_rows_naming_images_outside_the_image_folder_are_refused(tmp_path):
    """`../x.png` and absolute paths in a label file are not read unless --allow-outside-root."""
    import pandas as pd

    from agiqa_test_support import blurred_shapes, write_image

    root = tmp_path / "data"
    (root / "images").mkdir(parents=True)
    write_image(root / "images" / "a.png", blurred_shapes(32, 0, 1))
    write_image(root / "images" / "b.png", blurred_shapes(32, 1, 2))
    secret = write_image(tmp_path / "outside.png", blurred_shapes(32, 2, 3))
    for hostile in ("../../outside.png", str(secret)):
        pd.DataFrame({"image": ["a.png", "b.png", hostile], "mos": [1.0, 2.0, 3.0]}).to_csv(root / "labels.csv",
                                                                                           index=False)
        opts = {"label": "labels.csv", "image_col": "image", "targets": "quality=mos", "images": root / "images"}
        with pytest.raises(DataError, match=r"labels\.csv: 1 row\(s\) name an image outside the image folder.*"
                                            r"outside\.png.*--allow-outside-root"):
            load_dataset("csv", root, **opts)
        ds = load_dataset("csv", root, **opts, allow_outside_root=True)
        assert len(ds.items) == 3 and ds.items[2].image.resolve() == secret.resolve()
