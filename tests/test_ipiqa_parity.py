"""IP-IQA against the public reference code (Coobiw/IP-IQA), pinned on a recorded fixture.

`tests/fixtures/ipiqa_parity/` holds what the reference code computed (unmodified, in a
throw-away environment; `make_parity.py` there has the commands) for a small CLIP in OpenAI's
layout whose weights both sides regenerate from the recorded keys (`weightgen.py`).  Here the
same weights go into OUR model, built from the fixture's open_clip config `RN-ipiqa-parity`:

- `text_mode="reference"` must reproduce the reference's token ids, intermediate features and
  outputs (1e-5 relative), its trainable parameters, the learning rate and weight decay of every
  one of them, and one training step (dropout, BatchNorm statistics, gradients, AdamW);
- the default `text_mode="paper"` must differ only where `ipiqa.model` says: the same outputs
  at initialisation ([QA] starts as end-of-text's embedding), and a trainable set that swaps the
  token table, text positional embedding and projection for the one [QA] vector, whose gradient
  is exactly the end-of-text row's gradient in reference mode.

Parameter names, reference -> ours (`REF_TO_OURS`):
    resnet50.*                              image.visual.*   (the trunk without its attnpool)
    attnpool.*                              image.visual.attnpool.*
    txt_model.*                             prompt.transformer.*
    wte.weight                              prompt.token_embedding.weight
    ln_final.*                              prompt.ln_final.*
    txt_pos / text_projection               prompt.positional_embedding / prompt.text_projection
    txt_attnpool.positional_embedding       fusion.positional_embedding
    txt_attnpool.cross_attn.{q,k,v,out}_proj.*   fusion.{q,k,v,out}_proj.*
    head.dense.* / head.out_proj.*          head.layers.1.* / head.layers.4.*
The CLIP checkpoint itself has OpenAI's key names, which open_clip reads unchanged.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from agiqa_bench.training import TrainConfig, make_optimizer
from ipiqa.method import IPIQAParams
from ipiqa.model import IPIQA, IPIQAConfig

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "ipiqa_parity"
REF = json.loads((FIXTURES / "reference_outputs.json").read_text(encoding="utf-8"))
ARCH = "RN-ipiqa-parity"
RTOL = 1e-5
TEXT_ONLY_IN_REFERENCE = {"prompt.token_embedding.weight", "prompt.positional_embedding", "prompt.text_projection"}

pytestmark = pytest.mark.usefixtures("one_torch_thread")

_spec = importlib.util.spec_from_file_location("ipiqa_parity_weightgen", FIXTURES / "weightgen.py")
weightgen = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(weightgen)

PREFIXES = [  # (reference prefix, ours), most specific first
    ("txt_attnpool.cross_attn.", "fusion."), ("txt_attnpool.", "fusion."),
    ("head.dense.", "head.layers.1."), ("head.out_proj.", "head.layers.4."),
    ("resnet50.", "image.visual."), ("attnpool.", "image.visual.attnpool."),
    ("txt_model.", "prompt.transformer."), ("wte.", "prompt.token_embedding."), ("ln_final.", "prompt.ln_final."),
    ("txt_pos", "prompt.positional_embedding"), ("text_projection", "prompt.text_projection"),
]


def ours(name: str) -> str:
    """Our parameter name for a reference one."""
    for ref, mine in PREFIXES:
        if name.startswith(ref):
            return mine + name[len(ref):]
    raise KeyError(f"no mapping for reference parameter {name!r}")


def digest(arrays: dict) -> str:
    h = hashlib.sha256()
    for key in sorted(arrays):
        h.update(key.encode())
        h.update(arrays[key].tobytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    clip = weightgen.generate(REF["clip_keys"], REF["seeds"]["clip"])
    new = weightgen.generate(REF["new_keys"], REF["seeds"]["new"])
    path = tmp_path_factory.mktemp("ipiqa-parity") / "tiny-clip.pt"
    torch.save({k: torch.from_numpy(v) for k, v in clip.items()}, path)
    return {"clip": clip, "new": new, "path": path}


@pytest.fixture(scope="module")
def batch():
    x = weightgen.images(REF["seeds"]["images"], len(REF["prompts"]), REF["resolution"])
    return torch.from_numpy(x)


def build(weights, text_mode: str) -> IPIQA:
    import open_clip

    open_clip.add_model_config(FIXTURES / f"{ARCH}.json")
    cfg = REF["reference"]["model_config"]
    model = IPIQA(IPIQAConfig(clip_model=ARCH, pretrained=str(weights["path"]), image_size=REF["resolution"],
                              num_outputs=cfg["output_dim"], mlp_head=cfg["use_mlp_head"],
                              dropout=cfg["dropout_rate"], qa_token=cfg["qa_token"], text_mode=text_mode))
    new = {ours(k): torch.from_numpy(v) for k, v in weights["new"].items()}
    missing, unexpected = model.load_state_dict(new, strict=False)
    assert not unexpected and not [k for k in missing if k.startswith(("fusion.", "head."))]
    return model


def close(actual, expected, what: str):
    """Within RTOL relative to the size of the expected values (a scale-relative tolerance)."""
    expected = torch.as_tensor(expected, dtype=torch.float64)
    actual = torch.as_tensor(actual).double()
    scale = float(expected.abs().max())
    torch.testing.assert_close(actual, expected, rtol=RTOL, atol=RTOL * scale, msg=lambda m: f"{what}: {m}")


def train_step(model, batch):
    """The reference's recorded step: train mode, seeded forward, MSE, backward, one AdamW step."""
    params = dataclasses.asdict(IPIQAParams())
    cfg = TrainConfig.from_params(params, where="ipiqa")
    opt = make_optimizer(model.param_groups(cfg.lr, cfg.head_lr_scale, cfg.weight_decay, params["fusion_lr_scale"]), cfg)
    model.train()
    torch.manual_seed(REF["seeds"]["step"])
    out = model(batch, model.tokenize(REF["prompts"]))
    loss = torch.nn.functional.mse_loss(out, torch.tensor(REF["targets"]))
    opt.zero_grad()
    loss.backward()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}
    opt.step()
    model.eval()
    with torch.no_grad():
        after = model(batch, model.tokenize(REF["prompts"]))
    return out.detach(), float(loss), grads, after


