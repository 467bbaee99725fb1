"""Batches for the trainable torch methods: the decoded image bank, crops, flips and normalisation.

- `ImageBank`: each image is decoded and resized once per process (a uint8 tensor), not once per epoch or
  per repeat; `on_device_if_fits` moves a fit's bank to the GPU when it fits.
- Crops (`crop_positions`, `random_crops`, `crops_at`, `multi_crops`) and `normalise` work on uint8 batches
  on whatever device they sit; the random numbers are drawn by the caller, on the CPU, in a fixed order.
"""

from __future__ import annotations

import math
import threading
from typing import Any, Sequence

import numpy as np

from agiqa_bench.clip import CLIP_MEAN, CLIP_STD
from agiqa_bench.images import load_rgb
from agiqa_bench.records import Item

#: The image bank goes to the GPU for a fit when it takes less than this share of the free GPU memory.
BANK_GPU_FRACTION = 0.4
CROP_MODES = ("grid", "random")


def unknown(what: str, value: Any, allowed: Sequence[str]) -> ValueError:
    """A name no branch handles (a caller that bypassed the method's declaration): never a silent default."""
    return ValueError(f"unknown {what} {value!r}; one of {', '.join(allowed)}")




class ImageBank:
    """Decoded, resized images as one uint8 tensor per (path, size), shared in the process."""

    _store: dict[tuple[str, int, int], "object"] = {}
    _lock = threading.Lock()

    @classmethod
    def get(cls, items: Sequence[Item], size: int):
        """uint8 tensor (N, 3, size, size), bicubic square resize (aspect ratio not kept)."""
        import torch

        out = torch.empty((len(items), 3, size, size), dtype=torch.uint8)
        for i, item in enumerate(items):
            try:
                stamp = item.image.stat().st_mtime_ns
            except OSError:
                stamp = 0
            key = (str(item.image), stamp, size)
            with cls._lock:
                cached = cls._store.get(key)
            if cached is None:
                cached = torch.from_numpy(load_rgb(item.image, size)).permute(2, 0, 1).contiguous()
                with cls._lock:
                    cls._store[key] = cached
            out[i] = cached
        return out

    @classmethod
    def clear(cls) -> None:
        with cls._lock:
            cls._store.clear()



def crop_positions(size: int, crop: int, n: int, mode: str, rng: np.random.Generator | None = None) -> list[tuple[int, int]]:
    """(top, left) of n square crops of side `crop` in a `size` square.

    `grid`: a ceil(sqrt(n)) x ceil(sqrt(n)) lattice from corner to corner, row by
    row, first n kept (n = 1: the centre; size = k * crop: k^2 non-overlapping
    tiles).  `random`: uniform positions drawn from `rng`.
    """
    span = size - crop
    if mode not in CROP_MODES:
        raise unknown("test_crop_mode", mode, CROP_MODES)
    if mode == "random":
        if rng is None:
            raise ValueError("random crops need an rng")
        return [tuple(int(v) for v in rng.integers(0, span + 1, 2)) for _ in range(n)]
    k = math.ceil(math.sqrt(n))
    steps = [span // 2] if k == 1 else [round(i * span / (k - 1)) for i in range(k)]
    return [(t, l) for t in steps for l in steps][:n]


def random_crops(batch_u8, crop: int, rng: np.random.Generator):
    """One random `crop` square per image of a (B, C, S, S) batch (a new position for each image)."""
    size = batch_u8.shape[-1]
    return crops_at(batch_u8, crop, rng.integers(0, size - crop + 1, (len(batch_u8), 2)))


def crops_at(batch_u8, crop: int, pos):
    """The `crop` square at (top, left) = pos[i] (host integers) of every image i (views, one copy)."""
    import torch

    return torch.stack([img[:, t:t + crop, l:l + crop] for img, (t, l) in zip(batch_u8, pos)])


def multi_crops(batch_u8, crop: int, n: int, mode: str, rng: np.random.Generator | None = None):
    """(B * n, C, crop, crop): n crops of every image, image-major; random positions differ per image."""
    import torch

    size = batch_u8.shape[-1]
    out = []
    for img in batch_u8:
        for t, l in crop_positions(size, crop, n, mode, rng):
            out.append(img[:, t:t + crop, l:l + crop])
    return torch.stack(out)


_NORM_CONSTANTS: dict = {}


def _norm_constant(values, device):
    """(1, 3, 1, 1) float32 tensor of `values` on `device`, made once (no host-to-device copy per batch)."""
    import torch

    key = (tuple(float(v) for v in values), str(device))
    out = _NORM_CONSTANTS.get(key)
    if out is None:
        out = _NORM_CONSTANTS[key] = torch.tensor(values, device=device).view(1, 3, 1, 1)
    return out


def normalise(batch_u8, mean=CLIP_MEAN, std=CLIP_STD):
    x = batch_u8.float().div_(255.0)
    return (x - _norm_constant(mean, x.device)) / _norm_constant(std, x.device)


def on_device_if_fits(tensors: Sequence[Any], device, fraction: float | None = None) -> tuple[list, bool]:
    """`tensors` moved to a CUDA `device` when together they take less than `fraction` (default
    `BANK_GPU_FRACTION`) of its free memory; (tensors, moved).  On CPU nothing moves."""
    import torch

    tensors = list(tensors)
    if torch.device(device).type != "cuda" or not tensors:
        return tensors, False
    fraction = BANK_GPU_FRACTION if fraction is None else fraction
    free, _ = torch.cuda.mem_get_info(torch.device(device))
    if sum(t.numel() * t.element_size() for t in tensors) >= fraction * free:
        return tensors, False
    return [t.to(device) for t in tensors], True


def to_device(x, device):
    """A host tensor to a CUDA device without waiting for it (pinned, non-blocking); as is on CPU."""
    import torch

    if x.device == torch.device(device):
        return x
    if torch.device(device).type == "cuda" and x.device.type == "cpu":
        return x.pin_memory().to(device, non_blocking=True)
    return x.to(device)
