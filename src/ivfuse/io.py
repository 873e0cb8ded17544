"""Reading and writing images and labels, finding IR/visible pairs in folders, atomic writes.

Everything inside ivfuse works on ``float32`` arrays in ``[0, 1]``: ``(H, W)`` for grey images,
``(H, W, 3)`` for colour images. Every output file of ivfuse (images, weights, checkpoints,
reports) is written through :func:`atomic_write`.

16-bit images (radiometric thermal cameras write 16-bit PNG/TIFF), and 32-bit integer or float
TIFFs, are mapped to ``[0, 1]`` in one of two ways, chosen with ``bit16``:

* ``"full"`` (default): ``x / 65535``. Linear and the same for every image, so radiometry is
  kept, but a camera that only uses a narrow band of the 16-bit range gives a dark, flat image.
  Float images are taken as they are and must lie in ``[0, 1]``.
* ``"minmax"``: ``(x - min) / (max - min)`` per image. Use it for raw radiometric frames whose
  values sit in a narrow band (e.g. 7000..9000 counts). It changes only how the *input* is read;
  fused outputs are never stretched.

Pillow reads 16-bit colour PNGs as 8-bit colour; 16-bit colour output is written as PNG by
:func:`write_image` itself.

Decoding is guarded by a pixel limit (:data:`DEFAULT_MAX_PIXELS`, :func:`pixel_limit`) checked on
the header's size, so a small file that claims a huge image is refused without allocating it.
"""

from __future__ import annotations

import csv
import io
import os
import stat
import struct
import tempfile
import threading
import zlib
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .classes import IGNORE_INDEX, NUM_CLASSES

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
BIT16_MODES = ("full", "minmax")
_PIL_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".bmp": "BMP", ".tif": "TIFF", ".tiff": "TIFF"}
#: Pillow formats :func:`read_image` and :func:`decode_image` accept: those of :data:`IMAGE_EXTENSIONS`.
UPLOAD_FORMATS = tuple(dict.fromkeys(_PIL_FORMATS.values()))
#: Images with more pixels are refused from their header, before decoding (see :func:`pixel_limit`).
#: 100 megapixels, e.g. 10000 x 10000; Pillow's own check warns above 89 and refuses above 179.
DEFAULT_MAX_PIXELS = 100_000_000
#: Environment variable that sets the pixel limit for a process and its workers (as ``--max-pixels``).
MAX_PIXELS_ENV = "IVFUSE_MAX_PIXELS"
_PILLOW_LIMIT_LOCK = threading.Lock()


class ImageReadError(ValueError):
    """An input image is missing, unreadable or unusable; the message names the file."""


class LabelSizeError(ImageReadError):
    """A label file and its image differ in size: wrong folders, not one bad file; the message names both."""


class ImageTooLargeError(ImageReadError):
    """An image has more pixels than allowed (found from its header, before decoding); the message names it."""


class WriteError(OSError):
    """An output file could not be written; the message names the file."""


def read_image(path: str | os.PathLike, *, bit16: str = "full", max_pixels: int | None = None) -> np.ndarray:
    """Read an image file as float32 in ``[0, 1]``.

    The file's content decides how it is decoded, not its extension (a PNG named ``.jpg`` is
    read as the PNG it is); only PNG, JPEG, BMP and TIFF content is accepted. The EXIF
    orientation tag is applied, so the array is what an image viewer shows. The size in the
    header is checked against the pixel limit before anything is decoded.

    Args:
        path: PNG, JPEG, BMP or TIFF file: 1-, 8-, 16- or 32-bit (integer or float), grey, RGB,
            RGBA, CMYK or palette; one frame (multi-page TIFFs are refused).
        bit16: how data with more than 8 bits is mapped to ``[0, 1]``: ``"full"`` or
            ``"minmax"`` (see module doc).
        max_pixels: refuse images with more pixels (width x height); ``None``: :func:`pixel_limit`.

    Returns:
        ``(H, W)`` for 1-channel files, ``(H, W, 3)`` for colour files (alpha dropped), float32.

    Raises:
        ImageTooLargeError: more pixels than the limit (found from the header, nothing decoded).
        ImageReadError: the file is missing, empty, not a supported image, truncated, corrupt,
            multi-frame, or of values that do not map to ``[0, 1]``: one line naming the file.

    Example:
        >>> ir = read_image("examples/ir/00004N.png")
        >>> ir.shape, ir.dtype
        ((480, 640), dtype('float32'))
    """
    path = Path(path)
    _check_bit16(bit16)
    limit = pixel_limit(max_pixels)
    _check_regular_file(path)
    with _opened(path, str(path)) as image:
        return _decode(image, str(path), bit16, limit)


