"""The cross-domain interactive integration module (CDIIM).

IR and visible feature maps of the same scale act on each other in three steps, each of which
can be switched off for ablation:

(a) spatial interaction: every position of one stream attends to *all* positions of the other
    stream (global cross-attention). Keys and values are average-pooled by ``kv_stride`` so the
    cost is ``O(HW * HW / kv_stride^2)`` rather than ``O((HW)^2)``; on a 640x480 image at 1/4
    scale with stride 8 that is 19,200 queries against 300 keys.
(b) channel interaction: each stream's channels are re-weighted from the global statistics
    (mean and standard deviation per channel) of *both* streams, so e.g. a strong thermal
    response can boost the visible channels that describe the same object.
(c) local-to-global integration: the globally informed streams are merged per pixel by a learned
    soft selection (gate) and refined with local depthwise-convolution context (residual).
    Switched off, the streams are merged by a plain 1x1 convolution of their concatenation.

(a) adds its result to its input and (b) scales its input by weights that start near 1, so
switching either off leaves the streams as they were (an identity).
Only ``torch`` is imported, so the module can be reused on its own.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class SpatialCrossAttention(nn.Module):
    """Queries from ``x`` attend to pooled keys/values from ``context`` (multi-head).

    Args:
        channels: feature channels ``C`` of both inputs.
        heads: attention heads; ``C`` must be divisible by it.
        kv_stride: average-pooling stride applied to ``context`` before keys/values.

    Shape:
        ``x``, ``context``: ``(B, C, H, W)`` -> ``(B, C, H, W)`` (the attended context only,
        without the residual).
    """

    def __init__(self, channels: int, heads: int = 2, kv_stride: int = 8):
        super().__init__()
        if channels % heads:
            raise ValueError(f"channels ({channels}) must be divisible by heads ({heads})")
        self.heads = heads
        self.kv_stride = kv_stride
        self.query = nn.Conv2d(channels, channels, 1)
        self.key_value = nn.Conv2d(channels, 2 * channels, 1)
        self.project = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        batch, channels, height, width = x.shape
        if self.kv_stride > 1:
            context = F.avg_pool2d(context, self.kv_stride, self.kv_stride, ceil_mode=True)
        head_dim = channels // self.heads
        # contiguous() matters: CPU attention kernels fall back to a path ~7x slower on strided input.
        query = self.query(x).reshape(batch, self.heads, head_dim, height * width).transpose(2, 3).contiguous()
        key_value = self.key_value(context).reshape(batch, 2, self.heads, head_dim, -1).transpose(3, 4).contiguous()
        attended = F.scaled_dot_product_attention(query, *key_value.unbind(1))
        return self.project(attended.transpose(2, 3).reshape(batch, channels, height, width))


class ChannelInteraction(nn.Module):
    """Per-channel weights for both streams from both streams' global mean and std.

    Shape:
        ``ir``, ``vis``: ``(B, C, H, W)`` -> two ``(B, C, 1, 1)`` weights in ``(0, 2)``, so that
        an untrained module (weights near 1) starts close to the identity.
    """

    def __init__(self, channels: int, reduction: int = 4):
        super().__init__()
        hidden = max(4, 2 * channels // reduction)
        self.mlp = nn.Sequential(nn.Linear(4 * channels, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, 2 * channels))

    def forward(self, ir: torch.Tensor, vis: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        stats = [statistic for stream in (ir, vis) for statistic in _mean_std(stream)]
        weights = 2.0 * torch.sigmoid(self.mlp(torch.cat(stats, dim=1)))
        weight_ir, weight_vis = weights[..., None, None].chunk(2, dim=1)
        return weight_ir, weight_vis


def _mean_std(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    flat = x.flatten(2)
    return flat.mean(dim=2), flat.std(dim=2, correction=0)


class LocalGlobalIntegration(nn.Module):
    """Merge two globally informed streams per pixel, then add local depthwise context.

    Shape:
        ``ir``, ``vis``: ``(B, C, H, W)`` -> ``(B, C, H, W)``.
    """

    def __init__(self, channels: int):
        super().__init__()
        self.gate = nn.Conv2d(2 * channels, channels, 1)
        self.local = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1, groups=channels),
            nn.LeakyReLU(0.1, inplace=True),
            nn.Conv2d(channels, channels, 1),
        )

    def forward(self, ir: torch.Tensor, vis: torch.Tensor) -> torch.Tensor:
        gate = torch.sigmoid(self.gate(torch.cat([ir, vis], dim=1)))
        merged = vis + gate * (ir - vis)
        return merged + self.local(merged)


class CrossDomainInteraction(nn.Module):
    """CDIIM: spatial and channel interaction between IR and visible features, then integration.

    Args:
        channels: feature channels ``C`` of each stream.
        kv_stride: key/value pooling stride of the spatial cross-attention.
        heads: attention heads.
        spatial, channel, integration: switch parts (a), (b), (c) on or off (module doc).

    Shape:
        ``ir``, ``vis``: ``(B, C, H, W)`` -> ``(ir, vis, fused)``, each ``(B, C, H, W)``: the two
        interacted streams (fed to the next, coarser scale) and their fusion (fed to the decoder).

    Example:
        >>> cdiim = CrossDomainInteraction(32, kv_stride=4)
        >>> ir, vis, fused = cdiim(torch.rand(1, 32, 30, 40), torch.rand(1, 32, 30, 40))
        >>> fused.shape
        torch.Size([1, 32, 30, 40])
    """

    def __init__(
        self,
        channels: int,
        kv_stride: int = 8,
        heads: int = 2,
        *,
        spatial: bool = True,
        channel: bool = True,
        integration: bool = True,
    ):
        super().__init__()
        self.ir_from_vis = SpatialCrossAttention(channels, heads, kv_stride) if spatial else None
        self.vis_from_ir = SpatialCrossAttention(channels, heads, kv_stride) if spatial else None
        self.channel = ChannelInteraction(channels) if channel else None
        self.integrate = LocalGlobalIntegration(channels) if integration else None
        self.merge = None if integration else nn.Conv2d(2 * channels, channels, 1)

    def forward(self, ir: torch.Tensor, vis: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if self.ir_from_vis is not None:
            ir, vis = ir + self.ir_from_vis(ir, vis), vis + self.vis_from_ir(vis, ir)
        if self.channel is not None:
            weight_ir, weight_vis = self.channel(ir, vis)
            ir, vis = ir * weight_ir, vis * weight_vis
        if self.integrate is not None:
            fused = self.integrate(ir, vis)
        else:
            fused = self.merge(torch.cat([ir, vis], dim=1))
        return ir, vis, fused
