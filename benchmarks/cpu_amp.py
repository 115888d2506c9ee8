"""How much faster does the book's work run under bfloat16 autocast on this CPU?

Where the CPU multiplies bfloat16 natively (AVX512-BF16 or AMX), the stages train and infer
under ``torch.autocast("cpu", dtype=torch.bfloat16)`` (:func:`aepsl.engine.device.cpu_bfloat16`;
``AEPSL_CPU_AMP=0`` keeps float32). This script times, in float32 and in bfloat16, alternately
``--repeats`` times (``AEPSL_CPU_AMP`` set each way), the three kinds of work the default book spends its time on:

* a training step of the CAM classifier (EfficientNet-Lite0 with its ImageNet weights, the
  stem and three stages frozen, batch 32 at the 96 px crop),
* a training step of the segmenter (the same backbone with the stride-4 decoder, batch 32 at the
  64 px crop),
* CAM inference (the classifier with batch norm folded, 16 images of 96 px at the three CAM
  scales with flips),

on fixed random batches, and records the median seconds and their ratio (bfloat16 / float32)
in benchmarks/cpu_amp.json with the CPU, the code revision and the date. Run nothing else
meanwhile.

    .venv/bin/python benchmarks/cpu_amp.py
    .venv/bin/python benchmarks/cpu_amp.py --repeats 5 --steps 10
    .venv/bin/python benchmarks/cpu_amp.py --dry-run    # one step of each, no record
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from aepsl.engine.artifacts import cpu_model, git_revision, write_json  # noqa: E402

OUT = ROOT / "benchmarks" / "cpu_amp.json"


def workloads() -> dict:
    """name -> a function running one unit of that work (the autocast comes from the caller)."""
    from aepsl.data.transforms import normalize
    from aepsl.engine.train import autocast, prepare_model
    from aepsl.methods.cam import CAMConfig, build_model, infer_cams
    from aepsl.methods.psl import PSLConfig, build_segmenter
    from aepsl.models.fold import fold_batchnorm

    cpu = torch.device("cpu")
    g = torch.Generator().manual_seed(0)
    classifier = prepare_model(build_model(CAMConfig(), 6), cpu).train()
    c_opt = torch.optim.SGD([p for p in classifier.parameters() if p.requires_grad], lr=1e-3, momentum=0.9)
    c_x = torch.randint(0, 256, (32, 3, 96, 96), dtype=torch.uint8, generator=g)
    c_y = (torch.rand(32, 6, generator=g) > 0.7).float()
    segmenter = prepare_model(build_segmenter(PSLConfig(), 7), cpu).train()
    s_opt = torch.optim.AdamW([p for p in segmenter.parameters() if p.requires_grad], lr=1e-3)
    s_x = torch.randint(0, 256, (32, 3, 64, 64), dtype=torch.uint8, generator=g)
    s_y = torch.randint(0, 7, (32, 64, 64), generator=g)
    folded = fold_batchnorm(prepare_model(build_model(CAMConfig(), 6), cpu).eval())
    i_x = torch.randint(0, 256, (16, 3, 96, 96), dtype=torch.uint8, generator=g)

    def classifier_step():
        with autocast(cpu):
            logits = classifier(normalize(c_x).contiguous(memory_format=torch.channels_last))
        loss = F.multilabel_soft_margin_loss(logits.float(), c_y)
        c_opt.zero_grad()
        loss.backward()
        c_opt.step()

    def segmenter_step():
        with autocast(cpu):
            out = segmenter(normalize(s_x).contiguous(memory_format=torch.channels_last))
        seg = F.interpolate(out["seg"].float(), size=s_y.shape[-2:], mode="bilinear", align_corners=False)
        loss = F.cross_entropy(seg, s_y)
        s_opt.zero_grad()
        loss.backward()
        s_opt.step()

    def cam_inference():   # under the autocast of aepsl.engine.train, as a stage runs it
        infer_cams(folded, i_x, CAMConfig().cam_scales, True)

    return {"classifier training step": classifier_step, "segmenter training step": segmenter_step,
            "CAM inference (16 images)": cam_inference}


def timed(fn, amp: bool, steps: int) -> float:
    """Median seconds of ``steps`` calls after two warm-up calls, with ``AEPSL_CPU_AMP`` set to
    ``amp``."""
    os.environ["AEPSL_CPU_AMP"] = "1" if amp else "0"
    times = []
    for i in range(steps + 2):
        t0 = time.perf_counter()
        fn()
        if i >= 2:
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=3, help="alternations of float32 and bfloat16 (default 3)")
    ap.add_argument("--steps", type=int, default=8, help="timed calls of each workload per repeat (default 8)")
    ap.add_argument("--dry-run", action="store_true", help="one call of each workload each way; no record")
    args = ap.parse_args(argv)
    if args.repeats < 1 or args.steps < 1:
        ap.error("--repeats and --steps must be >= 1")
    work = workloads()
    if args.dry_run:
        for name, fn in work.items():
            for amp in (False, True):
                os.environ["AEPSL_CPU_AMP"] = "1" if amp else "0"
                fn()
            print(f"{name}: runs in float32 and bfloat16")
        return 0
    seconds: dict = {name: {"float32": [], "bfloat16": []} for name in work}
    for r in range(args.repeats):
        for name, fn in work.items():
            for amp in (False, True):
                seconds[name]["bfloat16" if amp else "float32"].append(round(timed(fn, amp, args.steps), 4))
        print(f"repeat {r + 1}/{args.repeats} done", flush=True)
    rows = []
    for name, ways in seconds.items():
        f32, b16 = statistics.median(ways["float32"]), statistics.median(ways["bfloat16"])
        rows.append({"workload": name, "float32_s": round(f32, 4), "bfloat16_s": round(b16, 4),
                     "ratio": round(b16 / f32, 3), "runs": ways})
        print(f"{name}: float32 {f32:.3f} s, bfloat16 {b16:.3f} s, ratio {b16 / f32:.2f}")
    native = bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    write_json(OUT, {"command": "python benchmarks/cpu_amp.py" + (" " + " ".join(argv or sys.argv[1:])).rstrip(),
                     "cpu": cpu_model(), "cores": os.cpu_count(), "threads": torch.get_num_threads(),
                     "native_bfloat16": native, "torch": torch.__version__, "git_revision": git_revision(),
                     "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "repeats": args.repeats,
                     "steps": args.steps, "rows": rows})
    print(f"recorded in {OUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
