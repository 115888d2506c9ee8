"""The results table is built only from metrics.json files."""
from __future__ import annotations

import json
import math

import pytest

from aepsl.engine.artifacts import REPO_DIR, ArtifactError, write_json
from aepsl.methods import metrics
from aepsl.book import notes, records, tables
from aepsl.book.tables import PUBLISHED, ablation_table


def _stage(root, stage, metrics, wall=10.0):
    write_json(root / "p" / stage / "metrics.json", {"metrics": metrics, "wall_time_s": wall, "params": {}})


def test_ablation_table_rows_ratio_and_published_column(tmp_path):
    _stage(tmp_path, "cam", {"seed_miou": 0.40})
    _stage(tmp_path, "pseudo_masks", {"rounds": 2, "per_rounds": [{"miou": 0.42}, {"miou": 0.45}]})
    _stage(tmp_path, "erasing/round1", {}, wall=1.0)
    _stage(tmp_path, "erasing/round2", {}, wall=2.0)
    _stage(tmp_path, "psl", {"eval": {"miou": 0.50, "crf_miou": 0.55}, "train": {"miou": 0.48, "crf_miou": 0.52}})
    _stage(tmp_path, "oracle", {"eval": {"miou": 0.80, "crf_miou": 0.88}})
    table = ablation_table(tmp_path, "p")
    assert list(table.index) == ["CAM (best bg threshold)", "AE, 1 round", "AE, 2 rounds", "AE + PSL",
                                 "AE + PSL + CRF", "fully supervised oracle", "fully supervised oracle + CRF"]
    assert table.loc["AE, 2 rounds", "pseudo-label mIoU (train)"] == 0.45
    assert table.loc["AE + PSL", "ratio to oracle"] == 0.50 / 0.80
    assert table.loc["AE + PSL + CRF", "final mIoU (held-out)"] == 0.55
    assert table.loc["AE + PSL + CRF", "ratio to oracle"] == 0.55 / 0.88   # CRF rows against the oracle + CRF
    assert table.loc["AE, 2 rounds", "wall time (s)"] == 2.0
    assert math.isnan(float(table.loc["CAM (best bg threshold)", "final mIoU (held-out)"]))
    assert table.loc["AE + PSL", "published (VOC 2012)"] == PUBLISHED["AE (3 rounds, saliency bg) + PSL"]


def test_ablation_table_add_on_rows(tmp_path):
    _stage(tmp_path, "cam", {"seed_miou": 0.40})
    _stage(tmp_path, "cam_hfpl", {"seed_miou": 0.43})
    _stage(tmp_path, "affinity_cam", {"miou_before": 0.38, "miou_after": 0.47})
    _stage(tmp_path, "affinity_cam_cut", {"miou_before": 0.40, "miou_after": 0.52})
    _stage(tmp_path, "pseudo_masks", {"rounds": 1, "per_rounds": [{"miou": 0.42}]})
    _stage(tmp_path, "pseudo_masks_erasing_hfpl", {"rounds": 3, "miou": 0.44})
    _stage(tmp_path, "affinity_ae", {"miou_before": 0.42, "miou_after": 0.49})
    table = ablation_table(tmp_path, "p")
    assert list(table.index) == ["CAM (best bg threshold)", "CAM + HFPL", "CAM + random walk (AffinityNet)",
                                 "CAM + random walk, PSA's background, our alphas", "AE, 1 round", "AE + HFPL, 3 rounds", "AE + random walk (AffinityNet)"]
    col = table["pseudo-label mIoU (train)"]
    assert (col["CAM + HFPL"], col["CAM + random walk (AffinityNet)"], col["AE + HFPL, 3 rounds"],
            col["AE + random walk (AffinityNet)"]) == (0.43, 0.47, 0.44, 0.49)
    assert table.loc["CAM + random walk (AffinityNet)", "published (VOC 2012)"] == PUBLISHED["CAM + random walk"]
    assert table.loc["CAM + random walk, PSA's background, our alphas", "pseudo-label mIoU (train)"] == 0.52


def _variants(images: int, masks: str | None = None) -> dict:
    return {"images": images, "of_images": 100, "masks": {"method": masks} if masks else None,
            "methods": {"cam": {"label": "CAM", "best_miou": 0.40},
                        "gradcam": {"label": "Grad-CAM", "best_miou": 0.44},
                        "scorecam": {"label": "Score-CAM", "best_miou": 0.41}}}


