"""Training machinery shared by every deep method (IP-IQA, its ablations, deep baselines).

- `ImageBank`: each image is decoded and resized once per process (kept as a
  uint8 tensor), not once per epoch or per repeat.
- `fit_regressor`: regression of raw MOS (MSE by default, or L1) with AdamW by
  default (or Adam / SGD with momentum; the caller's parameter groups set each
  learning rate), horizontal-flip augmentation, bf16 autocast on CUDA, and model
  selection by one of three protocols:
    * `val` (default): the epoch with the best mean (SRCC + PLCC) on the
      validation groups; the test part is never looked at;
    * `last`: the last epoch;
    * `test-oracle`: the epoch with the best (PLCC + SRCC + KRCC) summed over
      targets *on the test part*, as the IP-IQA reference code and its paper
      did.  Numbers from it are optimistic and labelled `[test-oracle]`.
- Options the deep baselines need, each off by default (so the defaults train
  exactly as before):
    * random crops: `crop_size` > 0 trains on random `crop_size` squares of the
      `image_size` resize, `crops_per_image` fresh crops of every image per
      epoch (HyperIQA's 25 patches per image);
    * test crops: `test_crops` = n > 0 scores the mean over n crops (`grid`:
      evenly spaced, the centre when n = 1; `random`: seeded random positions,
      as the official HyperIQA test); 0 scores the whole resized image;
    * a per-epoch learning-rate schedule (`step` milestones x gamma, `cosine`),
      or any per-group schedule through `fit_regressor(lr_at=...)`;
      `reset_optimizer` rebuilds the optimizer (fresh moments) every epoch.
- Seeded: same seed, same data, same device -> same model on CPU.
"""

from __future__ import annotations

import copy
import math
import threading
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from agiqa_bench.clip import CLIP_MEAN, CLIP_STD
from agiqa_bench.errors import ConfigError
from agiqa_bench.images import load_rgb
from agiqa_bench.params import from_config
from agiqa_bench.records import Item

SELECTIONS = ("val", "last", "test-oracle")
LOSSES = ("mse", "l1")
OPTIMIZERS = ("adamw", "adam", "sgd")
LR_SCHEDULES = ("constant", "step", "cosine")
CROP_MODES = ("grid", "random")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


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
    # -- options added for the deep baselines; the defaults keep the behaviour above --
    loss: str = "mse"  # "mse" | "l1"
    optimizer: str = "adamw"  # "adamw" | "adam" (L2 weight decay) | "sgd" (with `momentum`)
    momentum: float = 0.9
    lr_schedule: str = "constant"  # "constant" | "step" (x lr_gamma at each milestone) | "cosine"
    lr_milestones: tuple[int, ...] = ()
    lr_gamma: float = 0.1
    reset_optimizer: bool = False  # rebuild the optimizer (fresh moments) at every epoch
    crop_size: int = 0  # 0: train on the whole image_size image
    crops_per_image: int = 1  # random crops of each training image per epoch
    test_crops: int = 0  # 0: score the whole image; n: mean over n crops of crop_size
    test_crop_mode: str = "grid"  # "grid" | "random"

    @classmethod
    def from_params(cls, config: Mapping[str, Any], *, where: str = "", **changes) -> "TrainConfig":
        """The training configuration from a method's resolved parameters: every parameter named like a field,
        converted to the field's type (`lr_milestones`: comma-separated epochs); then `changes` as given.
        The ranges and choices are the method's declaration (`agiqa_bench.params`), checked at plan time."""
        if "lr_milestones" in config and "lr_milestones" not in changes:
            changes["lr_milestones"] = int_tuple(config["lr_milestones"], f"{where}.lr_milestones".lstrip("."))
        return from_config(cls, config, **changes)

    def check(self) -> None:
        """What the per-parameter declarations cannot say: the crops against the image size."""
        if not 0 <= self.crop_size <= self.image_size:
            raise ConfigError(f"crop_size must be between 0 (no crop) and image_size ({self.image_size}), "
                              f"got {self.crop_size}")
        if self.test_crops and not self.crop_size:
            raise ConfigError("test_crops > 0 needs crop_size > 0 (the size of the crops)")


