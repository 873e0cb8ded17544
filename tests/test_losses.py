import math

import pytest
import torch
import torch.nn.functional as F

from ivfuse.classes import IGNORE_INDEX
from ivfuse.losses import (
    SalientTargetConfig,
    SemanticLossConfig,
    object_surround,
    ohem_cross_entropy,
    salient_target_loss,
    semantic_loss,
)


def _logits_with_true_probability(probabilities: list[float], classes: int = 9) -> tuple[torch.Tensor, torch.Tensor]:
    """One row of pixels of class 1 whose softmax gives class 1 the given probabilities."""
    logits = torch.zeros(1, classes, 1, len(probabilities))
    for i, p in enumerate(probabilities):
        # softmax of [x, 0, ..., 0] at the true class equals p for x = log(p (K - 1) / (1 - p))
        logits[0, 1, 0, i] = math.log(p * (classes - 1) / (1 - p))
    return logits, torch.ones(1, 1, len(probabilities), dtype=torch.int64)


def test_only_pixels_below_the_threshold_count():
    logits, target = _logits_with_true_probability([0.95, 0.9, 0.5, 0.2])
    loss = ohem_cross_entropy(logits, target, threshold=0.7, min_kept_fraction=0.0)
    assert math.isclose(float(loss), (-math.log(0.5) - math.log(0.2)) / 2, rel_tol=1e-5)


def test_at_least_the_minimum_share_of_hardest_pixels_is_kept():
    logits, target = _logits_with_true_probability([0.99, 0.95, 0.9, 0.8])
    loss = ohem_cross_entropy(logits, target, threshold=0.7, min_kept_fraction=0.5)
    assert math.isclose(float(loss), (-math.log(0.9) - math.log(0.8)) / 2, rel_tol=1e-5)
    everything = ohem_cross_entropy(logits, target, threshold=0.7, min_kept_fraction=1.0)
    assert math.isclose(float(everything), float(F.cross_entropy(logits, target)), rel_tol=1e-5)


def test_ignored_pixels_never_count():
    logits, target = _logits_with_true_probability([0.5, 0.2, 0.1])
    target[0, 0, 2] = 255
    loss = ohem_cross_entropy(logits, target, min_kept_fraction=0.0)
    logits[0, :, 0, 2] = torch.randn(9) * 10
    assert torch.equal(loss, ohem_cross_entropy(logits, target, min_kept_fraction=0.0))
    assert math.isclose(float(loss), (-math.log(0.5) - math.log(0.2)) / 2, rel_tol=1e-5)


def test_all_ignored_gives_zero_still_attached_to_the_graph():
    logits = torch.randn(1, 9, 4, 4, requires_grad=True)
    loss = ohem_cross_entropy(logits, torch.full((1, 4, 4), 255))
    loss.backward()
    assert float(loss.detach()) == 0.0 and torch.equal(logits.grad, torch.zeros_like(logits))


def test_class_weights_average_like_cross_entropy():
    logits, target = torch.randn(2, 9, 8, 8), torch.randint(0, 9, (2, 8, 8))
    weights = torch.rand(9) + 0.1
    # threshold 1: every pixel is hard, so OHEM reduces to the weighted cross-entropy.
    loss = ohem_cross_entropy(logits, target, threshold=1.0, class_weights=weights)
    assert torch.allclose(loss, F.cross_entropy(logits, target, weight=weights))


def test_semantic_loss_adds_the_weighted_aux_head():
    logits, aux_logits, target = torch.randn(1, 9, 8, 8), torch.randn(1, 9, 8, 8), torch.randint(0, 9, (1, 8, 8))
    config = SemanticLossConfig(aux_weight=0.25)
    main = semantic_loss(logits, target, config)
    aux = semantic_loss(aux_logits, target, config)
    assert torch.allclose(semantic_loss(logits, target, config, aux_logits), main + 0.25 * aux)


