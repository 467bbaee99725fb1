"""Training machinery shared by every deep method (IP-IQA, its ablations, deep baselines).

- `ImageBank`: each image is decoded and resized once per process (kept as a
  uint8 tensor), not once per epoch or per repeat.
- `fit_regressor`: MSE regression of raw MOS with AdamW (separate learning rate
  for the head), horizontal-flip augmentation, bf16 autocast on CUDA, and model
  selection by one of three protocols:
    * `val` (default): the epoch with the best mean (SRCC + PLCC) on the
      validation groups; the test part is never looked at;
    * `last`: the last epoch;
    * `test-oracle`: the epoch with the best (PLCC + SRCC + KRCC) summed over
      targets *on the test part*, as the IP-IQA reference code and its paper
      did.  Numbers from it are optimistic and labelled `[test-oracle]`.
- Seeded: same seed, same data, same device -> same model on CPU.
"""

from __future__ import annotations

import copy
import threading
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from agiqa_bench.errors import ConfigError
from agiqa_bench.images import load_rgb
from agiqa_bench.records import Item

SELECTIONS = ("val", "last", "test-oracle")
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


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


@dataclass
class TrainConfig:
    epochs: int = 100
    batch_size: int = 32
    lr: float = 1e-5
    head_lr_scale: float = 10.0
    weight_decay: float = 0.0
    image_size: int = 512
    hflip: bool = True
    selection: str = "val"
    amp: bool = True
    eval_batch_size: int = 64

    def check(self) -> None:
        if self.selection not in SELECTIONS:
            raise ConfigError(f"selection must be one of {', '.join(SELECTIONS)}, got {self.selection!r}")
        if self.epochs < 1 or self.batch_size < 1:
            raise ConfigError("epochs and batch_size must be at least 1")


def normalise(batch_u8, mean=CLIP_MEAN, std=CLIP_STD):
    import torch

    x = batch_u8.float().div_(255.0)
    m = torch.tensor(mean, device=x.device).view(1, 3, 1, 1)
    s = torch.tensor(std, device=x.device).view(1, 3, 1, 1)
    return (x - m) / s


def selection_score(pred: np.ndarray, truth: np.ndarray, selection: str) -> float:
    """Model-selection criterion over targets (columns): higher is better; NaN counts as -inf."""
    from scipy import stats

    total = 0.0
    for j in range(truth.shape[1]):
        p, t = pred[:, j], truth[:, j]
        if np.ptp(p) == 0 or np.ptp(t) == 0:
            return float("-inf")
        s = stats.spearmanr(p, t).statistic + stats.pearsonr(p, t).statistic
        if selection == "test-oracle":
            s += stats.kendalltau(p, t).statistic
        total += s
    return float(total / (1 if selection == "test-oracle" else 2 * truth.shape[1]))


@dataclass
class FitResult:
    best_epoch: int
    history: list[dict]


def predict_batches(model, images_u8, extras, device: str, batch_size: int, amp: bool, mean=CLIP_MEAN, std=CLIP_STD):
    import torch

    model.eval()
    outs = []
    with torch.no_grad():
        for start in range(0, len(images_u8), batch_size):
            x = normalise(images_u8[start:start + batch_size].to(device), mean, std)
            args = [e[start:start + batch_size].to(device) for e in extras]
            with _autocast(device, amp):
                y = model(x, *args)
            outs.append(y.float().cpu())
    pred = torch.cat(outs).numpy().astype(np.float64)
    return pred.reshape(len(images_u8), -1)


def _autocast(device: str, amp: bool):
    import contextlib

    import torch

    if amp and str(device).startswith("cuda"):
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def fit_regressor(
    model,
    optimizer_groups: list[dict],
    train: Sequence[Item],
    val: Sequence[Item],
    targets: Sequence[str],
    config: TrainConfig,
    *,
    device: str = "cpu",
    seed: int = 0,
    extras: Callable[[Sequence[Item]], list] | None = None,
    oracle: Sequence[Item] | None = None,
    mean=CLIP_MEAN,
    std=CLIP_STD,
    on_epoch: Callable[[dict], None] | None = None,
) -> FitResult:
    """Train `model(images, *extras)` -> (B, len(targets)) by MSE; keep the selected epoch's weights."""
    import torch

    config.check()
    if config.selection == "val" and not val:
        raise ConfigError("selection 'val' needs a validation part; use --val-fraction > 0 or selection=last")
    if config.selection == "test-oracle" and not oracle:
        raise ConfigError("selection 'test-oracle' needs the test part (the runner provides it)")
    extras = extras or (lambda items: [])
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model.to(device)
    x_train = ImageBank.get(train, config.image_size)
    e_train = extras(train)
    y_train = torch.tensor([[it.targets[t] for t in targets] for it in train], dtype=torch.float32)
    watch = val if config.selection == "val" else oracle if config.selection == "test-oracle" else None
    if watch:
        x_watch, e_watch = ImageBank.get(watch, config.image_size), extras(watch)
        y_watch = np.array([[it.targets[t] for t in targets] for it in watch], dtype=np.float64)
    optimizer = torch.optim.AdamW(optimizer_groups, betas=(0.9, 0.999), eps=1e-8)
    batch = min(config.batch_size, len(train))
    best_score, best_epoch, best_state, history = float("-inf"), config.epochs - 1, None, []
    for epoch in range(config.epochs):
        model.train()
        order = rng.permutation(len(train))
        losses = []
        for start in range(0, len(order) - batch + 1, batch):  # drop_last, as the reference
            idx = torch.from_numpy(order[start:start + batch])
            x = x_train[idx].to(device)
            if config.hflip:
                flip = torch.from_numpy(rng.random(len(idx)) < 0.5).to(device)
                x = torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)
            x = normalise(x, mean, std)
            args = [e[idx].to(device) for e in e_train]
            with _autocast(device, config.amp):
                pred = model(x, *args)
            loss = torch.nn.functional.mse_loss(pred.float().reshape(len(idx), -1), y_train[idx].to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()))
        record = {"epoch": epoch, "train_mse": float(np.mean(losses)) if losses else float("nan")}
        if watch:
            pred = predict_batches(model, x_watch, e_watch, device, config.eval_batch_size, config.amp, mean, std)
            score = selection_score(pred, y_watch, config.selection)
            record["selection_score"] = score
            if score > best_score:
                best_score, best_epoch = score, epoch
                best_state = copy.deepcopy({k: v.detach().cpu() for k, v in model.state_dict().items()})
        history.append(record)
        if on_epoch:
            on_epoch(record)
    if best_state is not None:
        model.load_state_dict(best_state)
    return FitResult(best_epoch=best_epoch, history=history)
