"""ONNX export of the networks, and an ONNX Runtime session that stands in for a network.

:func:`export_onnx` writes a :class:`~ivfuse.models.FusionNet` or
:class:`~ivfuse.models.SegmentationNet` as an ONNX graph with dynamic batch, height and width,
checked with ``onnx.checker``; its metadata names the network, its architecture and its size
multiple, so a file is always run as the network it came from. :class:`OnnxNetwork` runs such a
graph with ONNX Runtime on the CPU and is called like the network itself (torch tensors in, a
torch tensor out, same ``size_multiple``), so :class:`ivfuse.Fuser` keeps its own padding,
tiling and colour handling for both backends; an input shape run more than once gets a session
planned for that fixed shape (docs/onnx.md, "Speed"). :func:`load_backend_network` gives either kind of
network from a weights file: shipped or trained ``.safetensors`` are exported in memory (no
export step, no cache on disk); an ``.onnx`` file is read only from the path the caller names.

``onnx`` and ``onnxruntime`` are the optional extra ``pip install 'ivfuse[onnx]'``; they are
imported only when this backend is used.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import io
import json
import logging
import os
import tempfile
import threading
import warnings
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .io import atomic_write, first_line
from .models.fusion import DecoderStage, FusionNet, GradientResidualBlock, SalienceGain
from .serialization import WeightsError, load_network, shipped_weights

BACKENDS = ("torch", "onnxruntime")
QUANTIZE_MODES = ("int8",)
# Pairs whose activation ranges set the int8 scales; calibration histograms every activation
# of each pair, so a 640x480 pair costs one to three seconds of export time.
CALIBRATION_PAIRS = 16
# Opset 17: every exported op is in it, the TorchScript exporter writes it, and onnxruntime
# runs it from 1.14 on, well below the 1.18 the extra asks for.
ONNX_OPSET = 17
_ORT_LEVELS = {"disable": "ORT_DISABLE_ALL", "basic": "ORT_ENABLE_BASIC", "extended": "ORT_ENABLE_EXTENDED", "all": "ORT_ENABLE_ALL"}
OPTIMIZATION_LEVELS = tuple(_ORT_LEVELS)
#: The export form's rewrites (:func:`_export_form`), all applied by default.
REWRITES = ("sobel", "split_skips", "salience_sum", "paired_stems")
_INPUTS = {"FusionNet": ("ir", "vis_y"), "SegmentationNet": ("image",)}
_OUTPUT = {"FusionNet": "fused", "SegmentationNet": "logits"}
_SHIPPED = {"FusionNet": "fusion", "SegmentationNet": "segmentation"}
_INSTALL_HINT = "pip install 'ivfuse[onnx]'"
# Fixed-shape sessions kept per OnnxNetwork: a folder, a video or a tiled image uses one or two.
_FIXED_SHAPE_SESSIONS = 4
# Rectified responses of these four kernels sum to |Sobel_x| + |Sobel_y| over 8 (sobel_magnitude).
_SOBEL_X = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]]) / 8
_SOBEL_PARTS = torch.stack([_SOBEL_X, -_SOBEL_X, _SOBEL_X.T, -_SOBEL_X.T])


class BackendUnavailableError(ValueError):
    """``onnx`` / ``onnxruntime`` are not installed; the message says what to install."""


def _import(name: str):
    try:
        return __import__(name)
    except ImportError:
        raise BackendUnavailableError(f"the onnxruntime backend needs the {name} package: {_INSTALL_HINT}") from None


class _Positional(torch.nn.Module):
    """The network with its keyword-only options left at their defaults: the exporter traces
    positional inputs only."""

    def __init__(self, network: torch.nn.Module):
        super().__init__()
        self.network = network

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return self.network(*inputs)


class _ConvSobelBlock(torch.nn.Module):
    """:class:`~ivfuse.models.fusion.GradientResidualBlock` with its Sobel magnitude written as
    four depthwise convolutions, for export only.

    ``|a| = relu(a) + relu(-a)``, so ``|Sobel_x| + |Sobel_y|`` is the sum of the rectified
    responses to ``Sobel_x, -Sobel_x, Sobel_y, -Sobel_y``: the same values up to float rounding,
    but ONNX Runtime keeps convolutions and sums in its blocked channel layout, where
    the slices of :func:`~ivfuse.models.fusion.sobel_magnitude` each cost a layout change and a
    copy. It shares the block's convolutions; the padding stays replicate, as in the block.

    Shape: ``(B, C, H, W) -> (B, C, H, W)``, as the block.
    """

    def __init__(self, block: GradientResidualBlock):
        super().__init__()
        self.conv, self.edge = block.conv, block.edge
        self.channels = block.edge.in_channels
        kernels = _SOBEL_PARTS[:, None, None].expand(4, self.channels, 1, 3, 3).contiguous()
        self.register_buffer("kernels", kernels.to(block.edge.weight), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        padded = F.pad(x, (1, 1, 1, 1), mode="replicate")
        parts = [F.relu(F.conv2d(padded, kernel, groups=self.channels)) for kernel in self.kernels]
        return self.conv(x) + self.edge(functools.reduce(torch.add, parts))


class _SplitSkipStage(torch.nn.Module):
    """:class:`~ivfuse.models.fusion.DecoderStage` without its concatenation, for export only.

    A convolution over ``[upsampled, *skips]`` is the sum of convolutions over each part, so the
    stage convolves each part on its own and adds. In ONNX Runtime this saves a concatenation
    and, at full resolution, the layout changes of the 8-channel skips (fewer channels than the
    blocked layout's 16 are converted back and forth; ``benchmarks/onnx_rewrites.py`` measures
    it). With a 1x1 convolution the upsampled part's convolution also moves before the
    upsampling, into ``reduce``: bilinear upsampling is linear and keeps constants, so the
    product of the two 1x1 convolutions gives the same values up to float rounding.

    ``skip_channels`` regroups the stage's skips, e.g. ``(16,)`` for ``(8, 8)`` when the caller
    passes the two skips already as one map.

    Shape: as the stage, ``coarse (B, C_in, H/2, W/2)``, ``skips`` -> ``(B, C_out, H, W)``.
    """

    def __init__(self, stage: DecoderStage, skip_channels: tuple[int, ...] | None = None):
        super().__init__()
        convolution, self.activation = stage.conv
        weight = convolution.weight.detach()
        out_channels = weight.shape[0]
        up_weight, *skip_weights = weight.split([out_channels, *(skip_channels or stage.skip_channels)], dim=1)
        padding = convolution.padding
        if convolution.kernel_size == (1, 1):
            self.reduce = torch.nn.Conv2d(stage.reduce.in_channels, out_channels, 1)
            self.reduce.weight.data = torch.einsum("oc,ci->oi", up_weight[:, :, 0, 0], stage.reduce.weight.detach()[:, :, 0, 0])[..., None, None]
            self.reduce.bias.data = up_weight[:, :, 0, 0] @ stage.reduce.bias.detach() + convolution.bias.detach()
            self.up = None
        else:
            self.reduce = stage.reduce
            self.up = _convolution(up_weight, convolution.bias.detach(), padding)
        self.skips = torch.nn.ModuleList(_convolution(part, None, padding) for part in skip_weights)

    def forward(self, coarse: torch.Tensor, skips: tuple[torch.Tensor, ...]) -> torch.Tensor:
        x = F.interpolate(self.reduce(coarse), size=skips[0].shape[-2:], mode="bilinear", align_corners=False)
        if self.up is not None:
            x = self.up(x)
        for convolution, skip in zip(self.skips, skips):
            x = x + convolution(skip)
        return self.activation(x)


def _convolution(weight: torch.Tensor, bias: torch.Tensor | None, padding) -> torch.nn.Conv2d:
    """A stride-1 ``Conv2d`` holding ``weight`` (and ``bias``)."""
    convolution = torch.nn.Conv2d(weight.shape[1], weight.shape[0], weight.shape[2:], padding=padding, bias=bias is not None)
    convolution.weight.data = weight.clone()
    if bias is not None:
        convolution.bias.data = bias.clone()
    return convolution


class _SalienceGainSum(torch.nn.Module):
    """:class:`~ivfuse.models.fusion.SalienceGain` with its one-channel 1x1 output convolution
    written as a weighted sum over channels, for export only.

    ONNX Runtime would compute a one-channel convolution output in its 16-channel blocked layout,
    upsample all 16 channels to full resolution and convert the result back; the sum gives a
    plain one-channel map, upsampled as one channel (``benchmarks/onnx_rewrites.py``). Same values
    up to float rounding.

    Shape: as the gain, ``features (B, C, H/4, W/4)``, ``size (H, W)`` -> ``(B, 1, H, W)``.
    """

    def __init__(self, gain: SalienceGain):
        super().__init__()
        self.conv = gain.conv
        self.register_buffer("weight", gain.out.weight.detach().clone().reshape(1, -1, 1, 1), persistent=False)
        self.register_buffer("bias", gain.out.bias.detach().clone().reshape(1, 1, 1, 1), persistent=False)

    def forward(self, features: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        gain = torch.sigmoid((self.conv(features) * self.weight).sum(dim=1, keepdim=True) + self.bias)
        return F.interpolate(gain, size=size, mode="bilinear", align_corners=False)


class _PairedStems(torch.nn.Module):
    """Both modalities' :class:`~ivfuse.models.fusion.EdgeStem` in one convolution, for export only.

    Each stem convolves ``[x, sobel_magnitude(x)]`` into ``C`` channels; here one convolution with
    block-diagonal weights maps ``[ir, vis_y, rectified Sobel parts of both]`` (the Sobel
    magnitude as in :class:`_ConvSobelBlock`, its weight repeated over its four parts) to
    ``[ir0; vis0]``. With ``C = 8`` that is one map of 16 channels, ONNX Runtime's block size,
    instead of two 8-channel maps that are each converted out of and back into the blocked
    layout (``benchmarks/onnx_rewrites.py``).

    Shape: ``ir``, ``vis_y`` ``(B, 1, H, W)`` -> ``(B, 2C, H, W)``.
    """

    def __init__(self, stems):
        super().__init__()
        convolutions = [stem.conv[0] for stem in stems]
        self.activation = stems[0].conv[1]
        width = convolutions[0].out_channels
        sobel = torch.zeros(8, 2, 3, 3)
        weight = torch.zeros(2 * width, 2 + 8, 3, 3)
        for index, convolution in enumerate(convolutions):
            parts = slice(4 * index, 4 * index + 4)
            sobel[parts, index] = _SOBEL_PARTS
            outputs = slice(width * index, width * (index + 1))
            weight[outputs, index] = convolution.weight.detach()[:, 0]
            weight[outputs, 2 + 4 * index : 6 + 4 * index] = convolution.weight.detach()[:, 1:2].expand(-1, 4, -1, -1)
        self.register_buffer("sobel", sobel.to(weight), persistent=False)
        self.conv = _convolution(weight, torch.cat([convolution.bias.detach() for convolution in convolutions]), 1)

    def forward(self, ir: torch.Tensor, vis_y: torch.Tensor) -> torch.Tensor:
        x = torch.cat([ir, vis_y], dim=1)
        parts = F.relu(F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), self.sobel))
        return self.activation(self.conv(torch.cat([x, parts], dim=1)))


class _PairedStemFusionNet(torch.nn.Module):
    """A :class:`~ivfuse.models.FusionNet` whose full-resolution features are one map
    ``[ir0; vis0]`` (:class:`_PairedStems`), for export only.

    The encoders' next convolutions read their half of that map (zero weights on the other
    half), and the full-resolution decoder stage takes it as its one skip; from there the
    network's own :meth:`~ivfuse.models.FusionNet.decode_features` runs. Same outputs up to
    float rounding.
    """

    def __init__(self, network: torch.nn.Module):
        super().__init__()
        self.network = network
        encoders = (network.encode_ir, network.encode_vis)
        self.stems = _PairedStems([encoder.levels[0] for encoder in encoders])
        width = self.stems.conv.out_channels // 2
        for index, encoder in enumerate(encoders):
            down = encoder.levels[1][0][0]  # the stride-2 convolution after the stem
            weight = torch.zeros(down.out_channels, 2 * width, *down.kernel_size)
            weight[:, width * index : width * (index + 1)] = down.weight.detach()
            widened = torch.nn.Conv2d(2 * width, down.out_channels, down.kernel_size, down.stride, down.padding)
            widened.weight.data, widened.bias.data = weight, down.bias.detach().clone()
            encoder.levels[1][0][0] = widened
        full = network.decode[2]
        network.decode[2] = _SplitSkipStage(full, skip_channels=(sum(full.skip_channels),))

    def forward(self, ir: torch.Tensor, vis_y: torch.Tensor) -> torch.Tensor:
        network = self.network
        both0 = self.stems(ir, vis_y)
        ir1, vis1 = network.encode_ir.levels[1](both0), network.encode_vis.levels[1](both0)
        ir2, vis2 = network.encode_ir.levels[2](ir1), network.encode_vis.levels[2](vis1)
        return network.decode_features((both0,), (ir1, vis1), ir2, vis2, ir, vis_y)


def _export_form(network: torch.nn.Module, rewrites: Sequence[str] = REWRITES) -> torch.nn.Module:
    """A copy of ``network`` rewritten for ONNX Runtime, computing the same outputs up to float
    rounding. ``rewrites`` (:data:`REWRITES`) chooses among: ``"sobel"``, gradient blocks as
    :class:`_ConvSobelBlock`; ``"split_skips"``, decoder stages as :class:`_SplitSkipStage`;
    ``"salience_sum"``, the salience gain as :class:`_SalienceGainSum`; ``"paired_stems"``, a
    fusion network's two stems paired (:class:`_PairedStemFusionNet`, which splits the
    full-resolution decoder stage in any case)."""
    unknown = set(rewrites) - set(REWRITES)
    if unknown:
        raise ValueError(f"unknown export rewrites {sorted(unknown)}; choose from {REWRITES}")
    device = next(network.parameters()).device
    network = copy.deepcopy(network)
    paired = _PairedStemFusionNet(network) if isinstance(network, FusionNet) and "paired_stems" in rewrites else None
    kinds = {"sobel": (GradientResidualBlock, _ConvSobelBlock), "split_skips": (DecoderStage, _SplitSkipStage),
             "salience_sum": (SalienceGain, _SalienceGainSum)}
    replacements = dict(kinds[rewrite] for rewrite in rewrites if rewrite in kinds)
    found = [(name, module) for name, module in network.named_modules() if type(module) in replacements]
    for name, module in found:
        parent, _, child = name.rpartition(".")
        owner = network.get_submodule(parent) if parent else network
        setattr(owner, child, replacements[type(module)](module))
    return (paired or network).to(device)  # the rewrites build their weights on the CPU


def export_onnx(
    network: torch.nn.Module,
    path: str | os.PathLike | None = None,
    *,
    quantize: str | None = None,
    calibration: str | os.PathLike | None = None,
    rewrites: Sequence[str] = REWRITES,
) -> bytes:
    """The network as a checked ONNX model, written atomically to ``path`` when given.

    The graph is the network's ``forward`` in its export form (:func:`_export_form`: rewrites
    that compute the same outputs up to float rounding in a way that suits ONNX Runtime).
    Inputs and output keep the network's shapes with dynamic batch, height and width:
    ``FusionNet``: ``ir``, ``vis_y`` ``(B, 1, H, W)`` float32 in ``[0, 1]`` (``H``, ``W``
    multiples of ``size_multiple``, 8) -> ``fused`` ``(B, 1, H, W)`` in ``[0, 1]``;
    ``SegmentationNet``: ``image`` ``(B, 3, H, W)`` in ``[0, 1]``, ``H, W >= 32`` -> ``logits``
    ``(B, classes, H, W)``.

    Args:
        network: a ``FusionNet`` or ``SegmentationNet`` (e.g. from :func:`ivfuse.serialization.load_network`).
        path: file to write, or ``None`` to return the bytes only.
        quantize: ``"int8"``: static int8 quantisation of the convolutions below the input
            resolution (:func:`_quantize_int8`; speed and quality cost in docs/onnx.md), or ``None``.
        calibration: with ``quantize``: a folder holding ``ir/`` and ``vi/`` image pairs (matched
            by stem) whose activation ranges set the int8 scales; use training pairs, never the
            pairs you evaluate on. ``FusionNet`` only.
        rewrites: the export form's rewrites (:data:`REWRITES`, all by default); fewer only to
            measure what each is worth (``benchmarks/onnx_rewrites.py``).

    Returns:
        The serialised ONNX model.

    Raises:
        BackendUnavailableError: ``onnx`` (or, for ``quantize``, ``onnxruntime``) is not installed.
        ValueError: not an ivfuse network, an unknown ``quantize``, ``quantize`` without
            ``calibration`` (or the reverse, or for ``SegmentationNet``), a calibration folder without pairs.
        ImageReadError: a calibration image cannot be read.

    Example:
        >>> from ivfuse.models import FusionNet
        >>> model = export_onnx(FusionNet().eval(), "fusion.onnx")
    """
    onnx = _import("onnx")
    name = type(network).__name__
    if name not in _INPUTS:
        raise ValueError(f"cannot export {name}: expected FusionNet or SegmentationNet")
    if quantize not in (None, *QUANTIZE_MODES):
        raise ValueError(f"quantize must be one of {QUANTIZE_MODES} or None, got {quantize!r}")
    if (quantize is None) != (calibration is None):
        raise ValueError("int8 quantisation needs calibration pairs (a folder with ir/ and vi/), and calibration is for int8 only")
    if quantize and name != "FusionNet":
        raise ValueError(f"int8 quantisation is for FusionNet, not {name}")
    inputs, output = _INPUTS[name], _OUTPUT[name]
    channels = {"ir": 1, "vis_y": 1, "image": 3}
    device = next(network.parameters()).device
    sample = tuple(torch.rand(1, channels[input_name], 64, 64, device=device) for input_name in inputs)
    dynamic = {tensor: {0: "batch", 2: "height", 3: "width"} for tensor in (*inputs, output)}
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        # The TorchScript exporter warns that it is deprecated in favour of the torch.export one,
        # which needs onnxscript; this one needs nothing beyond onnx and exports the same graph.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            _Positional(_export_form(network, rewrites).eval()), sample, buffer, dynamo=False, opset_version=ONNX_OPSET,
            input_names=list(inputs), output_names=[output], dynamic_axes=dynamic,
        )
    model = onnx.load_from_string(buffer.getvalue())
    size_multiple = getattr(network, "size_multiple", 1)
    metadata = {"network": name, "config": json.dumps(network.config.to_dict()), "size_multiple": str(size_multiple), "quantize": quantize or "none"}
    onnx.helper.set_model_props(model, metadata)
    onnx.checker.check_model(model, full_check=True)
    data = model.SerializeToString()
    if quantize:
        data = _quantize_int8(data, calibration_feeds(calibration, size_multiple))
    if path is not None:
        with atomic_write(path) as stream:
            stream.write(data)
    return data


def calibration_feeds(folder: str | os.PathLike, size_multiple: int = 8) -> list[dict[str, np.ndarray]]:
    """Fusion network inputs of up to :data:`CALIBRATION_PAIRS` pairs of ``folder/ir`` and ``folder/vi``.

    Pairs are taken evenly spaced over the name-sorted listing, so a folder of a whole data set
    is sampled across its scenes (MSRS: day and night). Each is prepared as :class:`ivfuse.Fuser`
    prepares a pair for the network: IR to one grey channel, visible to BT.601 luma, at most
    1024 pixels a side (the size of ``Fuser``'s tiles, top-left crop), reflect-padded to a
    multiple of ``size_multiple``.

    Returns:
        One feed per pair: ``{"ir": (1, 1, H, W), "vis_y": (1, 1, H, W)}`` float32 in ``[0, 1]``.

    Raises:
        ValueError: ``folder`` holds no ``ir``/``vi`` pairs.
        ImageReadError: an image cannot be read, or a pair's sizes differ.
    """
    from .color import infrared_to_grey, rgb_to_luma, to_tensor
    from .fuser import pad_to_multiple  # fuser imports this module: imported here, when used
    from .io import find_pairs, read_pair

    folder = Path(folder)
    pairs = find_pairs(folder / "ir", folder / "vi").pairs if (folder / "ir").is_dir() and (folder / "vi").is_dir() else []
    if not pairs:
        raise ValueError(f"{folder}: no calibration pairs (expected ir/ and vi/ folders with images of matching names)")
    step = len(pairs) / min(len(pairs), CALIBRATION_PAIRS)
    feeds = []
    for index in range(min(len(pairs), CALIBRATION_PAIRS)):
        _, ir_path, vis_path = pairs[int(index * step)]
        ir, vis = read_pair(ir_path, vis_path)
        tensors = [infrared_to_grey(to_tensor(ir)), rgb_to_luma(to_tensor(vis))]
        tensors = [pad_to_multiple(tensor[..., :1024, :1024], size_multiple) for tensor in tensors]
        feeds.append({name: tensor.contiguous().numpy() for name, tensor in zip(_INPUTS["FusionNet"], tensors)})
    return feeds


def _full_resolution_convolutions(model: bytes) -> list[str]:
    """Names of the Conv nodes whose output has the input's height and width (fusion graph)."""
    onnx = _import("onnx")
    ort = _import("onnxruntime")
    graph = onnx.load_from_string(model)
    convolutions = [node for node in graph.graph.node if node.op_type == "Conv"]
    graph.graph.output.extend(onnx.helper.make_empty_tensor_value_info(node.output[0]) for node in convolutions)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(graph.SerializeToString(), options, providers=["CPUExecutionProvider"])
    sample = np.zeros((1, 1, 64, 64), np.float32)
    outputs = session.run([node.output[0] for node in convolutions], {name: sample for name in _INPUTS["FusionNet"]})
    return [node.name for node, value in zip(convolutions, outputs) if value.shape[-2:] == sample.shape[-2:]]


def _quantize_int8(model: bytes, feeds: list[dict[str, np.ndarray]]) -> bytes:
    """Static int8 quantisation (QDQ) of the fusion graph, activation ranges from ``feeds``.

    Convolutions get int8 weights per output channel and uint8 activations with fixed scales,
    which ONNX Runtime runs as integer convolutions. The scales span the 0.001 to 99.999
    percentiles of each activation over ``feeds`` rather than its min and max: on MSRS training
    pairs not used for calibration, that put the outputs closer to float32 (PSNR). Kept float32:
    convolutions at the input resolution (1 to 8 channels: integer kernels gain nothing there,
    and they write the fine detail, where 8 bits cost most) and everything that is not a
    convolution (the attention's products and softmax, normalisation, the blend), whose
    quantisation made the graph slower (docs/onnx.md, "What was tried").
    """
    _import("onnxruntime")
    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self):
            self._feeds = iter(feeds)

        def get_next(self):
            return next(self._feeds, None)

    quantizer_log = logging.getLogger()  # the quantiser advises on the root logger; not the user's concern
    level = quantizer_log.level
    quantizer_log.setLevel(logging.ERROR)
    # The percentile calibrator prints its progress on stdout, where the CLI reports.
    try:
        with contextlib.redirect_stdout(io.StringIO()), tempfile.TemporaryDirectory(prefix="ivfuse-onnx-") as folder:
            source, prepared, target = (Path(folder) / name for name in ("float.onnx", "prepared.onnx", "int8.onnx"))
            source.write_bytes(model)
            # Shape inference and constant folding first, as the quantiser's documentation asks.
            quant_pre_process(source, prepared)
            quantize_static(
                prepared, target, Reader(), quant_format=QuantFormat.QDQ, op_types_to_quantize=["Conv"],
                nodes_to_exclude=_full_resolution_convolutions(prepared.read_bytes()), per_channel=True,
                activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod.Percentile,
            )
            return target.read_bytes()
    finally:
        quantizer_log.setLevel(level)


