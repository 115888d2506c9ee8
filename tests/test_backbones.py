"""Pretrained weights from local files: torchvision's published names and their hash check."""
from __future__ import annotations

import hashlib
import re

import pytest
import torch

from aepsl.models.backbones import TORCHVISION_WEIGHTS, ResNet50OS8, build_backbone, check_weights_hash


def test_published_names_match_torchvision():
    """The URLs we document are the ones torchvision's IMAGENET1K_V1 weights point at."""
    from torchvision.models import ResNet50_Weights, VGG16_Weights

    assert TORCHVISION_WEIGHTS["vgg16"] == VGG16_Weights.IMAGENET1K_V1.url
    assert TORCHVISION_WEIGHTS["resnet50"] == ResNet50_Weights.IMAGENET1K_V1.url
    for url in TORCHVISION_WEIGHTS.values():
        assert re.search(r"-[0-9a-f]{8}\.pth$", url)


def test_hash_in_the_name_is_checked(tmp_path):
    data = b"not really weights"
    prefix = hashlib.sha256(data).hexdigest()[:8]
    good = tmp_path / f"thing-{prefix}.pth"
    good.write_bytes(data)
    assert check_weights_hash(good) == prefix
    bad = tmp_path / "thing-00000000.pth"
    bad.write_bytes(data)
    with pytest.raises(ValueError, match=r"thing-00000000\.pth.*SHA-256.*00000000"):
        check_weights_hash(bad)
    plain = tmp_path / "mine.pth"
    plain.write_bytes(data)
    assert check_weights_hash(plain) is None                # other names: nothing to check


def test_resnet50_loads_a_torchvision_checkpoint_file(tmp_path):
    from torchvision.models import resnet50

    torch.manual_seed(0)
    state = resnet50(weights=None).state_dict()
    tmp = tmp_path / "download.pth"
    torch.save(state, tmp)
    path = tmp_path / f"resnet50-{hashlib.sha256(tmp.read_bytes()).hexdigest()[:8]}.pth"
    tmp.rename(path)
    net = build_backbone("resnet50", str(path))
    assert isinstance(net, ResNet50OS8)
    torch.testing.assert_close(net.stem[0].weight, state["conv1.weight"])
    torch.testing.assert_close(net.layers[3][2].conv3.weight, state["layer4.2.conv3.weight"])
    # the same bytes under a name whose hash disagrees: refused, naming the file
    wrong = tmp_path / "resnet50-0676ba61.pth"
    path.rename(wrong)
    with pytest.raises(ValueError, match="resnet50-0676ba61.pth"):
        build_backbone("resnet50", str(wrong))


def test_missing_weights_file_says_where_they_come_from(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"vgg16-397923af\.pth.*never downloads.*download\.pytorch\.org"):
        build_backbone("vgg16", str(tmp_path / "vgg16-397923af.pth"))


def test_unreadable_weights_file(tmp_path):
    path = tmp_path / "resnet50.pth"
    path.write_bytes(b"garbage")
    with pytest.raises(ValueError, match=r"resnet50\.pth cannot be read"):
        build_backbone("resnet50", str(path))


def test_static_padding_is_exact_and_leaves_no_stride1_dynamic_conv():
    """EfficientNet-Lite's stride-1 'same' convolutions get static padding: the same numbers at
    every input size (even, odd, non-square), no padded copy per convolution."""
    from efficientnet_lite_pytorch.utils import Conv2dDynamicSamePadding

    from aepsl.models import backbones as B

    torch.manual_seed(0)
    static = B.EfficientNetLite("lite0", "", "stage5").eval()
    dynamic_fn, B.static_same_padding = B.static_same_padding, lambda module: 0
    try:
        torch.manual_seed(0)
        dynamic = B.EfficientNetLite("lite0", "", "stage5").eval()
    finally:
        B.static_same_padding = dynamic_fn
    dynamic.load_state_dict(static.state_dict())
    left = [m for m in static.modules() if type(m) is Conv2dDynamicSamePadding]
    assert left and all(tuple(m.stride) == (2, 2) for m in left)   # only stride-2 ones stay dynamic
    assert sum(type(m) is Conv2dDynamicSamePadding for m in dynamic.modules()) > 3 * len(left)
    for size in [(32, 32), (45, 61), (24, 40)]:
        x = torch.randn(2, 3, *size)
        with torch.no_grad():
            assert torch.equal(static(x), dynamic(x)), size