def int_tuple(text: Any, where: str) -> tuple[int, ...]:
    """'10,20,30' -> (10, 20, 30); '' -> ()."""
    if isinstance(text, (tuple, list)):
        return tuple(int(v) for v in text)
    try:
        return tuple(int(v) for v in str(text).replace(" ", "").split(",") if v)
    except ValueError:
        raise ConfigError(f"{where}: expected comma-separated integers, got {text!r}") from None


def unknown(what: str, value: Any, allowed: Sequence[str]) -> ValueError:
    """A name no branch handles (a caller that bypassed the method's declaration): never a silent default."""
    return ValueError(f"unknown {what} {value!r}; one of {', '.join(allowed)}")


def lr_factor(config: TrainConfig, epoch: int) -> float:
    """The multiplier of every group's learning rate in `epoch` (0-based) under `config.lr_schedule`."""
    if config.lr_schedule == "step":
        return float(config.lr_gamma) ** sum(epoch >= m for m in config.lr_milestones)
    if config.lr_schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * epoch / config.epochs))
    if config.lr_schedule == "constant":
        return 1.0
    raise unknown("lr_schedule", config.lr_schedule, LR_SCHEDULES)


def warmup_cosine(step: int, total: int, base: float, warmup: int, schedule: str = "cosine") -> float:
    """Learning rate of update `step` (0-based) of `total`: linear warm-up over `warmup` updates, then
    cosine decay to 0 (`schedule="cosine"`) or the base rate (`"constant"`)."""
    if step < warmup:
        return base * (step + 1) / warmup
    if schedule == "constant":
        return base
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * base * (1.0 + math.cos(math.pi * min(1.0, progress)))


def make_optimizer(groups: list[dict], config: TrainConfig):
    import torch

    if config.optimizer == "adam":
        return torch.optim.Adam(groups, lr=config.lr, betas=(0.9, 0.999), eps=1e-8)
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum)
    if config.optimizer == "adamw":
        return torch.optim.AdamW(groups, betas=(0.9, 0.999), eps=1e-8)
    raise unknown("optimizer", config.optimizer, OPTIMIZERS)


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
    import torch

    size = batch_u8.shape[-1]
    pos = rng.integers(0, size - crop + 1, (len(batch_u8), 2))
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


def predict_batches(model, images_u8, extras, device: str, batch_size: int, amp: bool, mean=CLIP_MEAN, std=CLIP_STD,
                    *, crop_size: int = 0, crops: int = 0, crop_mode: str = "grid", seed: int = 0):
    """Predictions (N, K) in eval mode; with `crops` > 0, the mean over `crops` crops of `crop_size` per image.

    Random test crops are drawn from `seed`, so the same call gives the same scores.
    At most `batch_size` crops go through the model at once.
    """
    import torch

    model.eval()
    outs = []
    n = max(1, crops) if crop_size else 1
    step = max(1, batch_size // n)
    rng = np.random.default_rng(seed)
    with torch.no_grad():
        for start in range(0, len(images_u8), step):
            x = images_u8[start:start + step]
            if crop_size and crops:
                x = multi_crops(x, crop_size, crops, crop_mode, rng)
            x = normalise(x.to(device), mean, std)
            args = [e[start:start + step] for e in extras]
            args = [(a.repeat_interleave(n, 0) if n > 1 else a).to(device) for a in args]
            with _autocast(device, amp):
                y = model(x, *args)
            outs.append(y.float().cpu().reshape(len(x) // n, n, -1).mean(1))
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
    lr_at: Callable[[int, int], float] | None = None,
) -> FitResult:
    """Train `model(images, *extras)` -> (B, len(targets)) by `config.loss`; keep the selected epoch's weights.

    `lr_at(epoch, group_index)`, when given, sets each parameter group's learning
    rate at the start of every epoch (instead of group lr x `lr_factor`).
    """
    import torch

    config.check()
    if config.selection not in SELECTIONS:
        raise unknown("selection", config.selection, SELECTIONS)
    if config.loss not in LOSSES:
        raise unknown("loss", config.loss, LOSSES)
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
    optimizer = make_optimizer(optimizer_groups, config)
    base_lrs = [float(g["lr"]) for g in optimizer.param_groups]
    loss_fn = torch.nn.functional.l1_loss if config.loss == "l1" else torch.nn.functional.mse_loss
    test_crops = {"crop_size": config.crop_size if config.test_crops else 0, "crops": config.test_crops,
                  "crop_mode": config.test_crop_mode, "seed": seed}
    n_seen = len(train) * config.crops_per_image
    batch = min(config.batch_size, n_seen)
    best_score, best_epoch, best_state, history = float("-inf"), config.epochs - 1, None, []
    for epoch in range(config.epochs):
        if config.reset_optimizer and epoch > 0:
            optimizer = make_optimizer(optimizer_groups, config)
        for i, group in enumerate(optimizer.param_groups):
            group["lr"] = lr_at(epoch, i) if lr_at else base_lrs[i] * lr_factor(config, epoch)
        model.train()
        if config.crops_per_image == 1:
            order = rng.permutation(len(train))
        else:
            order = rng.permutation(np.repeat(np.arange(len(train)), config.crops_per_image))
        losses = []
        for start in range(0, len(order) - batch + 1, batch):  # drop_last, as the reference
            idx = torch.from_numpy(order[start:start + batch])
            x = x_train[idx]
            if config.crop_size:
                x = random_crops(x, config.crop_size, rng)
            x = x.to(device)
            if config.hflip:
                flip = torch.from_numpy(rng.random(len(idx)) < 0.5).to(device)
                x = torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)
            x = normalise(x, mean, std)
            args = [e[idx].to(device) for e in e_train]
            with _autocast(device, config.amp):
                pred = model(x, *args)
            loss = loss_fn(pred.float().reshape(len(idx), -1), y_train[idx].to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()))
        record = {"epoch": epoch, "train_loss": float(np.mean(losses)) if losses else float("nan"),
                  "lr": [float(g["lr"]) for g in optimizer.param_groups]}
        if config.loss == "mse":
            record["train_mse"] = record["train_loss"]
        if watch:
            pred = predict_batches(model, x_watch, e_watch, device, config.eval_batch_size, config.amp, mean, std,
                                   **test_crops)
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


