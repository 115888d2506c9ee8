"""The CAM-variants stage: the library's maps from the CAM classifier, scored with the CAM stage's
sweep; Grad-CAM equal to the CAM on a GAP classifier, the other methods not; the page's readers."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from aepsl.book import notes, records, tables
from aepsl.data.scenes import generate
from aepsl.data.voc import SegDataset, VOCTree
from aepsl.engine.artifacts import read_json, write_json
from aepsl.engine.config import ParameterError
from aepsl.engine.train import inference_loader
from aepsl.methods import cam
from aepsl.methods import cam_variants as cv
from aepsl.methods.cam import CAMConfig, labelled_cams, load_model
from aepsl.methods.metrics import cam_to_mask
from aepsl.models.fold import fold_batchnorm

SWEEP = [0.1, 0.9, 0.1]   # not the CAM stage's default: the variants must take the CAM stage's own


@pytest.fixture(scope="module")
def parts_tree(tmp_path_factory, make_scene_config):
    """A tiny scene tree whose items carry a class-pattern disc (part maps)."""
    root = tmp_path_factory.mktemp("scenes-parts") / "tree"
    generate(make_scene_config(root, item_size=[14, 20], part_size=[6, 8], n_train=16), progress=False)
    return root


def _cam_params(tree, artifacts) -> dict:
    return {"profile": "t", "seed": 0, "device": "cpu", "data_root": str(tree), "artifacts_root": str(artifacts),
            "backbone": "small", "backbone_weights": "", "width": 4, "epochs": 1, "batch_size": 8, "crop": 32,
            "cam_scales": [1.0], "cam_flip": False, "eval_batch_size": 8, "sweep": SWEEP}


def _params(tree, artifacts, **overrides) -> dict:
    params = {"profile": "t", "device": "cpu", "data_root": str(tree), "artifacts_root": str(artifacts),
              "batch_size": 4, "score_batch_size": 8, "figure_images": 3}
    params.update(overrides)
    return params


@pytest.fixture(scope="module")
def variants_run(parts_tree, tmp_path_factory):
    artifacts = tmp_path_factory.mktemp("cam-variants")
    cam_record = cam.run(_cam_params(parts_tree, artifacts), progress=False)
    record = cv.run(_params(parts_tree, artifacts), progress=False)
    return {"cam": cam_record, "record": record, "artifacts": artifacts, "folder": artifacts / "t" / "cam_variants"}


def test_stage_scores_every_method_and_writes_its_metrics(variants_run, parts_tree):
    record, folder = variants_run["record"], variants_run["folder"]
    m = record["metrics"]
    assert read_json(folder / "metrics.json")["params_hash"] == record["params_hash"]
    assert m["order"] == [cv.SAVED_CAM, cv.PLAIN_CAM, *cv.METHODS]
    names = VOCTree(parts_tree).ids("train")
    assert m["images"] == m["of_images"] == len(names)
    for key in m["order"]:
        r = m["methods"][key]
        assert r["label"] == cv.label(key)
        assert r["images"] == len(names)
        assert 0 <= r["best_miou"] <= 1 and r["best_miou"] == max(x for x in r["miou"] if x is not None)
        cov = r["part_coverage"]   # the scenes have part maps
        assert cov["thresholds"] == r["thresholds"]
        assert all(0 <= v <= 1 for v in cov["disc"] + cov["body"])
        # a higher cut never finds more of a part
        assert all(a >= b for a, b in zip(cov["disc"], cov["disc"][1:]))
        assert key in record["timings_s"]


def test_scoring_uses_the_cam_stages_sweep(variants_run):
    """The thresholds are the CAM stage's own sweep, and its saved maps, scored here on the same
    images, give exactly the CAM stage's own sweep."""
    cam_m, m = variants_run["cam"]["metrics"], variants_run["record"]["metrics"]
    expected = CAMConfig(sweep=SWEEP).thresholds()
    assert m["thresholds"] == expected
    for key in m["order"]:
        assert m["methods"][key]["thresholds"] == expected
    saved = m["methods"][cv.SAVED_CAM]
    assert saved["miou"] == cam_m["seed"]["miou"]
    assert saved["best_threshold"] == cam_m["best_threshold"]
    # the CAM stage inferred at one scale without flips, as the plain CAM here: the same maps
    assert m["methods"][cv.PLAIN_CAM]["miou"] == pytest.approx(saved["miou"], abs=2e-3)


