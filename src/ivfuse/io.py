"""Reading and writing images and labels, finding IR/visible pairs in folders, atomic writes.

Everything inside ivfuse works on ``float32`` arrays in ``[0, 1]``: ``(H, W)`` for grey images,
``(H, W, 3)`` for colour images. Every output file of ivfuse (images, weights, checkpoints,
reports) is written through :func:`atomic_write`.

16-bit images (radiometric thermal cameras write 16-bit PNG/TIFF) are mapped to ``[0, 1]`` in
one of two ways, chosen with ``bit16``:

* ``"full"`` (default): ``x / 65535``. Linear and the same for every image, so radiometry is
  kept, but a camera that only uses a narrow band of the 16-bit range gives a dark, flat image.
* ``"minmax"``: ``(x - min) / (max - min)`` per image. Use it for raw radiometric frames whose
  values sit in a narrow band (e.g. 7000..9000 counts). It changes only how the *input* is read;
  fused outputs are never stretched.

Pillow reads 16-bit colour PNGs as 8-bit colour; 16-bit colour output is written as PNG by
:func:`write_image` itself.
"""

from __future__ import annotations

import csv
import io
import os
import struct
import tempfile
import zlib
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, UnidentifiedImageError

from .classes import IGNORE_INDEX, NUM_CLASSES

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
BIT16_MODES = ("full", "minmax")
_PIL_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".bmp": "BMP", ".tif": "TIFF", ".tiff": "TIFF"}


class ImageReadError(ValueError):
    """An input image is missing, unreadable or unusable; the message names the file."""


class LabelSizeError(ImageReadError):
    """A label file and its image differ in size: wrong folders, not one bad file; the message names both."""


class WriteError(OSError):
    """An output file could not be written; the message names the file."""


def read_image(path: str | os.PathLike, *, bit16: str = "full") -> np.ndarray:
    """Read an image file as float32 in ``[0, 1]``.

    Args:
        path: PNG, JPEG, BMP or TIFF file, 8-bit or 16-bit, grey, RGB, RGBA or palette.
        bit16: how 16-bit data is mapped to ``[0, 1]``: ``"full"`` or ``"minmax"`` (see module doc).

    Returns:
        ``(H, W)`` for 1-channel files, ``(H, W, 3)`` for colour files (alpha dropped), float32.

    Raises:
        ImageReadError: the file is missing, not an image, truncated or corrupt.

    Example:
        >>> ir = read_image("examples/ir/00004N.png")
        >>> ir.shape, ir.dtype
        ((480, 640), dtype('float32'))
    """
    path = Path(path)
    if bit16 not in BIT16_MODES:
        raise ValueError(f"bit16 must be one of {BIT16_MODES}, got {bit16!r}")
    if not path.is_file():
        raise ImageReadError(f"{path}: no such file")
    try:
        with Image.open(path) as image:
            image.load()
            return _to_float(image, bit16)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        reason = str(error).split("\n")[0] or type(error).__name__
        raise ImageReadError(f"{path}: cannot read image ({reason})") from None


def read_pair(ir_path: str | os.PathLike, vis_path: str | os.PathLike, *, bit16: str = "full") -> tuple[np.ndarray, np.ndarray]:
    """Read an IR/visible pair with :func:`read_image` and check that both have the same size.

    Raises:
        ImageReadError: either file is unreadable, or the sizes differ (never resized): the
            message names both files.
    """
    ir, vis = read_image(ir_path, bit16=bit16), read_image(vis_path, bit16=bit16)
    if ir.shape[:2] != vis.shape[:2]:
        raise ImageReadError(
            f"{vis_path}: size {vis.shape[1]}x{vis.shape[0]} differs from IR {ir_path} ({ir.shape[1]}x{ir.shape[0]})"
        )
    return ir, vis