# -- the trainable-torch method base ----------------------------------------------------------
from agiqa_bench.method import Method  # noqa: E402  (method imports nothing from here)


class TorchRegressor(Method):
    """What every torch method trained by `fit_regressor` shares (IP-IQA, the deep baselines).

    The selection protocol (`selection`: val, last, or the labelled test-oracle,
    whose test part the runner hands over through `set_oracle`), the fitted
    model, keeping its checkpoint when the run asks for it, and prediction in
    batches.  Subclasses build the model, give `train_config()` and `save()`,
    and add per-item inputs (`extras`) or prediction options (`predict_options`).
    """

    def __init__(self, spec, config=None, context=None, *, name=None):
        super().__init__(spec, config, context, name=name)
        self.model = None  # what is trained and predicts
        self._oracle: Sequence[Item] | None = None
        self.info: dict = {}

    @property
    def uses_test_oracle(self) -> bool:
        return self.config["selection"] == "test-oracle"

    def set_oracle(self, items: Sequence[Item]) -> None:
        """The test part, given by the runner only under selection=test-oracle."""
        self._oracle = items

    # -- hooks ----------------------------------------------------------------------------------
    def train_config(self) -> TrainConfig:
        raise NotImplementedError

    def save(self, path):
        raise NotImplementedError

    def extras(self, items: Sequence[Item]) -> list:
        """Per-item tensors the model takes besides the pixels (IP-IQA: prompt tokens)."""
        return []

    def predict_options(self, cfg: TrainConfig) -> dict:
        """Keyword arguments of `predict_batches` (normalisation, test crops)."""
        return {}

    # -- shared ---------------------------------------------------------------------------------
    def keep_checkpoint(self) -> None:
        """Save the fitted model where the run keeps checkpoints (`--keep-checkpoints`)."""
        if self.context.keep_checkpoints and self.context.workdir is not None:
            self.info["checkpoint"] = str(self.save(self.kept_checkpoint_path()))

    def predict(self, items: Sequence[Item]) -> np.ndarray:
        if self.model is None:
            raise RuntimeError(f"{self.spec.name}: predict called before fit")
        cfg = self.train_config()
        images = ImageBank.get(items, cfg.image_size)
        return predict_batches(self.model, images, self.extras(items), self.context.device, cfg.eval_batch_size,
                               cfg.amp, **self.predict_options(cfg))
