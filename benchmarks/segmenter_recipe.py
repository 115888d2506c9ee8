"""Which segmenter recipe reaches the oracle target on the default scenes?

Trains the fully supervised oracle (the ``04_oracle`` run of notebook 04_psl: the PSL chapter's
segmenter on the true masks) with other heads and epoch counts, on the default profile's
scenes, and records the held-out mIoU with and without the dense CRF into
``benchmarks/segmenter_recipe.json``; the data chapter reads that file. Every saved model is
also scored with PSL's test-time drop at 0.5 and with nothing dropped, as its stage saved them
(``metrics.drop_sweep``: the held-out mIoU at every drop threshold, computed once with the model):
the runs before the book's own were made with the drop, the book's oracle drops nothing.

Each setting is a real stage run, ``artifacts/segmenter-recipe/default/oracle_<name>/`` (the
book's own oracle, ``artifacts/default/oracle/``, for the book's recipe), so a setting already
computed for the current code and parameters is read back instead of trained again.

    .venv/bin/python benchmarks/segmenter_recipe.py                  # every setting (~50 min on 2 cores)
    .venv/bin/python benchmarks/segmenter_recipe.py --only stride4    # names containing 'stride4'
    .venv/bin/python benchmarks/segmenter_recipe.py --dry-run         # the plan: settings, folders, runs found
    .venv/bin/python benchmarks/segmenter_recipe.py --profile quick --only stride4/e5   # the settings on another profile
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from aepsl.methods import psl  # noqa: E402
from aepsl.engine.artifacts import load_metrics, stage_dir, write_json  # noqa: E402
from aepsl.engine.config import notebook_runs, resolve, stage_params  # noqa: E402
from aepsl.methods.cam import dataset_identity  # noqa: E402
from aepsl.data.voc import VOCTree  # noqa: E402
from aepsl.methods.psl import PSLConfig  # noqa: E402

RECIPE_FOLDER = "segmenter-recipe"   # settings other than the book's: <artifacts_root>/segmenter-recipe/<profile>/oracle_<name>/
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


def oracle_run(profile: str = "default") -> int:
    """The index of the oracle among the profile's runs of 04_psl (the run whose stage is ``oracle``)."""
    runs = notebook_runs(profile, "04_psl")
    found = [i for i, run in enumerate(runs) if run.get("stage") == "oracle"]
    if not found:
        raise KeyError(f"the {profile} profile has no oracle run of 04_psl (stage: oracle)")
    return found[0]


def book_oracle_params(profile: str = "default") -> dict:
    """The book's oracle run, every PSLConfig parameter spelled out (its defaults where the
    profile states nothing)."""
    defaults = {f.name: f.default if f.default is not dataclasses.MISSING else f.default_factory()
                for f in dataclasses.fields(PSLConfig)
                if f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING}
    return {**defaults, **stage_params(profile, "04_psl", oracle_run(profile))}


def setting_params(name: str, overrides: dict, profile: str = "default") -> dict:
    book = book_oracle_params(profile)
    params = {**book, **overrides}
    if all(book[k] == v for k, v in overrides.items()):
        return params                       # the book's own recipe: its own stage folder
    # kept apart from the book's stages, so its provenance page and results.md leave them out
    return {**params, "artifacts_root": str(Path(book["artifacts_root"]) / RECIPE_FOLDER),
            "stage": "oracle_" + name.replace("/", "_").replace(".", "").replace("-", "_").replace(" ", "")}


def _at(table: dict, threshold: float):
    """A drop sweep's value at ``threshold`` (its keys are strings, as JSON keeps them)."""
    value = {float(t): v for t, v in table.items()}.get(float(threshold))
    if value is None:
        raise KeyError(f"the stage's drop sweep has no threshold {threshold} (it has {sorted(table)})")
    return value


def _r(x, n: int = 4):
    """``x`` rounded to ``n`` decimals (None stays None: a score with nothing to count)."""
    return None if x is None else round(float(x), n)