def test_ablation_table_best_later_cam_rows(tmp_path):
    _stage(tmp_path, "cam", {"seed_miou": 0.40})
    _stage(tmp_path, "cam_variants", _variants(100, masks="scorecam"))
    _stage(tmp_path, "cam_variant_segmenter", {"eval": {"miou": 0.55}}, wall=5.0)
    _stage(tmp_path, "ae_segmenter", {"eval": {"miou": 0.60}})
    _stage(tmp_path, "oracle", {"eval": {"miou": 0.80}})
    table = ablation_table(tmp_path, "p")
    # the method whose seeds the segmenter learned from, not the best-scored one
    assert list(table.index) == ["CAM (best bg threshold)", "best later CAM: Score-CAM",
                                 "AE (segmenter on AE masks, no PSL)", "segmenter on Score-CAM's seeds, no PSL",
                                 "fully supervised oracle"]
    assert table.loc["best later CAM: Score-CAM", "pseudo-label mIoU (train)"] == 0.41
    assert table.loc["segmenter on Score-CAM's seeds, no PSL", "final mIoU (held-out)"] == 0.55
    assert table.loc["segmenter on Score-CAM's seeds, no PSL", "ratio to oracle"] == 0.55 / 0.80


def test_ablation_table_best_later_cam_needs_every_training_image(tmp_path):
    _stage(tmp_path, "cam", {"seed_miou": 0.40})
    _stage(tmp_path, "cam_variants", _variants(24))
    assert list(ablation_table(tmp_path, "p").index) == ["CAM (best bg threshold)"]
    _stage(tmp_path, "cam_variants", _variants(100))   # no masks written: the best-scored method
    assert ablation_table(tmp_path, "p").loc["best later CAM: Grad-CAM", "pseudo-label mIoU (train)"] == 0.44


def test_ablation_table_of_a_profile_that_never_ran_is_empty(tmp_path):
    assert ablation_table(tmp_path, "nothing").empty


def test_provenance_lists_every_finished_stage(tmp_path):
    from aepsl.book.tables import provenance_table

    write_json(tmp_path / "p" / "cam" / "metrics.json",
               {"params_hash": "abc", "code_hash": "c0de", "seed": 1, "git_revision": "r1", "device": "cpu",
                "wall_time_s": 3.5})
    write_json(tmp_path / "p" / "erasing" / "round2" / "metrics.json",
               {"params_hash": "def", "seed": 1, "git_revision": "r1", "device": "cpu", "wall_time_s": 7.0})
    table = provenance_table(tmp_path, "p")
    assert list(table.index) == ["cam", "erasing/round2"]
    assert table.loc["erasing/round2", "params hash"] == "def"
    assert table.loc["cam", "wall time (s)"] == 3.5
    assert table.loc["cam", "code hash"] == "c0de"


def test_ablation_table_refuses_a_folder_of_another_profile(tmp_path):
    write_json(tmp_path / "p" / "cam" / "metrics.json",
               {"metrics": {"seed_miou": 0.4}, "wall_time_s": 1.0, "params": {"profile": "quick"}})
    with pytest.raises(ArtifactError, match="written by profile 'quick'"):
        ablation_table(tmp_path, "p")


def test_image_miou_counts_only_classes_in_truth_or_prediction():
    import numpy as np

    gt = np.array([[0, 0, 1, 1], [0, 0, 1, 255]])
    pred = np.array([[0, 0, 1, 2], [0, 0, 1, 1]])
    # background: 4/4; class 1: 2 of the 3 labelled class-1 pixels right, one predicted 2 -> 2/3;
    # class 2: predicted once, never true -> 0; classes 3.. absent -> not counted; 255 ignored
    assert metrics.image_miou(pred, gt, num_classes=5) == pytest.approx((1 + 2 / 3 + 0) / 3)
    assert metrics.image_miou(gt.clip(0, 1), gt, num_classes=5) == 1.0


