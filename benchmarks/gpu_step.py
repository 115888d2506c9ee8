"""GPU speed: a plain fp32 training step against ours, and CAM inference, on VOC-sized batches.

    python benchmarks/gpu_step.py                              # VGG16, 16 images of 321x321
    python benchmarks/gpu_step.py --backbone resnet50 --torch-compile
    python benchmarks/gpu_step.py --small --device cpu --out /tmp/smoke.md   # smoke test, any machine

On one model and one synthetic batch (random uint8 images, random multi-hot labels over the
20 VOC classes) it times

(a) plain fp32 eager training steps: NCHW float32, no autocast, PyTorch's default settings;
(b) our training step: :func:`aepsl.engine.train.train_step` on a model prepared as ``fit`` prepares
    it (channels_last, AMP in bfloat16 where supported, cuDNN autotuning, optionally
    ``torch.compile``), the code every stage trains with;
(c) CAM inference as the CAM stage runs it (:func:`aepsl.methods.cam.labelled_cams`): the scales
    (1, 0.5, 1.5, 2) and their mirror images, normalised, labelled classes copied to the host;
    and the same at one scale without flip.

It prints one JSON line and appends a row, with the device's name and the command, to
``benchmarks/gpu_results.md`` (``--out``; ``--no-record`` to skip). Weights are random: speed
does not depend on them, and nothing is downloaded. ``--small`` shrinks everything (a small
CNN, 64 px, a few steps) so that the script can be checked on a CPU; its rows say so and are
no measurement.
"""
from __future__ import annotations

import argparse
import json
import platform
import shlex
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))   # the repository's aepsl, also when not installed

from aepsl.engine.artifacts import write_text  # noqa: E402
from aepsl.methods.cam import classification_loss, labelled_cams  # noqa: E402
from aepsl.data.transforms import normalize  # noqa: E402
from aepsl.models import CAMClassifier  # noqa: E402
from aepsl.engine.train import grad_scaler, make_optimizer, pick_device, prepare_model, train_step  # noqa: E402

HEADER = """# GPU speed — `benchmarks/gpu_step.py`

Rows are appended by `python benchmarks/gpu_step.py` (see its docstring): images per second of
(a) a plain fp32 eager training step and (b) aepsl's training step (channels_last, bf16 AMP,
cuDNN autotuning, optionally torch.compile) on the same model and synthetic batch, and of CAM
inference at the scales (1, 0.5, 1.5, 2) + flip and at one scale. Rows marked *smoke* come from
`--small` (tiny model and images, often on a CPU) and measure nothing.

| date | device | torch | backbone | batch x size | (a) fp32 eager img/s | (b) ours img/s | (b)/(a) | CAM img/s, 4 scales + flip | CAM img/s, 1 scale | command |
|---|---|---|---|---|---|---|---|---|---|---|
"""


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _batch(n: int, size: int, device: torch.device, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=g)
    labels = (torch.rand(n, 20, generator=g) < 0.08).float()
    labels[torch.arange(n), torch.randint(0, 20, (n,), generator=g)] = 1.0   # at least one class each
    return images.to(device), labels.to(device)


def _model(args) -> CAMClassifier:
    torch.manual_seed(0)
    return CAMClassifier(20, args.backbone, "", depth=args.depth, width=args.width)