def result_row(order: int, params: dict, rec: dict, threads: int, train_miou: float) -> dict:
    """The record of one setting from its stage's metrics.json: held-out mIoU as the stage scored
    it, at PSL's drop 0.5 and with nothing dropped (``metrics.drop_sweep``, saved by the stage),
    with the CRF, and ``train_miou`` on 300 training images."""
    m = rec["metrics"]["eval"]
    sweep = rec["metrics"].get("drop_sweep")
    if not sweep:
        raise KeyError(f"{params['stage']}: its metrics.json has no drop_sweep (a run of older code: "
                       "rerun the setting without --reuse)")
    return {"order": order, "stage": params["stage"], "decoder": params["decoder"], "epochs": params["epochs"],
            "lr": params["lr"], "weight_decay": params["weight_decay"],
            "scale_range": params["scale_range"], "threads": threads,
            "test_threshold": params["test_threshold"], "val_miou": _r(m["miou"]),
            "val_miou_drop05": _r(_at(sweep["miou"], 0.5)), "val_miou_nodrop": _r(_at(sweep["miou"], 0.0)),
            "true_classes_dropped_05": _r(_at(sweep["dropped_true"], 0.5)),
            "train_miou_300": _r(train_miou),
            "val_miou_crf": _r(m.get("crf_miou")),
            "fg_precision": _r(m["scores"]["fg_precision"]),
            "fg_recall": _r(m["scores"]["fg_recall"]),
            "iou": {k: _r(v) for k, v in m["scores"]["iou"].items()},
            "train_seconds": rec["timings_s"]["train"],
            "code_hash": rec["code_hash"], "git_revision": rec["git_revision"]}


def dry_run(settings: list, profile: str) -> int:
    """Print the plan (each setting's stage folder and whether a finished run is there); train nothing."""
    data_root = resolve(book_oracle_params(profile)["data_root"])
    print(f"scenes: {data_root} ({'there' if Path(data_root).is_dir() else 'not there: `make book` makes them'})")
    for order, (name, overrides, threads) in settings:
        params = setting_params(name, overrides, profile)
        folder = stage_dir(resolve(params["artifacts_root"]), params["profile"], params["stage"])
        rec = load_metrics(folder)
        state = "finished for the current code and parameters" if rec else "to train"
        print(f"{order}. {name}: {folder.relative_to(ROOT) if folder.is_relative_to(ROOT) else folder}, "
              f"{threads or torch.get_num_threads()} thread(s), {state}")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--profile", default="default",
                    help="the book profile whose oracle run the settings change (a name or a YAML path)")
    ap.add_argument("--only", default="", help="run the settings whose name contains this")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "segmenter_recipe.json"))
    ap.add_argument("--reuse", action="store_true",
                    help="take a setting's finished run made under an earlier code revision instead of training it again")
    ap.add_argument("--dry-run", action="store_true", help="print the plan and what is already computed; train nothing")
    args = ap.parse_args()
    chosen = [(order, s) for order, s in enumerate(SETTINGS) if not args.only or args.only in s[0]]
    if args.dry_run:
        return dry_run(chosen, args.profile)
    out = Path(args.out)
    results = json.loads(out.read_text()) if out.exists() else {}
    default_threads = torch.get_num_threads()
    for order, (name, overrides, threads) in chosen:
        params = setting_params(name, overrides, args.profile)
        torch.set_num_threads(threads or default_threads)
        rec = (earlier_run(params) if args.reuse else None) or psl.run(params)
        torch.set_num_threads(default_threads)
        results[name] = result_row(order, params, rec, threads or default_threads, train_fit(params))
        print(name, json.dumps(results[name]), flush=True)
        results["_machine"] = {"cpus": default_threads, "python": platform.python_version(),
                               "torch": torch.__version__, "command": "python benchmarks/segmenter_recipe.py"}
        write_json(out, results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
