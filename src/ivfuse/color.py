"""Colour handling: fuse on luminance, give the colour back from the visible image.

BT.601 YCbCr on ``[0, 1]`` data, as the fusion field does: ``Y = 0.299 R + 0.587 G + 0.114 B``,
Cb and Cr offset by 0.5. kornia does the arithmetic.
"""

from __future__ import annotations

import kornia
import numpy as np
import torch


def to_tensor(image: np.ndarray) -> torch.Tensor:
    """An image array as a batch of one: ``(H, W)`` or ``(H, W, C)`` -> ``(1, C, H, W)`` float32.

    Example:
        >>> to_tensor(np.zeros((4, 5, 3))).shape
        torch.Size([1, 3, 4, 5])
    """
    tensor = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))
    return tensor[None, None] if tensor.ndim == 2 else tensor.permute(2, 0, 1)[None]


def rgb_to_luma(image: torch.Tensor) -> torch.Tensor:
    """BT.601 luma of an RGB image, or the image itself if it has one channel.

    Args:
        image: ``(B, 3, H, W)`` or ``(B, 1, H, W)`` float in ``[0, 1]``.

    Returns:
        ``(B, 1, H, W)`` float in ``[0, 1]``.

    Example:
        >>> rgb_to_luma(torch.ones(1, 3, 2, 2)).shape
        torch.Size([1, 1, 2, 2])
    """
    if image.shape[1] == 1:
        return image
    return kornia.color.rgb_to_ycbcr(image)[:, :1]


def has_equal_channels(image: torch.Tensor) -> bool:
    """True for ``(B, 3, H, W)`` images whose three channels are identical (grey stored as RGB)."""
    return image.shape[1] == 3 and torch.equal(image[:, :1].expand_as(image), image)


def infrared_to_grey(image: torch.Tensor) -> torch.Tensor:
    """One grey channel from an IR image stored with one or three channels.

    Thermal images are often saved as RGB with three equal channels: those are taken exactly
    (no rounding through luma); a false-colour IR image falls back to its BT.601 luma.

    Args:
        image: ``(B, 1, H, W)`` or ``(B, 3, H, W)`` float in ``[0, 1]``.

    Returns:
        ``(B, 1, H, W)`` float in ``[0, 1]``.
    """
    return image[:, :1] if has_equal_channels(image) else rgb_to_luma(image)


def split_luma(image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Split a visible image into luminance and chrominance.

    Args:
        image: ``(B, 3, H, W)`` RGB or ``(B, 1, H, W)`` grey, float in ``[0, 1]``.

    Returns:
        ``(y, cbcr)``: ``(B, 1, H, W)`` luminance and ``(B, 2, H, W)`` chrominance (offset 0.5),
        or ``cbcr=None`` for a grey image, including grey stored as three equal channels (as in
        TNO), so grey in gives grey out.

    Example:
        >>> y, cbcr = split_luma(torch.rand(1, 3, 8, 8))
        >>> y.shape, cbcr.shape
        (torch.Size([1, 1, 8, 8]), torch.Size([1, 2, 8, 8]))
    """
    if image.shape[1] == 1 or has_equal_channels(image):
        return image[:, :1], None
    ycbcr = kornia.color.rgb_to_ycbcr(image)
    return ycbcr[:, :1], ycbcr[:, 1:]


def merge_luma(y: torch.Tensor, cbcr: torch.Tensor | None) -> torch.Tensor:
    """Inverse of :func:`split_luma`: put chrominance back around a (fused) luminance.

    Args:
        y: ``(B, 1, H, W)`` float in ``[0, 1]``.
        cbcr: ``(B, 2, H, W)`` from :func:`split_luma`, or ``None`` for grey output.

    Returns:
        ``(B, 3, H, W)`` RGB (or ``(B, 1, H, W)`` grey) clipped to ``[0, 1]``; clipping, never
        stretching, so intensities keep their meaning.
    """
    if cbcr is None:
        return y.clamp(0.0, 1.0)
    return kornia.color.ycbcr_to_rgb(torch.cat([y, cbcr], dim=1)).clamp(0.0, 1.0)


def merge_luma_rgb(y: torch.Tensor, cbcr: torch.Tensor | None) -> torch.Tensor:
    """:func:`merge_luma`, always as ``(B, 3, H, W)`` RGB (grey repeated): what RGB networks take."""
    merged = merge_luma(y, cbcr)
    return merged if merged.shape[1] == 3 else merged.expand(-1, 3, -1, -1)
