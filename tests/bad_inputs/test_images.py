"""Bad image inputs, one case each, through every entry point that reads images.

Each folder case puts one bad pair beside a good one and checks: the one-line message (file and
problem, no traceback), the exit code, that nothing was written for the bad pair and that the
good pair was. The promised behaviour is the table in docs/robustness.md.
"""

from __future__ import annotations

import errno
import os
import re
import struct
import tempfile
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from ivfuse import io
from ivfuse.cli import main
from ivfuse.fuser import Fuser, fuse_folder, fuse_pair_files
from ivfuse.io import ImageReadError, ImageTooLargeError, read_image, read_label

from ..conftest import REPO

TINY = REPO / "tests" / "data" / "tiny" / "MSRS"
GOOD, BAD = "00501D", "01150N"


def _pixels(folder: str, stem: str, size: tuple[int, int] = (64, 48)) -> np.ndarray:
    """A real MSRS crop (tests/data/tiny): ``(48, 64)`` grey for ir, ``(48, 64, 3)`` for vi."""
    with Image.open(TINY / folder / f"{stem}.png") as image:
        return np.asarray(image.crop((0, 0, *size)))


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares ``width`` x ``height`` RGB but holds a few bytes: a decompression bomb's header."""
    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def _truncated(fmt: str):
    def make(path: Path) -> None:
        Image.fromarray(_pixels("ir", BAD)).save(path, format=fmt)
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    return make


def _saved(array_of, **save):
    def make(path: Path) -> None:
        Image.fromarray(array_of()).save(path, **save)
    return make


def _multipage_tiff(path: Path) -> None:
    pages = [Image.fromarray(_pixels("ir", BAD)), Image.fromarray(_pixels("ir", GOOD))]
    pages[0].save(path, format="TIFF", save_all=True, append_images=pages[1:])


def _animated_gif(path: Path) -> None:
    frames = [Image.fromarray(_pixels("vi", BAD)), Image.fromarray(_pixels("vi", GOOD))]
    frames[0].save(path, format="GIF", save_all=True, append_images=frames[1:])


# name -> (file name of the bad IR, how to make it, message after "<path>: ").
BAD_IR = {
    "empty file": ("x.png", lambda p: p.write_bytes(b""), r"empty file \(0 bytes\)"),
    "zero-pixel PNG header": ("x.png", lambda p: p.write_bytes(_png_header_only(0, 48)), r"cannot read image \(not a PNG, JPEG, BMP or TIFF file, or a corrupt header\)"),
    "truncated PNG": ("x.png", _truncated("PNG"), r"cannot read image \(.+\)"),
    "truncated JPEG": ("x.jpg", _truncated("JPEG"), r"cannot read image \(.+\)"),
    "truncated TIFF": ("x.tif", _truncated("TIFF"), r"cannot read image \(image file is truncated.*\)"),
    "text file named .png": ("x.png", lambda p: p.write_text("calibration notes\n"), r"cannot read image \(not a PNG, JPEG, BMP or TIFF file"),
    "GIF content named .png": ("x.png", _animated_gif, r"cannot read image \(not a PNG, JPEG, BMP or TIFF file"),
    "multi-page TIFF": ("x.tif", _multipage_tiff, r"TIFF with 2 frames; ivfuse reads single images"),
    "30000x30000 PNG header": ("x.png", lambda p: p.write_bytes(_png_header_only(30000, 30000)), r"30000x30000 is 900.0 megapixels, more than the limit of 100 megapixels"),
    "float TIFF outside 0..1": ("x.tif", _saved(lambda: _pixels("ir", BAD).astype(np.float32) * 2), r"cannot read image \(float image with values outside 0\.\.1 \(\d+\.\.\d+\); read it with bit16 'minmax'"),
    "float TIFF with NaN": ("x.tif", _saved(lambda: np.where(_pixels("ir", BAD) > 50, np.nan, 0.5).astype(np.float32)), r"cannot read image \(float image with NaN or infinite values\)"),
    "32-bit integer TIFF above 65535": ("x.tif", _saved(lambda: _pixels("ir", BAD).astype(np.int32) * 1000), r"cannot read image \(integer image with values outside 0\.\.65535"),
    "folder named like an image": ("x.png", lambda p: p.mkdir(), None),
    "symlink loop": ("x.png", lambda p: p.symlink_to(p.name), r"cannot read image \(too many levels of symbolic links\)"),
    "broken symlink": ("x.png", lambda p: p.symlink_to("gone.png"), r"no such file \(broken symbolic link\)"),
    "FIFO named .png": ("x.png", lambda p: os.mkfifo(p), r"not a regular file"),
}


