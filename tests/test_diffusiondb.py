"""The DiffusionDB reader: folders and zips, skipped entries, and hostile files (zip bombs, decompression bombs)."""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest

from agiqa_bench.datasets.diffusiondb import PartReader, ReadLimits, SkipCounts, iter_diffusiondb
from agiqa_bench.errors import DataError, ImageReadError
from diffusiondb_support import PARTS, PER_PART, make_corpus, part_files, png, shape_image, write_part


def pair_list(root: Path, skips=None) -> list[tuple]:
    return [(p.part, p.file, p.prompt, p.meta, np.asarray(p.image).tobytes()) for p in iter_diffusiondb(root, skips=skips)]


# -- reader --------------------------------------------------------------------------------------
def test_reader_yields_the_same_pairs_from_folders_zips_and_a_mix(tmp_path):
    lists = {form: pair_list(make_corpus(tmp_path / form, form)) for form in ("folder", "zip", "mix")}
    assert lists["folder"] == lists["zip"] == lists["mix"]
    pairs = lists["folder"]
    assert len(pairs) == PARTS * PER_PART
    assert [p[:2] for p in pairs] == sorted(p[:2] for p in pairs)  # parts, then files, in sorted order
    first = pairs[0]
    table = json.loads(part_files(1)["part-000001.json"])
    assert first[2] == table[first[1]]["p"]
    assert first[3] == {"seed": table[first[1]]["se"], "cfg": 7.0, "steps": 50, "sampler": "k_lms"}
    assert pair_list(tmp_path / "folder") == pairs  # deterministic
    shutil.copy(tmp_path / "zip" / "part-000001.zip", tmp_path / "folder")  # a part as folder and zip: read once
    assert pair_list(tmp_path / "folder") == pairs


def test_reader_skips_and_counts_broken_entries_naming_the_files(tmp_path):
    root = make_corpus(tmp_path / "c", "mix")
    folder = root / "part-000001"
    table = json.loads((folder / "part-000001.json").read_text())
    table["ghost.png"] = {"p": "an image that is not there"}
    table["broken.png"] = {"p": "a truncated file"}
    (folder / "part-000001.json").write_text(json.dumps(table))
    (folder / "orphan.png").write_bytes(png(shape_image(0)))
    (folder / "broken.png").write_bytes(png(shape_image(1))[:40])
    files = part_files(2)
    files["bad.png"] = b"not an image at all"
    files["part-000002.json"] = json.dumps({**json.loads(files["part-000002.json"]), "bad.png": {"p": "junk"}}).encode()
    (root / "part-000002.zip").unlink()
    write_part(root, 2, files, as_zip=True)

    skips = SkipCounts()
    with pytest.warns(UserWarning) as record:
        pairs = pair_list(root, skips)
    assert len(pairs) == PARTS * PER_PART
    assert (skips.missing_image, skips.missing_prompt, skips.unreadable, skips.bad_parts) == (1, 1, 2, 0)
    text = "\n".join(str(w.message) for w in record)
    for name in ("ghost.png", "orphan.png", "broken.png", "part-000002.zip:bad.png"):
        assert name in text
    assert "Traceback" not in text
    assert "1 json entries without image, 1 images without prompt, 2 unreadable images" in text


