"""Write benchmarks/results.md from what pipeline runs saved (no number is typed by hand).

    make book && make book PROFILE=extended         # the default book and the variant studies
    .venv/bin/python benchmarks/record_results.py --profile default extended   # -> benchmarks/results.md
    .venv/bin/python benchmarks/record_results.py --dry-run    # what it would read and write; writes nothing

One section per profile; the default book's timed run from empty (benchmarks/book_time.py) is
quoted from benchmarks/book_time.json when present. The comparisons across training seeds take
the runs of ``python -m aepsl --profile default --seed K`` found by their records (each profile
folder's profile.json: its seed and the profile it is a seed of), never by folder names.

Reads every stage's metrics.json under artifacts/<profile>/
and .venv/.aepsl-setup-seconds (written by `make setup`).
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

from aepsl.book import records  # noqa: E402
from aepsl.engine.artifacts import cpu_model, current_metrics_files, is_archived, load_metrics, write_text  # noqa: E402
from aepsl.engine.config import seed_runs  # noqa: E402


def fmt(x, digits=3):
    return "–" if x is None else (f"{x:.{digits}f}" if isinstance(x, float) else str(x))


def previous_sections(path: Path) -> dict[str, str]:
    """The ``## Profile `name` `` sections of an earlier results.md, by profile name."""
    if not path.exists():
        return {}
    out, name, buf = {}, None, []
    for line in path.read_text().splitlines():
        if line.startswith("## "):
            if name:
                out[name] = "\n".join(buf)
            name = line.split("`")[1] if line.startswith("## Profile `") else None
            buf = [line]
        elif name:
            buf.append(line)
    if name:
        out[name] = "\n".join(buf)
    return out


def seed_profiles(artifacts: str | Path, profile: str) -> list[tuple[str, Path]]:
    """``profile``'s own artifacts folder, then those of its runs with other training seeds
    (``python -m aepsl --profile <profile> --seed K``, found by :func:`aepsl.engine.config.seed_runs`
    from their records): (profile name, folder) each, in seed order."""
    own = Path(artifacts) / profile
    return [(profile, own)] + [(folder.name, folder) for _, folder in seed_runs(artifacts, profile).items()]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python benchmarks/record_results.py", description=__doc__.split("\n\n")[0])
    ap.add_argument("--profile", nargs="+", default=["default", "extended"],
                    help="profiles to report, one section each (those without artifacts are left out)")
    ap.add_argument("--artifacts", default=str(ROOT / "artifacts"))
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results.md"))
    ap.add_argument("--seeds-of", default="default",
                    help="the profile whose runs with other training seeds (--seed K) are compared, one row each")
    ap.add_argument("--status", default="", help="a sentence on the state of the run (e.g. which stages are older)")
    ap.add_argument("--dry-run", action="store_true", help="check the inputs, say what would be written, write nothing")
    args = ap.parse_args(argv)
    args.seeds = seed_profiles(args.artifacts, args.seeds_of)
    if args.dry_run:
        for profile in args.profile:
            folder = Path(args.artifacts) / profile
            print(f"profile {profile}: {len(current_metrics_files(folder)) if folder.is_dir() else 0} stage records "
                  f"under {folder}" + ("" if folder.is_dir() else " (none: its section is kept or left out)"))
        print(f"training seeds of {args.seeds_of!r}: " + ", ".join(name for name, _ in args.seeds))
        for name in ("book_time.json", "body_recognition.json", "psl_design.json", "randomwalk_memory.json"):
            path = ROOT / "benchmarks" / name
            if path.exists():
                json.loads(path.read_text())   # a broken record fails here, not halfway through writing
            print(f"benchmarks/{name}: {'read' if path.exists() else 'absent'}")
        print(f"would write {args.out} (dry run: nothing written)")
        return 0
    lines = ["# Measured results", "",
             "Written by `.venv/bin/python benchmarks/record_results.py --profile "
             + " ".join(args.profile) + "` after `make book` (and `make book PROFILE=extended`). Every number "
             "below is read from the saved artifacts (`artifacts/<profile>/*/metrics.json`) or from "
             "`benchmarks/book_time.json` (the timed `make book` from empty, `benchmarks/book_time.py`).", "",
             f"Machine: {torch.get_num_threads()} CPU threads, {platform.machine()} ({cpu_model()}), Python "
             f"{platform.python_version()}, torch {torch.__version__}, no GPU.", ""]
    if args.status:
        lines += [f"**Status:** {args.status}", ""]
    timed = ROOT / "benchmarks" / "book_time.json"
    if timed.exists():
        lines += book_time_lines(json.loads(timed.read_text()))
    lines += seed_lines(args)
    lines += body_lines(ROOT / "benchmarks" / "body_recognition.json")
    lines += segmenter_seed_lines(args)
    lines += branch_lines(args)
    previous = previous_sections(Path(args.out))
    for profile in args.profile:
        folder = Path(args.artifacts) / profile
        if not folder.is_dir():
            kept = previous.get(profile)
            if kept:   # not rebuilt here: keep what the last record said, and say so
                note = ("*Kept from the previous `benchmarks/results.md`: this profile's artifacts are not on "
                        "the machine that wrote this file, so its section is the earlier record, made on "
                        "that record's machine and revision.*")
                head, _, rest = kept.partition("\n")
                if note not in rest:
                    rest = "\n" + note + "\n" + rest
                lines += [head + rest.rstrip("\n"), ""]
            continue
        cam = load_metrics(folder / "cam")
        data_root = ((cam or {}).get("params") or {}).get("data_root")
        if data_root and not records.same_data(cam, data_root, folder):
            lines += [f"## Profile `{profile}`", "", f"Left out: its stages were made on scenes since regenerated "
                      f"with other parameters in `{data_root}`; `make book PROFILE={profile}` remakes them.", ""]
            continue
        lines += profile_lines(args, profile)
    write_text(args.out, "\n".join(lines) + "\n")
    print(f"wrote {args.out}")
    return 0


