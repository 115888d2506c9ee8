"""Which segmenter recipe reaches the oracle target on the default scenes?

Trains the fully supervised oracle (the ``04_oracle`` run of notebook 04_psl: the PSL chapter's
segmenter on the true masks) with other heads and epoch counts, on the default profile's
scenes, and records the held-out mIoU with and without the dense CRF into
``benchmarks/segmenter_recipe.json``; the data chapter reads that file. Every saved model is
also scored with PSL's test-time drop at 0.5 and with nothing dropped (``report.drop_sweep``):
the runs before the book's own were made with the drop, the book's oracle drops nothing.

Each setting is a real stage run, ``artifacts/segmenter-recipe/default/oracle_<name>/`` (the
book's own oracle, ``artifacts/default/oracle/``, for the book's recipe), so a setting already
computed for the current code and parameters is read back instead of trained again.

    .venv/bin/python benchmarks/segmenter_recipe.py                  # every setting (~50 min on 2 cores)
    .venv/bin/python benchmarks/segmenter_recipe.py --only stride4    # names containing 'stride4'
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from aepsl.book import tables  # noqa: E402

from aepsl.methods import psl
from aepsl.engine.artifacts import load_metrics, stage_dir, write_json  # noqa: E402
from aepsl.engine.config import resolve, stage_params  # noqa: E402
from aepsl.methods.cam import dataset_identity  # noqa: E402
from aepsl.data.voc import VOCTree  # noqa: E402
from aepsl.methods.psl import PSLConfig  # noqa: E402

RECIPE_ROOT = "artifacts/segmenter-recipe"   # settings other than the book's: <root>/default/oracle_<name>/
ORACLE_RUN = 2   # the third run of 04_psl in default.yaml: the oracle
BEFORE = dict(weight_decay=0.0001, scale_range=[0.9, 1.1])   # the recipe the first book used
BOOK = dict(decoder="stride4", epochs=12, weight_decay=0.01, scale_range=[0.7, 1.3])
AS_RUN = dict(test_threshold=0.5)   # these runs dropped unconfident classes at test time (PSL's rule)
SETTINGS = [
    # name, overrides of the book's oracle run (decoder "none" = LargeFOV's stride-8 logits alone),
    # CPU threads (None: torch's default, 2 here). The thread count changes the order of float
    # sums, hence the trained weights: the last two rows are the same recipe with 1 and 2 threads.
    ("largefov/e5", dict(decoder="none", epochs=5, **BEFORE, **AS_RUN), None),
    ("stride4/e5", dict(decoder="stride4", epochs=5, **BEFORE, **AS_RUN), 1),
    ("stride4/e12", dict(decoder="stride4", epochs=12, **BEFORE, **AS_RUN), None),
    ("stride4/e16", dict(decoder="stride4", epochs=16, **BEFORE, **AS_RUN), None),
    ("stride4/e12/lr3e-4", dict(decoder="stride4", epochs=12, lr=3e-4, crf=False, **BEFORE, **AS_RUN), 1),
    # wider scale augmentation and AdamW's usual weight decay, changed together
    ("stride4/e12/scale0.7-1.3/wd0.01/1 thread", dict(BOOK, crf=False, **AS_RUN), 1),
    ("stride4/e12/scale0.7-1.3/wd0.01", BOOK, None),   # the book's recipe and run: nothing dropped
]


def earlier_run(params: dict) -> dict | None:
    """A finished run of the setting in its stage folder, made under another code revision
    (the segmenter's code is in every stage's hash, so such a run is not reused by the stage
    itself): used with --reuse, its code hash and git revision recorded beside its numbers."""
    rec = load_metrics(stage_dir(resolve(params["artifacts_root"]), params["profile"], params["stage"]))
    if rec is None:
        return None
    cfg = PSLConfig(**{k: v for k, v in params.items() if k in PSLConfig.__dataclass_fields__})
    want = {**cfg.hashed(), "dataset": dataset_identity(VOCTree(resolve(cfg.data_root)), cfg.train_split)}
    have = dict(rec["params"])
    for key in ("code", "stage", "force", "artifacts_root", "inputs"):   # the code may differ; the folder names the run; the oracle reads no stage
        want.pop(key, None), have.pop(key, None)
    return rec if json.dumps(want, sort_keys=True) == json.dumps(have, sort_keys=True) else None


def train_fit(params: dict, n: int = 300) -> float:
    """mIoU of the setting's trained model on the first ``n`` training images, nothing dropped
    at test time (against the held-out mIoU with nothing dropped: how much it overfits)."""
    import numpy as np

    from aepsl.methods import metrics as M
    from aepsl.data.voc import SegDataset
    from aepsl.engine.train import inference_loader

    folder = stage_dir(resolve(params["artifacts_root"]), params["profile"], params["stage"])
    model, cfg = psl.load_segmenter(folder)
    tree = VOCTree(resolve(cfg.data_root))
    ds = SegDataset(tree, cfg.train_split, with_masks=False)
    ds.names = ds.names[:n]
    meter = M.ConfusionMeter(tree.num_classes)
    for batch in inference_loader(ds, cfg.eval_batch_size, 0, torch.device("cpu")):
        probs, _ = psl.predict(model, batch["image"], 0.0)   # nothing dropped, as val_miou_nodrop
        pred = probs.argmax(1).numpy().astype(np.uint8)
        for i, name in enumerate(batch["name"]):
            meter.update(pred[i], tree.mask(name))
    return M.segmentation_scores(meter.matrix, tree.classes)["miou"]


def setting_params(name: str, overrides: dict) -> dict:
    book = stage_params("default", "04_psl", ORACLE_RUN)
    params = {**book, **overrides}
    if all(book[k] == v for k, v in overrides.items()):
        return params                       # the book's own recipe: its own stage folder
    # kept apart from the book's stages, so its provenance page and results.md leave them out
    return {**params, "artifacts_root": RECIPE_ROOT,
            "stage": "oracle_" + name.replace("/", "_").replace(".", "").replace("-", "_").replace(" ", "")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", default="", help="run the settings whose name contains this")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "segmenter_recipe.json"))
    ap.add_argument("--reuse", action="store_true",
                    help="take a setting's finished run made under an earlier code revision instead of training it again")
    args = ap.parse_args()
    out = Path(args.out)
    results = json.loads(out.read_text()) if out.exists() else {}
    default_threads = torch.get_num_threads()
    for order, (name, overrides, threads) in enumerate(SETTINGS):
        if args.only and args.only not in name:
            continue
        params = setting_params(name, overrides)
        torch.set_num_threads(threads or default_threads)
        rec = (earlier_run(params) if args.reuse else None) or psl.run(params)
        torch.set_num_threads(default_threads)
        m = rec["metrics"]["eval"]
        folder = stage_dir(resolve(params["artifacts_root"]), params["profile"], params["stage"])
        sweep = report.drop_sweep(folder, resolve(params["data_root"]), params["eval_split"], thresholds=(0.0, 0.5))
        results[name] = {"order": order, "stage": params["stage"], "decoder": params["decoder"], "epochs": params["epochs"],
                         "lr": params["lr"], "weight_decay": params["weight_decay"],
                         "scale_range": params["scale_range"], "threads": threads or default_threads,
                         "test_threshold": params["test_threshold"], "val_miou": round(m["miou"], 4),
                         "val_miou_drop05": round(sweep["miou"][0.5], 4), "val_miou_nodrop": round(sweep["miou"][0.0], 4),
                         "true_classes_dropped_05": round(sweep["dropped_true"][0.5], 4),
                         "train_miou_300": round(train_fit(params), 4),
                         "val_miou_crf": round(m["crf_miou"], 4) if "crf_miou" in m else None,
                         "fg_precision": round(m["scores"]["fg_precision"], 4),
                         "fg_recall": round(m["scores"]["fg_recall"], 4),
                         "iou": {k: round(v, 4) for k, v in m["scores"]["iou"].items()},
                         "train_seconds": rec["timings_s"]["train"],
                         "code_hash": rec["code_hash"], "git_revision": rec["git_revision"]}
        print(name, json.dumps(results[name]), flush=True)
        results["_machine"] = {"cpus": default_threads, "python": platform.python_version(),
                               "torch": torch.__version__, "command": "python benchmarks/segmenter_recipe.py"}
        write_json(out, results)


if __name__ == "__main__":
    main()
