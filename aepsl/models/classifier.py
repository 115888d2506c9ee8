"""The CAM classifier: backbone -> 1x1 class convolution -> global average pooling."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .backbones import build_backbone


class CAMClassifier(nn.Module):
    """Image-level multi-label classifier whose class maps are the CAMs.

    Global average pooling followed by a linear layer equals a 1x1 convolution followed by
    global average pooling, so the per-pixel class scores before pooling are exactly the
    class activation maps of Zhou et al. (2016).
    """

    def __init__(self, num_classes: int, backbone: str = "small", weights: str = "",
                 depth: str = "full", width: int = 32, dropout: float = 0.0, frozen: int = 0):
        super().__init__()
        self.backbone = build_backbone(backbone, weights, depth=depth, width=width, frozen=frozen)
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()
        self.classifier = nn.Conv2d(self.backbone.out_channels, num_classes, 1, bias=False)
        nn.init.kaiming_normal_(self.classifier.weight, nonlinearity="linear")
        self.num_classes = num_classes

    def class_maps(self, x: torch.Tensor) -> torch.Tensor:
        """Per-pixel class scores [B, C, H/8, W/8] (before pooling)."""
        return self.classifier(self.dropout(self.backbone(x)))

    def forward(self, x: torch.Tensor, maps: bool = False):
        """Image-level logits [B, C]; with ``maps=True`` also the class maps (logits, maps), so a
        loss that needs both goes through ``forward`` (as DistributedDataParallel requires)."""
        m = self.class_maps(x)
        logits = m.mean(dim=(2, 3))
        return (logits, m) if maps else logits

    def cams(self, x: torch.Tensor) -> torch.Tensor:
        """Class activation maps: ReLU of the class maps, [B, C, H/8, W/8]."""
        return F.relu(self.class_maps(x))

    def param_groups(self) -> list[tuple[list[nn.Parameter], float]]:
        """(parameters, learning-rate multiplier): the new class layer learns 10x faster."""
        return [(list(self.backbone.parameters()), 1.0), (list(self.classifier.parameters()), 10.0)]
