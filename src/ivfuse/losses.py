"""Training losses: content losses that keep what both sources carry.

All functions take ``(B, 1, H, W)`` float tensors in ``[0, 1]`` (fused Y, IR, visible Y) and
return a scalar tensor.
"""

from __future__ import annotations

from dataclasses import dataclass

import kornia
import torch
import torch.nn.functional as F

from .models.fusion import sobel_magnitude


def intensity_loss(fused: torch.Tensor, ir: torch.Tensor, vis_y: torch.Tensor) -> torch.Tensor:
    """L1 distance to the element-wise maximum of the sources: keeps hot targets and bright areas.

    Example:
        >>> x = torch.rand(2, 1, 16, 16)
        >>> float(intensity_loss(x, x, x))
        0.0
    """
    return F.l1_loss(fused, torch.maximum(ir, vis_y))


def texture_loss(fused: torch.Tensor, ir: torch.Tensor, vis_y: torch.Tensor) -> torch.Tensor:
    """L1 distance between Sobel magnitudes of the fused image and the stronger source edge."""
    return F.l1_loss(sobel_magnitude(fused), torch.maximum(sobel_magnitude(ir), sobel_magnitude(vis_y)))


def ssim_loss(fused: torch.Tensor, ir: torch.Tensor, vis_y: torch.Tensor) -> torch.Tensor:
    """Mean of ``1 - SSIM`` (11x11 Gaussian window) to each source: keeps local structure."""
    return kornia.losses.ssim_loss(fused, ir, 11) + kornia.losses.ssim_loss(fused, vis_y, 11)


@dataclass(frozen=True)
class ContentWeights:
    """Weights of the content losses (see :func:`content_loss`)."""

    intensity: float = 1.0
    texture: float = 10.0
    ssim: float = 0.0


def content_loss(
    fused: torch.Tensor, ir: torch.Tensor, vis_y: torch.Tensor, weights: ContentWeights = ContentWeights()
) -> tuple[torch.Tensor, dict[str, float]]:
    """Weighted sum of intensity, texture and SSIM losses.

    Returns:
        ``(loss, parts)``: the scalar to back-propagate and each term's value for logging.

    Example:
        >>> x = torch.rand(2, 1, 16, 16)
        >>> loss, parts = content_loss(x, x, x)
        >>> sorted(parts)
        ['intensity', 'ssim', 'texture']
    """
    terms = {"intensity": intensity_loss(fused, ir, vis_y), "texture": texture_loss(fused, ir, vis_y)}
    terms["ssim"] = ssim_loss(fused, ir, vis_y) if weights.ssim else fused.new_zeros(())
    loss = sum(getattr(weights, name) * value for name, value in terms.items())
    return loss, {name: value.detach().item() for name, value in terms.items()}