def test_reader_without_parts_says_what_layout_it_expects(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no parts here")
    for root in (tmp_path / "empty", tmp_path / "absent"):
        with pytest.raises(DataError, match=r"part-000001/.*part-000001\.json.*part-000001\.zip"):
            list(iter_diffusiondb(root))




# -- hostile files ---------------------------------------------------------------------------------
def zip_with(root: Path, members: dict[str, bytes], part: int = 1) -> Path:
    """A part zip holding `members` (deflated) plus a json giving each .png member a prompt."""
    table = {name: {"p": f"prompt of {name}"} for name in members if name.endswith(".png")}
    path = root / f"part-{part:06d}.zip"
    root.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in members.items():
            z.writestr(name, data)
        z.writestr(f"part-{part:06d}.json", json.dumps(table))
    return path


def read_all(root: Path, limits: ReadLimits | None = None) -> tuple[list, SkipCounts, str]:
    skips = SkipCounts()
    with pytest.warns(UserWarning) as record:
        pairs = list(iter_diffusiondb(root, skips=skips, limits=limits))
    return pairs, skips, "\n".join(str(w.message) for w in record)


def test_a_zip_bomb_member_is_skipped_by_its_declared_size_and_the_rest_is_read(tmp_path):
    good = png(shape_image(0))
    zip_with(tmp_path, {"a.png": good, "bomb.png": bytes(80 * 2**20)})  # 80 MB of zeros: ~80 KB deflated
    assert (tmp_path / "part-000001.zip").stat().st_size < 2**20
    pairs, skips, text = read_all(tmp_path)
    assert [p.file for p in pairs] == ["a.png"] and skips.unreadable == 1
    assert "part-000001.zip:bomb.png declares 83,886,080 bytes uncompressed, over the cap of 67,108,864" in text


def test_a_member_whose_header_lies_about_its_size_is_cut_at_the_cap(tmp_path):
    """The header says 1,000 bytes, the stream inflates to 1 MB: refused (checksum or cap), never read whole."""
    path = zip_with(tmp_path, {"a.png": png(shape_image(0)), "liar.png": bytes(2**20)})
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as z:
        info = z.getinfo("liar.png")
    local = info.header_offset
    data[local + 22:local + 26] = (1000).to_bytes(4, "little")  # local header: uncompressed size
    central = data.index(b"PK\x01\x02")
    while data[central + 46:central + 46 + len(b"liar.png")] != b"liar.png":
        central = data.index(b"PK\x01\x02", central + 4)
    data[central + 24:central + 28] = (1000).to_bytes(4, "little")  # central directory: uncompressed size
    path.write_bytes(bytes(data))
    with PartReader("part-000001", path, ReadLimits(member_bytes=4096)) as reader:
        with pytest.raises(ImageReadError, match="liar.png"):
            reader.read("liar.png")
        assert reader.read("a.png") == png(shape_image(0))
    pairs, skips, text = read_all(tmp_path, ReadLimits(member_bytes=4096))
    assert [p.file for p in pairs] == ["a.png"] and skips.unreadable == 1 and "liar.png" in text


def test_a_part_declaring_too_much_in_all_is_refused_as_a_whole(tmp_path):
    make_corpus(tmp_path / "c", "zip")
    pairs, skips, text = read_all(tmp_path / "c", ReadLimits(part_bytes=1000))
    assert pairs == [] and skips.bad_parts == PARTS
    assert "part-000001.zip declares" in text and "over the caps" in text
    with pytest.raises(DataError, match="zip bomb"):
        PartReader("part-000001", tmp_path / "c" / "part-000001.zip", ReadLimits(part_members=2))


def test_a_decompression_bomb_image_is_skipped_naming_the_file(tmp_path):
    from PIL import Image
    import io

    buf = io.BytesIO()
    Image.new("L", (8000, 8000)).save(buf, "PNG")  # 64 megapixels, ~70 KB on disk: over the 40 MP pixel cap
    zip_with(tmp_path, {"a.png": png(shape_image(0)), "huge.png": buf.getvalue()})
    pairs, skips, text = read_all(tmp_path)
    assert [p.file for p in pairs] == ["a.png"] and skips.unreadable == 1
    assert "part-000001.zip:huge.png is 8000x8000 = 64,000,000 pixels, over the cap of 40,000,000" in text


def test_a_folder_file_over_the_cap_is_skipped(tmp_path):
    make_corpus(tmp_path / "c", "folder")
    pairs, skips, text = read_all(tmp_path / "c", ReadLimits(member_bytes=100))
    assert pairs == [] and "over the cap of 100 per file" in text
