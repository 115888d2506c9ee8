"""HFPL's importance-sampling and feature-similarity losses, and the CAM recipe switch."""
from __future__ import annotations

import pytest
import torch

from aepsl.methods import hfpl


def test_importance_sampling_draws_only_where_the_map_is_positive():
    w = torch.zeros(2, 3, 8, 8)
    w[0, 0, 2, 3] = 1.0
    w[0, 0, 5, 5] = 3.0
    w[1, 2, 7, 0] = 0.5
    w[:, 1] = torch.rand(2, 8, 8)           # positive everywhere
    w[1, 1, 0, :] = 0.0                     # ... except one row
    idx = hfpl.sample_pixels(w, 500, torch.Generator().manual_seed(0))
    assert idx.shape == (2, 3, 500)
    assert set(idx[0, 0].tolist()) == {2 * 8 + 3, 5 * 8 + 5}
    assert set(idx[1, 2].tolist()) == {7 * 8 + 0}
    assert min(idx[1, 1].tolist()) >= 8     # the zero row (pixels 0..7) is never drawn
    # in proportion to the weights: pixel (5,5) has 3x the weight of (2,3)
    share = (idx[0, 0] == 45).float().mean().item()
    assert 0.65 < share < 0.85


def test_importance_sampling_loss_rewards_maps_that_are_high_where_sampled():
    labels = torch.tensor([[1.0, 0.0]])
    good = torch.full((1, 2, 4, 4), -4.0)
    good[0, 0, 1:3, 1:3] = 4.0                           # present class: confident inside the object
    bad = good.clone()
    bad[0, 1, 0, 0] = 8.0                                # absent class: one confident pixel, which sampling finds
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    l_good = hfpl.importance_sampling_loss(good, labels, 10, g())
    l_bad = hfpl.importance_sampling_loss(bad, labels, 10, g())
    assert l_good < l_bad
    # pooling hides the single pixel; importance sampling does not
    gap = lambda m: torch.nn.functional.multilabel_soft_margin_loss(m.mean((2, 3)), labels)  # noqa: E731
    assert (l_bad - l_good) > (gap(bad) - gap(good))


def _edge_image(size=16, edge=8):
    img = torch.zeros(1, 3, size, size)
    img[0, 0, :, :edge] = 0.9                # red left, blue right
    img[0, 2, :, edge:] = 0.9
    return img


def _step_map(size=16, edge=8):
    m = torch.zeros(1, 2, size, size)
    m[0, 0, :, :edge] = 1.0
    m[0, 1, :, edge:] = 1.0
    return m


def test_feature_similarity_loss_prefers_maps_aligned_with_colour_edges():
    img = _edge_image()
    aligned = hfpl.feature_similarity_loss(img, _step_map(edge=8), sigma=5.0)
    shifted = hfpl.feature_similarity_loss(img, _step_map(edge=4), sigma=5.0)
    flat = hfpl.feature_similarity_loss(img, torch.full((1, 2, 16, 16), 0.5), sigma=5.0)
    assert aligned < shifted
    assert aligned < flat                                  # changes across the colour edge are rewarded
    assert flat.item() == pytest.approx(0.0, abs=1e-7)    # a constant map has no pair differences
    with pytest.raises(ValueError, match="differ in size"):
        hfpl.feature_similarity_loss(img, torch.zeros(1, 2, 8, 8))


def test_feature_similarity_gradient_moves_the_contour_towards_the_edge():
    img = _edge_image()
    m = _step_map(edge=6).requires_grad_(True)
    hfpl.feature_similarity_loss(img, m).backward()
    # descending the gradient raises class 0 (left map) on columns 6-7, left of the colour edge
    assert (-m.grad[0, 0, :, 6:8]).mean() > 0


def test_hfpl_switch_trains_with_both_losses_and_keeps_old_hashes(scene_tree, tmp_path):
    from aepsl.methods import cam

    plain = cam.CAMConfig()
    assert not [k for k in plain.hashed() if k.startswith("hfpl_")]   # its settings count only with HFPL on
    on = cam.CAMConfig(hfpl=True)
    assert on.hashed()["hfpl_weight"] == 0.2 and on.hashed() != plain.hashed()
    params = dict(profile="t", data_root=str(scene_tree), artifacts_root=str(tmp_path), stage="cam_hfpl",
                  hfpl=True, backbone="small", backbone_weights="", width=8, epochs=1, batch_size=8, crop=32,
                  cam_scales=[1.0], eval_batch_size=8)
    rec = cam.run(params, progress=False)
    hist = rec["metrics"]["history"][0]
    assert {"gap", "is", "fs"} <= set(hist)
    assert rec["params"]["hfpl"] is True
    with pytest.raises(ValueError, match="hfpl_weight"):
        cam.run({**params, "hfpl_weight": 1.5})


# ------------------------------------------------------------------ the chapter's equations, term by term
def test_feature_similarity_loss_matches_the_formula_by_hand():
    """L_FS = -1/(BHW) sum_ij g_ij tanh(mu + logit d_ij) ½||m_i - m_j||², on a 1x2 image."""
    import math

    import torch

    from aepsl.methods.hfpl import feature_similarity_loss

    image = torch.tensor([[[[0.1, 0.7]], [[0.2, 0.2]], [[0.9, 0.3]]]])   # [1,3,1,2]
    maps = torch.tensor([[[[0.8, 0.1]], [[0.2, 0.9]]]])                  # [1,2,1,2]
    sigma, mu, eps = 5.0, 2.5, 1e-5
    d = (abs(0.1 - 0.7) + 0 + abs(0.9 - 0.3)) / 3
    colour = math.tanh(mu + math.log((d + eps) / (1 - d + eps)))
    dist = 0.5 * ((0.8 - 0.1) ** 2 + (0.2 - 0.9) ** 2)
    g = math.exp(-0.5 / sigma ** 2) / (2 * math.pi * sigma ** 2)        # cells one apart
    by_hand = -(2 * g * colour * dist) / (1 * 1 * 2)                     # pairs (0,1) and (1,0)
    got = feature_similarity_loss(image, maps, sigma, mu, eps).item()
    assert got == pytest.approx(by_hand, rel=1e-5)


def test_classification_loss_mixes_pooled_and_sampled_terms_with_weight_w():
    """L_cls = (1 - w) L_GAP + w L_IS (the feature term off): the same draws, by hand."""
    import torch
    import torch.nn.functional as F

    from aepsl.methods.hfpl import hfpl_classification_loss, importance_sampling_loss

    maps = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    labels = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    images = torch.zeros(2, 3, 4, 4, dtype=torch.uint8)
    w = 0.3
    torch.manual_seed(5)
    loss, logs = hfpl_classification_loss(maps, images, labels, weight=w, samples=6, fs_weight=0.0)
    torch.manual_seed(5)
    is_term = importance_sampling_loss(maps, labels, 6)
    gap = F.multilabel_soft_margin_loss(maps.mean((2, 3)), labels)
    assert loss.item() == pytest.approx(((1 - w) * gap + w * is_term).item(), rel=1e-6)
    assert "fs" not in logs
