"""The HFPL comparison (``notebooks/07_hfpl.py``): seeds made with and without HFPL's losses,
scored as regions (mIoU) and as contours (boundary F-score). It trains nothing: it reads the
CAM and pseudo-mask stages the profile's runs wrote. Kept apart from :mod:`aepsl.methods.hfpl` (the
losses, which the CAM stage trains with) so that only this stage's code hash covers it."""
from __future__ import annotations

from dataclasses import dataclass

from . import metrics as M
from ..engine.config import StageConfig, resolve, runtime
from .seedmaps import seed_mask
from ..engine.stage import stage


@dataclass
class HFPLCompareConfig(StageConfig):
    """Parameters of the comparison in ``notebooks/07_hfpl.py`` (no training: it scores the
    seeds the CAM and erasing stages saved)."""

    stage: str = "hfpl"   # stage name: the output folder under artifacts_root/profile
    cam_stage: str = "cam"   # CAM stage trained without HFPL
    hfpl_cam_stage: str = "cam_hfpl"   # CAM stage trained with HFPL
    masks_stage: str = ""   # pseudo-mask stage from erasing without HFPL (empty: CAM seeds only)
    hfpl_masks_stage: str = ""   # pseudo-mask stage from erasing with HFPL (empty: CAM seeds only)
    tolerance: int = 1   # boundary F-score match distance, px
    force: bool = runtime(False)   # recompute even when finished artifacts exist

    def writes(self) -> str:
        return self.stage

    def validate(self) -> None:
        if bool(self.masks_stage) != bool(self.hfpl_masks_stage):
            raise ValueError("parameters masks_stage and hfpl_masks_stage: give both (AE seeds without and with "
                             f"HFPL) or neither, got {self.masks_stage!r} and {self.hfpl_masks_stage!r}")

    def reads(self) -> list[str]:
        return list(self.sources().values())

    def sources(self) -> dict[str, str]:
        """Row label -> seed stage: the CAM pair always, the AE pair when the profile ran it."""
        rows = {"CAM": self.cam_stage, "CAM + HFPL": self.hfpl_cam_stage}
        if self.masks_stage:
            rows.update({"AE": self.masks_stage, "AE + HFPL": self.hfpl_masks_stage})
        return rows


@stage(HFPLCompareConfig, "hfpl", dataset=False)
def compare(cfg: HFPLCompareConfig, run_, device, progress: bool) -> dict:
    """Region (mIoU) and contour (boundary F-score) quality of the seeds with and without HFPL."""
    from ..engine.progress import bar

    from ..engine.artifacts import stage_dir
    from ..data.voc import VOCTree

    root = resolve(cfg.artifacts_root)
    tree = VOCTree(resolve(cfg.data_root))
    if not tree.has_masks("train"):
        raise FileNotFoundError(f"the HFPL comparison scores seeds against the training masks, which {tree.root} lacks")
    out: dict = {"classes": tree.classes, "tolerance": cfg.tolerance, "rows": {}}
    with run_.timed("score"):
        for label, name in cfg.sources().items():
            src = stage_dir(root, cfg.profile, name)
            kind = "cams" if label.startswith("CAM") else "masks"
            threshold = run_.inputs[name]["metrics"].get("best_threshold") if kind == "cams" else None
            conf, contour = M.ConfusionMeter(tree.num_classes), M.BoundaryMeter(cfg.tolerance)
            for image in bar(tree.ids("train"), desc=label, disable=not progress, unit="images"):
                pred, gt = seed_mask(kind, src, image, tree, threshold), tree.mask(image)
                conf.update(pred, gt)
                contour.update(pred, gt)
            out["rows"][label] = {"stage": name, "threshold": threshold,
                                  **M.segmentation_scores(conf.matrix, tree.classes), **contour.scores()}
    return out
