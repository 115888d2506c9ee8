"""Adversarial erasing: erasing, mining, round bookkeeping, merging."""
from __future__ import annotations

import numpy as np
from PIL import Image
import pytest

from aepsl.methods import erasing
from aepsl.engine.config import ParameterError


def _image(seed=0, h=12, w=10):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


@pytest.mark.parametrize("value", erasing.ERASE_VALUES)
def test_erase_touches_only_the_region(value):
    image = _image()
    region = np.zeros(image.shape[:2], bool)
    region[3:7, 2:5] = True
    out = erasing.erase(image, region, value, np.array([120.0, 110.0, 100.0]), np.array([30.0, 30.0, 30.0]),
                        np.random.default_rng(1))
    assert np.array_equal(out[~region], image[~region])
    assert not np.array_equal(out[region], image[region])
    assert image is not out  # the original is not modified in place
    if value == "mean":
        assert (out[region] == [120, 110, 100]).all()


def test_erase_empty_region_and_unknown_value():
    image = _image()
    empty = np.zeros(image.shape[:2], bool)
    assert np.array_equal(erasing.erase(image, empty, "noise", np.zeros(3)), image)
    region = ~empty
    with pytest.raises(ValueError, match="erase_value"):
        erasing.erase(image, region, "zeros", np.zeros(3))


def test_mine_regions_threshold_argmax_and_exclusion():
    cams = np.zeros((2, 3, 3), np.float32)
    cams[0, 0, 0] = 0.9          # only class 4 fires
    cams[1, 0, 1] = 0.8          # only class 6 fires
    cams[0, 1, 1], cams[1, 1, 1] = 0.7, 0.95   # both fire: the higher (class 6) wins
    cams[0, 2, 2] = 0.5          # exactly at the threshold: not mined
    exclude = np.zeros((3, 3), bool)
    exclude[0, 1] = True
    out = erasing.mine_regions(cams, np.array([4, 6]), 0.5, exclude)
    expected = np.zeros((3, 3), np.uint8)
    expected[0, 0], expected[1, 1] = 4, 6
    assert np.array_equal(out, expected)
    assert erasing.mine_regions(np.zeros((0, 3, 3)), np.array([], int), 0.5).sum() == 0


def test_merge_resolves_overlaps_by_cam_score_deterministically():
    h, w = 2, 3
    ids = np.array([1, 2])
    r1 = np.array([[1, 1, 0], [0, 0, 0]], np.uint8)    # round 1 claims (0,0),(0,1) for class 1
    r2 = np.array([[2, 0, 0], [0, 2, 0]], np.uint8)    # round 2 claims (0,0) and (1,1) for class 2
    cam1 = np.zeros((2, h, w), np.float32)
    cam2 = np.zeros((2, h, w), np.float32)
    cam1[0, 0, 0], cam2[1, 0, 0] = 0.6, 0.9             # at (0,0) class 2 scores higher (in round 2)
    bg = np.array([[False, False, True], [True, False, False]])
    out = erasing.merge_masks([r1, r2], [cam1, cam2], ids, bg)
    expected = np.array([[2, 1, 0], [0, 2, 255]], np.uint8)
    assert np.array_equal(out, expected)
    again = erasing.merge_masks([r1, r2], [cam1, cam2], ids, bg)
    assert np.array_equal(out, again)
    # a tie goes to the first labelled class, every time
    cam2[1, 0, 0] = 0.6
    assert erasing.merge_masks([r1, r2], [cam1, cam2], ids, bg)[0, 0] == 1


def test_round_parameters_are_checked():
    with pytest.raises(ParameterError, match="round"):
        erasing.run_round({"round": "two"})
    with pytest.raises(ValueError, match="round"):
        erasing.run_round({"round": -1})
    with pytest.raises(ValueError, match="erase_value"):
        erasing.run_round({"round": 1, "erase_value": "zeros"})


def _quick_cam(tree_root, tmp_path):
    from aepsl.methods import cam

    params = dict(profile="t", data_root=str(tree_root), artifacts_root=str(tmp_path), backbone="small",
                  backbone_weights="", width=4, epochs=1, batch_size=8, crop=32, cam_scales=[1.0],
                  eval_batch_size=8)
    return cam.run(params, progress=False)


