"""The fusion network: two modality encoders, CDIIM at the coarse scales, a U-shaped decoder.

::

    IR  ─ enc L0 (1)   ─ L1 (1/2) ─ L2 (1/4) ─┐            ┌─ L3 (1/8) ─┐
                                              CDIIM(L2) ──┤            CDIIM(L3)
    VIS ─ enc L0 (1)   ─ L1 (1/2) ─ L2 (1/4) ─┘            └─ L3 (1/8) ─┘
                 │           │                │                          │
    fused Y  ◄─ dec L0 ◄── dec L1 ◄──────── dec L2 ◄───────────────── fused L3

* Full and half resolution are cheap and local, with an explicit *gradient path* so fine
  texture and edges reach the decoder intact: the full-resolution stem sees each image together
  with its Sobel magnitude, and the half-resolution block adds the Sobel magnitude of its
  features through a 1x1 convolution. Their features skip straight to the decoder.
* The quarter and eighth scales are where IR and visible interact globally (CDIIM, see
  :mod:`ivfuse.models.interaction`); attention is affordable there.
* The decoder upsamples bilinearly and merges the skips. Its head (``FusionConfig.head``) either
  predicts the fused Y directly through a sigmoid (``"sigmoid"``), or (``"blend"``) a per-pixel
  weight ``w`` and a residual ``r``: ``clamp(w * ir + (1 - w) * vis_y + tanh(r), 0, 1)``, so
  that keeping a source's pixels and edges as they are costs the network nothing.
* Optionally (``FusionConfig.salience``) a small *salience gain* adds a per-pixel share of the
  IR image's local contrast (:func:`infrared_local_contrast`) to that output. Where the IR image
  has no warm spot the output is the head's, so a loss that trains only this branch can
  make objects stand out without reworking the background (docs/training.md, "Salience gain").

Input height and width must be multiples of :attr:`FusionNet.size_multiple`; :class:`ivfuse.Fuser`
pads and crops around the network. Only ``torch`` is imported here.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .interaction import CrossDomainInteraction


@dataclass(frozen=True)
class FusionConfig:
    """Architecture of :class:`FusionNet`; stored in the weights file's metadata.

    The shipped configs and weights use ``head="blend"`` (module doc). The default stays
    ``"sigmoid"`` because weights saved before ``head`` existed record no value for it, and
    they were trained with the sigmoid head.
    """

    widths: tuple[int, int, int, int] = (8, 16, 32, 48)
    kv_strides: tuple[int, int] = (8, 4)
    heads: int = 2
    spatial: bool = True
    channel: bool = True
    integration: bool = True
    head: str = "sigmoid"
    salience: bool = False

    def __post_init__(self):
        if self.head not in ("sigmoid", "blend"):
            raise ValueError(f"FusionConfig.head must be 'sigmoid' or 'blend', not {self.head!r}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "FusionConfig":
        values = dict(values)
        for key in ("widths", "kv_strides"):
            if key in values:
                values[key] = tuple(values[key])
        return cls(**values)


def _conv(in_channels: int, out_channels: int, stride: int = 1, kernel_size: int = 3) -> nn.Sequential:
    convolution = nn.Conv2d(in_channels, out_channels, kernel_size, stride, kernel_size // 2)
    return nn.Sequential(convolution, nn.LeakyReLU(0.1, inplace=True))


def sobel_magnitude(x: torch.Tensor) -> torch.Tensor:
    """``|Sobel_x| + |Sobel_y|`` per channel, replicate-padded, kernels scaled by 1/8.

    Written with separable slicing rather than a grouped convolution: on a CPU that is several
    times faster for few channels. Shape: ``(B, C, H, W) -> (B, C, H, W)``.
    """
    padded = F.pad(x, (1, 1, 1, 1), mode="replicate")
    across = padded[..., 2:] - padded[..., :-2]
    down = padded[..., 2:, :] - padded[..., :-2, :]
    gradient_x = across[..., :-2, :] + 2 * across[..., 1:-1, :] + across[..., 2:, :]
    gradient_y = down[..., :-2] + 2 * down[..., 1:-1] + down[..., 2:]
    return (gradient_x.abs() + gradient_y.abs()) / 8


class EdgeStem(nn.Module):
    """Full-resolution stem that sees the image and its Sobel magnitude (the explicit edge path).

    Shape: ``(B, 1, H, W) -> (B, C, H, W)``.
    """

    def __init__(self, channels: int):
        super().__init__()
        self.conv = _conv(2, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(torch.cat([x, sobel_magnitude(x)], dim=1))


class GradientResidualBlock(nn.Module):
    """``x -> act(conv3x3(x)) + conv1x1(sobel_magnitude(x))``: a convolution plus an edge path.

    Shape: ``(B, C, H, W) -> (B, C, H, W)``.
    """

    def __init__(self, channels: int):
        super().__init__()
        self.conv = _conv(channels, channels)
        self.edge = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x) + self.edge(sobel_magnitude(x))


class ModalityEncoder(nn.Module):
    """Encoder of one modality: full, 1/2, 1/4 resolution in ``forward``, 1/8 in ``coarsest``.

    The coarsest level is separate because :class:`FusionNet` feeds it the 1/4 features *after*
    they interacted with the other modality.

    Shape: ``(B, 1, H, W)`` -> list of 3 maps ``(B, widths[i], H / 2^i, W / 2^i)``;
    ``coarsest``: ``(B, widths[2], H/4, W/4) -> (B, widths[3], H/8, W/8)``.
    """

    def __init__(self, widths: tuple[int, int, int, int]):
        super().__init__()
        self.levels = nn.ModuleList(
            [
                EdgeStem(widths[0]),
                nn.Sequential(_conv(widths[0], widths[1], stride=2), GradientResidualBlock(widths[1])),
                nn.Sequential(_conv(widths[1], widths[2], stride=2), _conv(widths[2], widths[2])),
            ]
        )
        self.coarsest = nn.Sequential(_conv(widths[2], widths[3], stride=2), _conv(widths[3], widths[3]))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = []
        for level in self.levels:
            x = level(x)
            features.append(x)
        return features


class DecoderStage(nn.Module):
    """Upsample the coarser map x2, concatenate the skips, convolve.

    ``kernel_size=1`` at full resolution, where a 3x3 convolution over all skips would cost more
    than the rest of the network; the head's 3x3 convolution then gives the spatial mixing.
    The skips are passed separately (not pre-concatenated) so that an exported graph can
    convolve each on its own and sum, which is the same convolution without the concatenation
    (:func:`ivfuse.onnx_backend.export_onnx`).

    Args:
        coarse_channels: channels of the coarser map.
        skip_channels: channels of each skip map, in the order they are passed.
        out_channels: output channels.
        kernel_size: of the convolution over ``[upsampled coarse, *skips]``.

    Shape: ``coarse (B, C_in, H/2, W/2)``, ``skips`` a tuple of ``(B, C_skip_i, H, W)`` ->
    ``(B, C_out, H, W)``.
    """

    def __init__(self, coarse_channels: int, skip_channels: tuple[int, ...], out_channels: int, kernel_size: int = 3):
        super().__init__()
        self.skip_channels = tuple(skip_channels)
        self.reduce = nn.Conv2d(coarse_channels, out_channels, 1)
        self.conv = _conv(out_channels + sum(self.skip_channels), out_channels, kernel_size=kernel_size)

    def forward(self, coarse: torch.Tensor, skips: tuple[torch.Tensor, ...]) -> torch.Tensor:
        upsampled = F.interpolate(self.reduce(coarse), size=skips[0].shape[-2:], mode="bilinear", align_corners=False)
        return self.conv(torch.cat([upsampled, *skips], dim=1))


def infrared_local_contrast(ir: torch.Tensor, window: int = 31) -> torch.Tensor:
    """How much brighter each IR pixel is than the mean of its ``window`` x ``window`` neighbourhood.

    ``relu(ir - box_mean(ir))`` with replicate padding: warm objects narrower than the window
    (people, cars, animals in road and surveillance frames at 640x480) stand out; flat or cooler
    regions give 0 (up to float rounding of the mean, ~1e-7).

    Args:
        ir: ``(B, 1, H, W)`` float in ``[0, 1]``.
        window: odd box size in pixels.

    Returns:
        ``(B, 1, H, W)`` float in ``[0, 1]``.

    Example:
        >>> ir = torch.zeros(1, 1, 5, 5); ir[..., 2, 2] = 1.0
        >>> infrared_local_contrast(ir, window=3)[0, 0, 2]
        tensor([0.0000, 0.0000, 0.8889, 0.0000, 0.0000])
    """
    pad = window // 2
    padded = F.pad(ir, (pad, pad, pad, pad), mode="replicate")
    mean = F.avg_pool2d(F.avg_pool2d(padded, (1, window), stride=1), (window, 1), stride=1)
    return (ir - mean).clamp(min=0)


class SalienceGain(nn.Module):
    """Per-pixel share in ``(0, 1)`` of the IR local contrast to add, predicted at 1/4 scale.

    Starts at a uniform 0.018 (output weights 0, bias -4), so a network with a fresh salience
    branch fuses almost exactly as the network it was initialised from.

    Shape: ``features (B, C, H/4, W/4)``, ``size (H, W)`` -> ``(B, 1, H, W)``.
    """

    def __init__(self, channels: int):
        super().__init__()
        self.conv = _conv(channels, channels // 2)
        self.out = nn.Conv2d(channels // 2, 1, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.constant_(self.out.bias, -4.0)

    def forward(self, features: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        gain = torch.sigmoid(self.out(self.conv(features)))
        return F.interpolate(gain, size=size, mode="bilinear", align_corners=False)


class FusionNet(nn.Module):
    """Infrared + visible luminance -> fused luminance.

    Args:
        config: architecture; the shipped weights use ``FusionConfig(head="blend", salience=True)``
            (``fusion_content.safetensors``: without the salience gain). ``spatial``,
            ``channel`` and ``integration`` switch the CDIIM parts for ablation; ``salience``
            adds the salience gain (module doc).

    Shape:
        ``ir``, ``vis_y``: ``(B, 1, H, W)`` float in ``[0, 1]``, ``H`` and ``W`` multiples of
        :attr:`size_multiple` -> fused Y ``(B, 1, H, W)`` in ``[0, 1]``.

    Example:
        >>> net = FusionNet()
        >>> net(torch.rand(1, 1, 64, 64), torch.rand(1, 1, 64, 64)).shape
        torch.Size([1, 1, 64, 64])
    """

    size_multiple = 8

    def __init__(self, config: FusionConfig = FusionConfig()):
        super().__init__()
        self.config = config
        w = config.widths
        parts = dict(heads=config.heads, spatial=config.spatial, channel=config.channel, integration=config.integration)
        self.encode_ir = ModalityEncoder(w)
        self.encode_vis = ModalityEncoder(w)
        self.interact = nn.ModuleList(
            [CrossDomainInteraction(w[2], config.kv_strides[0], **parts), CrossDomainInteraction(w[3], config.kv_strides[1], **parts)]
        )
        self.decode = nn.ModuleList(
            [DecoderStage(w[3], (w[2],), w[2]), DecoderStage(w[2], (w[1], w[1]), w[1]), DecoderStage(w[1], (w[0], w[0]), w[0], kernel_size=1)]
        )
        self.head = nn.Conv2d(w[0], 2 if config.head == "blend" else 1, 3, padding=1)
        self.salience = SalienceGain(w[2]) if config.salience else None

    def forward(self, ir: torch.Tensor, vis_y: torch.Tensor, *, return_blend: bool = False):
        """Fused Y; with ``return_blend`` (blend head only) the head's ``(weight, residual)``
        instead, each ``(B, 1, H, W)``, for :func:`blend_sources` (training composes them itself
        when a loss must reach only one of the two); not with the salience gain."""
        if return_blend and (self.config.head != "blend" or self.salience is not None):
            raise ValueError("return_blend needs the blend head and no salience gain")
        ir0, ir1, ir2 = self.encode_ir(ir)
        vis0, vis1, vis2 = self.encode_vis(vis_y)
        return self.decode_features((ir0, vis0), (ir1, vis1), ir2, vis2, ir, vis_y, return_blend=return_blend)

    def decode_features(self, full_skips, half_skips, ir2, vis2, ir, vis_y, *, return_blend: bool = False):
        """Everything after the encoders' full, half and quarter levels: CDIIM, the coarsest level, the
        decoder, the head.

        Separate from :meth:`forward` so that an exported graph can compute the full-resolution
        features of both modalities in one convolution and pass them as one skip
        (:func:`ivfuse.onnx_backend.export_onnx`).

        Args:
            full_skips, half_skips: the skip maps of the full- and half-resolution decoder
                stages (``(ir0, vis0)`` and ``(ir1, vis1)``, as ``decode[2]`` and ``decode[1]`` take them).
            ir2, vis2: the encoders' 1/4-scale features.
            ir, vis_y: the network's inputs (the blend head and the salience gain use them).
        """
        ir2, vis2, fused2 = self.interact[0](ir2, vis2)
        _, _, fused3 = self.interact[1](self.encode_ir.coarsest(ir2), self.encode_vis.coarsest(vis2))
        quarter = self.decode[0](fused3, (fused2,))
        x = self.decode[1](quarter, half_skips)
        x = self.decode[2](x, full_skips)
        if self.config.head == "sigmoid":
            fused = torch.sigmoid(self.head(x))
        else:
            weight, residual = self.head(x).chunk(2, dim=1)
            weight, residual = torch.sigmoid(weight), torch.tanh(residual)
            if return_blend:
                return weight, residual
            fused = blend_sources(weight, residual, ir, vis_y)
        if self.salience is None:
            return fused
        return (fused + self.salience(quarter, ir.shape[-2:]) * infrared_local_contrast(ir)).clamp(0, 1)


def blend_sources(weight: torch.Tensor, residual: torch.Tensor, ir: torch.Tensor, vis_y: torch.Tensor) -> torch.Tensor:
    """The blend head's output: ``clamp(weight * ir + (1 - weight) * vis_y + residual, 0, 1)``.

    Args:
        weight: ``(B, 1, H, W)`` per-pixel IR share in ``(0, 1)``.
        residual: ``(B, 1, H, W)`` correction in ``(-1, 1)``.
        ir, vis_y: ``(B, 1, H, W)`` sources in ``[0, 1]``.

    Example:
        >>> blend_sources(torch.full((1, 1, 1, 1), 0.25), torch.zeros(1, 1, 1, 1), torch.ones(1, 1, 1, 1), torch.zeros(1, 1, 1, 1))
        tensor([[[[0.2500]]]])
    """
    return (weight * ir + (1 - weight) * vis_y + residual).clamp(0, 1)
