"""ResNet-50 regression baselines: random init (`resnet50`) and ImageNet init (`resnet50.imagenet`, the paper's ResNet50*).

Model: torchvision `resnet50` with `fc` replaced by Linear(2048, K), one output
per target (the targets predicted jointly).  `backbone_weights`: "" (random
init, the default), `imagenet` (torchvision's IMAGENET1K_V1 file, downloaded
the normal way into the torch hub cache; offline, a local copy:
`--set resnet50.backbone_weights=/path/to/resnet50-0676ba61.pth`), or a file.

Recipe: the AGIQA papers' ResNet50 rows come with no official code or
hyperparameters, so this is a plain fine-tuning recipe, chosen here and not
taken from them: 512 x 512 resize, random 384 crops + horizontal flip, AdamW,
weight decay 1e-4, batch 32, 30 epochs, cosine learning-rate decay, MSE in
MOS units on min-max scaled outputs (`mos_scaling`), ImageNet mean/std, test on the whole 512 image (global average
pooling takes any size).  Learning rate 1e-3 from random init; the `imagenet`
variant fine-tunes at 1e-4 with the new head at x10.

On the built-in `synthetic` set (96 px; see the registry): 80 px crops, batch
16, 5 epochs.  A minute or two per repeat on a CPU: not in the default run.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from agiqa_bench.method import MethodSpec, Weights
from agiqa_bench.params import param, with_defaults
from baselines.deep import IMAGENET_RESNET50, DeepIQAMethod, DeepIQAParams

if TYPE_CHECKING:
    from torch import nn

SPEC = MethodSpec(
    name="resnet50",
    family="deep",
    factory="baselines.resnet:ResNet50Method",
    kind="trainable",
    summary="ResNet-50 + linear head fine-tuned per split (plain recipe: the papers publish none); random init, "
            "or ImageNet init as resnet50.imagenet (the paper's ResNet50*, needs the weights); GPU-sized.",
    joint_targets=True,
    variants={"imagenet": {"backbone_weights": "imagenet", "lr": 1e-4, "head_lr_scale": 10.0}},
    weights=(Weights("ImageNet ResNet-50 (torchvision IMAGENET1K_V1, resnet50-0676ba61.pth), resnet50.imagenet "
                     "only", "backbone_weights",
                     "downloaded by torchvision's URL into the torch hub cache on first use; offline, pass a local "
                     "copy with --set resnet50.backbone_weights=PATH",
                     check="baselines.deep:resnet50_available", variants=("imagenet",)),),
    reference="He et al., CVPR 2016 (torchvision resnet50); AGIQA-1k/3k and IP-IQA ResNet50 rows (no code)",
    default_run=False,  # ResNet-50 on 384 px crops: GPU work
    # 80 px crops, 5 epochs: a minute or two per repeat on a CPU
    dataset_defaults={"synthetic": {"image_size": 96, "crop_size": 80, "batch_size": 16, "epochs": 5}},
    smoke={"backbone_weights": "", "image_size": 48, "crop_size": 32, "epochs": 1, "batch_size": 8,
           "selection": "last"},
)


@dataclass(frozen=True)
@with_defaults(image_size=512, crop_size=384, epochs=30, batch_size=32, optimizer="adamw", lr=1e-3, head_lr_scale=1.0,
               weight_decay=1e-4, lr_schedule="cosine", loss="mse")
class ResNet50Params(DeepIQAParams):
    """A plain fine-tuning recipe (see the module docstring)."""

    backbone_weights: str = param("", help='"" (random) | imagenet | /path/to/resnet50-0676ba61.pth')


class ResNet50Method(DeepIQAMethod):
    params: ClassVar[type] = ResNet50Params
    weight_params: ClassVar[dict] = {"backbone_weights": IMAGENET_RESNET50}

    def build(self, num_outputs: int, weights: dict) -> nn.Module:
        from baselines.archs.resnet import resnet50_regressor

        return resnet50_regressor(num_outputs, weights["backbone_weights"], self.spec.name)

    def is_head(self, name: str) -> bool:
        return name.startswith("fc.")
