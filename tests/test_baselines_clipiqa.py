"""CLIP-IQA (zero-shot) and CLIP-IQA+ (prompt learning), on the project's tiny offline CLIP."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from agiqa_bench.datasets import load_dataset
from agiqa_bench.errors import ConfigError, MethodUnavailable
from agiqa_bench.images import load_rgb
from agiqa_bench.method import MethodContext
from agiqa_bench.records import Item
from agiqa_bench.registry import create_method, get_spec, method_params
from agiqa_bench.splits import make_splits
from agiqa_bench.training import CLIP_MEAN, CLIP_STD
from agiqa_test_support import blurred_shapes, write_image
from baselines.archs.clipiqa import PromptPairs, text_tower
from agiqa_bench.clip import load_clip, tokenizer_for, weights_available

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SYNTH = {"clip_model": "agiqa-tiny-rn", "pretrained": "agiqa-synth"}


@pytest.fixture(scope="module")
def data(tiny_agiqa3k_shared):
    ds = load_dataset("agiqa3k", tiny_agiqa3k_shared)
    split = make_splits(ds, "grouped", repeats=1, seed=1)[0]
    return ds, ds.subset(split.train), ds.subset(split.val), ds.subset(split.test)


@pytest.fixture(scope="module")
def synth_clip():
    return load_clip("agiqa-tiny-rn", "agiqa-synth").float()


def hand_score(clip, path, positive="Good photo.", negative="Bad photo."):
    """CLIP-IQA written out: native-size image, CLIP normalisation, ResNet trunk, the attention pool's
    arithmetic by hand with no positional embedding, cosines, softmax of logit_scale * cos over the pair."""
    rgb = torch.from_numpy(load_rgb(path)).permute(2, 0, 1).float() / 255
    x = ((rgb - torch.tensor(CLIP_MEAN).view(3, 1, 1)) / torch.tensor(CLIP_STD).view(3, 1, 1))[None]
    v = clip.visual
    with torch.no_grad():
        fmap = v.layer4(v.layer3(v.layer2(v.layer1(v.stem(x)))))
        positions = fmap.flatten(2)[0].T  # (h*w, C)
        query = positions.mean(dim=0)
        keys = torch.cat([query[None], positions])  # the mean token and the positions, nothing added
        pool = v.attnpool
        heads, width = pool.num_heads, keys.shape[1]
        d = width // heads
        q = pool.q_proj(query).view(heads, d)
        k = pool.k_proj(keys).view(-1, heads, d)
        val = pool.v_proj(keys).view(-1, heads, d)
        attn = torch.softmax(torch.einsum("hd,nhd->hn", q, k) / d**0.5, dim=-1)
        image = pool.c_proj(torch.einsum("hn,nhd->hd", attn, val).reshape(width))
        text = clip.encode_text(tokenizer_for("agiqa-tiny-rn")([positive, negative]))
        cos = F.cosine_similarity(image[None], text, dim=-1)
        return float(torch.softmax(clip.logit_scale.exp() * cos, dim=0)[0])


def test_zero_shot_equals_the_hand_computed_score(data, synth_clip):
    ds, train, val, test = data
    method = create_method("clipiqa", SYNTH, MethodContext(seed=3))
    method.fit(train, val, ds.targets[:1])
    pred = method.predict(test[:6])
    assert pred.shape == (6,)
    expected = [hand_score(synth_clip, it.image) for it in test[:6]]
    np.testing.assert_allclose(pred, expected, atol=2e-5)
    assert np.ptp(pred) > 0 and np.all((pred > 0) & (pred < 1))


def test_positional_embedding_is_not_used_and_any_size_works(data, tmp_path):
    ds, _, _, test = data
    odd = Item("odd.png", write_image(tmp_path / "odd.png", blurred_shapes(160, 1, seed=4)[:96]), "", {}, "g")
    items = [*test[:4], odd]  # 128x128 images and a 160x96 one; the model's native size is 64
    reference = create_method("clipiqa", SYNTH).predict(items)
    assert np.all(np.isfinite(reference))

    perturbed = create_method("clipiqa", SYNTH)
    pool = perturbed.clip.visual.attnpool
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        before = perturbed.clip.encode_image(x)
        pool.positional_embedding.add_(torch.randn_like(pool.positional_embedding) * 3)
        assert not torch.allclose(perturbed.clip.encode_image(x), before, atol=1e-4)  # open_clip's own path uses it
    np.testing.assert_allclose(perturbed.predict(items), reference, atol=1e-6)  # CLIP-IQA's does not


def test_prompt_pair_option(data, synth_clip):
    _, _, _, test = data
    items = test[:4]
    good = create_method("clipiqa", SYNTH).predict(items)
    swapped = create_method("clipiqa", {**SYNTH, "positive": "Bad photo.", "negative": "Good photo."}).predict(items)
    np.testing.assert_allclose(swapped, 1 - good, atol=1e-6)
    pair = {"positive": "Sharp photo.", "negative": "Blurry photo."}
    sharp = create_method("clipiqa", {**SYNTH, **pair}).predict(items)
    np.testing.assert_allclose(sharp, [hand_score(synth_clip, it.image, *pair.values()) for it in items], atol=2e-5)
    assert not np.allclose(sharp, good)


@pytest.mark.parametrize("position,words_at", [("end", "X X X X {}."), ("middle", "X X {}. X X"),
                                               ("front", "{}. X X X X")])
def test_prompt_layout_follows_the_official_text(synth_clip, position, words_at):
    """With the context set to the "X" placeholder's embedding, each layout is a plain tokenised text."""
    tok = tokenizer_for("agiqa-tiny-rn")
    tower = text_tower(synth_clip)
    names = ["Good photo.", "Bad photo."]
    pairs = PromptPairs(tower, tok, names, n_targets=2, n_ctx=4, position=position, class_specific=False, init="x")
    prompts, eot = pairs()
    assert prompts.shape[0] == 4 and eot.tolist()[:2] == eot.tolist()[2:]
    with torch.no_grad():
        expected = tower.token_embedding(tok([words_at.format(n) for n in names])).float()
    np.testing.assert_allclose(prompts[:2].detach(), expected, atol=1e-6)
    np.testing.assert_allclose(prompts[2:].detach(), expected, atol=1e-6)  # the second target's pair