def test_segmenter_recipe_table_reads_the_benchmark_file(tmp_path):
    path = tmp_path / "segmenter_recipe.json"
    entry = dict(stage="s", code_hash="c", git_revision="g", fg_precision=0.9, fg_recall=0.8, train_seconds=10.0)
    path.write_text(json.dumps({
        "_machine": {"cpus": 2},
        "stride4/e12": {**entry, "order": 1, "decoder": "stride4", "epochs": 12, "val_miou": 0.7, "val_miou_crf": 0.75,
                        "test_threshold": 0.0, "val_miou_nodrop": 0.7, "val_miou_drop05": 0.65,
                        "true_classes_dropped_05": 0.1,
                        "lr": 0.001, "weight_decay": 0.01, "scale_range": [0.7, 1.3],
                        "iou": {"background": 0.98, "a": 0.6, "b": 0.8}},
        "largefov/e5": {**entry, "order": 0, "decoder": "none", "epochs": 5, "val_miou": 0.6, "val_miou_crf": None,
                        "test_threshold": 0.5, "val_miou_nodrop": 0.62, "val_miou_drop05": 0.6,
                        "true_classes_dropped_05": 0.2,
                        "iou": {"background": 0.95, "a": 0.7, "b": 0.5}},
    }))
    table = tables.segmenter_recipe_table(path)
    assert list(table.index) == ["largefov/e5", "stride4/e12"]       # in the order tried; no machine entry
    assert table.loc["stride4/e12", "head"] == "LargeFOV + stride-4 decoder"
    assert table.loc["largefov/e5", "head"] == "LargeFOV"
    # the worst class is the lowest foreground IoU, never the background
    assert table.loc["stride4/e12", "worst class"] == "a" and table.loc["stride4/e12", "its IoU"] == 0.6
    assert table.loc["largefov/e5", "worst class"] == "b" and table.loc["largefov/e5", "its IoU"] == 0.5
    assert table.loc["stride4/e12", "val mIoU + CRF (as run)"] == 0.75
    # both test-time rules, whichever the run itself used
    assert table.loc["stride4/e12", "val mIoU, drop < 0.5"] == 0.65
    assert table.loc["stride4/e12", "val mIoU, nothing dropped"] == 0.7
    assert table.loc["largefov/e5", "val mIoU, nothing dropped"] == 0.62
    assert table.loc["largefov/e5", "test-time drop in the run"] == 0.5
    assert table.loc["largefov/e5", "true classes dropped at 0.5"] == 0.2
    assert table.loc["stride4/e12", "scale range"] == "0.7-1.3" and table.loc["stride4/e12", "weight decay"] == 0.01


def test_variant_runs_count_only_on_the_same_scenes(scene_tree, tmp_path):
    """A variant profile's run on the same folder is quoted only while the scenes there are
    the ones it was made on (generated scenes: the same parameter hash)."""
    from aepsl.data.voc import VOCTree
    from aepsl.engine.stage import dataset_identity

    now = dataset_identity(VOCTree(scene_tree))
    variants = records.VARIANTS_PROFILE

    def made_on(identity):
        write_json(tmp_path / variants / "cam" / "metrics.json",
                   {"metrics": {}, "params": {"data_root": str(scene_tree), "dataset": identity}})
        write_json(tmp_path / variants / "erasing_t07" / "round1" / "metrics.json",
                   {"metrics": {"mined_total_fraction": 0.1}, "params": {"data_root": str(scene_tree)}})
        return records.stage_metrics(tmp_path, "p", "erasing_t07/round1", str(scene_tree))[1]

    assert made_on(now) == variants
    assert made_on("0123456789abcdef") is None          # the scenes were regenerated since
    assert records.stage_metrics(tmp_path, "p", "erasing_t07/round1", str(tmp_path / "elsewhere"))[1] is None


def _design(order, seed=0, gain=0.06, hue=0.34, cpu="AMD EPYC", numerics=None, **recipe):
    """One entry of benchmarks/erasing_design.json, as benchmarks/erasing_design.py writes it."""
    return {"order": order, "seed": seed, "cam": {"val_map": 0.95, "seed_miou": 0.5},
            "ae_miou_per_rounds": [0.45, 0.5 + gain], "ae_best_minus_cam": gain,
            "scenes": {"class_hue": hue, "part_size": [20, 26], "item_size": [48, 72], "max_items": 3},
            "recipe": {**tables.paper_erasing(), **recipe},
            "rounds": [{"round": 1, "val_map": 0.95, "region_precision": 0.8,
                        "part_coverage": {"this_round": {"disc": 0.97, "body": 0.2}}},
                       {"round": 2, "val_map": 0.5, "region_precision": 0.6}],
            **({"cpu": cpu} if cpu else {}), **({"numerics": numerics} if numerics is not None else {})}


def test_erasing_designs_say_which_machine_and_code_measured_each_row():
    record = {"old / pm": _design(0, cpu=None), "new / pm": _design(1, numerics=tables.NUMERICS),
              "older code / pm": _design(2, numerics=tables.NUMERICS - 1)}
    designs = tables.erasing_designs(record)
    assert list(designs["measured on"]) == ["CPU not recorded, older float rounding", "AMD EPYC",
                                            "AMD EPYC, older float rounding"]
    assert list(designs["round-2 precision"]) == [0.6, 0.6, 0.6]
    assert not designs["scenes"].str.contains("/").any()       # short names, no internal design ids


