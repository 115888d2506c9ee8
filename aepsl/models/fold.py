"""Batch norm folded into the convolution before it, for inference.

In eval mode a BatchNorm2d right after a Conv2d is an affine map per channel, so it can be
merged into the convolution's weights and bias (``torch.nn.utils.fusion.fuse_conv_bn_eval``):
one pass over the feature map instead of two, the same numbers up to rounding.
"""
from __future__ import annotations

import copy

from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """An eval-mode copy of ``model`` in which every BatchNorm2d that directly follows a Conv2d
    among its parent's children (in definition order, as in our backbones' forward passes) is
    folded into that convolution and replaced by ``nn.Identity``. ``model`` is left unchanged."""
    out = copy.deepcopy(model).eval()
    for parent in out.modules():
        children = list(parent.named_children())
        for (name_a, a), (name_b, b) in zip(children, children[1:]):
            if (isinstance(a, nn.Conv2d) and type(b) is nn.BatchNorm2d and b.num_features == a.out_channels
                    and b.track_running_stats and b.running_mean is not None):
                setattr(parent, name_a, _fused(a, b))
                setattr(parent, name_b, nn.Identity())
    return out


def _fused(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    fused = fuse_conv_bn_eval(conv, bn)
    fused.__class__ = type(conv)   # keeps a dynamic-padding convolution's forward
    return fused
