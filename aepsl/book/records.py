"""Reading back what the stages and benchmarks saved, as the pages need it: a stage's record (or the
variant profile's), whether it was made on these scenes, the scene parameters, saved predictions,
the numbers of the intro's map; paths as a page shows them."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..methods.metrics import image_miou

def ranked_predictions(artifacts_root: str | Path, profile: str, stages: list[str], data_root: str | Path,
                       split: str = "val") -> list[dict]:
    """Every ``split`` image as each segmenter stage in ``stages`` predicted it at test time (its
    own ``test_threshold``, no CRF; the PNGs the stage saved in ``eval_pred/``), ranked by the
    first stage's per-image mIoU, best first: ``[{name, image, gt, preds: {stage: mask},
    miou: {stage: float}}]``. Nothing is recomputed."""
    from PIL import Image

    from ..data.voc import VOCTree

    tree = VOCTree(data_root)
    folders = {s: Path(artifacts_root) / profile / s / "eval_pred" for s in stages}
    for s, folder in folders.items():
        if not folder.is_dir():
            raise FileNotFoundError(f"no saved predictions of stage {s!r} in {folder}: rerun its notebook")
    out = []
    for name in tree.ids(split):
        gt = tree.mask(name)
        preds = {s: np.asarray(Image.open(folder / f"{name}.png")) for s, folder in folders.items()}
        out.append({"name": name, "image": tree.image(name), "gt": gt, "preds": preds,
                    "miou": {s: image_miou(p, gt, tree.num_classes) for s, p in preds.items()}})
    first = stages[0]
    return sorted(out, key=lambda r: -np.nan_to_num(r["miou"][first], nan=-1.0))


# Parameters that say how a run was computed, not what: left out of a page's parameter table.
RUNTIME_PARAMETERS = ("device", "eval_batch_size", "num_workers", "torch_compile", "force", "crf_workers")


PATH_PARAMETERS = ("data_root", "artifacts_root", "fashion_dir", "saliency_dir", "backbone_weights")


# The profile whose runs hold the variants the default book's prose discusses (same scenes).
VARIANTS_PROFILE = "extended"


VARIANTS_COMMAND = "make book PROFILE=extended"


def shown_path(path: str | Path) -> str:
    """A path as a page shows it: relative to the repository root; a path outside the repository
    as its last two parts after '…/' (one machine's absolute paths mean nothing to a reader)."""
    from ..engine.artifacts import REPO_DIR

    text = str(path)
    if not text or not Path(text).is_absolute():
        return text
    p = Path(text)
    try:
        return str(p.resolve().relative_to(REPO_DIR.resolve()))
    except ValueError:
        return "…/" + "/".join(p.parts[-2:]) + " (outside the repository)"


def stage_metrics(artifacts_root: str | Path, profile: str, stage: str, data_root: str | None = None,
                  fallback: str | None = VARIANTS_PROFILE) -> tuple[dict | None, str | None]:
    """``(metrics.json record, profile it came from)`` of ``stage``: this profile's run when it made
    one, else the ``fallback`` profile's (the variant studies), when that run exists and was made
    on the same data (``data_root``, when given); else ``(None, None)``."""
    from ..engine.artifacts import load_metrics

    root = Path(artifacts_root)
    rec = load_metrics(root / profile / stage)
    if rec is not None:
        return rec, profile
    if fallback and fallback != profile:
        rec = load_metrics(root / fallback / stage)
        if rec is not None and (data_root is None or same_data(rec, data_root, root / fallback)):
            return rec, fallback
    return None, None


def same_data(record: dict, data_root: str, folder: Path | None = None) -> bool:
    """Whether ``record`` (of a stage under the profile folder ``folder``) was made on the data now
    at ``data_root``: the same folder, and — for generated scenes — the same content (the scene
    parameters' hash that the profile's CAM stage recorded), so a run on scenes since regenerated
    with other parameters does not count."""
    from ..engine.artifacts import load_metrics
    from ..engine.config import resolve
    from ..data.voc import VOCTree
    from ..engine.stage import dataset_identity

    theirs = (record.get("params") or {}).get("data_root")
    if theirs is None or resolve(theirs).resolve() != resolve(data_root).resolve():
        return False
    cam = load_metrics(folder / "cam") if folder is not None else None
    made_on = ((cam or {}).get("params") or {}).get("dataset")
    if made_on is None or not (resolve(data_root) / "dataset.json").exists():
        return True
    return made_on == dataset_identity(VOCTree(resolve(data_root)))


def scene_params(data_root: str) -> dict | None:
    """The generator parameters of the scenes under ``data_root`` (its ``dataset.json``), or
    None for a tree the scene generator did not write (PASCAL VOC)."""
    from ..engine.config import resolve

    path = resolve(data_root) / "dataset.json"
    return json.loads(path.read_text()).get("params") if path.exists() else None


def pipeline_numbers(artifacts_root: str | Path, profile: str) -> dict:
    """The numbers the intro's pipeline map carries, read from the stages' metrics.json (None
    where a stage has not run): pseudo-label mIoU on the train split for the seeds, held-out
    mIoU for the segmenters."""
    from ..engine.artifacts import load_metrics

    root = Path(artifacts_root) / profile

    def get(stage, *keys):
        rec = load_metrics(root / stage)
        value = rec
        for k in ("metrics",) + keys:
            if not isinstance(value, dict) or k not in value:
                return None
            value = value[k]
        return value

    per = get("pseudo_masks", "per_rounds") or []
    return {"CAM": get("cam", "seed_miou"), "AE": [p.get("miou") for p in per],
            "AE segmenter": get("ae_segmenter", "eval", "miou"), "PSL": get("psl", "eval", "miou"),
            "PSL++": get("psl_plus_plus", "eval", "miou"), "oracle": get("oracle", "eval", "miou"),
            "CAM + random walk": get("affinity_cam", "miou_after"), "CAM + HFPL": get("cam_hfpl", "seed_miou"),
            "CAM + random walk, PSA background": get("affinity_cam", "power_walk", "miou")}


# The design records the appendix reads, each with the command that writes it.
DESIGN_RECORDS = {
    "calibration": "python benchmarks/calibrate.py",
    "book_recipe": "python benchmarks/book_recipe.py",
    "erasing_design": "python benchmarks/erasing_design.py",
    "segmenter_recipe": "python benchmarks/segmenter_recipe.py",
    "psl_design": "python benchmarks/psl_design.py",
    "body_recognition": "python benchmarks/body_recognition.py",
    "book_time": "python benchmarks/book_time.py",
}


def design_record(name: str, folder: str | Path | None = None) -> dict:
    """The design record ``benchmarks/<name>.json`` (``folder`` instead of ``benchmarks/`` when
    given) as a dict; ``{}`` when the file is not there, so a page shows an empty table and
    :func:`aepsl.book.notes.missing_record` instead of failing."""
    from ..engine.artifacts import REPO_DIR

    path = Path(folder if folder is not None else REPO_DIR / "benchmarks") / f"{name}.json"
    if not path.is_file():
        return {}
    data = json.loads(path.read_text())
    return data if isinstance(data, dict) else {"runs": data}


def design_entries(record: dict) -> list[tuple[str, dict]]:
    """The entries of a design record, in the order recorded (their ``order`` field, else the
    file's order), without the ``_``-prefixed fields that describe the record as a whole."""
    items = [(k, v) for k, v in record.items() if not k.startswith("_") and isinstance(v, dict)]
    return [kv for _, kv in sorted(enumerate(items), key=lambda iv: (iv[1][1].get("order", iv[0]), iv[0]))]


# The profile whose runs the book's prose describes as "the book's" recipe.
BOOK_PROFILE = "default"


def book_parameters(notebook: str, run: int = -1, profile: str = BOOK_PROFILE) -> dict:
    """Every parameter of the book's run ``run`` of ``notebook`` (the last by default): the
    notebook's defaults overridden by what ``profile`` sets, so a page of any profile can name
    the book's recipe without typing it."""
    from ..engine.config import notebook_runs
    from ..engine.registry import entry

    chosen = notebook_runs(profile, notebook)[run]
    return {**entry(notebook).parameter_defaults(), **{k: v for k, v in chosen.items() if not k.startswith("_")}}


def saved_names(folder: str | Path, names: list[str], suffix: str = ".png") -> list[str]:
    """The names of ``names`` (in their order) for which a stage saved ``<folder>/<name><suffix>``;
    none where the folder is missing."""
    folder = Path(folder)
    return [n for n in names if (folder / f"{n}{suffix}").is_file()]


def saved_mask(artifacts_root: str | Path, profile: str, stage: str, sub: str, name: str) -> np.ndarray | None:
    """The label PNG ``<stage>/<sub>/<name>.png`` a stage saved (class ids, 255 = unlabelled), or
    None when that stage has not saved it."""
    from PIL import Image

    path = Path(artifacts_root) / profile / stage / sub / f"{name}.png"
    return np.asarray(Image.open(path)) if path.is_file() else None


def stages_with_saved(artifacts_root: str | Path, profile: str, stages, sub: str = "eval_pred") -> list[str]:
    """Those of ``stages`` (in order) that saved a ``<sub>/`` folder of masks under this profile."""
    return [s for s in stages if (Path(artifacts_root) / profile / s / sub).is_dir()]


def saved_mask_rows(artifacts_root: str | Path, profile: str, tree, names, columns) -> tuple[list, list]:
    """A figure's rows from saved masks: for each of ``names``, the image, then one mask per column
    of ``columns`` (``[(title, stage, sub)]``: ``<stage>/<sub>/<name>.png``), then the true mask.
    A column some image lacks (its stage has not run, or saved no such folder) is left out of every
    row, so the figure shows only what was saved. Returns ``(rows of arrays, rows of titles)``:
    masks as class ids, to be coloured by the page."""
    masks = {c: [saved_mask(artifacts_root, profile, c[1], c[2], n) for n in names] for c in columns}
    kept = [c for c in columns if all(m is not None for m in masks[c])]
    rows = [[tree.image(n)] + [masks[c][i] for c in kept] + [tree.mask(n)] for i, n in enumerate(names)]
    titles = [["image"] + [c[0] for c in kept] + ["ground truth"] for _ in names]
    return rows, titles


def affinity_figure(folder: str | Path) -> list[dict]:
    """What an affinity stage saved for its page (``affinity_figure.npz``, see
    :func:`aepsl.methods.randomwalk.save_figure_affinities`): ``[{name, point: (y, x), map}]``,
    the affinity of every cell to the cell at ``point``; empty when the stage saved none."""
    path = Path(folder) / "affinity_figure.npz"
    if not path.is_file():
        return []
    with np.load(path) as data:
        return [{"name": str(n), "point": tuple(int(v) for v in data[f"point_{n}"]),
                 "map": data[f"map_{n}"].astype(np.float32)} for n in data["names"]]


def cam_variant_figure(folder: str | Path) -> tuple[list[str], dict[str, list[np.ndarray]]]:
    """What the CAM-variants stage saved for its page (``figure.npz``, see
    :func:`aepsl.methods.cam_variants.save_figure`): the image names, and per method the maps
    [K,H,W] (float32) of each image's labelled classes; ``([], {})`` when the stage saved none."""
    path = Path(folder) / "figure.npz"
    if not path.is_file():
        return [], {}
    with np.load(path) as data:
        names = [str(n) for n in data["names"]]
        methods = [str(m) for m in data["methods"]]
        maps = {m: [data[f"m{j}_i{i}"].astype(np.float32) for i in range(len(names))]
                for j, m in enumerate(methods)}
    return names, maps
