"""CLIPScore, HPS (v1, v2, v2.1) and PickScore: formulas, weight loading, truncation, caching, errors.

Every model here is tiny and either random or the shipped synthetic CLIP; nothing touches the network.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from agiqa_bench.errors import MethodUnavailable
from agiqa_bench.method import MethodContext
from agiqa_bench.records import Item
from agiqa_bench.registry import canonical_name, create_method
from agiqa_test_support import blurred_shapes, write_image
from baselines import alignment
from baselines.clipscore import caption_for, clipscore_from_cosine
from agiqa_bench.clip import load_clip, tokenizer_for

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CLIP_MEAN = np.array([0.48145466, 0.4578275, 0.40821073])
CLIP_STD = np.array([0.26862954, 0.26130258, 0.27577711])
PROMPTS = ["two red circles on a blue background", "a green square", "two red circles on a blue background",
           "three yellow stars, oil painting", "a cat"]


@pytest.fixture(autouse=True)
def fresh_models():
    """Each test loads its own models (the process-wide model memo would otherwise carry over)."""
    alignment._MODEL_MEMO.clear()
    yield
    alignment._MODEL_MEMO.clear()


@pytest.fixture
def items(tmp_path) -> list[Item]:
    """Five pairs; the images are 128 x 96 (landscape) so resize + centre crop both matter."""
    out = []
    for i, prompt in enumerate(PROMPTS):
        img = np.concatenate([blurred_shapes(96, i % 3, seed=i), blurred_shapes(96, 0, seed=50 + i)[:, :32]], axis=1)
        path = write_image(tmp_path / "img" / f"im{i}.png", img)
        out.append(Item(id=f"im{i}.png", image=path, prompt=prompt, targets={"alignment": float(i)}, group=str(i)))
    return out


def context(tmp_path, seed=0) -> MethodContext:
    return MethodContext(seed=seed, cache_dir=tmp_path / "cache")


def official_pixels(path: Path, side: int, resize_on: str = "pil") -> torch.Tensor:
    """CLIP's evaluation preprocessing written out by hand: shortest side to `side` (bicubic), centre crop."""
    img = Image.open(path).convert("RGB")
    w, h = img.size
    new = (int(side * w / h), side) if w >= h else (side, int(side * h / w))
    if resize_on == "pil":
        arr = np.asarray(img.resize(new, Image.BICUBIC), dtype=np.float64) / 255.0
        x = torch.from_numpy(arr).permute(2, 0, 1)
    else:  # HPSv2: resize the [0, 1] tensor
        from torchvision.transforms.functional import InterpolationMode, resize

        t = torch.from_numpy(np.asarray(img, dtype=np.float64) / 255.0).permute(2, 0, 1).float()
        x = resize(t, [new[1], new[0]], interpolation=InterpolationMode.BICUBIC, antialias=True).double()
    top, left = int(round((x.shape[1] - side) / 2.0)), int(round((x.shape[2] - side) / 2.0))
    x = x[:, top:top + side, left:left + side]
    x = (x - torch.from_numpy(CLIP_MEAN).view(3, 1, 1)) / torch.from_numpy(CLIP_STD).view(3, 1, 1)
    return x.float()


def hand_cosines(model, tokenizer, items, captions, resize_on="pil") -> np.ndarray:
    side = model.visual.image_size
    side = side[0] if isinstance(side, (tuple, list)) else side
    with torch.no_grad():
        img = model.encode_image(torch.stack([official_pixels(it.image, side, resize_on) for it in items]))
        txt = model.encode_text(tokenizer(captions))
    img = img / img.norm(dim=-1, keepdim=True)
    txt = txt / txt.norm(dim=-1, keepdim=True)
    return (img * txt).sum(-1).numpy().astype(np.float64)


# -- CLIPScore ------------------------------------------------------------------------------------
def test_clipscore_caption_prefix_as_official():
    assert caption_for("a cat") == "A photo depicts a cat"
    assert caption_for("a cat", "A photo depicts ") == "A photo depicts a cat"
    assert caption_for("a cat", "") == "a cat"


def test_clipscore_equals_hand_computation(items, tmp_path):
    method = create_method("clipscore", {"clip_model": "agiqa-tiny-rn", "pretrained": "agiqa-synth",
                                         "batch_size": 2}, context(tmp_path))
    got = method.predict(items)
    model = load_clip("agiqa-tiny-rn", "agiqa-synth").float().eval()
    cos = hand_cosines(model, tokenizer_for("agiqa-tiny-rn"), items, ["A photo depicts " + p for p in PROMPTS])
    np.testing.assert_allclose(got, 2.5 * np.maximum(cos, 0), rtol=1e-4, atol=1e-5)
    assert method.info == {"context_length": 32, "prompts_truncated": 0, "items_truncated": 0}


