"""Tables the book shows, built only from saved JSON (metrics.json, benchmark records)."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd


def calibration_tables(path: str | Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(classifier settings, oracle settings) from ``benchmarks/calibration.json``."""
    data = json.loads(Path(path).read_text())
    clf, ora = [], []
    for name, v in data.items():
        if name.startswith("_"):
            continue
        ds = v["dataset"]
        base = {"setting": name, "classes": len(ds["classes"]), "train images": ds["n_train"],
                "image px": ds["image_size"], "epochs": v["params"].get("epochs")}
        if "val_miou" in v:
            ora.append({**base, "head": v["params"].get("head", "1x1"), "val mIoU": v["val_miou"],
                        "fg precision": v["fg_precision"], "fg recall": v["fg_recall"],
                        "train s": v["train_seconds"]})
        else:
            clf.append({**base, "backbone": v["params"].get("backbone"), "optimizer": v["params"].get("optimizer", "sgd"),
                        "val mAP": v["val_map"], "train mAP": v["train_map"], "CAM seed mIoU": v["seed_miou"],
                        "best bg threshold": v["best_threshold"], "train s": v["train_seconds"]})
    frame = lambda rows: pd.DataFrame(rows).set_index("setting") if rows else pd.DataFrame()  # noqa: E731
    return frame(clf), frame(ora)
