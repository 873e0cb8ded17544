"""Speed and memory of `ivfuse.Fuser` on a real 640x480 pair and a 4K pair; PyTorch vs ONNX Runtime.

    python benchmarks/fusion_speed.py [--threads 2] [--repeats 15] [--weights FILE]
    python benchmarks/fusion_speed.py --backends [--threads 2] [--repeats 15] [--weights FILE] [--calibration DIR]

Without ``--backends``: a Markdown table of median seconds per pair (network + colour, image
reading and writing excluded, model load excluded), peak resident memory of the process,
parameters and multiply-accumulates (MACs) per pair. Each row runs in its own process so peak
memory is that row's alone. The 4K pair is the bundled MSRS pair resized to 3840x2160 (bicubic).

With ``--backends``: the same ``Fuser.fuse`` call at 640x480 with the PyTorch backend and with
ONNX Runtime (each graph optimisation level, the dynamic-shape session only, and, with
``--calibration DIR``, a folder with ir/ and vi/ training pairs, the static int8 model), all in
one process and interleaved round by round, so that load from other processes hits every
variant alike. Each timed call starts after a 0.1 s pause, so threads
still busy from the previous variant's call (OpenMP and ONNX Runtime workers spin for a while
after a run) do not slow the next one. Prints the median seconds per pair, the speed-up over
PyTorch (ratio of medians), and how far each output is from the PyTorch output in grey levels
(max, and PSNR in dB).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ivfuse import Fuser
from ivfuse.io import read_image
from ivfuse.onnx_backend import OPTIMIZATION_LEVELS, OnnxNetwork, export_onnx
from ivfuse.serialization import load_network, shipped_weights
from ivfuse.models.interaction import SpatialCrossAttention

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
CASES = {
    "640x480": dict(size=None, channels_last=False),
    "640x480 channels_last": dict(size=None, channels_last=True),
    "3840x2160 (tiled) channels_last": dict(size=(3840, 2160), channels_last=True),
}


def load_pair(size: tuple[int, int] | None) -> tuple[np.ndarray, np.ndarray]:
    ir, vis = read_image(EXAMPLES / "ir" / "00004N.png"), read_image(EXAMPLES / "vi" / "00004N.png")
    if size is None:
        return ir, vis
    resize = lambda a: np.asarray(Image.fromarray(np.uint8(np.rint(a * 255))).resize(size, Image.BICUBIC), np.float32) / 255
    return resize(ir), resize(vis)


def count_macs(fuser: Fuser, ir: np.ndarray, vis: np.ndarray) -> int:
    """Multiply-accumulates of fusing one pair (all tiles): convolutions, linear layers, attention."""
    total = 0

    def conv_hook(module, inputs, output):
        nonlocal total
        kernel = module.weight.shape[1] * module.weight.shape[2] * module.weight.shape[3]
        total += output.numel() * kernel

    def linear_hook(module, inputs, output):
        nonlocal total
        total += output.numel() * module.in_features

    def attention_hook(module, inputs, output):
        nonlocal total
        query, context = inputs
        keys = -(-context.shape[2] // module.kv_stride) * -(-context.shape[3] // module.kv_stride)
        total += 2 * query.shape[2] * query.shape[3] * keys * query.shape[1]  # QK^T and AV

    handles = []
    for module in fuser.network.modules():
        if isinstance(module, torch.nn.Conv2d):
            handles.append(module.register_forward_hook(conv_hook))
        elif isinstance(module, torch.nn.Linear):
            handles.append(module.register_forward_hook(linear_hook))
        elif isinstance(module, SpatialCrossAttention):
            handles.append(module.register_forward_hook(attention_hook))
    fuser.fuse(ir, vis)
    for handle in handles:
        handle.remove()
    return total


def run_case(name: str, threads: int, repeats: int, weights: str | None) -> dict:
    torch.set_num_threads(threads)
    case = CASES[name]
    fuser = Fuser(weights, channels_last=case["channels_last"])
    ir, vis = load_pair(case["size"])
    repeats = repeats if case["size"] is None else max(3, repeats // 5)
    fuser.fuse(ir, vis)  # warm-up
    seconds = []
    for _ in range(repeats):
        began = time.perf_counter()
        fuser.fuse(ir, vis)
        seconds.append(time.perf_counter() - began)
    return {
        "case": name,
        "median_s": statistics.median(seconds),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "parameters": sum(p.numel() for p in fuser.network.parameters()),
        "gmacs": count_macs(fuser, ir, vis) / 1e9,
        "repeats": repeats,
    }


class DynamicShapeNetwork(OnnxNetwork):
    """:class:`OnnxNetwork` that never builds fixed-shape sessions, to measure what they gain."""

    def _session_for(self, shape: tuple[int, ...]):
        return self.session


def backend_variants(weights: str | None, calibration: str | None) -> dict[str, Fuser]:
    """The PyTorch fuser and ONNX Runtime fusers (each optimisation level, dynamic shapes, int8
    when ``calibration`` names a folder of training pairs) of one network."""
    network = load_network(weights or shipped_weights("fusion"), expected="FusionNet")
    model = export_onnx(network)
    runners = {f"onnxruntime {level}": OnnxNetwork(model, optimization=level) for level in OPTIMIZATION_LEVELS[1:]}
    runners["onnxruntime all, dynamic shapes"] = DynamicShapeNetwork(model)
    if calibration:
        runners["onnxruntime all int8"] = OnnxNetwork(export_onnx(network, quantize="int8", calibration=calibration))
    variants = {"torch (channels_last)": Fuser(weights)}
    for name, runner in runners.items():
        variants[name] = Fuser(weights, backend="onnxruntime")
        variants[name].network = runner
    return variants


def compare_backends(threads: int, repeats: int, weights: str | None, calibration: str | None) -> None:
    torch.set_num_threads(threads)
    ir, vis = load_pair(None)
    variants = backend_variants(weights, calibration)
    reference = np.rint(variants["torch (channels_last)"].fuse(ir, vis) * 255)
    for fuser in variants.values():  # warm-up; the second call builds ONNX Runtime's fixed-shape session
        fuser.fuse(ir, vis)
        fuser.fuse(ir, vis)
    load_before = os.getloadavg()
    seconds = {name: [] for name in variants}
    for _ in range(repeats):
        for name, fuser in variants.items():
            time.sleep(0.1)
            began = time.perf_counter()
            fuser.fuse(ir, vis)
            seconds[name].append(time.perf_counter() - began)
    base = statistics.median(seconds["torch (channels_last)"])
    load = "; ".join(", ".join(f"{value:.1f}" for value in values) for values in (load_before, os.getloadavg()))
    print(f"torch {torch.__version__}, onnxruntime {ort_version()}, {threads} threads, 640x480, median of {repeats} interleaved rounds after warm-up")
    print(f"{os.cpu_count()} CPUs; nice {os.nice(0)}; load average (1, 5, 15 min) before; after: {load}\n")
    print("| backend | median s/pair | speed-up vs torch | max grey-level difference | PSNR vs torch (dB) |")
    print("|---|---|---|---|---|")
    for name, fuser in variants.items():
        median = statistics.median(seconds[name])
        difference = np.abs(np.rint(fuser.fuse(ir, vis) * 255) - reference)
        mse = float(np.mean(difference**2))
        psnr = "identical" if mse == 0 else f"{10 * np.log10(255**2 / mse):.1f}"
        print(f"| {name} | {median:.3f} | {base / median:.2f}x | {difference.max():.0f} | {psnr} |")


def ort_version() -> str:
    import onnxruntime

    return onnxruntime.__version__


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--weights")
    parser.add_argument("--backends", action="store_true", help="Compare PyTorch and ONNX Runtime at 640x480 instead.")
    parser.add_argument("--calibration", help="With --backends: folder with ir/ and vi/ training pairs; adds the int8 row.")
    parser.add_argument("--case", choices=list(CASES), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.backends:
        compare_backends(args.threads, args.repeats, args.weights, args.calibration)
        return
    if args.case:
        print(json.dumps(run_case(args.case, args.threads, args.repeats, args.weights)))
        return
    rows = []
    for name in CASES:
        command = [sys.executable, __file__, "--case", name, "--threads", str(args.threads), "--repeats", str(args.repeats)]
        command += ["--weights", args.weights] if args.weights else []
        rows.append(json.loads(subprocess.run(command, check=True, capture_output=True, text=True).stdout))
    print(f"torch {torch.__version__}, {args.threads} threads, median of the repeats after one warm-up\n")
    print("| case | median s/pair | peak memory (MB) | parameters | GMACs/pair | repeats |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['case']} | {row['median_s']:.3f} | {row['peak_rss_mb']:.0f} | {row['parameters']:,} | {row['gmacs']:.2f} | {row['repeats']} |")


if __name__ == "__main__":
    main()
