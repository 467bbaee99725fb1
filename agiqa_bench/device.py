"""Which torch device a run uses: `auto` picks CUDA when torch sees a GPU, else the CPU."""

from __future__ import annotations

from agiqa_bench.errors import ConfigError


def resolve_device(device: str) -> str:
    """'auto' | 'cpu' | 'cuda' | 'cuda:N' -> the concrete device name; anything else is a ConfigError."""
    if device not in ("auto", "cpu", "cuda") and not str(device).startswith("cuda:"):
        raise ConfigError(f"--device must be auto, cpu or cuda[:N], got {device!r}")
    if device != "auto":
        return device
    try:
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    except ImportError:
        return "cpu"
