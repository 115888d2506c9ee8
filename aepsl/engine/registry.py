"""The stage registry: the one list of the book's notebooks and what computes each.

Per notebook: the package function that computes its stage, the parameter dataclass that
function takes (whose defaults, with this notebook's few ``defaults``, are the notebook's
``parameters`` cell), whether it trains (then every torchrun process runs it), and, through
the config's ``writes()`` / ``reads()``, which stage folder each run writes and which it
reads. Both runners use it: ``python -m aepsl`` (the notebooks, through papermill) and
``python -m aepsl.stages`` (the functions, also under torchrun); so do the report and the
tests that check the book's table of contents.

This module names code by strings and imports it only when asked, so importing the registry
is cheap and no stage's code hash depends on it.
"""
from __future__ import annotations

import dataclasses
import importlib
from dataclasses import dataclass, field
from typing import Any, Callable


@dataclass(frozen=True)
class Entry:
    """One notebook of the book."""

    notebook: str                 # "01_cam": notebooks/01_cam.py
    title: str                    # what the chapter is about, one line
    config: str                   # "module:Class", the parameter dataclass
    function: str | None = None   # "module:function", the stage; None: the page only reads metrics
    trains: bool = False          # every torchrun process runs it (else rank 0 alone)
    defaults: dict = field(default_factory=dict)   # where this notebook's defaults differ from the dataclass's

    def config_class(self) -> type:
        module, name = self.config.split(":")
        return getattr(importlib.import_module(module), name)

    def stage_function(self) -> Callable[..., dict] | None:
        if self.function is None:
            return None
        module, name = self.function.split(":")
        return getattr(importlib.import_module(module), name)

    def parameter_defaults(self) -> dict:
        """Every parameter of the notebook with its default, in the dataclass's field order."""
        cls = self.config_class()
        values = {f.name: _default(f) for f in dataclasses.fields(cls)}
        unknown = sorted(set(self.defaults) - set(values))
        if unknown:
            raise ValueError(f"registry entry {self.notebook}: defaults {unknown} are not fields of {cls.__name__}")
        return {**values, **self.defaults}

    def build(self, params: dict, where: str | None = None):
        """The run's config: the notebook's defaults, overridden by ``params`` (checked: unknown
        names, wrong types and bad values raise :class:`aepsl.engine.config.ParameterError`)."""
        from .config import ParameterError, from_params

        where = where or f"notebook {self.notebook}"
        try:
            return from_params(self.config_class(), {**self.defaults, **params}, where)
        except ParameterError:
            raise
        except ValueError as exc:
            raise ParameterError(f"{where}: {exc}") from None


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:   # type: ignore[misc]
        return f.default_factory()                      # type: ignore[misc]
    raise ValueError(f"parameter {f.name} has no default")


_PSL_PLUS_PLUS = {"stage": "psl_plus_plus", "labels": "psl/train_crf", "predict_train": False}

REGISTRY: tuple[Entry, ...] = (
    Entry("00_data", "the data: scenes written as a VOC tree, or a VOC tree checked",
          "aepsl.data.stage:DataConfig", "aepsl.data.stage:run"),
    Entry("01_cam", "CAM: a GAP classifier, its class activation maps, the threshold sweep",
          "aepsl.methods.cam:CAMConfig", "aepsl.methods.cam:run", trains=True),
    Entry("01_cam_variants", "Grad-CAM, Grad-CAM++, Score-CAM, LayerCAM ... from the CAM classifier, scored as seeds",
          "aepsl.methods.cam_variants:CAMVariantsConfig", "aepsl.methods.cam_variants:run"),
    Entry("02_erasing", "adversarial erasing: one round per run",
          "aepsl.methods.erasing:ErasingConfig", "aepsl.methods.erasing:run_round", trains=True),
    Entry("03_pseudo_masks", "the erasing rounds merged into pseudo masks",
          "aepsl.methods.erasing:MergeConfig", "aepsl.methods.erasing:merge"),
    Entry("04_psl", "segmenters: AE alone, AE + PSL, the fully supervised oracle",
          "aepsl.methods.psl:PSLConfig", "aepsl.methods.psl:run", trains=True),
    Entry("05_psl_plus_plus", "dense CRF and PSL++", "aepsl.methods.psl:PSLConfig", "aepsl.methods.psl:run", trains=True,
          defaults=_PSL_PLUS_PLUS),
    Entry("06_affinity", "AffinityNet and the random walk", "aepsl.methods.randomwalk:AffinityConfig",
          "aepsl.methods.randomwalk:run", trains=True),
    Entry("07_hfpl", "HFPL's likelihood losses, compared as regions and contours",
          "aepsl.methods.hfpl_compare:HFPLCompareConfig", "aepsl.methods.hfpl_compare:compare"),
    Entry("08_results", "the ablation table, from saved metrics", "aepsl.engine.config:PageConfig"),
    Entry("09_provenance", "where every number came from", "aepsl.engine.config:PageConfig"),
    Entry("10_design", "appendix: how the default was designed, from the design records",
          "aepsl.engine.config:PageConfig"),
    Entry("11_decisions", "appendix: each decision, why, its evidence and command", "aepsl.engine.config:PageConfig"),
)