def seed_lines(args) -> list[str]:
    """CAM at its best threshold against the AE pseudo masks, one row per training seed (the
    profile of ``--seeds-of`` and its runs with other seeds)."""
    rows = []
    for profile, art in args.seeds:
        cam, pm = load_metrics(art / "cam"), load_metrics(art / "pseudo_masks")
        if not cam or not pm or "per_rounds" not in pm["metrics"]:
            continue
        per = [p["miou"] for p in pm["metrics"]["per_rounds"]]
        c = cam["metrics"]["seed_miou"]
        er = load_metrics(art / pm["params"].get("erasing_stage", "erasing") / "round2")
        how = (f"prior {er['params'].get('mine_prior', 0):g}, mining at {er['params']['mine_threshold']:g}"
               if er else "–")
        rows.append(f"| {cam['params']['seed']} | `{profile}` | {how} | {fmt(cam['metrics'].get('val_map'))} | {fmt(c)} | "
                    + " / ".join(fmt(v) for v in per) + f" | {max(per) - c:+.3f} | "
                    + " / ".join(fmt(v) for v in pm["metrics"].get("round_precision") or []) + " |")
    if not rows:
        return []
    return ["## CAM against adversarial erasing, one row per training seed", "",
            "Same scenes (data seed 0), classifier and erasing rounds trained with each seed; pseudo-mask "
            f"mIoU on the training scenes. Seed K's run: `.venv/bin/python -m aepsl --profile {args.seeds_of} "
            "--seed K` (the profile's whole chain with training seed K, under its own profile name).", "",
            "| seed | profile | erasing recipe | CAM val mAP | CAM mIoU (best threshold) | "
            "AE mIoU after 1 / 2 / 3 / 4 rounds | best AE − CAM | region precision per round |",
            "|---|---|---|---|---|---|---|---|", *rows, ""]


def body_lines(path: Path) -> list[str]:
    """Each erasing round's classifier on the held-out scenes, as they are and with their discs
    erased (benchmarks/body_recognition.py)."""
    if not path.exists():
        return []
    rows = []
    book = json.loads(path.read_text())
    for profile, e in book.items():
        for r in e["rounds"]:
            rows.append(f"| `{profile}` | {r['round']} | {fmt(r['val_map'])} | {fmt(r['val_map_discs_erased'])} |")
    commands = sorted({f"`{e['command']}`" for e in book.values() if e.get("command")})
    return ["## Does a round's classifier recognise the bodies?", "",
            "mAP of each round's classifier (round 1: the CAM stage's) on the held-out (val) scenes as they are "
            "and with every disc filled with the mean pixel, as erasing fills a mined region. Commands: "
            + ", ".join(commands) + " (read from `benchmarks/body_recognition.json`).", "",
            "| profile | round | val mAP | val mAP, discs erased |", "|---|---|---|---|", *rows, ""]