def pixel_limit(max_pixels: int | None = None) -> int:
    """The decoding limit in pixels: ``max_pixels`` if given, else ``$IVFUSE_MAX_PIXELS``, else
    :data:`DEFAULT_MAX_PIXELS`.

    The environment variable sets the limit for a whole process and the worker processes it
    starts (``ivfuse eval --workers``); the CLI's ``--max-pixels`` sets it.

    Raises:
        ValueError: the value is not a whole number >= 1 (message names where it came from).

    Example:
        >>> pixel_limit(4_000_000)
        4000000
    """
    source, value = ("max_pixels", max_pixels) if max_pixels is not None else (MAX_PIXELS_ENV, os.environ.get(MAX_PIXELS_ENV))
    if value is None:
        return DEFAULT_MAX_PIXELS
    try:
        limit = int(value)
    except (TypeError, ValueError):
        limit = 0
    if limit < 1:
        raise ValueError(f"{source}={value!r}: the pixel limit must be a whole number >= 1")
    return limit


def image_size(data: bytes, name: str, *, max_pixels: int | None = None) -> tuple[int, int]:
    """``(width, height)`` of an in-memory PNG, JPEG, BMP or TIFF file, read from its header only.

    Cheap even for huge images, so limits can be checked before anything is decoded.

    Args:
        max_pixels: refuse images with more pixels; ``None``: :func:`pixel_limit`.

    Raises:
        ImageTooLargeError: more than ``max_pixels`` pixels.
        ImageReadError: not one of those formats, or a corrupt header (message names ``name``).

    Example:
        >>> image_size(Path("examples/ir/00004N.png").read_bytes(), "00004N.png")
        (640, 480)
    """
    with _opened(io.BytesIO(data), name) as image:
        _check_header(image, name, pixel_limit(max_pixels))
        return image.size


def decode_image(data: bytes, name: str, *, bit16: str = "full", max_pixels: int | None = None) -> np.ndarray:
    """Decode an in-memory image file (e.g. an upload) like :func:`read_image`, writing nothing to disk.

    Only PNG, JPEG, BMP and TIFF are tried (:data:`UPLOAD_FORMATS`): never Pillow's other
    decoders, some of which run external programs.

    Args:
        data: the file's bytes.
        name: what error messages call the file (e.g. the upload's field and file name).
        bit16: how data with more than 8 bits is mapped to ``[0, 1]`` (see module doc).
        max_pixels: refuse images with more pixels, checked from the header *before* decoding,
            so a small file that decompresses to a huge image costs no memory; ``None``:
            :func:`pixel_limit`.

    Returns:
        ``(H, W)`` or ``(H, W, 3)`` float32 in ``[0, 1]``, as :func:`read_image`.

    Raises:
        ImageTooLargeError: more than ``max_pixels`` pixels.
        ImageReadError: empty, not one of those formats, truncated or corrupt.

    Example:
        >>> decode_image(Path("examples/vi/00004N.png").read_bytes(), "00004N.png").shape
        (480, 640, 3)
    """
    _check_bit16(bit16)
    limit = pixel_limit(max_pixels)
    if not data:
        raise ImageReadError(f"{name}: empty file (0 bytes)")
    with _opened(io.BytesIO(data), name) as image:
        return _decode(image, name, bit16, limit)


def _check_bit16(bit16: str) -> None:
    if bit16 not in BIT16_MODES:
        raise ValueError(f"bit16 must be one of {BIT16_MODES}, got {bit16!r}")


def _check_regular_file(path: Path) -> None:
    """Refuse what Pillow would misreport or hang on: missing, a folder, a FIFO or device, empty."""
    try:
        status = path.stat()
    except FileNotFoundError:
        raise ImageReadError(f"{path}: no such file{' (broken symbolic link)' if path.is_symlink() else ''}") from None
    except OSError as error:
        raise ImageReadError(f"{path}: cannot read image ({_os_reason(error)})") from None
    if stat.S_ISDIR(status.st_mode):
        raise ImageReadError(f"{path}: is a folder, not an image file")
    if not stat.S_ISREG(status.st_mode):
        raise ImageReadError(f"{path}: not a regular file")
    if status.st_size == 0:
        raise ImageReadError(f"{path}: empty file (0 bytes)")


def _decode(image: Image.Image, name: str, bit16: str, max_pixels: int) -> np.ndarray:
    _check_header(image, name, max_pixels)
    image.load()
    ImageOps.exif_transpose(image, in_place=True)
    return _to_float(image, bit16)


