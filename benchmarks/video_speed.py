"""End-to-end speed of `ivfuse fuse-video` at 640x480: decode + fuse + encode, frames per second.

    python benchmarks/video_speed.py [--backend torch onnxruntime] [--frames 40] [--batch-size 4]
                                     [--threads 2] [--rounds 3] [--presets veryfast medium] [--data DIR]

Builds an IR and a visible H.264 clip (640x480, 25 frames/s, crf 18) from the first ``--frames``
MSRS test pairs in a temporary folder, then runs :func:`ivfuse.video.fuse_video` on them, the
backends interleaved round by round so that load from other processes hits all of them alike.
Model loading is excluded; everything from opening the clips to the renamed output file is in.
Prints a Markdown table: median frames/s per backend over the rounds, each backend's ratio to
the first, and the process's CPU time per frame (all threads). Target: >= 6 frames/s
on a 2-core CPU with the onnxruntime backend. On a loaded machine the frame rate drops with the
share of the CPU the job gets, but CPU time per frame hardly does, and a job that has the CPU to
itself takes no longer than its CPU time (it never waits for disk or network): so
1000 / (CPU ms per frame) is a lower bound of the frame rate on an idle machine with that many
cores or more.
A second table times the stages without fusion, also interleaved: decoding both clips
(ms per frame pair) and encoding the visible frames with each x264 ``--presets`` entry at
crf 18 (ms per frame, output size).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch

from ivfuse import Fuser
from ivfuse.io import read_image
from ivfuse.video import VideoFile, fuse_video, h264_writer

DATA = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "MSRS" / "test"


def build_clips(data: Path, frames: int, folder: Path) -> tuple[Path, Path]:
    """IR and visible clips of the first ``frames`` pairs of ``data`` (sorted by name)."""
    names = sorted(p.name for p in (data / "ir").iterdir())[:frames]
    clips = []
    for kind in ("ir", "vi"):
        path = folder / f"{kind}.mp4"
        first = read_image(data / kind / names[0])
        with h264_writer(path, first.shape[1], first.shape[0], Fraction(25)) as write:
            for name in names:
                image = read_image(data / kind / name)
                rgb = np.repeat(image[..., None], 3, axis=2) if image.ndim == 2 else image
                write(np.round(rgb * 255).astype(np.uint8))
        clips.append(path)
    return clips[0], clips[1]


def time_stages(ir: Path, vis: Path, folder: Path, presets: list[str], rounds: int) -> dict[str, list[tuple[float, int]]]:
    """Per round: decode ms per pair, and per preset encode ms per frame with the output's bytes."""
    with VideoFile(vis) as frames:
        rgb = [np.round(frame * 255).astype(np.uint8) for frame in frames]
    times: dict[str, list[tuple[float, int]]] = {"decode": [], **{preset: [] for preset in presets}}
    for _ in range(rounds):
        began = time.perf_counter()
        with VideoFile(ir, grey=True) as ir_frames, VideoFile(vis) as vis_frames:
            pairs = sum(1 for _ in zip(ir_frames, vis_frames))
        times["decode"].append((1000 * (time.perf_counter() - began) / pairs, 0))
        for preset in presets:
            out = folder / f"encoded-{preset}.mp4"
            began = time.perf_counter()
            with h264_writer(out, rgb[0].shape[1], rgb[0].shape[0], Fraction(25), preset=preset) as write:
                for frame in rgb:
                    write(frame)
            times[preset].append((1000 * (time.perf_counter() - began) / len(rgb), out.stat().st_size))
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backend", nargs="+", default=["torch", "onnxruntime"], choices=["torch", "onnxruntime"])
    parser.add_argument("--frames", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--presets", nargs="*", default=["veryfast", "medium"], help="x264 presets to time the encoding with")
    parser.add_argument("--data", type=Path, default=DATA, help="MSRS test folder (ir/, vi/)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    fusers = {backend: Fuser(backend=backend) for backend in args.backend}
    speeds: dict[str, list[float]] = {backend: [] for backend in args.backend}
    cpu_ms: dict[str, list[float]] = {backend: [] for backend in args.backend}
    with tempfile.TemporaryDirectory(prefix="ivfuse-video-speed-") as folder:
        ir, vis = build_clips(args.data, args.frames, Path(folder))
        for _ in range(args.rounds):
            for backend, fuser in fusers.items():
                began, cpu_began = time.perf_counter(), time.process_time()
                report = fuse_video(fuser, ir, vis, Path(folder) / f"fused-{backend}.mp4", batch_size=args.batch_size)
                speeds[backend].append(report.frames / (time.perf_counter() - began))
                cpu_ms[backend].append(1000 * (time.process_time() - cpu_began) / report.frames)
        stages = time_stages(ir, vis, Path(folder), args.presets, args.rounds)
    print(f"640x480, {args.frames} frames, batch size {args.batch_size}, {args.threads} threads, {args.rounds} rounds interleaved\n")
    print("| backend | median frames/s | rounds (frames/s) | ratio to first | median CPU ms/frame | idle-machine bound (frames/s) |")
    print("|---|---|---|---|---|---|")
    first = statistics.median(speeds[args.backend[0]])
    for backend, values in speeds.items():
        median = statistics.median(values)
        cpu = statistics.median(cpu_ms[backend])
        print(f"| {backend} | {median:.2f} | {', '.join(f'{v:.2f}' for v in values)} | {median / first:.2f} | {cpu:.0f} | >= {1000 / cpu:.2f} |")
    print("\n| stage | median ms/frame | rounds (ms/frame) | output bytes |")
    print("|---|---|---|---|")
    for stage, values in stages.items():
        name = "decode IR + visible (per pair)" if stage == "decode" else f"encode, preset {stage}, crf 18"
        size = "" if stage == "decode" else str(values[0][1])
        print(f"| {name} | {statistics.median(v for v, _ in values):.1f} | {', '.join(f'{v:.1f}' for v, _ in values)} | {size} |")


if __name__ == "__main__":
    main()