@pytest.fixture()
def pair_folders(tmp_path):
    """ir/ and vi/ with the good pair GOOD (PNG) and the visible image of the bad pair."""
    ir, vis = tmp_path / "in put" / "ir", tmp_path / "in put" / "vi"
    for folder in (ir, vis):
        folder.mkdir(parents=True)
    Image.fromarray(_pixels("ir", GOOD)).save(ir / f"{GOOD}.png")
    Image.fromarray(_pixels("vi", GOOD)).save(vis / f"{GOOD}.png")
    Image.fromarray(_pixels("vi", BAD)).save(vis / "x.png")
    return ir, vis


def _run(*args: str):
    # --max-pixels reaches ivfuse.io through the environment; CliRunner restores what it is given.
    return CliRunner().invoke(main, [str(arg) for arg in args], env={io.MAX_PIXELS_ENV: os.environ.get(io.MAX_PIXELS_ENV)})


def _assert_one_line(result, kind: str, path: Path | str, problem: str) -> None:
    """``kind: <path>: <problem>`` is on stderr, on one line, and no traceback anywhere."""
    assert "Traceback" not in result.output, result.output
    lines = [line for line in result.stderr.splitlines() if line.startswith(f"{kind}: {path}")]
    assert len(lines) == 1, result.stderr
    assert re.fullmatch(rf"{kind}: {re.escape(str(path))}: {problem}.*", lines[0]), lines[0]


def _no_temporaries(folder: Path) -> None:
    assert not [p for p in folder.rglob("*") if p.name.startswith(".")], list(folder.rglob("*"))


@pytest.mark.parametrize("case", BAD_IR, ids=list(BAD_IR))
def test_fuse_folders_report_the_bad_file_and_fuse_the_good_pair(pair_folders, tmp_path, case):
    ir, vis = pair_folders
    name, make, problem = BAD_IR[case]
    make(ir / name)
    out = tmp_path / "fused"
    result = _run("fuse", "--ir", ir, "--vis", vis, "-o", out, "--threads", "1", "--quiet")
    assert (out / f"{GOOD}.png").is_file()
    assert not (out / "x.png").exists()
    _no_temporaries(out)
    if problem is None:  # a folder is not a file of the pair: the visible x.png has no partner
        assert result.exit_code == 1
        _assert_one_line(result, "warning", vis / "x.png", "no partner")
        return
    assert result.exit_code == 1, result.output
    _assert_one_line(result, "warning", ir / name, problem)


@pytest.mark.parametrize("case", [c for c in BAD_IR if BAD_IR[c][2] is not None], ids=lambda c: c)
def test_fuse_one_pair_fails_with_one_line_and_exit_2(pair_folders, tmp_path, case):
    ir, vis = pair_folders
    name, make, problem = BAD_IR[case]
    make(ir / name)
    result = _run("fuse", "--ir", ir / name, "--vis", vis / "x.png", "-o", tmp_path / "fused.png", "--threads", "1")
    assert result.exit_code == 2
    _assert_one_line(result, "error", ir / name, problem)
    assert not (tmp_path / "fused.png").exists()


def test_read_image_names_the_file_for_every_case(tmp_path):
    for case, (name, make, problem) in BAD_IR.items():
        path = tmp_path / case.replace(" ", "_") / name
        path.parent.mkdir()
        make(path)
        with pytest.raises(ImageReadError) as caught:
            read_image(path)
        message = str(caught.value)
        assert "\n" not in message and message.startswith(f"{path}: "), (case, message)
        if problem:
            assert re.match(problem, message[len(f"{path}: "):]), (case, message)


