import math

import pytest
import torch
import torch.nn.functional as F

from ivfuse.classes import IGNORE_INDEX
from ivfuse.losses import (
    SalientTargetConfig,
    SemanticLossConfig,
    lovasz_softmax,
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


def test_lovasz_of_confident_predictions_is_one_minus_the_mean_iou_of_the_classes_present():
    generator = torch.Generator().manual_seed(0)
    target = torch.randint(0, 4, (2, 12, 12), generator=generator)
    target[target == 3] = IGNORE_INDEX
    target[0, 0, 0] = 2  # class 2 present; class 3 only ignored, absent
    predicted = torch.randint(0, 5, (2, 12, 12), generator=generator)  # class 4 never true
    logits = 50 * F.one_hot(predicted, 5).permute(0, 3, 1, 2).float()
    valid = target != IGNORE_INDEX
    ious = []
    for c in range(3):
        truth, guess = (target == c) & valid, (predicted == c) & valid
        ious.append(float((truth & guess).sum()) / float((truth | guess).sum()))
    assert math.isclose(float(lovasz_softmax(logits, target)), 1 - sum(ious) / 3, rel_tol=1e-5)


def test_lovasz_gradient_raises_the_true_class_and_ignores_what_is_ignored():
    target = torch.tensor([[[0, 1], [1, IGNORE_INDEX]]])
    logits = torch.zeros(1, 2, 2, 2, requires_grad=True)
    loss = lovasz_softmax(logits, target)
    loss.backward()
    assert 0 < loss.item() < 1
    assert float(logits.grad[0, 1, 0, 1]) < 0 < float(logits.grad[0, 0, 0, 1])  # descent raises class 1
    assert torch.equal(logits.grad[0, :, 1, 1], torch.zeros(2))
    assert lovasz_softmax(logits.detach(), torch.full((1, 2, 2), IGNORE_INDEX)).item() == 0.0


def test_lovasz_stride_uses_every_nth_pixel():
    logits, target = torch.randn(1, 9, 8, 8), torch.randint(0, 9, (1, 8, 8))
    strided = lovasz_softmax(logits[:, :, ::4, ::4], target[:, ::4, ::4])
    assert torch.equal(lovasz_softmax(logits, target, stride=4), strided)


def test_semantic_loss_adds_the_weighted_lovasz_term():
    logits, target = torch.randn(1, 9, 16, 16), torch.randint(0, 9, (1, 16, 16))
    plain = semantic_loss(logits, target, SemanticLossConfig())
    mixed = semantic_loss(logits, target, SemanticLossConfig(lovasz_weight=0.5))
    assert torch.allclose(mixed, plain + 0.5 * lovasz_softmax(logits, target, stride=4))
    with pytest.raises(ValueError, match="lovasz_weight"):
        SemanticLossConfig(lovasz_weight=-1)


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


def test_intensity_target_defaults_to_the_max_and_the_default_loss_is_unchanged():
    from ivfuse.losses import ContentWeights, content_loss, intensity_target

    torch.manual_seed(0)
    fused, ir, vis_y = (torch.rand(2, 1, 24, 24) for _ in range(3))
    assert torch.equal(intensity_target(ir, vis_y, ContentWeights()), torch.maximum(ir, vis_y))
    _, parts = content_loss(fused, ir, vis_y, ContentWeights(ssim=0.5))
    assert parts["intensity"] == pytest.approx(F.l1_loss(fused, torch.maximum(ir, vis_y)).item(), rel=1e-6)


def test_mean_share_moves_the_target_from_the_max_to_the_mean():
    from ivfuse.losses import ContentWeights, intensity_target

    ir, vis_y = torch.full((1, 1, 8, 8), 0.8), torch.full((1, 1, 8, 8), 0.2)
    assert torch.allclose(intensity_target(ir, vis_y, ContentWeights(mean_share=1.0)), torch.full_like(ir, 0.5))
    assert torch.allclose(intensity_target(ir, vis_y, ContentWeights(mean_share=0.25)), torch.full_like(ir, 0.725))


def test_contrast_gain_stretches_low_contrast_areas_only_up_to_max_gain():
    from ivfuse.losses import ContentWeights, intensity_target

    # Left half a faint stripe pattern (std 0.02), right half a strong one (std 0.3).
    column = torch.arange(64) % 2 * 2 - 1.0
    image = 0.5 + torch.where(torch.arange(64) < 32, 0.02, 0.3) * column
    ir = image.expand(1, 1, 64, 64).contiguous()
    weights = ContentWeights(contrast_level=0.1, contrast_sigma=2.0, max_gain=2.0)
    target = intensity_target(ir, torch.zeros_like(ir), weights)
    faint = (target - 0.5)[..., 24:40, 4:24].abs().mean() / 0.02
    strong = (target - 0.5)[..., 24:40, 40:60].abs().mean() / 0.3
    assert faint == pytest.approx(2.0, rel=0.05)  # capped at max_gain
    assert strong == pytest.approx(1.0, rel=0.05)  # already above the level: kept


def test_a_stretched_target_raises_the_texture_goal_above_the_sources():
    from ivfuse.losses import ContentWeights, intensity_target, texture_loss
    from ivfuse.models.fusion import sobel_magnitude

    torch.manual_seed(0)
    ir, vis_y = 0.5 + 0.02 * torch.randn(2, 1, 1, 32, 32)
    target = intensity_target(ir, vis_y, ContentWeights(contrast_level=0.1, contrast_sigma=4.0))
    # Against a flat image the loss is the mean goal: with the stretched target it is higher.
    flat = torch.zeros_like(ir)
    assert texture_loss(flat, ir, vis_y, target=target) > 1.2 * texture_loss(flat, ir, vis_y)
    assert sobel_magnitude(target).mean() > torch.maximum(sobel_magnitude(ir), sobel_magnitude(vis_y)).mean()


def test_content_weights_refuse_targets_out_of_range():
    from ivfuse.losses import ContentWeights

    for bad in (dict(mean_share=1.5), dict(sd_gain=-1.0), dict(contrast_level=-0.1), dict(max_gain=0.5), dict(contrast_sigma=0.0),
                dict(base_gain=0.9), dict(base_sigma=0.0), dict(detail_gain=-0.5), dict(detail_sigma=0.0)):
        with pytest.raises(ValueError):
            ContentWeights(**bad)


def test_sd_gain_gives_the_mixed_target_the_max_s_contrast_back():
    from ivfuse.losses import ContentWeights, intensity_target

    torch.manual_seed(0)
    ir, vis_y = torch.rand(2, 2, 1, 32, 32)
    plain_max = torch.maximum(ir, vis_y)
    mixed = intensity_target(ir, vis_y, ContentWeights(mean_share=0.25))
    for gain in (1.0, 1.2):
        target = intensity_target(ir, vis_y, ContentWeights(mean_share=0.25, sd_gain=gain))
        assert torch.allclose(target.std(dim=(-2, -1)), gain * plain_max.std(dim=(-2, -1)), rtol=1e-5)  # per image
        assert torch.allclose(target.mean(dim=(-2, -1)), mixed.mean(dim=(-2, -1)), atol=1e-6)  # about the mix's mean
    # Without a mean share it stretches the max itself.
    stretched = intensity_target(ir, vis_y, ContentWeights(sd_gain=1.1))
    assert torch.allclose(stretched.std(dim=(-2, -1)), 1.1 * plain_max.std(dim=(-2, -1)), rtol=1e-5)


def test_base_gain_stretches_the_coarse_layer_and_barely_the_edges():
    from ivfuse.losses import ContentWeights, gaussian_blur, intensity_target
    from ivfuse.models.fusion import sobel_magnitude

    torch.manual_seed(0)
    # A coarse ramp (the base) under fine stripes two pixels wide (the detail), as IR and visible.
    ramp = torch.linspace(0.2, 0.8, 96).expand(96, 96)[None, None]
    stripes = 0.05 * ((torch.arange(96) // 2) % 2).float().expand(96, 96)[None, None]
    ir, vis_y = ramp + stripes, ramp * 0.9
    plain = intensity_target(ir, vis_y)
    assert not ContentWeights(base_gain=1.5).plain_target and ContentWeights(base_gain=1.0).plain_target
    target = intensity_target(ir, vis_y, ContentWeights(base_gain=1.5, base_sigma=8))
    base = gaussian_blur(plain, 8)
    torch.testing.assert_close(target, plain + 0.5 * (base - base.mean()))
    inner = (..., slice(24, 72), slice(24, 72))  # away from the blur's border
    assert target[inner].std() > 1.4 * plain[inner].std()  # global contrast up by nearly the gain
    edge_gain = sobel_magnitude(target)[inner].mean() / sobel_magnitude(plain)[inner].mean()
    assert 1.0 < edge_gain < 1.1  # the stripes' edges almost as they were
    # A flat image has no base contrast to stretch.
    flat = torch.full((1, 1, 40, 40), 0.3)
    torch.testing.assert_close(intensity_target(flat, flat, ContentWeights(base_gain=2.0)), flat)


def test_detail_gain_adds_the_fine_detail_of_the_source_with_the_stronger_edge():
    from ivfuse.losses import ContentWeights, intensity_target, stronger_detail

    # IR carries fine stripes on the left half, visible on the right half; both share a ramp.
    ramp = torch.linspace(0.2, 0.8, 64).expand(64, 64)[None, None].clone()
    stripes = 0.1 * ((torch.arange(64) // 2) % 2).float().expand(64, 64)[None, None]
    left = torch.zeros(1, 1, 64, 64, dtype=torch.bool)
    left[..., :32] = True
    ir, vis_y = ramp + stripes * left, ramp + stripes * ~left
    assert not ContentWeights(detail_gain=0.5).plain_target
    plain = intensity_target(ir, vis_y)
    target = intensity_target(ir, vis_y, ContentWeights(detail_gain=0.5, detail_sigma=2.0))
    torch.testing.assert_close(target, plain + 0.5 * stronger_detail(ir, vis_y, 2.0))
    # The detail is taken from the striped source on each side, so both halves gain contrast alike.
    detail = stronger_detail(ir, vis_y, 2.0)[..., 8:56, :]
    assert detail[..., 4:28].std() > 0.03 and detail[..., 36:60].std() > 0.03
    assert abs(detail[..., 4:28].std() - detail[..., 36:60].std()) < 0.005
