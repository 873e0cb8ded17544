from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ivfuse import io
from ivfuse.io import ImageReadError, WriteError, find_pairs, read_image, write_image

from .conftest import EXAMPLES

IR_8BIT = EXAMPLES / "ir" / "00004N.png"
VIS_RGB = EXAMPLES / "vi" / "00004N.png"


def test_reads_8bit_grey_and_rgb_as_float_in_unit_range():
    ir, vis = read_image(IR_8BIT), read_image(VIS_RGB)
    assert ir.shape == (480, 640) and ir.dtype == np.float32
    assert vis.shape == (480, 640, 3) and vis.dtype == np.float32
    assert 0.0 <= ir.min() and ir.max() <= 1.0
    np.testing.assert_array_equal(np.rint(ir * 255), np.asarray(Image.open(IR_8BIT)))


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_16bit_full_range_matches_8bit(tmp_path, suffix):
    levels = np.asarray(Image.open(IR_8BIT))
    path = tmp_path / f"ir16{suffix}"
    Image.fromarray(levels.astype(np.uint16) * 257).save(path)  # 257 maps 0..255 onto 0..65535 exactly
    np.testing.assert_allclose(read_image(path), read_image(IR_8BIT), atol=1e-6)


def test_16bit_minmax_stretches_a_narrow_radiometric_band(tmp_path):
    counts = np.array([[7000, 7500], [8000, 9000]], dtype=np.uint16)
    path = tmp_path / "raw.png"
    Image.fromarray(counts).save(path)
    np.testing.assert_allclose(read_image(path, bit16="minmax"), [[0, 0.25], [0.5, 1]], atol=1e-6)
    assert read_image(path).max() < 0.15  # full range keeps the raw, dark values


def test_rgba_drops_alpha_and_palette_grey_stays_grey(tmp_path):
    rgb = np.asarray(Image.open(VIS_RGB))[:32, :32]
    rgba = np.dstack([rgb, np.full(rgb.shape[:2], 7, np.uint8)])
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    np.testing.assert_array_equal(np.rint(read_image(tmp_path / "a.png") * 255), rgb)
    Image.fromarray(np.asarray(Image.open(IR_8BIT))[:32, :32]).convert("P").save(tmp_path / "p.png")
    assert read_image(tmp_path / "p.png").ndim == 2


def test_missing_corrupt_and_truncated_files_name_the_file(tmp_path):
    with pytest.raises(ImageReadError, match="missing.png: no such file"):
        read_image(tmp_path / "missing.png")
    (tmp_path / "text.png").write_text("not an image")
    with pytest.raises(ImageReadError, match="text.png: cannot read image"):
        read_image(tmp_path / "text.png")
    data = IR_8BIT.read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageReadError, match="cut.png: cannot read image"):
        read_image(tmp_path / "cut.png")


def test_write_rounds_without_stretching(tmp_path):
    image = np.array([[0.11, 0.2], [0.31, 0.4]], np.float32)
    write_image(tmp_path / "x.png", image)
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "x.png")), [[28, 51], [79, 102]])


def test_16bit_rgb_png_is_a_valid_png(tmp_path):
    image = np.random.default_rng(0).random((5, 7, 3)).astype(np.float32)
    write_image(tmp_path / "c16.png", image, bits=16)
    levels = np.rint(image * 65535).astype(np.uint16)
    with Image.open(tmp_path / "c16.png") as decoded:  # Pillow decodes 16-bit RGB to its high bytes
        assert decoded.size == (7, 5)
        np.testing.assert_array_equal(np.asarray(decoded.convert("RGB")), (levels >> 8).astype(np.uint8))


def test_failed_write_leaves_neither_output_nor_temporary(tmp_path, monkeypatch):
    def broken_save(self, stream, format=None, **kwargs):
        stream.write(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Image.Image, "save", broken_save)
    with pytest.raises(WriteError, match="out.png: cannot write"):
        write_image(tmp_path / "out.png", np.zeros((4, 4), np.float32))
    assert list(tmp_path.iterdir()) == []


def test_write_into_a_path_below_a_file_fails_cleanly(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(WriteError, match="cannot write"):
        write_image(tmp_path / "file" / "out.png", np.zeros((4, 4), np.float32))


def test_written_files_get_normal_permissions(tmp_path):
    path = write_image(tmp_path / "x.png", np.zeros((2, 2), np.float32))
    mask = io._umask()
    assert path.stat().st_mode & 0o777 == 0o666 & ~mask


def test_find_pairs_matches_stems_across_extensions(tmp_path):
    for folder, names in {"ir": ["a.png", "b.png", "c.png", "notes.txt"], "vi": ["a.jpg", "b.png", "d.png"]}.items():
        (tmp_path / folder).mkdir()
        for name in names:
            (tmp_path / folder / name).write_bytes(b"")
    listing = find_pairs(tmp_path / "ir", tmp_path / "vi")
    assert [stem for stem, _, _ in listing.pairs] == ["a", "b"]
    assert [p.name for p in listing.only_ir] == ["c.png"] and [p.name for p in listing.only_vis] == ["d.png"]
    assert [p.name for p in listing.not_images] == ["notes.txt"]


def test_find_pairs_on_missing_folder():
    with pytest.raises(ImageReadError, match="nowhere: no such folder"):
        find_pairs(Path("nowhere"), EXAMPLES / "vi")


def test_labels_are_read_as_class_ids_and_bad_values_named(tmp_path):
    ids = np.array([[0, 1, 8], [255, 2, 3]], np.uint8)
    Image.fromarray(ids).save(tmp_path / "ok.png")
    np.testing.assert_array_equal(io.read_label(tmp_path / "ok.png"), ids)
    Image.fromarray(np.array([[0, 9, 12]], np.uint8)).save(tmp_path / "bad.png")
    with pytest.raises(ImageReadError, match=r"bad.png: label values outside 0..8 and 255: \[9, 12\]"):
        io.read_label(tmp_path / "bad.png")
    Image.fromarray(np.zeros((2, 2, 3), np.uint8)).save(tmp_path / "rgb.png")
    with pytest.raises(ImageReadError, match="rgb.png: cannot read label"):
        io.read_label(tmp_path / "rgb.png")


def test_read_pair_refuses_different_sizes(tmp_path):
    Image.fromarray(np.zeros((4, 5), np.uint8)).save(tmp_path / "ir.png")
    Image.fromarray(np.zeros((4, 6, 3), np.uint8)).save(tmp_path / "vi.png")
    with pytest.raises(ImageReadError, match=r"vi.png: size 6x4 differs from IR .*ir.png \(5x4\)"):
        io.read_pair(tmp_path / "ir.png", tmp_path / "vi.png")
