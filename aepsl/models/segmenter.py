"""DeepLab-LargeFOV style segmenter with a classification branch (for PSL).

backbone (output stride 8) -> 3x3 conv with a large dilation -> 1x1 conv -> per-pixel scores
over background + C classes.  The classification branch pools the backbone features and
predicts the C foreground classes' confidences (trained with a squared loss in PSL).
DeepLab-LargeFOV uses dilation 12 on 41x41 maps (321 px input); on our small maps the
dilation is a parameter (the receptive field should stay well inside the map).

``decoder="stride4"`` adds a light DeepLabv3+-style decoder: the backbone's stride-4 features,
projected to ``low_channels`` by a 1x1 conv, are concatenated with the head's features
(cut to ``decoder_channels`` by a 1x1 conv) upsampled to their size; two 3x3 convs follow and
the classifier scores at output stride 4 (``seg`` is then [B, C+1, H/4, W/4]). The
classification branch is the same either way.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .backbones import EfficientNetLite, ResNet50OS8, SmallCNN, VGG16LargeFOV, build_backbone

DECODERS = ("none", "stride4")


def _stride4_split(backbone: nn.Module) -> tuple[list, list, int]:
    """The backbone as two runs of modules, (up to its last stride-4 layer, the rest), and the
    channel count where they meet. Read from the backbone's existing modules (nothing new is
    registered), so ``levels()`` and every other user of the backbones stay as they are."""
    if isinstance(backbone, SmallCNN):   # conv, conv, pool, conv, conv, pool | ...
        f = list(backbone.features)
        return f[:6], f[6:], f[4][0].out_channels
    if isinstance(backbone, EfficientNetLite):
        stride, last = 2, None   # the stem has stride 2
        for i, block in enumerate(backbone.blocks):
            stride *= block._depthwise_conv.stride[0]
            if stride == 4:
                last = i
        blocks = list(backbone.blocks)
        return ([backbone.stem, *blocks[:last + 1]], [*blocks[last + 1:], backbone.head],
                blocks[last]._block_args.output_filters)
    if isinstance(backbone, VGG16LargeFOV):   # through conv3_3 (before the third pool)
        f = list(backbone.features)
        cut = backbone._level_ids[0] + 1
        return f[:cut], f[cut:], 256
    if isinstance(backbone, ResNet50OS8):   # through layer1
        return [backbone.stem, backbone.layers[0]], list(backbone.layers[1:]), 256
    raise ValueError(f"decoder 'stride4' does not know the backbone {type(backbone).__name__}")


def _run(modules: list, x: torch.Tensor) -> torch.Tensor:
    for m in modules:
        x = m(x)
    return x


class LargeFOVSegmenter(nn.Module):
    def __init__(self, num_classes: int, backbone: str = "small", weights: str = "", depth: str = "full",
                 width: int = 32, head_channels: int = 256, head_dilation: int = 12, dropout: float = 0.5,
                 decoder: str = "none", low_channels: int = 48, decoder_channels: int = 64, cls_lr: float = 1.0,
                 frozen: int = 0):
        super().__init__()
        if decoder not in DECODERS:
            raise ValueError(f"parameter decoder must be one of {DECODERS}, got {decoder!r}")
        self.cls_lr = cls_lr
        self.backbone = build_backbone(backbone, weights, depth=depth, width=width, frozen=frozen)
        c = self.backbone.out_channels
        self.head = nn.Sequential(
            nn.Conv2d(c, head_channels, 3, padding=head_dilation, dilation=head_dilation), nn.ReLU(inplace=True),
            nn.Dropout2d(dropout),
            nn.Conv2d(head_channels, head_channels, 1), nn.ReLU(inplace=True), nn.Dropout2d(dropout))
        self.decoder = decoder
        seg_in = head_channels
        if decoder == "stride4":
            self._pre, self._post, c4 = _stride4_split(self.backbone)
            self.low = nn.Sequential(nn.Conv2d(c4, low_channels, 1, bias=False), nn.BatchNorm2d(low_channels),
                                     nn.ReLU(inplace=True))
            # the head's features are cut to decoder_channels at stride 8 first: 3x3 convs over the
            # full 256 + 48 channels at stride 4 would cost the CPU more than the backbone itself
            self.top = nn.Sequential(nn.Conv2d(head_channels, decoder_channels, 1, bias=False),
                                     nn.BatchNorm2d(decoder_channels), nn.ReLU(inplace=True))
            self.fuse = nn.Sequential(
                nn.Conv2d(decoder_channels + low_channels, decoder_channels, 3, padding=1, bias=False),
                nn.BatchNorm2d(decoder_channels), nn.ReLU(inplace=True),
                nn.Conv2d(decoder_channels, decoder_channels, 3, padding=1, bias=False),
                nn.BatchNorm2d(decoder_channels), nn.ReLU(inplace=True))
            seg_in = decoder_channels
        self.seg = nn.Conv2d(seg_in, num_classes, 1)
        self.cls = nn.Linear(c, num_classes - 1)
        # every class starts at confidence 0.5, where the squared loss on a sigmoid has its largest
        # gradient; a random start can leave a class near 0 for its positive images, where the
        # gradient all but vanishes and the class stays unlearnt (see tests/test_psl.py)
        nn.init.zeros_(self.cls.weight)
        nn.init.zeros_(self.cls.bias)
        self.num_classes = num_classes

    def forward(self, x: torch.Tensor) -> dict:
        """``seg``: per-pixel logits [B, C+1, H/8, W/8] (H/4, W/4 with the stride-4 decoder);
        ``cls``: foreground class scores [B, C]."""
        if self.decoder == "none":
            feat = self.backbone(x)
            return {"seg": self.seg(self.head(feat)), "cls": self.cls(feat.mean(dim=(2, 3)))}
        low = _run(self._pre, x)
        feat = _run(self._post, low)
        top = F.interpolate(self.top(self.head(feat)), size=low.shape[-2:], mode="bilinear", align_corners=False)
        seg = self.seg(self.fuse(torch.cat([top, self.low(low)], 1)))
        return {"seg": seg, "cls": self.cls(feat.mean(dim=(2, 3)))}

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        """The classification branch alone: foreground class scores [B, C] from the backbone
        (the head and decoder, which only the per-pixel scores need, are skipped)."""
        feat = self.backbone(x) if self.decoder == "none" else _run(self._post, _run(self._pre, x))
        return self.cls(feat.mean(dim=(2, 3)))

    def param_groups(self) -> list[tuple[list[nn.Parameter], float]]:
        """(parameters, learning-rate multiplier): the new layers learn 10x faster than the
        backbone, the classification branch ``cls_lr`` times."""
        new = list(self.head.parameters()) + list(self.seg.parameters())
        if self.decoder != "none":
            new += [*self.top.parameters(), *self.low.parameters(), *self.fuse.parameters()]
        return [(list(self.backbone.parameters()), 1.0), (new, 10.0), (list(self.cls.parameters()), self.cls_lr)]