def read_label(path: str | os.PathLike, num_classes: int = NUM_CLASSES) -> np.ndarray:
    """Read a segmentation label file: one class id per pixel.

    Args:
        path: 8-bit single-channel (``L``) or palette (``P``) PNG whose values are class ids.
        num_classes: ids must lie in ``0..num_classes-1`` or be :data:`IGNORE_INDEX`.

    Returns:
        ``(H, W)`` uint8 class ids.

    Raises:
        ImageReadError: missing, unreadable, not a single-channel 8-bit image, or ids out of range.
    """
    path = Path(path)
    if not path.is_file():
        raise ImageReadError(f"{path}: no such file")
    try:
        with Image.open(path) as image:
            if image.mode not in ("L", "P"):
                raise ValueError(f"a label must be an 8-bit single-channel image, not mode {image.mode}")
            ids = np.array(image, dtype=np.uint8)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        reason = str(error).split("\n")[0] or type(error).__name__
        raise ImageReadError(f"{path}: cannot read label ({reason})") from None
    bad = np.unique(ids[(ids >= num_classes) & (ids != IGNORE_INDEX)])
    if bad.size:
        raise ImageReadError(f"{path}: label values outside 0..{num_classes - 1} and {IGNORE_INDEX}: {bad[:10].tolist()}")
    return ids


def _to_float(image: Image.Image, bit16: str) -> np.ndarray:
    if image.mode in ("1", "P", "PA", "LA", "CMYK", "YCbCr", "RGBA", "RGBX", "LAB", "HSV"):
        has_colour = image.mode not in ("1", "LA") and not (image.mode == "P" and _palette_is_grey(image))
        image = image.convert("RGB" if has_colour else "L")
    if image.mode == "L":
        return np.asarray(image, dtype=np.float32) / 255.0
    if image.mode == "RGB":
        return np.asarray(image, dtype=np.float32) / 255.0
    if image.mode.startswith("I;16") or image.mode == "I":
        data = np.asarray(image).astype(np.float32)
        if data.min() < 0 or data.max() > 65535:
            raise ValueError(f"integer image with values outside 0..65535 ({data.min():.0f}..{data.max():.0f})")
        if bit16 == "minmax":
            low, high = float(data.min()), float(data.max())
            return (data - low) / (high - low) if high > low else np.zeros_like(data)
        return data / 65535.0
    raise ValueError(f"unsupported image mode {image.mode}")


def _palette_is_grey(image: Image.Image) -> bool:
    rgb = np.asarray(image.convert("RGB"))
    return bool((rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all())


def write_image(path: str | os.PathLike, image: np.ndarray, *, bits: int = 8) -> Path:
    """Write a float image in ``[0, 1]`` atomically (temporary file in the same folder, then rename).

    An interrupted run therefore never leaves a half-written image under ``path``.

    Args:
        path: output file; its extension picks the format (PNG, JPEG, BMP, TIFF).
        image: ``(H, W)`` or ``(H, W, 3)`` float array in ``[0, 1]``; values are clipped, then
            rounded to the nearest integer level (no stretching).
        bits: 8, or 16 (PNG, or TIFF for grey images).

    Raises:
        WriteError: the folder is not writable, or the format cannot hold the data.

    Example:
        >>> write_image("out/fused.png", np.zeros((4, 4, 3), np.float32))
        PosixPath('out/fused.png')
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in _PIL_FORMATS:
        raise WriteError(f"{path}: unsupported output format {suffix or '(none)'}; use one of {', '.join(IMAGE_EXTENSIONS)}")
    if bits not in (8, 16):
        raise WriteError(f"{path}: bits must be 8 or 16, got {bits}")
    if bits == 16 and not (suffix == ".png" or (suffix in (".tif", ".tiff") and image.ndim == 2)):
        raise WriteError(f"{path}: 16-bit output needs .png (or .tif for grey images)")
    levels = np.round(np.clip(image, 0.0, 1.0) * (255 if bits == 8 else 65535))
    levels = levels.astype(np.uint8 if bits == 8 else np.uint16)
    with atomic_write(path) as stream:
        if bits == 16 and levels.ndim == 3:
            stream.write(_encode_png_rgb16(levels))
        else:
            Image.fromarray(levels).save(stream, format=_PIL_FORMATS[suffix])
    return path


@contextmanager
def atomic_write(path: str | os.PathLike) -> Iterator[BinaryIO]:
    """Open a binary stream whose content appears at ``path`` only once it is complete.

    Writes to a temporary file in the same folder, flushes it to disk, gives it the permissions
    a plain ``open`` would, and renames it over ``path``. On any error the temporary file is
    removed and ``path`` is left as it was: an interrupted run never leaves a half-written file.

    Raises:
        WriteError: the folder cannot be created or written (message names ``path``).

    Example:
        >>> with atomic_write("out/notes.txt") as stream:
        ...     stream.write(b"done")
        4
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as error:
        raise WriteError(f"{path}: cannot write ({error.strerror or error})") from None
    try:
        with os.fdopen(handle, "wb") as stream:
            yield stream
            stream.flush()
            os.fsync(stream.fileno())
        # mkstemp creates the file private (0600); give it the permissions a plain open() would.
        os.chmod(temporary, 0o666 & ~_umask())
        os.replace(temporary, path)
    except BaseException as error:
        Path(temporary).unlink(missing_ok=True)
        if isinstance(error, OSError) and not isinstance(error, WriteError):
            raise WriteError(f"{path}: cannot write ({error.strerror or error})") from None
        raise


def write_csv(path: str | os.PathLike, rows: Iterable[Sequence]) -> Path:
    """Write rows (the first one the header) as a UTF-8 CSV file, atomically (:func:`atomic_write`).

    Example:
        >>> write_csv("out/table.csv", [["name", "value"], ["a", 1]])
        PosixPath('out/table.csv')
    """
    text = io.StringIO()
    csv.writer(text).writerows(rows)
    with atomic_write(path) as stream:
        stream.write(text.getvalue().encode("utf-8"))
    return Path(path)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _encode_png_rgb16(levels: np.ndarray) -> bytes:
    """Minimal PNG encoder for 16-bit RGB, which Pillow cannot write."""
    height, width, _ = levels.shape
    rows = levels.astype(">u2").reshape(height, width * 6 // 2)
    raw = np.concatenate([np.zeros((height, 1), np.uint8), rows.view(np.uint8).reshape(height, -1)], axis=1)

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    header = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw.tobytes(), 6)) + chunk(b"IEND", b"")


