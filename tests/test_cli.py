from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from ivfuse import fuser
from ivfuse.cli import main
from ivfuse.io import WriteError

from .conftest import EXAMPLES


def _crop(source: Path, target: Path, height: int = 96, width: int = 128) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    with Image.open(source) as image:
        image.crop((0, 0, width, height)).save(target)


@pytest.fixture()
def messy_folders(tmp_path):
    """Two good pairs, one truncated IR, one IR without partner, one pair of mismatched sizes, one text file."""
    ir, vis = tmp_path / "ir", tmp_path / "vi"
    for stem in ("00004N", "00055D"):
        _crop(EXAMPLES / "ir" / f"{stem}.png", ir / f"{stem}.png")
        _crop(EXAMPLES / "vi" / f"{stem}.png", vis / f"{stem}.jpg")
    _crop(EXAMPLES / "ir" / "00004N.png", ir / "broken.png")
    _crop(EXAMPLES / "vi" / "00004N.png", vis / "broken.png")
    data = (ir / "broken.png").read_bytes()
    (ir / "broken.png").write_bytes(data[: len(data) // 3])
    _crop(EXAMPLES / "ir" / "05.png", ir / "lonely.png")
    _crop(EXAMPLES / "ir" / "05.png", ir / "sizes.png", 64, 64)
    _crop(EXAMPLES / "vi" / "05.png", vis / "sizes.png", 64, 80)
    (vis / "README.txt").write_text("notes")
    return ir, vis


def test_folder_with_bad_files_fuses_the_good_pairs_and_reports_the_rest(messy_folders, tmp_path):
    ir, vis = messy_folders
    out = tmp_path / "fused"
    result = CliRunner().invoke(main, ["fuse", "--ir", str(ir), "--vis", str(vis), "-o", str(out), "--quiet"])
    assert result.exit_code == 1, result.output
    assert sorted(p.name for p in out.iterdir()) == ["00004N.png", "00055D.png"]
    assert Image.open(out / "00004N.png").size == (128, 96) and Image.open(out / "00004N.png").mode == "RGB"
    messages = result.stderr
    assert "broken.png: cannot read image" in messages
    assert "lonely.png: no partner" in messages
    assert "sizes.png: size 80x64 differs from IR" in messages
    assert "README.txt: not an image file, skipped" in messages
    assert "fused 2 pair(s), skipped 0, failed 2, unmatched 1" in result.stdout


def test_skip_existing_resumes_an_interrupted_run(tmp_path):
    ir, vis, out = tmp_path / "ir", tmp_path / "vi", tmp_path / "out"
    for stem in ("00004N", "00055D", "05"):
        _crop(EXAMPLES / "ir" / f"{stem}.png", ir / f"{stem}.png", 64, 64)
        _crop(EXAMPLES / "vi" / f"{stem}.png", vis / f"{stem}.png", 64, 64)
    arguments = ["fuse", "--ir", str(ir), "--vis", str(vis), "-o", str(out), "--quiet"]
    assert CliRunner().invoke(main, arguments).exit_code == 0
    first = {p.name: p.read_bytes() for p in out.iterdir()}
    (out / "00055D.png").unlink()  # as if the run had been killed before this pair
    stamps = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    result = CliRunner().invoke(main, arguments + ["--skip-existing"])
    assert result.exit_code == 0 and "fused 1 pair(s), skipped 2" in result.stdout
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir() if p.name in stamps} == stamps
    assert {p.name: p.read_bytes() for p in out.iterdir()} == first
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


def test_single_pair_to_a_file_with_16bit_output(tmp_path):
    out = tmp_path / "fused16.png"
    result = CliRunner().invoke(main, ["fuse", "--ir", str(EXAMPLES / "ir" / "05.png"), "--vis", str(EXAMPLES / "vi" / "05.png"), "-o", str(out), "--bits", "16"])
    assert result.exit_code == 0, result.output
    with Image.open(out) as image:  # TNO visible is grey: the output is grey, 16-bit
        assert image.mode.startswith("I;16") and image.size == (280, 280)


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["--ir", "missing_dir", "--vis", str(EXAMPLES / "vi")], "missing_dir: no such file or folder"),
        (["--ir", str(EXAMPLES / "ir" / "nope.png"), "--vis", str(EXAMPLES / "vi" / "05.png")], "nope.png: no such file or folder"),
        (["--weights", "absent.safetensors"], "absent.safetensors: weights file not found"),
    ],
)
def test_fatal_errors_are_one_line_with_exit_code_2(tmp_path, arguments, message):
    base = {"--ir": str(EXAMPLES / "ir"), "--vis": str(EXAMPLES / "vi")}
    options = dict(zip(arguments[::2], arguments[1::2]))
    merged = [item for key, value in {**base, **options}.items() for item in (key, value)]
    result = CliRunner().invoke(main, ["fuse", *merged, "-o", str(tmp_path / "out"), "--quiet"])
    assert result.exit_code == 2
    assert result.stderr.strip().count("\n") == 0 and message in result.stderr


def test_empty_folders_and_unwritable_output(tmp_path):
    (tmp_path / "ir").mkdir()
    (tmp_path / "vi").mkdir()
    result = CliRunner().invoke(main, ["fuse", "--ir", str(tmp_path / "ir"), "--vis", str(tmp_path / "vi"), "-o", str(tmp_path / "o")])
    assert result.exit_code == 2 and "no image pairs" in result.stderr
    (tmp_path / "blocker").write_text("a file where the output folder should be")
    result = CliRunner().invoke(main, ["fuse", "--ir", str(EXAMPLES / "ir"), "--vis", str(EXAMPLES / "vi"), "-o", str(tmp_path / "blocker" / "out"), "--quiet"])
    assert result.exit_code == 2 and "cannot write" in result.stderr


