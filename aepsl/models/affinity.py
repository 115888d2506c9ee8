"""AffinityNet (Ahn & Kwak, CVPR 2018): a per-pixel embedding whose distances are affinities.

Features of three depths of the backbone are each reduced by a 1x1 convolution, brought to
the size of the deepest (output stride 8), concatenated and mixed by another 1x1
convolution into an embedding f. The affinity of two pixels is
``a_ij = exp(-mean_c |f_i,c - f_j,c|)``, 1 for identical embeddings and towards 0 for far
apart ones (see :mod:`aepsl.methods.randomwalk`).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .backbones import build_backbone


class AffinityNet(nn.Module):
    def __init__(self, backbone: str = "small", weights: str = "", depth: str = "full", width: int = 32,
                 embed_dim: int = 128, frozen: int = 0):
        super().__init__()
        if embed_dim < 4:
            raise ValueError(f"parameter embed_dim must be >= 4, got {embed_dim}")
        self.backbone = build_backbone(backbone, weights, depth=depth, width=width, frozen=frozen)
        was_training = self.backbone.training
        self.backbone.eval()
        with torch.no_grad():
            channels = [t.shape[1] for t in self.backbone.levels(torch.zeros(1, 3, 32, 32))]
        self.backbone.train(was_training)
        widths = [embed_dim // 4, embed_dim // 4, embed_dim - 2 * (embed_dim // 4)]
        self.reduce = nn.ModuleList(nn.Conv2d(c, w, 1, bias=False) for c, w in zip(channels, widths))
        self.mix = nn.Conv2d(embed_dim, embed_dim, 1, bias=False)
        for m in [*self.reduce, self.mix]:
            nn.init.kaiming_normal_(m.weight)
        self.embed_dim = embed_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Embedding [B, embed_dim, H/8, W/8]."""
        levels = self.backbone.levels(x)
        size = levels[-1].shape[-2:]
        parts = []
        for conv, feat in zip(self.reduce, levels):
            if feat.shape[-2:] != size:
                feat = F.adaptive_avg_pool2d(feat, size)
            parts.append(F.elu(conv(feat)))
        return F.elu(self.mix(torch.cat(parts, 1)))

    def param_groups(self) -> list[tuple[list[nn.Parameter], float]]:
        new = list(self.reduce.parameters()) + list(self.mix.parameters())
        return [(list(self.backbone.parameters()), 1.0), (new, 10.0)]
