"""Networks. Each file holds one network; they import nothing of ivfuse but each other."""

from .fusion import FusionConfig, FusionNet, blend_sources
from .interaction import CrossDomainInteraction
from .segmentation import SegmentationConfig, SegmentationNet, class_probabilities

__all__ = ["CrossDomainInteraction", "FusionConfig", "FusionNet", "SegmentationConfig", "SegmentationNet", "blend_sources", "class_probabilities"]
