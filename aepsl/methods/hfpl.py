"""HFPL: likelihood-based losses for sharper CAMs (Jonnarth, Zhang & Felsberg, WACV 2024).

*Likelihood view.* Each class map is read through a per-class sigmoid, ``p_c(x) =
sigmoid(M_c(x))``, the probability that pixel x shows class c, instead of competing with the
other classes in a softmax.

*Importance-sampling loss.* Global average pooling scores an image by the mean of a class map
over all pixels, background included. HFPL instead draws ``samples`` pixels per image and
class with probability proportional to ``p_c`` and scores the class by the logits found there
(multi-label soft margin against the image labels). It is mixed with the pooled loss:
``(1 - w) * L_gap + w * L_is`` (published w = 0.2, 10 samples).

*Feature-similarity loss.* Pixel pairs are compared twice: by colour (mean absolute RGB
difference d, mapped to ``tanh(mu + logit d)``, negative for similar and positive for
different colours) and by their normalised class maps (half the squared distance). The loss
``-sum_ij w_ij * colour_ij * map_ij / (B H W)``, with a Gaussian spatial weight w of width
``sigma`` (published 5), rewards class-map changes across colour edges and penalises them
inside uniform regions, so CAM contours follow the image's edges.

The comparison of seeds with and without HFPL (chapter 7) lives in :mod:`aepsl.methods.hfpl_compare`,
so editing it leaves every training stage's code hash as it is. Both losses are switched on
for a classifier by the CAM recipe parameter ``hfpl`` (see
:mod:`aepsl.methods.cam`); every erasing round trains with its CAM stage's recipe, so AE + HFPL is
erasing with ``cam_stage`` pointing at a CAM stage trained with ``hfpl: true``.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F



def sample_pixels(weights: torch.Tensor, samples: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Indices [B, C, samples] into the flattened H*W pixels, drawn with replacement with
    probability proportional to ``weights`` [B,C,H,W] (>= 0; a map of zeros draws uniformly)."""
    b, c = weights.shape[:2]
    w = weights.detach().float().reshape(b * c, -1).clamp(min=0)
    empty = w.sum(1, keepdim=True) <= 0
    w = torch.where(empty, torch.ones_like(w), w)
    idx = torch.multinomial(w, samples, replacement=True, generator=generator)
    return idx.view(b, c, samples)


def importance_sampling_loss(class_maps: torch.Tensor, labels: torch.Tensor, samples: int = 10,
                             generator: torch.Generator | None = None) -> torch.Tensor:
    """Multi-label soft margin of the logits at pixels drawn from sigmoid(class map).

    class_maps [B,C,H,W] (logits before pooling), labels [B,C] in {0,1}.
    """
    b, c = class_maps.shape[:2]
    maps = class_maps.float()
    idx = sample_pixels(torch.sigmoid(maps), samples, generator)
    picked = maps.reshape(b, c, -1).gather(2, idx)                       # [B,C,S]
    target = labels.float()[..., None].expand_as(picked)
    return F.binary_cross_entropy_with_logits(picked, target)


def normalised_maps(class_maps: torch.Tensor, labels: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """[B,C+1,H,W]: ReLU class maps divided by their peak, absent classes zeroed, and a
    background map 1 - max first."""
    m = F.relu(class_maps.float())
    m = m / (m.flatten(2).max(2).values[..., None, None] + eps) * labels.float()[..., None, None]
    bg = 1 - m.max(1, keepdim=True).values
    return torch.cat([bg, m], 1)


def feature_similarity_loss(image: torch.Tensor, maps: torch.Tensor, sigma: float = 5.0, mu: float = 2.5,
                            eps: float = 1e-5) -> torch.Tensor:
    """HFPL's feature-similarity loss of colour images [B,3,H,W] in [0,1] and maps [B,K,H,W]
    of the same size (all pixel pairs, Gaussian spatial weight of width ``sigma`` pixels)."""
    b, _, h, w = maps.shape
    if image.shape[-2:] != (h, w):
        raise ValueError(f"feature_similarity_loss: image {tuple(image.shape[-2:])} and maps {(h, w)} differ in size")
    x = image.float().clamp(0, 1).flatten(2).transpose(1, 2)            # [B,N,3]
    y = maps.float().flatten(2).transpose(1, 2)                         # [B,N,K]
    d = (torch.cdist(x, x, p=1) / x.shape[-1]).clamp(0, 1)
    colour = torch.tanh(mu + torch.log((d + eps) / (1 - d + eps)))
    dist = 0.5 * torch.cdist(y, y, p=2) ** 2
    yy, xx = torch.meshgrid(torch.arange(h, device=maps.device), torch.arange(w, device=maps.device), indexing="ij")
    pos = torch.stack([yy.flatten(), xx.flatten()], 1).float()
    spatial = torch.exp(-0.5 * torch.cdist(pos, pos) ** 2 / sigma ** 2) / (2 * math.pi * sigma ** 2)
    return -(spatial * dist * colour).sum() / (b * h * w)


def hfpl_classification_loss(class_maps: torch.Tensor, images: torch.Tensor, labels: torch.Tensor, *,
                             weight: float = 0.2, samples: int = 10, fs_weight: float = 1.0, sigma: float = 5.0,
                             mu: float = 2.5) -> tuple[torch.Tensor, dict]:
    """The classifier's loss with HFPL: pooled + importance-sampled classification, plus the
    feature-similarity term on the class-map grid. ``images`` uint8 [B,3,H,W]."""
    maps = class_maps.float()
    gap = F.multilabel_soft_margin_loss(maps.mean((2, 3)), labels)
    isl = importance_sampling_loss(maps, labels, samples)
    loss = (1 - weight) * gap + weight * isl
    logs = {"gap": gap.detach(), "is": isl.detach()}
    if fs_weight > 0:
        small = F.interpolate(images.float() / 255, size=maps.shape[-2:], mode="bilinear", align_corners=False)
        fs = feature_similarity_loss(small, normalised_maps(maps, labels), sigma, mu)
        loss = loss + fs_weight * fs
        logs["fs"] = fs.detach()
    return loss, logs