def test_bomb_is_refused_before_decoding_and_the_limit_is_configurable(tmp_path, monkeypatch):
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(_png_header_only(30000, 30000))
    with pytest.raises(ImageTooLargeError, match="bomb.png: 30000x30000 is 900.0 megapixels"):
        read_image(bomb)
    with pytest.raises(ImageReadError, match=r"bomb.png: cannot read image \(image file is truncated"):
        read_image(bomb, max_pixels=10**9)  # allowed by the limit: decoding then fails on the missing data
    good = tmp_path / "good.png"
    Image.fromarray(_pixels("ir", GOOD)).save(good)
    with pytest.raises(ImageTooLargeError, match=r"good.png: 64x48 is 0.0 megapixels, more than the limit of 0.003"):
        read_image(good, max_pixels=3000)
    monkeypatch.setenv(io.MAX_PIXELS_ENV, "3000")
    with pytest.raises(ImageTooLargeError):
        read_image(good)
    monkeypatch.setenv(io.MAX_PIXELS_ENV, "lots")
    with pytest.raises(ValueError, match="IVFUSE_MAX_PIXELS='lots'"):
        read_image(good)


def test_max_pixels_option_refuses_large_pairs_and_bad_values(pair_folders, tmp_path, monkeypatch):
    monkeypatch.delenv(io.MAX_PIXELS_ENV, raising=False)
    ir, vis = pair_folders
    result = _run("fuse", "--ir", ir / f"{GOOD}.png", "--vis", vis / f"{GOOD}.png", "-o", tmp_path / "a.png", "--max-pixels", "3000")
    assert result.exit_code == 2 and not (tmp_path / "a.png").exists()
    _assert_one_line(result, "error", ir / f"{GOOD}.png", "64x48 is 0.0 megapixels, more than the limit of 0.003 megapixels")
    result = _run("fuse", "--ir", ir, "--vis", vis, "-o", tmp_path / "b", "--max-pixels", "0")
    assert result.exit_code == 2 and "Invalid value for '--max-pixels'" in result.stderr
    monkeypatch.setenv(io.MAX_PIXELS_ENV, "-5")
    result = _run("fuse", "--ir", ir, "--vis", vis, "-o", tmp_path / "b")
    assert result.exit_code == 2 and "IVFUSE_MAX_PIXELS" in result.stderr and not (tmp_path / "b").exists()


# Inputs that are odd but valid: each is read under a documented policy and the pair is fused.
def _cmyk_jpeg(path: Path) -> None:
    Image.fromarray(_pixels("vi", BAD)).convert("CMYK").save(path, format="JPEG", quality=95)


def _png_named_jpg(path: Path) -> None:
    Image.fromarray(_pixels("vi", BAD)).save(path, format="PNG")


def _palette_png(path: Path) -> None:
    Image.fromarray(_pixels("vi", BAD)).convert("P", palette=Image.Palette.ADAPTIVE).save(path)


def test_policies_cmyk_wrong_extension_and_palette_give_colour(tmp_path):
    rgb = _pixels("vi", BAD) / 255.0
    for make, name, tolerance in ((_cmyk_jpeg, "c.jpg", 0.1), (_png_named_jpg, "p.jpg", 0), (_palette_png, "pal.png", 0.1)):
        make(tmp_path / name)
        image = read_image(tmp_path / name)
        assert image.shape == rgb.shape, name
        assert np.abs(image - rgb).mean() <= tolerance + 1e-6, name


def test_policy_16bit_and_float_tiff_read_like_the_8bit_image(tmp_path):
    levels = _pixels("ir", BAD)
    Image.fromarray(levels.astype(np.uint16) * 257).save(tmp_path / "u16.tif")
    Image.fromarray(levels.astype(np.float32) / 255).save(tmp_path / "f32.tif")
    expected = levels.astype(np.float32) / 255
    np.testing.assert_allclose(read_image(tmp_path / "u16.tif"), expected, atol=1e-6)
    np.testing.assert_allclose(read_image(tmp_path / "f32.tif"), expected, atol=1e-6)
    Image.fromarray(levels.astype(np.float32) * 2 + 250).save(tmp_path / "kelvin.tif")
    stretched = read_image(tmp_path / "kelvin.tif", bit16="minmax")
    assert stretched.min() == 0 and stretched.max() == 1