def _model_and_batch(variants_run, tree_root):
    model = fold_batchnorm(load_model(variants_run["artifacts"] / "t" / "cam"))
    tree = VOCTree(tree_root)
    batch = next(iter(inference_loader(SegDataset(tree, "train", with_masks=False), 6, 0, torch.device("cpu"))))
    return model, batch


def test_gradcam_is_the_cam_on_a_gap_classifier_and_the_others_are_not(variants_run, parts_tree):
    model, batch = _model_and_batch(variants_run, parts_tree)
    plain = labelled_cams(model, batch["image"], batch["labels"], [1.0], False)
    differs = {}
    for method in cv.METHODS:
        obj = cv.explainer(method, model, 8)
        try:
            maps = cv.variant_cams(obj, batch["image"], batch["labels"], [1.0], False)
        finally:
            cv.release(obj)
        assert [a.shape for a in maps] == [p.shape for p in plain]
        diff = max(float(np.abs(a.astype(np.float32) - p.astype(np.float32)).max()) for a, p in zip(maps, plain))
        differs[method] = diff
    assert differs["gradcam"] < 2e-3            # float16 rounding
    assert differs["gradcam++"] > 0.05 and differs["scorecam"] > 0.05 and differs["eigencam"] > 0.05
    # the stage's own maps: Score-CAM's figure maps are not the CAM's
    _, saved = records.cam_variant_figure(variants_run["folder"])
    assert any(np.abs(a - b).max() > 0.05 for a, b in zip(saved["scorecam"], saved[cv.PLAIN_CAM]))


def test_flip_and_scales_average_the_library_maps(variants_run, parts_tree):
    """Averaged over an image and its mirror image, a map of the mirrored image is the mirrored map."""
    model, batch = _model_and_batch(variants_run, parts_tree)
    images, labels = batch["image"], batch["labels"]
    obj = cv.explainer("gradcam++", model)
    try:
        one = cv.variant_cams(obj, images, labels, [1.0], False)
        many = cv.variant_cams(obj, images, labels, [1.0, 1.5], True)
        mirrored = cv.variant_cams(obj, images.flip(-1), labels, [1.0, 1.5], True)
        plain_mirrored = cv.variant_cams(obj, images.flip(-1), labels, [1.0], False)
    finally:
        cv.release(obj)
    changed = False
    for a, b, c, d in zip(one, many, mirrored, plain_mirrored):
        assert a.shape == b.shape == c.shape
        if len(a):
            a, b, c, d = (x.astype(np.float32) for x in (a, b, c, d))
            np.testing.assert_allclose(c, b[..., ::-1], atol=2e-3)
            changed |= np.abs(b - a).max() > 0.01 and np.abs(d - a[..., ::-1]).max() > 0.01
    assert changed   # the averaging did something: one pass alone is not mirror-symmetric


def test_figure_holds_the_first_images_maps_of_every_method(variants_run, parts_tree):
    names, maps = records.cam_variant_figure(variants_run["folder"])
    tree = VOCTree(parts_tree)
    assert names == tree.ids("train")[:3]
    assert list(maps) == variants_run["record"]["metrics"]["order"]
    for method, arrays in maps.items():
        for name, a in zip(names, arrays):
            assert a.shape == (int(tree.labels(name).sum()), *tree.mask(name).shape)
            assert a.max() <= 1.0 + 1e-3
    assert records.cam_variant_figure(variants_run["artifacts"]) == ([], {})


