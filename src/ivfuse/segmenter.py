"""Segmentation of fused images: :class:`Segmenter` fuses a pair, then labels every pixel.

Labels are the MSRS class ids (:data:`ivfuse.classes.CLASS_NAMES`); :func:`colorize` and
:func:`overlay` draw them in the official MSRS palette.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from .classes import PALETTE
from .fuser import Fuser
from .io import WriteError, read_pair, write_image
from .serialization import load_network, shipped_weights


class Segmenter:
    """Fuse an IR/visible pair with the fusion network, segment the fused colour image.

    Args:
        fusion_weights: fusion ``.safetensors``; ``None`` uses the shipped one.
        segmentation_weights: segmentation ``.safetensors``; ``None`` uses the shipped one.
        device: ``"cpu"`` or ``"cuda"`` (``"cuda:1"``, ...).

    Raises:
        WeightsError: a weights file is missing, corrupt or of another network (one line naming it).

    Example:
        >>> segmenter = Segmenter()
        >>> labels, fused = segmenter.segment(np.random.rand(480, 640), np.random.rand(480, 640, 3))
        >>> labels.shape, labels.dtype, fused.shape
        ((480, 640), dtype('uint8'), (480, 640, 3))
    """

    def __init__(
        self,
        fusion_weights: str | os.PathLike | None = None,
        segmentation_weights: str | os.PathLike | None = None,
        *,
        device: str = "cpu",
    ):
        path = Path(segmentation_weights) if segmentation_weights is not None else shipped_weights("segmentation")
        self.network = load_network(path, expected="SegmentationNet")
        # The shipped segmentation network was trained on the shipped fusion network's images.
        self.fuser = Fuser(fusion_weights if fusion_weights is not None else shipped_weights("fusion"), device=device)
        self.network.to(self.fuser.device)

    def segment(self, ir: np.ndarray, vis: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Class ids of the fused image of one pair.

        Args:
            ir: ``(H, W)``, ``(H, W, 1)`` or ``(H, W, 3)`` float in ``[0, 1]``.
            vis: ``(H, W)`` grey or ``(H, W, 3)`` RGB float in ``[0, 1]``, same size.

        Returns:
            ``(labels, fused)``: ``(H, W)`` uint8 class ids and the fused image ``(H, W, 3)``
            float32 in ``[0, 1]`` (grey repeated in three channels for a grey visible image).
        """
        fused = self.fuser.fuse(ir, vis)
        if fused.ndim == 2:
            fused = np.repeat(fused[..., None], 3, axis=2)
        with torch.inference_mode():
            image = torch.from_numpy(np.ascontiguousarray(fused)).permute(2, 0, 1)[None].to(self.fuser.device)
            labels = self.network(image).argmax(1)[0].to(torch.uint8).cpu().numpy()
        return labels, fused


def colorize(labels: np.ndarray) -> np.ndarray:
    """Class ids ``(H, W)`` -> RGB ``(H, W, 3)`` float in ``[0, 1]`` in the MSRS palette.

    Ids outside the classes (e.g. the ignore value 255 of a label file) are white.

    Example:
        >>> colorize(np.array([[0, 1]], np.uint8))[0, 1] * 255
        array([ 64.,   0., 128.], dtype=float32)
    """
    labels = np.asarray(labels)
    rgb = np.full(labels.shape + (3,), 255, dtype=np.uint8)
    known = (labels >= 0) & (labels < len(PALETTE))
    rgb[known] = PALETTE[labels[known]]
    return rgb.astype(np.float32) / 255


def overlay(image: np.ndarray, labels: np.ndarray, opacity: float = 0.5) -> np.ndarray:
    """Palette colours blended over ``image`` ``(H, W, 3)`` in ``[0, 1]``; class 0 stays unpainted."""
    painted = (labels > 0)[..., None] * opacity
    return (image * (1 - painted) + colorize(labels) * painted).astype(np.float32)


def segment_pair_files(segmenter: Segmenter, ir_path: Path, vis_path: Path, out_dir: Path, stem: str) -> Path:
    """Segment one pair of files; write ``out_dir/labels/<stem>.png`` (class ids) and
    ``out_dir/overlays/<stem>.png`` (palette over the fused image), both atomically.

    Returns:
        The label file's path.

    Raises:
        ImageReadError: an input is unreadable or the pair's sizes differ (message names the files).
        WriteError: an output cannot be written.
    """
    labels, fused = segmenter.segment(*read_pair(ir_path, vis_path))
    label_path = write_image(out_dir / "labels" / f"{stem}.png", labels / 255.0)
    try:
        write_image(out_dir / "overlays" / f"{stem}.png", overlay(fused, labels))
    except WriteError:
        # A failed pair leaves no output: its label without the overlay would look like a finished pair.
        label_path.unlink(missing_ok=True)
        raise
    return label_path
