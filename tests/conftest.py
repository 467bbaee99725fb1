"""Shared fixtures.  Tests never touch the network: hub access is switched off here."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# Built-in artefacts (the default SynthAGIQA set) go to a throw-away folder, not ~/.cache.
os.environ["AGIQA_BENCH_CACHE"] = tempfile.mkdtemp(prefix="agiqa-bench-test-cache-")

from agiqa_test_support import make_tiny_agiqa3k  # noqa: E402


@pytest.fixture
def tiny_agiqa3k(tmp_path: Path) -> Path:
    """A fresh tiny AGIQA-3k-layout folder the test may modify (see make_tiny_agiqa3k)."""
    return make_tiny_agiqa3k(tmp_path / "tiny3k")


@pytest.fixture(scope="session")
def tiny_agiqa3k_shared(tmp_path_factory) -> Path:
    """The same folder, made once per session: read it, never modify it."""
    return make_tiny_agiqa3k(tmp_path_factory.mktemp("shared") / "tiny3k")


@pytest.fixture
def no_network(monkeypatch, tmp_path):
    """An empty torch hub cache, and any connection attempt fails the test (use with `usefixtures`)."""
    import socket

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))

    def refuse(*args, **kwargs):
        raise AssertionError("a test tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models run fastest, and steadiest on a busy machine, on one torch thread."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def _fresh_registry():
    """Specs a test registered (agiqa_test_support.register) do not outlive it."""
    yield
    from agiqa_bench import registry

    registry.refresh()


@pytest.fixture(scope="module")
def contract_data(tiny_agiqa3k_shared):
    """The tiny AGIQA-3k-layout set and one grouped split: what the registry-wide contract tests run on."""
    from agiqa_bench.datasets import load_dataset
    from agiqa_bench.splits import make_splits

    ds = load_dataset("agiqa3k", tiny_agiqa3k_shared)
    split = make_splits(ds, "grouped", repeats=1, seed=1)[0]
    return ds, split


@pytest.fixture(scope="module")
def image2prompt_ckpt(tmp_path_factory):
    """A tiny Image2Prompt checkpoint (random visual weights) for the variants that need one."""
    import torch

    from agiqa_bench.clip import load_clip

    torch.manual_seed(5)
    path = tmp_path_factory.mktemp("i2p") / "tiny-i2p.pt"
    visual = load_clip("agiqa-tiny-rn", "").visual.state_dict()
    torch.save({"format": "agiqa-bench/image2prompt@1", "clip_model": "agiqa-tiny-rn", "visual": visual}, path)
    return path
