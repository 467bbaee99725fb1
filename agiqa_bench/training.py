"""Training machinery shared by every deep method (IP-IQA, its ablations, deep baselines).

- Batches come from `agiqa_bench.batches`: the `ImageBank` (each image decoded
  and resized once per process, a uint8 tensor), crops, flips, normalisation.
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
- GPU efficiency (none of it changes a CPU number): no host synchronisation
  inside the step loop (the epoch's random draws go to the device once per
  epoch, the losses stay there until the epoch ends); the image bank moves to
  the GPU when it fits (`BANK_GPU_FRACTION` of the free memory); prediction
  heads run in float32 outside bf16 autocast (`agiqa_bench.amp.run_fp32`);
  channels_last for convolutional models on CUDA; `AGIQA_BENCH_COMPILE=1`
  compiles the training forward on CUDA (recorded in the job info).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from agiqa_bench.clip import CLIP_MEAN, CLIP_STD
from agiqa_bench.errors import ConfigError
from agiqa_bench.batches import (
    ImageBank,
    crops_at,
    multi_crops,
    normalise,
    on_device_if_fits,
    to_device,
    unknown,
)
from agiqa_bench.params import from_config
from agiqa_bench.records import Item

SELECTIONS = ("val", "last", "test-oracle")
LOSSES = ("mse", "l1")
OPTIMIZERS = ("adamw", "adam", "sgd")
LR_SCHEDULES = ("constant", "step", "cosine")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: Device types on which `amp=True` turns bf16 autocast on.  CUDA only: CPU numbers are computed in float32
#: (the tests add "cpu" to run the CUDA code path on a CPU).
AUTOCAST_DEVICE_TYPES = {"cuda"}


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


def no_decay_ids(model) -> set[int]:
    """ids of the parameters weight decay leaves alone: biases, the parameters of norm layers, every 1-d one."""
    import torch

    norms = (torch.nn.modules.batchnorm._NormBase, torch.nn.LayerNorm, torch.nn.GroupNorm)
    out = {id(p) for name, p in model.named_parameters() if p.ndim < 2 or name.rsplit(".", 1)[-1] == "bias"}
    for m in model.modules():
        if isinstance(m, norms):
            out.update(id(p) for p in m.parameters(recurse=False))
    return out


def decay_groups(model, parts: Sequence[tuple[Sequence[Any], float]], weight_decay: float, *,
                 decay_all: bool = False) -> list[dict]:
    """Optimizer groups, one {params, lr, weight_decay} per (params, lr) part, in order.

    With weight_decay > 0 (and not `decay_all`), each part's biases, norm-layer and 1-d parameters
    (`no_decay_ids`) move to a group of their own right after it, same lr, weight_decay 0; a part left
    with nothing to decay then keeps that group only.  weight_decay == 0 (or `decay_all`): exactly one
    group per part, as given (empty ones included), so the optimizer is the same as before.
    """
    skip = no_decay_ids(model) if weight_decay and not decay_all else set()
    groups = []
    for params, lr in parts:
        params = list(params)
        keep = [p for p in params if id(p) not in skip]
        rest = [p for p in params if id(p) in skip]
        if keep or not rest:
            groups.append({"params": keep, "lr": lr, "weight_decay": weight_decay})
        if rest:
            groups.append({"params": rest, "lr": lr, "weight_decay": 0.0})
    return groups


def make_optimizer(groups: list[dict], config: TrainConfig):
    import torch

    if config.optimizer == "adam":
        return torch.optim.Adam(groups, lr=config.lr, betas=(0.9, 0.999), eps=1e-8)
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum)
    if config.optimizer == "adamw":
        return torch.optim.AdamW(groups, betas=(0.9, 0.999), eps=1e-8)
    raise unknown("optimizer", config.optimizer, OPTIMIZERS)


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
    #: GPU speed-ups this fit used, each True when on (compile, channels_last, bank_on_device); {} on CPU
    runtime: dict = field(default_factory=dict)


def predict_batches(model, images_u8, extras, device: str, batch_size: int, amp: bool, mean=CLIP_MEAN, std=CLIP_STD,
                    *, crop_size: int = 0, crops: int = 0, crop_mode: str = "grid", seed: int = 0, forward=None):
    """Predictions (N, K) in eval mode; with `crops` > 0, the mean over `crops` crops of `crop_size` per image.

    Random test crops are drawn from `seed`, so the same call gives the same scores.
    At most `batch_size` crops go through the model at once.  `forward` (default `model`) is what is
    called (a compiled model); the outputs are float32, collected on the device and copied back once.
    """
    import torch

    from agiqa_bench.amp import use_channels_last

    model.eval()
    forward = forward or model
    outs = []
    n = max(1, crops) if crop_size else 1
    step = max(1, batch_size // n)
    rng = np.random.default_rng(seed)
    channels_last = use_channels_last(model, device)
    (images_u8, *extras), _ = on_device_if_fits([images_u8, *extras], device)
    with torch.no_grad():
        for start in range(0, len(images_u8), step):
            x = images_u8[start:start + step]
            if crop_size and crops:
                x = multi_crops(x, crop_size, crops, crop_mode, rng)
            x = normalise(to_device(x, device), mean, std)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            args = [e[start:start + step] for e in extras]
            args = [to_device(a.repeat_interleave(n, 0) if n > 1 else a, device) for a in args]
            with _autocast(device, amp):
                y = forward(x, *args)
            outs.append(y.float().reshape(len(x) // n, n, -1).mean(1))
    pred = torch.cat(outs).cpu().numpy().astype(np.float64)
    return pred.reshape(len(images_u8), -1)


def _autocast(device: str, amp: bool):
    """bf16 autocast for `device`'s type when `amp` and that type is in `AUTOCAST_DEVICE_TYPES`."""
    import contextlib

    import torch

    kind = torch.device(device).type
    if amp and kind in AUTOCAST_DEVICE_TYPES:
        return torch.autocast(kind, dtype=torch.bfloat16)
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
    from agiqa_bench.amp import maybe_compile, use_channels_last

    extras = extras or (lambda items: [])
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model.to(device)
    channels_last = use_channels_last(model, device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    forward = maybe_compile(model, device)
    x_train = ImageBank.get(train, config.image_size)
    e_train = extras(train)
    y_train = torch.tensor([[it.targets[t] for t in targets] for it in train], dtype=torch.float32).to(device)
    watch = val if config.selection == "val" else oracle if config.selection == "test-oracle" else None
    x_watch = e_watch = None
    if watch:
        x_watch, e_watch = ImageBank.get(watch, config.image_size), extras(watch)
        y_watch = np.array([[it.targets[t] for t in targets] for it in watch], dtype=np.float64)
    # the image bank (and the extras) on the GPU when they fit; on CPU nothing moves
    bank = [x_train, *e_train] + ([x_watch, *e_watch] if watch else [])
    bank, on_device = on_device_if_fits(bank, device)
    x_train, e_train = bank[0], bank[1:1 + len(e_train)]
    if watch:
        x_watch, e_watch = bank[1 + len(e_train)], bank[2 + len(e_train):]
    e_train = [e.to(device) for e in e_train]
    optimizer = make_optimizer(optimizer_groups, config)
    base_lrs = [float(g["lr"]) for g in optimizer.param_groups]
    loss_fn = torch.nn.functional.l1_loss if config.loss == "l1" else torch.nn.functional.mse_loss
    test_crops = {"crop_size": config.crop_size if config.test_crops else 0, "crops": config.test_crops,
                  "crop_mode": config.test_crop_mode, "seed": seed}
    n_seen = len(train) * config.crops_per_image
    batch = min(config.batch_size, n_seen)
    best_score, best_epoch, best_state, history = float("-inf"), config.epochs - 1, None, []
    runtime = {k: True for k, on in (("compile", forward is not model), ("channels_last", channels_last),
                                     ("bank_on_device", on_device)) if on}
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
        starts = range(0, len(order) - batch + 1, batch)  # drop_last, as the reference
        # the epoch's random draws, from the CPU generator in the order the steps used to draw them
        # (each step: its crop positions, then its flips), sent to the device once
        crop_pos, flips = [], []
        for _ in starts:
            if config.crop_size:
                crop_pos.append(rng.integers(0, config.image_size - config.crop_size + 1, (batch, 2)))
            if config.hflip:
                flips.append(rng.random(batch) < 0.5)
        order_d = to_device(torch.from_numpy(order), device)  # indexes the targets and extras
        order_x = order_d if x_train.device == order_d.device else torch.from_numpy(order)  # indexes the bank
        flips_d = to_device(torch.from_numpy(np.stack(flips)), device) if flips else None
        losses = torch.empty(len(starts), dtype=torch.float32, device=device)
        for k, start in enumerate(starts):
            idx = order_d[start:start + batch]
            x = x_train[order_x[start:start + batch]]
            if config.crop_size:
                x = crops_at(x, config.crop_size, crop_pos[k])
            x = to_device(x, device)
            if config.hflip:
                x = torch.where(flips_d[k].view(-1, 1, 1, 1), x.flip(-1), x)
            x = normalise(x, mean, std)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            args = [e[idx] for e in e_train]
            with _autocast(device, config.amp):
                pred = forward(x, *args)
            loss = loss_fn(pred.float().reshape(batch, -1), y_train[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses[k] = loss.detach()
        # one read of the epoch's losses (float64 mean of the float32 values, as per-step reads gave)
        losses = losses.cpu().numpy().astype(np.float64)
        record = {"epoch": epoch, "train_loss": float(np.mean(losses)) if len(losses) else float("nan"),
                  "lr": [float(g["lr"]) for g in optimizer.param_groups]}
        if config.loss == "mse":
            record["train_mse"] = record["train_loss"]
        if watch:
            pred = predict_batches(model, x_watch, e_watch, device, config.eval_batch_size, config.amp, mean, std,
                                   forward=forward, **test_crops)
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
    return FitResult(best_epoch=best_epoch, history=history, runtime=runtime)


# -- the trainable-torch method base ----------------------------------------------------------
from agiqa_bench.method import Method, SelectsEpochs  # noqa: E402  (method imports nothing from here)


class TorchRegressor(SelectsEpochs, Method):
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
        self.info: dict = {}

    # -- hooks ----------------------------------------------------------------------------------
    def train_config(self) -> TrainConfig:
        raise NotImplementedError

    def rebuild(self, state: dict):
        """The model's architecture for `load_checkpoint_state` (no pretrained weights: `state` holds them)."""
        raise NotImplementedError

    def extras(self, items: Sequence[Item]) -> list:
        """Per-item tensors the model takes besides the pixels (IP-IQA: prompt tokens)."""
        return []

    def predict_options(self, cfg: TrainConfig) -> dict:
        """Keyword arguments of `predict_batches` (normalisation, test crops)."""
        return {}

    # -- shared ---------------------------------------------------------------------------------
    def checkpoint_state(self) -> dict:
        """The trained network's tensors (`agiqa_bench.checkpoints`)."""
        if self.model is None:
            raise RuntimeError(f"{self.spec.name}: no fitted model to keep")
        return {"state_dict": {k: v.detach().cpu() for k, v in self.model.state_dict().items()}}

    def load_checkpoint_state(self, state: dict) -> None:
        from agiqa_bench.checkpoints import load_tensors

        model = self.rebuild(state)
        load_tensors(model, state, self.name)
        self.model = model.eval()

    def predict(self, items: Sequence[Item]) -> np.ndarray:
        if self.model is None:
            raise RuntimeError(f"{self.spec.name}: predict called before fit")
        cfg = self.train_config()
        images = ImageBank.get(items, cfg.image_size)
        return predict_batches(self.model, images, self.extras(items), self.context.device, cfg.eval_batch_size,
                               cfg.amp, **self.predict_options(cfg))
