"""AffinityNet labels and loss, the random walk, and the affinity stage on tiny scenes."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from aepsl.methods import randomwalk as rw

# a hand-made 3x3 label map: 0 background, 1 and 2 classes, 255 uncertain
HAND = torch.tensor([[[0, 0, 1],
                      [255, 1, 1],
                      [2, 2, 2]]])


def test_pair_offsets_cover_each_unordered_pair_once():
    half = rw.pair_offsets(5)
    assert len(half) == 34                                   # PSA's count for radius 5
    full = set(rw.window_offsets(5)) - {(0, 0)}
    assert set(half) | {(-dy, -dx) for dy, dx in half} == full
    assert not set(half) & {(-dy, -dx) for dy, dx in half}


def test_pair_labels_counts_on_a_hand_made_map():
    # radius 2: offsets right (0,1), down-left (1,-1), down (1,0), down-right (1,1); 20 pairs inside the map.
    # Counted by hand: bg-pos {(0,0)-(0,1)}; fg-pos: (1,1)-(1,2), (2,0)-(2,1), (2,1)-(2,2), (0,2)-(1,1),
    # (0,2)-(1,2); negative: 9; ignored (touching the 255 at (1,0)): 5.
    assert rw.pair_offsets(2) == [(0, 1), (1, -1), (1, 0), (1, 1)]
    bg, fg, neg = rw.pair_labels(HAND, 2)
    assert (int(bg.sum()), int(fg.sum()), int(neg.sum())) == (1, 5, 9)
    inside = rw.pair_labels(torch.zeros_like(HAND), 2)[0].sum()   # all-background map: every pair is bg-pos
    assert int(inside) == 20
    assert int(inside) - int(bg.sum() + fg.sum() + neg.sum()) == 5
    # the bg-positive pair is the one starting at (0,0) with offset (0,1)
    assert bg[0, 0, 0, 0] and int(bg[0, 0].sum()) == 1
    # no labelled pair starts at the uncertain pixel (1,0), nor ends there ((0,0)+(1,0), (0,1)+(1,-1))
    labelled = bg | fg | neg
    assert not labelled[0, :, 1, 0].any()
    assert not labelled[0, 2, 0, 0] and not labelled[0, 1, 0, 1]


def test_affinity_labels_from_cams_confident_fg_bg_and_uncertain():
    cams = np.array([[[0.9, 0.15, 0.02]]], np.float32)       # one class, three pixels
    lab = rw.affinity_labels_from_cams(cams, np.array([3]), alpha_low=4, alpha_high=32)
    # 0.9: foreground even against the strong (alpha 4) background score; 0.02: background even
    # against the weak (alpha 32) one; 0.15: background at alpha 4 but foreground at alpha 32
    assert lab.tolist() == [[3, 255, 0]]
    assert rw.affinity_labels_from_cams(np.zeros((0, 2, 2), np.float32), np.array([], int), 4, 32).max() == 0


def test_affinity_loss_is_small_for_embeddings_that_follow_the_labels():
    labels = torch.tensor([[[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 255, 1], [2, 2, 1, 1]]])
    good = torch.zeros(1, 4, 4, 4)
    for c in range(3):
        good[0, c] = (labels[0] == c).float() * 20        # same label: same embedding; different: far apart
    bad = torch.zeros(1, 4, 4, 4)                          # every pixel alike: negatives are violated
    loss_good, logs = rw.affinity_loss(good, labels, 3)
    loss_bad, _ = rw.affinity_loss(bad, labels, 3)
    assert loss_good.item() < 0.01 < loss_bad.item()
    assert logs["n_bg_pos"] > 0 and logs["n_fg_pos"] > 0 and logs["n_neg"] > 0


def _random_band(h=6, w=7, radius=3, beta=2.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    emb = torch.randn(1, 8, h, w, generator=g)
    return emb, rw.transition_band(emb, radius, beta)


def test_walk_keeps_a_constant_map_constant_and_zero_steps_change_nothing():
    emb, band = _random_band()
    assert torch.allclose(band.sum(1), torch.ones(1, 6, 7))          # each output pixel: a weighted average
    const = torch.full((1, 3, 6, 7), 0.7)
    assert torch.allclose(rw.random_walk(const, band, 16), const, atol=1e-5)
    scores = torch.rand(1, 3, 6, 7, generator=torch.Generator().manual_seed(1))
    assert torch.equal(rw.random_walk(scores, band, 0), scores)
    assert not torch.allclose(rw.random_walk(scores, band, 4), scores)   # a step does change a random map


@pytest.mark.parametrize("radius,beta,logt", [(2, 1.0, 2), (3, 8.0, 3), (4, 4.0, 4)])
def test_banded_walk_equals_the_dense_reference(radius, beta, logt):
    emb, band = _random_band(radius=radius, beta=beta, seed=radius)
    scores = torch.rand(1, 4, 6, 7, generator=torch.Generator().manual_seed(2))
    banded = rw.random_walk(scores, band, 2 ** logt)
    dense = rw.random_walk_dense(scores, emb, radius, beta, logt)
    assert torch.allclose(banded, dense, atol=1e-5)


@pytest.mark.parametrize("dense", [False, True])
def test_walk_sweep_equals_separate_walks(dense):
    _, band = _random_band(radius=3, beta=8.0, seed=5)
    scores = torch.rand(1, 4, 6, 7, generator=torch.Generator().manual_seed(3))
    swept = rw.walk_sweep(scores, band, [3, 0, 1, 3], dense=dense)
    assert sorted(swept) == [0, 1, 3]
    for logt, v in swept.items():
        assert torch.allclose(v, rw.random_walk(scores, band, 2 ** logt), atol=1e-5)


@pytest.mark.parametrize("radius", [2, 3, 5])
def test_dense_matrix_of_a_band_makes_the_same_step(radius):
    # a batch of two maps of their own, non-square, with the window reaching past every edge
    emb = torch.randn(2, 8, 5, 9, generator=torch.Generator().manual_seed(radius))
    band = rw.transition_band(emb, radius, 4.0)
    t = rw.band_to_dense(band)
    assert t.shape == (2, 45, 45)
    assert torch.allclose(t.sum(1), torch.ones(2, 45))                  # columns sum to 1, as the band's
    scores = torch.rand(2, 3, 5, 9, generator=torch.Generator().manual_seed(9))
    step = (scores.flatten(2) @ t).view(2, 3, 5, 9)
    assert torch.allclose(step, rw.random_walk(scores, band, 1), atol=1e-6)
    assert not torch.allclose(t[0], t[1])                                 # each map keeps its own matrix


def test_walk_spreads_scores_inside_a_region_but_not_across_an_edge():
    # two regions with very different embeddings; a score placed in one stays there
    emb = torch.zeros(1, 4, 6, 6)
    emb[0, :, :, 3:] = 10.0
    band = rw.transition_band(emb, 3, 8.0)
    scores = torch.zeros(1, 1, 6, 6)
    scores[0, 0, 2, 1] = 1.0
    out = rw.random_walk(scores, band, 64)[0, 0]
    assert out[:, :3].min() > 0                       # spread over the whole left region
    assert out[:, 3:].max() < 1e-6                     # nothing crossed the edge
    assert torch.allclose(out[:, :3], out[:, :3].mean(), rtol=0.05)   # and evened out there


def test_scores_from_masks_and_cams():
    masks = torch.tensor([[[0, 2], [255, 1]]])
    s = rw.scores_from_masks(masks, 3)
    assert s.shape == (1, 3, 2, 2)
    assert s[0, :, 1, 0].sum() == 0 and s[0, 2, 0, 1] == 1 and s[0, 0, 0, 0] == 1
    cams = torch.tensor([[[[0.5, 0.0]]]])
    sc = rw.scores_from_cams(cams, 2.0)
    assert torch.allclose(sc[0, 0, 0], torch.tensor([0.25, 1.0]))


def _affinity_params(scene_tree, tmp_path, **kw):
    return dict(profile="t", data_root=str(scene_tree), artifacts_root=str(tmp_path), backbone="small",
                backbone_weights="", width=8, embed_dim=8, epochs=1, batch_size=8, crop=32, logt=3,
                eval_batch_size=8, **kw)


def test_affinity_stage_on_cam_and_mask_seeds(scene_tree, tmp_path):
    from aepsl.methods import cam
    from aepsl.data.voc import VOCTree

    with pytest.raises(FileNotFoundError, match="seeds='cam'"):
        rw.run(_affinity_params(scene_tree, tmp_path))
    cam.run(dict(profile="t", data_root=str(scene_tree), artifacts_root=str(tmp_path), backbone="small",
                 backbone_weights="", width=8, epochs=1, batch_size=8, crop=32, cam_scales=[1.0],
                 eval_batch_size=8), progress=False)
    rec = rw.run(_affinity_params(scene_tree, tmp_path), progress=False)
    m = rec["metrics"]
    tree = VOCTree(scene_tree)
    names = tree.ids("train")
    folder = tmp_path / "t" / "affinity_cam"
    assert m["seed_kind"] == "cams" and m["mask_count"] == len(names)
    assert sorted(p.stem for p in (folder / "masks").glob("*.png")) == sorted(names)
    assert sorted(p.stem for p in (folder / "labels").glob("*.png")) == sorted(names)
    assert 0 <= m["miou_before"] <= 1 and 0 <= m["miou_after"] <= 1
    # the book's background: the CAM seed before the walk is the CAM stage's own best cut
    cam_metrics = (tmp_path / "t" / "cam" / "metrics.json").read_text()
    assert m["walk"]["background"] == "cut" and m["miou_before"] == pytest.approx(m["cam_best_threshold_miou"])
    assert str(m["cam_best_threshold_miou"])[:8] in cam_metrics
    # the sweep over t scores the walk's own logt, at the cut the masks were written with, exactly as
    # the masks it wrote
    assert m["walk"]["steps"] == 2 ** 3 and m["logt_sweep"]["3"] == pytest.approx(m["miou_after"], abs=1e-9)
    assert m["walk_threshold"] == m["walk_cuts"]["3"]
    assert sorted(int(k) for k in m["logt_sweep"]) == sorted(set(rw.AffinityConfig().logt_sweep) | {3})
    # PSA's background on the same walk, scored beside it
    assert sorted(m["power_walk"]["logt_sweep"]) == sorted(m["logt_sweep"])
    assert m["power_walk"]["miou"] == m["power_walk"]["logt_sweep"]["3"]
    assert abs(sum(m["labels"][k] for k in ("bg_fraction", "fg_fraction", "uncertain_fraction")) - 1) < 1e-3
    # walked masks only use background and the image's own classes
    from PIL import Image
    for name in names:
        got = set(np.unique(np.asarray(Image.open(folder / "masks" / f"{name}.png"))).tolist())
        assert got <= {0, *(np.flatnonzero(tree.labels(name)) + 1).tolist()}
    # what the page draws of the trained network, saved by the stage: the page runs no network
    from aepsl.book import records

    saved = records.affinity_figure(folder)
    assert [s["name"] for s in saved] == names[:rw.FIGURE_IMAGES]
    for item in saved:
        image = tree.image(item["name"])
        assert item["map"].shape == image.shape[:2]
        assert item["point"] == rw.item_centre(tree.mask(item["name"]))
        assert 0 <= item["map"].min() and item["map"].max() <= 1.001
        y, x = item["point"]
        assert item["map"][y, x] > 0.9        # a cell is most like itself
    assert records.affinity_figure(tmp_path / "t" / "no_such_stage") == []
    # a stage whose output is masks/ serves as seeds too (here: the walked masks themselves)
    rec2 = rw.run(_affinity_params(scene_tree, tmp_path, stage="affinity_again", seeds="affinity_cam"), progress=False)
    assert rec2["metrics"]["seed_kind"] == "masks"
    # cached: same parameters, nothing recomputed
    assert rw.run(_affinity_params(scene_tree, tmp_path), progress=False)["finished_at"] == rec["finished_at"]
    # PSA's background (power): the walk's masks are the arg-max against the walked background score,
    # and its score is the one the cut run reported as PSA's
    power = rw.run(_affinity_params(scene_tree, tmp_path, stage="affinity_power", background="power"),
                   progress=False)["metrics"]
    assert power["walk"]["background"] == "power" and "power_walk" not in power
    assert power["miou_after"] == pytest.approx(m["power_walk"]["miou"], abs=1e-9)
    assert power["logt_sweep"] == pytest.approx(m["power_walk"]["logt_sweep"], abs=1e-9)
    # a cut given: the masks are the walked maps cut there
    fixed = rw.run(_affinity_params(scene_tree, tmp_path, stage="affinity_fixed", walk_threshold=0.95),
                   progress=False)["metrics"]
    assert fixed["walk_threshold"] == 0.95 and fixed["logt_sweep"] == pytest.approx(m["logt_sweep"], abs=1e-9)
    # its masks score what the sweep of the first run gave that cut
    at = m["cut_sweep"]["thresholds"].index(0.95)
    assert fixed["miou_after"] == pytest.approx(m["cut_sweep"]["miou"][at], abs=1e-9)


def test_affinity_parameters_are_checked(tmp_path):
    from aepsl.engine.config import ParameterError

    with pytest.raises(ValueError, match="radius"):
        rw.run({"radius": 1, "artifacts_root": str(tmp_path)})
    with pytest.raises(ParameterError, match="logt"):
        rw.run({"logt": "eight", "artifacts_root": str(tmp_path)})
    with pytest.raises(ValueError, match="logt_sweep"):
        rw.run({"logt_sweep": [0, -1], "artifacts_root": str(tmp_path)})
    with pytest.raises(ValueError, match="parameter background"):
        rw.run({"background": "mean", "artifacts_root": str(tmp_path)})
    with pytest.raises(ValueError, match="parameter walk_threshold"):
        rw.run({"walk_threshold": 1.5, "artifacts_root": str(tmp_path)})


def test_cut_maps_bring_every_walked_class_to_a_peak_of_one():
    """The cut background's maps: each walked class map at the image size, divided by its own
    maximum, so a faint class and a strong one meet the same cut."""
    walked = torch.zeros(2, 3, 3)
    walked[0, 1, 1] = 0.2            # a faint class, walked
    walked[1, 0, 0] = 0.8            # a strong one
    walked[1, 2, 2] = 0.4
    up = rw.cut_maps(walked, (6, 6))
    assert up.shape == (2, 6, 6)
    assert torch.allclose(up.flatten(1).max(1).values, torch.ones(2))
    # the ratio inside one map is kept: the strong class's second peak stays at half its first
    small = rw.cut_maps(walked, (3, 3))
    assert small[1, 2, 2].item() == pytest.approx(0.5) and small[0, 1, 1].item() == pytest.approx(1.0)
    assert rw.cut_maps(torch.zeros(0, 3, 3), (6, 6)).shape == (0, 6, 6)


# ------------------------------------------------------------------ the chapter's equations, term by term
def _hand_affinity(emb, radius):
    """a_ij = exp(-||f_i - f_j||_1 / E) for cells closer than the radius (else 0), by hand."""
    e, h, w = emb.shape[1:]
    f = emb[0].flatten(1).T                                      # [HW, E]
    pos = [(i // w, i % w) for i in range(h * w)]
    a = torch.zeros(h * w, h * w)
    for i, (yi, xi) in enumerate(pos):
        for j, (yj, xj) in enumerate(pos):
            if (yi - yj) ** 2 + (xi - xj) ** 2 < radius ** 2:
                a[i, j] = torch.exp(-(f[i] - f[j]).abs().sum() / e)
    return a


def test_affinity_is_exp_of_minus_the_l1_distance_per_channel():
    emb = torch.tensor([[[[1.0, 3.0]], [[0.0, 2.0]]]])           # E = 2 channels, 1x2 cells
    aff = rw.pair_affinities(emb, [(0, 1)])
    assert aff[0, 0, 0, 0].item() == pytest.approx(np.exp(-(2 + 2) / 2))
    assert aff[0, 0, 0, 1].item() == 0.0                          # the pair leaves the map


@pytest.mark.parametrize("beta", [1.0, 3.0])
def test_transition_matrix_is_d_inverse_a_to_the_beta_and_the_walk_is_t_to_the_t(beta):
    """T = D^{-1} A^{∘β} (rows sum to 1) and vec(M*) = T^t vec(M), by hand with dense matrices.
    A change of β, of the row normalisation or of the affinity breaks the comparison."""
    radius, h, w = 2, 3, 4
    emb = torch.randn(1, 5, h, w, generator=torch.Generator().manual_seed(7))
    a = _hand_affinity(emb, radius).pow(beta)
    t_hand = a / a.sum(1, keepdim=True)                           # D^{-1} A^{∘β}
    assert torch.allclose(t_hand.sum(1), torch.ones(h * w))
    band = rw.transition_band(emb, radius, beta)
    dense = rw.band_to_dense(band)[0]                             # a step is v @ dense
    assert torch.allclose(dense, t_hand.T, atol=1e-6)             # A symmetric: (D^{-1}A)^T
    m = torch.rand(1, 2, h, w, generator=torch.Generator().manual_seed(8))
    for steps in (1, 4):
        walked = rw.random_walk(m, band, steps)[0].flatten(1)     # [C, HW]
        by_hand = (torch.linalg.matrix_power(t_hand, steps) @ m[0].flatten(1).T).T
        assert torch.allclose(walked, by_hand, atol=1e-5)
    other = rw.transition_band(emb, radius, beta + 1)             # β matters
    assert not torch.allclose(rw.band_to_dense(other)[0], dense, atol=1e-4)


def test_affinity_loss_weighs_background_foreground_and_negative_pairs_a_quarter_a_quarter_a_half():
    labels = torch.tensor([[[0, 0, 1, 1, 2]]])                    # 1x5: every kind of pair at radius 2
    emb = torch.randn(1, 4, 1, 5, generator=torch.Generator().manual_seed(3))
    loss, logs = rw.affinity_loss(emb, labels, radius=2)
    aff = rw.pair_affinities(emb, [(0, 1)])[0, 0, 0].clamp(1e-5, 1 - 1e-5)   # pairs (k, k+1)
    l_bg = -torch.log(aff[0])                                      # (0, 0)
    l_fg = -torch.log(aff[2])                                      # (1, 1)
    l_neg = -(torch.log(1 - aff[1]) + torch.log(1 - aff[3])) / 2   # (0, 1), (1, 2)
    assert loss.item() == pytest.approx((0.25 * l_bg + 0.25 * l_fg + 0.5 * l_neg).item(), rel=1e-5)
