"""IP-IQA: shapes, what trains and what stays frozen, the [QA] token, variants, checkpoints."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from agiqa_bench.datasets import load_dataset
from agiqa_bench.errors import MethodUnavailable
from agiqa_bench.method import MethodContext
from agiqa_bench.registry import create_method, get_spec
from agiqa_bench.splits import make_splits
from ipiqa.model import IPIQA, IPIQAConfig, resize_attnpool_pos_embed

PROMPTS = ["two red stars on a grey background, striped", "a cat wearing a hat"]


def tiny(**kw) -> IPIQA:
    torch.manual_seed(0)
    base = dict(clip_model="agiqa-tiny-rn", pretrained="", image_size=64, num_outputs=2)
    return IPIQA(IPIQAConfig(**{**base, **kw}))


@pytest.mark.parametrize("size", [224, 512])
def test_rn50_output_shapes(size):
    torch.manual_seed(0)
    model = IPIQA(IPIQAConfig(clip_model="RN50-quickgelu", pretrained="", image_size=size, num_outputs=2))
    model.eval()
    grid = size // 32
    assert model.image.visual.attnpool.positional_embedding.shape == (grid * grid + 1, 2048)
    assert model.fusion.positional_embedding.shape == (grid * grid + 1, 2048)
    assert model.fusion.heads == 32 and model.image.out_dim == 1024 and model.prompt.out_dim == 1024
    with torch.no_grad():
        out = model(torch.randn(1, 3, size, size), model.tokenize(PROMPTS[:1]))
    assert out.shape == (1, 2)


def test_positional_embedding_resize_keeps_the_mean_token_and_is_bicubic():
    pos = torch.randn(50, 8)
    big = resize_attnpool_pos_embed(pos, 16)
    assert big.shape == (257, 8)
    assert torch.equal(big[0], pos[0])
    expected = torch.nn.functional.interpolate(pos[1:].reshape(1, 7, 7, 8).permute(0, 3, 1, 2), size=(16, 16),
                                               mode="bicubic", align_corners=False)
    assert torch.allclose(big[1:], expected.permute(0, 2, 3, 1).reshape(256, 8))


def test_gradients_reach_qa_fusion_head_but_not_frozen_text():
    model = tiny()
    model.train()
    out = model(torch.randn(4, 3, 64, 64), model.tokenize(PROMPTS * 2))
    out.pow(2).sum().backward()
    named = dict(model.named_parameters())
    assert named["prompt.qa_embedding"].grad is not None and named["prompt.qa_embedding"].grad.abs().sum() > 0
    assert all(p.grad is not None for n, p in named.items() if n.startswith(("fusion.", "head.")))
    assert named["image.visual.layer1.0.conv1.weight"].grad is not None
    text = [n for n in named if n.startswith("prompt.") and n != "prompt.qa_embedding"]
    assert text and all(not named[n].requires_grad and named[n].grad is None for n in text)
    assert not model.prompt.transformer.training  # frozen parts stay in eval mode


def test_qa_token_starts_at_eot_and_changes_the_prompt_feature():
    model = tiny()
    tokens = model.tokenize(PROMPTS)
    eot = int(tokens.max())
    assert torch.equal(model.prompt.qa_embedding.data, model.prompt.token_embedding.weight[eot])
    with torch.no_grad():
        before = model.prompt(tokens)
        model.prompt.qa_embedding.add_(0.5)
        after = model.prompt(tokens)
        plain = tiny(qa_token=False).prompt(tokens)
    assert not torch.allclose(before, after)
    assert torch.allclose(before, plain, atol=1e-6)  # initialised from end-of-text = plain CLIP text feature


def test_reference_text_mode_trains_what_the_public_code_trains():
    model = tiny(text_mode="reference")
    trainable = {n for n, p in model.named_parameters() if p.requires_grad and n.startswith("prompt.")}
    assert trainable == {"prompt.token_embedding.weight", "prompt.positional_embedding", "prompt.text_projection"}
    assert model.prompt.qa_embedding is None


def test_image_only_variant_has_no_prompt_stream():
    model = tiny(use_prompt=False, mlp_head=False, num_outputs=1)
    assert model.prompt is None and model.fusion is None
    assert isinstance(model.head.layers, torch.nn.Linear) and model.head.layers.in_features == model.image.out_dim
    assert model(torch.randn(2, 3, 64, 64)).shape == (2, 1)


def test_vit_backbone_works():
    model = tiny(clip_model="agiqa-tiny-vit")
    assert model.image.num_tokens == 16
    assert model(torch.randn(2, 3, 64, 64), model.tokenize(PROMPTS)).shape == (2, 2)


def test_head_gets_ten_times_the_learning_rate():
    model = tiny()
    groups = model.param_groups(1e-5, 10.0)
    assert groups[1]["lr"] == pytest.approx(1e-4)
    assert {id(p) for p in groups[1]["params"]} == {id(p) for p in model.head.parameters()}


@pytest.fixture(scope="module")
def data(tiny_agiqa3k_shared):
    ds = load_dataset("agiqa3k", tiny_agiqa3k_shared)
    split = make_splits(ds, "grouped", repeats=1, seed=2)[0]
    return ds, split


@pytest.mark.parametrize("variant", ["ipiqa", "ipiqa.image_only", "ipiqa.integral", "ipiqa.reference"])
def test_every_variant_trains_one_step(variant, data, tmp_path):
    ds, split = data
    spec, _ = get_spec(variant)
    method = create_method(variant, {**spec.smoke, "selection": "val"}, MethodContext(seed=1, workdir=tmp_path))
    method.fit(ds.subset(split.train), ds.subset(split.val), ds.targets)
    pred = method.predict(ds.subset(split.test))
    assert pred.shape == (len(split.test), 2) and np.isfinite(pred).all()
    assert method.info["best_epoch"] == 0


@pytest.mark.parametrize("variant", ["ipiqa.full", "ipiqa.i2p_image_only", "ipiqa.i2p_integral"])
def test_image2prompt_variants_say_what_is_missing(variant, data):
    ds, split = data
    spec, _ = get_spec(variant)
    method = create_method(variant, dict(spec.smoke))
    with pytest.raises(MethodUnavailable, match="pretrain image2prompt"):
        method.fit(ds.subset(split.train), ds.subset(split.val), ds.targets)


def test_missing_weights_error_says_how_to_supply_them(tmp_path):
    with pytest.raises(MethodUnavailable, match=r"RN50\.pt.*is not available \(no such file\).*--set ipiqa\.pretrained=PATH"):
        IPIQA(IPIQAConfig(clip_model="agiqa-tiny-rn", pretrained=str(tmp_path / "RN50.pt"), image_size=64))


def test_local_weights_load_through_the_pretrained_option(tmp_path):
    import open_clip

    from agiqa_bench.clip import load_clip

    torch.manual_seed(3)
    clip = load_clip("agiqa-tiny-rn", "")
    path = tmp_path / "tiny.pt"
    torch.save(clip.state_dict(), path)
    model = IPIQA(IPIQAConfig(clip_model="agiqa-tiny-rn", pretrained=str(path), image_size=64))
    assert torch.equal(model.image.visual.layer1[0].conv1.weight, clip.visual.layer1[0].conv1.weight)
    assert torch.equal(model.prompt.token_embedding.weight, clip.token_embedding.weight)
    assert open_clip is not None


def test_selection_protocols_and_checkpoint_round_trip(data, tmp_path):
    from agiqa_bench import checkpoints

    ds, split = data
    spec, _ = get_spec("ipiqa")
    test = ds.subset(split.test)
    context = MethodContext(seed=1, workdir=tmp_path, dataset="tiny", keep_checkpoints=True)
    oracle = create_method("ipiqa", {**spec.smoke, "epochs": 3, "selection": "test-oracle"}, context)
    assert oracle.uses_test_oracle
    oracle.set_oracle(test)
    oracle.fit(ds.subset(split.train), ds.subset(split.val), ds.targets)
    assert 0 <= oracle.info["best_epoch"] < 3
    path = checkpoints.save(oracle, tmp_path / "ipiqa.pt")
    restored = checkpoints.restore(path)
    assert restored.targets == tuple(ds.targets) and restored.config == oracle.config
    np.testing.assert_allclose(restored.predict(test), oracle.predict(test), rtol=1e-5, atol=1e-6)


def test_image2prompt_checkpoint_loads_into_a_vit_built_at_another_size(tmp_path):
    from agiqa_bench.clip import load_clip

    torch.manual_seed(4)
    native = load_clip("agiqa-tiny-vit", "")  # 64 px: 4x4 patches + class token
    path = tmp_path / "i2p.pt"
    torch.save({"format": "agiqa-bench/image2prompt@1", "clip_model": "agiqa-tiny-vit", "visual": native.visual.state_dict()}, path)
    model = tiny(clip_model="agiqa-tiny-vit", image_size=96, image2prompt=str(path))
    assert model.image.visual.positional_embedding.shape[0] == 6 * 6 + 1
    assert torch.equal(model.image.visual.conv1.weight, native.visual.conv1.weight)
    assert model(torch.randn(1, 3, 96, 96), model.tokenize(PROMPTS[:1])).shape == (1, 2)


def test_streams_match_clip_itself_at_initialisation(tmp_path):
    """Parity with open_clip: the visual pooling is CLIP's image embedding and the prompt feature
    (with [QA] at its initial value) is CLIP's text embedding."""
    from agiqa_bench.clip import load_clip

    torch.manual_seed(6)
    clip = load_clip("agiqa-tiny-rn", "")
    torch.save(clip.state_dict(), tmp_path / "clip.pt")
    model = tiny(num_outputs=1, pretrained=str(tmp_path / "clip.pt")).eval()
    images, tokens = torch.randn(2, 3, 64, 64), model.tokenize(PROMPTS)
    with torch.no_grad():
        assert torch.allclose(model.image(images)[0], clip.encode_image(images), atol=1e-5)
        assert torch.allclose(model.prompt(tokens), clip.encode_text(tokens), atol=1e-5)


def test_download_errors_are_cut_at_a_sentence_not_mid_word():
    from agiqa_bench.clip import _first_sentence

    long = RuntimeError("Failed to download file x.bin for repo. Last error: " + "very long detail " * 40)
    assert _first_sentence(long) == "Failed to download file x.bin for repo"
    words = RuntimeError("word " * 100)
    assert _first_sentence(words).endswith("word ...") and len(_first_sentence(words)) <= 244