def test_clipscore_clips_negative_cosines(items, tmp_path, monkeypatch):
    np.testing.assert_allclose(clipscore_from_cosine(np.array([-0.3, 0.0, 0.4])), [0.0, 0.0, 1.0])
    monkeypatch.setattr(alignment, "open_clip_cosines",
                        lambda model, tok, pixels, captions, device: torch.linspace(-0.4, 0.4, len(captions)))
    method = create_method("clipscore", {"clip_model": "agiqa-tiny-rn", "pretrained": "agiqa-synth",
                                         "batch_size": 8}, context(tmp_path))
    np.testing.assert_allclose(method.predict(items), 2.5 * np.array([0.0, 0.0, 0.0, 0.2, 0.4]), atol=1e-6)


def test_clipscore_truncates_long_prompts_at_the_model_context(items, tmp_path):
    """A caption over the context keeps its first tokens (EOT last): words past the cut change nothing."""
    long = "a very " + " ".join(f"red{i} circle" for i in range(40))
    pair = [Item("a.png", items[0].image, long, {}, "a"), Item("b.png", items[1].image, long + " and a dog", {}, "b"),
            Item("c.png", items[0].image, long + " and a dog", {}, "c")]
    method = create_method("clipscore", {"clip_model": "agiqa-tiny-rn", "pretrained": "agiqa-synth"},
                           context(tmp_path))
    with pytest.warns(UserWarning, match=r"2 of 2 distinct prompts \(3 of 3 images\) exceed .* 32-token context"):
        got = method.predict(pair)
    assert method.info["prompts_truncated"] == 2 and method.info["context_length"] == 32
    assert got[0] == pytest.approx(got[2], abs=1e-6)  # same image, prompts differing only after the cut
    tokens = tokenizer_for("agiqa-tiny-rn")(["A photo depicts " + long])
    assert tokens.shape == (1, 32) and int(tokens[0, -1]) == 49407  # truncated, end-of-text kept last
    model = load_clip("agiqa-tiny-rn", "agiqa-synth").float().eval()
    cos = hand_cosines(model, tokenizer_for("agiqa-tiny-rn"), pair[:1], ["A photo depicts " + long])
    assert got[0] == pytest.approx(2.5 * max(cos[0], 0), abs=1e-5)


def test_scores_are_cached_and_batched(items, tmp_path, monkeypatch):
    from baselines.clipscore import CLIPScore

    calls = []
    original = CLIPScore.score_batch

    def counting(self, model, batch, captions):
        calls.append(len(batch))
        return original(self, model, batch, captions)

    monkeypatch.setattr(CLIPScore, "score_batch", counting)
    params = {"clip_model": "agiqa-tiny-rn", "pretrained": "agiqa-synth", "batch_size": 2}
    first = create_method("clipscore", params, context(tmp_path)).predict(items)
    assert calls == [2, 2, 1]
    # a new method object (the runner makes one per repeat) reads everything from the cache: no model at all
    alignment._MODEL_MEMO.clear()
    monkeypatch.setattr(CLIPScore, "load_model", lambda self: pytest.fail("the model was loaded again"))
    again = create_method("clipscore", params, context(tmp_path, seed=3)).predict(items[::-1])
    np.testing.assert_array_equal(again, first[::-1])
    assert calls == [2, 2, 1]
    # an edited prompt is a new pair: only it is scored
    monkeypatch.setattr(CLIPScore, "load_model", lambda self: load_clip("agiqa-tiny-rn", "agiqa-synth").eval())
    edited = [items[0], Item(items[1].id, items[1].image, "a blue triangle", {}, "1")]
    create_method("clipscore", params, context(tmp_path)).predict(edited)
    assert calls == [2, 2, 1, 1]


def test_clipscore_missing_weights_name_the_fix(items, tmp_path):
    method = create_method("clipscore", {"pretrained": str(tmp_path / "ViT-B-32.pt")}, context(tmp_path))
    with pytest.raises(MethodUnavailable, match=r"ViT-B-32\.pt.*--set clipscore\.pretrained=PATH"):
        method.fit(items, [], ["alignment"])
    from agiqa_bench.weights import hf_cached

    if hf_cached("timm/vit_base_patch32_clip_224.openai", "open_clip_pytorch_model.bin") is None:
        with pytest.raises(MethodUnavailable, match=r"offline.*--set clipscore\.pretrained=PATH"):
            create_method("clipscore", {}, context(tmp_path)).predict(items)