@pytest.mark.parametrize("backbone,weights", [("efficientnet_lite0", "package"), ("small", "")])
def test_batchnorm_folding_for_inference(backbone, weights):
    """The folded copy gives the trained network's CAMs (relative difference below 1e-5) with no
    BatchNorm left, and the trained network itself is unchanged."""
    from aepsl.models import CAMClassifier
    from aepsl.models.fold import fold_batchnorm

    torch.manual_seed(0)
    model = CAMClassifier(3, backbone, weights, depth="stage5", width=8).eval()
    folded = fold_batchnorm(model)
    assert not [m for m in folded.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    x = torch.randn(2, 3, 48, 64)
    with torch.no_grad():
        a, b = model.cams(x), folded.cams(x)
    assert ((a - b).abs().max() / a.abs().max()).item() < 1e-5


@pytest.mark.parametrize("channels,kernel,dilation,size,channels_last,bias", [
    (8, 3, 1, (9, 9), False, False), (16, 5, 2, (12, 12), True, True),
    (6, 3, 4, (7, 7), True, False), (4, 5, 1, (5, 11), False, True)])
def test_depthwise_convolution_trains_with_the_same_gradients(channels, kernel, dilation, size, channels_last, bias):
    """DepthwiseConv2d's input gradient (the flipped kernel's forward convolution) and weight and
    bias gradients equal nn.Conv2d's up to float rounding; the output is the same."""
    from aepsl.models.backbones import DepthwiseConv2d, fast_depthwise_backward

    torch.manual_seed(0)
    pad = (kernel - 1) * dilation // 2
    ref = torch.nn.Conv2d(channels, channels, kernel, padding=pad, dilation=dilation, groups=channels, bias=bias)
    new = torch.nn.Conv2d(channels, channels, kernel, padding=pad, dilation=dilation, groups=channels, bias=bias)
    new.load_state_dict(ref.state_dict())
    assert fast_depthwise_backward(new) == 1 and type(new) is DepthwiseConv2d
    x = torch.randn(3, channels, *size)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
    y1, y2 = ref(x1), new(x2)
    assert torch.equal(y1, y2)
    g = torch.randn_like(y1)
    y1.backward(g)
    y2.backward(g)
    assert torch.allclose(x1.grad, x2.grad, rtol=1e-5, atol=1e-5)
    assert torch.allclose(ref.weight.grad, new.weight.grad, rtol=1e-5, atol=1e-5)
    if bias:
        assert torch.allclose(ref.bias.grad, new.bias.grad, rtol=1e-5, atol=1e-4)


def test_only_stride1_depthwise_convolutions_take_the_fast_backward():
    from aepsl.models import backbones as B

    net = B.EfficientNetLite("lite0", "", "stage5")
    fast = [m for m in net.modules() if type(m) is B.DepthwiseConv2d]
    assert fast and all(tuple(m.stride) == (1, 1) and m.groups == m.in_channels == m.out_channels for m in fast)
    assert any(m.dilation != (1, 1) for m in fast)   # the dilated ones past output stride 8 among them
    others = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d) and type(m) is not B.DepthwiseConv2d]
    assert not [m for m in others if m.groups > 1 and tuple(m.stride) == (1, 1)]
    assert B.fast_depthwise_backward(torch.nn.Conv2d(4, 8, 3, padding=1, groups=4)) == 0   # not one filter per channel
    assert B.fast_depthwise_backward(torch.nn.Conv2d(4, 4, 3, stride=2, padding=1, groups=4)) == 0


def _bn_stats(module):
    return [t.clone() for m in module.modules() if isinstance(m, torch.nn.BatchNorm2d)
            for t in (m.running_mean, m.running_var)]


