"""The VLM scorers (`baselines/vlm.py`, `baselines/archs/vlm.py`) on the generated tiny models, offline.

Covers: the level-probability score against a hand computation, the template recording, the label -> level bins,
the LoRA trainable set, the checkpoint round trip, the generic loading door (a second family), the tiny model's
determinism, and the one-line refusals (a real backbone without a GPU, a missing model, multi-token level words).
"""

from __future__ import annotations

import hashlib
import json
import math

import numpy as np
import pytest

from agiqa_bench.errors import ConfigError, MethodUnavailable
from agiqa_bench.labels import LabelMap
from agiqa_bench.method import MethodContext
from agiqa_bench.registry import create_method

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

TINY = {"model": "agiqa-tiny-vlm", "image_size": 64, "batch_size": 8}
LORA_SMOKE = {**TINY, "lora_r": 4, "lora_alpha": 8, "lora_dropout": 0.0, "epochs": 1, "lr": 3e-3, "grad_accum": 1,
              "warmup": 0.0, "selection": "last"}


def _context(tmp_path, seed=1, device="cpu"):
    return MethodContext(device=device, seed=seed, cache_dir=tmp_path / "cache", workdir=tmp_path, dataset="agiqa3k")


def _fitted_lora(contract_data, tmp_path, **over):
    ds, split = contract_data
    method = create_method("vlm", {**LORA_SMOKE, **over}, _context(tmp_path))
    train = ds.subset(split.train)
    label_map = LabelMap.fit(train, ds.targets)
    method.label_map = label_map
    method.fit(label_map.items(train), label_map.items(ds.subset(split.val)), ds.targets)
    return method, ds.subset(split.test)


# -- the score -------------------------------------------------------------------------------------
def test_level_probabilities_and_expected_level_by_hand():
    from baselines.archs.vlm import LEVEL_VALUES, expected_level, level_probabilities

    logits = torch.tensor([[0.0, 2.0, 1.0, -1.0, 0.5, 3.0, 0.0],
                           [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 9.0]])
    ids = [1, 2, 3, 4, 5]  # excellent .. bad; token 6 (outside the levels) must not matter
    probs = level_probabilities(logits, ids)
    for row in range(2):
        z = np.array([float(logits[row, i]) for i in ids])
        p = np.exp(z) / np.exp(z).sum()
        assert np.allclose(probs[row].numpy(), p, atol=1e-6)
        assert math.isclose(float(expected_level(probs)[row]), float(p @ np.array([5, 4, 3, 2, 1])), abs_tol=1e-5)
    assert LEVEL_VALUES == (5.0, 4.0, 3.0, 2.0, 1.0)
    assert math.isclose(float(expected_level(probs)[1]), 3.0, abs_tol=1e-6)  # equal logits: the middle level


def test_zero_shot_score_is_the_hand_computed_expected_level(contract_data, tmp_path):
    """The method's number = softmax over the five level tokens' next-token logits after the answer words, weighted
    5..1, computed here by hand from the model, the chat template and the tokenizer."""
    from PIL import Image

    from agiqa_bench.images import load_rgb
    from baselines.archs.vlm import load_backbone

    ds, split = contract_data
    items = ds.subset(split.test)[:3]
    method = create_method("vlm.zero_shot", TINY, _context(tmp_path))
    method.fit([], [], ("quality", "alignment"))
    got = method.predict(items)
    assert got.shape == (3, 2)

    bb = load_backbone("agiqa-tiny-vlm", method="t", device="cpu")
    tok = bb.processor.tokenizer
    for col, (question, answer) in enumerate([
            ("How would you rate the quality of this image?", "The quality of the image is"),
            ('How well does this image match the description "{prompt}"?',
             "The match between the image and the description is")]):
        ids = [tok.convert_tokens_to_ids("Ġ" + w) for w in ("excellent", "good", "fair", "poor", "bad")]
        for row, item in enumerate(items):
            messages = [{"role": "user", "content": [{"type": "image"},
                                                     {"type": "text", "text": question.format(prompt=item.prompt)}]}]
            text = bb.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False) + answer
            image = Image.fromarray(load_rgb(item.image)).resize((64, 64), Image.BICUBIC)
            inputs = bb.processor(text=[text], images=[[image]], return_tensors="pt")
            with torch.no_grad():
                logits = bb.model(**inputs).logits[0, -1].double().numpy()
            z = logits[ids]
            p = np.exp(z - z.max()) / np.exp(z - z.max()).sum()
            assert math.isclose(got[row, col], float(p @ [5, 4, 3, 2, 1]), abs_tol=1e-4), (row, col)