def test_erasing_recipe_table_picks_recipes_by_their_parameters_not_their_names():
    designs = tables.erasing_designs({
        "background prior 0.2 / pm": _design(0, 0, 0.05, mine_prior=0.2),     # the name would match both
        "background prior 0.25 / pm": _design(1, 0, 0.04, mine_prior=0.25),  # priors; the recipe does not
        "a / pm": _design(2, 1, 0.03, mine_prior=0.2),
        "b / pm": _design(3, 0, 0.07), "c / pm": _design(4, 1, 0.02),
        "paper, other scenes / pm": _design(5, 0, 0.09, hue=1.0),
        "prior, mining at 0.55 / pm": _design(6, 0, 0.06, mine_prior=0.2, mine_threshold=0.55)})
    table = tables.erasing_recipe_table(designs, 0.34, [{}, {"mine_prior": 0.2}])
    assert list(table.index) == ["paper's recipe", "prior 0.2"]
    assert list(table["seeds"]) == ["0, 1", "0, 1"]
    assert table.loc["paper's recipe", "AE − CAM, mean"] == pytest.approx(0.045)
    assert table.loc["prior 0.2", "AE − CAM, worst seed"] == pytest.approx(0.03)
    assert tables.erasing_recipe_table(designs, 0.5).empty                # no design on those scenes
    every = tables.erasing_recipe_table(designs, 0.34)
    assert set(every.index) == {"paper's recipe", "prior 0.2", "prior 0.25", "prior 0.2, mining at 0.55"}


