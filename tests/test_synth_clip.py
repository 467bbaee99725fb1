"""The synthetic CLIP world: the SynthAGIQA caption corpus and contrastive CLIP pretraining.

Corpora here are tiny (tens to a few hundred 64 px images, in tmp folders); the
CLIP is the random-initialised `agiqa-tiny-rn`, trained for a few steps.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from agiqa_bench.cli_pretrain import pretrain_app
from agiqa_bench.synthetic import corpus as sc
from agiqa_bench.synthetic.dataset import SynthConfig, plan_dataset, render_plan
from agiqa_bench.synthetic.world import BACKGROUND_COLOURS, OBJECT_COLOURS, PromptSpec
from agiqa_bench.clip import load_clip, tokenizer_for
from agiqa_bench.synthetic.clip_pretrain import pretrain_clip, retrieval_accuracy
from agiqa_bench.datasets.diffusiondb import SkipCounts, iter_diffusiondb

MODEL = "agiqa-tiny-rn"


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _pairs(root: Path) -> list[tuple[str, str, np.ndarray, dict]]:
    skips = SkipCounts()
    pairs = [(p.file, p.prompt, np.asarray(p.image), p.meta) for p in iter_diffusiondb(root, skips=skips)]
    assert skips.total == 0
    return pairs


def _tree_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# -- corpus ------------------------------------------------------------------------------------
def test_corpus_layout_folders_and_zip_read_the_same(tmp_path):
    folders = sc.write_corpus(tmp_path / "f", size=25, seed=3, part_size=10, workers=1)
    zips = sc.write_corpus(tmp_path / "z", size=25, seed=3, part_size=10, zip_parts=True, workers=1)
    assert sorted(p.name for p in folders.iterdir()) == ["corpus.json", "part-000001", "part-000002", "part-000003"]
    assert sorted(p.name for p in zips.iterdir()) == ["corpus.json", "part-000001.zip", "part-000002.zip", "part-000003.zip"]
    table = json.loads((folders / "part-000003" / "part-000003.json").read_text())
    assert sorted(table) == [f"{i:07d}.png" for i in range(20, 25)]
    entry = table["0000020.png"]
    assert entry["c"] == 0 and entry["st"] == 0 and entry["sa"] == "synth" and entry["se"] == sc.image_seed(3, 20)
    with zipfile.ZipFile(zips / "part-000001.zip") as zf:
        assert sorted(zf.namelist()) == sorted([f"{i:07d}.png" for i in range(10)] + ["part-000001.json"])
    marker = json.loads((folders / "corpus.json").read_text())
    assert marker["params"]["size"] == 25 and marker["params"]["seed"] == 3 and marker["n_parts"] == 3
    a, b = _pairs(folders), _pairs(zips)
    assert len(a) == 25 and [x[0] for x in a] == [f"{i:07d}.png" for i in range(25)]  # corpus order
    for (fa, pa, ia, ma), (fb, pb, ib, mb) in zip(a, b):
        assert (fa, pa, ma) == (fb, pb, mb) and np.array_equal(ia, ib)
        assert ia.shape == (64, 64, 3)
        assert ma["sampler"] == "synth" and ma["seed"] == sc.image_seed(3, int(fa[:7]))


def test_corpus_is_deterministic_independent_of_workers_and_seeded(tmp_path):
    one = sc.write_corpus(tmp_path / "one", size=12, seed=5, part_size=4, workers=1)
    two = sc.write_corpus(tmp_path / "two", size=12, seed=5, part_size=4, workers=2)
    assert _tree_bytes(one) == _tree_bytes(two)
    other = sc.write_corpus(tmp_path / "other", size=12, seed=6, part_size=4, workers=1)
    assert [p for _, p, _, _ in _pairs(other)] != [p for _, p, _, _ in _pairs(one)]
    # rewriting in place replaces the earlier corpus; a foreign folder is refused
    sc.write_corpus(one, size=4, seed=5, part_size=4, workers=1)
    assert len(_pairs(one)) == 4
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "x.txt").write_text("mine")
    with pytest.raises(FileExistsError):
        sc.write_corpus(tmp_path / "foreign", size=4, workers=1)


def test_captions_are_exact(tmp_path):
    root = sc.write_corpus(tmp_path / "c", size=150, seed=2, part_size=50, workers=1, defect_fraction=0.3)
    pairs = _pairs(root)
    checked = 0
    counts, styles, defects = set(), set(), 0
    for file, caption, image, meta in pairs:
        spec = meta["spec"]
        counts.add(spec["count"])
        styles.add(spec["style"])
        defects += meta["defect"] is not None
        if meta["defect"] is not None:
            assert meta["defect"][0] in ("blur", "noise", "jpeg", "lowres", "banding") and 0 < meta["defect"][1] <= 0.4
        # the caption is the spec's text, and the image is re-rendered from its seed alone
        again_caption, _, _, again_image = sc.render_entry(meta["seed"], 64, defect_fraction=0.3)
        assert again_caption == caption and np.array_equal(again_image, image)
        if spec["count"] == 0:
            assert caption == f"an empty {spec['background']} background"
            continue
        assert PromptSpec(**spec).text == caption
        pixels = image.reshape(-1, 3).astype(float)
        near_object = np.linalg.norm(pixels - OBJECT_COLOURS[spec["colour"]], axis=1) < 40
        near_background = np.linalg.norm(pixels - BACKGROUND_COLOURS[spec["background"]], axis=1) < 35
        if meta["defect"] is None and spec["count"] == 1 and spec["style"] == "":
            # one filled object: it covers a visible share of the image in exactly the named colour,
            # and every other object colour is (nearly) absent
            assert near_object.mean() > 0.05, caption
            for name, rgb in OBJECT_COLOURS.items():
                if name != spec["colour"] and np.linalg.norm(np.subtract(rgb, OBJECT_COLOURS[spec["colour"]])) > 60:
                    assert (np.linalg.norm(pixels - rgb, axis=1) < 20).mean() < 0.01, (caption, name)
            checked += 1
        if meta["defect"] is None:
            assert near_background.mean() > 0.3, caption
    assert checked >= 5
    assert counts - {0} == {1, 2, 3, 4} and styles == {"", "outlined", "striped"}
    assert 25 <= defects <= 65


def test_corpus_images_differ_from_the_benchmark_set(tmp_path):
    root = sc.write_corpus(tmp_path / "c", size=60, seed=0, part_size=60, workers=1)
    corpus = {image.tobytes() for _, _, image, _ in _pairs(root)}
    config = SynthConfig(n_prompts=10, image_size=64, seed=0)
    bench = {render_plan(plan, config).tobytes() for plan in plan_dataset(config)}
    assert not corpus & bench


# -- retrieval accuracy ------------------------------------------------------------------------
class OneHot(torch.nn.Module):
    """encode_image: one-hot of the image's first pixel value; encode_text: one-hot of the first token."""

    def __init__(self, dim: int = 16):
        super().__init__()
        self.dim = dim
        self.dummy = torch.nn.Parameter(torch.zeros(1))

    def encode_image(self, x):  # x is normalised; recover the class from the red channel's first pixel
        value = (x[:, 0, 0, 0] * 0.26862954 + 0.48145466) * 255
        return torch.nn.functional.one_hot(value.round().long(), self.dim).float()

    def encode_text(self, tokens):
        return torch.nn.functional.one_hot(tokens[:, 0].long(), self.dim).float()


