"""The Python API: :class:`Fuser` fuses arrays, :func:`fuse_folder` fuses files and folders.

A :class:`Fuser` wraps a fusion method (the CDIIM network with its weights, or a classical
baseline) with everything around it: IR to one channel, visible to luminance + chrominance,
reflect-padding to the network's size multiple, overlapping tiles for large images, and the
visible colour put back on the fused luminance. Outputs have exactly the input size and are never
stretched.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .color import infrared_to_grey, merge_luma, split_luma, to_tensor
from .io import ImageReadError, WriteError, find_pairs, read_pair, write_image
from .runtime import resolve_device
from .serialization import load_network, shipped_weights

NETWORK_METHOD = "cdiim"


class Fuser:
    """Fuse infrared and visible images with the CDIIM network or a classical baseline.

    Args:
        weights: ``.safetensors`` file of a trained fusion network; ``None`` uses the shipped one.
        device: ``"cpu"`` or ``"cuda"`` (``"cuda:1"``, ...).
        method: ``"cdiim"`` (the network) or a name from :data:`ivfuse.baselines.BASELINES`.
        tile_size: images with a side longer than this are fused in overlapping tiles of this
            size, so memory stays bounded (about 1 GB for 4K at the default); a multiple of 8.
        tile_overlap: overlap between tiles, blended with linear ramps.
        channels_last: run the network in channels-last memory format; ``None`` (default) uses it
            on the CPU, where ``benchmarks/fusion_speed.py`` measures it faster (README, Speed).

    Example:
        >>> fuser = Fuser()
        >>> ir = np.random.rand(480, 640).astype(np.float32)
        >>> vis = np.random.rand(480, 640, 3).astype(np.float32)
        >>> fuser.fuse(ir, vis).shape
        (480, 640, 3)
    """

    def __init__(
        self,
        weights: str | os.PathLike | None = None,
        *,
        device: str = "cpu",
        method: str = NETWORK_METHOD,
        tile_size: int = 1024,
        tile_overlap: int = 64,
        channels_last: bool | None = None,
    ):
        if tile_size % 8 or tile_size < 64 or not 0 <= tile_overlap < tile_size // 2:
            raise ValueError("tile_size must be a multiple of 8 (>= 64) and tile_overlap in [0, tile_size / 2)")
        self.device = resolve_device(device)
        self.method = method
        self.tile_size, self.tile_overlap = tile_size, tile_overlap
        if channels_last is None:
            channels_last = self.device.type == "cpu"
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        if method == NETWORK_METHOD:
            self.weights = Path(weights) if weights is not None else shipped_weights("fusion")
            self.network = load_network(self.weights, expected="FusionNet").to(self.device, memory_format=self.memory_format)
            self.baseline = None
        else:
            from .baselines import BASELINES

            if method not in BASELINES:
                raise ValueError(f"unknown method {method!r}; choose {NETWORK_METHOD} or one of {', '.join(BASELINES)}")
            if weights is not None:
                raise ValueError(f"{weights}: weights are for the {NETWORK_METHOD} network; the {method} baseline takes none")
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
        for name, image in (("ir", ir), ("vis", vis)):
            if not np.issubdtype(np.asarray(image).dtype, np.floating):
                raise ValueError(f"{name} must be a float array in [0, 1], got {np.asarray(image).dtype}; use ivfuse.io.read_image or divide by 255")
        if ir.shape[:2] != vis.shape[:2]:
            raise ValueError(f"IR is {ir.shape[1]}x{ir.shape[0]} but visible is {vis.shape[1]}x{vis.shape[0]}; pairs must be registered and of equal size")
        with torch.inference_mode():
            ir_grey = infrared_to_grey(to_tensor(ir).to(self.device))
            vis_y, cbcr = split_luma(to_tensor(vis).to(self.device))
            fused = merge_luma(self.fuse_luma(ir_grey, vis_y), None if grey else cbcr)
        fused = fused[0].permute(1, 2, 0).cpu().numpy()
        return fused[..., 0] if fused.shape[2] == 1 else fused

    def fuse_luma(self, ir: torch.Tensor, vis_y: torch.Tensor) -> torch.Tensor:
        """Fused luminance ``(1, 1, H, W)`` from IR and visible Y, both ``(1, 1, H, W)`` in ``[0, 1]``."""
        if self.baseline is not None:
            fused = self.baseline(ir[0, 0].cpu().numpy(), vis_y[0, 0].cpu().numpy())
            return torch.from_numpy(np.asarray(fused, dtype=np.float32))[None, None].to(ir.device)
        height, width = ir.shape[-2:]
        if max(height, width) <= self.tile_size:
            return self._run_network(ir, vis_y)
        return self._run_tiled(ir, vis_y)

    def _run_network(self, ir: torch.Tensor, vis_y: torch.Tensor) -> torch.Tensor:
        height, width = ir.shape[-2:]
        multiple = self.network.size_multiple
        padding = (0, -width % multiple, 0, -height % multiple)
        if any(padding):
            # Reflect keeps image statistics at the border; it needs the pad to be smaller than the side.
            mode = "reflect" if padding[3] < height and padding[1] < width else "replicate"
            ir, vis_y = F.pad(ir, padding, mode=mode), F.pad(vis_y, padding, mode=mode)
        ir, vis_y = ir.contiguous(memory_format=self.memory_format), vis_y.contiguous(memory_format=self.memory_format)
        return self.network(ir, vis_y)[..., :height, :width]

    def _run_tiled(self, ir: torch.Tensor, vis_y: torch.Tensor) -> torch.Tensor:
        height, width = ir.shape[-2:]
        total = torch.zeros(1, 1, height, width, device=ir.device)
        weight_sum = torch.zeros_like(total)
        for top in _tile_starts(height, self.tile_size, self.tile_overlap):
            for left in _tile_starts(width, self.tile_size, self.tile_overlap):
                window = (..., slice(top, top + self.tile_size), slice(left, left + self.tile_size))
                fused = self._run_network(ir[window], vis_y[window])
                tile_height, tile_width = fused.shape[-2:]
                ramp_y = _ramp(tile_height, self.tile_overlap, top > 0, top + tile_height < height, ir.device)
                ramp_x = _ramp(tile_width, self.tile_overlap, left > 0, left + tile_width < width, ir.device)
                blend = ramp_y[:, None] * ramp_x[None, :]
                total[window] += fused * blend
                weight_sum[window] += blend
        return total / weight_sum


def _tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    if length <= tile:
        return [0]
    starts = list(range(0, length - tile, tile - overlap))
    return starts + [length - tile]


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
    ir, vis = read_pair(ir_path, vis_path, bit16=bit16)
    return write_image(out_path, fuser.fuse(ir, vis, grey=grey), bits=bits)


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
            report.failed.append(str(error))
            if on_error:
                on_error(str(error))
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
