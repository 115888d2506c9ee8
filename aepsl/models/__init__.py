"""Networks: backbones, the CAM classifier, the LargeFOV segmenter, AffinityNet."""
from .backbones import BACKBONES, build_backbone
from .classifier import CAMClassifier

__all__ = ["BACKBONES", "build_backbone", "CAMClassifier"]
