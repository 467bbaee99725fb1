"""CNNIQA (Kang, Ye, Li, Doermann, CVPR 2014) in pyiqa's architecture layout, trained per split.

Architecture: our implementation (`baselines.archs.cnniqa.CNNIQANet`) of
pyiqa's `CNNIQA` layout: conv 7x7 x 50 on RGB, global max and min pooling,
FC 800 -> ReLU -> dropout 0.5 -> FC 800 -> ReLU -> FC.  The last layer has one
output per target (all targets of the dataset are predicted jointly).  No
pretrained weights: it trains from scratch.  Same parameter names, same
initial weights for a seed and same outputs as pyiqa's `CNNIQA(pretrained=None)`
(tested in tests/test_archs_parity.py when pyiqa is installed).

Recipes (parameters; `--set cnniqa.KEY=VALUE`):

- default = pyiqa's training recipe for this architecture
  (options/train/CNNIQA/train_CNNIQA.yml): images resized to 512 x 512, random
  384 crops + horizontal flip, AdamW lr 1e-3 (weight decay 0.01, AdamW's
  default, which the yml leaves unset), batch 64, 50 epochs, MultiStep LR at
  epochs 10/20/30/40 x 0.5, MSE loss; tested on the whole 512 image (global
  pooling takes any size).  [0, 1] pixels without mean/std, as pyiqa.
- `cnniqa.kang` = the paper's patch recipe as in lidq92/CNNIQA: 32 x 32 patches
  after local contrast normalisation (3 x 3 window, C = 1 on the 0-255 scale),
  each patch regressing its image's MOS, L1 loss, Adam lr 1e-4, batch 128, no
  flip; the test score is the mean over the non-overlapping 32 px tiles (a 16 x
  16 grid of the 512 resize).  Deviations: RGB input (pyiqa's architecture;
  the paper uses grey), 256 random patches per image per epoch instead of the
  fixed tiling, 100 epochs instead of lidq92's 500.
- on the built-in `synthetic` set (96 px, see the registry): 48 px crops, batch
  16, 8 epochs, milestones 5/7 x 0.5; under ten seconds per repeat on one CPU
  thread (the 7 x 7 convolution over a large map is most of it).

Targets: the network predicts each target's MOS min-max scaled over the
training part (pyiqa's `mos_normalize`), mapped back to MOS units by a fixed
output layer, so the loss is in MOS units (`mos_scaling=none`: raw MOS, as
lidq92).  The epoch is selected on the validation groups (`selection=val`;
`test-oracle` = lidq92/pyiqa practice of the best epoch on the test part,
labelled in reports).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from agiqa_bench.method import MethodSpec
from agiqa_bench.params import param, with_defaults
from baselines.deep import DeepIQAMethod, DeepIQAParams

if TYPE_CHECKING:
    from torch import nn

SPEC = MethodSpec(
    name="cnniqa",
    default_run=True,
    family="deep",
    factory="baselines.cnniqa:CNNIQAMethod",
    kind="trainable",
    summary="CNNIQA: conv 7x7x50, max+min pooling, FC 800-800 (pyiqa's RGB architecture), trained from scratch "
            "per split with pyiqa's recipe; needs no weights; seconds per repeat on synthetic.",
    joint_targets=True,
    variants={
        # the paper's 32 px LCN patches, L1, mean over the non-overlapping tiles of the 512 resize (lidq92/CNNIQA)
        "kang": {"crop_size": 32, "crops_per_image": 256, "test_crops": 256, "test_crop_mode": "grid", "lcn": True,
                 "loss": "l1", "optimizer": "adam", "lr": 1e-4, "weight_decay": 0.0, "batch_size": 128,
                 "epochs": 100, "lr_schedule": "constant", "hflip": False},
    },
    reference="Kang, Ye, Li, Doermann, CVPR 2014; pyiqa cnniqa_arch and train_CNNIQA.yml; lidq92/CNNIQA (kang)",
    recipes={"*": "lidq92/CNNIQA: one config for every dataset (only data paths differ); no AGIQA recipe exists"},
    # 96 px images: 48 px crops, 8 epochs (LR x0.5 at 5 and 7): seconds per repeat on a CPU
    dataset_defaults={"synthetic": {"image_size": 96, "crop_size": 48, "batch_size": 16, "epochs": 8,
                                    "lr_milestones": "5,7"}},
    smoke={"image_size": 48, "crop_size": 32, "crops_per_image": 1, "test_crops": 4, "epochs": 1, "batch_size": 8,
           "selection": "last"},
)


@dataclass(frozen=True)
@with_defaults(image_size=512, crop_size=384, epochs=50, batch_size=64, optimizer="adamw", lr=1e-3, weight_decay=0.01,
               lr_schedule="step", lr_milestones="10,20,30,40", lr_gamma=0.5, loss="mse")
class CNNIQAParams(DeepIQAParams):
    """pyiqa's CNNIQA recipe (see the module docstring)."""

    lcn: bool = param(False, help="local contrast normalisation of the input (the paper's patches)")


class CNNIQAMethod(DeepIQAMethod):
    params: ClassVar[type] = CNNIQAParams
    mean = (0.0, 0.0, 0.0)  # pyiqa feeds CNNIQA [0, 1] pixels
    std = (1.0, 1.0, 1.0)

    def build(self, num_outputs: int, weights: dict) -> nn.Module:
        from baselines.archs.cnniqa import CNNIQANet

        return CNNIQANet(num_outputs, lcn=bool(self.config["lcn"]))