def test_policy_exif_orientation_is_applied_to_every_image(tmp_path):
    rgb = _pixels("vi", BAD)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise for display
    Image.fromarray(rgb).save(tmp_path / "rot.jpg", exif=exif, quality=95)
    assert read_image(tmp_path / "rot.jpg").shape == (64, 48, 3)
    # An IR without the tag and a rotated visible image are not a registered pair as displayed.
    Image.fromarray(_pixels("ir", BAD)).save(tmp_path / "ir.png")
    result = _run("fuse", "--ir", tmp_path / "ir.png", "--vis", tmp_path / "rot.jpg", "-o", tmp_path / "f.png")
    assert result.exit_code == 2 and not (tmp_path / "f.png").exists()
    _assert_one_line(result, "error", tmp_path / "rot.jpg", r"size 48x64 differs from IR .*ir.png \(64x48\)")
    Image.fromarray(_pixels("ir", BAD)).save(tmp_path / "ir_rot.jpg", exif=exif, quality=95)
    result = _run("fuse", "--ir", tmp_path / "ir_rot.jpg", "--vis", tmp_path / "rot.jpg", "-o", tmp_path / "f.png", "--threads", "1")
    assert result.exit_code == 0
    assert Image.open(tmp_path / "f.png").size == (48, 64)


def test_policy_alpha_is_dropped_and_false_colour_ir_becomes_luma(tmp_path):
    grey, rgb = _pixels("ir", BAD), _pixels("vi", BAD)
    Image.fromarray(np.dstack([grey, 255 - grey]), "LA").save(tmp_path / "la.png")
    np.testing.assert_array_equal(np.rint(read_image(tmp_path / "la.png") * 255), grey)
    Image.fromarray(np.dstack([rgb, grey]), "RGBA").save(tmp_path / "rgba.png")
    assert read_image(tmp_path / "rgba.png").shape == rgb.shape
    Image.fromarray(rgb).save(tmp_path / "vi.png")
    result = _run("fuse", "--ir", tmp_path / "rgba.png", "--vis", tmp_path / "vi.png", "-o", tmp_path / "f.png", "--threads", "1")
    assert result.exit_code == 0 and np.asarray(Image.open(tmp_path / "f.png")).shape == rgb.shape


@pytest.mark.parametrize("channels", [2, 4])
def test_api_refuses_ir_arrays_of_2_or_4_channels(channels):
    ir = np.random.default_rng(0).random((48, 64, channels), dtype=np.float32)
    vis = _pixels("vi", BAD) / np.float32(255)
    with pytest.raises(ValueError, match=rf"ir has shape \(48, 64, {channels}\); expected \(H, W\), \(H, W, 1\) or \(H, W, 3\)"):
        Fuser().fuse(ir, vis)


def test_one_by_one_pair_is_fused_and_a_one_pixel_size_difference_is_refused(pair_folders, tmp_path):
    ir, vis = pair_folders
    Image.fromarray(_pixels("ir", BAD)[:1, :1]).save(ir / "one.png")
    Image.fromarray(_pixels("vi", BAD)[:1, :1]).save(vis / "one.png")
    Image.fromarray(_pixels("ir", BAD)[:, :63]).save(ir / "x.png")  # visible x.png is 64 wide
    out = tmp_path / "fused"
    result = _run("fuse", "--ir", ir, "--vis", vis, "-o", out, "--threads", "1", "--quiet")
    assert result.exit_code == 1
    assert Image.open(out / "one.png").size == (1, 1) and (out / f"{GOOD}.png").is_file()
    assert not (out / "x.png").exists()
    _assert_one_line(result, "warning", vis / "x.png", r"size 64x48 differs from IR .*x.png \(63x48\)")


def test_duplicate_stems_are_named_and_the_rest_fused(pair_folders, tmp_path):
    ir, vis = pair_folders
    Image.fromarray(_pixels("ir", BAD)).save(ir / "x.png")
    Image.fromarray(_pixels("ir", BAD)).save(ir / "x.jpg")
    out = tmp_path / "fused"
    result = _run("fuse", "--ir", ir, "--vis", vis, "-o", out, "--threads", "1", "--quiet")
    assert result.exit_code == 1 and (out / f"{GOOD}.png").is_file() and not (out / "x.png").exists()
    for name in ("x.png", "x.jpg"):
        _assert_one_line(result, "warning", ir / name, "no partner with the same name")