@dataclass
class PairListing:
    """What :func:`find_pairs` found: matched pairs and everything that could not be paired."""

    pairs: list[tuple[str, Path, Path]] = field(default_factory=list)
    only_ir: list[Path] = field(default_factory=list)
    only_vis: list[Path] = field(default_factory=list)
    not_images: list[Path] = field(default_factory=list)
    ambiguous: list[Path] = field(default_factory=list)


def list_images(folder: str | os.PathLike) -> tuple[dict[str, Path], list[Path], list[Path]]:
    """Image files of a folder keyed by stem.

    Returns:
        ``(by_stem, not_images, ambiguous)``: files with an image extension keyed by file stem;
        files without one (skipped, never read); all files of a stem that occurs more than once
        (``a.png`` and ``a.jpg``), which cannot be paired unambiguously and are left out.

    Raises:
        ImageReadError: the folder does not exist.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ImageReadError(f"{folder}: no such folder")
    by_stem: dict[str, list[Path]] = {}
    not_images = []
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith(".") or not entry.is_file():
            continue
        if entry.suffix.lower() in IMAGE_EXTENSIONS:
            by_stem.setdefault(entry.stem, []).append(entry)
        else:
            not_images.append(entry)
    unique = {stem: files[0] for stem, files in by_stem.items() if len(files) == 1}
    ambiguous = [path for files in by_stem.values() if len(files) > 1 for path in files]
    return unique, not_images, ambiguous


def find_pairs(ir_dir: str | os.PathLike, vis_dir: str | os.PathLike) -> PairListing:
    """Match IR and visible images of two folders by file stem (extensions may differ).

    Files without an image extension are listed in ``not_images`` and skipped; this is the
    rule everywhere in ivfuse (the CLI prints a warning for each).

    Example:
        >>> listing = find_pairs("examples/ir", "examples/vi")
        >>> [stem for stem, _, _ in listing.pairs]
        ['00004N', '00055D', '05']
    """
    ir_images, ir_other, ir_ambiguous = list_images(ir_dir)
    vis_images, vis_other, vis_ambiguous = list_images(vis_dir)
    listing = PairListing(not_images=ir_other + vis_other, ambiguous=ir_ambiguous + vis_ambiguous)
    for stem in sorted(ir_images.keys() | vis_images.keys()):
        if stem in ir_images and stem in vis_images:
            listing.pairs.append((stem, ir_images[stem], vis_images[stem]))
        elif stem in ir_images:
            listing.only_ir.append(ir_images[stem])
        else:
            listing.only_vis.append(vis_images[stem])
    return listing