def _handmade(image_ids, text_ids):
    images = torch.zeros(len(image_ids), 3, 4, 4, dtype=torch.uint8)
    images[:, 0, 0, 0] = torch.tensor(image_ids, dtype=torch.uint8)
    tokens = torch.zeros(len(text_ids), 5, dtype=torch.long)
    tokens[:, 0] = torch.tensor(text_ids)
    return images, tokens


def test_retrieval_accuracy_on_handmade_features():
    model = OneHot()
    # perfect pairs: every image retrieves its own caption
    images, tokens = _handmade([0, 1, 2, 3, 4, 5], [0, 1, 2, 3, 4, 5])
    r = retrieval_accuracy(model, images, tokens, chunk=3)
    assert r == {"image_to_text": 1.0, "text_to_image": 1.0, "chunk": 3, "n_chunks": 2, "pairs": 6, "chance": 1 / 3}
    # image 1 looks like class 7, which no caption of its chunk is: it retrieves caption 0 (first max) -> miss;
    # text->image: caption 1 also finds no match (all zero similarities -> image 0) -> miss
    images, tokens = _handmade([0, 7, 2, 3], [0, 1, 2, 3])
    r = retrieval_accuracy(model, images, tokens, chunk=4)
    assert r["image_to_text"] == 0.75 and r["text_to_image"] == 0.75
    # duplicate captions: image 1 (class 0) retrieves caption 0, whose text equals its own caption -> a hit
    images, tokens = _handmade([0, 0, 2, 3], [0, 0, 2, 3])
    r = retrieval_accuracy(model, images, tokens, chunk=4)
    assert r["image_to_text"] == 1.0 and r["text_to_image"] == 1.0
    # a remainder shorter than the chunk is left out; fewer pairs than the chunk form one chunk
    images, tokens = _handmade([0, 1, 2, 9, 9], [0, 1, 2, 3, 4])
    assert retrieval_accuracy(model, images, tokens, chunk=3)["pairs"] == 3
    assert retrieval_accuracy(model, images, tokens, chunk=100)["chunk"] == 5


# -- pretraining -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_corpus(tmp_path_factory) -> Path:
    return sc.write_corpus(tmp_path_factory.mktemp("corpus") / "c", size=300, seed=4, part_size=100, workers=1)