@pytest.mark.parametrize("frozen", [1, 3])
def test_frozen_stages_keep_their_weights_and_statistics_while_the_rest_trains(frozen):
    from aepsl.models import CAMClassifier

    torch.manual_seed(0)
    model = CAMClassifier(3, "efficientnet_lite0", "package", depth="stage5", frozen=frozen)
    stages = model.backbone.stage_modules()
    kept, trained = stages[:frozen + 1], stages[frozen + 1:]
    before = [{k: v.clone() for k, v in m.state_dict().items()} for m in stages]
    stats = [_bn_stats(m) for m in stages]
    model.train()                                            # asks every module to train ...
    def norms(group):
        return [m for s in group for m in s.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert norms(kept) and not any(m.training for m in norms(kept))   # ... the frozen ones stay in eval
    assert norms(trained) and all(m.training for m in norms(trained))
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    x = torch.randn(4, 3, 64, 64)
    for _ in range(2):
        loss = model(x).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    for i, s in enumerate(stages):
        same = all(torch.equal(before[i][k], v) for k, v in s.state_dict().items())
        assert same == (i <= frozen), f"stage {i}: weights or statistics {'changed' if i <= frozen else 'stayed'}"
    assert all(torch.equal(a, b) for a, b in zip(stats[0], _bn_stats(stages[0])))
    assert all(p.grad is None for s in kept for p in s.parameters())


def test_frozen_stages_bounds_and_no_weights():
    from aepsl.models.backbones import EfficientNetLite

    n = len(EfficientNetLite(weights="", depth="stage5").stage_modules())
    with pytest.raises(ValueError, match="frozen_stages"):
        build_backbone("efficientnet_lite0", "package", depth="stage5", frozen=n)
    # without pretrained weights there is nothing to keep: every layer trains
    net = build_backbone("efficientnet_lite0", "", depth="stage5", frozen=3)
    assert net.frozen == () and all(p.requires_grad for p in net.parameters())
    net = build_backbone("efficientnet_lite0", "package", depth="stage5", frozen=3)
    assert len(net.frozen) == 4 and not any(p.requires_grad for p in net.stem.parameters())


@pytest.mark.parametrize("name", ["small", "efficientnet_lite0", "vgg16", "resnet50"])
def test_every_backbone_names_its_stages_in_order(name):
    """The stages, run one after the other, are the whole backbone (so freezing the first n
    freezes exactly the network's first layers)."""
    net = build_backbone(name, "", depth="stage5", width=4).eval()
    x = y = torch.randn(1, 3, 40, 40)
    with torch.no_grad():
        for s in net.stage_modules():
            for m in (s if isinstance(s, torch.nn.ModuleList) else [s]):
                y = m(y)
        assert torch.allclose(y, net(x))


@pytest.mark.parametrize("channels,kernel,padding,dilation,size", [
    (6, 5, 4, 2, (8, 8)), (5, 3, 2, 2, (4, 3)), (4, 5, 2, 1, (4, 4)),   # padding >= half the map: the shifted sums
    (6, 5, 4, 2, (12, 12)), (4, 3, 1, 1, (9, 7))])                      # else PyTorch's own
def test_depthwise_weight_gradient_is_pytorchs(channels, kernel, padding, dilation, size):
    from aepsl.models.backbones import depthwise_weight_grad

    g = torch.Generator().manual_seed(3)
    x = torch.randn(3, channels, *size, generator=g).contiguous(memory_format=torch.channels_last)
    w = torch.randn(channels, 1, kernel, kernel, generator=g)
    grad = torch.randn(3, channels, *size, generator=g)
    want = torch.ops.aten.convolution_backward(grad, x, w, None, [1, 1], [padding] * 2, [dilation] * 2, False, [0, 0],
                                               channels, [False, True, False])[1]
    got = depthwise_weight_grad(grad, x, w, (padding, padding), (dilation, dilation))
    assert got.shape == w.shape and got.dtype == w.dtype
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_depthwise_convolution_under_bfloat16_autocast_keeps_float32_weight_gradients():
    """The forward and input gradient in bfloat16, the weight gradient in float32: close to the
    float32 convolution's, at bfloat16's precision."""
    from aepsl.models.backbones import DepthwiseConv2d, fast_depthwise_backward

    torch.manual_seed(0)
    ref = torch.nn.Conv2d(8, 8, 5, padding=4, dilation=2, groups=8)
    new = torch.nn.Conv2d(8, 8, 5, padding=4, dilation=2, groups=8)
    new.load_state_dict(ref.state_dict())
    assert fast_depthwise_backward(new) == 1 and type(new) is DepthwiseConv2d
    x = torch.randn(4, 8, 8, 8)
    x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
    g = torch.randn(4, 8, 8, 8)
    ref(x1).backward(g)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = new(x2)
    assert y.dtype == torch.bfloat16
    y.backward(g.bfloat16())
    assert new.weight.grad.dtype == torch.float32 and x2.grad.dtype == torch.float32
    for a, b in ((x1.grad, x2.grad), (ref.weight.grad, new.weight.grad), (ref.bias.grad, new.bias.grad)):
        assert ((a - b).abs().max() / a.abs().max()).item() < 0.03
