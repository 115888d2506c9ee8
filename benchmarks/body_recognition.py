"""Does an erasing round's classifier recognise the items' bodies? (a benchmark, not a test)

    .venv/bin/python benchmarks/body_recognition.py --profile default
    # -> benchmarks/body_recognition.json (one entry per profile, replaced when rerun)
    .venv/bin/python benchmarks/body_recognition.py --profile quick --dry-run   # the plan; scores nothing

For each finished round of a profile's ``erasing`` stage (round 1: the CAM stage's classifier),
the classifier's mAP on the held-out (val) scenes twice: as they are (the round's own
metrics.json), and with every disc (the pixels ``SegmentationPart/`` marks 1) replaced by the
training set's mean pixel, as an erasing round would fill it (scored here). A classifier that relies on the disc alone falls to chance on the second;
one that recognises bodies keeps a high mAP there. Needs scenes made with ``part_size`` (part
maps for the val split).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from aepsl.methods import metrics as M  # noqa: E402
from aepsl.engine.artifacts import load_metrics, read_json, stage_dir, write_json  # noqa: E402
from aepsl.methods.cam import load_model, predict_logits  # noqa: E402
from aepsl.engine.config import load_profile, resolve  # noqa: E402
from aepsl.engine.device import pick_device  # noqa: E402
from aepsl.data.voc import SegDataset, VOCTree  # noqa: E402
from aepsl.methods.erasing import erase, part_map, pixel_statistics  # noqa: E402
from aepsl.models.fold import fold_batchnorm  # noqa: E402

OUT = ROOT / "benchmarks" / "body_recognition.json"


class DiscsErased(torch.utils.data.Dataset):
    """The split with every disc filled with ``mean_pixel``."""

    def __init__(self, tree: VOCTree, split: str, mean_pixel):
        self.base = SegDataset(tree, split, with_masks=False)
        self.tree, self.names = tree, self.base.names
        self.mean_pixel = mean_pixel

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int) -> dict:
        sample = dict(self.base[i])
        parts = part_map(self.tree, sample["name"])
        if parts is None:
            raise FileNotFoundError(f"no part map for {sample['name']} under {self.tree.root}: "
                                    "these scenes were made without part_size")
        sample["image"] = erase(sample["image"], parts == 1, "mean", self.mean_pixel)
        return sample


def plan(profile: str) -> dict:
    """What :func:`measure` would score for ``profile``: its name, scenes and finished rounds."""
    common = load_profile(profile)["common"]
    name = common["profile"]
    root = resolve(common.get("artifacts_root", "artifacts"))
    rounds, k = [], 1
    while load_metrics(stage_dir(root, name, "erasing") / f"round{k}") is not None:
        rounds.append(k)
        k += 1
    return {"profile": name, "scenes": resolve(common["data_root"]), "erasing": stage_dir(root, name, "erasing"),
            "rounds": rounds}


def measure(profile: str, split: str = "val") -> dict:
    common = load_profile(profile)["common"]
    name = common["profile"]
    root = resolve(common.get("artifacts_root", "artifacts"))
    tree = VOCTree(resolve(common["data_root"]))
    mean_pixel, _ = pixel_statistics(tree, "train")
    device = pick_device(common.get("device", "auto"))
    rounds = []
    k = 1
    while (rec := load_metrics(stage_dir(root, name, "erasing") / f"round{k}")) is not None:
        folder = stage_dir(root, name, "cam") if k == 1 else stage_dir(root, name, "erasing") / f"round{k}"
        model = fold_batchnorm(load_model(folder, device))
        # clean images: as the round saved it; discs erased: scored here
        s, t = predict_logits(model, DiscsErased(tree, split, mean_pixel), device, 64, 0)
        row = {"round": k, "val_map": round(rec["metrics"]["val_map"], 4),
               "val_map_discs_erased": round(M.mean_average_precision(s, t), 4)}
        print(name, row, flush=True)
        rounds.append(row)
        k += 1
    return {"profile": name, "split": split, "rounds": rounds, "date": time.strftime("%Y-%m-%d")}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--profile", nargs="+", default=["default"],
                    help="profiles: names (notebooks/params/<name>.yaml) or YAML paths (benchmarks/designs/*.yaml)")
    ap.add_argument("--dry-run", action="store_true", help="print the finished rounds each profile has; score nothing")
    args = ap.parse_args()
    if args.dry_run:
        for profile in args.profile:
            p = plan(profile)
            scenes = "there" if p["scenes"].is_dir() else "not there"
            print(f"{p['profile']}: scenes {p['scenes']} ({scenes}); finished erasing rounds under "
                  f"{p['erasing']}: {p['rounds'] or 'none (run the erasing stage first)'}")
        return 0
    record = read_json(OUT) if OUT.exists() else {}
    for profile in args.profile:
        entry = measure(profile)
        entry["command"] = f"python benchmarks/body_recognition.py --profile {profile}"
        record[entry["profile"]] = entry
    write_json(OUT, record)
    print(f"wrote {OUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
