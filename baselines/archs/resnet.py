"""The ResNet-50 regressor: torchvision's ResNet-50 with a K-output head.

Imported by `baselines.resnet` when a model is built, so that reading the
method's spec (`agiqa-bench methods`) loads no model library.
"""

from __future__ import annotations

import torchvision
from torch import nn

from baselines.deep import load_into


def resnet50_regressor(num_outputs: int = 1, state: dict | None = None, method: str = "resnet50") -> nn.Module:
    model = torchvision.models.resnet50(weights=None)
    model.fc = nn.Identity()  # the ImageNet classifier is not loaded
    if state is not None:
        load_into(model, state, method, "backbone_weights", "torchvision's ResNet-50", drop=("fc.",))
    model.fc = nn.Linear(2048, num_outputs)
    return model