def test_page_figures_show_every_method_on_the_same_images(variants_run, parts_tree):
    """The page's two grids: per figure image a row of the image, one panel per method and the
    truth; the seeds grid cuts each method's map at that method's own best threshold."""
    import matplotlib

    matplotlib.use("Agg")
    from aepsl.book import viz

    m = variants_run["record"]["metrics"]
    names, maps = records.cam_variant_figure(variants_run["folder"])
    tree = VOCTree(parts_tree)
    panels = len(m["order"]) + 2
    heat = viz.cam_variant_maps_figure(tree, names, maps, m)
    seeds = viz.cam_variant_seeds_figure(tree, names, maps, m)
    for fig in (heat, seeds):
        shown = [ax for ax in fig.axes if ax.images]
        assert len(shown) == len(names) * panels
        assert [ax.get_title() for ax in shown[:panels]][0] == "image"
    k = m["order"][-1]
    t = m["methods"][k]["best_threshold"]
    ids = np.flatnonzero(tree.labels(names[0])) + 1
    cell = [ax for ax in seeds.axes if ax.images][panels - 2]   # first row, the last method
    assert cell.get_title().endswith(f"t = {t:.2f}")
    assert np.array_equal(cell.images[0].get_array(), viz.colorize(cam_to_mask(maps[k][0], ids, t)))
    sweep = viz.threshold_sweep_figure(m)
    assert len(sweep.axes[0].lines) == len(m["order"])
    matplotlib.pyplot.close("all")


def test_max_images_caps_the_scored_images_and_reruns_give_the_same_numbers(variants_run, parts_tree):
    params = _params(parts_tree, variants_run["artifacts"], stage="cam_variants_capped", max_images=5,
                     methods=["layercam", "eigencam"])
    first = cv.run(params, progress=False)
    again = cv.run({**params, "force": True}, progress=False)
    assert again["finished_at"] != first["finished_at"] or again["wall_time_s"] != first["wall_time_s"]
    m = first["metrics"]
    assert m["images"] == 5 and m["of_images"] == len(VOCTree(parts_tree).ids("train"))
    assert m["order"] == [cv.SAVED_CAM, cv.PLAIN_CAM, "layercam", "eigencam"]
    assert all(m["methods"][k]["images"] == 5 for k in m["order"])
    assert again["metrics"] == m


def test_masks_of_the_best_method_for_every_training_image(variants_run, parts_tree):
    from PIL import Image

    params = _params(parts_tree, variants_run["artifacts"], stage="cam_variants_masks", max_images=6,
                     methods=["layercam", "ablationcam"], masks_method="best")
    m = cv.run(params, progress=False)["metrics"]
    scores = {k: m["methods"][k]["best_miou"] for k in ("layercam", "ablationcam")}
    chosen = max(scores, key=scores.get)
    assert m["masks"]["method"] == chosen and m["masks"]["threshold"] == m["methods"][chosen]["best_threshold"]
    tree = VOCTree(parts_tree)
    folder = variants_run["artifacts"] / "t" / "cam_variants_masks" / "masks"
    assert sorted(p.stem for p in folder.glob("*.png")) == sorted(tree.ids("train")) and m["masks"]["count"] == 16
    # a written mask is the chosen method's seed cut at its threshold
    model, batch = _model_and_batch(variants_run, parts_tree)
    obj = cv.explainer(chosen, model, 8)
    try:
        maps = cv.variant_cams(obj, batch["image"], batch["labels"], [1.0], False)
    finally:
        cv.release(obj)
    name, ids = batch["name"][0], np.flatnonzero(batch["labels"][0].numpy() > 0.5) + 1
    expected = cam_to_mask(maps[0].astype(np.float32), ids, m["masks"]["threshold"])
    assert (np.asarray(Image.open(folder / f"{name}.png")) == expected).mean() > 0.99   # float rounding aside


