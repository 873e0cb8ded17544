"""Seconds per fusion metric for one real 640x480 triple, on one core.

Triple: the first MSRS test pair (IR, visible) with their average as the fused image.
Target: all metrics together in <= 0.5 s. Each metric is timed as the best of a few
repeats, so that a busy machine distorts the numbers less.

    PYTHONPATH=src python benchmarks/metrics_speed.py [--convention canonical] [--repeats 5]
"""

import os

# One core: set before NumPy/SciPy load their thread pools.
for variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[variable] = "1"

import argparse  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from ivfuse.metrics import METRIC_NAMES, compute_all, to_gray255  # noqa: E402

MSRS_TEST = Path(__file__).resolve().parents[1] / ".." / "shared" / "datasets" / "MSRS" / "test"


def best_time(function, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--convention", default="canonical")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    name = sorted(p.name for p in (MSRS_TEST / "ir").iterdir())[0]
    ir = to_gray255(np.asarray(Image.open(MSRS_TEST / "ir" / name)))
    vis = to_gray255(np.asarray(Image.open(MSRS_TEST / "vi" / name)))
    fused = np.floor((ir + vis) / 2 + 0.5)
    print(f"MSRS test {name}, {ir.shape[1]}x{ir.shape[0]}, F = average, convention {args.convention}, 1 thread")
    print(f"{'metric':<8}{'seconds':>10}")
    for metric in METRIC_NAMES:
        seconds = best_time(lambda: compute_all(ir, vis, fused, [metric], args.convention), args.repeats)
        print(f"{metric:<8}{seconds:>10.4f}")
    total = best_time(lambda: compute_all(ir, vis, fused, None, args.convention), args.repeats)
    print(f"{'total':<8}{total:>10.4f}   (target <= 0.5 s: {'met' if total <= 0.5 else 'NOT met'})")


if __name__ == "__main__":
    main()
