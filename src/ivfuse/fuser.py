"""The Python API: :class:`Fuser` fuses arrays, :func:`fuse_folder` fuses files and folders.

A :class:`Fuser` wraps a fusion method (the CDIIM network with its weights, or a classical
baseline) with everything around it: IR to one channel, visible to luminance + chrominance,
reflect-padding to the network's size multiple, overlapping tiles for large images, and the
visible colour put back on the fused luminance. Outputs have exactly the input size and are never
stretched.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import kornia
import numpy as np
import torch
import torch.nn.functional as F

from .color import has_equal_channels, infrared_to_grey, merge_luma, rgb_to_luma, split_luma, to_tensor
from .io import ImageReadError, WriteError, find_pairs, first_line, read_pair, write_image
from .losses import gaussian_blur
from .models.segmentation import window_starts
from .onnx_backend import load_backend_network
from .runtime import resolve_device
from .serialization import shipped_weights

NETWORK_METHOD = "cdiim"
_log = logging.getLogger(__name__)


class Fuser:
    """Fuse infrared and visible images with the CDIIM network or a classical baseline.

    Args:
        weights: ``.safetensors`` file of a trained fusion network, or (onnxruntime backend) an
            ``.onnx`` file from ``ivfuse export``; ``None`` uses the shipped weights. A
            :class:`~ivfuse.models.FusionNet` in memory (e.g. one being trained) is used as it
            is, in the mode its owner set (``eval()`` for what ``ivfuse fuse`` writes) and in
            contiguous memory format unless ``channels_last`` asks otherwise.
        device: ``"cpu"`` or ``"cuda"`` (``"cuda:1"``, ...).
        method: ``"cdiim"`` (the network) or a name from :data:`ivfuse.baselines.BASELINES`.
        tile_size: images with a side longer than this are fused in overlapping tiles of this
            size, so memory stays bounded (about 1 GB for 4K at the default); a multiple of 8.
        tile_overlap: overlap between tiles, blended with linear ramps. Each tile's coarse level
            (Gaussian, sigma ``tile_size / 16``: :attr:`tile_coarse_fraction`) is taken from one
            fusion of the whole pair downscaled to a tile, so tiles share the whole image's
            brightness and contrast.
        channels_last: run the network in channels-last memory format; ``None`` (default) uses it
            on the CPU with the torch backend, where ``benchmarks/fusion_speed.py`` measures it faster.
        backend: ``"torch"`` or ``"onnxruntime"`` (CPU; needs ``pip install 'ivfuse[onnx]'``):
            the network runs in ONNX Runtime, exported in memory from ``.safetensors`` weights;
            padding, tiling and colour are the same for both (docs/onnx.md).
        quantize: ``"int8"`` with the onnxruntime backend: static int8 quantisation of the
            in-memory export (speed and quality cost in docs/onnx.md); ``None`` keeps float32.
        calibration: with ``quantize``: folder with ``ir/`` and ``vi/`` training pairs that set
            the int8 scales (:func:`ivfuse.onnx_backend.export_onnx`).

    Example:
        >>> fuser = Fuser()
        >>> ir = np.random.rand(480, 640).astype(np.float32)
        >>> vis = np.random.rand(480, 640, 3).astype(np.float32)
        >>> fuser.fuse(ir, vis).shape
        (480, 640, 3)
    """

    #: Sigma of the coarse layer that tiles take from the whole pair, as a fraction of
    #: ``tile_size`` (0: each tile keeps its own; ``benchmarks/tiling_level.py`` compares).
    tile_coarse_fraction: float = 1 / 16

    def __init__(
        self,
        weights: str | os.PathLike | torch.nn.Module | None = None,
        *,
        device: str = "cpu",
        method: str = NETWORK_METHOD,
        tile_size: int = 1024,
        tile_overlap: int = 64,
        channels_last: bool | None = None,
        backend: str = "torch",
        quantize: str | None = None,
        calibration: str | os.PathLike | None = None,
    ):
        if tile_size % 8 or tile_size < 64 or not 0 <= tile_overlap < tile_size // 2:
            raise ValueError("tile_size must be a multiple of 8 (>= 64) and tile_overlap in [0, tile_size / 2)")
        self.device = resolve_device(device)
        self.method = method
        self.tile_size, self.tile_overlap = tile_size, tile_overlap
        self.backend = backend
        in_memory = isinstance(weights, torch.nn.Module)
        if channels_last is None:
            # Converting a network in memory would change its owner's parameters.
            channels_last = self.device.type == "cpu" and backend == "torch" and not in_memory
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        if in_memory:
            if method != NETWORK_METHOD or backend != "torch" or quantize or calibration:
                raise ValueError(f"a network in memory runs as the {NETWORK_METHOD} method with the torch backend")
            self.weights, self.network, self.baseline = None, weights, None
        elif method == NETWORK_METHOD:
            self.weights = Path(weights) if weights is not None else shipped_weights("fusion")
            self.network = load_backend_network(
                self.weights, "FusionNet", backend=backend, device=self.device, quantize=quantize, calibration=calibration
            )
            if isinstance(self.network, torch.nn.Module):
                self.network = self.network.to(memory_format=self.memory_format)
            self.baseline = None
        else:
            from .baselines import BASELINES

            if method not in BASELINES:
                raise ValueError(f"unknown method {method!r}; choose {NETWORK_METHOD} or one of {', '.join(BASELINES)}")
            if weights is not None:
                raise ValueError(f"{weights}: weights are for the {NETWORK_METHOD} network; the {method} baseline takes none")
            if backend != "torch" or quantize or calibration:
                raise ValueError(f"backend and quantize are for the {NETWORK_METHOD} network; the {method} baseline runs in NumPy")
            self.weights, self.network, self.baseline = None, None, BASELINES[method]

    def fuse(self, ir: np.ndarray, vis: np.ndarray, *, grey: bool = False) -> np.ndarray:
        """Fuse one pair of arrays.

        Args:
            ir: ``(H, W)``, ``(H, W, 1)`` or ``(H, W, 3)`` float in ``[0, 1]`` (three equal
                channels are taken exactly, false colour as its luma).
            vis: ``(H, W)`` grey or ``(H, W, 3)`` RGB float in ``[0, 1]``.
            grey: return only the fused luminance, even for a colour visible image.

        Returns:
            float32 in ``[0, 1]``: ``(H, W, 3)`` if ``vis`` is RGB and not ``grey``, else ``(H, W)``.

        Raises:
            ValueError: the two images differ in size (they are never resized), or an array is
                not floating point (integer images would be read as far too bright).
        """
        return self.fuse_batch([ir], [vis], grey=grey)[0]

    def fuse_batch(self, irs: Sequence[np.ndarray], viss: Sequence[np.ndarray], *, grey: bool = False) -> list[np.ndarray]:
        """Fuse several pairs of the same size with one batched network run (e.g. video frames).

        Each output is exactly what :meth:`fuse` gives for its pair. Pairs larger than
        ``tile_size`` are fused one image at a time in tiles, so memory stays bounded.

        Args:
            irs: ``N`` IR images, each ``(H, W)``, ``(H, W, 1)`` or ``(H, W, 3)`` float in
                ``[0, 1]`` (a list, or an array ``(N, H, W[, C])``).
            viss: ``N`` visible images, each ``(H, W)`` grey or ``(H, W, 3)`` RGB float in
                ``[0, 1]``; all ``2N`` images of one size.
            grey: return only the fused luminances.

        Returns:
            ``N`` float32 arrays in ``[0, 1]``, each ``(H, W, 3)`` or ``(H, W)`` as in :meth:`fuse`.

        Raises:
            ValueError: different numbers of IR and visible images, images of different sizes,
                or arrays that are not floating point.

        Example:
            >>> frames = [np.random.rand(480, 640).astype(np.float32) for _ in range(4)]
            >>> colour = [np.random.rand(480, 640, 3).astype(np.float32) for _ in range(4)]
            >>> [fused.shape for fused in Fuser().fuse_batch(frames, colour)][:2]
            [(480, 640, 3), (480, 640, 3)]
        """
        if len(irs) != len(viss):
            raise ValueError(f"{len(irs)} IR images but {len(viss)} visible images; give one visible image per IR image")
        for ir, vis in zip(irs, viss):
            for name, image in (("ir", ir), ("vis", vis)):
                if not np.issubdtype(np.asarray(image).dtype, np.floating):
                    raise ValueError(f"{name} must be a float array in [0, 1], got {np.asarray(image).dtype}; use ivfuse.io.read_image or divide by 255")
                if np.ndim(image) not in (2, 3) or np.ndim(image) == 3 and np.shape(image)[2] not in (1, 3):
                    raise ValueError(f"{name} has shape {np.shape(image)}; expected (H, W), (H, W, 1) or (H, W, 3): drop an alpha channel first")
            if ir.shape[:2] != vis.shape[:2]:
                raise ValueError(f"IR is {ir.shape[1]}x{ir.shape[0]} but visible is {vis.shape[1]}x{vis.shape[0]}; pairs must be registered and of equal size")
            if ir.shape[:2] != irs[0].shape[:2]:
                raise ValueError(f"a batch holds pairs of one size: {ir.shape[1]}x{ir.shape[0]} after {irs[0].shape[1]}x{irs[0].shape[0]}")
        if self._is_tiled(irs[0].shape):
            return [self._fuse_large(ir, vis, grey) for ir, vis in zip(irs, viss)]
        with torch.inference_mode(), self._torch_glue_threads():
            ir_grey = torch.cat([infrared_to_grey(to_tensor(ir).to(self.device)) for ir in irs])
            lumas, chromas = zip(*(split_luma(to_tensor(vis).to(self.device)) for vis in viss))
            fused_y = self.fuse_luma(ir_grey, torch.cat(lumas))
            fused = [merge_luma(fused_y[index : index + 1], None if grey else cbcr) for index, cbcr in enumerate(chromas)]
        arrays = [image[0].permute(1, 2, 0).cpu().numpy() for image in fused]
        return [array[..., 0] if array.shape[2] == 1 else array for array in arrays]

    def fuse_luma(self, ir: torch.Tensor, vis_y: torch.Tensor) -> torch.Tensor:
        """Fused luminance ``(B, 1, H, W)`` from IR and visible Y, both ``(B, 1, H, W)`` in ``[0, 1]``."""
        if self.baseline is not None:
            fused = [self.baseline(ir[index, 0].cpu().numpy(), vis_y[index, 0].cpu().numpy()) for index in range(len(ir))]
            return torch.from_numpy(np.asarray(fused, dtype=np.float32))[:, None].to(ir.device)
        height, width = ir.shape[-2:]
        if not self._is_tiled((height, width)):
            return self._run_network(ir, vis_y)
        # One image at a time: memory stays that of one tile, whatever the batch size.
        fused = [self._run_tiled(ir[index : index + 1], vis_y[index : index + 1], ir.new_empty(height, width)) for index in range(len(ir))]
        return torch.stack(fused)[:, None]

    def _is_tiled(self, shape: tuple[int, ...]) -> bool:
        return self.baseline is None and max(shape[:2]) > self.tile_size

    def _torch_glue_threads(self):
        """With the onnxruntime backend, run PyTorch's share (colour conversion, padding, blending)
        on one thread: PyTorch's OpenMP workers otherwise busy-wait after each of these small ops
        and take the CPUs from ONNX Runtime's threads (docs/onnx.md, Speed)."""
        return _one_torch_thread() if self.backend == "onnxruntime" else contextlib.nullcontext()

    def _fuse_large(self, ir: np.ndarray, vis: np.ndarray, grey: bool, out: np.ndarray | None = None) -> np.ndarray:
        """:meth:`fuse` for a pair larger than a tile, in bounded memory: grey and luma are taken
        per tile and colour is put back per band of rows, so no full-size converted copy exists;
        memory is the inputs, the output, one fused luminance and one tile
        (``benchmarks/peak_memory.py``). ``out`` may be ``vis`` itself, saving the output's copy."""
        height, width = ir.shape[:2]
        with torch.inference_mode(), self._torch_glue_threads():
            ir_t, vis_t = to_tensor(ir).to(self.device), to_tensor(vis).to(self.device)
            colour = not grey and vis_t.shape[1] == 3 and not has_equal_channels(vis_t)
            fused_y = self._run_tiled(ir_t, vis_t, torch.empty(height, width, device=self.device))
            del ir_t
            shape = (height, width, 3) if colour else (height, width)
            if out is None or out.shape != shape or out.dtype != np.float32:
                out = np.empty(shape, np.float32)
            rows = max(1, (1 << 20) // width)
            for top in range(0, height, rows):
                band = slice(top, top + rows)
                # Chroma of this band is taken before the band of ``out`` (possibly ``vis``) is written.
                cbcr = kornia.color.rgb_to_ycbcr(vis_t[..., band, :])[:, 1:] if colour else None
                merged = merge_luma(fused_y[None, None, band], cbcr)[0].permute(1, 2, 0)
                out[band] = (merged if colour else merged[..., 0]).cpu().numpy()
        return out

    def _run_network(self, ir: torch.Tensor, vis_y: torch.Tensor) -> torch.Tensor:
        height, width = ir.shape[-2:]
        ir, vis_y = (pad_to_multiple(x, self.network.size_multiple).contiguous(memory_format=self.memory_format) for x in (ir, vis_y))
        return self.network(ir, vis_y)[..., :height, :width]

    def _run_tiled(self, ir: torch.Tensor, vis: torch.Tensor, total: torch.Tensor) -> torch.Tensor:
        """Fused luminance ``(H, W)`` of one pair ``(1, C, H, W)`` (IR: 1 or 3 channels, visible: grey,
        RGB or already luma), in overlapping tiles accumulated into ``total`` ``(H, W)``."""
        height, width = ir.shape[-2:]
        # The networks set the fused level from the whole input (the CDIIM's attention is global
        # and the content loss stretches the base layer about the image mean), so a tile fused
        # alone takes its own level. Each tile keeps its fine detail and takes its coarse layer
        # from the whole pair fused at one tile's size (docs/fusion_objective.md, "Shipped").
        sigma = self.tile_size * self.tile_coarse_fraction
        guide = self._coarse_guide(ir, vis, sigma) if sigma else None
        total.zero_()
        rows_weight, cols_weight = ir.new_zeros(height), ir.new_zeros(width)
        for top in window_starts(height, self.tile_size, self.tile_overlap):
            for left in window_starts(width, self.tile_size, self.tile_overlap):
                window = (..., slice(top, top + self.tile_size), slice(left, left + self.tile_size))
                fused = self._run_network(infrared_to_grey(ir[window]), rgb_to_luma(vis[window]))
                tile_height, tile_width = fused.shape[-2:]
                if guide is not None:
                    coarse = _sample_window(guide, top, left, tile_height, tile_width, height, width)
                    fused = fused - gaussian_blur(fused, sigma) + coarse
                fused = fused[0, 0]
                ramp_y = _ramp(tile_height, self.tile_overlap, top > 0, top + tile_height < height, ir.device)
                ramp_x = _ramp(tile_width, self.tile_overlap, left > 0, left + tile_width < width, ir.device)
                total[window[1:]] += fused * ramp_y[:, None] * ramp_x[None, :]
                if left == 0:
                    rows_weight[top : top + tile_height] += ramp_y
                if top == 0:
                    cols_weight[left : left + tile_width] += ramp_x
        # The tiles form a grid of row starts x column starts, so their blend weights sum to a
        # product of a row and a column sum: dividing by both needs no full-size weight image.
        return total.div_(rows_weight[:, None]).div_(cols_weight[None, :])

    def _coarse_guide(self, ir: torch.Tensor, vis: torch.Tensor, sigma: float) -> torch.Tensor:
        """Coarse layer ``(1, 1, h, w)`` of the pair fused whole at a tile's size: Gaussian blur of
        sigma ``sigma`` full-size pixels, on the downscaled fusion."""
        height, width = ir.shape[-2:]
        scale = self.tile_size / max(height, width)
        size = (max(8, round(height * scale)), max(8, round(width * scale)))
        # Area averaging before the colour conversion: no full-size converted copy is made.
        small_ir = infrared_to_grey(F.interpolate(ir, size=size, mode="area"))
        small_vis = rgb_to_luma(F.interpolate(vis, size=size, mode="area"))
        return gaussian_blur(self._run_network(small_ir, small_vis), sigma * scale)


def pad_to_multiple(image: torch.Tensor, multiple: int) -> torch.Tensor:
    """``(B, C, H, W)`` padded at the bottom and right to multiples of ``multiple``, as the
    network needs: reflected, which keeps image statistics at the border, or replicated where the
    pad is not smaller than the side (reflect cannot pad that far). Crop ``[..., :H, :W]`` after.

    Example:
        >>> pad_to_multiple(torch.zeros(1, 1, 5, 9), 8).shape
        torch.Size([1, 1, 8, 16])
    """
    height, width = image.shape[-2:]
    padding = (0, -width % multiple, 0, -height % multiple)
    if not any(padding):
        return image
    return F.pad(image, padding, mode="reflect" if padding[3] < height and padding[1] < width else "replicate")


class _OneTorchThread:
    """A context that runs PyTorch on one thread and restores the thread count afterwards.

    ``torch.set_num_threads`` is process-wide, so concurrent users (the web server's workers)
    share one save and restore: the first to enter saves the count, the last to leave restores
    it. Saving and restoring per user would let an interleaving leave the process on one thread.
    """

    def __init__(self):
        self._lock = threading.Lock()
        self._users = 0
        self._saved = 1

    @contextlib.contextmanager
    def __call__(self):
        with self._lock:
            if self._users == 0:
                self._saved = torch.get_num_threads()
                torch.set_num_threads(1)
            self._users += 1
        try:
            yield
        finally:
            with self._lock:
                self._users -= 1
                if self._users == 0:
                    torch.set_num_threads(self._saved)


_one_torch_thread = _OneTorchThread()


def _sample_window(image: torch.Tensor, top: int, left: int, rows: int, cols: int, height: int, width: int) -> torch.Tensor:
    """Bilinear samples ``(1, C, rows, cols)`` of ``image`` ``(1, C, h, w)``, a downscaled copy of a
    ``height x width`` image, at the full-size pixels of the window starting at ``(top, left)``."""
    device = image.device
    # Pixel centres in grid_sample's [-1, 1] coordinates, the same for any size of ``image``.
    ys = (2 * torch.arange(top, top + rows, device=device) + 1) / height - 1
    xs = (2 * torch.arange(left, left + cols, device=device) + 1) / width - 1
    grid = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1)[None].to(image.dtype)
    return F.grid_sample(image, grid, mode="bilinear", padding_mode="border", align_corners=False)