class OnnxNetwork:
    """An exported network run by ONNX Runtime on the CPU, called like the torch network.

    The first run of an input shape uses a session with dynamic batch, height and width; an
    input shape run a second time gets its own session with those fixed (built once, in a
    fraction of a second), which ONNX Runtime plans ahead and runs faster (docs/onnx.md, "Speed"). The :data:`_FIXED_SHAPE_SESSIONS`
    latest such shapes are kept. Calls from several threads are safe.

    Args:
        model: serialised ONNX model from :func:`export_onnx` (its metadata names the network).
        source: where the model came from, for error messages (a file name).
        threads: intra-op CPU threads; ``None`` uses ``torch.get_num_threads()``, so one
            ``--threads`` setting serves both backends.
        optimization: ONNX Runtime graph optimisation level, one of :data:`OPTIMIZATION_LEVELS`.

    Shape:
        As the network: ``network(ir, vis_y)`` with ``(B, 1, H, W)`` float tensors in ``[0, 1]``
        -> ``(B, 1, H, W)`` float32 on the inputs' device, or ``network(image)`` -> logits.

    Raises:
        WeightsError: the model cannot be run, or is not an ivfuse network (message names ``source``).

    Example:
        >>> from ivfuse.models import FusionNet
        >>> net = OnnxNetwork(export_onnx(FusionNet().eval()))
        >>> net(torch.rand(2, 1, 64, 96), torch.rand(2, 1, 64, 96)).shape
        torch.Size([2, 1, 64, 96])
    """

    def __init__(self, model: bytes, *, source: str = "ONNX model", threads: int | None = None, optimization: str = "all"):
        self._ort = _import("onnxruntime")
        if optimization not in OPTIMIZATION_LEVELS:
            raise ValueError(f"optimization must be one of {OPTIMIZATION_LEVELS}, got {optimization!r}")
        self._model, self._threads, self._optimization = model, threads or torch.get_num_threads(), optimization
        try:
            self.session = self._new_session({})
        except Exception as error:  # onnxruntime raises its own exception types for unreadable models
            raise WeightsError(f"{source}: not a readable ONNX model ({first_line(error)})") from None
        metadata = self.session.get_modelmeta().custom_metadata_map
        self.network_name = metadata.get("network", "")
        if self.network_name not in _INPUTS:
            raise WeightsError(f"{source}: an ONNX model without ivfuse metadata (export it with 'ivfuse export')")
        self.size_multiple = int(metadata.get("size_multiple", "1"))
        self.input_names = [node.name for node in self.session.get_inputs()]
        self._fixed: OrderedDict[tuple[int, ...], object] = OrderedDict()
        self._seen: OrderedDict[tuple[int, ...], None] = OrderedDict()  # shapes run once, latest last
        self._lock = threading.Lock()

    def _new_session(self, dims: dict[str, int]):
        ort = self._ort
        options = ort.SessionOptions()
        options.intra_op_num_threads = self._threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, _ORT_LEVELS[self._optimization])
        options.log_severity_level = 3  # warnings about unused initialisers are noise to users
        # Worker threads otherwise spin for a while after each run, taking the CPUs from the
        # colour conversion and tiling that Fuser runs in PyTorch right after the network.
        options.add_session_config_entry("session.force_spinning_stop", "1")
        for name, size in dims.items():  # the dynamic axes named in export_onnx
            options.add_free_dimension_override_by_name(name, size)
        return ort.InferenceSession(self._model, options, providers=["CPUExecutionProvider"])

    def _session_for(self, shape: tuple[int, ...]):
        """The fixed-shape session of ``shape`` (B, C, H, W) once it is seen twice, else the dynamic one."""
        key = (shape[0], *shape[2:])
        with self._lock:
            if key in self._fixed:
                self._fixed.move_to_end(key)
                return self._fixed[key]
            if key not in self._seen:
                self._seen[key] = None
                if len(self._seen) > 16 * _FIXED_SHAPE_SESSIONS:  # bounded, e.g. for a server fed every size
                    self._seen.popitem(last=False)
                return self.session
            del self._seen[key]
            session = self._fixed[key] = self._new_session(dict(zip(("batch", "height", "width"), key)))
            if len(self._fixed) > _FIXED_SHAPE_SESSIONS:
                self._fixed.popitem(last=False)
            return session

    def __call__(self, *inputs: torch.Tensor) -> torch.Tensor:
        feed = {name: tensor.detach().to("cpu", torch.float32).contiguous().numpy() for name, tensor in zip(self.input_names, inputs)}
        (output,) = self._session_for(tuple(inputs[0].shape)).run(None, feed)
        return torch.from_numpy(output).to(inputs[0].device)