def test_bad_parameters_are_refused_by_name(variants_run, parts_tree, tmp_path):
    artifacts = variants_run["artifacts"]
    with pytest.raises(ValueError, match="parameter methods"):
        cv.run(_params(parts_tree, artifacts, methods=["gradcam", "smoothgrad"]))
    with pytest.raises(ValueError, match="parameter methods"):
        cv.run(_params(parts_tree, artifacts, methods=[]))
    with pytest.raises(ValueError, match="parameter max_images"):
        cv.run(_params(parts_tree, artifacts, max_images=-1))
    with pytest.raises(ParameterError, match="max_images"):
        cv.run(_params(parts_tree, artifacts, max_images="all"))
    with pytest.raises(ValueError, match="parameter masks_method"):
        cv.run(_params(parts_tree, artifacts, methods=["gradcam"], masks_method="scorecam"))
    with pytest.raises(ValueError, match="parameter cam_scales"):
        cv.run(_params(parts_tree, artifacts, cam_scales=[1.0, 0]))
    with pytest.raises(FileNotFoundError, match="cam_stage='cam_elsewhere'"):
        cv.run(_params(parts_tree, tmp_path, cam_stage="cam_elsewhere"))


def test_page_tables_and_note(variants_run, tmp_path):
    record = variants_run["record"]
    seeds = tables.cam_variants_table(record)
    assert list(seeds.index) == [r["label"] for r in (record["metrics"]["methods"][k]
                                                    for k in record["metrics"]["order"])]
    assert seeds.loc["Grad-CAM", "mIoU"] == record["metrics"]["methods"]["gradcam"]["best_miou"]
    assert (seeds.drop(index=cv.label(cv.SAVED_CAM))["s / image"] > 0).all()
    cam_record = variants_run["cam"]
    per_image = cam_record["timings_s"]["cams"] / cam_record["metrics"]["cam_count"]
    shown = seeds.loc[cv.label(cv.SAVED_CAM), "s / image"]
    assert shown == pytest.approx(per_image) if per_image else shown is None or shown != shown
    # without erasing rounds: the methods alone, cut at the sweep's threshold nearest 0.5
    mining, cut = tables.cam_variants_mining_table(record, tmp_path, "t")
    assert cut == 0.5 and list(mining.index) == list(seeds.index)
    # with two finished rounds (their records as the erasing stage writes them)
    for k, body in ((1, 0.2), (2, 0.6)):
        write_json(tmp_path / "t" / "erasing" / f"round{k}" / "metrics.json",
                   {"profile": "t", "params": {"mine_threshold": 0.3}, "wall_time_s": 16.0 * k,
                    "metrics": {"part_coverage": {"this_round": {"disc": 0.9, "body": body},
                                                  "so_far": {"disc": 0.9, "body": body}}}})
    mining, cut = tables.cam_variants_mining_table(record, tmp_path, "t")
    assert cut == pytest.approx(0.3)
    assert mining.loc["erasing, rounds 1–2", "body"] == 0.6
    assert mining.loc["erasing, rounds 1–2", "s / image"] == pytest.approx(48.0 / record["metrics"]["of_images"])
    text = notes.cam_variants_note(seeds, mining, cut)
    assert f"{seeds.loc['CAM', 'mIoU']:.3f}" in text and "60%" in text
    assert "has not been run" in notes.cam_variants_note(tables.cam_variants_table({}), mining, cut)


def test_segmenter_table_sets_the_variant_seeds_beside_the_erasing_masks(variants_run, tmp_path):
    root = tmp_path
    empty, source = tables.cam_variant_segmenter_table(root, "t")
    assert empty.empty and source is None
    m = variants_run["record"]["metrics"]
    masks = {"method": "layercam", "label": "LayerCAM", "threshold": 0.3, "split": "train", "count": 16}

    def record(stage, metrics):
        write_json(root / "t" / stage / "metrics.json", {"profile": "t", "params": {}, "metrics": metrics})

    record("cam_variants", {**m, "masks": masks})
    record("pseudo_masks", {"rounds": 3, "miou": 0.61})
    record("cam_variant_segmenter", {"eval": {"miou": 0.55}})
    record("ae_segmenter", {"eval": {"miou": 0.58}})
    table, source = tables.cam_variant_segmenter_table(root, "t")
    assert source == "t"
    assert table["segmenter mIoU"].tolist() == [0.55, 0.58]
    assert table["seed mIoU"].tolist() == [m["methods"]["layercam"]["best_miou"], 0.61]
    assert table.index[0] == "LayerCAM seeds (t = 0.30)"


