"""What each rewrite of the ONNX export form is worth: the fusion network alone in ONNX Runtime.

    python benchmarks/onnx_rewrites.py [--threads 2] [--rounds 30] [--weights FILE] [--size 640x480]

Exports the fusion network (default: the shipped weights) once per variant of
:data:`ivfuse.onnx_backend.REWRITES` (all of them; each one left out; none) and runs each
export in a fixed-shape ONNX Runtime session (graph optimisation ``all``, as ``Fuser`` does) on
the bundled MSRS pair's IR and visible luminance. The variants are timed interleaved round by
round, each call after a 0.05 s pause, so that other load hits every variant alike. Prints the
median milliseconds of one network run per variant, its difference from the export with every
rewrite, and the largest difference of its output from the PyTorch network's (all rewrites
compute the same values up to float rounding).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import onnxruntime
import torch

from ivfuse.io import read_image
from ivfuse.onnx_backend import REWRITES, export_onnx
from ivfuse.serialization import load_network, shipped_weights

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def session(model: bytes, threads: int, height: int, width: int) -> onnxruntime.InferenceSession:
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads, options.log_severity_level = threads, 1, 3
    options.add_session_config_entry("session.force_spinning_stop", "1")
    for name, size in (("batch", 1), ("height", height), ("width", width)):
        options.add_free_dimension_override_by_name(name, size)
    return onnxruntime.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--weights", default=None, help="fusion .safetensors (default: the shipped one)")
    arguments = parser.parse_args()
    torch.set_num_threads(arguments.threads)
    network = load_network(arguments.weights or shipped_weights("fusion"), expected="FusionNet").eval()
    ir = read_image(EXAMPLES / "ir" / "00004N.png")
    vis = read_image(EXAMPLES / "vi" / "00004N.png")
    vis_y = vis @ np.array([0.299, 0.587, 0.114], np.float32)
    feed = {"ir": ir[None, None].astype(np.float32), "vis_y": vis_y[None, None].astype(np.float32)}
    height, width = ir.shape
    with torch.inference_mode():
        reference = network(*(torch.from_numpy(feed[name]) for name in ("ir", "vis_y"))).numpy()
    variants = {"all rewrites": REWRITES}
    variants.update({f"without {rewrite}": tuple(r for r in REWRITES if r != rewrite) for rewrite in REWRITES})
    variants["none"] = ()
    sessions = {name: session(export_onnx(network, rewrites=rewrites), arguments.threads, height, width) for name, rewrites in variants.items()}
    distance = {name: float(np.abs(run.run(None, feed)[0] - reference).max()) for name, run in sessions.items()}
    times = {name: [] for name in sessions}
    for _ in range(arguments.rounds):
        for name, run in sessions.items():
            time.sleep(0.05)
            began = time.perf_counter()
            run.run(None, feed)
            times[name].append(time.perf_counter() - began)
    medians = {name: 1000 * statistics.median(values) for name, values in times.items()}
    print(f"onnxruntime {onnxruntime.__version__}, {arguments.threads} threads, {width}x{height}, "
          f"median of {arguments.rounds} interleaved rounds (after one warm-up run each)\n")
    print("| export form | median ms per run | vs all rewrites (ms) | max difference from PyTorch |")
    print("|---|---:|---:|---:|")
    for name, median in medians.items():
        print(f"| {name} | {median:.1f} | {median - medians['all rewrites']:+.1f} | {distance[name]:.1e} |")


if __name__ == "__main__":
    main()
