"""HyperIQA's network: pyiqa's HyperNet without downloads, K outputs, crops of any size.

Imported by `baselines.hypernet` when a model is built, so that reading the
method's spec (`agiqa-bench methods`) loads no model library.
"""

from __future__ import annotations

import timm
import torch
import torch.nn.functional as F
from pyiqa.archs.hypernet_arch import HyperNet
from torch import nn

from agiqa_bench.amp import run_fp32
from baselines.deep import load_into

LDA_CELLS = (8, 4, 2, 1)  # AvgPool2d(7, stride 7) output sizes on the 224 px stage maps (56, 28, 14, 7)
FEATURE_SIZE = 7  # stage-4 map side at 224 px


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
        return run_fp32(self.target_network, lda, self.conv1(last))

    def target_network(self, lda: torch.Tensor, hyper: torch.Tensor) -> torch.Tensor:
        """The generated network 224 -> 112 -> 56 -> 28 -> 14 -> K on the LDA vector (float32: `run_fp32`)."""
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