# -- the fixture itself ------------------------------------------------------------------
def test_generated_weights_and_batch_are_the_recorded_ones(weights, batch):
    assert digest(weights["clip"]) == REF["weights_sha256"]["clip"]
    assert digest(weights["new"]) == REF["weights_sha256"]["new"]
    assert hashlib.sha256(batch.numpy().tobytes()).hexdigest() == REF["images_sha256"]


def test_the_fixture_has_teeth(weights):
    """No zero BatchNorm (open_clip's init zeroes each bottleneck's last one), and outputs that depend on the image."""
    bn3 = [k for k, _, _ in REF["clip_keys"] if k.endswith("bn3.weight")]
    assert len(bn3) == 5 and all(np.abs(weights["clip"][k]).min() > 0.5 for k in bn3)
    out = np.array(REF["eval"]["outputs"])
    assert REF["prompts"][0] == REF["prompts"][2]  # same prompt, other image
    assert np.abs(out[0] - out[2]).min() > 100 * RTOL * np.abs(out).max()
    assert np.abs(out - out.mean(0)).max() > 0.02 * np.abs(out).max()  # spread across the batch: a few per cent


# -- reference text mode: the reference reproduced --------------------------------------
@pytest.fixture(scope="module")
def reference_model(weights):
    return build(weights, "reference").eval()


def test_tokens_match_the_reference(reference_model):
    tokens = reference_model.tokenize(REF["prompts"])
    assert tokens.tolist() == REF["tokens"]
    assert tokens[3, -1] == tokens.max()  # the long prompt is cut with end-of-text last, as the reference does


def test_reference_mode_reproduces_features_and_outputs(reference_model, batch):
    model = reference_model
    tokens = model.tokenize(REF["prompts"])
    with torch.no_grad():
        t = model.prompt(tokens)
        g_v, spatial = model.image(batch)
        g_t = model.fusion(spatial, t)
        out = model(batch, tokens)
    close(t, REF["eval"]["text_feature"], "text feature")
    close(g_v, REF["eval"]["visual_pool"], "visual attention pooling")
    close(g_t, REF["eval"]["prompt_pool"], "prompt attention pooling")
    close(out, REF["eval"]["outputs"], "outputs")


def test_reference_mode_trains_the_reference_parameters(reference_model):
    trainable = {n for n, p in reference_model.named_parameters() if p.requires_grad}
    assert trainable == {ours(n) for n in REF["trainable"]}
    assert TEXT_ONLY_IN_REFERENCE <= trainable


def per_parameter(groups_by_name: list[dict]) -> dict[str, tuple[float, float]]:
    """{parameter name: (lr, weight_decay)} from groups that list parameter names."""
    out = {}
    for g in groups_by_name:
        for n in g["params"]:
            assert n not in out, f"{n} in two optimizer groups"
            out[n] = (float(g["lr"]), float(g["weight_decay"]))
    return out


def named_groups(model, groups: list[dict]) -> list[dict]:
    names = {id(q): n for n, q in model.named_parameters()}
    return [{**g, "params": [names[id(q)] for q in g["params"]]} for g in groups]


