import numpy as np
import pytest
import torch

from ivfuse import Fuser
from ivfuse.baselines import BASELINES
from ivfuse.color import split_luma
from ivfuse.io import read_image

from .conftest import EXAMPLES


@pytest.fixture(scope="module")
def fuser() -> Fuser:
    return Fuser()


@pytest.fixture(scope="module")
def night_pair():
    return read_image(EXAMPLES / "ir" / "00004N.png"), read_image(EXAMPLES / "vi" / "00004N.png")


class ReturnsVisibleLuma(torch.nn.Module):
    """Stands in for the network to test the colour path around it: fused Y = visible Y."""

    size_multiple = 8

    def forward(self, ir, vis_y):
        return vis_y


@pytest.mark.parametrize("height, width", [(481, 637), (16, 16), (5, 7), (9, 300)])
def test_output_has_the_input_size(fuser, night_pair, height, width):
    grow = ((0, max(0, height - 480)), (0, max(0, width - 640)))
    ir = np.pad(night_pair[0], grow, mode="reflect")[:height, :width]
    vis = np.pad(night_pair[1], grow + ((0, 0),), mode="reflect")[:height, :width]
    fused = fuser.fuse(ir, vis)
    assert fused.shape == (height, width, 3) and fused.dtype == np.float32
    assert 0.0 <= fused.min() and fused.max() <= 1.0


def test_identity_network_gives_back_the_visible_image(fuser, night_pair, monkeypatch):
    monkeypatch.setattr(fuser, "network", ReturnsVisibleLuma())
    ir, vis = night_pair
    restored = fuser.fuse(ir[:123, :201], vis[:123, :201])
    assert np.abs(np.rint(restored * 255) - np.rint(vis[:123, :201] * 255)).max() <= 1


def test_grey_visible_and_grey_flag_give_grey_output(fuser, night_pair):
    ir, vis = night_pair
    assert fuser.fuse(ir, vis[..., 1]).shape == (480, 640)
    assert fuser.fuse(ir, vis, grey=True).shape == (480, 640)


def test_ir_stored_as_three_equal_channels_fuses_like_one_channel(fuser, night_pair):
    ir, vis = night_pair
    np.testing.assert_array_equal(fuser.fuse(np.dstack([ir] * 3), vis), fuser.fuse(ir, vis))


def test_same_input_gives_the_same_output(fuser, night_pair):
    np.testing.assert_array_equal(fuser.fuse(*night_pair), fuser.fuse(*night_pair))


def test_pairs_of_different_sizes_are_refused(fuser, night_pair):
    ir, vis = night_pair
    with pytest.raises(ValueError, match="IR is 640x480 but visible is 639x480"):
        fuser.fuse(ir, vis[:, :639])


def test_tiled_fusion_matches_untiled_away_from_seams(night_pair):
    ir, vis = night_pair
    whole = Fuser().fuse(ir, vis, grey=True)
    tiled = Fuser(tile_size=256, tile_overlap=64).fuse(ir, vis, grey=True)
    # Tiles start at 0, 192, 384 (rows: 0, 192, 224); their overlaps are blended. Away from the
    # overlap bands every pixel comes from one tile. The CDIIM's attention is global, so a tile
    # sees less context than the whole image: close, not identical. The shipped network stretches
    # the base layer about the image's mean, so each tile takes its coarse layer from the whole
    # pair fused at a tile's size. Measured on this pair: mean 0.67 levels, 99.9th percentile 6.9,
    # max 8.4 (each tile's own coarse layer: mean 1.71, 7.7, 8.0).
    away = np.ones_like(whole, dtype=bool)
    for start in (192, 224):
        away[start - 8 : start + 64 + 8, :] = False
    for start in (192, 384):
        away[:, start - 8 : start + 64 + 8] = False
    difference = np.abs(whole - tiled)[away] * 255
    assert difference.mean() < 1.0 and np.percentile(difference, 99.9) < 10.0 and difference.max() < 16.0


@pytest.mark.parametrize("method", sorted(BASELINES))
def test_baselines_keep_size_and_visible_colour(night_pair, method):
    ir, vis = (image[:101, :203] for image in night_pair)
    fused = Fuser(method=method).fuse(ir, vis)
    assert fused.shape == (101, 203, 3)
    to_chroma = lambda image: split_luma(torch.from_numpy(image).permute(2, 0, 1)[None])[1]
    fused_chroma, vis_chroma = to_chroma(fused), to_chroma(vis)
    # Chroma is the visible one, up to rounding and clipping where the fused luminance saturates.
    assert (fused_chroma - vis_chroma).abs().median() * 255 < 0.5


def test_integer_arrays_are_refused(fuser, night_pair):
    ir, vis = night_pair
    with pytest.raises(ValueError, match="ir must be a float array"):
        fuser.fuse(np.rint(ir * 255).astype(np.uint8), vis)


def test_unknown_method_and_bad_tiles_are_refused():
    with pytest.raises(ValueError, match="unknown method 'nope'"):
        Fuser(method="nope")
    with pytest.raises(ValueError, match="tile_size"):
        Fuser(tile_size=100)
    with pytest.raises(ValueError, match="weights are for the cdiim network; the gff baseline takes none"):
        Fuser("fusion.safetensors", method="gff")


def test_one_torch_thread_restores_the_count_when_users_overlap():
    from ivfuse.fuser import _OneTorchThread

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        one_thread = _OneTorchThread()
        first, second = one_thread(), one_thread()
        first.__enter__()
        second.__enter__()
        assert torch.get_num_threads() == 1
        # The first user leaves while the second still runs: PyTorch stays on one thread, and the
        # count both found is back once the last one leaves (not the 1 the second one saw).
        first.__exit__(None, None, None)
        assert torch.get_num_threads() == 1
        second.__exit__(None, None, None)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_a_network_in_memory_fuses_as_its_weights_file_does(fuser, night_pair):
    network = fuser.network
    in_memory = Fuser(network)
    assert in_memory.network is network and in_memory.memory_format == torch.contiguous_format
    assert np.abs(in_memory.fuse(*night_pair) - fuser.fuse(*night_pair)).max() < 1e-4
    with pytest.raises(ValueError, match="network in memory runs as the cdiim method with the torch backend"):
        Fuser(network, backend="onnxruntime")