def _ramp(length: int, overlap: int, fade_in: bool, fade_out: bool, device: torch.device) -> torch.Tensor:
    """Blend weights along one tile axis: linear over ``overlap`` pixels at inner edges, 1 elsewhere."""
    position = torch.arange(length, device=device, dtype=torch.float32) + 0.5
    ramp = torch.ones(length, device=device)
    if overlap:
        if fade_in:
            ramp = torch.minimum(ramp, position / overlap)
        if fade_out:
            ramp = torch.minimum(ramp, (length - position) / overlap)
    return ramp


@dataclass
class FolderReport:
    """Outcome of a folder run (:func:`fuse_folder`, ``ivfuse segment``): what was written and why pairs failed."""

    written: list[Path] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    unmatched: list[Path] = field(default_factory=list)
    ignored: list[Path] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        """True when every pair found was processed (or skipped) and nothing was left unpaired."""
        return not (self.failed or self.unmatched)

    def summary(self, verb: str = "fused") -> str:
        done = len(self.written)
        per_pair = f" ({self.seconds / done:.3f} s/pair)" if done else ""
        return (
            f"{verb} {done} pair(s), skipped {len(self.skipped)}, failed {len(self.failed)}, "
            f"unmatched {len(self.unmatched)} in {self.seconds:.1f} s{per_pair}"
        )