SEGMENTERS = (("ae_segmenter", "AE segmenter"), ("psl", "AE + PSL"), ("psl_plus_plus", "PSL++"),
              ("oracle", "oracle"))


def segmenter_seed_lines(args) -> list[str]:
    """The book's four segmenters, one row per training seed (held-out mIoU, with the CRF, and
    PSL++ against the oracle)."""
    rows = []
    for profile, art in args.seeds:
        recs = {s: load_metrics(art / s) for s, _ in SEGMENTERS}
        if any(r is None for r in recs.values()):
            continue
        ev = {s: r["metrics"]["eval"] for s, r in recs.items()}
        seed = recs["psl"]["params"]["seed"]
        cells = " | ".join(f"{fmt(ev[s]['miou'])} / {fmt(ev[s].get('crf_miou'))}" for s, _ in SEGMENTERS)
        ratio = ev["psl_plus_plus"]["miou"] / ev["oracle"]["miou"]
        ratio_crf = ev["psl_plus_plus"]["crf_miou"] / ev["oracle"]["crf_miou"]
        rows.append(f"| {seed} | `{profile}` | {cells} | {ratio:.2f} / {ratio_crf:.2f} |")
    if not rows:
        return []
    return ["## The segmenters, one row per training seed", "",
            "Held-out (val) mIoU without / with the dense CRF, each seed's segmenters trained on its own AE "
            "masks (PSL++ on its PSL run's CRF-refined training predictions; the oracle on the true masks). "
            f"Seed K's run: `.venv/bin/python -m aepsl --profile {args.seeds_of} --seed K`.", "",
            "| seed | profile | " + " | ".join(n for _, n in SEGMENTERS) + " | PSL++ / oracle |",
            "|---|---|" + "---|" * (len(SEGMENTERS) + 1), *rows, ""]


def branch_lines(args) -> list[str]:
    """The segmenter designs (PSL's Ŝ: where it is scored, its warm-up; the branch), two training
    seeds, from benchmarks/psl_design.json (benchmarks/psl_design.py records them)."""
    path = ROOT / "benchmarks" / "psl_design.json"
    if not path.exists():
        return []
    book = json.loads(path.read_text())
    rows = []
    for e in sorted(book.values(), key=lambda e: (e["seed"], e["order"])):
        online = (f"{e['online_pixels']}" + (f", after {e['online_warmup']} epochs" if e.get("online_warmup") else "")
                  if e["online"] else "–")
        err = e["errors"]
        rows.append(f"| {e['seed']} | {e['design']} | `{e['stage']}` | `{e['labels']}` | {online} | "
                    f"{e['test_threshold']:g} | {fmt(e['miou'])} | {fmt(e['miou_nothing_dropped'])} | "
                    f"{fmt(e['crf_miou'])} | {fmt(err['bg_as_object'])} / {fmt(err['object_as_bg'])} / "
                    f"{fmt(err['object_as_other'])} | {fmt(e['dropped_true']['0.1'])} / {fmt(e['dropped_true']['0.5'])} | "
                    f"`{(e.get('git_revision') or '')[:7]}` |")
    if not rows:
        return []
    return ["## The segmenters and PSL's online map Ŝ, two training seeds", "",
            "Held-out (val) mIoU of segmenters trained on each seed's AE masks (PSL++ on its PSL run's CRF "
            "masks; the oracle on the true masks). `Ŝ`: the pixels the online map is scored on (`labelled`: "
            "where S labels, the book; `all`: every pixel of the crop) and, where it has one, the warm-up on S "
            "alone before Ŝ enters the loss (`online_warmup`). Drop below: the test-time threshold on the "
            "branch's confidence (the largest over crop-sized windows). Errors: shares of all held-out pixels "
            "that are background called an item / an item called background / an item given another class "
            "(before the CRF). Dropped: share of the (image, class) pairs the held-out images contain whose "
            "confidence is below 0.1 / 0.5. Recorded by `benchmarks/psl_design.py` into "
            "`benchmarks/psl_design.json`; `benchmarks/designs.yaml` holds the designs.", "",
            "| seed | design | stage | labels | Ŝ | drop below | mIoU | mIoU, nothing dropped | + CRF | "
            "errors bg→item / item→bg / item→other | true classes dropped < 0.1 / < 0.5 | revision |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|", *rows, ""]


