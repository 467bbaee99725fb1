"""DBCNN's network: pyiqa's DBCNN built from state dicts (no downloads).

Imported by `baselines.dbcnn` when a model is built, so that reading the
method's spec (`agiqa-bench methods`) loads no model library.
"""

from __future__ import annotations

import torch
from pyiqa.archs.dbcnn_arch import DBCNN, SCNN
from torch import nn
from torchvision.models.vgg import cfgs, make_layers

from baselines.deep import load_into


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


class DBCNNNet(DBCNN):
    """pyiqa's DBCNN built without downloads: weights come as state dicts (None = random init).

    Inputs arrive normalised by the harness (ImageNet mean/std), so pyiqa's own
    `preprocess` is made the identity.
    """

    def __init__(self, num_outputs: int = 1, vgg_state: dict | None = None, scnn_state: dict | None = None,
                 method: str = "dbcnn"):
        nn.Module.__init__(self)  # not DBCNN.__init__: it downloads VGG-16 and S-CNN unconditionally
        self.features1 = vgg16_features(vgg_state, method)
        scnn = SCNN(use_bn=True)
        if scnn_state is not None:
            load_into(scnn, scnn_state, method, "scnn_weights", "DBCNN's S-CNN (pyiqa.archs.dbcnn_arch.SCNN)")
        self.features2 = scnn.features
        self.fc = nn.Linear(512 * 128, num_outputs)
        nn.init.kaiming_normal_(self.fc.weight.data)
        nn.init.constant_(self.fc.bias.data, 0.0)
        self.default_mean = torch.zeros(1, 3, 1, 1)
        self.default_std = torch.ones(1, 3, 1, 1)
