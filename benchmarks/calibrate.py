"""Calibrate the embedded default: which scenes and recipe give a learnable classifier?

Trains the CAM stage for several (dataset, backbone, epochs) settings on this machine and
records classification mAP (val), CAM seed mIoU (train, best background threshold) and wall
time into ``benchmarks/calibration.json``; the data chapter reads that file.

    .venv/bin/python benchmarks/calibrate.py                 # every setting (about 25 min, 2 cores)
    .venv/bin/python benchmarks/calibrate.py --only lite0    # settings whose name contains 'lite0'
    .venv/bin/python benchmarks/calibrate.py --dry-run       # the settings; trains nothing
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

from aepsl.methods import cam  # noqa: E402
from aepsl.engine.artifacts import write_json  # noqa: E402
from aepsl.data.scenes import SceneConfig, generate  # noqa: E402

SEVEN = ["tshirt", "trouser", "dress", "sandal", "sneaker", "bag", "boot"]
SIX = ["tshirt", "trouser", "dress", "sneaker", "bag", "boot"]
TEN = ["tshirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "boot"]

DATASETS = {
    "fm7-96": dict(classes=SEVEN, image_size=96, item_size=[40, 64], part_size=[0, 0], n_train=2000, n_val=300),
    "fm6-96-3k": dict(classes=SIX, image_size=96, item_size=[40, 64], part_size=[0, 0], n_train=3000, n_val=300, min_visible=0.7),
    "fm10-96": dict(classes=TEN, image_size=96, item_size=[40, 64], part_size=[0, 0], n_train=2000, n_val=300),
}
SETTINGS = [
    # name, dataset, CAM parameters
    ("fm7-96/lite0-stage5/e4", "fm7-96", dict(backbone="efficientnet_lite0", backbone_depth="stage5", epochs=4)),
    ("fm7-96/lite0-stage5/adamw/e4", "fm7-96", dict(backbone="efficientnet_lite0", backbone_depth="stage5", epochs=4,
                                                    optimizer="adamw", lr=1e-3, weight_decay=1e-4)),
    ("fm7-96/small/adamw/e4", "fm7-96", dict(backbone="small", backbone_weights="", epochs=4, optimizer="adamw",
                                             lr=3e-3, weight_decay=1e-4)),
    ("fm10-96/lite0-stage5/adamw/e4", "fm10-96", dict(backbone="efficientnet_lite0", backbone_depth="stage5",
                                                      epochs=4, optimizer="adamw", lr=1e-3, weight_decay=1e-4)),
    ("fm6-96-3k/lite0-stage5/adamw/e4", "fm6-96-3k", dict(backbone="efficientnet_lite0", backbone_depth="stage5",
                                                        epochs=4, optimizer="adamw", lr=1e-3, weight_decay=1e-4)),
    ("fm7-96/lite0-stage5/adamw/e6", "fm7-96", dict(backbone="efficientnet_lite0", backbone_depth="stage5",
                                                    epochs=6, optimizer="adamw", lr=1e-3, weight_decay=1e-4)),
]
ORACLES = [
    # a fully supervised segmenter: same backbone, cross-entropy on the true masks;
    # head "1x1" = one 1x1 conv on the stride-8 features, "largefov" = aepsl's LargeFOV head
    ("fm7-96/oracle/lite0-stage5/adamw/e4", "fm7-96", dict(epochs=4, lr=1e-3, head="1x1")),
    ("fm7-96/oracle-largefov-d4/lite0-stage5/adamw/e6", "fm7-96", dict(epochs=6, lr=1e-3, head="largefov")),
    ("fm6-96-3k/oracle/lite0-stage5/adamw/e5", "fm6-96-3k", dict(epochs=5, lr=1e-3, head="1x1")),
    ("fm10-96/oracle/lite0-stage5/adamw/e4", "fm10-96", dict(epochs=4, lr=1e-3, head="1x1")),
]


def oracle(root: Path, epochs: int, lr: float, head: str = "1x1", dilation: int = 4, seed: int = 0) -> dict:
    """Train backbone + 1x1 head on ground-truth masks; val mIoU (the ceiling for this data)."""
    import torch.nn.functional as F

    from aepsl.methods import metrics as M
    from aepsl.data.transforms import TrainView, normalize
    from aepsl.data.voc import SegDataset, VOCTree
    from aepsl.models import CAMClassifier
    from aepsl.engine.train import fit, make_loader, seed_everything, to_device

    tree = VOCTree(root)
    seed_everything(seed)
    from aepsl.models.segmenter import LargeFOVSegmenter

    if head == "1x1":
        model = CAMClassifier(tree.num_classes, "efficientnet_lite0", "package", depth="stage5")
        seg = model.class_maps
    else:
        model = LargeFOVSegmenter(tree.num_classes, "efficientnet_lite0", "package", depth="stage5",
                                  head_dilation=dilation)

        def seg(x):
            return model(x)["seg"]

    def loss_fn(model, batch):
        logits = seg(normalize(batch["image"]))
        logits = F.interpolate(logits, size=batch["mask"].shape[-2:], mode="bilinear", align_corners=False)
        return F.cross_entropy(logits.float(), batch["mask"], ignore_index=255), {}

    ckpt = Path(f"/tmp/aepsl-calibration/oracle-{root.name}-{head}-e{epochs}.pt")
    ckpt.unlink(missing_ok=True)
    t = time.time()
    fit(model, TrainView(SegDataset(tree, "train"), 96, seed=seed), loss_fn, epochs=epochs, batch_size=32, lr=lr,
        optimizer="adamw", ckpt_path=ckpt, device=torch.device("cpu"), seed=seed, progress=False)
    train_s = time.time() - t
    model.eval()
    meter = M.ConfusionMeter(tree.num_classes)
    with torch.no_grad():
        for batch in make_loader(SegDataset(tree, "val"), 64, False, 0):
            batch = to_device(batch, torch.device("cpu"))
            logits = seg(normalize(batch["image"]))
            logits = F.interpolate(logits, size=batch["mask"].shape[-2:], mode="bilinear", align_corners=False)
            meter.update(logits.argmax(1), batch["mask"])
    scores = M.segmentation_scores(meter.matrix, tree.classes)
    return {"val_miou": round(scores["miou"], 4), "fg_precision": round(scores["fg_precision"], 4),
            "fg_recall": round(scores["fg_recall"], 4), "iou": scores["iou"], "train_seconds": round(train_s, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", default="", help="run the settings whose name contains this")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "calibration.json"))
    ap.add_argument("--work", default="/tmp/aepsl-calibration", help="where the scenes and runs go")
    ap.add_argument("--dry-run", action="store_true", help="print the settings that would run; train nothing")
    args = ap.parse_args()
    if args.dry_run:
        for name, ds, params in SETTINGS + ORACLES:
            if not args.only or args.only in name:
                SceneConfig(data_root=str(Path(args.work) / ds), n_test=0, **DATASETS[ds])   # the scenes' parameters are valid
                print(f"{name}: scenes {ds} ({DATASETS[ds]['n_train']} training images), {params}")
        return
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
    for name, ds, kw in ORACLES:
        if args.only and args.only not in name:
            continue
        root = Path(args.work) / ds
        generate(SceneConfig(data_root=str(root), n_test=0, **DATASETS[ds]), progress=False)
        results[name] = {"dataset": DATASETS[ds], "params": kw, **oracle(root, **kw)}
        print(name, json.dumps(results[name]), flush=True)
        write_json(out, results)


if __name__ == "__main__":
    main()
