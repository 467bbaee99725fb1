"""Which torch device a run uses: `auto` picks CUDA when torch sees a GPU, else the CPU."""

from __future__ import annotations

from agiqa_bench.errors import ConfigError


def resolve_device(device: str, *, check: bool = False) -> str:
    """'auto' | 'cpu' | 'cuda' | 'cuda:N' -> the concrete device name; anything else is a ConfigError.

    `check`: a CUDA device must be usable on this machine (torch sees a GPU, N below the GPU count), else a
    one-line ConfigError, so a run refuses it while planning instead of failing every job with a driver error.
    """
    device = str(device)
    index = device.partition(":")[2]
    if device not in ("auto", "cpu", "cuda") and not (device.startswith("cuda:") and index.isdigit()):
        raise ConfigError(f"--device must be auto, cpu, cuda or cuda:N (N a GPU index), got {device!r}")
    if device.startswith("cuda") and check:
        _check_cuda(device, int(index) if index else 0)
    if device != "auto":
        return device
    try:
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    except ImportError:
        return "cpu"


def _check_cuda(device: str, index: int) -> None:
    try:
        import torch
    except ImportError:
        raise ConfigError(f"--device {device}: torch is not installed; use --device cpu") from None
    if not torch.cuda.is_available():
        raise ConfigError(f"--device {device}: no usable CUDA device on this machine (torch {torch.__version__} sees "
                          f"none); use --device cpu, or auto to take a GPU when there is one")
    count = torch.cuda.device_count()
    if index >= count:
        raise ConfigError(f"--device {device}: this machine has {count} CUDA device(s) (cuda:0..cuda:{count - 1})")
