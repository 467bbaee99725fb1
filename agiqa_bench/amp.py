"""Mixed precision and GPU speed helpers for the torch models (imports torch: load it from model code only).

- `run_fp32(fn, *xs)`: `fn` outside autocast, on float32 inputs.  The prediction
  heads run so: under bf16 autocast a Linear head returns bf16 scores (8
  significant bits: ~240 distinct values over 600 test images), which ties
  scores that differ.  Without autocast (every CPU run) it is exactly `fn(*xs)`.
- `Fp32Linear` / `fp32_linears(module)`: every `nn.Linear` of a module run
  through `run_fp32` (the deep baselines' heads: fully connected layers after
  the convolutional trunk); parameters, names and state dicts unchanged.
- `channels_last` and `compile` of a model for a device (CUDA only).
"""

from __future__ import annotations

import os

import torch
from torch import nn

#: Environment switch of `torch.compile` for the training forward (CUDA only; may change results slightly,
#: so it is no method parameter: no configuration hash moves, and the job info records it).
COMPILE_ENV = "AGIQA_BENCH_COMPILE"
#: Environment switch of channels_last memory format for convolutional models on CUDA (default on; "0" = off).
CHANNELS_LAST_ENV = "AGIQA_BENCH_CHANNELS_LAST"


def autocast_active(device_type: str) -> bool:
    return torch.is_autocast_enabled(device_type)


def run_fp32(fn, *xs: torch.Tensor) -> torch.Tensor:
    """`fn(*xs)` in float32 with autocast off for the inputs' device; plain `fn(*xs)` when autocast is off."""
    device_type = xs[0].device.type
    if not autocast_active(device_type):
        return fn(*xs)
    with torch.autocast(device_type, enabled=False):
        return fn(*(x.float() for x in xs))


class Fp32Linear(nn.Linear):
    """`nn.Linear` that runs in float32 under autocast (same parameters and state dict)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return run_fp32(super().forward, x)


def fp32_linears(module: nn.Module) -> nn.Module:
    """Every plain `nn.Linear` inside `module` made an `Fp32Linear` in place (its class only: the parameters,
    their order and the random state stay as they are); returns `module`."""
    for m in module.modules():
        if type(m) is nn.Linear:
            m.__class__ = Fp32Linear
    return module


def is_cuda(device) -> bool:
    return torch.device(device).type == "cuda"


def has_conv(model: nn.Module) -> bool:
    return any(isinstance(m, nn.Conv2d) for m in model.modules())


def use_channels_last(model: nn.Module, device) -> bool:
    """channels_last for a convolutional model on CUDA (never on CPU: the CPU numbers stay as they were)."""
    return is_cuda(device) and os.environ.get(CHANNELS_LAST_ENV, "1") != "0" and has_conv(model)


def compile_requested() -> bool:
    return os.environ.get(COMPILE_ENV, "0") not in ("", "0", "false", "no")


def maybe_compile(model: nn.Module, device):
    """`torch.compile(model)` when AGIQA_BENCH_COMPILE=1 and the device is CUDA, else `model` itself.

    The compiled wrapper shares the model's parameters; train/eval and state dicts stay on `model`."""
    if compile_requested() and is_cuda(device):
        return torch.compile(model)
    return model
