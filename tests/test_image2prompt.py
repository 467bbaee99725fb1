"""Image2Prompt pretraining: DiffusionDB reader, cosine filter, training, resume, IP-IQA loading, CLI.

Every corpus here is a tiny DiffusionDB-layout folder of 64 px coloured shapes
written in tmp_path; every CLIP is a random-initialised tiny one (no weights).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from agiqa_bench.cli import app
from agiqa_bench.errors import DataError
from ipiqa import image2prompt as i2p
from ipiqa import image2prompt_data
from diffusiondb_support import make_corpus
from agiqa_bench.datasets.diffusiondb import iter_diffusiondb
from agiqa_bench.clip import load_clip, tokenizer_for

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 60), "blue": (40, 60, 220), "yellow": (230, 220, 40)}
SHAPES = ("square", "circle", "stripe")
PARTS, PER_PART = 3, 6
TINY = dict(clip_model="agiqa-tiny-rn", pretrained="", device="cpu", workers=0)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return make_corpus(tmp_path_factory.mktemp("ddb") / "mix", "mix")


# -- filter pass ---------------------------------------------------------------------------------
def independent_scores(root: Path) -> tuple[list[tuple[str, str]], np.ndarray, np.ndarray]:
    """(part, file), cosines and normalised text embeddings computed here, pair by pair."""
    torch.manual_seed(0)  # pretrain_image2prompt draws random weights from its seed (0)
    clip = load_clip("agiqa-tiny-rn", "").eval()
    tokenizer = tokenizer_for("agiqa-tiny-rn")
    mean = torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(3, 1, 1)
    std = torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(3, 1, 1)
    keys, cosines, texts = [], [], []
    with torch.no_grad():
        for pair in iter_diffusiondb(root):
            x = (torch.from_numpy(np.array(pair.image)).permute(2, 0, 1).float() / 255 - mean) / std
            img = clip.encode_image(x[None])[0]
            txt = clip.encode_text(tokenizer([pair.prompt]))[0]
            keys.append((pair.part, pair.file))
            cosines.append(float(torch.nn.functional.cosine_similarity(img, txt, dim=0)))
            texts.append((txt / txt.norm()).numpy())
    return keys, np.array(cosines), np.stack(texts)


def read_index(out: Path) -> list[dict]:
    return [json.loads(line) for line in out.with_suffix(".index.jsonl").read_text().splitlines()]


def test_filter_keeps_exactly_the_pairs_at_or_above_the_threshold(corpus, tmp_path):
    keys, cosines, texts = independent_scores(corpus)
    result = i2p.pretrain_image2prompt(corpus, tmp_path / "all.pt", threshold=-1.0, stop_after_steps=0, **TINY)
    assert result["pairs_seen"] == result["pairs_kept"] == len(keys) and not result["finished"]
    rows = read_index(tmp_path / "all.pt")
    assert [(r["part"], r["file"]) for r in rows] == keys
    np.testing.assert_allclose([r["cosine"] for r in rows], cosines, atol=1e-4)
    np.testing.assert_allclose(np.load(tmp_path / "all.text_emb.npy"), texts, atol=1e-5)

    ordered = np.sort(cosines)
    gaps = np.diff(ordered)[2:-2]  # a threshold well inside a gap, with pairs on both sides
    cut = int(np.argmax(gaps)) + 2
    threshold = float((ordered[cut] + ordered[cut + 1]) / 2)
    expected = [k for k, c in zip(keys, cosines) if c >= threshold]
    result = i2p.pretrain_image2prompt(corpus, tmp_path / "some.pt", threshold=threshold, stop_after_steps=0, **TINY)
    assert result["pairs_kept"] == len(expected) and result["pairs_seen"] == len(keys)
    assert [(r["part"], r["file"]) for r in read_index(tmp_path / "some.pt")] == expected
    assert np.load(tmp_path / "some.text_emb.npy").shape == (len(expected), texts.shape[1])

    result = i2p.pretrain_image2prompt(corpus, tmp_path / "few.pt", threshold=-1.0, max_pairs=8, stop_after_steps=0, **TINY)
    assert result["pairs_seen"] == 8 and [(r["part"], r["file"]) for r in read_index(tmp_path / "few.pt")] == keys[:8]


def test_filter_with_no_pair_kept_is_a_clear_error(corpus, tmp_path):
    with pytest.raises(DataError, match="lower the threshold"):
        i2p.pretrain_image2prompt(corpus, tmp_path / "none.pt", threshold=1.0, **TINY)
    assert not (tmp_path / "none.pt.state.pt").exists()


# -- training ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def trained(corpus, tmp_path_factory):
    """A short training run, the CLIP it started from (watched) and a copy of its initial weights."""
    made = []

    def watched_load_clip(model, pretrained):
        clip = load_clip(model, pretrained)
        made.append((clip, {k: v.clone() for k, v in clip.state_dict().items()}))
        return clip

    out = tmp_path_factory.mktemp("trained") / "i2p.pt"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(i2p, "load_clip", watched_load_clip)
        result = i2p.pretrain_image2prompt(corpus, out, threshold=-1.0, epochs=4, batch_size=6, lr=2e-3,
                                           eval_pairs=None, **TINY)
    (clip, initial), = made
    return out, result, clip, initial


def test_training_raises_the_image_prompt_cosine(trained):
    out, result, _, _ = trained
    assert result["finished"] and result["steps"] == 4 * 3
    assert result["final_loss"] < result["first_epoch_loss"] - 0.1
    assert result["mean_cosine_after"] > result["mean_cosine_before"] + 0.3
    assert result["eval_pairs"] == PARTS * PER_PART and result["images_per_second"] > 0
    assert out.is_file() and not Path(str(out) + ".state.pt").exists()


def test_training_leaves_the_text_tower_alone(trained):
    out, _, clip, initial = trained
    text_keys = [k for k in initial if not k.startswith("visual.")]
    assert text_keys and all(torch.equal(clip.state_dict()[k], initial[k]) for k in text_keys)
    ckpt = torch.load(out, map_location="cpu", weights_only=True)
    assert set(ckpt["visual"]) == {k[len("visual."):] for k in initial if k.startswith("visual.")}
    assert not torch.equal(ckpt["visual"]["layer1.0.conv1.weight"], initial["visual.layer1.0.conv1.weight"])


def test_checkpoint_records_the_run_and_loads_into_ipiqa(trained):
    from ipiqa.model import IPIQA, IPIQAConfig

    out, result, _, _ = trained
    ckpt = torch.load(out, map_location="cpu", weights_only=True)
    assert ckpt["format"] == "agiqa-bench/image2prompt@1" and ckpt["clip_model"] == "agiqa-tiny-rn"
    assert (ckpt["pretrained"], ckpt["image_size"], ckpt["threshold"], ckpt["epochs"]) == ("", 64, -1.0, 4)
    assert ckpt["pairs_seen"] == ckpt["pairs_kept"] == result["pairs_kept"] == PARTS * PER_PART
    model = IPIQA(IPIQAConfig(clip_model="agiqa-tiny-rn", pretrained="", image_size=64, image2prompt=str(out)))
    loaded = model.image.visual.state_dict()
    assert torch.equal(loaded["layer4.0.conv2.weight"], ckpt["visual"]["layer4.0.conv2.weight"])
    assert all(torch.equal(loaded[k], v) for k, v in ckpt["visual"].items())  # at 64 px, pos. embedding too


@pytest.mark.parametrize("model, size", [("agiqa-tiny-rn", 96), ("agiqa-tiny-vit", 32)])
def test_other_image_size_stores_the_native_positional_embedding(corpus, tmp_path, model, size):
    out = tmp_path / "sized.pt"
    i2p.pretrain_image2prompt(corpus, out, **{**TINY, "clip_model": model}, image_size=size, threshold=-1.0,
                              max_pairs=6, batch_size=6, lr=1e-3, eval_pairs=6)
    ckpt = torch.load(out, map_location="cpu", weights_only=True)
    native = load_clip(model, "").visual
    native.load_state_dict(ckpt["visual"])  # strict: every shape is the native one
    grid = size // (32 if model.endswith("rn") else 16)
    assert ckpt["image_size"] == size and ckpt["positional_embedding_at_image_size"].shape[0] == grid * grid + 1


# -- resume --------------------------------------------------------------------------------------
def visual_of(out: Path) -> dict:
    return torch.load(out, map_location="cpu", weights_only=True)["visual"]


def test_resume_after_interruptions_gives_the_uninterrupted_weights(corpus, tmp_path, monkeypatch):
    settings = dict(TINY, threshold=-1.0, epochs=2, batch_size=4, lr=1e-3, hflip=True, eval_pairs=4)
    whole = i2p.pretrain_image2prompt(corpus, tmp_path / "whole.pt", **settings)
    assert whole["steps"] == 2 * 5

    out, state = tmp_path / "cut.pt", tmp_path / "cut.pt.state.pt"
    real_score, calls = image2prompt_data.score_pairs, []

    def crash_in_second_part(*args, **kwargs):  # batch 4 over parts of 6: calls 1-2 are part 1
        calls.append(1)
        if len(calls) == 4:
            raise RuntimeError("power cut in the filter pass")
        return real_score(*args, **kwargs)

    monkeypatch.setattr(image2prompt_data, "score_pairs", crash_in_second_part)
    with pytest.raises(RuntimeError, match="power cut"):
        i2p.pretrain_image2prompt(corpus, out, **settings)
    assert torch.load(state, weights_only=True)["filter"]["parts_done"] == ["part-000001"]
    monkeypatch.setattr(image2prompt_data, "score_pairs", real_score)

    first = i2p.pretrain_image2prompt(corpus, out, **settings, stop_after_steps=3)
    assert first["resumed"] and not first["finished"] and first["steps"] == 3 and not out.exists()
    assert out.with_suffix(".index.jsonl").read_text() == (tmp_path / "whole.index.jsonl").read_text()
    saved = torch.load(state, weights_only=True)
    optimised = saved["optimizer"]["param_groups"][0]["params"]
    assert len(optimised) == len(list(load_clip("agiqa-tiny-rn", "").visual.parameters()))  # no text tower

    real_step, steps = i2p.train_step, []

    def crash_at_step_seven(*args, **kwargs):
        steps.append(1)
        if len(steps) == 4:  # steps 4, 5, 6 done (state saved at 4 and 6), crash in step 7
            raise RuntimeError("power cut in training")
        return real_step(*args, **kwargs)

    monkeypatch.setattr(i2p, "train_step", crash_at_step_seven)
    with pytest.raises(RuntimeError, match="power cut"):
        i2p.pretrain_image2prompt(corpus, out, **settings, save_every=2)
    assert torch.load(state, weights_only=True)["train"]["step"] == 6
    monkeypatch.setattr(i2p, "train_step", real_step)

    last = i2p.pretrain_image2prompt(corpus, out, **settings)
    assert last["finished"] and last["steps"] == whole["steps"] and not state.exists()
    a, b = visual_of(tmp_path / "whole.pt"), visual_of(out)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert last["final_loss"] == pytest.approx(whole["final_loss"], abs=1e-6)


def test_resume_refuses_other_settings_and_a_finished_run_is_not_redone_silently(corpus, tmp_path):
    from agiqa_bench.errors import ConfigError

    out = tmp_path / "r.pt"
    i2p.pretrain_image2prompt(corpus, out, **TINY, threshold=-1.0, stop_after_steps=0)
    with pytest.raises(ConfigError, match="lr: saved 1e-05, now 0.001"):
        i2p.pretrain_image2prompt(corpus, out, **TINY, threshold=-1.0, lr=1e-3)
    Path(str(out) + ".state.pt").unlink()
    out.write_bytes(b"finished before")
    with pytest.raises(ConfigError, match="overwrite"):
        i2p.pretrain_image2prompt(corpus, out, **TINY, threshold=-1.0)


# -- command line --------------------------------------------------------------------------------
def test_cli_image2prompt_end_to_end(corpus, tmp_path):
    runner = CliRunner()
    out = tmp_path / "cli.pt"
    args = ["pretrain", "image2prompt", "--diffusiondb", str(corpus), "--out", str(out), "--clip-model", "agiqa-tiny-rn",
            "--pretrained", "", "--threshold", "-1", "--batch-size", "6", "--lr", "1e-3", "--device", "cpu",
            "--workers", "2"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "18 / 18" in result.output and "mean cosine before / after" in result.output
    assert torch.load(out, map_location="cpu", weights_only=True)["clip_model"] == "agiqa-tiny-rn"

    again = runner.invoke(app, args)
    assert again.exit_code == 2 and "--overwrite" in again.output and "Traceback" not in again.output
    (tmp_path / "empty").mkdir()
    empty = runner.invoke(app, ["pretrain", "image2prompt", "--diffusiondb", str(tmp_path / "empty"), "--out", str(out)])
    assert empty.exit_code == 2 and "no DiffusionDB part" in empty.output
