"""Compute a profile's stages without the notebooks — on one GPU, or several with torchrun.

    python -m aepsl.stages --profile voc                               # one process
    python -m aepsl.stages --profile voc --check                       # the plan only, nothing touched
    torchrun --standalone --nproc_per_node 4 -m aepsl.stages --profile voc
    python -m aepsl --profile voc                                      # then the notebooks
    python -m aepsl.stages --profile default --seed 1                  # training seed 1 -> artifacts/default_seed1/

Every run of the profile maps, through :mod:`aepsl.engine.registry`, to the package function doing
its work (the function the notebook itself calls), run with the same parameters the pipeline
would give the notebook, so the notebooks run afterwards find every stage done and only draw.
Under torchrun the training stages train data-parallel on every process and rank 0 writes;
stages without training (data check, merge, comparison) run on rank 0 while the others wait.
Pages that compute nothing (the results and provenance chapters) are left to ``python -m aepsl``.
``--seed K`` runs the profile with training seed K under ``<profile>_seed<K>``, as ``python -m
aepsl --seed K`` does (see :mod:`aepsl.engine.run_notebooks`). Two runs at once, ``--no-wait`` and
Ctrl-C behave as there (:mod:`aepsl.engine.locks`).
"""
from __future__ import annotations

import argparse
import sys

from . import dist
from .artifacts import ArtifactError, code_pinned, write_json
from .config import PROFILE_RECORD, ParameterError, load_profile, profile_record, resolve
from .run_notebooks import add_profile_options, add_wait_option, apply_wait_option, interrupted
from .registry import PlannedRun, plan, stage_modules


def run_stages(profile: str, only: list[str] | None = None, force: bool = False, progress: bool = True,
               seed: int | None = None) -> list[dict]:
    """Run the stage functions of ``profile`` (with training seed ``seed``, when given) in order;
    returns the records rank 0 wrote."""
    runs: list[PlannedRun] = plan(profile, only, force, seed)   # every run checked before anything runs
    with code_pinned(stage_modules(runs)):   # the code the stages run is the code their records name
        records = []
        for run in runs:
            fn = run.entry.stage_function()
            if fn is None:
                if dist.is_main():
                    print(f"[aepsl.stages] {run.name}: a page, nothing to compute (python -m aepsl renders it)", flush=True)
                continue
            if dist.is_main():
                print(f"[aepsl.stages] {run.name} (world size {dist.world_size()}) ...", flush=True)
            try:
                if run.entry.trains:   # every process trains; rank 0 evaluates and writes, the others wait inside
                    record = fn(run.stage_params, progress=progress and dist.is_main())
                else:
                    record = fn(run.stage_params, progress=progress) if dist.is_main() else None
                    dist.barrier()
            except KeyboardInterrupt as exc:
                exc.stage = getattr(exc, "stage", None) or run.name
                raise
            if dist.is_main():
                records.append(record)
                print(f"[aepsl.stages] {run.name} done ({record.get('stage')}, {record.get('wall_time_s')} s)", flush=True)
    if dist.is_main() and runs:   # beside the stages: the profile's seed, and whose seed run it is
        data = load_profile(profile, seed)
        common = data["common"]
        write_json(resolve(common.get("artifacts_root", "artifacts")) / str(common["profile"]) / PROFILE_RECORD,
                   profile_record(data))
    return records


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m aepsl.stages", description=__doc__.split("\n\n")[0])
    add_profile_options(ap, default="voc")
    ap.add_argument("--only", nargs="*", help="run only these notebooks' stages (e.g. 01_cam 02_erasing)")
    ap.add_argument("--force", action="store_true", help="recompute stages even when their artifacts exist")
    ap.add_argument("--no-progress", action="store_true", help="no progress bars")
    ap.add_argument("--check", action="store_true", help="dry run: check every run's parameters, print the plan, exit")
    add_wait_option(ap)
    args = ap.parse_args(argv)
    if args.check:
        from .run_notebooks import print_plan

        try:
            print_plan(args.profile, args.only, args.seed)
        except (ParameterError, FileNotFoundError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        return 0
    joined = not dist.is_initialized()   # leave a process group the caller made to the caller
    try:
        device = str(load_profile(args.profile)["common"].get("device", "auto"))
        apply_wait_option(args)
        dist.init_from_env(device)
        run_stages(args.profile, args.only, args.force, progress=not args.no_progress, seed=args.seed)
    except KeyboardInterrupt as exc:
        return interrupted(exc)
    except (ParameterError, FileNotFoundError, ValueError) as exc:
        print(f"error (rank {dist.rank()}): {exc}", file=sys.stderr)
        return 2
    except (ArtifactError, OSError) as exc:   # a busy stage (--no-wait), a full disk, a read-only folder
        print(f"error (rank {dist.rank()}): {exc}", file=sys.stderr)
        return 1
    finally:
        if joined:
            dist.shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
