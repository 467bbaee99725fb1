"""HyperIQA (Su et al., CVPR 2020) on pyiqa's HyperNet architecture, trained per split.

Architecture: `pyiqa.archs.hypernet_arch.HyperNet`: an ImageNet ResNet-50
(timm, `features_only`); the local distortion-aware (LDA) module pools stages
1-4 into a 224-d vector; a hyper network (1x1 convs 2048 -> 1024 -> 512 -> 112
on the stage-4 map) generates the weights and biases of a target network
224 -> 112 -> 56 -> 28 -> 14 (sigmoid) -> K that maps the LDA vector to the
scores (K = one output per target, the targets predicted jointly).

pyiqa's constructor always asks timm for ImageNet weights, so `HyperNetNet`
builds the same modules itself (same names, so pyiqa's HyperIQA checkpoints
fit) and loads the backbone through `baselines.deep` (`backbone_weights`:
`imagenet` = torchvision's IMAGENET1K_V1 file, the weights the official code
loads through torchvision's model zoo, not timm's newer default; a local file;
or "" for random init).  One generalisation: the LDA average pools are
adaptive (8/4/2/1 output cells) and the stage-4 map is pooled to 7 x 7 for the
hyper network, so crops other than 224 px work; at 224 px this is exactly the
original network.  The harness feeds 224 crops and averages test crops, so
`forward` scores one crop (pyiqa's eval-mode 25-crop grid is not used).

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

from typing import Any, Callable, ClassVar

import timm
import torch
import torch.nn.functional as F
from pyiqa.archs.hypernet_arch import HyperNet
from torch import nn

from agiqa_bench.errors import ConfigError
from agiqa_bench.training import TrainConfig
from baselines.deep import RESNET50_IMAGENET, TRAIN_PARAMS, DeepIQAMethod, load_into
from agiqa_bench.method import MethodSpec, Weights

#: This method's registry entry (registered through the `agiqa_bench.methods` entry points).
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
    default_run=False,  # ResNet-50 on 25 x 224 crops per image: GPU work
    # random init (offline), 2 crops of 64 px per image and epoch, 4 test crops, 3 epochs: minutes on a CPU
    dataset_defaults={"synthetic": {"backbone_weights": "", "image_size": 96, "crop_size": 64,
                                    "crops_per_image": 2, "test_crops": 4, "batch_size": 16, "epochs": 3,
                                    "lr": 1e-4, "lr_schedule": "constant", "reset_optimizer": False}},
    smoke={"backbone_weights": "", "image_size": 48, "crop_size": 32, "crops_per_image": 1, "test_crops": 2,
           "epochs": 1, "batch_size": 8, "selection": "last"},
)

LDA_CELLS = (8, 4, 2, 1)  # AvgPool2d(7, stride 7) output sizes on the 224 px stage maps (56, 28, 14, 7)
FEATURE_SIZE = 7  # stage-4 map side at 224 px


def hyperiqa_lr(epoch: int, base_lr: float, ratio: float, backbone: bool) -> float:
    """Learning rate of the official loop in `epoch` (0-based): set after each epoch t from t // 6 and t > 8."""
    if backbone:
        return base_lr
    if epoch == 0:
        return base_lr * ratio
    t = epoch - 1
    return base_lr / 10 ** (t // 6) * (ratio if t <= 8 else 1.0)


class HyperNetNet(HyperNet):
    """pyiqa's HyperNet without downloads, with K outputs and crops of any size (exact at 224 px)."""

    def __init__(self, num_outputs: int = 1, backbone_state: dict | None = None, method: str = "hypernet"):
        nn.Module.__init__(self)  # not HyperNet.__init__: it asks timm for pretrained weights unconditionally
        self.base_model = timm.create_model("resnet50", pretrained=False, features_only=True)
        if backbone_state is not None:
            load_into(self.base_model, backbone_state, method, "backbone_weights", "a ResNet-50", drop=("fc.",))
        lda_out, hyper_in, target_in = 16, 112, 224
        self.hyper_fc_channels = [112, 56, 28, 14, num_outputs]
        self.num_crop = 1
        self.lda_modules = nn.ModuleList([
            nn.Sequential(nn.Conv2d(256, 16, 1, bias=False), nn.AdaptiveAvgPool2d(8), nn.Flatten(),
                          nn.Linear(16 * 64, lda_out)),
            nn.Sequential(nn.Conv2d(512, 32, 1, bias=False), nn.AdaptiveAvgPool2d(4), nn.Flatten(),
                          nn.Linear(32 * 16, lda_out)),
            nn.Sequential(nn.Conv2d(1024, 64, 1, bias=False), nn.AdaptiveAvgPool2d(2), nn.Flatten(),
                          nn.Linear(64 * 4, lda_out)),
            nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2048, target_in - lda_out * 3)),
        ])
        ch = self.hyper_fc_channels
        self.fc_w_modules = nn.ModuleList(
            [nn.Conv2d(hyper_in, int((target_in if i == 0 else ch[i - 1]) * ch[i] / FEATURE_SIZE ** 2), 3, padding=1)
             for i in range(4)]
            + [nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(hyper_in, ch[3] * ch[4]))])
        self.fc_b_modules = nn.ModuleList(
            [nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(hyper_in, ch[i])) for i in range(5)])
        self.conv1 = nn.Sequential(
            nn.Conv2d(2048, 1024, 1), nn.ReLU(inplace=True), nn.Conv2d(1024, 512, 1), nn.ReLU(inplace=True),
            nn.Conv2d(512, hyper_in, 1), nn.ReLU(inplace=True))
        self.global_pool = nn.Sequential()
        self.default_mean = torch.zeros(1, 3, 1, 1)  # the harness normalises (ImageNet mean/std)
        self.default_std = torch.ones(1, 3, 1, 1)

    def forward_patch(self, x: torch.Tensor) -> torch.Tensor:
        """(B, K) scores of a batch of crops (pyiqa's forward_patch without its 224-only assertion)."""
        feats = self.base_model(x)[1:]
        lda = torch.cat([m(f) for f, m in zip(feats, self.lda_modules)], dim=1)
        last = feats[-1]
        if last.shape[-2:] != (FEATURE_SIZE, FEATURE_SIZE):
            last = F.adaptive_avg_pool2d(last, FEATURE_SIZE)
        hyper = self.conv1(last)
        b = hyper.shape[0]
        h = lda.unsqueeze(1)
        for i in range(5):
            w = self.fc_w_modules[i](hyper).reshape(b, self.hyper_fc_channels[i], -1)  # (B, out, in)
            h = torch.bmm(h, w.transpose(1, 2)) + self.fc_b_modules[i](hyper).unsqueeze(1)
            if i < 4:
                h = torch.sigmoid(h)
        return h.reshape(b, -1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_patch(x)


class HyperIQAMethod(DeepIQAMethod):
    params: ClassVar[dict[str, Any]] = {
        **TRAIN_PARAMS,
        "backbone_weights": "imagenet",  # imagenet | /path/to/resnet50-0676ba61.pth | "" (random)
        "image_size": 512, "crop_size": 224, "crops_per_image": 25, "test_crops": 25, "test_crop_mode": "random",
        "epochs": 16, "batch_size": 96, "optimizer": "adam", "lr": 2e-5, "head_lr_scale": 10.0,
        "weight_decay": 5e-4, "loss": "l1", "lr_schedule": "hyperiqa", "reset_optimizer": True,
        "eval_batch_size": 100,
    }
    weight_params: ClassVar[dict] = {"backbone_weights": RESNET50_IMAGENET}
    custom_schedules: ClassVar[tuple[str, ...]] = ("hyperiqa",)

    def build(self, num_outputs: int, weights: dict) -> nn.Module:
        return HyperNetNet(num_outputs, weights["backbone_weights"], self.spec.name)

    def is_head(self, name: str) -> bool:
        return not name.startswith("base_model.")  # LDA + hyper network: lr x head_lr_scale

    def lr_at(self, groups: list[dict], cfg: TrainConfig) -> Callable[[int, int], float] | None:
        if self.config["lr_schedule"] != "hyperiqa":
            return None
        if len(groups) != 2:
            raise ConfigError("lr_schedule=hyperiqa needs the backbone and the hyper network as two groups")
        return lambda epoch, i: hyperiqa_lr(epoch, cfg.lr, cfg.head_lr_scale, backbone=(i == 0))