def test_plus_trains_only_the_contexts(data):
    ds, train, val, test = data
    params = {**SYNTH, "n_ctx": 4, "epochs": 1, "batch_size": len(train), "selection": "last", "lr": 1e-2}
    method = create_method("clipiqa.plus", params, MethodContext(seed=5))
    clip_before = {k: v.clone() for k, v in method.clip.state_dict().items()}
    method.fit(train, val, ds.targets)  # one step: the whole training part is one batch
    initial = method.build(len(ds.targets)).prompts.ctx.detach()  # same seed: the starting context
    model = method.model
    assert [n for n, p in model.named_parameters() if p.requires_grad] == ["prompts.ctx"]
    assert model.prompts.ctx.shape == (len(ds.targets), 4, initial.shape[-1])
    assert not torch.allclose(model.prompts.ctx.detach(), initial)
    for key, value in method.clip.state_dict().items():
        assert torch.equal(value, clip_before[key]), f"CLIP weight {key} changed"
    pred = method.predict(test)
    assert pred.shape == (len(test), len(ds.targets)) and np.all(np.isfinite(pred))
    for j, t in enumerate(ds.targets):  # the MOS range of the training part
        mos = [it.targets[t] for it in train]
        assert min(mos) - 1e-6 <= pred[:, j].min() and pred[:, j].max() <= max(mos) + 1e-6


def test_plus_class_specific_contexts(data):
    ds, train, val, test = data
    params = {**SYNTH, "n_ctx": 2, "epochs": 1, "batch_size": 8, "selection": "val", "class_specific": True,
              "class_position": "end", "hflip": False}
    method = create_method("clipiqa.plus", params, MethodContext(seed=2))
    method.fit(train, val, ds.targets[:1])
    assert method.model.prompts.ctx.shape[:3] == (1, 2, 2)
    assert method.predict(test).shape == (len(test), 1)


def test_missing_weights_are_reported_before_any_work(data, tmp_path):
    ds, train, val, test = data
    missing = tmp_path / "nowhere" / "RN50.pt"
    for name in ("clipiqa", "clipiqa.plus"):
        method = create_method(name, {"clip_model": "RN50-quickgelu", "pretrained": str(missing)})
        with pytest.raises(MethodUnavailable, match=rf"RN50\.pt.*--set {name}\.pretrained=PATH"):
            method.fit(train, val, ds.targets)
        assert method._clip is None  # nothing was built
    if weights_available("RN50-quickgelu", "openai") is False:  # the default, offline and not cached
        with pytest.raises(MethodUnavailable, match=r"RN50\.pt.*--set clipiqa\.pretrained=PATH"):
            create_method("clipiqa").predict(test)


def test_vit_needs_the_positional_embedding(data):
    _, _, _, test = data
    with pytest.raises(ConfigError, match="pos_embedding=true"):
        create_method("clipiqa", {"clip_model": "agiqa-tiny-vit", "pretrained": ""}).predict(test[:1])
    pred = create_method("clipiqa", {"clip_model": "agiqa-tiny-vit", "pretrained": "", "pos_embedding": True},
                         MethodContext(seed=1)).predict(test[:3])
    assert pred.shape == (3,) and np.all(np.isfinite(pred))


def test_registry_entries():
    spec, _ = get_spec("clipiqa")
    plus, _ = get_spec("clipiqa.plus")
    assert spec.kind == "zero-shot" and not spec.joint_targets
    assert plus.kind == "trainable" and plus.joint_targets
    for name in ("clipiqa", "clipiqa.plus"):
        assert method_params(name)["clip_model"] == "RN50-quickgelu" and method_params(name)["pretrained"] == "openai"
        synthetic = method_params(name, dataset="synthetic")
        assert (synthetic["clip_model"], synthetic["pretrained"]) == ("agiqa-tiny-rn", "agiqa-synth")
    assert method_params("clipiqa")["positive"] == "Good photo." and method_params("clipiqa")["negative"] == "Bad photo."
