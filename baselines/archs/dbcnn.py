"""DBCNN's network (Zhang, Ma, Yan, Deng, Wang, TCSVT 2020): our implementation, weights from state dicts.

Two branches read the same image: the VGG-16 convolutional layers up to
conv5_3 (512 channels) and the S-CNN, a small network pretrained to classify
synthetic distortions, of which the convolutional part is kept (128 channels).
When the two maps differ in size the S-CNN map is resized bilinearly to the
VGG one; the outer products of the two feature vectors are averaged over the
positions (bilinear pooling, 512 x 128 values), square-rooted (the features
are non-negative after ReLU, so this is the signed square root), L2
normalised, and mapped to the scores by a linear layer.

Module names and shapes follow pyiqa's `DBCNN` and `SCNN` (and the official
zwx8981/DBCNN-PyTorch S-CNN checkpoint), so their checkpoints load either way;
`tests/test_archs_parity.py` checks parameters and outputs against pyiqa when
it is installed.  Nothing here imports pyiqa.

Imported by `baselines.dbcnn` when a model is built, so that reading the
method's spec (`agiqa-bench methods`) loads no model library.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.vgg import cfgs, make_layers

from baselines.deep import load_into

VGG_CHANNELS = 512  # conv5_3
SCNN_CHANNELS = 128  # the S-CNN's last convolution
# S-CNN convolutions (3 x 3, padding 1): (in, out, stride)
SCNN_CONVS = ((3, 48, 1), (48, 48, 2), (48, 64, 1), (64, 64, 2), (64, 64, 1), (64, 64, 2),
              (64, 128, 1), (128, 128, 1), (128, 128, 2))


def vgg16_features(state: dict | None, method: str = "dbcnn") -> nn.Sequential:
    """torchvision's VGG-16 `features` without the last max-pool (conv5_3 + ReLU), from a VGG-16 state dict.

    Only the convolutional part is built (torchvision's initialisation), not the
    120M-parameter classifier that DBCNN drops.
    """
    features = make_layers(cfgs["D"], batch_norm=False)
    for m in features.modules():
        if isinstance(m, nn.Conv2d):  # as torchvision.models.VGG initialises them
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            nn.init.constant_(m.bias, 0)
    if state is not None:
        state = {k.removeprefix("features."): v for k, v in state.items() if not k.startswith("classifier.")}
        load_into(features, state, method, "backbone_weights", "torchvision's VGG-16")
    return nn.Sequential(*list(features.children())[:-1])


def _conv_block(c_in: int, c_out: int, kernel: int, stride: int, padding: int, batch_norm: bool) -> list[nn.Module]:
    """Convolution [+ batch norm] + ReLU, as a flat list (the indices are the checkpoints' key names)."""
    norm = [nn.BatchNorm2d(c_out)] if batch_norm else []
    return [nn.Conv2d(c_in, c_out, kernel, stride, padding), *norm, nn.ReLU(inplace=True)]


class SCNN(nn.Module):
    """DBCNN's S-CNN: nine 3 x 3 convolutions (four of stride 2), global average pooling, two 1 x 1
    convolutions of 256 channels (the fully connected layers) and a linear classifier over `num_classes`
    distortion type x level classes (39 in the paper).  DBCNN keeps only `features`."""

    def __init__(self, use_bn: bool = True, num_classes: int = 39):
        super().__init__()
        self.use_bn = use_bn
        self.features = nn.Sequential(
            *[layer for c_in, c_out, stride in SCNN_CONVS for layer in _conv_block(c_in, c_out, 3, stride, 1, use_bn)])
        self.pooling = nn.AdaptiveAvgPool2d(1)
        self.projection = nn.Sequential(*_conv_block(SCNN_CHANNELS, 256, 1, 1, 0, use_bn),
                                        *_conv_block(256, 256, 1, 1, 0, use_bn))
        self.classifier = nn.Linear(256, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.projection(self.pooling(self.features(x))).flatten(1))


class DBCNNNet(nn.Module):
    """DBCNN with `num_outputs` outputs; the VGG-16 and S-CNN weights come as state dicts (None = random init).

    Nothing is downloaded here and nothing is frozen (the method chooses what
    trains).  Inputs arrive normalised by the harness (ImageNet mean/std), so
    the network applies no normalisation of its own (`preprocess` is the identity).
    """

    def __init__(self, num_outputs: int = 1, vgg_state: dict | None = None, scnn_state: dict | None = None,
                 method: str = "dbcnn"):
        super().__init__()
        self.features1 = vgg16_features(vgg_state, method)
        scnn = SCNN(use_bn=True)
        if scnn_state is not None:
            load_into(scnn, scnn_state, method, "scnn_weights", "DBCNN's S-CNN (baselines.archs.dbcnn.SCNN)")
        self.features2 = scnn.features
        self.fc = nn.Linear(VGG_CHANNELS * SCNN_CHANNELS, num_outputs)
        nn.init.kaiming_normal_(self.fc.weight)
        nn.init.constant_(self.fc.bias, 0.0)

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        """The identity: the harness normalises the inputs."""
        return x

    def bilinear_pool(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """(N, Ca x Cb): the outer products of the feature vectors of `a` and `b`, averaged over positions."""
        h, w = a.shape[-2:]
        if b.shape[-2:] != a.shape[-2:]:
            b = F.interpolate(b, (h, w), mode="bilinear", align_corners=True)
        return (torch.bmm(a.flatten(2), b.flatten(2).transpose(1, 2)) / (h * w)).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.preprocess(x)
        pooled = self.bilinear_pool(self.features1(x), self.features2(x))
        return self.fc(F.normalize(torch.sqrt(pooled + 1e-8)))