def _timed(fn, steps: int, warmup: int, device: torch.device) -> float:
    """Seconds per call of ``fn`` after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        fn()
    _sync(device)
    return (time.perf_counter() - t0) / steps


def plain_fp32_step_time(args, device, images, labels) -> float:
    """(a): what a first PyTorch training loop does: float32, NCHW, no autocast."""
    torch.backends.cudnn.benchmark = False
    model = _model(args).to(device).train()
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, weight_decay=5e-4)

    def step():
        logits = model(normalize(images))
        loss = F.multilabel_soft_margin_loss(logits, labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    seconds = _timed(step, args.steps, args.warmup, device)
    del model, opt
    return seconds


def our_step_time(args, device, images, labels) -> tuple[float, CAMClassifier]:
    """(b): the model and optimiser as ``fit`` prepares them, stepped by ``train_step``."""
    model = prepare_model(_model(args), device).train()
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    opt = make_optimizer(model, "sgd", 1e-3, 5e-4, 0.9)
    scaler = grad_scaler(device)
    net = torch.compile(model) if args.torch_compile else model
    batch = {"image": images.contiguous(memory_format=torch.channels_last), "labels": labels}
    seconds = _timed(lambda: train_step(net, batch, classification_loss, opt, scaler, device),
                     args.steps, args.warmup + (3 if args.torch_compile else 0), device)
    return seconds, model


def cam_time(model, args, device, scales, flip) -> float:
    """(c): seconds per batch of ``args.cam_batch`` images, maps of labelled classes on the host."""
    model.eval()
    images, labels = _batch(args.cam_batch, args.size, device, seed=1)
    return _timed(lambda: labelled_cams(model, images, labels, scales, flip), args.steps, args.warmup, device)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def record(path: Path, result: dict) -> None:
    """Append one row to ``path`` (header first if new), atomically."""
    old = path.read_text() if path.exists() else HEADER
    label = f"{result['backbone']}{' + compile' if result['torch_compile'] else ''}"
    if result["smoke"]:
        label += " (*smoke*, --small)"
    row = (f"| {result['date']} | {result['device']} | {result['torch']} | {label} | "
           f"{result['batch']} x {result['size']}² | {result['fp32_eager_img_s']:.1f} | {result['ours_img_s']:.1f} | "
           f"{result['speedup']:.2f}x | {result['cam_img_s']:.1f} | {result['cam_single_img_s']:.1f} | "
           f"`{result['command']}` |\n")
    write_text(path, old + row)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--backbone", default="vgg16", choices=["vgg16", "resnet50", "efficientnet_lite0", "small"])
    ap.add_argument("--depth", default="full", help="EfficientNet depth: full or stage5")
    ap.add_argument("--width", type=int, default=32, help="width of the 'small' backbone")
    ap.add_argument("--batch", type=int, default=16, help="training batch (the voc profile's)")
    ap.add_argument("--size", type=int, default=321, help="image side (the voc profile's crop)")
    ap.add_argument("--cam-batch", type=int, default=8, help="CAM inference batch (voc: eval_batch_size / 4)")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--torch-compile", action="store_true", help="torch.compile our training step")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--small", action="store_true", help="smoke test: small CNN, 64 px, 2 steps (any device)")
    ap.add_argument("--out", default=str(HERE / "gpu_results.md"))
    ap.add_argument("--no-record", action="store_true", help="print only")
    ap.add_argument("--dry-run", action="store_true", help="print the device and settings; time nothing")
    args = ap.parse_args(argv)
    if args.small:
        args.backbone, args.width, args.batch, args.size = "small", 8, 4, 64
        args.cam_batch, args.steps, args.warmup = 2, 2, 1
    device = pick_device(args.device)
    if args.dry_run:
        plan = {k: v for k, v in vars(args).items() if k != "dry_run"}
        print(json.dumps({"device": device_name(device), **plan}))
        return plan
    images, labels = _batch(args.batch, args.size, device)
    fp32 = plain_fp32_step_time(args, device, images, labels)
    ours, model = our_step_time(args, device, images, labels)
    cam4 = cam_time(model, args, device, (1.0, 0.5, 1.5, 2.0), True)
    cam1 = cam_time(model, args, device, (1.0,), False)
    command = "python benchmarks/gpu_step.py " + " ".join(shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))
    result = {
        "date": time.strftime("%Y-%m-%d"), "device": device_name(device), "torch": torch.__version__,
        "backbone": args.backbone, "torch_compile": args.torch_compile, "batch": args.batch, "size": args.size,
        "amp_dtype": ("bfloat16" if torch.cuda.is_bf16_supported() else "float16") if device.type == "cuda" else "none (CPU)",
        "fp32_eager_img_s": args.batch / fp32, "ours_img_s": args.batch / ours, "speedup": fp32 / ours,
        "cam_img_s": args.cam_batch / cam4, "cam_single_img_s": args.cam_batch / cam1,
        "smoke": args.small, "command": command.strip(),
    }
    print(json.dumps(result))
    if not args.no_record:
        record(Path(args.out), result)
    return result


if __name__ == "__main__":
    main()
