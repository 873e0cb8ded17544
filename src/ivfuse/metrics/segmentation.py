"""Semantic segmentation metrics for MSRS: confusion matrix, IoU, mIoU, accuracies.

The confusion matrix is accumulated over a whole set (sum the per-image matrices), and
scores are computed once from the total, as the field does; per-image averages of IoU
would weight small objects differently.

Example:
    >>> import numpy as np
    >>> label = np.array([[0, 1], [2, 255]])
    >>> conf = confusion_matrix(label, np.array([[0, 1], [1, 3]]))
    >>> scores = segmentation_scores(conf)
    >>> round(scores["pixel_accuracy"], 4)
    0.6667
"""

from __future__ import annotations

import numpy as np

from ..classes import CLASS_NAMES, IGNORE_INDEX, NUM_CLASSES, PALETTE

__all__ = ["CLASS_NAMES", "IGNORE_INDEX", "NUM_CLASSES", "PALETTE", "confusion_matrix", "segmentation_scores"]


def _check_ids(ids: np.ndarray, what: str, num_classes: int, allow_ignore: bool) -> None:
    allowed = (ids < num_classes) | (allow_ignore & (ids == IGNORE_INDEX))
    if not allowed.all():
        bad = np.unique(ids[~allowed])[:10]
        extra = f" and {IGNORE_INDEX}" if allow_ignore else ""
        raise ValueError(f"{what} has values outside 0..{num_classes - 1}{extra}: {bad.tolist()}")


def confusion_matrix(label: np.ndarray, prediction: np.ndarray, num_classes: int = NUM_CLASSES) -> np.ndarray:
    """Confusion matrix of one label map; sum the results over a set.

    Args:
        label: HxW integer ground truth, values 0..num_classes-1 or 255 (ignored).
        prediction: HxW integer prediction, values 0..num_classes-1.
        num_classes: K, 9 for MSRS.

    Returns:
        KxK int64 matrix, ``conf[true, predicted]`` = pixel count.

    Raises:
        ValueError: shapes differ, or values are out of range (the message lists them).

    Example:
        >>> import numpy as np
        >>> confusion_matrix(np.array([0, 1, 255]), np.array([1, 1, 0]), num_classes=2)
        array([[0, 1],
               [0, 1]])
    """
    label, prediction = np.asarray(label), np.asarray(prediction)
    if label.shape != prediction.shape:
        raise ValueError(f"label shape {label.shape} differs from prediction shape {prediction.shape}")
    if not (np.issubdtype(label.dtype, np.integer) and np.issubdtype(prediction.dtype, np.integer)):
        raise ValueError("label and prediction must be integer class-id maps")
    label, prediction = label.astype(np.int64).ravel(), prediction.astype(np.int64).ravel()
    _check_ids(label, "label", num_classes, allow_ignore=True)
    _check_ids(prediction, "prediction", num_classes, allow_ignore=False)
    kept = label != IGNORE_INDEX
    flat = label[kept] * num_classes + prediction[kept]
    return np.bincount(flat, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def segmentation_scores(conf: np.ndarray) -> dict:
    """Scores from an accumulated confusion matrix.

    A class that appears neither in the labels nor in the predictions has IoU NaN and is
    left out of the means (``nanmean``); likewise a class absent from the labels for the
    class accuracy.

    Args:
        conf: KxK integer matrix from :func:`confusion_matrix` (summed over a set).

    Returns:
        dict with ``iou`` (K floats), ``miou`` (all K classes, including class 0
        "unlabelled", the field's convention), ``miou_without_0`` (classes 1..K-1),
        ``pixel_accuracy``, ``class_accuracy`` (K floats: the recall, the share of each class's
        pixels predicted as it), ``mean_class_accuracy`` and ``precision`` (K floats: the share
        of the pixels predicted as each class that are it; NaN where none is). IoU is lost to
        misses when recall is low and to false objects when precision is.

    Example:
        >>> import numpy as np
        >>> segmentation_scores(np.array([[3, 1], [0, 4]]))["miou"]
        0.775
    """
    conf = np.asarray(conf, dtype=np.float64)
    true_positive = np.diag(conf)
    labelled = conf.sum(axis=1)
    predicted = conf.sum(axis=0)
    union = labelled + predicted - true_positive
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, true_positive / union, np.nan)
        class_accuracy = np.where(labelled > 0, true_positive / labelled, np.nan)
        precision = np.where(predicted > 0, true_positive / predicted, np.nan)
    total = conf.sum()

    def nanmean(values: np.ndarray) -> float:
        return float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")

    return {
        "iou": iou.tolist(),
        "miou": nanmean(iou),
        "miou_without_0": nanmean(iou[1:]),
        "pixel_accuracy": float(true_positive.sum() / total) if total > 0 else float("nan"),
        "class_accuracy": class_accuracy.tolist(),
        "mean_class_accuracy": nanmean(class_accuracy),
        "precision": precision.tolist(),
    }