BY_NOTEBOOK = {e.notebook: e for e in REGISTRY}


def entry(notebook: str) -> Entry:
    try:
        return BY_NOTEBOOK[notebook]
    except KeyError:
        from .config import ParameterError

        raise ParameterError(f"unknown notebook {notebook!r}; the book's notebooks are {list(BY_NOTEBOOK)}") from None


# --------------------------------------------------------------------------- a profile's plan
@dataclass
class PlannedRun:
    """One run of one notebook in a profile: what papermill injects (``params``, the profile's
    values), the config they build, and the stage folders it writes and reads."""

    entry: Entry
    name: str                     # output name, e.g. '02_erasing_round2'
    params: dict                  # the profile's values for this run (no '_' keys)
    config: Any
    writes: str | None            # stage folder under artifacts/<profile>/, None for pages
    reads: list[str]
    page: bool = True             # False: no page; the stage function runs without the notebook

    @property
    def notebook(self) -> str:
        return self.entry.notebook

    @property
    def stage_params(self) -> dict:
        """What the stage function takes: the notebook's own defaults (e.g. 05's stage name)
        under the profile's values, as the notebook's parameters cell would give them."""
        return {**self.entry.defaults, **self.params}


def run_name(name: str, run: dict, base: dict) -> str:
    """Output name of one run: ``_name`` if the run gives one, else the notebook name plus the
    parameters the run changes (e.g. '02_erasing_round2' for a run with round=2)."""
    if run.get("_name"):
        return str(run["_name"])
    changed = [k for k in run if not k.startswith("_") and (k not in base or base[k] != run[k]) and k != "force"]
    return name + "".join(f"_{k}{run[k]}" for k in changed)


def plan(profile: str, only: list[str] | None = None, force: bool = False,
         seed: int | None = None) -> list[PlannedRun]:
    """Every run of ``profile`` in order (with training seed ``seed``, when given: see
    :func:`aepsl.engine.config.with_seed`), each config built and checked, nothing touched.

    Raises :class:`aepsl.engine.config.ParameterError` for an unknown notebook, a parameter the
    notebook does not have, a wrong type or value, and a run that reads a stage no earlier
    run of the profile writes (unless ``only`` picks a subset: then the rest may be on disk).
    """
    from .config import ParameterError, load_profile, notebook_runs

    data = load_profile(profile, seed)
    names = list(data["notebooks"])
    for name in names:
        entry(name)   # an unknown notebook in the profile: one clear error
    order = [e.notebook for e in REGISTRY]
    if names != [n for n in order if n in names]:
        raise ParameterError(f"profile {profile!r} lists its notebooks out of the book's order {order}")
    if only:
        bad = [n for n in only if n not in names]
        if bad:
            raise ParameterError(f"--only {bad}: profile {profile!r} has notebooks {names}")
    runs: list[PlannedRun] = []
    for name in names:
        e = entry(name)
        base = {**data["common"], **{k: v for k, v in (data["notebooks"][name] or {}).items() if k != "runs"}}
        for params in notebook_runs(profile, name, seed):
            out_name = run_name(name, params, base)
            page = bool(params.get("_page", True))
            if not page and e.function is None:
                raise ParameterError(f"run {out_name}: '_page: false' needs a notebook that computes a stage")
            params = {k: v for k, v in params.items() if not k.startswith("_")}
            if force:
                params["force"] = True
            cfg = e.build(params, f"notebook {out_name}")
            writes = cfg.writes() if hasattr(cfg, "writes") else None
            reads = list(cfg.reads()) if hasattr(cfg, "reads") else []
            runs.append(PlannedRun(e, out_name, params, cfg, writes, reads, page))
    if not only:
        written: dict[str, str] = {}
        for run in runs:
            missing = [r for r in run.reads if r not in written]
            if missing:
                raise ParameterError(f"notebook {run.name} reads stage(s) {missing}, which no earlier run of "
                                     f"profile {profile!r} writes (add the runs that write them, in order)")
            if run.writes:
                if run.writes in written:
                    raise ParameterError(f"notebooks {written[run.writes]} and {run.name} both write stage "
                                         f"{run.writes!r}: give one of them another 'stage'")
                written[run.writes] = run.name
    if only:
        runs = [r for r in runs if r.notebook in only]
    return runs


def describe(runs: list[PlannedRun]) -> list[str]:
    """The plan as lines a person reads: order, notebook run, what it writes and reads."""
    lines = []
    width = max((len(r.name) for r in runs), default=0)
    for i, r in enumerate(runs, start=1):
        kind = "trains" if r.entry.trains else ("computes" if r.entry.function else "page")
        kind += "" if r.page else " (no page)"
        writes = r.writes or "(reads the metrics of every stage)"
        reads = ", ".join(r.reads) if r.reads else "-"
        lines.append(f"{i:2d}. {r.name:<{width}}  {kind:<8}  writes {writes}  reads {reads}")
    return lines


def stage_modules(runs) -> list[str]:
    """The modules of the stage functions of planned ``runs`` (pages without a stage left out)."""
    return sorted({run.entry.function.split(":")[0] for run in runs if run.entry.function})
