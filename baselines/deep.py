"""What the deep baselines (CNNIQA, DBCNN, HyperIQA, ResNet-50) share.

- `DeepIQAMethod`: the `Method` around one torch model trained by
  `agiqa_bench.training.fit_regressor`.  Every hyperparameter of the training
  loop is a method parameter (`--set cnniqa.epochs=10`), the model predicts
  every target of the dataset at once (one output per target, `joint_targets`,
  as IP-IQA), and the epoch is selected as IP-IQA selects it: `val` (default),
  `last`, or `test-oracle` (the official codes' best epoch on the test part;
  labelled in reports).
- The network predicts min-max scaled MOS (`mos_scaling=minmax`, as pyiqa's
  `mos_normalize`): a fixed affine output layer (`MOSScale`, from the training
  part's MOS range per target) maps it back, so predictions and the loss are in
  MOS units and a fresh network starts near the MOS range instead of at 0.
- Pretrained weights (ImageNet backbones, DBCNN's SCNN) come through
  `load_state_dict`, never through a library constructor: a parameter holds a
  tag (`imagenet`, `pyiqa`: downloaded the normal way into the torch hub cache
  and reused from there), a local file, or "" for random weights.  A missing
  file raises `MethodUnavailable` at the start of `fit`, naming the file and
  the `--set method.param=PATH` fix, and that `--set method.param=` trains
  from random weights instead.  With `HF_HUB_OFFLINE=1` (or
  `AGIQA_BENCH_OFFLINE=1`) nothing is downloaded: a file not in the cache is
  reported missing at once.

This module imports neither torch nor pyiqa at import time, so the weights
checks that `agiqa-bench methods` calls stay cheap.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Mapping, Sequence

import numpy as np

from agiqa_bench.errors import ConfigError, MethodUnavailable
from agiqa_bench.weights import Source, available, is_random, resolve
from agiqa_bench.records import Item
from agiqa_bench.params import param
from agiqa_bench.batches import CROP_MODES
from agiqa_bench.training import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    LOSSES,
    LR_SCHEDULES,
    OPTIMIZERS,
    SELECTIONS,
    FitResult,
    TorchRegressor,
    TrainConfig,
    decay_groups,
    fit_regressor,
)


#: torchvision's ImageNet weights (the files `resnet50(weights="IMAGENET1K_V1")` and `vgg16(weights=...)` fetch).
RESNET50_IMAGENET = Source("ImageNet ResNet-50 (torchvision ResNet50_Weights.IMAGENET1K_V1)",
                           url="https://download.pytorch.org/models/resnet50-0676ba61.pth")
VGG16_IMAGENET = Source("ImageNet VGG-16 (torchvision VGG16_Weights.IMAGENET1K_V1)",
                        url="https://download.pytorch.org/models/vgg16-397923af.pth")
#: DBCNN's S-CNN, pretrained on synthetic distortions (the official scnn.pkl, as re-hosted by pyiqa).
SCNN_PYIQA = Source("DBCNN's SCNN branch pretrained on synthetic distortions (as re-hosted by pyiqa)",
                    url="https://huggingface.co/chaofengc/IQA-PyTorch-Weights/resolve/main/DBCNN_scnn-7ea73d75.pth",
                    cache_folder="pyiqa")
#: The tag that names each of them in a method parameter (`backbone_weights=imagenet`, `scnn_weights=pyiqa`).
IMAGENET_RESNET50 = {"imagenet": RESNET50_IMAGENET}
IMAGENET_VGG16 = {"imagenet": VGG16_IMAGENET}
PYIQA_SCNN = {"pyiqa": SCNN_PYIQA}


def weights_available(value: Any, sources: Mapping[str, Source]) -> bool:
    """True when a parameter's weights are here: random init, a cached tag, or an existing file.

    False for a tag that is not cached yet: with internet it is downloaded on first use.
    """
    return available(value, sources=sources)


# "module:function" checks for the registry (`Weights.check`): they take the method's params.
def resnet50_available(params: dict) -> bool:
    return weights_available(params.get("backbone_weights", ""), IMAGENET_RESNET50)


def vgg16_available(params: dict) -> bool:
    return weights_available(params.get("backbone_weights", "imagenet"), IMAGENET_VGG16)


def scnn_available(params: dict) -> bool:
    return weights_available(params.get("scnn_weights", "pyiqa"), PYIQA_SCNN)


def random_weights_hint(method: str, param: str) -> str:
    """The other way out of a missing pretrained file, appended to the one-shaped weights message."""
    return f"--set {method}.{param}= trains from random weights instead."


def load_state_dict(value: Any, sources: Mapping[str, Source], method: str, param: str) -> dict | None:
    """A state dict for a parameter's value (its tag in `sources`, a file, or random), or None for random weights.

    A file that is missing (or a tag not cached offline) raises the resolver's `WeightsUnavailable`.
    """
    import torch

    if is_random(value):
        return None
    what = " or ".join(s.what for s in sources.values()) or "the pretrained weights"
    path = resolve(value, method=method, param=param, sources=sources, what=what,
                   hint=random_weights_hint(method, param))
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise MethodUnavailable(f"{method}.{param}: cannot read {path} as a torch state dict "
                                f"({type(exc).__name__}: {str(exc)[:200]}); give {what}") from None
    for key in ("state_dict", "params", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise MethodUnavailable(f"{method}.{param}: {path} holds no state dict; give {what}")
    return {k.removeprefix("module."): v for k, v in state.items()}


def load_into(module, state: dict, method: str, param: str, what: str, *, drop: tuple[str, ...] = ()) -> None:
    """`module.load_state_dict(state)` (keys starting with `drop` left out), with an error naming the parameter."""
    state = {k: v for k, v in state.items() if not k.startswith(drop)}
    try:
        module.load_state_dict(state)
    except RuntimeError as exc:
        raise MethodUnavailable(f"{method}.{param}: the weights do not fit {what} ({str(exc)[:300]})") from None


@functools.cache
def _mos_scale_class():
    import torch
    from torch import nn

    class MOSScale(nn.Module):
        """`net` followed by the fixed affine map y = offset + scale * output (per target)."""

        def __init__(self, net, offset, scale):
            super().__init__()
            self.net = net
            self.register_buffer("offset", torch.as_tensor(offset, dtype=torch.float32).view(1, -1))
            self.register_buffer("scale", torch.as_tensor(scale, dtype=torch.float32).view(1, -1))

        def forward(self, x):
            return self.net(x) * self.scale + self.offset

    return MOSScale


def mos_scale(net, offset, scale):
    """`net` whose outputs are mapped to MOS units by offset + scale * output (fixed, per target)."""
    return _mos_scale_class()(net, offset, scale)


@dataclass(frozen=True)
class DeepIQAParams:
    """The training-loop parameters every deep baseline has (each method changes the defaults, `with_defaults`);
    read into `agiqa_bench.training.TrainConfig` by name."""

    image_size: int = param(512, ge=1, help="square bicubic resize of every image, done once (ImageBank)")
    crop_size: int = param(0, ge=0, help="random training crops of this side (0: the whole image; <= image_size)")
    crops_per_image: int = param(1, ge=1, help="random crops of each training image per epoch")
    test_crops: int = param(0, ge=0, help="0: score the whole image; n: mean over n crops of crop_size")
    test_crop_mode: str = param("grid", choices=CROP_MODES, help="where the test crops are")
    hflip: bool = param(True, help="random horizontal flips in training")
    epochs: int = param(50, ge=1, help="training epochs")
    batch_size: int = param(32, ge=1, help="training batch size")
    optimizer: str = param("adamw", choices=OPTIMIZERS, help="adamw | adam (L2 weight decay) | sgd (with momentum)")
    lr: float = param(1e-4, gt=0, help="learning rate")
    head_lr_scale: float = param(1.0, ge=0, help="learning-rate multiplier of the head (see `is_head`)")
    weight_decay: float = param(0.0, ge=0, help="weight decay")
    momentum: float = param(0.9, ge=0, lt=1, help="SGD momentum (sgd only)")
    lr_schedule: str = param("constant", choices=LR_SCHEDULES, help="per-epoch learning-rate schedule")
    lr_milestones: str = param("", help="step schedule: comma-separated epochs")
    lr_gamma: float = param(0.1, gt=0, help="step schedule: learning-rate factor at each milestone")
    reset_optimizer: bool = param(False, help="rebuild the optimizer (fresh moments) at every epoch")
    loss: str = param("mse", choices=LOSSES, help="regression loss")
    mos_scaling: str = param("minmax", choices=("minmax", "none"),
                             help="minmax: the network predicts (MOS - min) / (max - min) of the training part")
    selection: str = param("val", choices=SELECTIONS,
                           help="epoch selection: val, last, or the official codes' test-oracle (labelled)")
    amp: bool = param(True, help="bf16 autocast on CUDA")
    eval_batch_size: int = param(64, ge=1, help="images per forward pass when scoring")


class DeepIQAMethod(TorchRegressor):
    """A torch regression model trained by `fit_regressor`; subclasses implement `build`.

    Subclass hooks:
    - `weight_params`: parameter name -> {tag: `weights.Source`} of each pretrained part;
    - `build(num_outputs, weights)`: the model, from the loaded state dicts;
    - `is_head(name)`: parameters trained at lr x `head_lr_scale`;
    - `train_model`: one `fit_regressor` call by default (DBCNN has two stages);
    - `lr_at`: an optional per-epoch, per-group learning rate (HyperIQA);
    - `fp32_head(net)`: the layers run in float32 under bf16 autocast (default: every `nn.Linear`).
    """

    params: ClassVar[type] = DeepIQAParams
    weight_params: ClassVar[dict[str, Mapping[str, Source]]] = {}
    #: `lr_schedule` values the subclass implements through `lr_at` (the loop itself then runs "constant").
    custom_schedules: ClassVar[tuple[str, ...]] = ()
    #: Weight decay on every parameter (the official recipes); False: none on biases, norm layers and 1-d ones.
    decay_all: ClassVar[bool] = True
    mean: ClassVar[tuple[float, float, float]] = IMAGENET_MEAN
    std: ClassVar[tuple[float, float, float]] = IMAGENET_STD

    def __init__(self, spec, config=None, context=None, *, name=None):
        super().__init__(spec, config, context, name=name)
        self.net = None  # the network `build` made; self.model adds its MOS scaling
        self.train_config().check()  # crops and milestones fail when the method is made, not after loading data

    # -- hooks ------------------------------------------------------------------------------
    def build(self, num_outputs: int, weights: dict[str, dict | None]):
        raise NotImplementedError

    def is_head(self, name: str) -> bool:
        return False

    def lr_at(self, groups: list[dict], cfg: TrainConfig) -> Callable[[int, int], float] | None:
        return None

    def fp32_head(self, net) -> None:
        """The head runs in float32 outside bf16 autocast: by default every `nn.Linear` of the network (the
        fully connected layers after the convolutional trunk; `agiqa_bench.amp.fp32_linears`)."""
        from agiqa_bench.amp import fp32_linears

        fp32_linears(net)

    def train_model(self, train, val, cfg: TrainConfig) -> list[FitResult]:
        return [self._fit(train, val, cfg, self.param_groups(cfg))]

    # -- pieces ---------------------------------------------------------------------------------
    def train_config(self, **changes) -> TrainConfig:
        if self.config["lr_schedule"] in self.custom_schedules:  # run by `lr_at` over a constant loop
            changes = {"lr_schedule": "constant", **changes}
        return TrainConfig.from_params(self.config, where=self.spec.name, **changes)

    def load_weights(self) -> dict[str, dict | None]:
        """Every pretrained part's state dict (None: random); MethodUnavailable when a file is missing."""
        return {param: load_state_dict(self.config[param], sources, self.spec.name, param)
                for param, sources in self.weight_params.items()}

    def param_groups(self, cfg: TrainConfig, names: Callable[[str], bool] | None = None) -> list[dict]:
        """[backbone, head] groups of the trainable parameters (those `names` selects, default all).

        Built by `training.decay_groups`, as IP-IQA's; with `decay_all` (the class default) weight decay
        applies to every parameter, biases and norm layers included, as the official recipes (pyiqa's
        AdamW, DBCNN's SGD/Adam, HyperIQA's Adam) do, so their default weight decays train as before."""
        body, head = [], []
        for name, p in self.net.named_parameters():
            if names is None or names(name):
                (head if self.is_head(name) else body).append(p)
        parts = [(body, cfg.lr), (head, cfg.lr * cfg.head_lr_scale)]
        groups = decay_groups(self.net, [(ps, lr) for ps, lr in parts if ps], cfg.weight_decay,
                              decay_all=self.decay_all)
        return [g for g in groups if g["params"]]

    def _fit(self, train, val, cfg: TrainConfig, groups: list[dict]) -> FitResult:
        return fit_regressor(self.model, groups, train, val, self.targets, cfg, device=self.context.device,
                             seed=self.context.seed, oracle=self._oracle, mean=self.mean, std=self.std,
                             lr_at=self.lr_at(groups, cfg))

    # -- fit / predict ------------------------------------------------------------------------------
    def fit(self, train: Sequence[Item], val: Sequence[Item], targets: Sequence[str]) -> None:
        import torch

        super().fit(train, val, targets)
        cfg = self.train_config()
        if cfg.selection == "val" and not val:
            raise ConfigError("selection 'val' needs a validation part; use --val-fraction > 0 or selection=last")
        weights = self.load_weights()  # before any training: a missing file is reported at once
        torch.manual_seed(self.context.seed)
        self.net = self.build(len(self.targets), weights)
        self.fp32_head(self.net)
        mos = np.array([[it.targets[t] for t in self.targets] for it in train], dtype=np.float64)
        if self.config["mos_scaling"] == "minmax" and len(mos):
            low, span = mos.min(0), np.ptp(mos, axis=0)
            self.model = mos_scale(self.net, low, np.where(span > 0, span, 1.0))
        else:
            self.model = mos_scale(self.net, np.zeros(len(self.targets)), np.ones(len(self.targets)))
        results = self.train_model(train, val, cfg)
        last = results[-1].history[-1]
        self.info = {"best_epoch": [r.best_epoch for r in results] if len(results) > 1 else results[0].best_epoch,
                     "selection": cfg.selection, "train_loss_last": last["train_loss"],
                     "pretrained": {p: str(self.config[p]) for p in self.weight_params},
                     **{k: v for r in results for k, v in r.runtime.items()}}  # GPU speed-ups used (compile, ...)

    def predict_options(self, cfg: TrainConfig) -> dict:
        return {"mean": self.mean, "std": self.std, "crop_size": cfg.crop_size if cfg.test_crops else 0,
                "crops": cfg.test_crops, "crop_mode": cfg.test_crop_mode, "seed": self.context.seed}

    # -- checkpoints (`agiqa_bench.checkpoints`) ------------------------------------------------------
    def rebuild(self, state: dict):
        """The network without its pretrained parts (the state holds every tensor), in its MOS scaling."""
        self.net = self.build(len(self.targets), {param: None for param in self.weight_params})
        self.fp32_head(self.net)
        return mos_scale(self.net, np.zeros(len(self.targets)), np.ones(len(self.targets)))