def test_segment_without_segmentation_weights_fails_with_one_line(tmp_path):
    arguments = ["segment", "--ir", str(EXAMPLES / "ir" / "05.png"), "--vis", str(EXAMPLES / "vi" / "05.png"), "-o", str(tmp_path)]
    result = CliRunner().invoke(main, [*arguments, "--seg-weights", str(tmp_path / "missing.safetensors")])
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [f"error: {tmp_path / 'missing.safetensors'}: weights file not found"]


def test_segment_writes_class_id_labels_and_palette_overlays(tmp_path):
    from ivfuse.classes import PALETTE
    from ivfuse.models import FusionConfig, FusionNet, SegmentationConfig, SegmentationNet
    from ivfuse.serialization import save_network

    fusion = save_network(FusionNet(FusionConfig(widths=(4, 8, 8, 8))), tmp_path / "fusion.safetensors")
    segmentation = SegmentationNet(SegmentationConfig(detail_widths=(8, 8, 16), context_widths=(8, 8, 16, 16), head_width=16))
    # Bias the head towards class 1 so the overlay must show its palette colour.
    with torch.no_grad():
        segmentation.head[-1].bias[1] = 100.0
    weights = save_network(segmentation, tmp_path / "seg.safetensors")
    ir, vis = tmp_path / "ir", tmp_path / "vi"
    _crop(EXAMPLES / "ir" / "00055D.png", ir / "a.png")
    _crop(EXAMPLES / "vi" / "00055D.png", vis / "a.png")
    out = tmp_path / "out"
    result = CliRunner().invoke(
        main, ["segment", "--ir", str(ir), "--vis", str(vis), "-o", str(out), "--fusion-weights", str(fusion), "--seg-weights", str(weights), "--masks", "--quiet"]
    )
    assert result.exit_code == 0, result.output
    assert np.array(Image.open(out / "masks" / "car" / "a.png")).min() == 255
    assert np.array(Image.open(out / "masks" / "person" / "a.png")).max() == 0
    assert not (out / "probabilities").exists() and (out / "legend.png").is_file()
    labels = np.array(Image.open(out / "labels" / "a.png"))
    assert labels.shape == (96, 128) and labels.dtype == np.uint8 and (labels == 1).all()
    overlay = np.array(Image.open(out / "overlays" / "a.png")).astype(int)
    fused_max = 255 * 0.5 + PALETTE[1] * 0.5 + 1
    assert overlay.shape == (96, 128, 3) and (overlay <= fused_max).all() and overlay[..., 2].mean() > 64


def test_a_write_failure_mid_folder_is_reported_per_pair_and_exits_1(tmp_path, monkeypatch):
    ir, vis, out = tmp_path / "ir", tmp_path / "vi", tmp_path / "out"
    for stem in ("00004N", "00055D"):
        _crop(EXAMPLES / "ir" / f"{stem}.png", ir / f"{stem}.png", 64, 64)
        _crop(EXAMPLES / "vi" / f"{stem}.png", vis / f"{stem}.png", 64, 64)
    original_write = fuser.write_image

    def disk_full_for_second_pair(path, image, **kwargs):
        if "00055D" in str(path):
            raise WriteError(f"{path}: cannot write (No space left on device)")
        return original_write(path, image, **kwargs)

    monkeypatch.setattr(fuser, "write_image", disk_full_for_second_pair)
    result = CliRunner().invoke(main, ["fuse", "--ir", str(ir), "--vis", str(vis), "-o", str(out), "--quiet"])
    assert result.exit_code == 1, result.output
    assert "00055D.png: cannot write (No space left on device)" in result.stderr
    assert [p.name for p in out.iterdir()] == ["00004N.png"]


def test_a_stem_used_twice_is_not_paired(tmp_path):
    ir, vis = tmp_path / "ir", tmp_path / "vi"
    _crop(EXAMPLES / "ir" / "00004N.png", ir / "a.png", 32, 32)
    _crop(EXAMPLES / "ir" / "00004N.png", ir / "a.jpg", 32, 32)
    _crop(EXAMPLES / "vi" / "00004N.png", vis / "a.png", 32, 32)
    _crop(EXAMPLES / "ir" / "05.png", ir / "b.png", 32, 32)
    _crop(EXAMPLES / "vi" / "05.png", vis / "b.png", 32, 32)
    result = CliRunner().invoke(main, ["fuse", "--ir", str(ir), "--vis", str(vis), "-o", str(tmp_path / "out"), "--quiet"])
    assert result.exit_code == 1
    assert "a.jpg: no partner" in result.stderr and "a.png: no partner" in result.stderr
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["b.png"]


def test_16bit_output_to_jpeg_is_refused_before_any_work(tmp_path):
    result = CliRunner().invoke(main, ["fuse", "--ir", str(EXAMPLES / "ir"), "--vis", str(EXAMPLES / "vi"), "-o", str(tmp_path / "o"), "--bits", "16", "--format", "jpg"])
    assert result.exit_code == 2 and "--bits 16 needs --format png" in result.stderr
    assert not (tmp_path / "o").exists()