def _check_header(image: Image.Image, name: str, max_pixels: int) -> None:
    """Refuse, from the header alone, images too large to decode, without pixels, or of several frames."""
    width, height = image.size
    if width * height > max_pixels:
        raise ImageTooLargeError(
            f"{name}: {width}x{height} is {width * height / 1e6:.1f} megapixels, more than the limit of "
            f"{max_pixels / 1e6:g} megapixels (--max-pixels or ${MAX_PIXELS_ENV} change it)"
        )
    if width == 0 or height == 0:
        raise ImageReadError(f"{name}: image of {width}x{height} pixels has no pixels")
    # MPO (phone and camera JPEGs) keeps the primary image first and previews after it.
    frames = 1 if image.format == "MPO" else getattr(image, "n_frames", 1)
    if frames > 1:
        raise ImageReadError(f"{name}: {image.format} with {frames} frames; ivfuse reads single images, so save the frame to fuse on its own")


@contextmanager
def _pillow_pixel_check_off() -> Iterator[None]:
    """Pillow's fixed decompression-bomb check would refuse or warn before :func:`_check_header`
    applies the configurable limit; the lock keeps concurrent reads from restoring it under each other."""
    with _PILLOW_LIMIT_LOCK:
        saved, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
        try:
            yield
        finally:
            Image.MAX_IMAGE_PIXELS = saved


@contextmanager
def _opened(source: str | os.PathLike | BinaryIO, name: str, what: str = "image") -> Iterator[Image.Image]:
    """``Image.open`` (PNG, JPEG, BMP, TIFF only) with every failure inside turned into one
    ``ImageReadError`` line naming ``name``."""
    try:
        with _pillow_pixel_check_off():
            opened = Image.open(source, formats=UPLOAD_FORMATS)
        with opened as image:
            yield image
    except ImageReadError:
        raise
    except UnidentifiedImageError:
        # Pillow's own message repeats the path, or names a BytesIO object for uploads.
        raise ImageReadError(f"{name}: cannot read {what} (not a PNG, JPEG, BMP or TIFF file, or a corrupt header)") from None
    except MemoryError:
        raise ImageReadError(f"{name}: cannot read {what} (not enough memory to decode it)") from None
    except Exception as error:  # noqa: BLE001 - Pillow's decoders raise many types on malformed files
        raise ImageReadError(f"{name}: cannot read {what} ({_os_reason(error)})") from None


def _os_reason(error: BaseException) -> str:
    strerror = getattr(error, "strerror", None)
    return strerror.lower() if strerror else first_line(error)


def first_line(error: BaseException) -> str:
    """The gist of an exception's message in one line, for one-line error messages.

    Many messages (torch's, Pillow's, FFmpeg's) run over several lines; the first non-empty one
    is kept. A first line that only announces a list (``Error(s) in loading state_dict for
    FusionNet:``) is replaced by the list's first item, which says what is wrong. A message-less
    exception gives its type's name.

    Example:
        >>> first_line(RuntimeError("Error(s) in loading state_dict:\n\tsize mismatch for w\n\tmore"))
        'size mismatch for w'
    """
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    if not lines:
        return type(error).__name__
    return lines[1] if lines[0].endswith(":") and len(lines) > 1 else lines[0]


