"""HyperIQA (Su et al., CVPR 2020) in pyiqa's HyperNet architecture layout, trained per split.

Architecture: our implementation (`baselines.archs.hypernet.HyperNetNet`) of
pyiqa's `HyperNet` layout: an ImageNet ResNet-50
(timm, `features_only`); the local distortion-aware (LDA) module pools stages
1-4 into a 224-d vector; a hyper network (1x1 convs 2048 -> 1024 -> 512 -> 112
on the stage-4 map) generates the weights and biases of a target network
224 -> 112 -> 56 -> 28 -> 14 (sigmoid) -> K that maps the LDA vector to the
scores (K = one output per target, the targets predicted jointly).

`HyperNetNet` has pyiqa's module names (so pyiqa's HyperIQA checkpoints
fit; parity with pyiqa is tested in tests/test_archs_parity.py when it is
installed), downloads nothing itself, and loads the backbone through
`baselines.deep` (`backbone_weights`: `imagenet` = torchvision's IMAGENET1K_V1
file, the weights the official code loads through torchvision's model zoo, not
timm's newer default; a local file; or "" for random init).  One
generalisation: the LDA average pools are adaptive (8/4/2/1 output cells) and
the stage-4 map is pooled to 7 x 7 for the hyper network, so crops other than
224 px work; at 224 px this is the original network (the pools average the
same cells; outputs equal to pyiqa's up to float rounding).  The harness feeds
224 crops and averages test crops, so `forward` scores one crop (pyiqa's
eval-mode 25-crop grid is not used).

Official recipe (SSL92/hyperIQA: train_test_IQA.py, HyerIQASolver.py,
data_loader.py), the default here:

- each epoch, 25 random 224 x 224 crops of every training image (+ flip), of
  the image resized to 512 x 384 for KonIQ (here: the 512 x 512 resize);
- Adam, weight decay 5e-4 (L2), batch 96, 16 epochs, L1 loss, ImageNet mean/std;
- learning rates: backbone 2e-5 throughout; hyper network and LDA x10 = 2e-4
  in epochs 1-7, then 2e-5 / 10^floor((t-1)/6) x (10 until epoch 9, then 1):
  2e-5 in epochs 8-10, 2e-6 in 11-13, 2e-7 in 14-16 (`lr_schedule=hyperiqa`);
  Adam is rebuilt (fresh moments) every epoch, as the official loop does;
- test score: mean over 25 random 224 crops of each image.
  The official loop, by a bug (SSL92/hyperIQA#32: the hyper-network parameters
  are a consumed `filter` when Adam is rebuilt), trains only the backbone after
  the first epoch; we train what the paper describes (all parameters, every
  epoch).  Selection: validation groups by default; `test-oracle` = the
  official best epoch on the test part (labelled in reports).
- targets: min-max scaled MOS mapped back by a fixed output layer
  (`mos_scaling=minmax`; loss in MOS units, Adam unaffected; `none` = raw).

On the built-in `synthetic` set (96 px; see the registry): random init
(offline), 64 px crops, 2 crops per image per epoch, 4 random test crops, batch
16, 3 epochs, lr 1e-4 (x10 head), constant, Adam kept across epochs.  Minutes
per repeat on a CPU: not in the default run.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, ClassVar

from agiqa_bench.errors import ConfigError
from agiqa_bench.method import MethodSpec, Weights
from agiqa_bench.params import param, with_defaults
from agiqa_bench.training import LR_SCHEDULES, TrainConfig
from baselines.deep import IMAGENET_RESNET50, DeepIQAMethod, DeepIQAParams

if TYPE_CHECKING:
    from torch import nn

SPEC = MethodSpec(
    name="hypernet",
    family="deep",
    factory="baselines.hypernet:HyperIQAMethod",
    kind="trainable",
    summary="HyperIQA: ImageNet ResNet-50 whose content features generate the weights of a small quality "
            "network; 25 random 224 crops per image (official recipe); needs ImageNet ResNet-50 weights "
            "(random init on synthetic); GPU-sized.",
    joint_targets=True,
    weights=(Weights("ImageNet ResNet-50 (torchvision IMAGENET1K_V1, resnet50-0676ba61.pth)", "backbone_weights",
                     "downloaded by torchvision's URL into the torch hub cache on first use; offline, pass a local "
                     "copy with --set hypernet.backbone_weights=PATH",
                     check="baselines.deep:resnet50_available"),),
    aliases=("hyperiqa",),
    reference="Su et al., CVPR 2020; SSL92/hyperIQA; pyiqa hypernet_arch",
    recipes={"*": "SSL92/hyperIQA train_test_IQA.py: one recipe for every dataset (only the resize before cropping "
                  "differs, KonIQ 512x384, BID 512x512); no AGIQA recipe exists"},
    default_run=False,  # ResNet-50 on 25 x 224 crops per image: GPU work
    # random init (offline), 2 crops of 64 px per image and epoch, 4 test crops, 3 epochs: minutes on a CPU
    dataset_defaults={"synthetic": {"backbone_weights": "", "image_size": 96, "crop_size": 64,
                                    "crops_per_image": 2, "test_crops": 4, "batch_size": 16, "epochs": 3,
                                    "lr": 1e-4, "lr_schedule": "constant", "reset_optimizer": False}},
    smoke={"backbone_weights": "", "image_size": 48, "crop_size": 32, "crops_per_image": 1, "test_crops": 2,
           "epochs": 1, "batch_size": 8, "selection": "last"},
)

def hyperiqa_lr(epoch: int, base_lr: float, ratio: float, backbone: bool) -> float:
    """Learning rate of the official loop in `epoch` (0-based): set after each epoch t from t // 6 and t > 8."""
    if backbone:
        return base_lr
    if epoch == 0:
        return base_lr * ratio
    t = epoch - 1
    return base_lr / 10 ** (t // 6) * (ratio if t <= 8 else 1.0)


@dataclass(frozen=True)
@with_defaults(image_size=512, crop_size=224, crops_per_image=25, test_crops=25, test_crop_mode="random", epochs=16,
               batch_size=96, optimizer="adam", lr=2e-5, head_lr_scale=10.0, weight_decay=5e-4, loss="l1",
               reset_optimizer=True, eval_batch_size=100)
class HyperIQAParams(DeepIQAParams):
    """The official HyperIQA recipe (see the module docstring)."""

    lr_schedule: str = param("hyperiqa", choices=(*LR_SCHEDULES, "hyperiqa"),
                             help="per-epoch learning-rate schedule; hyperiqa: the official loop's")
    backbone_weights: str = param("imagenet", help='imagenet | /path/to/resnet50-0676ba61.pth | "" (random)')


class HyperIQAMethod(DeepIQAMethod):
    params: ClassVar[type] = HyperIQAParams
    weight_params: ClassVar[dict] = {"backbone_weights": IMAGENET_RESNET50}
    custom_schedules: ClassVar[tuple[str, ...]] = ("hyperiqa",)

    def build(self, num_outputs: int, weights: dict) -> nn.Module:
        from baselines.archs.hypernet import HyperNetNet

        return HyperNetNet(num_outputs, weights["backbone_weights"], self.spec.name)

    def is_head(self, name: str) -> bool:
        return not name.startswith("base_model.")  # LDA + hyper network: lr x head_lr_scale

    def lr_at(self, groups: list[dict], cfg: TrainConfig) -> Callable[[int, int], float] | None:
        if self.config["lr_schedule"] != "hyperiqa":
            return None
        if len(groups) != 2:
            raise ConfigError("lr_schedule=hyperiqa needs the backbone and the hyper network as two groups")
        return lambda epoch, i: hyperiqa_lr(epoch, cfg.lr, cfg.head_lr_scale, backbone=(i == 0))
