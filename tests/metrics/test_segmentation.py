import math

import numpy as np
import pytest

from ivfuse.metrics import segmentation as S


def test_msrs_constants():
    assert len(S.CLASS_NAMES) == S.NUM_CLASSES == 9
    assert S.CLASS_NAMES[0] == "unlabelled" and S.CLASS_NAMES[8] == "bump"
    assert S.PALETTE.shape == (9, 3)
    assert S.PALETTE[2].tolist() == [64, 64, 0]


def test_hand_made_maps_accumulated_over_a_set():
    label_1 = np.array([[0, 0, 1, 1], [2, 2, 255, 255]], dtype=np.uint8)
    pred_1 = np.array([[0, 1, 1, 1], [2, 0, 8, 8]], dtype=np.uint8)
    label_2 = np.array([[1, 1]], dtype=np.uint8)
    pred_2 = np.array([[1, 2]], dtype=np.uint8)
    conf = S.confusion_matrix(label_1, pred_1) + S.confusion_matrix(label_2, pred_2)
    assert conf.sum() == 8  # 255 ignored, also where the prediction is 8
    scores = S.segmentation_scores(conf)
    # class 0: tp 1, fn 1, fp 1 -> 1/3; class 1: tp 3, fn 1, fp 1 -> 3/5; class 2: tp 1, fn 1, fp 1 -> 1/3.
    assert scores["iou"][:3] == pytest.approx([1 / 3, 3 / 5, 1 / 3])
    assert all(math.isnan(v) for v in scores["iou"][3:])
    assert scores["miou"] == pytest.approx((1 / 3 + 3 / 5 + 1 / 3) / 3)
    assert scores["miou_without_0"] == pytest.approx((3 / 5 + 1 / 3) / 2)
    assert scores["pixel_accuracy"] == pytest.approx(5 / 8)
    assert scores["mean_class_accuracy"] == pytest.approx((1 / 2 + 3 / 4 + 1 / 2) / 3)
    # Precision: class 0 predicted twice (once right), class 1 four times (three right), class 2 twice.
    assert scores["precision"][:3] == pytest.approx([1 / 2, 3 / 4, 1 / 2])
    assert all(math.isnan(v) for v in scores["precision"][3:])


def test_set_level_not_per_image_average():
    # Image 1: 1 pixel of class 1 missed; image 2: 99 of class 1 right.
    conf = S.confusion_matrix(np.array([1]), np.array([0])) + S.confusion_matrix(np.full(99, 1), np.full(99, 1))
    assert S.segmentation_scores(conf)["iou"][1] == pytest.approx(99 / 100)


def test_perfect_prediction():
    label = np.arange(9).reshape(3, 3)
    scores = S.segmentation_scores(S.confusion_matrix(label, label))
    assert scores["miou"] == scores["pixel_accuracy"] == scores["mean_class_accuracy"] == 1.0


def test_bad_values_are_reported():
    with pytest.raises(ValueError, match=r"label has values outside 0..8 and 255: \[9, 12\]"):
        S.confusion_matrix(np.array([0, 9, 12]), np.array([0, 0, 0]))
    with pytest.raises(ValueError, match="prediction"):
        S.confusion_matrix(np.array([0, 1]), np.array([0, 255]))
    with pytest.raises(ValueError, match="shape"):
        S.confusion_matrix(np.zeros((2, 2), int), np.zeros((2, 3), int))
