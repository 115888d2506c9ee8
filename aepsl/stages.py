"""Compute a profile's stages without the notebooks — on one GPU, or several with torchrun.

    python -m aepsl.stages --profile voc                               # one process
    torchrun --standalone --nproc_per_node 4 -m aepsl.stages --profile voc
    python -m aepsl --profile voc                                      # then the notebooks

Each notebook of the profile maps to the package function doing its work (the function the
notebook itself calls), run with the same parameters the pipeline would give the notebook,
so the notebooks run afterwards find every stage done and only draw. Under torchrun the
training stages train data-parallel on every process and rank 0 writes; stages without
training (data check, merge) run on rank 0 while the others wait. Notebooks without a stage
function here (the results and provenance pages, and chapters that compute in the notebook)
are left to ``python -m aepsl``.
"""
from __future__ import annotations

import argparse
import sys
from typing import Callable

from . import dist
from .config import ParameterError, load_profile, notebook_runs
from .pipeline import check_parameters


def _stage_functions() -> dict[str, tuple[Callable[..., dict], bool]]:
    """notebook -> (stage function, whether it trains: then every process runs it)."""
    from . import cam, erasing, hfpl, psl, randomwalk
    from .data import stage as data_stage

    return {
        "00_data": (data_stage.run, False),
        "01_cam": (cam.run, True),
        "02_erasing": (erasing.run_round, True),
        "03_pseudo_masks": (erasing.merge, False),
        "04_psl": (psl.run, True),
        "05_psl_plus_plus": (psl.run, True),
        "06_affinity": (randomwalk.run, True),
        "07_hfpl": (hfpl.compare, False),
    }


def run_stages(profile: str, only: list[str] | None = None, force: bool = False, progress: bool = True) -> list[dict]:
    """Run the stage functions of ``profile`` in order; returns the records rank 0 wrote."""
    data = load_profile(profile)
    names = list(data["notebooks"])
    if only:
        bad = [n for n in only if n not in names]
        if bad:
            raise ParameterError(f"--only {bad}: profile {profile!r} has notebooks {names}")
        names = [n for n in names if n in only]
    functions = _stage_functions()
    plan = []
    for name in names:   # every run's parameters are checked as the notebooks would check them, first
        if name not in functions:
            if dist.is_main():
                print(f"[aepsl.stages] {name}: nothing to compute here (run the notebooks: python -m aepsl)",
                      flush=True)
            continue
        for params in notebook_runs(profile, name):
            label = params.get("_name") or name
            params = {k: v for k, v in params.items() if not k.startswith("_")}
            if force:
                params["force"] = True
            check_parameters(name, params)
            plan.append((name, label, params))
    records = []
    for name, label, params in plan:
        fn, trains = functions[name]
        if dist.is_main():
            print(f"[aepsl.stages] {label} (world size {dist.world_size()}) ...", flush=True)
        if trains:   # every process trains; rank 0 evaluates and writes, the others wait inside
            record = fn(params, progress=progress and dist.is_main())
        else:
            record = fn(params, progress=progress) if dist.is_main() else None
            dist.barrier()
        if dist.is_main():
            records.append(record)
            print(f"[aepsl.stages] {label} done ({record.get('stage')}, {record.get('wall_time_s')} s)", flush=True)
    return records


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m aepsl.stages", description=__doc__.split("\n\n")[0])
    ap.add_argument("--profile", default="voc", help="profile name (notebooks/params/<name>.yaml) or a YAML path")
    ap.add_argument("--only", nargs="*", help="run only these notebooks' stages (e.g. 01_cam 02_erasing)")
    ap.add_argument("--force", action="store_true", help="recompute stages even when their artifacts exist")
    ap.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = ap.parse_args(argv)
    joined = not dist.is_initialized()   # leave a process group the caller made to the caller
    try:
        device = str(load_profile(args.profile)["common"].get("device", "auto"))
        dist.init_from_env(device)
        run_stages(args.profile, args.only, args.force, progress=not args.no_progress)
    except (ParameterError, FileNotFoundError, ValueError) as exc:
        print(f"error (rank {dist.rank()}): {exc}", file=sys.stderr)
        return 2
    finally:
        if joined:
            dist.shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