def same_settings(mine: dict, ref: dict) -> None:
    assert set(mine) == set(ref)
    wrong = {n: (mine[n], ref[n]) for n in ref
             if not (np.isclose(mine[n][0], ref[n][0], rtol=1e-12, atol=0) and mine[n][1] == ref[n][1])}
    assert not wrong, f"(lr, weight_decay) ours vs reference: {wrong}"


@pytest.mark.parametrize("weight_decay", [0, 0.05])
def test_reference_mode_has_the_reference_lr_and_weight_decay_per_parameter(reference_model, weight_decay):
    p = IPIQAParams()
    groups = reference_model.param_groups(p.lr, p.head_lr_scale, weight_decay, p.fusion_lr_scale)
    ref = {ours(n): v for n, v in per_parameter(REF["param_groups"][f"weight_decay_{weight_decay}"]).items()}
    same_settings(per_parameter(named_groups(reference_model, groups)), ref)
    assert {round(lr, 12) for lr, _ in ref.values()} == {1e-5, 1e-4}  # backbone and head (x10)


def test_reference_mode_reproduces_one_training_step(weights, batch):
    model = build(weights, "reference")
    out, loss, grads, after = train_step(model, batch)
    step = REF["train_step"]
    close(out, step["outputs"], "train-mode outputs (dropout, BatchNorm batch statistics)")
    assert loss == pytest.approx(step["loss"], rel=RTOL)
    assert {n for n in grads} == {ours(n) for n in step["grad_norms"]}
    mine = torch.tensor([float(grads[ours(n)].double().norm()) for n in step["grad_norms"]], dtype=torch.float64)
    recorded = torch.tensor(list(step["grad_norms"].values()), dtype=torch.float64)
    # k_proj biases get an analytically zero gradient (softmax ignores a shift shared by all keys): what
    # both sides hold there is rounding noise, so the absolute tolerance is relative to the largest norm
    torch.testing.assert_close(mine, recorded, rtol=1e-4, atol=1e-6 * float(recorded.max()))
    rows = grads["prompt.token_embedding.weight"].abs().sum(1).nonzero().flatten().tolist()
    assert rows == step["wte_grad_rows"]
    close(after, step["eval_outputs_after"], "eval outputs after one AdamW step")
    assert not torch.allclose(after.double(), torch.tensor(REF["eval"]["outputs"], dtype=torch.float64),
                              rtol=100 * RTOL, atol=0)  # the step moved the outputs: the comparison above means something


# -- the default (paper) text mode: differs only where the docs say --------------------------
def test_paper_mode_starts_from_the_same_outputs(weights, batch):
    model = build(weights, "paper").eval()
    with torch.no_grad():
        out = model(batch, model.tokenize(REF["prompts"]))
    close(out, REF["eval"]["outputs"], "paper-mode outputs at initialisation")


def test_paper_mode_differs_only_in_the_text_parameters(weights):
    paper = build(weights, "paper")
    trainable = {n for n, p in paper.named_parameters() if p.requires_grad}
    reference = {ours(n) for n in REF["trainable"]}
    assert reference - trainable == TEXT_ONLY_IN_REFERENCE
    assert trainable - reference == {"prompt.qa_embedding"}
    p = IPIQAParams()
    mine = per_parameter(named_groups(paper, paper.param_groups(p.lr, p.head_lr_scale, p.weight_decay,
                                                                p.fusion_lr_scale)))
    ref = {ours(n): v for n, v in per_parameter(REF["param_groups"]["weight_decay_0"]).items()}
    qa = mine.pop("prompt.qa_embedding")
    same_settings(mine, {n: v for n, v in ref.items() if n not in TEXT_ONLY_IN_REFERENCE})
    assert np.isclose(qa[0], p.lr * p.fusion_lr_scale) and qa[1] == 0


def test_paper_mode_qa_gradient_is_the_end_of_text_row_gradient(weights, batch):
    paper, reference = build(weights, "paper"), build(weights, "reference")
    out_p, _, grads_p, _ = train_step(paper, batch)
    out_r, _, grads_r, _ = train_step(reference, batch)
    torch.testing.assert_close(out_p, out_r, rtol=RTOL, atol=RTOL * float(out_r.abs().max()))
    eot = int(paper.tokenize([""]).max())
    qa, row = grads_p["prompt.qa_embedding"], grads_r["prompt.token_embedding.weight"][eot]
    assert float(qa.norm()) > 0
    torch.testing.assert_close(qa, row, rtol=1e-4, atol=1e-6 * float(row.abs().max()))
    shared = set(grads_p) & set(grads_r)
    assert shared == set(grads_r) - TEXT_ONLY_IN_REFERENCE
    for n in shared:  # everything outside the text parameters gets the same gradient
        torch.testing.assert_close(grads_p[n], grads_r[n], rtol=1e-4, atol=1e-6 * float(grads_r[n].abs().max()) + 1e-12)
