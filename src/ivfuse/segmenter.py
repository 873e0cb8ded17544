"""Segmentation of fused images: :class:`Segmenter` fuses a pair, then labels every pixel.

Labels are the MSRS class ids (:data:`ivfuse.classes.CLASS_NAMES`); :func:`colorize`,
:func:`overlay` and :func:`legend` draw them in the official MSRS palette.
:func:`segment_pair_files` writes what ``ivfuse segment`` promises per pair: class ids, an
overlay, and on request per-class probability maps and binary masks.
"""

from __future__ import annotations

import contextlib
import math
import numbers
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from PIL import Image, ImageDraw, ImageFont

from .classes import CLASS_NAMES, NUM_CLASSES, PALETTE
from .fuser import Fuser, FolderReport, process_folder
from .io import read_pair, write_image
from .models import class_probabilities
from .models.segmentation import DEFAULT_CLASS_GAINS, DEFAULT_FLIP, DEFAULT_SCALES, MIN_WINDOW
from .onnx_backend import load_backend_network
from .serialization import shipped_weights


class Segmenter:
    """Fuse an IR/visible pair with the fusion network, segment the fused colour image.

    Args:
        fusion_weights: fusion ``.safetensors``; ``None`` uses the shipped one.
        segmentation_weights: segmentation ``.safetensors``; ``None`` uses the shipped one.
        device: ``"cpu"`` or ``"cuda"`` (``"cuda:1"``, ...).
        backend: ``"torch"`` or ``"onnxruntime"`` for both networks (as for :class:`Fuser`); with
            onnxruntime either weights file may also be an ``.onnx`` file from ``ivfuse export``.
        flip, scales: test-time augmentation (:func:`ivfuse.models.class_probabilities`):
            average the predictions of the mirrored image and of copies resized by ``scales``;
            each copy costs one more run of the segmentation network at its size. The defaults
            (``DEFAULT_FLIP``, ``DEFAULT_SCALES`` of :mod:`ivfuse.models.segmentation`) cost about
            3 times one plain run; ``flip=False, scales=(1.0,)`` is the fastest.
        window: ``None`` segments whole images (the shipped network normalises with statistics
            frozen at training, so a whole frame looks to it as its training crops did); a
            number segments in overlapping windows of this many pixels a side, which networks
            with GroupNorm (``[segmentation] norm = "group"``) need at their training crop size,
            e.g. 192 (about 3x the work of a whole 640x480 frame; docs/segmentation.md,
            "Windowed inference").
        class_gains: class name to a gain > 0 multiplying its probability before the argmax of
            :meth:`segment` (:func:`gained_labels`); classes not named keep 1. The default is
            ``DEFAULT_CLASS_GAINS`` of :mod:`ivfuse.models.segmentation`; ``{}`` is the plain argmax.
            :meth:`probabilities` is unaffected.

    Raises:
        WeightsError: a weights file is missing, corrupt or of another network (one line naming it).
        ValueError: ``window`` below the minimum, or an unknown class or bad gain in ``class_gains``.

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
        backend: str = "torch",
        flip: bool = DEFAULT_FLIP,
        scales: Sequence[float] = DEFAULT_SCALES,
        window: int | None = None,
        class_gains: Mapping[str, float] = DEFAULT_CLASS_GAINS,
    ):
        if window is not None and window < MIN_WINDOW:
            raise ValueError(f"window must be at least {MIN_WINDOW} pixels (or None: whole images), not {window}")
        self.flip, self.scales, self.window = flip, tuple(scales), window
        self.gains = class_gain_vector(class_gains)
        path = Path(segmentation_weights) if segmentation_weights is not None else shipped_weights("segmentation")
        # The shipped segmentation network was trained on the shipped fusion network's images.
        self.fuser = Fuser(fusion_weights, device=device, backend=backend)
        self.network = load_backend_network(path, "SegmentationNet", backend=backend, device=self.fuser.device)

    def segment(self, ir: np.ndarray, vis: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Class ids of the fused image of one pair.

        Args:
            ir: ``(H, W)``, ``(H, W, 1)`` or ``(H, W, 3)`` float in ``[0, 1]``.
            vis: ``(H, W)`` grey or ``(H, W, 3)`` RGB float in ``[0, 1]``, same size.

        Returns:
            ``(labels, fused)``: ``(H, W)`` uint8 class ids and the fused image ``(H, W, 3)``
            float32 in ``[0, 1]`` (grey repeated in three channels for a grey visible image).
        """
        probabilities, fused = self.probabilities(ir, vis)
        return gained_labels(probabilities, self.gains), fused

    def probabilities(self, ir: np.ndarray, vis: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Class probabilities of the fused image of one pair.

        Args:
            ir, vis: as for :meth:`segment`.

        Returns:
            ``(probabilities, fused)``: ``(C, H, W)`` float32 softmax over the ``C`` classes
            (summing to 1 per pixel) and the fused image ``(H, W, 3)`` float32 in ``[0, 1]``.

        Example:
            >>> probabilities, _ = Segmenter().probabilities(np.random.rand(96, 128), np.random.rand(96, 128, 3))
            >>> probabilities.shape
            (9, 96, 128)
        """
        fused = self.fuser.fuse(ir, vis)
        if fused.ndim == 2:
            fused = np.repeat(fused[..., None], 3, axis=2)
        with torch.inference_mode():
            image = torch.from_numpy(np.ascontiguousarray(fused)).permute(2, 0, 1)[None].to(self.fuser.device)
            probabilities = class_probabilities(self.network, image, flip=self.flip, scales=self.scales, window=self.window)[0].float().cpu().numpy()
        return probabilities, fused


def class_gain_vector(gains: Mapping[str, float]) -> np.ndarray:
    """One gain per class, in class-id order, from gains by class name; 1 for every class not named.

    Args:
        gains: class name of :data:`ivfuse.classes.CLASS_NAMES` (``_`` may stand for a space, as in
            the folder names of ``ivfuse segment --masks``) to a finite gain above 0.

    Returns:
        ``(NUM_CLASSES,)`` float32.

    Raises:
        ValueError: an unknown class name or a gain that is not a finite number above 0.

    Example:
        >>> class_gain_vector({"car": 1.5, "color_cone": 2})
        array([1. , 1.5, 1. , 1. , 1. , 1. , 1. , 2. , 1. ], dtype=float32)
    """
    vector = np.ones(NUM_CLASSES, np.float32)
    for name, gain in gains.items():
        spaced = name.replace("_", " ")
        if spaced not in CLASS_NAMES:
            raise ValueError(f"class gain: unknown class {name!r} (classes: {', '.join(CLASS_NAMES)})")
        if not (isinstance(gain, numbers.Real) and math.isfinite(gain) and gain > 0):
            raise ValueError(f"class gain of {name!r} must be a finite number above 0, not {gain!r}")
        vector[CLASS_NAMES.index(spaced)] = gain
    return vector


def gained_labels(probabilities: np.ndarray, gains: np.ndarray) -> np.ndarray:
    """Class ids: the argmax over classes of each class's probability times its gain.

    A gain above 1 raises a class's prior: the class takes the pixels where it was nearly the
    most probable, trading its precision for recall, without retraining (docs/segmentation.md,
    "Class gains at inference"). All gains 1 is the plain argmax.

    Args:
        probabilities: ``(C, H, W)`` float, e.g. from :meth:`Segmenter.probabilities`.
        gains: ``(C,)`` float above 0 (:func:`class_gain_vector`).

    Returns:
        ``(H, W)`` uint8 class ids.

    Example:
        >>> p = np.array([0.5, 0.4, 0.1], np.float32)[:, None, None]
        >>> gained_labels(p, np.ones(3)).item(), gained_labels(p, np.array([1, 1.5, 1])).item()
        (0, 1)
    """
    return (probabilities * gains.reshape(-1, 1, 1)).argmax(0).astype(np.uint8)


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
    """Palette colours blended over an image; class 0 (unlabelled) stays unpainted.

    Args:
        image: ``(H, W, 3)`` float in ``[0, 1]``.
        labels: ``(H, W)`` integer class ids.
        opacity: weight of the palette colour on painted pixels, in ``[0, 1]``.

    Returns:
        ``(H, W, 3)`` float32 in ``[0, 1]``.

    Example:
        >>> overlay(np.zeros((2, 2, 3)), np.array([[0, 1], [0, 0]]))[0, 1] * 255
        array([32.,  0., 64.], dtype=float32)
    """
    painted = (labels > 0)[..., None] * opacity
    return (image * (1 - painted) + colorize(labels) * painted).astype(np.float32)


def legend(class_ids: Sequence[int] | None = None, *, row_height: int = 22) -> np.ndarray:
    """A key to the palette: one row per class, a colour swatch and the class name.

    Args:
        class_ids: classes to list, in order; ``None`` lists every class.
        row_height: pixels per row (the text size follows it).

    Returns:
        RGB ``(row_height * len(class_ids) + 8, W, 3)`` float32 in ``[0, 1]``, dark background.

    Example:
        >>> legend([1, 2]).shape[0]
        52
    """
    ids = list(range(len(CLASS_NAMES))) if class_ids is None else list(class_ids)
    font = ImageFont.load_default(size=round(row_height * 0.7))
    width = row_height * 2 + max(round(font.getlength(CLASS_NAMES[i])) for i in ids) + 12
    canvas = Image.new("RGB", (width, row_height * len(ids) + 8), (24, 24, 24))
    draw = ImageDraw.Draw(canvas)
    for row, class_id in enumerate(ids):
        top = 4 + row * row_height
        # Class 0 is black in the palette: outline its swatch so it stays visible on the dark key.
        draw.rectangle((6, top + 3, 6 + row_height - 6, top + row_height - 3), fill=tuple(int(v) for v in PALETTE[class_id]),
                       outline=(160, 160, 160))
        draw.text((row_height + 8, top + row_height / 2), CLASS_NAMES[class_id], fill=(235, 235, 235), font=font, anchor="lm")
    return np.asarray(canvas, dtype=np.float32) / 255


def segment_pair_files(
    segmenter: Segmenter, ir_path: Path, vis_path: Path, out_dir: Path, stem: str, *, probabilities: bool = False, masks: bool = False
) -> Path:
    """Segment one pair of files and write its outputs under ``out_dir``, each atomically:

    * ``overlays/<stem>.png``: palette colours over the fused image (class 0 unpainted);
    * with ``probabilities``: ``probabilities/<class>/<stem>.png``, the class probability as an
      8-bit grey image (``round(255 p)``), one folder per class;
    * with ``masks``: ``masks/<class>/<stem>.png``, 255 where the pixel is labelled that class,
      else 0, one folder per class (spaces in class names become ``_``);
    * ``labels/<stem>.png``: class ids, written last, so an existing label file means the
      pair's outputs are complete (what ``--skip-existing`` relies on).

    If any write fails (or the run is interrupted), the pair's output files are removed, those of
    an earlier run included: a pair has all its outputs or none.

    Returns:
        The label file's path.

    Raises:
        ImageReadError: an input is unreadable or the pair's sizes differ (message names the files).
        WriteError: an output cannot be written.
    """
    read = read_pair(ir_path, vis_path)
    class_probabilities, fused = segmenter.probabilities(*read)
    labels = gained_labels(class_probabilities, segmenter.gains)
    outputs = [(out_dir / "overlays" / f"{stem}.png", overlay(fused, labels))]
    for class_id, name in enumerate(CLASS_NAMES):
        folder = name.replace(" ", "_")
        if probabilities:
            outputs.append((out_dir / "probabilities" / folder / f"{stem}.png", class_probabilities[class_id]))
        if masks:
            outputs.append((out_dir / "masks" / folder / f"{stem}.png", (labels == class_id).astype(np.float32)))
    outputs.append((out_dir / "labels" / f"{stem}.png", labels / 255.0))
    try:
        for path, image in outputs:
            write_image(path, image)
    except BaseException:
        # Also on Ctrl+C, and also a label left by an earlier run: a pair with a label but some
        # outputs missing or from another run would look finished to a resumed run.
        for path, _ in outputs:
            with contextlib.suppress(OSError):
                path.unlink(missing_ok=True)
        raise
    return outputs[-1][0]


def segment_folder(
    segmenter: Segmenter,
    ir_dir: str | os.PathLike,
    vis_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    probabilities: bool = False,
    masks: bool = False,
    skip_existing: bool = False,
    on_error: Callable[[str], None] | None = None,
    progress: Callable | None = None,
) -> FolderReport:
    """Segment every pair of two folders (matched by file stem) with :func:`segment_pair_files`.

    Writes ``out_dir/legend.png`` first; failures are per pair, as in
    :func:`ivfuse.fuser.process_folder`. ``skip_existing`` skips pairs whose
    ``labels/<stem>.png`` exists: the label is a pair's last output, so it marks a finished pair
    and an interrupted run resumes where it stopped.

    Raises:
        ImageReadError: a folder is missing or holds no pairs at all.
        WriteError: ``legend.png`` cannot be written.

    Example:
        >>> segment_folder(Segmenter(), "examples/ir", "examples/vi", "seg").summary("segmented")  # doctest: +SKIP
        'segmented 3 pair(s), skipped 0, failed 0, unmatched 0 in 4.1 s (1.367 s/pair)'
    """
    out_dir = Path(out_dir)
    write_image(out_dir / "legend.png", legend())

    def existing_label(stem: str) -> Path | None:
        label = out_dir / "labels" / f"{stem}.png"
        return label if skip_existing and label.exists() else None

    def segment_one(stem: str, ir_path: Path, vis_path: Path) -> Path:
        return segment_pair_files(segmenter, ir_path, vis_path, out_dir, stem, probabilities=probabilities, masks=masks)

    return process_folder(ir_dir, vis_dir, segment_one, skip=existing_label, on_error=on_error, progress=progress)