def fuse_pair_files(
    fuser: Fuser, ir_path: Path, vis_path: Path, out_path: Path, *, bits: int = 8, grey: bool = False, bit16: str = "full"
) -> Path:
    """Read a pair of files, fuse, write ``out_path`` atomically.

    Raises:
        ImageReadError: an input is unreadable or the pair's sizes differ (message names the files).
        WriteError: the output cannot be written.
    """
    out_path = Path(out_path)
    # After reading: a missing or broken input is then reported by read_pair, naming the problem.
    ir, vis = read_pair(ir_path, vis_path, bit16=bit16)
    for source in (ir_path, vis_path):
        if out_path.exists() and out_path.samefile(source):
            raise WriteError(f"{out_path}: is an input of this pair; refusing to overwrite it")
    # The visible array is ours alone here, so a large image is fused into it: one image copy less.
    fused = fuser._fuse_large(ir, vis, grey, out=vis) if fuser._is_tiled(ir.shape) else fuser.fuse(ir, vis, grey=grey)
    return write_image(out_path, fused, bits=bits)


def process_folder(
    ir_dir: str | os.PathLike,
    vis_dir: str | os.PathLike,
    process: Callable[[str, Path, Path], Path],
    *,
    skip: Callable[[str], Path | None] | None = None,
    on_error: Callable[[str], None] | None = None,
    progress: Callable | None = None,
) -> FolderReport:
    """Run ``process(stem, ir_path, vis_path) -> written path`` on every pair of two folders.

    A pair that fails (unreadable file, sizes differ, output not writable) is recorded in
    ``report.failed`` with its one-line message and the rest are still processed; outputs
    already written stay. Files without an image extension are skipped (``report.ignored``).

    Args:
        skip: returns the existing output of a pair to skip it, or ``None`` to process it.
        on_error: called with each one-line error message as it happens (the CLI prints them).
        progress: wraps the pair list for a progress display, e.g. ``tqdm``.

    Raises:
        ImageReadError: a folder is missing or holds no pairs at all.
    """
    began = time.perf_counter()
    listing = find_pairs(ir_dir, vis_dir)
    report = FolderReport(unmatched=listing.only_ir + listing.only_vis + listing.ambiguous, ignored=listing.not_images)
    if not listing.pairs:
        raise ImageReadError(f"{ir_dir} and {vis_dir}: no image pairs with matching names")
    for stem, ir_path, vis_path in progress(listing.pairs) if progress else listing.pairs:
        existing = skip(stem) if skip else None
        if existing is not None:
            report.skipped.append(existing)
            continue
        try:
            report.written.append(process(stem, ir_path, vis_path))
        except (ImageReadError, WriteError) as error:
            message = str(error)
        except Exception as error:  # noqa: BLE001 - one pair that trips a bug must not stop the others
            message = f"{ir_path} + {vis_path}: unexpected {type(error).__name__}: {first_line(error)}"
            _log.debug("traceback of the failed pair %s", stem, exc_info=True)
        else:
            continue
        report.failed.append(message)
        if on_error:
            on_error(message)
    report.seconds = time.perf_counter() - began
    return report