def test_rounds_see_only_earlier_regions(scene_tree, tmp_path):
    from aepsl.data.voc import VOCTree

    _quick_cam(scene_tree, tmp_path)
    base = dict(profile="t", data_root=str(scene_tree), artifacts_root=str(tmp_path), eval_batch_size=8,
                mine_threshold=0.3)
    with pytest.raises(FileNotFoundError, match="round 1"):
        erasing.run_round({**base, "round": 2})
    r1 = erasing.run_round({**base, "round": 1}, progress=False)
    assert r1["metrics"]["round"] == 1
    r2 = erasing.run_round({**base, "round": 2}, progress=False)
    cfg = erasing.ErasingConfig(**base)
    tree = VOCTree(scene_tree)
    mean_px = np.array(r2["metrics"]["mean_pixel"])
    view = erasing.ErasedView(tree, "train", [erasing.round_dir(cfg, 1) / "regions"], "mean", mean_px, None)
    changed_any = False
    for i, name in enumerate(tree.ids("train")):
        reg1 = erasing.load_regions(erasing.round_dir(cfg, 1) / "regions" / f"{name}.png") > 0
        reg2 = erasing.load_regions(erasing.round_dir(cfg, 2) / "regions" / f"{name}.png") > 0
        # round 2 never re-mines what round 1 erased
        assert not (reg1 & reg2).any()
        # round 2's input differs from the original exactly inside round 1's regions (or equals the mean there)
        orig, seen = tree.image(name), view[i]["image"]
        assert np.array_equal(seen[~reg1], orig[~reg1])
        assert (seen[reg1] == np.round(mean_px).astype(np.uint8)).all()
        changed_any |= bool(reg1.any())
    assert changed_any, "round 1 mined nothing: the test would prove nothing"
    # a later round with other mining parameters than its predecessors is refused
    with pytest.raises(ValueError, match="other parameters"):
        erasing.run_round({**base, "round": 2, "mine_threshold": 0.6, "force": True})
    merged = erasing.merge(dict(profile="t", data_root=str(scene_tree), artifacts_root=str(tmp_path), rounds=2),
                           progress=False)
    per = merged["metrics"]["per_rounds"]
    assert len(per) == 2
    # more rounds never label fewer pixels as foreground
    assert per[1]["fg_recall"] >= per[0]["fg_recall"]
    with pytest.raises(FileNotFoundError, match="round 3"):
        erasing.merge(dict(profile="t", data_root=str(scene_tree), artifacts_root=str(tmp_path), rounds=3))
    # score_rounds: the masks of 1 round are written, 2 rounds scored beside them
    one = erasing.merge(dict(profile="t", data_root=str(scene_tree), artifacts_root=str(tmp_path), rounds=1,
                             score_rounds=2, stage="pm_one"), progress=False)["metrics"]
    assert [p["miou"] for p in one["per_rounds"]] == [p["miou"] for p in per]
    assert one["miou"] == per[0]["miou"] and one["rounds"] == 1
    two_dir = tmp_path / "t" / "pseudo_masks" / "masks"
    one_dir = tmp_path / "t" / "pm_one" / "masks"
    r2 = erasing.round_dir(cfg, 2) / "regions"
    differs = False
    for name in tree.ids("train"):
        a, b = np.asarray(Image.open(one_dir / f"{name}.png")), np.asarray(Image.open(two_dir / f"{name}.png"))
        differs |= not np.array_equal(a, b)
    assert differs == any(erasing.load_regions(r2 / f"{n}.png").any() for n in tree.ids("train"))


def test_new_round_parameters_are_checked():
    with pytest.raises(ValueError, match="init"):
        erasing.run_round({"round": 1, "init": "warm"})
    with pytest.raises(ValueError, match="clean_fraction"):
        erasing.run_round({"round": 1, "clean_fraction": 1.0})
    with pytest.raises(ValueError, match="round_epochs"):
        erasing.run_round({"round": 1, "round_epochs": -1})
    with pytest.raises(ValueError, match="decoys"):
        erasing.run_round({"round": 2, "decoys": -1})
    with pytest.raises(ValueError, match="erase_margin"):
        erasing.run_round({"round": 2, "erase_margin": -2})