@pytest.fixture(scope="module")
def trained(tiny_corpus, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("ckpt") / "clip.pt"
    result = pretrain_clip(tiny_corpus, out, model=MODEL, epochs=3, batch_size=50, lr=2e-3, holdout=100, seed=0)
    return out, result


def test_pretrain_clip_learns_and_writes_a_loadable_checkpoint(trained, tiny_corpus):
    out, result = trained
    assert result["train_pairs"] == 200 and result["held_out_pairs"] == 100 and result["steps"] == 12
    assert result["final_loss"] < result["first_loss"]
    assert result["held_out_loss_after"] < result["held_out_loss_before"]
    assert result["retrieval"]["pairs"] == 100 and result["retrieval"]["chance"] == 0.01
    assert set(result["mismatch"]) >= {"colour", "shape", "count", "background", "style", "all"}
    report = json.loads(out.with_suffix(".json").read_text())
    assert report["sha256"] == result["sha256"] and report["corpus_params"]["params"]["size"] == 300
    assert report["settings"]["epochs"] == 3 and report["settings"]["seed"] == 0
    state = torch.load(out, weights_only=True)
    assert all(v.dtype == torch.float16 for v in state.values() if v.is_floating_point())
    assert out.stat().st_size < 10e6
    clip = load_clip(MODEL, str(out))
    assert next(clip.parameters()).dtype == torch.float32
    assert torch.equal(clip.state_dict()["token_embedding.weight"], state["token_embedding.weight"].float())
    # the loaded model reproduces the reported held-out retrieval
    from agiqa_bench.synthetic.clip_pretrain import load_pairs

    images, captions, _, _ = load_pairs(tiny_corpus, 64)
    again = retrieval_accuracy(clip, images[200:], tokenizer_for(MODEL)(captions[200:]))
    assert abs(again["image_to_text"] - result["retrieval"]["image_to_text"]) <= 0.03

    from ipiqa.model import IPIQA, IPIQAConfig

    model = IPIQA(IPIQAConfig(clip_model=MODEL, pretrained=str(out), image_size=64)).eval()
    with torch.no_grad():
        y = model(torch.zeros(2, 3, 64, 64), model.tokenize(["one red star on a grey background"] * 2))
    assert y.shape == (2, 1) and torch.isfinite(y).all()


def test_pretrain_clip_is_deterministic(trained, tiny_corpus, tmp_path):
    out, result = trained
    again = pretrain_clip(tiny_corpus, tmp_path / "again.pt", model=MODEL, epochs=3, batch_size=50, lr=2e-3,
                          holdout=100, seed=0)
    a, b = torch.load(out, weights_only=True), torch.load(tmp_path / "again.pt", weights_only=True)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # identical bytes, although the file name differs
    assert (tmp_path / "again.pt").read_bytes() == out.read_bytes() and again["sha256"] == result["sha256"]
    assert again["retrieval"] == result["retrieval"]


def test_cli_pretrain_clip(tiny_corpus, tmp_path):
    out = tmp_path / "cli.pt"
    res = CliRunner().invoke(pretrain_app, ["clip", "--corpus", str(tiny_corpus), "--out", str(out), "--epochs", "1",
                                            "--batch-size", "50", "--holdout", "100", "--threads", "1"])
    assert res.exit_code == 0, res.output
    assert out.is_file() and out.with_suffix(".json").is_file()
    assert "image->text" in res.output
    bad = CliRunner().invoke(pretrain_app, ["clip", "--corpus", str(tmp_path / "none"), "--out", str(out)])
    assert bad.exit_code != 0


def test_shipped_checkpoint_is_the_recorded_one_and_retrieves_unseen_pairs(tmp_path):
    """The packaged synthetic CLIP: bytes as recorded, and far above chance on a corpus it never saw."""
    import hashlib

    from agiqa_bench.clip import WEIGHTS_DIR
    from agiqa_bench.synthetic.clip_pretrain import load_pairs

    ckpt = WEIGHTS_DIR / "agiqa-tiny-rn-synth.pt"
    report = json.loads(ckpt.with_suffix(".json").read_text())
    assert hashlib.sha256(ckpt.read_bytes()).hexdigest() == report["sha256"]
    assert ckpt.stat().st_size < 10 * 2**20
    corpus = sc.write_corpus(tmp_path / "unseen", size=200, seed=12345, workers=1)
    images, captions, _, _ = load_pairs(corpus, 64)
    model = load_clip("agiqa-tiny-rn", "agiqa-synth")
    scores = retrieval_accuracy(model, images, tokenizer_for("agiqa-tiny-rn")(captions), chunk=100)
    assert scores["image_to_text"] > 0.8 and scores["text_to_image"] > 0.8  # chance: 0.01


def test_image2prompt_pretraining_runs_on_the_synthetic_corpus(tmp_path):
    """The caption corpus is DiffusionDB-shaped, so Image2Prompt reads it as it is; with the synthetic
    CLIP, true captions clear the paper's 0.35 cosine threshold."""
    from ipiqa.image2prompt import pretrain_image2prompt

    corpus = sc.write_corpus(tmp_path / "corpus", size=48, seed=3, part_size=24, workers=1)
    summary = pretrain_image2prompt(corpus, tmp_path / "i2p.pt", clip_model="agiqa-tiny-rn", pretrained="agiqa-synth",
                                    batch_size=16, lr=1e-4, eval_pairs=None)
    assert summary["pairs_seen"] == 48 and summary["pairs_kept"] >= 40
    ckpt = torch.load(tmp_path / "i2p.pt", map_location="cpu", weights_only=True)
    assert ckpt["clip_model"] == "agiqa-tiny-rn" and "visual" in ckpt