def read_pair(
    ir_path: str | os.PathLike, vis_path: str | os.PathLike, *, bit16: str = "full", max_pixels: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Read an IR/visible pair with :func:`read_image` and check that both have the same size.

    Raises:
        ImageReadError: either file is unreadable, or the sizes differ (never resized): the
            message names both files.
    """
    ir = read_image(ir_path, bit16=bit16, max_pixels=max_pixels)
    vis = read_image(vis_path, bit16=bit16, max_pixels=max_pixels)
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
    _check_regular_file(path)
    with _opened(path, str(path), what="label") as image:
        _check_header(image, str(path), pixel_limit())
        if image.mode not in ("L", "P"):
            raise ValueError(f"a label must be an 8-bit single-channel image, not mode {image.mode}")
        ids = np.array(image, dtype=np.uint8)
    bad = np.unique(ids[(ids >= num_classes) & (ids != IGNORE_INDEX)])
    if bad.size:
        raise ImageReadError(f"{path}: label values outside 0..{num_classes - 1} and {IGNORE_INDEX}: {bad[:10].tolist()}")
    return ids


def _to_float(image: Image.Image, bit16: str) -> np.ndarray:
    if image.mode in ("P", "PA"):
        # Through RGBA: Pillow warns when palette transparency is dropped on the way to RGB.
        image = image.convert("RGBA")
        image = image.convert("L" if _is_grey(np.asarray(image)[..., :3]) else "RGB")
    elif image.mode in ("1", "LA", "La"):
        image = image.convert("L")
    elif image.mode not in ("L", "RGB") and not image.mode.startswith("I") and image.mode != "F":
        image = image.convert("RGB")  # RGBA, CMYK (without its ICC profile), YCbCr, LAB, HSV
    if image.mode in ("L", "RGB"):
        return _scaled(np.asarray(image), 0.0, 255.0)
    data = np.asarray(image)
    if image.mode == "F" and not np.isfinite(data).all():
        raise ValueError("float image with NaN or infinite values")
    low, high = float(data.min()), float(data.max())
    if bit16 == "minmax":
        return _scaled(data, low, high) if high > low else np.zeros(data.shape, np.float32)
    if image.mode == "F":
        if low < 0 or high > 1:
            raise ValueError(f"float image with values outside 0..1 ({low:g}..{high:g}); read it with bit16 'minmax' or store it scaled to 0..1")
        return data.astype(np.float32)
    if low < 0 or high > 65535:
        raise ValueError(f"integer image with values outside 0..65535 ({low:.0f}..{high:.0f})")
    return _scaled(data, 0.0, 65535.0)


def _scaled(levels: np.ndarray, low: float, high: float) -> np.ndarray:
    """``(levels - low) / (high - low)`` as float32, in place: a large image costs one float copy, not three."""
    data = levels.astype(np.float32)
    if low:
        data -= low
    data /= high - low
    return data


def _is_grey(rgb: np.ndarray) -> bool:
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
    try:
        data = encode_image(image, path.suffix, bits=bits)
    except ValueError as error:
        raise WriteError(f"{path}: {error}") from None
    except OSError as error:
        raise WriteError(f"{path}: cannot write ({_os_reason(error)})") from None
    with atomic_write(path) as stream:
        stream.write(data)
    return path


def encode_image(image: np.ndarray, extension: str = ".png", *, bits: int = 8) -> bytes:
    """Encode a float image in ``[0, 1]`` as the bytes of an image file (what :func:`write_image` writes).

    Args:
        image: ``(H, W)`` or ``(H, W, 3)`` float array in ``[0, 1]``; values are clipped, then
            rounded to the nearest integer level (no stretching).
        extension: picks the format: ``.png``, ``.jpg``, ``.jpeg``, ``.bmp``, ``.tif``, ``.tiff``.
        bits: 8, or 16 (PNG, or TIFF for grey images).

    Raises:
        ValueError: the format is unknown or cannot hold the data.

    Example:
        >>> encode_image(np.zeros((4, 4, 3), np.float32))[:4]
        b'\\x89PNG'
    """
    suffix = extension.lower()
    if suffix not in _PIL_FORMATS:
        raise ValueError(f"unsupported output format {suffix or '(none)'}; use one of {', '.join(IMAGE_EXTENSIONS)}")
    if bits not in (8, 16):
        raise ValueError(f"bits must be 8 or 16, got {bits}")
    if bits == 16 and not (suffix == ".png" or (suffix in (".tif", ".tiff") and image.ndim == 2)):
        raise ValueError("16-bit output needs .png (or .tif for grey images)")
    levels = quantize(image, bits)
    if bits == 16 and levels.ndim == 3:
        return _encode_png_rgb16(levels)
    buffer = io.BytesIO()
    Image.fromarray(levels).save(buffer, format=_PIL_FORMATS[suffix])
    return buffer.getvalue()


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
        raise WriteError(f"{path}: cannot write ({_os_reason(error)})") from None
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
            raise WriteError(f"{path}: cannot write ({_os_reason(error)})") from None
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


def quantize(image: np.ndarray, bits: int = 8) -> np.ndarray:
    """Integer levels of a float image, as :func:`write_image` stores them.

    Clipped to ``[0, 1]``, scaled to ``2**bits - 1``, rounded; in bands of rows, so a large image
    needs no float copies.

    Args:
        image: float array in ``[0, 1]``, any shape.
        bits: 8 (``uint8``) or 16 (``uint16``).

    Example:
        >>> quantize(np.array([0.0, 0.5, 1.2]))
        array([  0, 128, 255], dtype=uint8)
    """
    levels = np.empty(image.shape, np.uint8 if bits == 8 else np.uint16)
    rows = max(1, (1 << 22) // max(1, image[:1].size))
    for top in range(0, image.shape[0], rows):
        levels[top : top + rows] = np.round(np.clip(image[top : top + rows], 0.0, 1.0) * (255 if bits == 8 else 65535))
    return levels


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
        # Broken links and link loops stay in: reading them then names the file and the problem.
        if entry.name.startswith(".") or entry.is_dir():
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