def test_unicode_and_space_paths_work_and_errors_name_them(tmp_path):
    folder = tmp_path / "données thermiques" / "ночь 1"
    folder.mkdir(parents=True)
    Image.fromarray(_pixels("ir", GOOD)).save(folder / "ir é.png")
    Image.fromarray(_pixels("vi", GOOD)).save(folder / "vi 可见.png")
    result = _run("fuse", "--ir", folder / "ir é.png", "--vis", folder / "vi 可见.png", "-o", folder / "sortie ü.png", "--threads", "1")
    assert result.exit_code == 0 and (folder / "sortie ü.png").is_file()
    (folder / "vide ß.png").write_bytes(b"")
    result = _run("fuse", "--ir", folder / "vide ß.png", "--vis", folder / "vi 可见.png", "-o", folder / "autre.png")
    assert result.exit_code == 2
    _assert_one_line(result, "error", folder / "vide ß.png", r"empty file")


def test_unreadable_input_file(pair_folders, tmp_path, monkeypatch):
    ir, vis = pair_folders
    Image.fromarray(_pixels("ir", BAD)).save(ir / "x.png")
    (ir / "x.png").chmod(0)
    if os.geteuid() == 0:
        # root reads mode-0 files anyway: make open() answer as it does for other users.
        real_open = open

        def denied(file, *args, **kwargs):
            if str(file) == str(ir / "x.png"):
                raise PermissionError(errno.EACCES, "Permission denied", str(file))
            return real_open(file, *args, **kwargs)

        monkeypatch.setattr("builtins.open", denied)
    out = tmp_path / "fused"
    result = _run("fuse", "--ir", ir, "--vis", vis, "-o", out, "--threads", "1", "--quiet")
    assert result.exit_code == 1 and (out / f"{GOOD}.png").is_file() and not (out / "x.png").exists()
    _assert_one_line(result, "warning", ir / "x.png", r"cannot read image \(permission denied\)")


def test_output_folder_not_writable(pair_folders, tmp_path, monkeypatch):
    ir, vis = pair_folders
    out = tmp_path / "locked"
    out.mkdir()
    out.chmod(0o555)
    if os.geteuid() == 0:
        # root writes into mode-555 folders anyway: make creating a file there fail as for other users.
        real_mkstemp = tempfile.mkstemp

        def denied(*args, dir=None, **kwargs):
            if Path(dir) == out:
                raise PermissionError(errno.EACCES, "Permission denied", str(dir))
            return real_mkstemp(*args, dir=dir, **kwargs)

        monkeypatch.setattr(tempfile, "mkstemp", denied)
    result = _run("fuse", "--ir", ir / f"{GOOD}.png", "--vis", vis / f"{GOOD}.png", "-o", out / "f.png", "--threads", "1")
    out.chmod(0o755)
    assert result.exit_code == 2 and list(out.iterdir()) == []
    _assert_one_line(result, "error", out / "f.png", r"cannot write \(permission denied\)")


def test_output_path_that_is_a_file_or_an_input(pair_folders, tmp_path):
    ir, vis = pair_folders
    existing = tmp_path / "notes.txt"
    existing.write_text("keep me")
    result = _run("fuse", "--ir", ir, "--vis", vis, "-o", existing)
    assert result.exit_code == 2 and existing.read_text() == "keep me"
    _assert_one_line(result, "error", existing, "exists and is not a folder")
    before = (vis / f"{GOOD}.png").read_bytes()
    result = _run("fuse", "--ir", ir / f"{GOOD}.png", "--vis", vis / f"{GOOD}.png", "-o", vis / f"{GOOD}.png", "--threads", "1")
    assert result.exit_code == 2 and (vis / f"{GOOD}.png").read_bytes() == before
    _assert_one_line(result, "error", vis / f"{GOOD}.png", "is an input of this pair; refusing to overwrite it")


def test_broken_input_beside_an_existing_output_is_named_as_such(pair_folders, tmp_path):
    # The output-is-an-input check must not trip over an input that does not resolve.
    ir, vis = pair_folders
    BAD_IR["broken symlink"][1](ir / "x.png")
    out = tmp_path / "fused"
    out.mkdir()
    (out / "x.png").write_bytes(b"earlier output")
    result = _run("fuse", "--ir", ir, "--vis", vis, "-o", out, "--threads", "1", "--quiet")
    assert result.exit_code == 1 and (out / "x.png").read_bytes() == b"earlier output"
    _assert_one_line(result, "warning", ir / "x.png", r"no such file \(broken symbolic link\)$")
    result = _run("fuse", "--ir", ir / "x.png", "--vis", vis / "x.png", "-o", out / "x.png")
    assert result.exit_code == 2
    _assert_one_line(result, "error", ir / "x.png", r"no such file \(broken symbolic link\)$")


