import numpy as np
import torch

from ivfuse.color import infrared_to_grey, merge_luma, rgb_to_luma, split_luma
from ivfuse.io import read_image

from .conftest import EXAMPLES


def _tensor(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(image).permute(2, 0, 1)[None] if image.ndim == 3 else torch.from_numpy(image)[None, None]


def test_luma_is_bt601():
    rgb = torch.tensor([0.2, 0.5, 0.9]).view(1, 3, 1, 1)
    assert torch.allclose(rgb_to_luma(rgb), torch.tensor(0.299 * 0.2 + 0.587 * 0.5 + 0.114 * 0.9))


def test_split_merge_restores_real_colour_image_within_one_level():
    vis = _tensor(read_image(EXAMPLES / "vi" / "00055D.png"))
    restored = merge_luma(*split_luma(vis))
    assert (torch.round(restored * 255) - torch.round(vis * 255)).abs().max() <= 1


def test_grey_visible_gives_grey_output():
    grey = torch.rand(1, 1, 8, 8)
    y, cbcr = split_luma(grey)
    assert cbcr is None and merge_luma(y, cbcr).shape == (1, 1, 8, 8)


def test_infrared_with_three_equal_channels_is_taken_exactly():
    ir = _tensor(read_image(EXAMPLES / "ir" / "05.png"))  # TNO: grey stored as RGB
    assert ir.shape[1] == 3
    assert torch.equal(infrared_to_grey(ir), ir[:, :1])
    false_colour = torch.rand(1, 3, 4, 4)
    assert torch.allclose(infrared_to_grey(false_colour), rgb_to_luma(false_colour))


def test_visible_grey_stored_as_rgb_is_grey():
    vis = _tensor(read_image(EXAMPLES / "vi" / "05.png"))  # TNO visible: R=G=B
    y, cbcr = split_luma(vis)
    assert cbcr is None and torch.equal(y, vis[:, :1])