def test_batched_left_padded_scores_equal_one_at_a_time(contract_data, tmp_path):
    """Left padding (prompts of different lengths in one batch) leaves every row's answer position alone."""
    ds, split = contract_data
    items = ds.subset(split.test)
    one = create_method("vlm.zero_shot", {**TINY, "batch_size": 1}, _context(tmp_path / "a"))
    many = create_method("vlm.zero_shot", {**TINY, "batch_size": 16}, _context(tmp_path / "b"))
    for m in (one, many):
        m.fit([], [], ("alignment",))
    assert np.allclose(one.predict(items), many.predict(items), atol=1e-4)


def test_templates_are_recorded_with_every_row(tiny_agiqa3k, tmp_path):
    from agiqa_bench.runner import run_benchmark
    from agiqa_bench.store import read_results

    custom = "Rate this image's quality."
    run_benchmark(["vlm.zero_shot"], "agiqa3k", data_root=tiny_agiqa3k, repeats=1, out=tmp_path / "runs",
                  device="cpu", overrides={"vlm.zero_shot": {**TINY, "quality_template": custom,
                                                             "template_version": "custom-1"}})
    frame = read_results(tmp_path / "runs")
    assert set(frame["target"]) == {"quality", "alignment"}
    for _, row in frame.iterrows():
        config = json.loads(row["config_json"]) if "config_json" in frame else row["config"]
        info = json.loads(row["info_json"]) if "info_json" in frame else row["info"]
        assert config["quality_template"] == custom and config["template_version"] == "custom-1"
        assert config["alignment_template"] == 'How well does this image match the description "{prompt}"?'
        assert info["template_version"] == "custom-1"
        assert info["templates"]["quality"] == [custom, "The quality of the image is"]
        assert np.isfinite(row["srcc"])


def test_template_braces_other_than_prompt_are_refused():
    with pytest.raises(ConfigError, match=r"vlm.zero_shot.quality_template: only \{prompt\}"):
        create_method("vlm.zero_shot", {**TINY, "quality_template": "Rate {image}"})
    with pytest.raises(ConfigError, match="five distinct level words"):
        create_method("vlm.zero_shot", {**TINY, "levels": "good,bad"})


def test_uses_prompts_follows_the_templates(tmp_path):
    method = create_method("vlm.zero_shot", TINY, _context(tmp_path))
    method.fit([], [], ())
    assert not method.uses_prompts  # the score API's default target is quality, whose question reads no prompt
    method.fit([], [], ("quality", "alignment"))
    assert method.uses_prompts


# -- labels -> levels --------------------------------------------------------------------------------
def test_levels_are_q_aligns_equal_width_right_closed_bins():
    from baselines.vlm import from_levels, levels_of

    # DeQA-Score's get_level: level i when min + (i-1)/5 (max-min) < mos <= min + i/5 (max-min)
    y = np.array([0.0, 0.2, 1.0, 1.01, 2.0, 2.5, 4.0, 4.2, 5.0])
    assert levels_of(y, 0.0, 5.0).tolist() == [1, 1, 1, 2, 2, 3, 4, 5, 5]
    assert levels_of(np.array([3.0, 3.0]), 3.0, 3.0).tolist() == [3, 3]  # a constant target: fair
    assert from_levels(np.array([1.0, 3.0, 5.0]), 0.0, 5.0).tolist() == [0.5, 2.5, 4.5]  # the bins' centres
    a, b = 9.0, -26.0  # affine maps commute with both
    assert levels_of(a * y + b, b, a * 5 + b).tolist() == levels_of(y, 0.0, 5.0).tolist()
    assert np.allclose(from_levels(np.array([1.7, 4.2]), b, a * 5 + b), a * from_levels(np.array([1.7, 4.2]), 0, 5) + b)


