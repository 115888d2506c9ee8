"""Calibrate the embedded default: which scenes and recipe give a learnable classifier?

Trains the CAM stage for several (dataset, backbone, epochs) settings on this machine and
records classification mAP (val), CAM seed mIoU (train, best background threshold) and wall
time into ``benchmarks/calibration.json``; the data chapter reads that file.

    .venv/bin/python benchmarks/calibrate.py                 # every setting (about 25 min, 2 cores)
    .venv/bin/python benchmarks/calibrate.py --only lite0    # settings whose name contains 'lite0'
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from aepsl import cam  # noqa: E402
from aepsl.artifacts import write_json  # noqa: E402
from aepsl.data.scenes import SceneConfig, generate  # noqa: E402

SEVEN = ["tshirt", "trouser", "dress", "sandal", "sneaker", "bag", "boot"]
TEN = ["tshirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "boot"]

DATASETS = {
    "fm7-96": dict(classes=SEVEN, image_size=96, item_size=[40, 64], n_train=2000, n_val=300),
    "fm10-96": dict(classes=TEN, image_size=96, item_size=[40, 64], n_train=2000, n_val=300),
}
SETTINGS = [
    # name, dataset, CAM parameters
    ("fm7-96/lite0-stage5/e4", "fm7-96", dict(backbone="efficientnet_lite0", backbone_depth="stage5", epochs=4)),
    ("fm7-96/lite0-stage5/adamw/e4", "fm7-96", dict(backbone="efficientnet_lite0", backbone_depth="stage5", epochs=4,
                                                    optimizer="adamw", lr=1e-3, weight_decay=1e-4)),
    ("fm7-96/small/e4", "fm7-96", dict(backbone="small", backbone_weights="", epochs=4, lr=0.05)),
    ("fm10-96/lite0-stage5/e4", "fm10-96", dict(backbone="efficientnet_lite0", backbone_depth="stage5", epochs=4)),
]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", default="")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "calibration.json"))
    ap.add_argument("--work", default="/tmp/aepsl-calibration")
    args = ap.parse_args()
    out = Path(args.out)
    results = json.loads(out.read_text()) if out.exists() else {}
    for name, ds, overrides in SETTINGS:
        if args.only and args.only not in name:
            continue
        root = Path(args.work) / ds
        generate(SceneConfig(data_root=str(root), n_test=0, **DATASETS[ds]), progress=False)
        params = dict(profile="calibration", data_root=str(root), artifacts_root=str(Path(args.work) / "artifacts"),
                      stage=name.replace("/", "_"), cam_scales=[1.0, 1.5], force=True, **overrides)
        t = time.time()
        rec = cam.run(params, progress=False)
        m = rec["metrics"]
        results[name] = {"dataset": DATASETS[ds], "params": overrides,
                         "val_map": round(m["val_map"], 4), "train_map": round(m["train_map"], 4),
                         "seed_miou": round(m["seed_miou"], 4), "best_threshold": m["best_threshold"],
                         "train_seconds": rec["timings_s"]["train"], "total_seconds": round(time.time() - t, 1),
                         "epoch_seconds": [h["seconds"] for h in m["history"]]}
        print(name, json.dumps(results[name]), flush=True)
        results["_machine"] = {"cpus": torch.get_num_threads(), "python": platform.python_version(),
                               "torch": torch.__version__, "command": "python benchmarks/calibrate.py"}
        write_json(out, results)


if __name__ == "__main__":
    main()
