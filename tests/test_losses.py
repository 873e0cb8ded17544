import math

import torch
import torch.nn.functional as F

from ivfuse.losses import SemanticLossConfig, ohem_cross_entropy, semantic_loss


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