# -- LoRA ----------------------------------------------------------------------------------------------
def test_lora_trainable_set_init_and_identity_at_start():
    from baselines.archs.vlm import add_lora, load_backbone, lora_parameters

    bb = load_backbone("agiqa-tiny-vlm", method="t", device="cpu")
    model = bb.model
    x = {"input_ids": torch.tensor([[5, 6, 7, 8]]), "attention_mask": torch.ones(1, 4, dtype=torch.long)}
    with torch.no_grad():
        before = model(**x).logits
    torch.manual_seed(0)
    names = add_lora(model, targets=["q_proj", "v_proj"], r=4, alpha=8, dropout=0.0)
    assert names == [f"model.language_model.layers.{i}.self_attn.{p}" for i in range(2) for p in ("q_proj", "v_proj")]
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == set(lora_parameters(model)) == {f"{n}.lora_{ab}.weight" for n in names for ab in "AB"}
    for n in names:
        module = model.get_submodule(n)
        assert module.scaling == 2.0 and not module.base.weight.requires_grad
        assert torch.count_nonzero(module.lora_B.weight) == 0  # B = 0: the model starts as the base model
        bound = 1 / math.sqrt(module.base.in_features)  # kaiming_uniform(a=sqrt 5) on (r, in): U(-1/sqrt(in), ...)
        assert float(module.lora_A.weight.detach().abs().max()) <= bound and module.lora_A.weight.dtype == torch.float32
    with torch.no_grad():
        assert torch.equal(model(**x).logits, before)
    # the projector option adds the merger's linear layers, and nothing of the vision tower's blocks
    bb2 = load_backbone("agiqa-tiny-vlm", method="t", device="cpu")
    names2 = add_lora(bb2.model, targets=["q_proj", "v_proj"], r=4, alpha=8, include_projector=True)
    assert sorted(set(names2) - set(names)) == ["model.visual.merger.mlp.0", "model.visual.merger.mlp.2"]
    with pytest.raises(ConfigError, match="no linear layer named nope"):
        add_lora(load_backbone("agiqa-tiny-vlm", method="t", device="cpu").model, targets=["nope"], r=2, alpha=2)


def test_lora_training_learns_and_only_adapters_change(contract_data, tmp_path):
    from baselines.archs.vlm import load_backbone

    method, test = _fitted_lora(contract_data, tmp_path, epochs=3, loss="levels")
    base = load_backbone("agiqa-tiny-vlm", method="t", device="cpu").model.state_dict()
    tuned = method.backbone.model.state_dict()
    for key, value in base.items():  # every base tensor untouched (wrapped ones sit under `.base.`)
        wrapped = key.replace(".q_proj.", ".q_proj.base.").replace(".v_proj.", ".v_proj.base.")
        assert torch.equal(tuned[key if key in tuned else wrapped], value), key
    assert any(torch.count_nonzero(v) for k, v in tuned.items() if "lora_B" in k)
    assert method.info["trainable_parameters"] == sum(v.numel() for k, v in tuned.items() if "lora_" in k)
    assert method.info["template_version"] == "1" and set(method.info["level_bins"]) == {"quality", "alignment"}
    pred = method.predict(test)
    assert pred.shape == (len(test), 2) and np.all(np.isfinite(pred))