# -- HPS --------------------------------------------------------------------------------------------
def tiny_vit(seed: int):
    torch.manual_seed(seed)
    return load_clip("agiqa-tiny-vit", "").float().eval()


def test_hps_loads_an_hpsv2_checkpoint_and_scores_cosine(items, tmp_path):
    """hpsv2 stores {'state_dict': model.state_dict()} (fp16 in the 'compressed' files); score = cos."""
    model = tiny_vit(seed=11)
    ckpt = tmp_path / "HPS_tiny_compressed.pt"
    torch.save({"state_dict": {k: v.half() for k, v in model.state_dict().items()}}, ckpt)
    method = create_method("hps", {"clip_model": "agiqa-tiny-vit", "checkpoint": str(ckpt), "batch_size": 3},
                           context(tmp_path))
    assert method.name == "hps.v2_1" and method.resize_on == "tensor"
    got = method.predict(items)
    reference = tiny_vit(seed=11)
    reference.load_state_dict({k: v.half().float() for k, v in model.state_dict().items()})
    np.testing.assert_allclose(got, hand_cosines(reference, tokenizer_for("agiqa-tiny-vit"), items, PROMPTS,
                                                 resize_on="tensor"), rtol=1e-4, atol=1e-5)
    assert np.all(np.abs(got) <= 1)


def test_hps_v1_reads_openai_names_and_ddp_prefixes(items, tmp_path):
    model = tiny_vit(seed=12)
    ckpt = tmp_path / "hpc.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}, "epoch": 3}, ckpt)
    method = create_method("hps.v1", {"clip_model": "agiqa-tiny-vit", "checkpoint": str(ckpt)}, context(tmp_path))
    got = method.predict(items)
    np.testing.assert_allclose(got, hand_cosines(model, tokenizer_for("agiqa-tiny-vit"), items, PROMPTS),
                               rtol=1e-4, atol=1e-5)


def test_hps_rejects_wrong_or_unsafe_checkpoints(items, tmp_path):
    wrong = tmp_path / "wrong.pt"
    torch.save({"state_dict": tiny_vit(seed=1).state_dict()}, wrong)
    method = create_method("hps.v2", {"clip_model": "agiqa-tiny-rn", "checkpoint": str(wrong)}, context(tmp_path))
    with pytest.raises(MethodUnavailable, match="does not fit architecture 'agiqa-tiny-rn'"):
        method.predict(items)
    pickled = tmp_path / "pickled.pt"
    torch.save({"state_dict": tiny_vit(seed=1).state_dict(), "args": Path("x")}, pickled)
    method = create_method("hps.v2", {"clip_model": "agiqa-tiny-vit", "checkpoint": str(pickled)}, context(tmp_path))
    with pytest.raises(MethodUnavailable, match=r"re-save its weights.*--set hps\.v2\.checkpoint=PATH"):
        method.predict(items)


def test_hps_missing_checkpoints_never_download(items, tmp_path, monkeypatch):
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", lambda *a, **k: pytest.fail("tried to download"))
    monkeypatch.setattr("agiqa_bench.weights.hf_cached", lambda *a, **k: None)
    assert canonical_name("hps") == "hps.v2_1"
    with pytest.raises(MethodUnavailable, match=r"HPS_v2\.1_compressed\.pt.*offline.*Source: hf-hub:xswu/HPSv2/"
                                                 r"HPS_v2\.1_compressed\.pt\. .*--set hps\.v2_1\.checkpoint=PATH$"):
        create_method("hps", {}, context(tmp_path)).fit(items, [], ["alignment"])
    with pytest.raises(MethodUnavailable, match=r"HPS_v2_compressed\.pt.*--set hps\.v2\.checkpoint=PATH"):
        create_method("hps.v2", {}, context(tmp_path)).predict(items)
    with pytest.raises(MethodUnavailable, match=r"hpc\.pth is not available \(it is on no model hub.*align_sd.*"
                                                 r"--set hps\.v1\.checkpoint=PATH"):
        create_method("hps.v1", {}, context(tmp_path)).predict(items)
    with pytest.raises(MethodUnavailable, match=r"nope\.pt is not available \(no such file\)"):
        create_method("hps.v1", {"checkpoint": str(tmp_path / "nope.pt")}, context(tmp_path)).predict(items)
    from baselines.hps import checkpoint_available

    assert not checkpoint_available({"checkpoint": ""})
    assert checkpoint_available({"clip_model": "agiqa-tiny-rn", "checkpoint": "agiqa-synth"})