def test_erase_margin_grows_the_erased_region_by_a_disc():
    region = np.zeros((11, 11), bool)
    region[5, 5] = True
    grown = erasing.grow(region, 2)
    assert grown.sum() == 13                                  # the lattice points of a radius-2 disc
    assert grown[5, 3] and grown[3, 5] and grown[4, 4] and not grown[3, 3]
    assert erasing.grow(region, 0) is region
    edge = np.zeros((4, 4), bool)
    edge[0, 0] = True
    assert erasing.grow(edge, 1).sum() == 3                   # cut at the border, nothing wraps


def test_decoys_add_other_images_regions_moved_anew_each_epoch(scene_tree, tmp_path):
    from aepsl.data.voc import VOCTree

    tree = VOCTree(scene_tree)
    regions = tmp_path / "regions"
    regions.mkdir()
    for name in tree.ids("train"):   # a 6x6 square at the top left of every image
        r = np.zeros(tree.image(name).shape[:2], np.uint8)
        r[:6, :6] = 1
        erasing.save_regions(regions / f"{name}.png", r)
    mean = np.array([1.0, 2.0, 3.0])
    plain = erasing.ErasedView(tree, "train", [regions], "mean", mean, None, seed=0)
    view = erasing.ErasedView(tree, "train", [regions], "mean", mean, None, seed=0, decoys=2)
    shape = tree.image(view.names[0]).shape[:2]
    masks = {}
    for epoch in (0, 1):
        view.set_epoch(epoch)
        masks[epoch] = [view.decoy_mask(i, shape) for i in range(len(view))]
        for i, m in enumerate(masks[epoch]):
            assert m.sum() <= 2 * 36   # at most two moved 6x6 squares, cut at the border
            erased = view[i]["image"] == np.round(mean).astype(np.uint8)
            assert erased.all(-1)[m].all()                # decoy pixels are filled like the region
            assert erased.all(-1)[:6, :6].all()           # and the image's own region still is
    assert any(m.any() for m in masks[0])
    assert any((a != b).any() for a, b in zip(masks[0], masks[1]))   # drawn anew each epoch
    view.set_epoch(0)
    assert all((view.decoy_mask(i, shape) == masks[0][i]).all() for i in range(len(view)))   # reproducible
    # a margin erases a rim around the region too, in the same fill
    grown = erasing.ErasedView(tree, "train", [regions], "mean", mean, None, seed=0, margin=2)
    img = grown[0]["image"]
    fill = np.round(mean).astype(np.uint8)
    assert (img[:8, :6] == fill).all() and (img[:6, :8] == fill).all()
    assert np.array_equal(img[12:], tree.image(grown.names[0])[12:])
    # without decoys only the image's own regions are erased
    i = next(i for i, m in enumerate(masks[0]) if (m & ~np.pad(np.ones((6, 6), bool), ((0, shape[0] - 6), (0, shape[1] - 6)))).any())
    assert not np.array_equal(plain[i]["image"], view[i]["image"])


def test_clean_fraction_shows_some_images_unerased_anew_each_epoch(scene_tree, tmp_path):
    from aepsl.data.voc import VOCTree

    tree = VOCTree(scene_tree)
    regions = tmp_path / "regions"
    regions.mkdir()
    for name in tree.ids("train"):   # erase the left half of every image
        r = np.zeros(tree.image(name).shape[:2], np.uint8)
        r[:, :16] = 1
        erasing.save_regions(regions / f"{name}.png", r)
    mean = np.array([1.0, 2.0, 3.0])
    view = erasing.ErasedView(tree, "train", [regions], "mean", mean, None, seed=0, clean_fraction=0.5)

    def clean_set(epoch):
        view.set_epoch(epoch)
        return {i for i in range(len(view)) if np.array_equal(view[i]["image"], tree.image(view.names[i]))}

    e0, e1 = clean_set(0), clean_set(1)
    assert 0 < len(e0) < len(view) and 0 < len(e1) < len(view)
    assert e0 != e1                    # drawn anew each epoch
    assert clean_set(0) == e0          # and the same for the same epoch
    erased = set(range(len(view))) - e0
    view.set_epoch(0)
    i = next(iter(erased))
    assert (view[i]["image"][:, :16] == np.round(mean).astype(np.uint8)).all()
    # without clean_fraction every image is erased
    plain = erasing.ErasedView(tree, "train", [regions], "mean", mean, None, seed=0)
    assert all(not plain.shown_clean(i) for i in range(len(plain)))