# -- checkpoints -------------------------------------------------------------------------------------
def test_checkpoint_round_trip_keeps_adapters_only(contract_data, tmp_path):
    from agiqa_bench import checkpoints

    method, test = _fitted_lora(contract_data, tmp_path)
    pred = method.predict(test)
    path = checkpoints.save(method, tmp_path / "vlm.pt")
    ck = checkpoints.read(path)
    state = ck.state
    assert set(state) == {"adapters", "lora", "bins", "base"}
    assert state["adapters"] and all(".lora_A." in k or ".lora_B." in k for k in state["adapters"])
    assert state["base"] == {"model_model": "agiqa-tiny-vlm", "model_recipe": method.weights_identity()["model_recipe"]}
    n_base = sum(p.numel() for n, p in method.backbone.model.named_parameters() if "lora_" not in n)
    assert sum(v.numel() for v in state["adapters"].values()) < n_base / 5  # adapters, not the model
    restored = checkpoints.restore(path)
    assert np.allclose(restored.predict(test), pred, atol=1e-6)
    assert np.allclose(checkpoints.predict(restored, test), method.label_map.inverse(pred), atol=1e-6)
    # a checkpoint made on another base model is refused
    ck.state["base"] = {"model_model": "someone/else"}
    with pytest.raises(ConfigError, match="trained on the base model"):
        checkpoints.restore(ck)


# -- the generic door: a second family --------------------------------------------------------------
def test_a_second_family_loads_through_the_same_door(contract_data, tmp_path):
    """SmolVLM v1's layout (Idefics3): processor, chat template ("Assistant:" without a trailing space), scoring
    and LoRA (its language model is `text_model`, its projector `connector`)."""
    from baselines.archs.vlm import add_lora, chat_text, load_backbone

    bb = load_backbone("agiqa-tiny-smolvlm", method="t", device="cpu")
    assert type(bb.model).__name__ == "Idefics3ForConditionalGeneration"
    text = chat_text(bb.processor, "Q?", "The quality of the image is")
    assert text.endswith("Assistant: The quality of the image is")
    names = add_lora(bb.model, targets=["q_proj", "v_proj"], r=2, alpha=2, include_projector=True)
    assert all(n.startswith(("model.text_model.", "model.connector.")) for n in names)
    assert not any("vision_model" in n for n in names)  # SigLIP's own q_proj/v_proj are left alone
    ds, split = contract_data
    method = create_method("vlm.zero_shot", {**TINY, "model": "agiqa-tiny-smolvlm", "image_size": 32},
                           _context(tmp_path))
    method.fit([], [], ds.targets)
    pred = method.predict(ds.subset(split.test))
    assert pred.shape == (len(split.test), 2) and np.all(np.isfinite(pred)) and np.ptp(pred) > 0
    # a local folder works wherever a tag does (a real folder is a "real backbone": allow_cpu here)
    from agiqa_bench.synthetic.tiny_vlm import ensure

    local = create_method("vlm.zero_shot", {**TINY, "model": str(ensure("agiqa-tiny-smolvlm")), "image_size": 32,
                                            "allow_cpu": True}, _context(tmp_path / "local"))
    local.fit([], [], ds.targets)
    assert np.allclose(local.predict(ds.subset(split.test)), pred, atol=1e-5)
    assert local.weights_identity()["model_files"].startswith("dir:")


def test_tiny_models_are_generated_deterministically(tmp_path):
    from agiqa_bench.synthetic import tiny_vlm

    digests = []
    for where in ("a", "b"):
        folder = tiny_vlm.write("agiqa-tiny-vlm", tmp_path / where)
        digests.append({p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())})
    assert digests[0] == digests[1]
    tok = __import__("transformers").AutoTokenizer.from_pretrained(tmp_path / "a")
    for word in ("excellent", "good", "fair", "poor", "bad"):
        assert len(tok.encode(" " + word, add_special_tokens=False)) == 1
    assert tiny_vlm.folder_for("agiqa-tiny-vlm", tmp_path).name.startswith("agiqa-tiny-vlm-")


