"""Peak resident memory of ``ivfuse fuse`` on one pair, per image size.

Each size gets a pair made from a real MSRS test pair by mirror-tiling it up to the size (so the
network sees real image statistics everywhere), written as PNG; then ``ivfuse fuse`` runs on it in
a fresh subprocess and the subprocess's peak RSS (``ru_maxrss`` from ``os.wait4``) is printed.
The whole command is measured: interpreter, torch, weights, decoding, tiled fusion, encoding.

    PYTHONPATH=src python benchmarks/peak_memory.py                      # 640x480, 3840x2160, 8000x6000
    PYTHONPATH=src python benchmarks/peak_memory.py --sizes 8000x6000 --threads 2 --limit-mb 2048

Exits 1 when ``--limit-mb`` is given and a size exceeds it (or a run fails).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
DEFAULT_PAIR = REPO.parent / "shared" / "datasets" / "MSRS" / "test"


def mirror_to_size(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Tile ``image`` ``(h, w[, c])`` by mirroring until it is ``(height, width[, c])``."""
    pad = [(0, max(0, height - image.shape[0])), (0, max(0, width - image.shape[1]))] + [(0, 0)] * (image.ndim - 2)
    while any(after for _, after in pad[:2]):
        step = [(0, min(after, image.shape[axis])) for axis, (_, after) in enumerate(pad[:2])] + pad[2:]
        image = np.pad(image, step, mode="symmetric")
        pad = [(0, max(0, height - image.shape[0])), (0, max(0, width - image.shape[1]))] + pad[2:]
    return image[:height, :width]


def peak_rss_mb(command: list[str]) -> tuple[float, float, int, str]:
    """Run ``command``; return (peak RSS in MB, wall seconds, exit code, last stderr line)."""
    began = time.perf_counter()
    with tempfile.TemporaryFile() as stderr:
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=stderr)
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        stderr.seek(0)
        lines = stderr.read().decode(errors="replace").strip().splitlines()
    # ru_maxrss is in kilobytes on Linux.
    return usage.ru_maxrss / 1024, time.perf_counter() - began, process.returncode, lines[-1] if lines else ""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="640x480,3840x2160,8000x6000", help="WxH,WxH,...")
    parser.add_argument("--source", type=Path, default=DEFAULT_PAIR, help="folder with ir/ and vi/ of the real pair")
    parser.add_argument("--name", default="00004N.png", help="file name of the real pair in source/ir and source/vi")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--tile-size", type=int, default=1024)
    parser.add_argument("--limit-mb", type=float, help="fail when a peak exceeds this")
    args = parser.parse_args()

    ir = np.asarray(Image.open(args.source / "ir" / args.name).convert("L"))
    vis = np.asarray(Image.open(args.source / "vi" / args.name).convert("RGB"))
    print(f"pair: {args.source / 'ir' / args.name} (+ vi), mirror-tiled; --threads {args.threads} --tile-size {args.tile_size}")
    print("| size | megapixels | peak RSS (MB) | wall s | exit |")
    print("|---|---|---|---|---|")
    failed = False
    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        for size in args.sizes.split(","):
            width, height = (int(v) for v in size.lower().split("x"))
            ir_path, vis_path, out_path = work / f"ir_{size}.png", work / f"vi_{size}.png", work / f"fused_{size}.png"
            Image.fromarray(mirror_to_size(ir, height, width)).save(ir_path, compress_level=1)
            Image.fromarray(mirror_to_size(vis, height, width)).save(vis_path, compress_level=1)
            command = [
                sys.executable, "-m", "ivfuse", "fuse", "--ir", str(ir_path), "--vis", str(vis_path), "-o", str(out_path),
                "--threads", str(args.threads), "--tile-size", str(args.tile_size), "--quiet",
            ]
            peak, seconds, code, last = peak_rss_mb(command)
            written = out_path.is_file() and Image.open(out_path).size == (width, height)
            over = args.limit_mb is not None and peak > args.limit_mb
            failed |= over or code != 0 or not written
            print(f"| {width}x{height} | {width * height / 1e6:.1f} | {peak:.0f}{' (over limit)' if over else ''} | {seconds:.1f} | {code} |")
            if code:
                print(f"  stderr: {last}")
            for path in (ir_path, vis_path, out_path):
                path.unlink(missing_ok=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