def test_disk_full_while_writing_keeps_earlier_outputs_and_leaves_no_partial_file(pair_folders, tmp_path, monkeypatch):
    ir, vis = pair_folders
    Image.fromarray(_pixels("ir", BAD)).save(ir / "x.png")
    real_fsync, calls = os.fsync, []

    def full_after_first(descriptor):
        calls.append(descriptor)
        if len(calls) > 1:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_fsync(descriptor)

    monkeypatch.setattr(os, "fsync", full_after_first)
    out = tmp_path / "fused"
    result = _run("fuse", "--ir", ir, "--vis", vis, "-o", out, "--threads", "1", "--quiet")
    assert result.exit_code == 1
    assert sorted(p.name for p in out.iterdir()) == [f"{GOOD}.png"]  # no x.png, no temporary file
    _assert_one_line(result, "warning", out / "x.png", r"cannot write \(no space left on device\)")


def test_unexpected_error_in_one_pair_is_one_line_and_debug_shows_the_traceback(pair_folders, tmp_path, monkeypatch):
    ir, vis = pair_folders
    Image.fromarray(_pixels("ir", BAD)).save(ir / "x.png")
    real_fuse = Fuser.fuse

    def fails_on_bad(self, ir_image, vis_image, **kwargs):
        if np.allclose(ir_image, _pixels("ir", BAD) / 255.0):
            raise RuntimeError("simulated bug\nsecond line")
        return real_fuse(self, ir_image, vis_image, **kwargs)

    monkeypatch.setattr(Fuser, "fuse", fails_on_bad)
    out = tmp_path / "fused"
    result = _run("fuse", "--ir", ir, "--vis", vis, "-o", out, "--threads", "1", "--quiet")
    assert result.exit_code == 1 and (out / f"{GOOD}.png").is_file() and not (out / "x.png").exists()
    _assert_one_line(result, "warning", f"{ir / 'x.png'} + {vis / 'x.png'}", "unexpected RuntimeError: simulated bug$")
    result = _run("fuse", "--ir", ir / "x.png", "--vis", vis / "x.png", "-o", tmp_path / "one.png")
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert result.stderr.strip() == "error: unexpected RuntimeError: simulated bug (run 'ivfuse --debug ...' for the traceback)"
    result = _run("--debug", "fuse", "--ir", ir / "x.png", "--vis", vis / "x.png", "-o", tmp_path / "one.png")
    assert isinstance(result.exception, RuntimeError) and not (tmp_path / "one.png").exists()


def test_debug_adds_the_traceback_to_expected_errors(tmp_path):
    (tmp_path / "e.png").write_bytes(b"")
    result = _run("--debug", "fuse", "--ir", tmp_path / "e.png", "--vis", tmp_path / "e.png", "-o", tmp_path / "f.png")
    assert result.exit_code == 2 and "Traceback" in result.stderr and "error: " in result.stderr.splitlines()[-1]


def test_segment_reports_the_bad_pair_and_writes_the_good(pair_folders, tmp_path):
    ir, vis = pair_folders
    _truncated("PNG")(ir / "x.png")
    out = tmp_path / "seg"
    result = _run("segment", "--ir", ir, "--vis", vis, "-o", out, "--threads", "1", "--quiet")
    assert result.exit_code == 1, result.output
    assert (out / "labels" / f"{GOOD}.png").is_file() and (out / "overlays" / f"{GOOD}.png").is_file()
    assert not list(out.rglob("x.png"))
    _assert_one_line(result, "warning", ir / "x.png", r"cannot read image")


def test_segment_refuses_a_bomb_with_one_line(pair_folders, tmp_path):
    ir, vis = pair_folders
    (ir / "x.png").write_bytes(_png_header_only(30000, 30000))
    result = _run("segment", "--ir", ir / "x.png", "--vis", vis / "x.png", "-o", tmp_path / "seg")
    assert result.exit_code == 2 and not list((tmp_path / "seg").rglob("x.png"))
    _assert_one_line(result, "error", ir / "x.png", "30000x30000 is 900.0 megapixels")