def test_a_design_recorded_again_replaces_its_entries_in_place(tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("erasing_design", REPO_DIR / "benchmarks" / "erasing_design.py")
    design = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(design)
    path = tmp_path / "designs.json"
    design.record(path, "a", "first", {"a / pm_a": {"seed": 0}, "a / pm_a2": {"seed": 0},   # two merges, one seed
                                       "a, seed 1 / pm_a": {"seed": 1}}, "cmd a")
    design.record(path, "b", "other", {"b / pm_b": {"seed": 0}}, "cmd b")
    design.record(path, "a", "again", {"a / pseudo_masks": {"seed": 0}}, "cmd book")
    book = json.loads(path.read_text())
    assert sorted(book) == ["a / pseudo_masks", "a, seed 1 / pm_a", "b / pm_b"]   # seed 0's entries replaced
    assert book["a / pseudo_masks"]["order"] in (0, 1) and book["a / pseudo_masks"]["note"] == "again"
    assert book["a / pseudo_masks"]["numerics"] == tables.NUMERICS and book["b / pm_b"]["order"] == 3


def test_integer_ticks_puts_epochs_on_whole_numbers():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from aepsl.book import viz

    fig, ax = plt.subplots()
    ax.plot([1, 2], [0.5, 0.3])
    fig.canvas.draw()
    assert any(t != int(t) for t in ax.get_xticks())          # matplotlib's own choice: 1.2, 1.4, ...
    viz.integer_ticks(ax)
    fig.canvas.draw()
    assert all(t == int(t) for t in ax.get_xticks())
    plt.close(fig)


def test_scene_params_reads_the_generator_record_and_is_none_without_one(tmp_path):
    (tmp_path / "scenes").mkdir()
    write_json(tmp_path / "scenes" / "dataset.json", {"params": {"class_hue": 0.34, "size": 128}})
    assert records.scene_params(str(tmp_path / "scenes")) == {"class_hue": 0.34, "size": 128}
    (tmp_path / "voc").mkdir()
    assert records.scene_params(str(tmp_path / "voc")) is None


def test_crf_turn_note_only_when_the_crf_reverses_psl_and_psl_plus_plus():
    psl, plus = {"miou": 0.658, "crf_miou": 0.867}, {"miou": 0.792, "crf_miou": 0.855}
    note = notes.crf_turn_note(psl, plus)
    assert "0.867" in note and "0.855" in note and "+0.063" in note and "+0.209" in note
    assert notes.crf_turn_note(psl, {"miou": 0.792, "crf_miou": 0.870}) == ""   # PSL++ ahead with the CRF too
    assert notes.crf_turn_note(psl, {"miou": 0.600, "crf_miou": 0.855}) == ""   # PSL++ behind without it
    assert notes.crf_turn_note({"miou": 0.658}, plus) == ""                     # no CRF scored


def test_drop_note_names_what_the_drop_costs_gains_and_leaves():
    import pandas as pd

    note = notes.drop_note(pd.Series({"oracle": 0.005, "psl": -0.001, "psl_plus_plus": 0.0002}), 0.5)
    assert note.startswith(" Dropping classes below 0.5 costs oracle 0.005")
    assert "gains psl 0.001" in note and note.endswith("leaves psl_plus_plus as it was.")
    assert notes.drop_note(pd.Series({"psl": 0.0001}), 0.5) == (
        " Dropping classes below 0.5 changes no segmenter's mIoU by 0.001 or more.")


def _erasing_round(root, stage, k, params, metrics):
    write_json(root / "p" / stage / f"round{k}" / "metrics.json", {"metrics": metrics, "params": params})


def test_merge_variants_table_names_each_recipe_in_few_columns(tmp_path):
    paper = {"erase_value": "mean", "mine_threshold": 0.5, "init": "fresh", "clean_fraction": 0.0}
    warm = {"erase_value": "blur", "mine_threshold": 0.7, "init": "previous", "clean_fraction": 0.5}
    for stage, params in (("erasing", paper), ("erasing_warm", warm)):
        for k in (1, 2):
            _erasing_round(tmp_path, stage, k, params, {"val_map": 0.8 + k / 100})
    write_json(tmp_path / "p" / "pseudo_masks" / "metrics.json",
               {"params": {"erasing_stage": "erasing", "bg_cue": "cam"},
                "metrics": {"rounds": 2, "per_rounds": [{"miou": 0.41}, {"miou": 0.52}]}})
    write_json(tmp_path / "p" / "pm_warm" / "metrics.json",
               {"params": {"erasing_stage": "erasing_warm", "bg_cue": "cam"},
                "metrics": {"rounds": 2, "per_rounds": [{"miou": 0.40}, {"miou": 0.45}]}})
    table = tables.merge_variants_table(tmp_path, "p")
    assert list(table.index) == ["pseudo_masks", "pm_warm"]           # the book's merge first
    assert table.loc["pseudo_masks", "recipe"] == "paper's recipe"
    assert table.loc["pm_warm", "recipe"] == "mining at 0.7, blur fill, warm start, 50% clean"
    assert table.loc["pm_warm", "mIoU, all"] == 0.45 and table.loc["pseudo_masks", "mIoU, 1 round"] == 0.41
    assert table.loc["pm_warm", "last val mAP"] == 0.82
    assert len(table.columns) <= 5


def test_short_revision_keeps_the_mark_of_uncommitted_changes():
    from aepsl.book.tables import short_revision

    assert short_revision("86056ebd1234") == "86056eb"
    assert short_revision("86056ebd1234+dirty") == "86056eb+"
    assert short_revision(None) == short_revision("") == "–"


def test_cpu_amp_table_gives_bfloat16_as_a_share_of_float32():
    record = {"rows": [{"workload": "classifier training step", "float32_s": 0.4, "bfloat16_s": 0.25},
                       {"workload": "CAM inference", "float32_s": 0.5, "bfloat16_s": 0.2}]}
    table = tables.cpu_amp_table(record)
    assert list(table.index) == ["classifier training step", "CAM inference"]
    assert table.loc["classifier training step", "float32 (s)"] == 0.4
    assert table.loc["classifier training step", "bfloat16"] == "62%"
    assert table.loc["CAM inference", "bfloat16"] == "40%"
    assert tables.cpu_amp_table(None).empty and tables.cpu_amp_table({"rows": []}).empty


def test_allocator_table_reads_the_latest_run_that_timed_every_way():
    old = {"seconds": {"reference": {"glibc": [5.0], "tcmalloc": [5.1]}}, "tcmalloc_over_glibc": {}}
    new = {"over_glibc": {}, "seconds": {
        "training": {"glibc": [40.0, 60.0], "kept": [45.0, 47.0], "tcmalloc": [50.0, 50.0]},
        "reference": {"glibc": [4.0, 6.0], "kept": [5.0, 5.0], "tcmalloc": [6.0, 6.0]}}}
    assert tables.allocator_table({"runs": [old]}).empty   # tcmalloc against glibc only: not this table
    table = tables.allocator_table({"runs": [new, old]})
    assert list(table.index) == ["reference workload", "its training"]   # in the order of the workloads
    assert table.loc["its training", "glibc as it comes (s)"] == 50.0
    assert table.loc["its training", "freed memory kept"] == "92%"
    assert table.loc["reference workload", "tcmalloc"] == "120%"
    assert tables.allocator_table(None).empty
