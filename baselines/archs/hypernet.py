"""HyperIQA's network (Su et al., CVPR 2020): our implementation, K outputs, crops of any size, no downloads.

A ResNet-50 (timm, `features_only`) reads the crop.  The local distortion-aware
(LDA) modules turn stages 1-4 into a 224-d vector (1 x 1 convolutions, average
pooling, linear layers: 16 + 16 + 16 + 176 values).  The hyper network (1 x 1
convolutions 2048 -> 1024 -> 512 -> 112 on the stage-4 map) generates, per
image, the weights (3 x 3 convolutions, reshaped) and biases (pooling + linear)
of a target network 224 -> 112 -> 56 -> 28 -> 14 (sigmoid) -> K, which maps the
LDA vector to the scores.

Module names and shapes follow pyiqa's `HyperNet` (so its HyperIQA checkpoints
load either way, K = 1); `tests/test_archs_parity.py` checks parameters and
outputs against pyiqa at 224 px when it is installed.  Nothing here imports pyiqa.

Imported by `baselines.hypernet` when a model is built, so that reading the
method's spec (`agiqa-bench methods`) loads no model library.
"""

from __future__ import annotations

import timm
import torch
import torch.nn.functional as F
from torch import nn

from agiqa_bench.amp import run_fp32
from baselines.deep import load_into

LDA_CELLS = (8, 4, 2, 1)  # AvgPool2d(7, stride 7) output sizes on the 224 px stage maps (56, 28, 14, 7)
FEATURE_SIZE = 7  # stage-4 map side at 224 px


class HyperNetNet(nn.Module):
    """HyperIQA's HyperNet with K outputs and crops of any size (the original network at 224 px).

    The backbone comes as a state dict (None = random init); nothing is
    downloaded.  Inputs arrive normalised by the harness (ImageNet mean/std):
    `preprocess` is the identity.
    """

    def __init__(self, num_outputs: int = 1, backbone_state: dict | None = None, method: str = "hypernet"):
        super().__init__()
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

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        """The identity: the harness normalises the inputs."""
        return x

    def forward_patch(self, x: torch.Tensor) -> torch.Tensor:
        """(B, K) scores of a batch of crops of any size (the stage-4 map is pooled to 7 x 7 when it differs)."""
        feats = self.base_model(self.preprocess(x))[1:]
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