def test_eval_skips_bad_fused_and_source_images_with_one_line_each(pair_folders, tmp_path):
    ir, vis = pair_folders
    Image.fromarray(_pixels("ir", BAD)).save(ir / "x.png")
    (ir / "y.png").write_bytes(_png_header_only(30000, 30000))
    Image.fromarray(_pixels("vi", BAD)).save(vis / "y.png")
    fused = tmp_path / "method"
    fused.mkdir()
    Image.fromarray(_pixels("vi", GOOD)).save(fused / f"{GOOD}.png")
    (fused / "x.png").write_text("not an image")
    report = tmp_path / "report"
    result = _run("eval", "--ir", ir, "--vis", vis, "--fused", f"m={fused}", "-o", report, "--metrics", "EN,SD", "--grid-images", "0", "--quiet")
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    assert re.search(rf"warning: skipped x \[m\]: {re.escape(str(fused / 'x.png'))}: cannot read image", result.stderr)
    assert re.search(rf"warning: skipped y \[all methods\]: {re.escape(str(ir / 'y.png'))}: 30000x30000", result.stderr)
    rows = (report / "per_image.csv").read_text()
    assert f",{GOOD}," in rows and ",x," not in rows and ",y," not in rows


def test_label_values_outside_the_classes_name_the_file(tmp_path):
    Image.fromarray(np.array([[0, 8, 255], [9, 200, 1]], np.uint8)).save(tmp_path / "label.png")
    with pytest.raises(ImageReadError, match=r"label.png: label values outside 0..8 and 255: \[9, 200\]$"):
        read_label(tmp_path / "label.png")
    (tmp_path / "bomb.png").write_bytes(_png_header_only(30000, 30000))
    with pytest.raises(ImageTooLargeError, match="bomb.png: 30000x30000"):
        read_label(tmp_path / "bomb.png")


def test_api_fuse_folder_and_fuse_pair_files_report_bad_files(pair_folders, tmp_path):
    ir, vis = pair_folders
    (ir / "x.png").write_bytes(_png_header_only(30000, 30000))
    messages = []
    report = fuse_folder(Fuser(), ir, vis, tmp_path / "fused", on_error=messages.append)
    assert [p.name for p in report.written] == [f"{GOOD}.png"] and len(report.failed) == 1
    assert messages == report.failed and messages[0].startswith(f"{ir / 'x.png'}: 30000x30000")
    with pytest.raises(ImageTooLargeError):
        fuse_pair_files(Fuser(), ir / "x.png", vis / "x.png", tmp_path / "one.png")
    assert not (tmp_path / "one.png").exists()


def _mirrored(image: np.ndarray, height: int, width: int) -> np.ndarray:
    reps = (-(-height // image.shape[0]), -(-width // image.shape[1])) + (1,) * (image.ndim - 2)
    flipped = np.concatenate([image, image[::-1]], axis=0)
    flipped = np.concatenate([flipped, flipped[:, ::-1]], axis=1)
    return np.tile(flipped, reps)[:height, :width]


def test_large_real_image_is_tiled_and_file_path_matches_the_api(tmp_path):
    torch.set_num_threads(1)
    with Image.open(TINY / "ir" / f"{GOOD}.png") as ir_image, Image.open(TINY / "vi" / f"{GOOD}.png") as vis_image:
        ir, vis = _mirrored(np.asarray(ir_image), 300, 430), _mirrored(np.asarray(vis_image), 300, 430)
    Image.fromarray(ir).save(tmp_path / "ir.png")
    Image.fromarray(vis).save(tmp_path / "vi.png")
    fuser = Fuser(tile_size=128, tile_overlap=16)
    expected = fuser.fuse(ir / np.float32(255), vis / np.float32(255))
    # The file path fuses into the visible array it read (one copy less); it must give the same image.
    written = fuse_pair_files(fuser, tmp_path / "ir.png", tmp_path / "vi.png", tmp_path / "f.png")
    fused = np.asarray(Image.open(written))
    assert fused.shape == (300, 430, 3)
    np.testing.assert_array_equal(fused, np.round(np.clip(expected, 0, 1) * 255).astype(np.uint8))
    assert np.abs(fused.astype(int) - vis).mean() > 1  # really fused, not the visible image passed through