# -- PickScore --------------------------------------------------------------------------------------
@pytest.fixture
def pickscore_folders(tmp_path):
    """A tiny random CLIPModel saved with save_pretrained, and a processor built offline and saved."""
    from transformers import CLIPModel, CLIPProcessor

    from baselines.pickscore import clip_bpe_tokenizer, clip_image_processor, tiny_config

    torch.manual_seed(5)
    model_dir, proc_dir = tmp_path / "pickscore_tiny", tmp_path / "processor_tiny"
    CLIPModel(tiny_config()).save_pretrained(model_dir)
    CLIPProcessor(image_processor=clip_image_processor(64), tokenizer=clip_bpe_tokenizer(32)).save_pretrained(proc_dir)
    return model_dir, proc_dir


def test_offline_clip_tokenizer_matches_open_clip():
    import open_clip

    from baselines.pickscore import clip_bpe_tokenizer

    tok = clip_bpe_tokenizer(77)
    texts = ["A photo depicts a Red cube!!", "café   naïve\tthing, 4k", "it's the dog's bone 🙂", "x " * 100]
    for text, ref in zip(texts, open_clip.tokenize(texts)):
        assert tok(text, truncation=True, max_length=77)["input_ids"] == [int(v) for v in ref if v]


def test_pickscore_equals_the_readme_recipe(items, tmp_path, pickscore_folders):
    from transformers import AutoProcessor, CLIPModel

    model_dir, proc_dir = pickscore_folders
    method = create_method("pickscore", {"model": str(model_dir), "processor": str(proc_dir), "batch_size": 2},
                           context(tmp_path))
    got = method.predict(items)
    assert method.info["context_length"] == 32
    # the README, one prompt at a time (PIL image processing, as transformers 4.27 did)
    processor = AutoProcessor.from_pretrained(proc_dir, backend="pil")
    model = CLIPModel.from_pretrained(model_dir).eval()
    expected = []
    for it in items:
        with torch.no_grad():
            image_inputs = processor(images=[Image.open(it.image)], return_tensors="pt")
            text_inputs = processor(text=it.prompt, padding=True, truncation=True, max_length=32, return_tensors="pt")
            image_embs = alignment_features(model.get_image_features(**image_inputs))
            text_embs = alignment_features(model.get_text_features(**text_inputs))
            image_embs = image_embs / torch.norm(image_embs, dim=-1, keepdim=True)
            text_embs = text_embs / torch.norm(text_embs, dim=-1, keepdim=True)
            expected.append(float(model.logit_scale.exp() * (text_embs @ image_embs.T)[0][0]))
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


def alignment_features(out):
    return out if isinstance(out, torch.Tensor) else out.pooler_output


def test_pickscore_missing_weights_name_the_fix(items, tmp_path, monkeypatch, pickscore_folders):
    model_dir, proc_dir = pickscore_folders
    with pytest.raises(MethodUnavailable, match=r"nope is not available \(no such folder\).*--set pickscore\.model=PATH"):
        create_method("pickscore", {"model": str(tmp_path / "nope"), "processor": str(proc_dir)},
                      context(tmp_path)).fit(items, [], ["alignment"])
    (proc_dir / "processor_config.json").unlink()
    with pytest.raises(MethodUnavailable, match=r"lacks preprocessor_config\.json.*--set pickscore\.processor=PATH"):
        create_method("pickscore", {"model": str(model_dir), "processor": str(proc_dir)},
                      context(tmp_path)).predict(items)
    monkeypatch.setattr("agiqa_bench.weights.hf_cached", lambda *a, **k: None)
    with pytest.raises(MethodUnavailable, match=r"PickScore_v1.*offline.*Source: hf-hub:yuvalkirstain/PickScore_v1/"
                                                 r"config\.json\. .*--set pickscore\.model=PATH$"):
        create_method("pickscore", {}, context(tmp_path)).predict(items)
    from baselines.pickscore import model_available, processor_available

    assert not model_available({}) and not processor_available({})
    assert model_available({"model": str(model_dir)}) and processor_available({"processor": "clip-bpe"})