def book_time_lines(record: dict) -> list[str]:
    """The timed `make book` runs (newest last), as benchmarks/book_time.py recorded them, with the
    seconds of its fixed reference workload (the machine's speed then; runs before it: –)."""
    lines = ["## `make book` from empty artifacts, timed", "",
             "| when | profile | git revision | command | wall (s) | CPU (s) | peak RSS (MiB) | cores "
             "| load before / after | reference workload before / after (s) |", "|---" * 10 + "|"]
    note_lines = []
    for r in record.get("runs", []):
        ref = r.get("reference_s") or {}
        mark = ""
        if r.get("reference_note"):
            note_lines.append(r["reference_note"])
            mark = f" (note {len(note_lines)})"
        lines.append(f"| {r['finished_at']} | {r['profile']} | `{r['git_revision']}` | `{r['command']}` | "
                     f"{r['wall_s']} | {r['cpu_s']} | {r['peak_rss_mib']} | {r['cores']} | "
                     f"{r['load_before']} / {r['load_after']} | "
                     + (f"{ref.get('before')} / {ref.get('after')}" if ref else "–") + mark + " |")
    if note_lines:
        lines += [""] + [f"Note {i}: {n}" for i, n in enumerate(note_lines, start=1)]
    last = (record.get("runs") or [None])[-1]
    if last and last.get("stages"):
        lines += ["", f"Per stage in the last run ({last['profile']}): wall / CPU seconds, load at start / end.", "",
                  "| stage | wall (s) | CPU (s) | load start / end |", "|---|---|---|---|"]
        for stage, t in last["stages"].items():
            lines.append(f"| `{stage}` | {t['wall_s']} | {t['cpu_s']} | {t['load']} |")
    return lines + [""]


