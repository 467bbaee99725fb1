"""CNNIQA's network: pyiqa's CNNIQA with K outputs and optional local contrast normalisation.

Imported by `baselines.cnniqa` when a model is built, so that reading the
method's spec (`agiqa-bench methods`) loads no model library.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pyiqa.archs.cnniqa_arch import CNNIQA
from torch import nn


def local_contrast_normalise(x: torch.Tensor, window: int = 3, c: float = 1.0 / 255) -> torch.Tensor:
    """(x - local mean) / (local std + c) per channel, over a `window` x `window` box (Kang et al.)."""
    pad = window // 2
    mu = F.avg_pool2d(x, window, 1, pad, count_include_pad=False)
    var = F.avg_pool2d(x * x, window, 1, pad, count_include_pad=False) - mu * mu
    return (x - mu) / (var.clamp_min(0).sqrt() + c)


class CNNIQANet(CNNIQA):
    """pyiqa's CNNIQA with `num_outputs` outputs and optional local contrast normalisation of the input."""

    def __init__(self, num_outputs: int = 1, lcn: bool = False):
        super().__init__(pretrained=None)  # pretrained=None: random init, no download
        if num_outputs != 1:
            self.fc3 = nn.Linear(self.fc2.out_features, num_outputs)
        self.lcn = lcn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.lcn:
            x = local_contrast_normalise(x)
        return super().forward(x)