def test_warm_started_round_and_part_coverage(make_scene_config, tmp_path, monkeypatch):
    import torch

    from aepsl.data.scenes import generate

    root = tmp_path / "parts"
    generate(make_scene_config(root, part_size=[8, 10]), progress=False)
    _quick_cam(root, tmp_path)
    base = dict(profile="t", data_root=str(root), artifacts_root=str(tmp_path), eval_batch_size=8,
                mine_threshold=0.3, init="previous", clean_fraction=0.5, round_epochs=1)
    r1 = erasing.run_round({**base, "round": 1}, progress=False)["metrics"]
    cov = r1["part_coverage"]
    assert set(cov["this_round"]) == {"disc", "body"}
    assert cov["this_round"] == cov["so_far"]          # round 1: nothing found before
    assert all(0 <= v <= 1 for v in cov["this_round"].values())
    seen = {}
    real = erasing.train_classifier

    def spy(*args, init=None, **kwargs):   # the real training, with the weights it started from noted
        seen["init"] = init
        return real(*args, init=init, **kwargs)

    monkeypatch.setattr(erasing, "train_classifier", spy)
    r2 = erasing.run_round({**base, "round": 2}, progress=False)["metrics"]
    assert r2["init"] == "previous" and r2["clean_fraction"] == 0.5 and r2["epochs"] == 1
    for part in ("disc", "body"):    # what is found so far only grows
        assert r2["part_coverage"]["so_far"][part] >= cov["so_far"][part] - 1e-9
    # round 2 started from the CAM classifier, round 3 from round 2's
    cam_state = torch.load(tmp_path / "t" / "cam" / "model.pt", weights_only=False)["model"]
    assert seen["init"].keys() == cam_state.keys()
    assert all(torch.equal(seen["init"][k], cam_state[k]) for k in cam_state)
    erasing.run_round({**base, "round": 3}, progress=False)
    r2_state = torch.load(tmp_path / "t" / "erasing" / "round2" / "model.pt", weights_only=False)["model"]
    assert all(torch.equal(seen["init"][k], r2_state[k]) for k in r2_state)
    assert not all(torch.equal(r2_state[k], cam_state[k]) for k in cam_state)   # round 2 did train
    erasing.run_round({**base, "round": 1, "init": "fresh", "stage": "fresh"}, progress=False)
    erasing.run_round({**base, "round": 2, "init": "fresh", "stage": "fresh"}, progress=False)
    assert seen["init"] is None


def test_mine_prior_keeps_later_rounds_where_the_clean_cam_is_not_background(scene_tree, tmp_path):
    from aepsl.data.voc import VOCTree
    from aepsl.methods.seedmaps import load_cam

    _quick_cam(scene_tree, tmp_path)
    base = dict(profile="t", data_root=str(scene_tree), artifacts_root=str(tmp_path), eval_batch_size=8,
                mine_threshold=0.95, init="previous", clean_fraction=0.5)   # the tiny CAMs are flat: mine their peaks
    for k in (1, 2):
        erasing.run_round({**base, "round": k}, progress=False)
        erasing.run_round({**base, "round": k, "stage": "prior", "mine_prior": 0.99}, progress=False)
    # rounds of one chain must share the prior
    with pytest.raises(ValueError, match="mine_prior"):
        erasing.run_round({**base, "round": 2, "stage": "prior", "mine_prior": 0.2, "force": True})
    with pytest.raises(ValueError, match="mine_prior"):
        erasing.ErasingConfig(mine_prior=1.0).validate()
    tree = VOCTree(scene_tree)
    cam_dir = tmp_path / "t" / "cam"
    plain, prior = tmp_path / "t" / "erasing" / "round2" / "regions", tmp_path / "t" / "prior" / "round2" / "regions"
    removed = mined = 0
    for name in tree.ids("train"):
        a = erasing.load_regions(plain / f"{name}.png")
        b = erasing.load_regions(prior / f"{name}.png")
        weak = load_cam(cam_dir, name).max(axis=0) < 0.99 if tree.labels(name).any() else np.zeros(a.shape, bool)
        # same seed, same erased inputs: the same classifier, so the prior only removes where the clean CAM is weak
        assert np.array_equal(b, np.where(weak, 0, a))
        removed += int(((a > 0) & weak).sum())
        mined += int((a > 0).sum())
    assert removed > 0, f"the prior removed nothing: the test would prove nothing ({mined} mined)"
