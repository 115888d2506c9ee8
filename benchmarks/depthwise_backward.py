"""Times the CPU backward of the book's stride-1 depthwise convolutions: PyTorch's own input
gradient against backbones.DepthwiseConv2d's (the flipped kernel's forward convolution), beside
the forward, for the shapes of the output-stride-8 EfficientNet-Lite at the classifier's 96 px
training crop (12x12 maps) and the segmenter's 64 px crop (8x8 maps); batch 32, channels_last,
median of 20 calls each. A second table times the weight gradient: PyTorch's against two
rewrites that give the same values (a grouped convolution of the input by the output gradient,
and a sum over the kernel's shifted products). On 12x12 maps PyTorch's is the fastest; on the
8x8 maps of the dilated 5x5 convolutions, whose padding reaches half the map, the shifted
products take a fraction of its time, so ``backbones.depthwise_weight_grad`` uses them there.

    .venv/bin/python benchmarks/depthwise_backward.py
    .venv/bin/python benchmarks/depthwise_backward.py --dry-run   # each rewrite once on a small shape, checked
"""
import argparse
import time

import torch
import torch.nn.functional as F


SHAPES = [(672, 5, 2, 12), (480, 5, 2, 12), (480, 3, 2, 12), (240, 5, 1, 12), (96, 3, 1, 48),
          (672, 5, 2, 8), (480, 5, 2, 8), (480, 3, 2, 8), (240, 3, 1, 8)]


def median_ms(fn, reps: int = 20) -> float:
    for _ in range(3):
        fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1e3 * sorted(times)[reps // 2]


def layer(c: int, k: int, d: int, hw: int):
    """A batch-32 channels_last input, a depthwise kernel, its 'same' padding and an output gradient."""
    x = torch.randn(32, c, hw, hw).contiguous(memory_format=torch.channels_last)
    w = torch.randn(c, 1, k, k)
    pad = (k - 1) * d // 2
    return x, w, pad, torch.randn_like(F.conv2d(x, w, None, 1, pad, d, c))


def dry_run() -> None:
    """Each input and weight gradient rewrite once on a small layer, checked against PyTorch's."""
    x, w, pad, g = layer(8, 3, 2, 6)
    ref = torch.ops.aten.convolution_backward(g, x, w, None, [1, 1], [pad, pad], [2, 2], False, [0, 0], 8,
                                              [True, False, False])[0]
    flipped = F.conv2d(g, w.flip(-1, -2), None, 1, pad, 2, 8)
    assert torch.allclose(ref, flipped, atol=1e-4), "the flipped kernel's convolution is not the input gradient"
    print(f"shapes to time: {SHAPES}; the rewrites agree on a small layer")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dry-run", action="store_true", help="check the rewrites on a small layer; time nothing")
    if ap.parse_args().dry_run:
        return dry_run()
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print("| channels | kernel | dilation | map | forward (ms) | PyTorch input gradient (ms) | flipped kernel (ms) |")
    print("|---|---|---|---|---|---|---|")
    for c, k, d, hw in SHAPES:
        x, w, pad, g = layer(c, k, d, hw)
        fwd = median_ms(lambda: F.conv2d(x, w, None, 1, pad, d, c))
        own = median_ms(lambda: torch.ops.aten.convolution_backward(
            g, x, w, None, [1, 1], [pad, pad], [d, d], False, [0, 0], c, [True, False, False]))
        flipped = median_ms(lambda: F.conv2d(g, w.flip(-1, -2), None, 1, pad, d, c))
        print(f"| {c} | {k}x{k} | {d} | {hw}x{hw} | {fwd:.1f} | {own:.1f} | {flipped:.1f} |")
    print()
    print("| channels | kernel | dilation | map | PyTorch weight gradient (ms) | grouped convolution (ms) | "
          "shifted products (ms) | largest relative difference |")
    print("|---|---|---|---|---|---|---|---|")
    for c, k, d, hw in SHAPES:
        x, w, pad, g = layer(c, k, d, hw)

        def own():
            return torch.ops.aten.convolution_backward(g, x, w, None, [1, 1], [pad, pad], [d, d], False, [0, 0], c,
                                                       [False, True, False])[1]

        def grouped():   # channel c: the padded input's N maps convolved with the N maps of c's gradient
            xp = F.pad(x, (pad,) * 4).transpose(0, 1).reshape(1, -1, hw + 2 * pad, hw + 2 * pad)
            return F.conv2d(xp, g.transpose(0, 1).contiguous(), None, d, 0, 1, c).reshape(c, 1, k, k)

        def shifted():
            xp, out = F.pad(x, (pad,) * 4), torch.empty(c, 1, k, k)
            for i in range(k):
                for j in range(k):
                    out[:, 0, i, j] = (xp[:, :, i * d:i * d + hw, j * d:j * d + hw] * g).sum((0, 2, 3))
            return out

        ref = own()
        err = max(float((f() - ref).abs().max() / ref.abs().max()) for f in (grouped, shifted))
        print(f"| {c} | {k}x{k} | {d} | {hw}x{hw} | {median_ms(own):.1f} | {median_ms(grouped):.1f} | "
              f"{median_ms(shifted):.1f} | {err:.0e} |")


if __name__ == "__main__":
    main()
