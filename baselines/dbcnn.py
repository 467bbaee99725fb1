"""DBCNN (Zhang, Ma, Yan, Deng, Wang, TCSVT 2020) in pyiqa's architecture layout, trained per split.

Architecture: our implementation (`baselines.archs.dbcnn.DBCNNNet`, with our
`SCNN` and torchvision's VGG-16 layers) of pyiqa's `DBCNN` layout: ImageNet
VGG-16 conv layers (conv5_3, 512 channels) and the S-CNN branch pretrained on
synthetic distortions (128 channels), bilinear pooling to 512 x 128, signed
square root, L2 normalisation, a linear layer (one output per target).  The
parameter names are pyiqa's, so its checkpoints load, and the outputs equal
pyiqa's (tested in tests/test_archs_parity.py when pyiqa is installed).  The
weights are loaded through `baselines.deep` (parameters `backbone_weights` and
`scnn_weights`: a tag, a local file, or "" for random init); nothing is
downloaded by the network itself.  Offline, without the files, `fit` raises
`MethodUnavailable`.

Official recipe (zwx8981/DBCNN-PyTorch, DBCNN.py), the default here:

1. stage 1: VGG-16 and S-CNN frozen, only the linear layer trains: SGD lr 1e-3,
   momentum 0.9, weight decay 5e-4, 50 epochs (`fc_epochs`, `fc_lr`);
2. stage 2: from stage 1's selected epoch, everything trains: Adam lr 1e-5,
   weight decay 5e-4 (L2), 50 epochs;
3. batch 8, random 448 crops + horizontal flip (LIVE Challenge), MSE loss,
   ImageNet mean/std; test on the whole image.  Here the image is the 512 x 512
   resize (the official code trains on LIVE-C's 500 x 500 originals).

Each stage selects its epoch by `selection` (official: best SRCC on the test
part = `test-oracle`; default here: validation groups).  The official code
regresses raw MOS; here the network predicts min-max scaled MOS, mapped back by
a fixed output layer (`mos_scaling=minmax`; the loss stays in MOS units, so
Adam is unaffected, while stage 1's SGD steps differ by the MOS range;
`mos_scaling=none` is the official setting).

On the built-in `synthetic` set (96 px; see the registry) the preset is random
init (offline), 64 px crops, batch 16, 1 + 2 epochs, stage-2 lr 1e-4 (1e-5 is
for fine-tuning ImageNet weights).  A minute or two per repeat on a CPU: not
in the default run.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, ClassVar

from agiqa_bench.method import MethodSpec, Weights
from agiqa_bench.params import param, with_defaults
from agiqa_bench.training import OPTIMIZERS, TrainConfig
from baselines.deep import (
    IMAGENET_VGG16,
    PYIQA_SCNN,
    DeepIQAMethod,
    DeepIQAParams,
)

if TYPE_CHECKING:
    from torch import nn

SPEC = MethodSpec(
    name="dbcnn",
    family="deep",
    factory="baselines.dbcnn:DBCNNMethod",
    kind="trainable",
    summary="DBCNN: ImageNet VGG-16 x synthetic-distortion S-CNN bilinear pooling, FC then all layers trained per "
            "split (official two stages); needs VGG-16 and S-CNN weights (random init on synthetic); GPU-sized.",
    joint_targets=True,
    weights=(Weights("ImageNet VGG-16 (torchvision IMAGENET1K_V1, vgg16-397923af.pth)", "backbone_weights",
                     "downloaded by torchvision's URL into the torch hub cache on first use; offline, pass a local "
                     "copy with --set dbcnn.backbone_weights=PATH",
                     check="baselines.deep:vgg16_available"),
             Weights("DBCNN S-CNN pretrained on synthetic distortions (pyiqa DBCNN_scnn-7ea73d75.pth)",
                     "scnn_weights",
                     "downloaded from pyiqa's weights repository into the torch hub cache on first use; offline, "
                     "pass DBCNN_scnn-7ea73d75.pth or the official scnn.pkl with --set dbcnn.scnn_weights=PATH",
                     check="baselines.deep:scnn_available")),
    reference="Zhang, Ma, Yan, Deng, Wang, TCSVT 2020; zwx8981/DBCNN-PyTorch; pyiqa dbcnn_arch",
    recipes={"*": "zwx8981/DBCNN-PyTorch: one recipe for every dataset (only the training crop differs, LIVE 432, "
                  "LIVE-C 448); no AGIQA recipe exists"},
    default_run=False,  # VGG-16 at 448 px: GPU work; offline it runs only from random weights
    # random init (offline), 64 px crops, 1 FC-only + 2 full epochs: a minute or two per repeat on a CPU
    dataset_defaults={"synthetic": {"backbone_weights": "", "scnn_weights": "", "image_size": 96, "crop_size": 64,
                                    "batch_size": 16, "fc_epochs": 1, "epochs": 2, "lr": 1e-4,
                                    "eval_batch_size": 32}},
    smoke={"backbone_weights": "", "scnn_weights": "", "image_size": 48, "crop_size": 32, "fc_epochs": 1,
           "epochs": 1, "batch_size": 6, "selection": "last"},
)


@dataclass(frozen=True)
@with_defaults(image_size=512, crop_size=448, batch_size=8, loss="mse",
               # stage 2: everything
               epochs=50, optimizer="adam", lr=1e-5, weight_decay=5e-4, eval_batch_size=16)
class DBCNNParams(DeepIQAParams):
    """The official two-stage DBCNN recipe (see the module docstring)."""

    backbone_weights: str = param("imagenet", help='VGG-16: imagenet | /path/to/vgg16-397923af.pth | "" (random)')
    scnn_weights: str = param("pyiqa", help='S-CNN: pyiqa | /path/to/scnn.pkl or DBCNN_scnn-7ea73d75.pth | "" (random)')
    # stage 1: linear layer only
    fc_epochs: int = param(50, ge=0, help="stage 1 (the linear layer only) epochs; 0 skips it")
    fc_lr: float = param(1e-3, gt=0, help="stage 1 learning rate")
    fc_optimizer: str = param("sgd", choices=OPTIMIZERS, help="stage 1 optimizer")


class DBCNNMethod(DeepIQAMethod):
    params: ClassVar[type] = DBCNNParams
    weight_params: ClassVar[dict] = {"backbone_weights": IMAGENET_VGG16, "scnn_weights": PYIQA_SCNN}

    def build(self, num_outputs: int, weights: dict) -> nn.Module:
        from baselines.archs.dbcnn import DBCNNNet

        return DBCNNNet(num_outputs, weights["backbone_weights"], weights["scnn_weights"], self.spec.name)

    def train_model(self, train, val, cfg: TrainConfig):
        results = []
        fc_epochs = int(self.config["fc_epochs"])
        if fc_epochs > 0:
            for name, p in self.net.named_parameters():
                p.requires_grad_(name.startswith("fc."))
            stage1 = replace(cfg, epochs=fc_epochs, lr=float(self.config["fc_lr"]),
                             optimizer=self.config["fc_optimizer"], lr_schedule="constant")
            results.append(self._fit(train, val, stage1, self.param_groups(stage1, lambda n: n.startswith("fc."))))
            for p in self.net.parameters():
                p.requires_grad_(True)
        results.append(self._fit(train, val, cfg, self.param_groups(cfg)))
        return results
