"""The one skeleton every stage entry point runs in, and the functions stages share.

    @stage(CAMConfig, "cam")
    def run(cfg, run, device, progress):     # called only when the stage must compute
        ...                                  # train (every process under torchrun)
        if not dist.is_main():
            return None                      # the others wait for rank 0's record
        ...                                  # evaluate, write artifacts
        return metrics                       # -> metrics.json

The decorated function is what the notebooks and both runners call: ``run(params, progress=True)``
with a flat parameter dict. The skeleton builds the config (unknown names, wrong types and bad
values refused), finds the stage folder the config ``writes()``, loads the metrics of every
stage it ``reads()`` (a missing one is one clear error naming the notebook to run), and forms
the cache key: the config's hashed fields (as its field metadata declares), the parameter
hashes of those inputs, the dataset's identity and the hash of the code the stage runs. A
finished run with that key is returned as it is (one kept aside as ``<stage>@<hash>`` when other
parameters ran since is renamed back into place first); otherwise a :class:`~aepsl.engine.artifacts.StageRun`
is opened (older results of other parameters moved aside), the body computes, and rank 0 writes
``metrics.json`` with a count of the files the stage wrote; a finished run whose folder lacks
some of them is computed again. Rank 0 does all this holding the stage folder's lock
(:mod:`aepsl.engine.locks`): a second process that needs the stage waits for it and reuses the
result, or stops with one line; a Ctrl-C leaves the stage to be resumed by the same command. A failure removes what the run created (:func:`~aepsl.engine.artifacts.stage_entry`).
"""
from __future__ import annotations

import contextlib
import functools
import shutil
from pathlib import Path
from typing import Callable

from . import dist
from .artifacts import (StageRun, code_hash, is_done, load_metrics, missing_ancestor, read_json, restore_archived,
                        stage_dir, stage_entry)
from .locks import locked
from .config import from_params, resolve
from ..data.voc import VOCTree


def dataset_identity(tree: VOCTree, split: str = "train") -> str:
    """What identifies the dataset's content: the generator's parameter hash for generated
    scenes, else the number of ``split`` images and the first and last name (an external tree)."""
    record = tree.root / "dataset.json"
    if record.exists():
        return read_json(record)["params_hash"]
    ids = tree.ids(split)
    return f"external:{len(ids)}:{ids[0] if ids else ''}:{ids[-1] if ids else ''}"


def scored_names(tree: VOCTree, train_split: str, score_split: str) -> set[str]:
    """The images of ``train_split`` whose seeds and pseudo masks are scored: those of
    ``score_split`` (which must lie within ``train_split``), if it has ground-truth masks."""
    train, score = set(tree.ids(train_split)), tree.ids(score_split)
    outside = [n for n in score if n not in train]
    if outside:
        raise ValueError(f"parameter score_split: {len(outside)} images of split {score_split!r} are not in "
                         f"train_split {train_split!r} (e.g. {outside[0]!r}); seeds exist only for train_split")
    return set(score) if tree.has_masks(score_split) else set()


def fresh_dir(path: Path) -> Path:
    """An empty folder at ``path`` (files left by an earlier run are removed)."""
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    return path


def _named_by(cfg, name: str) -> str:
    """Where the config names stage ``name``: the parameter, or the erasing round."""
    import dataclasses
    import re

    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if f.name != "stage" and isinstance(value, str) and (value == name or value.startswith(name + "/")):
            return f" (parameter {f.name}={value!r})"
    found = re.fullmatch(r"(.+)/round(\d+)", name)
    return f" (erasing round {found[2]} of stage {found[1]!r})" if found else ""


def input_records(cfg, where: str) -> dict[str, dict]:
    """The metrics.json record of every stage ``cfg.reads()``; a missing one is a
    FileNotFoundError naming it (and a folder of another profile an ArtifactError)."""
    root = resolve(cfg.artifacts_root)
    records = {}
    for name in cfg.reads():
        folder = stage_dir(root, cfg.profile, name)
        record = load_metrics(folder, cfg.profile)
        if record is None:
            raise FileNotFoundError(f"{where} ({cfg.writes()}) reads stage {name!r}{_named_by(cfg, name)}, which has "
                                    f"not finished: no {folder / 'metrics.json'}; run the notebook that writes it first")
        records[name] = record
    return records


def _remove_if_only_locks(folder: Path) -> None:
    """After a failed first run: remove the folder it created if only lock files are left in it."""
    if folder.is_dir() and all(p.is_dir() or p.name.endswith(".lock") for p in folder.rglob("*")):
        shutil.rmtree(folder, ignore_errors=True)


def stage(config: type, where: str, *, trains: bool = False, dataset: bool = True,
          ready: Callable[[object], bool] | None = None) -> Callable:
    """Decorator: ``body(cfg, run, device, progress) -> metrics`` becomes the stage entry point
    ``fn(params, progress=True) -> metrics.json record``.

    ``trains``: every torchrun process calls it (they agree with rank 0 on whether it is done,
    and wait for rank 0's record); otherwise rank 0 alone calls it.
    ``dataset``: the dataset's identity (of the config's ``train_split``) enters the cache key.
    ``ready``: an extra condition for a finished run to count as done (e.g. the data exist).
    The body returns the metrics dict on rank 0 and None on the other processes.
    """
    def decorate(body: Callable) -> Callable:
        @stage_entry
        def compute(cfg, inputs: dict, folder: Path, created: Path | None, progress: bool) -> dict:
            from .device import keep_freed_memory, pick_device, precision

            device = pick_device(cfg.device)
            # the float type the networks compute in (bfloat16 autocast or float32 on the CPU)
            # changes the numbers, so a run made in the other one is not reused
            hashed = {**cfg.hashed(), "inputs": {k: r["params_hash"] for k, r in inputs.items()},
                      "code": code_hash(body.__module__), "precision": precision(device)}
            if dataset:
                tree = VOCTree(resolve(cfg.data_root))
                hashed["dataset"] = dataset_identity(tree, getattr(cfg, "train_split", "train"))
            if not cfg.force and dist.is_main():
                restore_archived(folder, hashed)   # a finished run of these parameters kept aside
            done = not cfg.force and is_done(folder, hashed) and (ready is None or ready(cfg))
            if (dist.agree(done) if trains else done):
                return load_metrics(folder)
            keep_freed_memory()
            run = StageRun(folder, cfg.writes(), hashed, device=str(device), created=created)
            run.inputs = inputs
            metrics = body(cfg, run, device, progress)
            if trains and not dist.is_main():
                return dist.wait_for_main(folder)
            run.metrics = metrics
            record = run.finish()
            return dist.release(record) if trains else record

        @functools.wraps(body)
        def entry(params: dict, progress: bool = True) -> dict:
            cfg = from_params(config, params, where)
            inputs = input_records(cfg, where)
            folder = stage_dir(resolve(cfg.artifacts_root), cfg.profile, cfg.writes())
            main = dist.is_main()
            created = missing_ancestor(folder) if main else None   # before the lock file's folder exists
            # rank 0 computes the stage holding its folder's lock (the other ranks write nothing)
            lock = locked(folder, f"stage {cfg.writes()!r}") if main else contextlib.nullcontext()
            try:
                with lock:
                    try:
                        return compute(cfg, inputs, folder, created, progress)
                    except Exception:
                        if created is not None:
                            _remove_if_only_locks(created)
                        raise
            except KeyboardInterrupt as exc:   # the runners name the stage in their one line
                if not getattr(exc, "stage", None):
                    exc.stage = cfg.writes()
                raise

        entry.config = config
        return entry
    return decorate