def fuse_folder(
    fuser: Fuser,
    ir_dir: str | os.PathLike,
    vis_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    extension: str = ".png",
    bits: int = 8,
    grey: bool = False,
    bit16: str = "full",
    skip_existing: bool = False,
    on_error: Callable[[str], None] | None = None,
    progress: Callable | None = None,
) -> FolderReport:
    """Fuse every pair of two folders (matched by file stem) into ``out_dir/<stem><extension>``.

    Failures are per pair, as in :func:`process_folder`; ``skip_existing`` skips pairs whose
    output exists, which resumes an interrupted run (outputs are written atomically, so an
    existing file is complete).

    Raises:
        ImageReadError: a folder is missing or holds no pairs at all.

    Example:
        >>> report = fuse_folder(Fuser(), "examples/ir", "examples/vi", "fused")
        >>> report.summary()  # doctest: +SKIP
        'fused 3 pair(s), skipped 0, failed 0, unmatched 0 in 0.9 s (0.300 s/pair)'
    """
    out_dir = Path(out_dir)

    def existing_output(stem: str) -> Path | None:
        path = out_dir / f"{stem}{extension}"
        return path if skip_existing and path.exists() else None

    def fuse_one(stem: str, ir_path: Path, vis_path: Path) -> Path:
        return fuse_pair_files(fuser, ir_path, vis_path, out_dir / f"{stem}{extension}", bits=bits, grey=grey, bit16=bit16)

    return process_folder(ir_dir, vis_dir, fuse_one, skip=existing_output, on_error=on_error, progress=progress)
