"""The segmentation network: a light two-path (BiSeNet-like) network trained from scratch.

::

    RGB ─┬─ detail path:  conv/2 ─ conv/4 ─ conv/8 ────────────────┐
         │                                                        feature fusion (1/8) ─ head ─ x8 ─ logits
         └─ context path: stem/4 ─ /8 ─ /16 ─ /32 ─ global pool ──┘
                                         │
                                      aux head (training only) ─ logits

* The **detail path** is a few plain 3x3 convolutions down to 1/8 resolution: wide enough in
  space to keep the thin classes (curbs, bumps, cones) that a deep path would blur away.
* The **context path** goes to 1/32 with cheap depthwise-separable blocks and adds the global
  average, so each pixel sees the whole scene (road layout, day or night); an attention
  refinement re-weights its channels from their global statistics at 1/16 and 1/32.
* The two paths meet in a feature-fusion block (concatenate, 1x1 convolution, channel
  attention). An optional auxiliary head on the 1/16 context features gives the context path a
  direct training signal; it costs nothing at inference, where it is not run.

Options for more capacity where the context is (all off by default, which is the shipped
network of ``configs/segmentation.toml``): ``context_blocks`` residual blocks per context stage at
1/16 and 1/32 (alternately dilated, so the receptive field grows faster than the depth),
``pyramid_bins`` (PSPNet-like pooling of the 1/32 map over coarse grids, added to the global
average), and ``input_scale`` (the network segments a resized copy of its input, e.g. 0.5: a
640x480 frame at 320x240, about 4x less work; the logits come back at the input's size).

Normalisation is GroupNorm by default: training batches are small (8 crops, fewer per process
under DistributedDataParallel), the result does not depend on how a batch is split across
processes, and there are no running statistics, so train and eval mode compute the same function
(the fusion network back-propagates through this one in eval mode). GroupNorm's statistics are
those of the whole input, though: a network trained on crops sees other statistics on a whole
frame. ``norm = "batch"`` (BatchNorm, statistics frozen at inference) normalises a whole frame as
it did the training crops (docs/segmentation.md, "BatchNorm").

Input is any RGB image ``(B, 3, H, W)`` in ``[0, 1]``: the fused colour image, or for comparisons
the IR image (grey in three channels) or the visible image. Any ``H, W >= 32`` works: upsampling
goes to the exact size of the finer map (``H, W >= 32 / input_scale`` with ``input_scale``).
Only ``torch`` is imported here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn


NORMS = ("group", "batch")


@dataclass(frozen=True)
class SegmentationConfig:
    """Architecture of :class:`SegmentationNet`; stored in the weights file's metadata."""

    classes: int = 9
    detail_widths: tuple[int, int, int] = (16, 32, 64)
    context_widths: tuple[int, int, int, int] = (16, 32, 64, 96)
    head_width: int = 64
    aux_head: bool = True
    context_blocks: int = 1
    pyramid_bins: tuple[int, ...] = ()
    input_scale: float = 1.0
    norm: str = "group"

    def __post_init__(self):
        if self.norm not in NORMS:
            raise ValueError(f"[segmentation] norm must be one of {NORMS}, not {self.norm!r}")
        if self.context_blocks < 1:
            raise ValueError(f"[segmentation] context_blocks must be >= 1, not {self.context_blocks}")
        if not 0 < self.input_scale <= 1:
            raise ValueError(f"[segmentation] input_scale must be in (0, 1], not {self.input_scale}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "SegmentationConfig":
        values = dict(values)
        for key in ("detail_widths", "context_widths", "pyramid_bins"):
            if key in values:
                values[key] = tuple(values[key])
        return cls(**values)


def normalization(channels: int, norm: str = "group") -> nn.Module:
    """The normalisation layer of :class:`SegmentationNet` (``norm``: one of :data:`NORMS`).

    ``"group"``: GroupNorm in groups of 8 channels (per-group statistics stay meaningful for the
    narrowest layers), statistics of each image. ``"batch"``: BatchNorm, statistics of the
    training batches, frozen in eval mode, so the normalisation does not change with the segmented
    image's size or content.

    Example:
        >>> type(normalization(16, "batch")).__name__, type(normalization(16)).__name__
        ('BatchNorm2d', 'GroupNorm')
    """
    if norm == "group":
        return nn.GroupNorm(max(1, channels // 8), channels)
    if norm == "batch":
        return nn.BatchNorm2d(channels)
    raise ValueError(f"[segmentation] norm must be one of {NORMS}, not {norm!r}")


class ConvNormAct(nn.Sequential):
    """Convolution (no bias), normalisation (:func:`normalization`), ReLU. ``groups=in_channels``
    makes it depthwise.

    Shape: ``(B, C_in, H, W) -> (B, C_out, ceil(H / stride), ceil(W / stride))``.
    """

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1, groups: int = 1, dilation: int = 1,
        norm: str = "group",
    ):
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel_size, stride, dilation * (kernel_size // 2), dilation, groups, bias=False),
            normalization(out_channels, norm),
            nn.ReLU(inplace=True),
        )


class SeparableBlock(nn.Module):
    """Depthwise 3x3 (optionally dilated) then pointwise 1x1 convolution; residual when shape is kept.

    Shape: ``(B, C_in, H, W) -> (B, C_out, ceil(H / stride), ceil(W / stride))``.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, dilation: int = 1, norm: str = "group"):
        super().__init__()
        self.depthwise = ConvNormAct(in_channels, in_channels, 3, stride, groups=in_channels, dilation=dilation, norm=norm)
        self.pointwise = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, bias=False), normalization(out_channels, norm))
        self.residual = stride == 1 and in_channels == out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.pointwise(self.depthwise(x))
        return F.relu(x + y) if self.residual else F.relu(y)


class ChannelAttention(nn.Module):
    """Re-weight channels by a sigmoid of a 1x1 convolution of their global mean (squeeze-excite).

    Shape: ``(B, C, H, W) -> (B, C, H, W)``.
    """

    def __init__(self, channels: int):
        super().__init__()
        self.gate = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(self.gate(x.mean(dim=(2, 3), keepdim=True)))


class PyramidPooling(nn.Module):
    """Add the map's averages over coarse grids (PSPNet), each through a 1x1 convolution.

    A pixel learns what is in its region of the scene (the road ahead, the kerb side), not only
    the global average. Shape: ``(B, C, H, W) -> (B, C, H, W)``.

    Example:
        >>> PyramidPooling(16, (2, 4))(torch.rand(1, 16, 6, 8)).shape
        torch.Size([1, 16, 6, 8])
    """

    def __init__(self, channels: int, bins: tuple[int, ...], norm: str = "group"):
        super().__init__()
        self.bins = bins
        self.stages = nn.ModuleList(ConvNormAct(channels, channels, kernel_size=1, norm=norm) for _ in bins)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = (stage(grid_average(x, bins)) for bins, stage in zip(self.bins, self.stages))
        return x + sum(F.interpolate(p, size=x.shape[-2:], mode="bilinear", align_corners=False) for p in pooled)


def grid_average(x: torch.Tensor, bins: int) -> torch.Tensor:
    """Means over a ``bins`` x ``bins`` grid of regions, as ``F.adaptive_avg_pool2d(x, bins)``.

    Region ``i`` of a side of length ``n`` spans ``floor(i * n / bins)`` to ``ceil((i + 1) * n /
    bins)``, as in PyTorch. Written as two averaging matrices built from the input's size, because
    the ONNX exporter refuses ``adaptive_avg_pool2d`` on inputs whose size is only known at run
    time (``ivfuse export --seg`` has dynamic height and width).

    Args:
        x: ``(B, C, H, W)`` float.
        bins: regions per side, ``>= 1`` (more than a side's length: regions share pixels, as in PyTorch).

    Returns:
        ``(B, C, bins, bins)``, same dtype.

    Example:
        >>> x = torch.rand(1, 2, 5, 7)
        >>> torch.allclose(grid_average(x, 2), F.adaptive_avg_pool2d(x, 2))
        True
    """

    def averaging(length: int) -> torch.Tensor:
        # (bins, length): row i holds 1 / size over region i, 0 elsewhere.
        index = torch.arange(bins, device=x.device)
        start = index * length // bins
        end = ((index + 1) * length + bins - 1) // bins
        position = torch.arange(length, device=x.device)
        inside = ((position >= start[:, None]) & (position < end[:, None])).to(x.dtype)
        return inside / inside.sum(dim=1, keepdim=True)

    return averaging(x.shape[-2]) @ x @ averaging(x.shape[-1]).T


def _stage(in_channels: int, out_channels: int, blocks: int, norm: str) -> nn.Sequential:
    """Downsample by 2, then ``blocks`` residual blocks, every second one dilated by 2."""
    return nn.Sequential(
        SeparableBlock(in_channels, out_channels, stride=2, norm=norm),
        *(SeparableBlock(out_channels, out_channels, dilation=1 + k % 2, norm=norm) for k in range(blocks)),
    )


class ContextPath(nn.Module):
    """Fast downsampling to 1/32 with the global context added back; returns 1/8 and 1/16 maps.

    ``blocks``: residual blocks at 1/16 and at 1/32 (1 at 1/8). ``pyramid_bins``: grids of
    :class:`PyramidPooling` on the 1/32 map, on top of the global average (none: off).
    ``norm``: see :func:`normalization`.

    Shape: ``(B, 3, H, W)`` -> ``(B, widths[1], H/8, W/8)`` (context for the fusion) and
    ``(B, widths[2], H/16, W/16)`` (for the auxiliary head).
    """

    def __init__(
        self, widths: tuple[int, int, int, int], blocks: int = 1, pyramid_bins: tuple[int, ...] = (), norm: str = "group"
    ):
        super().__init__()
        w = widths
        self.stem = nn.Sequential(ConvNormAct(3, w[0], stride=2, norm=norm), ConvNormAct(w[0], w[0], stride=2, norm=norm))
        self.down8 = _stage(w[0], w[1], 1, norm)
        self.down16 = _stage(w[1], w[2], blocks, norm)
        self.down32 = _stage(w[2], w[3], blocks, norm)
        self.global_context = ConvNormAct(w[3], w[3], kernel_size=1, norm=norm)
        self.pyramid = PyramidPooling(w[3], pyramid_bins, norm) if pyramid_bins else nn.Identity()
        self.refine32 = nn.Sequential(ChannelAttention(w[3]), ConvNormAct(w[3], w[2], kernel_size=1, norm=norm))
        self.refine16 = ChannelAttention(w[2])
        self.merge16 = ConvNormAct(w[2], w[1], norm=norm)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x8 = self.down8(self.stem(image))
        x16 = self.down16(x8)
        x32 = self.down32(x16)
        x32 = self.pyramid(x32 + self.global_context(x32.mean(dim=(2, 3), keepdim=True)))
        up16 = F.interpolate(self.refine32(x32), size=x16.shape[-2:], mode="bilinear", align_corners=False)
        x16 = self.refine16(x16) + up16
        context8 = F.interpolate(self.merge16(x16), size=x8.shape[-2:], mode="bilinear", align_corners=False)
        return context8, x16


class SegmentationHead(nn.Sequential):
    """3x3 convolution, then 1x1 convolution to class logits (at the input's resolution / stride).

    Shape: ``(B, C, h, w) -> (B, classes, h, w)``.
    """

    def __init__(self, in_channels: int, width: int, classes: int, norm: str = "group"):
        super().__init__(ConvNormAct(in_channels, width, norm=norm), nn.Conv2d(width, classes, 1))


class SegmentationNet(nn.Module):
    """RGB image -> per-pixel class logits (9 MSRS classes by default).

    Args:
        config: architecture; ``SegmentationConfig()`` is the one ``configs/segmentation.toml`` trains.

    Shape:
        ``image``: ``(B, 3, H, W)`` float in ``[0, 1]``, ``H, W >= 32`` -> logits
        ``(B, classes, H, W)`` float (unnormalised; ``argmax(1)`` gives class ids). With
        ``aux=True`` (and ``config.aux_head``) also the auxiliary logits ``(B, classes, H, W)``.

    Example:
        >>> net = SegmentationNet()
        >>> net(torch.rand(1, 3, 96, 128)).shape
        torch.Size([1, 9, 96, 128])
        >>> logits, aux_logits = net(torch.rand(1, 3, 96, 128), aux=True)
    """

    def __init__(self, config: SegmentationConfig = SegmentationConfig()):
        super().__init__()
        self.config = config
        d, c = config.detail_widths, config.context_widths
        norm = config.norm
        self.detail = nn.Sequential(
            ConvNormAct(3, d[0], stride=2, norm=norm), ConvNormAct(d[0], d[0], norm=norm),
            ConvNormAct(d[0], d[1], stride=2, norm=norm), ConvNormAct(d[1], d[1], norm=norm),
            ConvNormAct(d[1], d[2], stride=2, norm=norm), ConvNormAct(d[2], d[2], norm=norm),
        )
        self.context = ContextPath(c, config.context_blocks, config.pyramid_bins, norm)
        self.fuse = nn.Sequential(
            ConvNormAct(d[2] + c[1], config.head_width, kernel_size=1, norm=norm), ChannelAttention(config.head_width)
        )
        self.head = SegmentationHead(config.head_width, config.head_width, config.classes, norm)
        self.aux_head = SegmentationHead(c[2], config.head_width // 2, config.classes, norm) if config.aux_head else None

    def forward(self, image: torch.Tensor, aux: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        size = image.shape[-2:]
        if self.config.input_scale != 1:
            image = F.interpolate(image, scale_factor=self.config.input_scale, mode="bilinear", align_corners=False, antialias=True)
        detail8 = self.detail(image)
        context8, context16 = self.context(image)
        # The two paths round odd sizes the same way (stride-2 convolutions with padding 1).
        logits = self.head(self.fuse(torch.cat([detail8, context8], dim=1)))
        logits = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
        if not aux:
            return logits
        if self.aux_head is None:
            raise ValueError("aux=True needs a network built with SegmentationConfig(aux_head=True)")
        aux_logits = F.interpolate(self.aux_head(context16), size=size, mode="bilinear", align_corners=False)
        return logits, aux_logits


def class_probabilities(
    network, image: torch.Tensor, *, flip: bool = False, scales: Sequence[float] = (1.0,), window: int | None = None
) -> torch.Tensor:
    """Softmax class probabilities of a segmentation network, optionally averaged over test-time
    augmentations: the mirrored image (``flip``) and resized copies (``scales``), each segmented
    whole or in overlapping windows (``window``).

    Road and surveillance scenes look as plausible mirrored left to right, and the network was
    trained on mirrored crops at scales 0.6-1.2, so its predictions of a mirrored or resized
    copy err differently; their mean costs one forward pass per copy (docs/segmentation.md,
    "Test-time augmentation", has what each changes). The network was also trained on crops of
    one size (192 pixels in the shipped configs), and its normalisation and global context see
    the whole input: segmenting in windows of the crop size shows it what it was trained on
    (docs/segmentation.md, "Windowed inference").

    Args:
        network: a :class:`SegmentationNet` in eval mode, or anything called like it (the
            ONNX Runtime stand-in, :class:`ivfuse.onnx_backend.OnnxNetwork`).
        image: ``(B, 3, H, W)`` float in ``[0, 1]``.
        flip: also segment every copy mirrored left to right.
        scales: resize factors of the copies (bilinear; their probabilities are resized back to
            ``H x W``); ``(1.0,)`` is the image alone. Each copy must stay at least 32 pixels a side.
        window: segment each copy in ``window x window`` windows (at least 32) overlapping by
            half, averaging the logits where they overlap; ``None``: whole copies.

    Returns:
        ``(B, classes, H, W)`` float, summing to 1 over classes at every pixel.

    Example:
        >>> net = SegmentationNet().eval()
        >>> class_probabilities(net, torch.rand(1, 3, 64, 96), flip=True, scales=(0.75, 1.0)).shape
        torch.Size([1, 9, 64, 96])
        >>> class_probabilities(net, torch.rand(1, 3, 64, 96), window=48).shape
        torch.Size([1, 9, 64, 96])
    """
    size = image.shape[-2:]
    total = 0
    for scale in scales:
        copy = image if scale == 1 else F.interpolate(image, scale_factor=scale, mode="bilinear", align_corners=False)
        for mirrored in (False, True) if flip else (False,):
            logits = windowed_logits(network, copy.flip(-1), window).flip(-1) if mirrored else windowed_logits(network, copy, window)
            if scale != 1:
                logits = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
            total = total + logits.softmax(1)
    return total / (len(scales) * (2 if flip else 1))


#: Test-time augmentation of ``ivfuse segment`` and :class:`ivfuse.segmenter.Segmenter` unless
#: told otherwise (:func:`class_probabilities` itself defaults to none): the image, its mirror
#: image and a copy at 0.75 times the size of each, averaged. Chosen for the shipped network on the
#: held-out MSRS train drives (docs/segmentation.md, "Test-time augmentation with BatchNorm"): the
#: best in two seeds of the combinations inside the 0.15 s budget per 640x480 frame on 2 threads.
DEFAULT_FLIP = True
DEFAULT_SCALES = (0.75, 1.0)
#: Gains of ``ivfuse segment`` and :class:`ivfuse.segmenter.Segmenter` unless told otherwise: a
#: class's probability is multiplied by its gain before the argmax
#: (:func:`ivfuse.segmenter.gained_labels`); classes not named keep 1. Empty: the plain argmax.
DEFAULT_CLASS_GAINS: dict[str, float] = {}

#: Smallest window of :func:`windowed_logits`: the network's stride-32 context path needs it.
MIN_WINDOW = 32


def windowed_logits(network, image: torch.Tensor, window: int | None) -> torch.Tensor:
    """Logits ``(B, classes, H, W)`` of ``image`` ``(B, 3, H, W)``, segmented whole (``window``
    ``None``) or in ``window x window`` windows overlapping by half (the last flush with the
    border, all in one batch), averaged where they overlap.

    Example:
        >>> net = SegmentationNet().eval()
        >>> windowed_logits(net, torch.rand(2, 3, 64, 100), 48).shape
        torch.Size([2, 9, 64, 100])
    """
    height, width = image.shape[-2:]
    if window is None or (height <= window and width <= window):
        return network(image)
    if window < MIN_WINDOW:
        raise ValueError(f"window must be at least {MIN_WINDOW} pixels, not {window}")
    rows, cols = min(window, height), min(window, width)
    # Half-window steps: the overlap is the other half (the larger one for odd sizes).
    tops, lefts = window_starts(height, rows, rows - rows // 2), window_starts(width, cols, cols - cols // 2)
    corners = [(top, left) for top in tops for left in lefts]
    logits = network(torch.cat([image[..., top : top + rows, left : left + cols] for top, left in corners]))
    total = logits.new_zeros(image.shape[0], logits.shape[1], height, width)
    count = logits.new_zeros(1, 1, height, width)
    for index, (top, left) in enumerate(corners):
        total[..., top : top + rows, left : left + cols] += logits[index * len(image) : (index + 1) * len(image)]
        count[..., top : top + rows, left : left + cols] += 1
    return total / count


def window_starts(length: int, window: int, overlap: int) -> list[int]:
    """Start offsets of ``window``-long windows along an axis of ``length``, consecutive ones
    overlapping by ``overlap`` and the last flush with the end (a single 0 when one fits): the
    grid of windowed segmentation here and of tiled fusion (:class:`ivfuse.Fuser`).

    Example:
        >>> window_starts(480, 192, 96)
        [0, 96, 192, 288]
    """
    if length <= window:
        return [0]
    return list(range(0, length - window, window - overlap)) + [length - window]
