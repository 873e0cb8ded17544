"""Fusion and segmentation metrics (see ``docs/metrics.md``)."""

from ivfuse.metrics.fusion import (
    CONVENTIONS,
    HIGHER_IS_BETTER,
    METRIC_NAMES,
    MetricUndefinedWarning,
    ag,
    cc,
    compute_all,
    en,
    mi,
    nabf,
    psnr,
    qabf,
    resolve_metric_names,
    scd,
    sd,
    sf,
    ssim,
    to_gray255,
    vif,
)
from ivfuse.metrics.segmentation import (
    CLASS_NAMES,
    IGNORE_INDEX,
    NUM_CLASSES,
    PALETTE,
    confusion_matrix,
    segmentation_scores,
)

__all__ = [
    "CLASS_NAMES", "CONVENTIONS", "HIGHER_IS_BETTER", "IGNORE_INDEX", "METRIC_NAMES", "MetricUndefinedWarning",
    "NUM_CLASSES", "PALETTE", "ag", "cc", "compute_all", "confusion_matrix", "en", "mi", "nabf",
    "psnr", "qabf", "resolve_metric_names", "scd", "sd", "segmentation_scores", "sf", "ssim", "to_gray255", "vif",
]