def test_object_surround_is_the_background_within_margin_of_the_chosen_classes():
    label = torch.zeros(2, 9, 9, dtype=torch.long)
    label[0, 4, 4] = 2  # a person
    label[0, 3, 3] = 1  # a car beside it: an object, so not the person's surround
    label[0, 8, 8] = 1  # a car far away, not asked for
    label[1] = IGNORE_INDEX  # an unlabelled pair
    region = object_surround(label, (2,), 2)
    assert region.shape == (2, 1, 9, 9) and region.dtype == torch.bool
    expected = torch.zeros(9, 9, dtype=torch.bool)
    expected[2:7, 2:7] = True
    expected[4, 4] = expected[3, 3] = False
    assert torch.equal(region[0, 0], expected)
    assert not region[1].any()
    # The 3x3 windows of (3, 3) and (4, 4) overlap (14 pixels), the corner car's is clipped (4);
    # less the 3 object pixels.
    assert int(object_surround(label, (1, 2), 1).sum()) == 14 + 4 - 3
    # With the objects: the person's window plus the person, the car beside it (not asked for) stays out.
    with_objects = object_surround(label, (2,), 2, include_objects=True)
    expected[4, 4] = True
    assert torch.equal(with_objects[0, 0], expected) and not with_objects[1].any()
    assert torch.equal(object_surround(label, (1, 2), 0, include_objects=True)[:, 0], (label == 1) | (label == 2))


def test_salient_target_loss_pulls_only_the_region_towards_ir():
    fused = torch.full((1, 1, 4, 4), 0.5, requires_grad=True)
    ir = torch.ones(1, 1, 4, 4)
    region = torch.zeros(1, 1, 4, 4, dtype=torch.bool)
    region[..., 1, 1] = True
    loss = salient_target_loss(fused, ir, region)
    assert loss.item() == pytest.approx(0.5 / 16)  # averaged over all pixels, not the region
    loss.backward()
    assert fused.grad[0, 0, 1, 1] < 0  # descending raises the region's pixel towards IR
    fused.grad[0, 0, 1, 1] = 0
    assert not fused.grad.any()
    assert salient_target_loss(fused, ir, torch.zeros_like(region)).item() == 0.0


def test_salient_target_config_refuses_what_would_silently_do_nothing_or_harm():
    assert SalientTargetConfig(classes=("person", "car")).class_ids == (2, 1)
    for classes, named in ((("pedestrian",), "pedestrian"), (("unlabelled",), "unlabelled"), ((), "none")):
        with pytest.raises(ValueError, match=f"classes must name objects .*; not {named}$"):
            SalientTargetConfig(classes=classes)
    with pytest.raises(ValueError, match="weight must be >= 0 and margin >= 1"):
        SalientTargetConfig(weight=-1.0)
    with pytest.raises(ValueError, match="weight must be >= 0 and margin >= 1"):
        SalientTargetConfig(margin=0)


def test_content_loss_over_a_mask_counts_only_its_pixels():
    from ivfuse.losses import ContentWeights, content_loss

    torch.manual_seed(0)
    fused, ir, vis_y = (torch.rand(2, 1, 24, 24) for _ in range(3))
    weights = ContentWeights(ssim=0.5)
    everywhere = torch.ones(2, 1, 24, 24, dtype=torch.bool)
    whole, parts = content_loss(fused, ir, vis_y, weights)
    masked, masked_parts = content_loss(fused, ir, vis_y, weights, mask=everywhere)
    assert masked.item() == pytest.approx(whole.item(), rel=1e-5)
    assert masked_parts == pytest.approx(parts, rel=1e-5)
    # Make the fused image exact (zero intensity loss) outside the mask's left half only.
    left = torch.zeros_like(everywhere)
    left[..., :12] = True
    exact_right = torch.where(left, fused, torch.maximum(ir, vis_y))
    assert content_loss(exact_right, ir, vis_y, weights, mask=~left)[1]["intensity"] == 0.0
    assert content_loss(exact_right, ir, vis_y, weights, mask=left)[1]["intensity"] > 0.0
