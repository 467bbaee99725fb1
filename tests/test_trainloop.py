"""The training loop's GPU-efficiency changes, checked on the CPU.

bf16 autocast is forced on the CPU (`training.AUTOCAST_DEVICE_TYPES`) so the
code path that CUDA runs (heads in float32 outside autocast) is tested here;
weight decay groups; the no-CUDA exit of benchmarks/gpu_check.py.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from agiqa_bench import training
from agiqa_bench.amp import Fp32Linear, fp32_linears, run_fp32
from agiqa_bench.datasets import load_dataset
from agiqa_bench.method import MethodContext
from agiqa_bench.registry import create_method, get_spec
from agiqa_bench.splits import make_splits
from agiqa_bench.training import decay_groups, no_decay_ids, predict_batches
from agiqa_bench.batches import on_device_if_fits
from ipiqa.model import IPIQA, IPIQAConfig

pytestmark = pytest.mark.usefixtures("one_torch_thread")
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def cpu_autocast(monkeypatch):
    """amp=True turns bf16 autocast on for CPU tensors too (as it does on CUDA)."""
    monkeypatch.setattr(training, "AUTOCAST_DEVICE_TYPES", {"cuda", "cpu"})


def tiny_ipiqa(**changes) -> IPIQA:
    torch.manual_seed(0)
    cfg = {"clip_model": "agiqa-tiny-rn", "pretrained": "", "image_size": 64, "num_outputs": 2, **changes}
    return IPIQA(IPIQAConfig(**cfg))


def dtypes_seen(module):
    """Records (input dtype, output dtype) of every call of `module`."""
    seen = []
    module.register_forward_hook(lambda m, args, out: seen.append((args[0].dtype, out.dtype)))
    return seen


def test_ipiqa_predictions_under_bf16_autocast_are_float32_and_as_distinct(cpu_autocast):
    n = 40
    model = tiny_ipiqa()
    with torch.no_grad():  # a fresh head scores every image within ~1e-4: spread them as a trained one does
        model.head.layers[-1].weight.mul_(1000.0)
    images = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (n, 3, 64, 64), dtype=np.uint8))
    tokens = model.tokenize([f"prompt {i}" for i in range(n)])
    seen = dtypes_seen(model.head.layers)
    fp32 = predict_batches(model, images, [tokens], "cpu", 16, amp=False)
    assert seen and all(d == (torch.float32, torch.float32) for d in seen)
    seen.clear()
    with torch.autocast("cpu", dtype=torch.bfloat16):  # the features come out in bf16 under autocast ...
        assert model.image(torch.randn(2, 3, 64, 64))[0].dtype == torch.bfloat16
    bf16 = predict_batches(model, images, [tokens], "cpu", 16, amp=True)
    # ... and the head gets them in float32, with autocast off
    assert seen and all(d == (torch.float32, torch.float32) for d in seen)
    assert bf16.dtype == np.float64 and bf16.shape == (n, 2)
    for j in range(2):
        assert len(np.unique(bf16[:, j])) == len(np.unique(fp32[:, j])) == n
    assert not np.array_equal(bf16, fp32)  # the trunk did run in bf16


def test_head_under_autocast_would_round_the_scores(cpu_autocast):
    """What the float32 head avoids: a bf16 head output has ~8 significant bits."""
    head = torch.nn.Linear(64, 1)
    x = torch.randn(200, 64) + 50.0
    with torch.autocast("cpu", dtype=torch.bfloat16):
        rounded = head(x)
        exact = run_fp32(head, x)
    assert rounded.dtype == torch.bfloat16 and exact.dtype == torch.float32
    assert len(torch.unique(exact)) > len(torch.unique(rounded.float()))


def test_ipiqa_trains_under_bf16_autocast(cpu_autocast, tiny_agiqa3k_shared):
    ds = load_dataset("agiqa3k", tiny_agiqa3k_shared)
    split = make_splits(ds, "grouped", repeats=1, seed=2)[0]
    spec, _ = get_spec("ipiqa")
    method = create_method("ipiqa", {**spec.smoke, "epochs": 2, "selection": "val"}, MethodContext(seed=1))
    method.fit(ds.subset(split.train), ds.subset(split.val), ds.targets)
    pred = method.predict(ds.subset(split.test))
    assert np.isfinite(pred).all() and np.isfinite(method.info["train_mse_last"])
    assert all(len(np.unique(pred[:, j])) == len(split.test) for j in range(pred.shape[1]))
    assert "compile" not in method.info  # CPU: no GPU speed-up recorded


def test_fp32_linears_keep_parameters_and_state_dict(cpu_autocast):
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten(), torch.nn.Linear(4 * 6 * 6, 8),
                              torch.nn.ReLU(), torch.nn.Linear(8, 2))
    before = {k: v.clone() for k, v in net.state_dict().items()}
    params = [id(p) for p in net.parameters()]
    x = torch.randn(5, 3, 8, 8)
    plain = net(x)
    fp32_linears(net)
    assert isinstance(net[2], Fp32Linear) and isinstance(net[4], Fp32Linear)
    assert [id(p) for p in net.parameters()] == params
    assert all(torch.equal(v, before[k]) for k, v in net.state_dict().items()) and net.state_dict().keys() == before.keys()
    assert torch.equal(net(x), plain)  # no autocast: bitwise the same
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert net(x).dtype == torch.float32


@pytest.mark.parametrize("name", ["cnniqa", "hypernet"])
def test_deep_baselines_predict_float32_scores_under_autocast(name, cpu_autocast, tiny_agiqa3k_shared):
    ds = load_dataset("agiqa3k", tiny_agiqa3k_shared)
    split = make_splits(ds, "grouped", repeats=1, seed=2)[0]
    spec, _ = get_spec(name)
    method = create_method(name, dict(spec.smoke), MethodContext(seed=1))
    method.fit(ds.subset(split.train), ds.subset(split.val), ds.targets)
    seen = []
    method.model.register_forward_hook(lambda m, args, out: seen.append(out.dtype))
    pred = method.predict(ds.subset(split.test))
    assert seen and set(seen) == {torch.float32}
    assert all(len(np.unique(pred[:, j])) == len(split.test) for j in range(pred.shape[1]))


# -- weight decay groups --------------------------------------------------------------------------
def _kind(model):
    norms = {id(p) for m in model.modules() if isinstance(m, (torch.nn.LayerNorm, torch.nn.BatchNorm2d))
             for p in m.parameters(recurse=False)}
    biases = {id(p) for n, p in model.named_parameters() if n.endswith("bias")}
    flat = {id(p) for p in model.parameters() if p.ndim < 2}
    return norms, biases, flat


def test_ipiqa_weight_decay_spares_biases_norms_and_1d_parameters():
    model = tiny_ipiqa()
    norms, biases, flat = _kind(model)
    assert norms and biases and flat
    groups = model.param_groups(1e-5, 10.0, 0.1, 30.0)
    decayed = {id(p) for g in groups if g["weight_decay"] == 0.1 for p in g["params"]}
    spared = {id(p) for g in groups if g["weight_decay"] == 0.0 for p in g["params"]}
    assert {g["weight_decay"] for g in groups} == {0.0, 0.1}
    assert (norms | biases | flat) & {id(p) for p in model.parameters() if p.requires_grad} <= spared
    assert not decayed & (norms | biases | flat)
    assert all(p.ndim >= 2 for g in groups if g["weight_decay"] for p in g["params"])
    trainable = [id(p) for p in model.parameters() if p.requires_grad]
    everything = [id(p) for g in groups for p in g["params"]]
    assert sorted(everything) == sorted(trainable) and len(everything) == len(set(everything))
    # each part keeps its learning rate: backbone, head (x10), fusion + [QA] (x30)
    head = {id(p) for p in model.head.parameters()}
    assert [g["lr"] for g in groups if {id(p) for p in g["params"]} & head] == [pytest.approx(1e-4)] * 2
    assert {id(model.prompt.qa_embedding)} <= spared
    assert sorted({round(g["lr"], 12) for g in groups}) == [1e-5, 1e-4, 3e-4]


def test_no_weight_decay_keeps_one_group_per_part():
    model = tiny_ipiqa()
    groups = model.param_groups(1e-5, 10.0, 0.0, 1.0)
    assert len(groups) == 3 and all(g["weight_decay"] == 0.0 for g in groups)
    head = [id(p) for p in model.head.parameters()]
    assert [id(p) for p in groups[1]["params"]] == head
    new = [id(p) for p in model.fusion.parameters()] + [id(model.prompt.qa_embedding)]
    assert [id(p) for p in groups[2]["params"]] == new


def test_decay_all_decays_every_parameter_as_the_deep_recipes():
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Flatten(),
                              torch.nn.Linear(4, 2))
    params = list(net.parameters())
    assert decay_groups(net, [(params, 1e-3)], 5e-4, decay_all=True) == [
        {"params": params, "lr": 1e-3, "weight_decay": 5e-4}]
    split = decay_groups(net, [(params, 1e-3)], 5e-4)
    assert [len(g["params"]) for g in split] == [2, 4] and [g["weight_decay"] for g in split] == [5e-4, 0.0]
    assert no_decay_ids(net) == {id(p) for p in params if p.ndim < 2}
    assert not decay_groups(net, [([net[1].weight, net[1].bias], 1e-3)], 5e-4)[0]["weight_decay"]


@pytest.mark.parametrize("name", ["cnniqa", "dbcnn", "hypernet"])
def test_deep_baselines_keep_their_groups_with_weight_decay(name):
    spec, _ = get_spec(name)
    method = create_method(name, dict(spec.smoke), MethodContext(seed=1))
    method.net = method.build(2, {p: None for p in method.weight_params})
    cfg = method.train_config()
    assert cfg.weight_decay > 0  # the recipes decay (every parameter)
    groups = method.param_groups(cfg)
    assert all(g["weight_decay"] == cfg.weight_decay for g in groups)
    assert sum(len(g["params"]) for g in groups) == len(list(method.net.parameters()))


# -- devices ----------------------------------------------------------------------------------------
def test_nothing_moves_on_cpu():
    x = torch.zeros(3, 3, 8, 8, dtype=torch.uint8)
    out, moved = on_device_if_fits([x], "cpu")
    assert out[0] is x and not moved


def test_gpu_check_exits_cleanly_without_cuda():
    if torch.cuda.is_available():
        pytest.skip("a GPU is here: the check itself would run")
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py")], capture_output=True,
                          text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 1 and "no GPU" in lines[0]
