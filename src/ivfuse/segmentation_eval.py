"""Scoring predicted segmentation label files against ground truth: the library of ``ivfuse seg-eval``.

Predictions and ground truth are folders of label PNGs (one class id per pixel, as ``ivfuse
segment`` writes to ``labels/``), paired by file stem. One confusion matrix is summed over all
frames and scored once (:func:`ivfuse.metrics.segmentation.segmentation_scores`), as the field
does: mIoU over the 9 MSRS classes including "unlabelled", mIoU over classes 1-8, per-class IoU,
pixel accuracy. :func:`object_recall` counts each ground-truth object and how much of it was found
(``benchmarks/segmentation_breakdown.py``: recall by object size).

Example:
    >>> result = score_label_folders("seg/labels", "MSRS/test/label")  # doctest: +SKIP
    >>> print(scores_markdown(result))  # doctest: +SKIP
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import ndimage

from .classes import CLASS_NAMES, NUM_CLASSES
from .io import ImageReadError, list_images, read_label
from .metrics.segmentation import confusion_matrix, segmentation_scores


@dataclass
class LabelScores:
    """Outcome of :func:`score_label_folders`.

    ``scores`` is :func:`~ivfuse.metrics.segmentation.segmentation_scores` of the summed
    ``confusion`` (``(9, 9)`` int64, ``[true, predicted]``); ``frames`` the stems scored;
    ``missing`` ground-truth files without a prediction; ``failed`` one-line messages of files that
    could not be read or whose sizes differ (left out of the scores).
    """

    scores: dict
    confusion: np.ndarray
    frames: list[str] = field(default_factory=list)
    missing: list[Path] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)


def score_label_folders(predicted_dir: str | os.PathLike, label_dir: str | os.PathLike) -> LabelScores:
    """Score every ground-truth label that has a prediction of the same stem.

    Args:
        predicted_dir: folder of predicted class-id PNGs (values 0..8).
        label_dir: folder of ground-truth class-id PNGs (values 0..8, or 255 = not scored).

    Returns:
        :class:`LabelScores`; frames with a missing, unreadable or differently sized file are
        left out and listed.

    Raises:
        ImageReadError: a folder is missing, or no frame could be scored.
    """
    predicted, _, _ = list_images(predicted_dir)
    truth, _, _ = list_images(label_dir)
    confusion = np.zeros((NUM_CLASSES, NUM_CLASSES), dtype=np.int64)
    result = LabelScores(scores={}, confusion=confusion)
    for stem, label_path in sorted(truth.items()):
        if stem not in predicted:
            result.missing.append(label_path)
            continue
        try:
            label, prediction = read_label(label_path), read_label(predicted[stem])
            if label.shape != prediction.shape:
                raise ImageReadError(
                    f"{predicted[stem]}: size {prediction.shape[1]}x{prediction.shape[0]} differs from label {label_path} "
                    f"({label.shape[1]}x{label.shape[0]})"
                )
            if (prediction == 255).any():
                raise ImageReadError(f"{predicted[stem]}: a prediction has no ignore value 255; every pixel needs a class id")
        except ImageReadError as error:
            result.failed.append(str(error))
            continue
        confusion += confusion_matrix(label, prediction)
        result.frames.append(stem)
    if not result.frames:
        raise ImageReadError(f"{predicted_dir} and {label_dir}: no frame with a readable prediction and label of the same name")
    result.scores = segmentation_scores(confusion)
    return result


def scores_markdown(result: LabelScores) -> str:
    """The scores as Markdown, in percent: a table of mIoU, mIoU without class 0, pixel accuracy
    and per-class IoU, then one of per-class recall and precision (misses or false objects).

    Example:
        >>> conf = np.diag(np.arange(1, 10))
        >>> from ivfuse.metrics.segmentation import segmentation_scores
        >>> "| 100.00 |" in scores_markdown(LabelScores(segmentation_scores(conf), conf, ["a"]))
        True
    """
    scores = result.scores
    columns = ["mIoU", "mIoU 1-8", "pixel acc."] + list(CLASS_NAMES)
    values = [scores["miou"], scores["miou_without_0"], scores["pixel_accuracy"], *scores["iou"]]
    return (
        f"{len(result.frames)} frames, one confusion matrix over all; IoU in percent (classes 0-8: "
        f"mIoU includes 'unlabelled').\n\n"
        f"| {' | '.join(columns)} |\n|{'---:|' * len(columns)}\n"
        f"| {percent_cells(values)} |\n\n"
        f"Per class: recall (share of the class's pixels found) and precision (share of the pixels "
        f"predicted as the class that are it), in percent.\n\n"
        f"| | {' | '.join(CLASS_NAMES)} |\n|---|{'---:|' * len(CLASS_NAMES)}\n"
        f"| recall | {percent_cells(scores['class_accuracy'])} |\n"
        f"| precision | {percent_cells(scores['precision'])} |\n"
    )

def percent_cells(values) -> str:
    """Fractions as Markdown table cells in percent with two decimals, NaN (class absent) as ``-``.

    Example:
        >>> percent_cells([0.5, float("nan"), 1.0])
        '50.00 | - | 100.00'
    """
    return " | ".join("-" if np.isnan(value) else f"{100 * value:.2f}" for value in values)


def object_recall(label: np.ndarray, prediction: np.ndarray, class_id: int) -> np.ndarray:
    """Each ground-truth object of ``class_id`` and how much of it the prediction found.

    An object is an 8-connected region of ``label == class_id``. Pixel IoU weighs a car by its
    area, so a few near cars hide many missed far ones; this says which sizes are missed.

    Args:
        label: ``(H, W)`` integer class ids (255: not scored, never part of an object).
        prediction: ``(H, W)`` integer class ids, same size.
        class_id: the class whose objects are counted.

    Returns:
        ``(N, 2)`` int64, one row per object in scan order of its first pixel: ``[area in
        pixels, pixels predicted as class_id]``.

    Example:
        >>> label = np.array([[1, 1, 0, 0], [0, 0, 0, 1]])
        >>> prediction = np.array([[1, 0, 0, 0], [0, 0, 0, 0]])
        >>> object_recall(label, prediction, 1).tolist()
        [[2, 1], [1, 0]]
    """
    regions, count = ndimage.label(label == class_id, structure=np.ones((3, 3), dtype=bool))
    if count == 0:
        return np.zeros((0, 2), dtype=np.int64)
    area = np.bincount(regions.ravel(), minlength=count + 1)[1:]
    found = np.bincount(regions.ravel(), weights=(prediction == class_id).ravel(), minlength=count + 1)[1:]
    return np.stack([area, found], axis=1).astype(np.int64)