def _seed_entry(seed: int, cam: float, best: float, body: float, erased: float) -> dict:
    order = ["CAM (saved)", "CAM", "Grad-CAM", "Grad-CAM++", "erasing, round 1", "erasing, rounds 1–3"]
    return {"seed": seed, "order": order, "mining_threshold": 0.55, "git_revision": "abc1234def00",
            "cpu": "CPU A", "finished_at": f"2026-12-0{seed + 1}T10:00:00+0000",
            "seeds": {"CAM (saved)": {"mIoU": cam + 0.01, "body": 0.5}, "CAM": {"mIoU": cam, "body": 0.5},
                      "Grad-CAM": {"mIoU": cam, "body": 0.5}, "Grad-CAM++": {"mIoU": best, "body": 0.45}},
            "mining": {"CAM (saved)": {"body": 0.2}, "CAM": {"body": 0.2}, "Grad-CAM": {"body": 0.2},
                       "Grad-CAM++": {"body": body}, "erasing, round 1": {"body": 0.2},
                       "erasing, rounds 1–3": {"body": erased}}}


def test_variants_over_seeds_table_and_note():
    record = {"runs": [_seed_entry(0, 0.50, 0.48, 0.25, 0.50), _seed_entry(1, 0.52, 0.53, 0.30, 0.45)]}
    table = tables.cam_variants_seeds_table(record)
    assert list(table.index) == record["runs"][0]["order"]
    assert table.loc["CAM", "seed mIoU"] == f"{0.51:.3f} ± {np.std([0.50, 0.52], ddof=1):.3f}"
    assert table.loc["erasing, rounds 1–3", "seed mIoU"] == "–"
    assert table.loc["erasing, rounds 1–3", "body above 0.55"].startswith("0.475 ± ")
    note = notes.cam_variants_seeds_note(record)
    assert "-0.020 to +0.010" in note and "seed 1" in note
    assert "found 25-30% of it" in note and "45-50%" in note and "more than any method" in note
    assert "abc1234" in note and "2026-12-01 to 2026-12-02" in note
    # a seed where a method finds as much of the body as the rounds is named
    record["runs"][1] = _seed_entry(1, 0.52, 0.53, 0.46, 0.45)
    assert "on seeds 1 a method found as much as the rounds" in notes.cam_variants_seeds_note(record)
    assert tables.cam_variants_seeds_table({}).empty and notes.cam_variants_seeds_note(None) == ""


def test_segmenter_over_seeds_table_and_note():
    def entry(seed, variant, ae):
        return {**_seed_entry(seed, 0.5, 0.5, 0.2, 0.5),
                "segmenter": {"method": "Grad-CAM", "threshold": 0.25, "variant segmenter": variant, "AE segmenter": ae}}

    record = {"runs": [entry(0, 0.55, 0.59), entry(1, 0.56, 0.58), {**_seed_entry(2, 0.5, 0.5, 0.2, 0.5)}]}
    table = tables.cam_variant_segmenter_seeds_table(record)
    assert list(table.index) == ["seed 0", "seed 1", "mean"]   # seed 2 has no segmenter run
    assert table.loc["seed 0", "AE − variant"] == pytest.approx(0.04)
    assert table.loc["mean", "on the AE masks"] == pytest.approx(0.585)
    note = notes.cam_variant_segmenter_seeds_note(table)
    assert "beat the same segmenter trained on the best later CAM's seeds (Grad-CAM) by 0.020 to 0.040" in note
    record["runs"][1] = entry(1, 0.60, 0.58)
    note = notes.cam_variant_segmenter_seeds_note(tables.cam_variant_segmenter_seeds_table(record))
    assert "the erasing masks gave the better segmenter on 1 (differences -0.020 to +0.040" in note
    record["runs"] = [entry(0, 0.60, 0.58)]
    note = notes.cam_variant_segmenter_seeds_note(tables.cam_variant_segmenter_seeds_table(record))
    assert note.startswith("On 1 training seed,") and "beat the same segmenter trained on the erasing masks by 0.020" in note
    assert tables.cam_variant_segmenter_seeds_table({"runs": [_seed_entry(0, 0.5, 0.5, 0.2, 0.5)]}).empty
