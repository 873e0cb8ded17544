"""ivfuse.video and ``ivfuse fuse-video``: short clips built from real MSRS test frames."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from ivfuse import Fuser
from ivfuse.cli import main
from ivfuse.io import read_image, write_image
from ivfuse.segmenter import Segmenter, overlay
from ivfuse.video import ImageSequence, VideoFile, check_pairing, h264_writer, pad_to_even, side_by_side

av = pytest.importorskip("av")

HEIGHT, WIDTH, FRAMES = 96, 128, 6
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def frames(msrs_test):
    """``FRAMES`` IR and visible crops of consecutive MSRS test pairs (day and night), float32."""
    names = sorted(p.name for p in (msrs_test / "ir").iterdir())[:FRAMES]
    crop = (..., slice(200, 200 + HEIGHT), slice(300, 300 + WIDTH))
    irs = [read_image(msrs_test / "ir" / name)[crop] for name in names]
    viss = [read_image(msrs_test / "vi" / name)[crop + (slice(None),)] for name in names]
    return irs, viss


def _write_clip(path: Path, images, rate=Fraction(25)) -> Path:
    height, width = images[0].shape[:2]
    with h264_writer(path, width, height, rate, crf=0) as write:
        for image in images:
            rgb = np.repeat(image[..., None], 3, axis=2) if image.ndim == 2 else image
            write(np.round(rgb * 255).astype(np.uint8))
    return path


@pytest.fixture(scope="module")
def clips(frames, tmp_path_factory):
    folder = tmp_path_factory.mktemp("clips")
    irs, viss = frames
    return _write_clip(folder / "ir.mp4", irs), _write_clip(folder / "vi.mp4", viss)


def _decode(path: Path) -> tuple[list[np.ndarray], Fraction]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return [f.to_ndarray(format="rgb24").astype(np.float32) / 255 for f in container.decode(stream)], stream.average_rate


def _run(*arguments):
    return CliRunner().invoke(main, ["fuse-video", *map(str, arguments), "--threads", "1", "--quiet"])


def test_fuses_video_files_in_colour_at_the_source_rate(clips, tmp_path):
    out = tmp_path / "out" / "fused.mp4"
    result = _run("--ir", clips[0], "--vis", clips[1], "-o", out, "--batch-size", "4")
    assert result.exit_code == 0, result.output
    assert f"wrote {out}: {FRAMES} frames, {WIDTH}x{HEIGHT}, 25 frames/s" in result.stdout
    assert os.listdir(out.parent) == ["fused.mp4"]
    decoded, rate = _decode(out)
    assert rate == 25 and len(decoded) == FRAMES and decoded[0].shape == (HEIGHT, WIDTH, 3)
    # What the fuser makes of the decoded input frames, after one more H.264 round trip.
    with VideoFile(clips[0], grey=True) as ir, VideoFile(clips[1]) as vis:
        expected = [Fuser().fuse(a, b) for a, b in zip(ir, vis)]
    errors = [np.abs(got - want).mean() for got, want in zip(decoded, expected)]
    assert max(errors) < 0.02, errors
    assert np.abs(decoded[0][..., 0] - decoded[0][..., 2]).mean() > 0.01  # colour kept


def test_fuses_frame_folders_in_natural_name_order(frames, tmp_path):
    irs, viss = frames
    for index, (ir, vis) in enumerate(zip(irs, viss)):
        # f0, f5, f10, ...: sorted as text, f10 would come before f5.
        write_image(tmp_path / "ir" / f"f{index * 5}.png", ir)
        write_image(tmp_path / "vi" / f"f{index * 5}.png", vis)
    (tmp_path / "vi" / "notes.txt").write_text("not a frame")
    out = tmp_path / "fused.mkv"
    result = _run("--ir", tmp_path / "ir", "--vis", tmp_path / "vi", "-o", out, "--fps", "30000/1001")
    assert result.exit_code == 0, result.output
    decoded, rate = _decode(out)
    assert rate == Fraction(30000, 1001) and len(decoded) == FRAMES
    fuser = Fuser()
    for got, ir, vis in zip(decoded, irs, viss):
        assert np.abs(got - fuser.fuse(ir, vis)).mean() < 0.02


def test_side_by_side_with_segmentation_overlay(clips, tmp_path):
    out = tmp_path / "panels.mp4"
    result = _run("--ir", clips[0], "--vis", clips[1], "-o", out, "--side-by-side", "--overlay")
    assert result.exit_code == 0, result.output
    decoded, _ = _decode(out)
    assert len(decoded) == FRAMES and decoded[0].shape == (HEIGHT, 3 * WIDTH, 3)
    segmenter = Segmenter()
    painted = 0
    with VideoFile(clips[0], grey=True) as ir_clip, VideoFile(clips[1]) as vis_clip:
        for got, ir, vis in zip(decoded, ir_clip, vis_clip):
            labels, fused = segmenter.segment(ir, vis)
            painted += int(labels.any())
            expected = side_by_side(ir, vis, overlay(fused, labels))
            assert np.abs(got - expected).mean() < 0.02
    assert painted, "some frame of the clip should show a class, or the overlay is not tested"


def test_onnxruntime_backend_fuses_in_batches_like_torch(clips, tmp_path):
    pytest.importorskip("onnxruntime")
    out = tmp_path / "fused.mp4"
    result = _run("--ir", clips[0], "--vis", clips[1], "-o", out, "--backend", "onnxruntime", "--batch-size", "3", "--max-frames", "3")
    assert result.exit_code == 0, result.output
    decoded, _ = _decode(out)
    with VideoFile(clips[0], grey=True) as ir, VideoFile(clips[1]) as vis:
        expected = Fuser().fuse_batch(list(ir)[:3], list(vis)[:3])
    assert len(decoded) == 3 and max(np.abs(got - want).mean() for got, want in zip(decoded, expected)) < 0.02


def test_max_frames_fuses_a_prefix_and_accepts_different_lengths(frames, clips, tmp_path):
    short = _write_clip(tmp_path / "short.mp4", frames[1][:4])
    out = tmp_path / "fused.mp4"
    result = _run("--ir", clips[0], "--vis", short, "-o", out, "--max-frames", "3")
    assert result.exit_code == 0, result.output
    assert len(_decode(out)[0]) == 3


def test_odd_frame_sizes_are_padded_not_resized(frames, tmp_path):
    irs, viss = frames
    for index in range(2):
        write_image(tmp_path / "ir" / f"{index}.png", irs[index][:95, :127])
        write_image(tmp_path / "vi" / f"{index}.png", viss[index][:95, :127])
    out = tmp_path / "fused.mp4"
    result = _run("--ir", tmp_path / "ir", "--vis", tmp_path / "vi", "-o", out)
    assert result.exit_code == 0, result.output
    assert "frames are 127x95" in result.stderr and "last row and column are repeated once" in result.stderr
    decoded, _ = _decode(out)
    assert decoded[0].shape == (96, 128, 3)
    expected = pad_to_even(Fuser().fuse(irs[0][:95, :127], viss[0][:95, :127]))
    assert np.abs(decoded[0] - expected).mean() < 0.02


def test_pad_to_even_repeats_the_last_row_and_column():
    frame = np.arange(15).reshape(3, 5)
    padded = pad_to_even(frame)
    assert padded.shape == (4, 6)
    assert (padded[:3, :5] == frame).all() and (padded[3, :5] == frame[2]).all() and (padded[:3, 5] == frame[:, 4]).all()
    even = np.zeros((4, 6, 3))
    assert pad_to_even(even) is even


def test_check_pairing_counts_and_rates(clips, frames, tmp_path):
    slow = _write_clip(tmp_path / "slow.mp4", frames[1], rate=Fraction(30000, 1001))
    with VideoFile(clips[0], grey=True) as ir, VideoFile(slow) as vis:
        assert (ir.count, ir.rate, vis.rate) == (FRAMES, 25, Fraction(30000, 1001))
        assert check_pairing(ir, vis, fps=Fraction(10)).rate == 10
        assert check_pairing(ir, vis, max_frames=4, fps=Fraction(10)).frames == 4
    seq = tmp_path / "seq"
    for index, ir in enumerate(frames[0][:3]):
        write_image(seq / f"{index}.png", ir)
    with VideoFile(clips[0], grey=True) as ir:
        pairing = check_pairing(ir, ImageSequence(seq), max_frames=3)
    assert (pairing.frames, pairing.rate) == (3, 25)


# Bad input: a one-line error naming the file and the problem, exit code 2, no output video
# (not even a partial or temporary one), and an earlier output of the same name left as it was.


@pytest.fixture()
def earlier_output(tmp_path):
    out = tmp_path / "out" / "fused.mp4"
    out.parent.mkdir()
    out.write_bytes(b"an earlier, complete result")
    return out


def _assert_failed_cleanly(result, earlier_output, *fragments):
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    assert "Traceback" not in result.output
    assert os.listdir(earlier_output.parent) == ["fused.mp4"]
    assert earlier_output.read_bytes() == b"an earlier, complete result"


def _audio_only(path: Path) -> Path:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=16000, layout="mono")
        tone = np.sin(np.arange(16000, dtype=np.float32) / 10)[None]
        for start in range(0, 16000, 1024):
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(tone[:, start:start + 1024]), format="fltp", layout="mono")
            frame.sample_rate = 16000
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


def test_file_without_video_stream(clips, tmp_path, earlier_output):
    audio = _audio_only(tmp_path / "sound.mp4")
    result = _run("--ir", audio, "--vis", clips[1], "-o", earlier_output)
    _assert_failed_cleanly(result, earlier_output, f"{audio}: no video stream")


def test_file_that_is_not_a_video(clips, tmp_path, earlier_output):
    text = tmp_path / "notes.mp4"
    text.write_text("hello")
    result = _run("--ir", clips[0], "--vis", text, "-o", earlier_output)
    _assert_failed_cleanly(result, earlier_output, f"{text}: cannot open video (Invalid data found")


def test_mismatched_frame_counts(frames, clips, tmp_path, earlier_output):
    short = _write_clip(tmp_path / "short.mp4", frames[1][:4])
    result = _run("--ir", clips[0], "--vis", short, "-o", earlier_output)
    _assert_failed_cleanly(result, earlier_output, f"{short}: 4 frames but {clips[0]} has {FRAMES}", "--max-frames 4")


def test_mismatched_frame_rates(frames, clips, tmp_path, earlier_output):
    fast = _write_clip(tmp_path / "fast.mp4", frames[1], rate=Fraction(30))
    result = _run("--ir", clips[0], "--vis", fast, "-o", earlier_output)
    _assert_failed_cleanly(result, earlier_output, f"{fast}: 30 frames/s but IR {clips[0]} has 25 frames/s", "--fps")


def test_mismatched_frame_sizes(frames, clips, tmp_path, earlier_output):
    small = _write_clip(tmp_path / "small.mp4", [vis[:64, :64] for vis in frames[1]])
    result = _run("--ir", clips[0], "--vis", small, "-o", earlier_output)
    _assert_failed_cleanly(result, earlier_output, f"{small}: frames are 64x64 but IR {clips[0]} frames are 128x96", "never resized")


def _corrupt_middle(clip: Path, target: Path) -> Path:
    """``clip`` with the packet of its fourth frame zeroed: the file opens, decoding fails midway."""
    with av.open(str(clip)) as container:
        packets = [(p.pos, p.size) for p in container.demux(video=0) if p.size]
    data = bytearray(clip.read_bytes())
    position, size = packets[3]
    data[position:position + size] = bytes(size)
    target.write_bytes(bytes(data))
    return target


def test_corrupt_frame_in_the_middle(clips, tmp_path, earlier_output):
    broken = _corrupt_middle(clips[1], tmp_path / "broken.mp4")
    result = _run("--ir", clips[0], "--vis", broken, "-o", earlier_output, "--batch-size", "1")
    _assert_failed_cleanly(result, earlier_output, f"{broken}: corrupt video data after frame 3")


def test_corrupt_image_in_a_frame_folder(frames, tmp_path, earlier_output):
    for index, (ir, vis) in enumerate(zip(*frames)):
        write_image(tmp_path / "ir" / f"{index}.png", ir)
        write_image(tmp_path / "vi" / f"{index}.png", vis)
    data = (tmp_path / "vi" / "3.png").read_bytes()
    (tmp_path / "vi" / "3.png").write_bytes(data[: len(data) // 2])
    result = _run("--ir", tmp_path / "ir", "--vis", tmp_path / "vi", "-o", earlier_output)
    _assert_failed_cleanly(result, earlier_output, f"{tmp_path / 'vi' / '3.png'}: cannot read image")


def test_without_pyav_says_how_to_install(clips, monkeypatch, earlier_output):
    monkeypatch.setitem(sys.modules, "av", None)  # makes `import av` raise ImportError
    result = _run("--ir", clips[0], "--vis", clips[1], "-o", earlier_output)
    _assert_failed_cleanly(result, earlier_output, 'pip install "ivfuse[video]"')


def test_seg_weights_without_overlay_is_refused(clips, tmp_path, earlier_output):
    result = _run("--ir", clips[0], "--vis", clips[1], "-o", earlier_output, "--seg-weights", tmp_path / "seg.safetensors")
    _assert_failed_cleanly(result, earlier_output, "--seg-weights is for the segmentation of --overlay")


def _cli(*arguments) -> list[str]:
    return [sys.executable, "-m", "ivfuse", "fuse-video", *map(str, arguments), "--threads", "1"]


def test_corrupt_video_in_a_real_process_prints_one_line(clips, tmp_path, earlier_output):
    """FFmpeg's own log goes to the C stderr, which only a real process shows."""
    broken = _corrupt_middle(clips[1], tmp_path / "broken.mp4")
    done = subprocess.run(_cli("--ir", clips[0], "--vis", broken, "-o", earlier_output, "--quiet"), capture_output=True, text=True, cwd=REPO, timeout=120)
    assert done.returncode == 2
    assert done.stderr.splitlines() == [f"error: {broken}: corrupt video data after frame 3 (Invalid data found when processing input)"]
    assert earlier_output.read_bytes() == b"an earlier, complete result"


def test_killed_job_leaves_no_partial_video(frames, tmp_path):
    for index in range(60):
        write_image(tmp_path / "ir" / f"{index}.png", frames[0][index % FRAMES])
        write_image(tmp_path / "vi" / f"{index}.png", frames[1][index % FRAMES])
    out = tmp_path / "out" / "fused.mp4"
    job = subprocess.Popen(_cli("--ir", tmp_path / "ir", "--vis", tmp_path / "vi", "-o", out, "--quiet"), cwd=REPO, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not (out.parent.is_dir() and os.listdir(out.parent)) and job.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    job.send_signal(signal.SIGKILL)
    job.wait()
    assert job.returncode == -signal.SIGKILL, "the job ended before it could be killed"
    assert not out.exists()
