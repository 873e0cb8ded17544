import dataclasses

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
    # With GroupNorm (the default) there are no batch statistics: a frozen network is the trained one.
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


CONTEXT = SegmentationConfig(detail_widths=(8, 8, 16), context_widths=(8, 8, 16, 16), head_width=16,
                             context_blocks=3, pyramid_bins=(2, 4), input_scale=0.5)


@pytest.mark.parametrize("height, width", [(97, 131), (64, 64)])
def test_context_options_keep_the_output_size(height, width):
    logits, aux_logits = SegmentationNet(CONTEXT)(torch.rand(2, 3, height, width), aux=True)
    assert logits.shape == aux_logits.shape == (2, 9, height, width)


def test_context_blocks_add_alternately_dilated_blocks_at_1_16_and_1_32():
    network = SegmentationNet(CONTEXT)
    for stage in (network.context.down16, network.context.down32):
        assert [block.depthwise[0].dilation for block in stage] == [(1, 1), (1, 1), (2, 2), (1, 1)]
    assert len(network.context.down8) == 2


def test_input_scale_segments_a_resized_copy():
    network = SegmentationNet(CONTEXT)
    seen = []
    network.detail.register_forward_hook(lambda module, inputs, output: seen.append(inputs[0].shape))
    network.context.register_forward_hook(lambda module, inputs, output: seen.append(inputs[0].shape))
    assert network(torch.rand(1, 3, 64, 96)).shape == (1, 9, 64, 96)
    assert seen == [(1, 3, 32, 48)] * 2


def test_options_round_trip_through_safetensors(tmp_path):
    network = SegmentationNet(CONTEXT)
    loaded = load_network(save_network(network, tmp_path / "seg.safetensors"), expected="SegmentationNet")
    assert loaded.config == CONTEXT
    image = torch.rand(1, 3, 64, 64)
    assert torch.equal(network.eval()(image), loaded(image))


def test_batch_norm_learns_statistics_in_training_and_freezes_them_for_inference(tmp_path):
    config = dataclasses.replace(SMALL, norm="batch")
    network = SegmentationNet(config)
    norms = [type(m) for m in network.modules() if isinstance(m, (torch.nn.GroupNorm, torch.nn.BatchNorm2d))]
    assert norms and set(norms) == {torch.nn.BatchNorm2d}
    images = torch.rand(4, 3, 64, 64)
    network.train()(images)
    network.eval()
    # Frozen statistics: an image's logits do not depend on what else is in the batch ...
    assert torch.allclose(network(images[:1]), network(images)[:1], atol=1e-5)
    # ... and the running statistics travel with the weights.
    loaded = load_network(save_network(network, tmp_path / "seg.safetensors"), expected="SegmentationNet")
    assert loaded.config == config
    assert torch.equal(loaded(images), network(images))
    assert not torch.equal(network.train()(images), loaded(images))


@pytest.mark.parametrize("options", [{"context_blocks": 0}, {"input_scale": 0.0}, {"input_scale": 1.5}, {"norm": "layer"}])
def test_bad_options_are_refused(options):
    with pytest.raises(ValueError, match=next(iter(options))):
        SegmentationConfig(**options)


def test_flip_averages_the_prediction_of_the_mirrored_image():
    from ivfuse.models import class_probabilities

    torch.manual_seed(0)
    net = SegmentationNet().eval()
    image = torch.rand(1, 3, 64, 96)
    with torch.no_grad():
        plain, flipped = class_probabilities(net, image), class_probabilities(net, image, flip=True)
        mirrored = class_probabilities(net, image.flip(-1))
        torch.testing.assert_close(plain, net(image).softmax(1))
        torch.testing.assert_close(flipped, (plain + mirrored.flip(-1)) / 2)
        torch.testing.assert_close(flipped.sum(1), torch.ones(1, 64, 96))
        # Flip averaging is mirror-symmetric: the mirrored image gets the mirrored prediction.
        torch.testing.assert_close(class_probabilities(net, image.flip(-1), flip=True), flipped.flip(-1))
        assert not torch.allclose(plain, flipped)


def test_scales_average_the_predictions_of_resized_copies():
    import torch.nn.functional as F

    from ivfuse.models import class_probabilities

    torch.manual_seed(0)
    net = SegmentationNet().eval()
    image = torch.rand(1, 3, 64, 96)
    with torch.no_grad():
        plain = class_probabilities(net, image)
        torch.testing.assert_close(class_probabilities(net, image, scales=(1.0,)), plain)
        half = F.interpolate(net(F.interpolate(image, scale_factor=0.5, mode="bilinear", align_corners=False)), size=(64, 96), mode="bilinear", align_corners=False)
        both = class_probabilities(net, image, scales=(0.5, 1.0))
        torch.testing.assert_close(both, (half.softmax(1) + plain) / 2)
        torch.testing.assert_close(both.sum(1), torch.ones(1, 64, 96))
        mirrored = class_probabilities(net, image.flip(-1), scales=(0.5, 1.0)).flip(-1)
        torch.testing.assert_close(class_probabilities(net, image, flip=True, scales=(0.5, 1.0)), (both + mirrored) / 2)


def test_windows_cover_the_image_and_average_where_they_overlap():
    from ivfuse.models import class_probabilities
    from ivfuse.models.segmentation import windowed_logits

    class PixelCount(torch.nn.Module):
        """Per-pixel logits (window-independent) plus a constant per window: shows the overlaps."""

        def forward(self, image):
            return torch.cat([image.mean(1, keepdim=True), torch.ones_like(image[:, :1]) * image.shape[-1]], dim=1)

    torch.manual_seed(0)
    image = torch.rand(2, 3, 70, 100)
    logits = windowed_logits(PixelCount(), image, 48)
    assert logits.shape == (2, 2, 70, 100)
    # A per-pixel network gives the same logits in windows as whole, image by image in a batch.
    torch.testing.assert_close(logits[:, :1], image.mean(1, keepdim=True))
    # Every pixel is covered by windows of 48 only (the constant channel is their width).
    torch.testing.assert_close(logits[:, 1:], torch.full_like(logits[:, 1:], 48.0))
    # Windows as large as the image are the whole image; a SegmentationNet keeps the size.
    torch.testing.assert_close(windowed_logits(PixelCount(), image, 100), PixelCount()(image))
    net = SegmentationNet().eval()
    with torch.no_grad():
        probabilities = class_probabilities(net, image[:1], window=48, flip=True)
        assert probabilities.shape == (1, 9, 70, 100)
        torch.testing.assert_close(probabilities.sum(1), torch.ones(1, 70, 100))
        assert not torch.allclose(probabilities, class_probabilities(net, image[:1], flip=True))
    with pytest.raises(ValueError, match="window must be at least 32"):
        windowed_logits(net, image, 16)


@pytest.mark.parametrize("height, width, bins", [(15, 20, 2), (15, 20, 4), (5, 7, 3), (4, 4, 4), (9, 1, 1), (2, 3, 4)])
def test_grid_average_matches_adaptive_average_pooling(height, width, bins):
    from ivfuse.models.segmentation import grid_average

    x = torch.rand(2, 3, height, width)
    torch.testing.assert_close(grid_average(x, bins), torch.nn.functional.adaptive_avg_pool2d(x, bins))