def profile_lines(args, profile: str) -> list[str]:
    art = Path(args.artifacts) / profile
    lines = []
    revisions = {}
    for path in current_metrics_files(art):
        rec = json.loads(path.read_text())
        revisions.setdefault(rec.get("git_revision"), []).append(str(path.parent.relative_to(art)))
    if len(revisions) > 1:
        lines += ["Stages by the git revision that computed them: " + "; ".join(
            f"`{rev}`: {', '.join(sorted(stages))}" for rev, stages in revisions.items()), ""]
    setup = ROOT / ".venv" / ".aepsl-setup-seconds"
    if setup.exists():
        lines += [f"`make setup` (venv + pinned stack, first time): {setup.read_text().strip()} s.", ""]
    # per-stage compute time from each stage's metrics.json (kept when a later run skips the stage)
    lines += ["## Stages: wall time, CPU time, load", "",
              "Recorded by each stage when it computed (a later run that finds it done keeps them). A load "
              "average well above the cores' count means other jobs shared the machine: the wall time is then "
              "not the stage's own.", "",
              "| stage | wall (s) | CPU (s) | load start / end | peak RSS (MiB) | parts (s) |", "|---" * 6 + "|"]
    for path in current_metrics_files(art):
        rec = json.loads(path.read_text())
        stage = str(path.parent.relative_to(art))
        load = rec.get("load_average") or {}
        lines.append(f"| `{stage}` | {rec.get('wall_time_s')} | {rec.get('cpu_time_s', '–')} | "
                     f"{load.get('start', '–')} / {load.get('end', '–')} | {rec.get('peak_rss_mib', '–')} | "
                     f"{rec.get('timings_s', {})} |")
    lines.append("")
    data = load_metrics(art / "data")
    cam = load_metrics(art / "cam")
    if data:
        g = data["metrics"].get("generator") or {}
        lines += [f"Data: {data['metrics']['splits']['train']['images']} train scenes, "
                  f"{len(data['metrics']['classes']) - 1} classes; generation {fmt(g.get('seconds'), 1)} s.", ""]
    if cam:
        m = cam["metrics"]
        lines += ["## CAM (notebook 01_cam)", "", "| metric | value |", "|---|---|",
                  f"| classification mAP, val | {fmt(m['val_map'])} |",
                  f"| classification mAP, train | {fmt(m['train_map'])} |",
                  f"| CAM seed mIoU, train split (best bg threshold) | {fmt(m.get('seed_miou'))} |",
                  f"| best background threshold | {fmt(m.get('best_threshold'), 2)} |",
                  f"| seed fg precision / recall | {fmt(m['seed']['best_scores']['fg_precision'])} / "
                  f"{fmt(m['seed']['best_scores']['fg_recall'])} |",
                  f"| classifier training time (s) | {cam['timings_s'].get('train')} |",
                  f"| CAM inference + scoring time (s) | {cam['timings_s'].get('cams')} |", ""]
    pm = load_metrics(art / "pseudo_masks")
    if pm and "per_rounds" in pm["metrics"]:
        m = pm["metrics"]
        lines += ["## Adversarial erasing (notebooks 02_erasing, 03_pseudo_masks)", "",
                  f"Pseudo masks on the train split; background cue `{m['bg_cue']}` "
                  f"(threshold {pm['params']['bg_threshold']}); ignore (255) scored as background.", "",
                  "| pseudo masks | mIoU | fg precision | fg recall | labelled share |", "|---|---|---|---|---|"]
        if cam:
            s = cam["metrics"]["seed"]["best_scores"]
            lines.append(f"| CAM alone (best threshold) | {fmt(s['miou'])} | {fmt(s['fg_precision'])} | "
                         f"{fmt(s['fg_recall'])} | 1.000 |")
        for k, p in enumerate(m["per_rounds"], start=1):
            lines.append(f"| AE, {k} round{'s' if k > 1 else ''} | {fmt(p['miou'])} | {fmt(p['fg_precision'])} | "
                         f"{fmt(p['fg_recall'])} | {fmt(p['labelled_fraction'])} |")
        lines += ["", "Per-round classifiers (train mAP on their own erased inputs / val mAP on clean images): "
                  + ", ".join(f"round {k}: {fmt(t)} / {fmt(v)}" for k, (t, v) in
                              enumerate(zip(m["round_train_map"], m["round_val_map"]), start=1)), ""]
        if m.get("round_precision"):
            lines += ["Per-round regions (precision: share of the round's mined pixels of the right class; "
                      "disc / body: share of those parts' pixels the round found, then found so far): "
                      + ", ".join(f"round {k}: precision {fmt(pr)}"
                                  + (f", disc {fmt(c['this_round']['disc'])}, body {fmt(c['this_round']['body'])}"
                                     f" (so far {fmt(c['so_far']['body'])})" if c else "")
                                  for k, (pr, c) in enumerate(zip(m["round_precision"], m["round_part_coverage"]),
                                                              start=1)), ""]
            lines += [f"Masks written for the segmenters: {m['rounds']} rounds (mIoU {fmt(m['miou'])}).", ""]
        for variant in sorted(p.name for p in art.glob("pseudo_masks_*") if not is_archived(p, art)):
            vm = load_metrics(art / variant)
            if vm and "per_rounds" in vm["metrics"]:
                lines.append(f"- `{variant}`: " + ", ".join(
                    f"{k} round{'s' if k > 1 else ''} mIoU {fmt(p['miou'])}"
                    for k, p in enumerate(vm["metrics"]["per_rounds"], start=1)))
        lines.append("")
    walks = [(p.parent.name, load_metrics(p.parent)) for p in current_metrics_files(art)
             if p.parent.parent == art and p.parent.name.startswith("affinity")]
    walks = [(s, r) for s, r in walks if r and "miou_after" in r["metrics"]]
    if walks:
        lines += ["## AffinityNet + random walk (notebook 06_affinity)", "",
                  "Seeds on the train split before and after the walk (radius 5, beta 8; alphas and steps per "
                  "stage as listed), and the seed mIoU after t = 2^logt steps for each logt of the stage's sweep.", "",
                  "| stage | seeds | alphas (labels low / high, walk) | steps | mIoU before | mIoU after "
                  "| fg precision before / after | fg recall before / after | uncertain share of affinity labels "
                  "| AffinityNet train (s) | walk (s) |", "|---" * 11 + "|"]
        for stage, r in walks:
            m, prm = r["metrics"], r["params"]
            alphas = (f"{prm.get('alpha_low')} / {prm.get('alpha_high')}, {prm.get('alpha_infer')}"
                      if m["seed_kind"] == "cams" else "– (mask seeds)")
            lines.append(f"| `{stage}` | `{m['seeds']}` | {alphas} | {m['walk']['steps']} | {fmt(m['miou_before'])} | "
                         f"{fmt(m['miou_after'])} | "
                         f"{fmt(m['before']['fg_precision'])} / {fmt(m['after']['fg_precision'])} | "
                         f"{fmt(m['before']['fg_recall'])} / {fmt(m['after']['fg_recall'])} | "
                         f"{fmt(m['labels']['uncertain_fraction'])} | {r['timings_s'].get('train')} | "
                         f"{r['timings_s'].get('walk')} |")
        swept = [(s, r["metrics"]["logt_sweep"]) for s, r in walks if "logt_sweep" in r["metrics"]]
        if swept:
            steps = sorted({int(k) for _, sw in swept for k in sw})
            lines += ["", "| stage | " + " | ".join(f"t = {2 ** k}" for k in steps) + " |",
                      "|---" * (len(steps) + 1) + "|"]
            for stage, sw in swept:
                lines.append(f"| `{stage}` | " + " | ".join(fmt(sw.get(str(k))) for k in steps) + " |")
        lines.append("")
    mem = ROOT / "benchmarks" / "randomwalk_memory.json"
    if mem.exists():
        bench = json.loads(mem.read_text())
        lines += ["### Random-walk memory", "", f"Command: `{bench['command']}` ({bench['machine']}, {bench['date']}); "
                  "peak resident memory added by AffinityNet's forward pass + the walk (256 steps, 21 score maps), "
                  "each case in a fresh process.", "", "| case | input | cells at stride 8 | added MB | seconds |",
                  "|---|---|---|---|---|"]
        for name, c in bench["cases"].items():
            lines.append(f"| {name} ({c['method']}) | {c['input']} | {c['cells']} | {c['added_mb']} | {c['seconds']} |")
        lines.append("")
    hf = load_metrics(art / "hfpl")
    if hf:
        lines += ["## HFPL (notebook 07_hfpl)", "",
                  f"Seeds on the train split; contour F-score with a tolerance of {hf['metrics']['tolerance']} px.", "",
                  "| seeds | stage | mIoU | fg precision | fg recall | contour precision | contour recall | contour F |",
                  "|---" * 8 + "|"]
        for label, r in hf["metrics"]["rows"].items():
            lines.append(f"| {label} | `{r['stage']}` | {fmt(r['miou'])} | {fmt(r['fg_precision'])} | "
                         f"{fmt(r['fg_recall'])} | {fmt(r['contour_precision'])} | {fmt(r['contour_recall'])} | "
                         f"{fmt(r['contour_f'])} |")
        ch = load_metrics(art / "cam_hfpl")
        if ch and cam:
            lines += ["", f"Classifier val mAP: {fmt(cam['metrics']['val_map'])} without HFPL, "
                      f"{fmt(ch['metrics']['val_map'])} with it."]
        lines.append("")
    from aepsl.book.tables import ablation_table

    table = ablation_table(args.artifacts, profile)
    if not table.empty:
        lines += ["## Ablation table (as in the results chapter)", "",
                  "| method | " + " | ".join(table.columns) + " |", "|---" * (len(table.columns) + 1) + "|"]
        for method, row in table.iterrows():
            cells = [("–" if isinstance(v, float) and v != v else fmt(v, 1 if col.startswith("wall") else 3))
                     for col, v in row.items()]
            lines.append(f"| {method} | " + " | ".join(cells) + " |")
        lines.append("")
    return [f"## Profile `{profile}`", ""] + [ln.replace("## ", "### ", 1) if ln.startswith("## ") else ln
                                              for ln in lines]


if __name__ == "__main__":
    raise SystemExit(main())
