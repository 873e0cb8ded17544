import pytest
import torch

from ivfuse.models import SegmentationConfig, SegmentationNet
from ivfuse.serialization import load_network, save_network

SMALL = SegmentationConfig(detail_widths=(8, 8, 16), context_widths=(8, 8, 16, 16), head_width=16)


@pytest.mark.parametrize("height, width", [(97, 131), (32, 32), (120, 160)])
def test_logits_have_the_input_size_and_one_channel_per_class(height, width):
    network = SegmentationNet(SMALL)
    logits, aux_logits = network(torch.rand(2, 3, height, width), aux=True)
    assert logits.shape == aux_logits.shape == (2, 9, height, width)


def test_aux_needs_an_aux_head():
    network = SegmentationNet(SegmentationConfig(aux_head=False))
    assert network.aux_head is None
    with pytest.raises(ValueError, match="aux_head=True"):
        network(torch.rand(1, 3, 32, 32), aux=True)


def test_train_and_eval_mode_compute_the_same_function():
    # The fusion network back-propagates through a frozen segmentation network: no batch statistics.
    network = SegmentationNet(SMALL)
    image = torch.rand(2, 3, 64, 64)
    assert torch.equal(network.train()(image), network.eval()(image))


def test_gradients_reach_the_input_through_a_frozen_network():
    network = SegmentationNet(SMALL).requires_grad_(False)
    image = torch.rand(1, 3, 64, 64, requires_grad=True)
    network(image).logsumexp(1).mean().backward()
    assert image.grad is not None and image.grad.abs().sum() > 0
    assert all(parameter.grad is None for parameter in network.parameters())


def test_weights_round_trip_through_safetensors(tmp_path):
    network = SegmentationNet(SMALL)
    loaded = load_network(save_network(network, tmp_path / "seg.safetensors"), expected="SegmentationNet")
    assert loaded.config == SMALL
    image = torch.rand(1, 3, 48, 64)
    assert torch.equal(network.eval()(image), loaded(image))
