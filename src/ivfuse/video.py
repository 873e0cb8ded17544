"""Video fusion: frame sources (video files, image-sequence folders), pairing by index, batched
fusion, H.264 encoding.

An IR and a visible stream are paired frame by frame, by index: the n-th IR frame with the n-th
visible frame. Streams that cannot be paired that way are refused before anything is written,
with a one-line :class:`VideoError` naming the file and the problem: different frame sizes
(never resized), different frame counts (``max_frames`` fuses a common prefix), different frame
rates (``fps`` overrides). A stream that turns out shorter, or corrupt, while decoding stops the
job the same way. The output is written to a temporary file beside the target and renamed only
when complete (:func:`ivfuse.io.atomic_write`), so a failed or killed job never leaves a partial
video and an existing file of that name stays as it was.

PyAV (the ``video`` extra, ``pip install "ivfuse[video]"``) decodes and encodes; everything
else works on the float32 ``[0, 1]`` arrays of :mod:`ivfuse.io`.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from .fuser import Fuser
from .io import IMAGE_EXTENSIONS, ImageReadError, atomic_write, first_line, read_image
from .segmenter import Segmenter, overlay

# H.264 in these containers plays nearly everywhere; the value is FFmpeg's muxer name.
CONTAINERS = {".mp4": "mp4", ".mov": "mov", ".mkv": "matroska"}
DEFAULT_FPS = Fraction(25)
# x264's speed/size trade-offs; veryfast encodes 640x480 several times faster than x264's default
# (medium) at a similar size for the same crf (benchmarks/video_speed.py, docs/video.md).
X264_PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow")
# Tags for what the encoder is given: BT.601 limited range, as ivfuse's YCbCr is BT.601
# (FFmpeg's numbers: AVCOL_SPC_SMPTE170M, AVCOL_PRI_SMPTE170M, AVCOL_TRC_SMPTE170M, AVCOL_RANGE_MPEG).
_BT601, _LIMITED_RANGE = 6, 1


class VideoError(ImageReadError):
    """A video input cannot be used, or two streams cannot be paired; the message names the file."""


def require_av():
    """The ``av`` module (PyAV), or a :class:`VideoError` saying how to install it."""
    try:
        import av
    except ImportError:
        raise VideoError('video needs PyAV, which is not installed: pip install "ivfuse[video]"') from None
    return av


def _reason(error: Exception) -> str:
    # FFmpeg errors' str() carries errno and file name; strerror is the readable part.
    return getattr(error, "strerror", None) or first_line(error)


def _check_encoder(path: Path, preset: str) -> str:
    """The muxer for ``path``; refuses an unknown suffix or preset before any work is done."""
    if preset not in X264_PRESETS:
        raise ValueError(f"preset must be one of {', '.join(X264_PRESETS)}, got {preset!r}")
    return container_format(path)


def container_format(path: str | os.PathLike) -> str:
    """FFmpeg's muxer name for an output video path, by suffix (:data:`CONTAINERS`).

    Raises:
        VideoError: any other suffix.

    Example:
        >>> container_format("fused.mkv")
        'matroska'
    """
    path = Path(path)
    if path.suffix.lower() not in CONTAINERS:
        raise VideoError(f"{path}: unsupported video format {path.suffix or '(none)'}; use one of {', '.join(CONTAINERS)}")
    return CONTAINERS[path.suffix.lower()]


class VideoFile:
    """The frames of a video file's first video stream, decoded with PyAV.

    Iterating yields float32 frames in ``[0, 1]``: ``(H, W)`` luma if ``grey``, else
    ``(H, W, 3)`` RGB (full range, whatever range the file uses).

    Args:
        path: any file FFmpeg reads (MP4, MKV, AVI, ...).
        grey: decode the luma only (for infrared streams; false colour becomes its luma).

    Raises:
        VideoError: missing file, not a video container, or no video stream in it.

    Example:
        >>> with VideoFile("ir.mp4", grey=True) as frames:
        ...     frames.width, frames.height, frames.count, frames.rate
        (640, 480, 10, Fraction(25, 1))
    """

    def __init__(self, path: str | os.PathLike, *, grey: bool = False):
        av = require_av()
        self.path, self._format = Path(path), "gray" if grey else "rgb24"
        if not self.path.is_file():
            raise VideoError(f"{self.path}: no such file")
        try:
            self._container = av.open(str(self.path))
        except (av.FFmpegError, OSError, UnicodeDecodeError) as error:
            raise VideoError(f"{self.path}: cannot open video ({_reason(error)})") from None
        if not self._container.streams.video:
            self._container.close()
            raise VideoError(f"{self.path}: no video stream (a file with only audio, subtitles or data)")
        self._stream = self._container.streams.video[0]
        self.width, self.height = self._stream.codec_context.width, self._stream.codec_context.height
        # The container's frame count and rate are declarations: 0 or None where it has none.
        self.count: int | None = self._stream.frames or None
        self.rate: Fraction | None = self._stream.average_rate or self._stream.guessed_rate or None
        self._av = av

    def __iter__(self) -> Iterator[np.ndarray]:
        decoded = 0
        try:
            for frame in self._container.decode(self._stream):
                if (frame.width, frame.height) != (self.width, self.height):
                    raise VideoError(f"{self.path}: frame {decoded + 1} is {frame.width}x{frame.height}, the stream is {self.width}x{self.height}")
                yield frame.to_ndarray(format=self._format).astype(np.float32) / 255.0
                decoded += 1
        except self._av.FFmpegError as error:
            raise VideoError(f"{self.path}: corrupt video data after frame {decoded} ({_reason(error)})") from None

    def close(self) -> None:
        self._container.close()

    def __enter__(self) -> VideoFile:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class ImageSequence:
    """The image files of a folder as frames, in natural name order (``f2`` before ``f10``).

    Iterating yields what :func:`ivfuse.io.read_image` reads: float32 ``(H, W)`` or
    ``(H, W, 3)`` in ``[0, 1]``. Files without an image extension and hidden files are skipped.

    Raises:
        VideoError: the folder holds no image files; while iterating, a frame whose size
            differs from the first one's.
        ImageReadError: while iterating, an unreadable frame (the message names it).

    Example:
        >>> frames = ImageSequence("MSRS/test/ir")
        >>> frames.count, frames.rate, next(iter(frames)).shape
        (316, None, (480, 640))
    """

    rate: Fraction | None = None

    def __init__(self, folder: str | os.PathLike):
        self.path = Path(folder)
        self.files = sorted(
            (f for f in self.path.iterdir() if f.is_file() and not f.name.startswith(".") and f.suffix.lower() in IMAGE_EXTENSIONS),
            key=_natural_key,
        )
        if not self.files:
            raise VideoError(f"{self.path}: no image files in this folder")
        self.count: int | None = len(self.files)
        first = read_image(self.files[0])
        self.height, self.width = first.shape[:2]

    def __iter__(self) -> Iterator[np.ndarray]:
        for file in self.files:
            image = read_image(file)
            if image.shape[:2] != (self.height, self.width):
                raise VideoError(f"{file}: size {image.shape[1]}x{image.shape[0]} differs from the sequence's first frame {self.files[0].name} ({self.width}x{self.height})")
            yield image

    def close(self) -> None:
        """Nothing to release; here so both frame sources are used alike."""

    def __enter__(self) -> ImageSequence:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _natural_key(path: Path) -> list:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path.name)]


def open_frames(path: str | os.PathLike, *, grey: bool = False) -> VideoFile | ImageSequence:
    """A folder as an :class:`ImageSequence`, a file as a :class:`VideoFile`.

    ``grey`` decodes a video file's luma only (for IR); sequence frames are read as stored,
    which :meth:`Fuser.fuse` takes either way.

    Raises:
        VideoError: the path does not exist, or is not a usable video or sequence.
    """
    path = Path(path)
    if path.is_dir():
        return ImageSequence(path)
    if not path.exists():
        raise VideoError(f"{path}: no such file or folder")
    return VideoFile(path, grey=grey)


@dataclass
class Pairing:
    """How two frame sources are paired: pairs to fuse (``None``: not known before decoding) and output rate."""

    frames: int | None
    rate: Fraction


def check_pairing(ir, vis, *, max_frames: int | None = None, fps: Fraction | None = None) -> Pairing:
    """Refuse two frame sources that cannot be paired by index; say how to pair them instead.

    Args:
        ir, vis: :class:`VideoFile` or :class:`ImageSequence`.
        max_frames: fuse at most this many pairs; streams with different frame counts are
            accepted if both have at least this many.
        fps: output frame rate; also accepts streams with different rates. ``None``: the
            streams' rate (:data:`DEFAULT_FPS` for two image sequences).

    Raises:
        VideoError: frame sizes differ; frame counts differ (beyond ``max_frames``); frame
            rates differ without ``fps``. The message names the file and the fix.

    Example:
        >>> check_pairing(ImageSequence("seq/ir"), ImageSequence("seq/vi"))
        Pairing(frames=10, rate=Fraction(25, 1))
    """
    if (ir.width, ir.height) != (vis.width, vis.height):
        raise VideoError(f"{vis.path}: frames are {vis.width}x{vis.height} but IR {ir.path} frames are {ir.width}x{ir.height}; pairs must be registered and of equal size (never resized)")
    frames = max_frames
    if ir.count is not None and vis.count is not None:
        shorter, longer = (ir, vis) if ir.count < vis.count else (vis, ir)
        if shorter.count != longer.count and (max_frames is None or max_frames > shorter.count):
            raise VideoError(_count_mismatch(shorter, shorter.count, longer, f"has {longer.count}"))
        frames = shorter.count if max_frames is None else min(shorter.count, max_frames)
    if fps is not None:
        return Pairing(frames, Fraction(fps))
    rates = [source.rate for source in (ir, vis) if source.rate is not None]
    if len(rates) == 2 and abs(rates[0] - rates[1]) > rates[0] / 1000:
        raise VideoError(
            f"{vis.path}: {float(vis.rate):.6g} frames/s but IR {ir.path} has {float(ir.rate):.6g} frames/s; "
            "frames are paired by index, so pass --fps RATE to pair them anyway at that output rate"
        )
    return Pairing(frames, rates[0] if rates else DEFAULT_FPS)


def _count_mismatch(shorter, frames: int, longer, longer_has: str) -> str:
    return (
        f"{shorter.path}: {frames} frames but {longer.path} {longer_has}; frames are paired by index, "
        f"so pass --max-frames {frames} to fuse the first {frames} pairs"
    )


def paired_frames(ir, vis, max_frames: int | None = None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """``(ir, vis)`` frame pairs by index until both streams end, or ``max_frames`` pairs.

    Raises:
        VideoError: one stream ends before the other, which :func:`check_pairing` cannot see
            when a container declares no frame count (or declares a wrong one).
    """
    ir_frames, vis_frames = iter(ir), iter(vis)
    index = 0
    while max_frames is None or index < max_frames:
        ir_frame, vis_frame = next(ir_frames, None), next(vis_frames, None)
        if ir_frame is None and vis_frame is None:
            return
        if ir_frame is None or vis_frame is None:
            shorter, longer = (ir, vis) if ir_frame is None else (vis, ir)
            raise VideoError(_count_mismatch(shorter, index, longer, "has more"))
        yield ir_frame, vis_frame
        index += 1


def side_by_side(ir: np.ndarray, vis: np.ndarray, fused: np.ndarray) -> np.ndarray:
    """IR | visible | fused in one RGB frame, grey panels repeated to three channels.

    Args:
        ir, vis, fused: ``(H, W)`` or ``(H, W, 3)`` float in ``[0, 1]``, same ``H, W``.

    Returns:
        ``(H, 3 W, 3)`` float32 in ``[0, 1]``.

    Example:
        >>> side_by_side(np.zeros((4, 5)), np.zeros((4, 5, 3)), np.zeros((4, 5, 3))).shape
        (4, 15, 3)
    """
    return np.concatenate([_rgb(ir), _rgb(vis), _rgb(fused)], axis=1)


def _rgb(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image, dtype=np.float32)
    return np.repeat(image[..., None], 3, axis=2) if image.ndim == 2 else image


def pad_to_even(frame: np.ndarray) -> np.ndarray:
    """Replicate the last row and/or column of an odd-sized frame: 4:2:0 video needs even sizes.

    Args:
        frame: ``(H, W)`` or ``(H, W, C)`` array of any dtype.

    Returns:
        ``(H + H % 2, W + W % 2[, C])``, the same array if both sides are even.

    Example:
        >>> pad_to_even(np.zeros((5, 6, 3))).shape
        (6, 6, 3)
    """
    height, width = frame.shape[:2]
    if not (height % 2 or width % 2):
        return frame
    padding = [(0, height % 2), (0, width % 2)] + [(0, 0)] * (frame.ndim - 2)
    return np.pad(frame, padding, mode="edge")


def fuse_frames(model: Fuser | Segmenter, irs: list[np.ndarray], viss: list[np.ndarray]) -> list[np.ndarray]:
    """Fuse a batch of frame pairs; with a :class:`Segmenter`, draw its labels over each fused frame.

    A :class:`Fuser` runs the batch as one network call (:meth:`Fuser.fuse_batch`); a
    :class:`Segmenter` goes pair by pair.

    Args:
        model: a :class:`Fuser`, or a :class:`Segmenter` (fuses with its own fusion network).
        irs, viss: equally long lists of frames as :meth:`Fuser.fuse` takes them.

    Returns:
        One float32 frame in ``[0, 1]`` per pair: ``(H, W, 3)``, or ``(H, W)`` for a grey visible
        stream fused without segmentation.
    """
    if isinstance(model, Segmenter):
        return [overlay(fused, labels) for labels, fused in (model.segment(ir, vis) for ir, vis in zip(irs, viss))]
    return model.fuse_batch(irs, viss)


@contextmanager
def h264_writer(
    path: str | os.PathLike, width: int, height: int, rate: Fraction, *, crf: int = 18, preset: str = "veryfast"
) -> Iterator[Callable[[np.ndarray], None]]:
    """Encode frames to an H.264 (yuv420p) video, which appears at ``path`` only once complete.

    Yields ``write(frame)`` for ``(height, width, 3)`` uint8 RGB frames (both sides even).
    The container follows the suffix (:data:`CONTAINERS`). On any error, or an interrupt, the
    temporary file is removed and an existing ``path`` is left as it was.

    Args:
        rate: frames per second, e.g. ``Fraction(30000, 1001)``.
        crf: x264 constant rate factor: 0 lossless, 18 (default) visually lossless, 23 x264's default.
        preset: one of :data:`X264_PRESETS`; slower ones give smaller files at the same ``crf``.

    Raises:
        VideoError: unsupported suffix, or odd width/height.
        ValueError: unknown ``preset``.
        WriteError: the folder is not writable.

    Example:
        >>> with h264_writer("out.mp4", 640, 480, Fraction(25)) as write:
        ...     write(np.zeros((480, 640, 3), np.uint8))
    """
    av = require_av()
    path = Path(path)
    muxer = _check_encoder(path, preset)
    if width % 2 or height % 2:
        raise VideoError(f"{path}: H.264 yuv420p needs an even width and height, got {width}x{height} (see pad_to_even)")
    with atomic_write(path) as stream:
        container = av.open(stream, "w", format=muxer)
        try:
            video = container.add_stream("libx264", rate=rate)
            video.width, video.height, video.pix_fmt = width, height, "yuv420p"
            video.options = {"crf": str(crf), "preset": preset}
            context = video.codec_context
            context.colorspace = context.color_primaries = context.color_trc = _BT601
            context.color_range = _LIMITED_RANGE
            time_base = 1 / Fraction(rate)
            index = 0

            def write(frame: np.ndarray) -> None:
                nonlocal index
                picture = av.VideoFrame.from_ndarray(frame, format="rgb24").reformat(format="yuv420p", dst_colorspace="ITU601")
                picture.pts, picture.time_base = index, time_base
                container.mux(video.encode(picture))
                index += 1

            yield write
            container.mux(video.encode(None))
        finally:
            container.close()


@dataclass
class VideoReport:
    """What :func:`fuse_video` wrote."""

    path: Path
    frames: int
    width: int
    height: int
    rate: Fraction
    seconds: float

    def summary(self) -> str:
        speed = f" ({self.frames / self.seconds:.2f} frames/s)" if self.seconds > 0 else ""
        return f"wrote {self.path}: {self.frames} frames, {self.width}x{self.height}, {float(self.rate):.6g} frames/s, in {self.seconds:.1f} s{speed}"


def fuse_video(
    model: Fuser | Segmenter,
    ir_path: str | os.PathLike,
    vis_path: str | os.PathLike,
    out_path: str | os.PathLike,
    *,
    batch_size: int = 1,
    max_frames: int | None = None,
    fps: Fraction | None = None,
    panels: bool = False,
    crf: int = 18,
    preset: str = "veryfast",
    on_warning: Callable[[str], None] | None = None,
    progress: Callable[[Iterable, int | None], Iterable] | None = None,
) -> VideoReport:
    """Fuse an IR and a visible video (files or image-sequence folders) into an H.264 video.

    Frames are paired by index and fused ``batch_size`` pairs at a time; the output has the
    inputs' frame size and rate (see :func:`check_pairing`), colour when the visible stream
    is colour. Odd frame sizes get one replicated row/column (:func:`pad_to_even`), with a
    warning.

    Args:
        model: a :class:`Fuser`; a :class:`Segmenter` draws its segmentation over the fused frames.
        ir_path, vis_path: video files or folders of frames (natural name order).
        out_path: ``.mp4``, ``.mov`` or ``.mkv``; written atomically.
        max_frames, fps: see :func:`check_pairing`.
        panels: write IR | visible | fused side by side (three times as wide).
        crf, preset: x264 quality and speed (:func:`h264_writer`).
        on_warning: called with each one-line warning.
        progress: wraps the frame-pair iterator for a display, given the frame total if known.

    Raises:
        VideoError: an input is missing, unreadable, corrupt, or the two cannot be paired.
        ImageReadError: a frame of a sequence folder is unreadable.
        WriteError: the output cannot be written.

    Example:
        >>> report = fuse_video(Fuser(), "ir.mp4", "vis.mp4", "fused.mp4", batch_size=4)  # doctest: +SKIP
        >>> report.frames, report.width, report.height  # doctest: +SKIP
        (6, 128, 96)
    """
    began = time.perf_counter()
    out_path = Path(out_path)
    _check_encoder(out_path, preset)
    with open_frames(ir_path, grey=True) as ir, open_frames(vis_path) as vis:
        for source in (ir, vis):
            if source.path.resolve() == out_path.resolve():
                raise VideoError(f"{out_path}: the output would replace an input")
        pairing = check_pairing(ir, vis, max_frames=max_frames, fps=fps)
        width, height = ir.width * (3 if panels else 1), ir.height
        if width % 2 or height % 2:
            if on_warning:
                on_warning(f"{out_path}: frames are {width}x{height}; H.264 yuv420p needs even sizes, so the last "
                           f"{'row and column are' if width % 2 and height % 2 else 'row is' if height % 2 else 'column is'} repeated once")
            width, height = width + width % 2, height + height % 2
        written = 0
        with h264_writer(out_path, width, height, pairing.rate, crf=crf, preset=preset) as write:
            pairs = paired_frames(ir, vis, max_frames)
            if progress:
                pairs = progress(pairs, pairing.frames)
            for batch in _batches(pairs, batch_size):
                irs, viss = (list(frames) for frames in zip(*batch))
                for ir_frame, vis_frame, fused in zip(irs, viss, fuse_frames(model, irs, viss)):
                    frame = side_by_side(ir_frame, vis_frame, fused) if panels else _rgb(fused)
                    write(pad_to_even(np.round(np.clip(frame, 0.0, 1.0) * 255).astype(np.uint8)))
                    written += 1
            if written == 0:
                raise VideoError(f"{ir.path}: no frames to fuse")
    return VideoReport(out_path, written, width, height, pairing.rate, time.perf_counter() - began)


def _batches(items: Iterable, size: int) -> Iterator[list]:
    batch = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch
