"""CNNIQA's network (Kang, Ye, Li, Doermann, CVPR 2014): our implementation, in pyiqa's RGB layout.

One 7 x 7 convolution with 50 kernels, max and min pooling of each feature map
over the whole image (100 values), two fully connected layers of 800 units
with ReLU (dropout after the first) and a linear output layer with one unit
per target.  Module names, shapes and the order in which parameters are drawn
are those of `pyiqa.archs.cnniqa_arch.CNNIQA` built with `pretrained=None`, so
checkpoints load either way and a seed gives the same initial weights;
`tests/test_archs_parity.py` checks this against pyiqa when it is installed.
Nothing here imports pyiqa.

Imported by `baselines.cnniqa` when a model is built, so that reading the
method's spec (`agiqa-bench methods`) loads no model library.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

KERNEL_SIZE = 7
KERNELS = 50
HIDDEN = (800, 800)


def local_contrast_normalise(x: torch.Tensor, window: int = 3, c: float = 1.0 / 255) -> torch.Tensor:
    """(x - local mean) / (local std + c) per channel, over a `window` x `window` box (Kang et al.)."""
    pad = window // 2
    mu = F.avg_pool2d(x, window, 1, pad, count_include_pad=False)
    var = F.avg_pool2d(x * x, window, 1, pad, count_include_pad=False) - mu * mu
    return (x - mu) / (var.clamp_min(0).sqrt() + c)


class CNNIQANet(nn.Module):
    """CNNIQA with `num_outputs` outputs and optional local contrast normalisation of the input.

    Takes any image size (the pooling is global); inputs are used as given
    (the harness feeds [0, 1] pixels, as pyiqa does).
    """

    def __init__(self, num_outputs: int = 1, lcn: bool = False):
        super().__init__()
        self.conv1 = nn.Conv2d(3, KERNELS, KERNEL_SIZE)
        self.fc1 = nn.Linear(2 * KERNELS, HIDDEN[0])
        self.fc2 = nn.Linear(HIDDEN[0], HIDDEN[1])
        # The single-output layer is always drawn, then replaced when K > 1: the earlier pyiqa-based build did
        # so, and keeping the same draws keeps a seed's initial weights, hence the stored benchmark numbers.
        self.fc3 = nn.Linear(HIDDEN[1], 1)
        self.dropout = nn.Dropout(0.5)
        if num_outputs != 1:
            self.fc3 = nn.Linear(HIDDEN[1], num_outputs)
        self.lcn = lcn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.lcn:
            x = local_contrast_normalise(x)
        maps = self.conv1(x)
        whole = maps.shape[-2:]  # one pooling window covering the whole map
        pooled = torch.cat((F.max_pool2d(maps, whole), -F.max_pool2d(-maps, whole)), dim=1).flatten(1)
        hidden = self.dropout(F.relu(self.fc1(pooled)))
        return self.fc3(F.relu(self.fc2(hidden)))
