"""DeepLab-LargeFOV style segmenter with a classification branch (for PSL).

backbone (output stride 8) -> 3x3 conv with a large dilation -> 1x1 conv -> per-pixel scores
over background + C classes.  The classification branch pools the backbone features and
predicts the C foreground classes' confidences (trained with a squared loss in PSL).
DeepLab-LargeFOV uses dilation 12 on 41x41 maps (321 px input); on our small maps the
dilation is a parameter (the receptive field should stay well inside the map).
"""
from __future__ import annotations

import torch
from torch import nn

from .backbones import build_backbone


class LargeFOVSegmenter(nn.Module):
    def __init__(self, num_classes: int, backbone: str = "small", weights: str = "", depth: str = "full",
                 width: int = 32, head_channels: int = 256, head_dilation: int = 12, dropout: float = 0.5):
        super().__init__()
        self.backbone = build_backbone(backbone, weights, depth=depth, width=width)
        c = self.backbone.out_channels
        self.head = nn.Sequential(
            nn.Conv2d(c, head_channels, 3, padding=head_dilation, dilation=head_dilation), nn.ReLU(inplace=True),
            nn.Dropout2d(dropout),
            nn.Conv2d(head_channels, head_channels, 1), nn.ReLU(inplace=True), nn.Dropout2d(dropout))
        self.seg = nn.Conv2d(head_channels, num_classes, 1)
        self.cls = nn.Linear(c, num_classes - 1)
        self.num_classes = num_classes

    def forward(self, x: torch.Tensor) -> dict:
        """``seg``: per-pixel logits [B, C+1, H/8, W/8]; ``cls``: foreground class scores [B, C]."""
        feat = self.backbone(x)
        return {"seg": self.seg(self.head(feat)), "cls": self.cls(feat.mean(dim=(2, 3)))}

    def param_groups(self) -> list[tuple[list[nn.Parameter], float]]:
        new = list(self.head.parameters()) + list(self.seg.parameters()) + list(self.cls.parameters())
        return [(list(self.backbone.parameters()), 1.0), (new, 10.0)]