# -- one-line refusals --------------------------------------------------------------------------------
def test_a_real_backbone_is_refused_without_a_gpu(tmp_path):
    method = create_method("vlm.zero_shot", {}, _context(tmp_path))
    with pytest.raises(MethodUnavailable) as err:
        method.fit([], [], ("quality",))
    text = str(err.value)
    assert "\n" not in text
    assert text == ("vlm.zero_shot: Qwen/Qwen2.5-VL-3B-Instruct is a real vision-language model and this run has no "
                    "GPU (device cpu); run it with --device cuda, or --set vlm.zero_shot.allow_cpu=true to run it on "
                    "the CPU anyway (very slow)")
    trainable = create_method("vlm", {}, _context(tmp_path))
    with pytest.raises(MethodUnavailable, match=r"^vlm: Qwen/Qwen2.5-VL-3B-Instruct is a real .* --set vlm.allow_cpu"):
        trainable.fit([], [], ("quality",))


def test_a_missing_model_is_one_line_naming_it_and_the_set(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("agiqa_bench.weights.hf_cached", lambda *a, **k: None)  # whatever this machine has cached
    method = create_method("vlm.zero_shot", {"allow_cpu": True}, _context(tmp_path))
    with pytest.raises(MethodUnavailable) as err:
        method.fit([], [], ("quality",))
    text = str(err.value)
    assert "\n" not in text and "Qwen/Qwen2.5-VL-3B-Instruct" in text
    assert text.endswith("Supply a local copy with --set vlm.zero_shot.model=PATH")
    missing = tmp_path / "nowhere"
    method = create_method("vlm", {"model": str(missing), "allow_cpu": True}, _context(tmp_path))
    with pytest.raises(MethodUnavailable, match=rf"^vlm.model: the model folder {missing} is not available \(no such "
                                                rf"folder\)\. Supply a local copy with --set vlm.model=PATH$"):
        method.fit([], [], ("quality",))


@pytest.mark.parametrize("over, expected", [
    ({"levels": "excellent,good,fair,poor,terrible"},
     "vlm.zero_shot: the level word 'terrible' after the answer 'The quality of the image is' is 5 tokens for the "
     "model agiqa-tiny-vlm (['Ġte', 'r', 'ri', 'bl', 'e']), not one; the score reads one next-token logit per level: "
     "choose single-token level words (--set vlm.zero_shot.levels=...) or another answer"),
    ({"quality_answer": "The quality of the image is "},
     "vlm.zero_shot: the answer 'The quality of the image is ' and the level word 'excellent' share a token for the "
     "model agiqa-tiny-vlm (the sentence ends in ['Ġis', 'Ġexcellent']), so no single next-token logit is "
     "the level's: end the answer before the word, without a trailing space (--set vlm.zero_shot.quality_answer=...)"),
])
def test_multi_token_level_words_are_refused_in_one_line(over, expected, contract_data, tmp_path):
    ds, split = contract_data
    method = create_method("vlm.zero_shot", {**TINY, **over}, _context(tmp_path))
    method.fit([], [], ("quality",))
    with pytest.raises(MethodUnavailable) as err:
        method.predict(ds.subset(split.test))
    assert str(err.value) == expected


def test_the_methods_are_not_in_the_default_run_and_list_their_memory():
    from agiqa_bench.registry import default_methods, get_spec

    assert not {"vlm", "vlm.zero_shot"} & set(default_methods())
    spec, _ = get_spec("vlm")
    assert any("Qwen2.5-VL-3B" in k and "GB" in v for k, v in spec.resources.items())
    assert any(k.startswith("LoRA") for k in spec.resources)
    assert spec.dataset_defaults["synthetic"]["model"] == "agiqa-tiny-vlm" == spec.smoke["model"]