def load_backend_network(
    weights: str | os.PathLike | None,
    expected: str,
    *,
    backend: str = "torch",
    device: torch.device | str = "cpu",
    quantize: str | None = None,
    calibration: str | os.PathLike | None = None,
    threads: int | None = None,
) -> torch.nn.Module | OnnxNetwork:
    """The network ``expected`` (``"FusionNet"`` or ``"SegmentationNet"``) for a backend.

    ``backend="torch"``: the ``.safetensors`` file as a torch module in eval mode on ``device``.
    ``backend="onnxruntime"``: an :class:`OnnxNetwork`, from an ``.onnx`` file written by
    :func:`export_onnx`, or exported in memory from a ``.safetensors`` file (``quantize`` and
    ``calibration`` as in :func:`export_onnx`). ``weights=None`` uses the shipped weights.

    Raises:
        WeightsError: missing or unreadable file, wrong network, an ``.onnx`` file for the torch
            backend (one line naming the file).
        BackendUnavailableError: ``onnxruntime`` asked for but not installed.
        ValueError: unknown backend, ``quantize`` or ``calibration`` with the torch backend or an
            ``.onnx`` file, CUDA with onnxruntime; as :func:`export_onnx` for ``quantize``.

    Example:
        >>> network = load_backend_network(None, "FusionNet", backend="onnxruntime")
        >>> network.size_multiple
        8
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    path = Path(weights) if weights is not None else shipped_weights(_SHIPPED[expected])
    is_onnx = path.suffix.lower() == ".onnx"
    if backend == "torch":
        if quantize or calibration:
            raise ValueError("quantize and calibration are for the onnxruntime backend")
        if is_onnx:
            raise WeightsError(f"{path}: an ONNX model runs with the onnxruntime backend only (--backend onnxruntime)")
        return load_network(path, expected=expected).to(device)
    if torch.device(device).type != "cpu":
        raise ValueError(f"the onnxruntime backend runs on the CPU, not {device}; use the torch backend for CUDA")
    _import("onnxruntime")
    if not is_onnx:
        model = export_onnx(load_network(path, expected=expected), quantize=quantize, calibration=calibration)
    else:
        if not path.is_file():
            raise WeightsError(f"{path}: ONNX file not found")
        if quantize or calibration:
            raise ValueError(f"{path}: quantise when exporting (ivfuse export --quantize int8 --calibration DIR), not when loading")
        model = path.read_bytes()
    network = OnnxNetwork(model, source=str(path), threads=threads)
    if network.network_name != expected:
        raise WeightsError(f"{path}: holds {network.network_name}, expected {expected}")
    return network
