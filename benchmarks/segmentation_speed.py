"""Speed of the segmentation network on one 640x480 frame (fusion excluded), per architecture.

    python benchmarks/segmentation_speed.py [--threads 2] [--repeats 15] [--weights FILE ...] [--config TOML ...] [--flip] [--scales S,S,...] [--window N]

Each ``--weights`` file (default: the shipped ``segmentation.safetensors``) and each
``--config`` (its ``[segmentation]`` section, random weights: the speed does not depend on the
values) is one row: median seconds of :func:`ivfuse.models.class_probabilities` (the network
and its softmax; with ``--flip`` / ``--scales``, that test-time augmentation) under
``torch.no_grad()`` on a ``(1, 3, 480, 640)`` tensor after one warm-up, parameters and
multiply-accumulates of the convolutions (of one plain run). The budget is 0.15 s on 2 threads.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch

from ivfuse.models import SegmentationConfig, SegmentationNet, class_probabilities
from ivfuse.serialization import load_network, shipped_weights

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


def convolution_macs(network: torch.nn.Module, image: torch.Tensor) -> int:
    """Multiply-accumulates of the network's convolutions on ``image``."""
    total = 0

    def hook(module, inputs, output):
        nonlocal total
        total += output.numel() * module.weight.shape[1] * module.weight.shape[2] * module.weight.shape[3]

    handles = [m.register_forward_hook(hook) for m in network.modules() if isinstance(m, torch.nn.Conv2d)]
    with torch.no_grad():
        network(image)
    for handle in handles:
        handle.remove()
    return total


def seconds_per_frame(network: torch.nn.Module, image: torch.Tensor, repeats: int, **augmentation) -> float:
    with torch.no_grad():
        class_probabilities(network, image, **augmentation)  # warm-up
        times = []
        for _ in range(repeats):
            began = time.perf_counter()
            class_probabilities(network, image, **augmentation)
            times.append(time.perf_counter() - began)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--weights", action="append", default=[], help="segmentation .safetensors (repeatable)")
    parser.add_argument("--config", action="append", default=[], help="TOML with a [segmentation] section (repeatable)")
    parser.add_argument("--flip", action="store_true", help="time flip test-time augmentation too")
    parser.add_argument("--scales", default="1", help="comma-separated resize factors of test-time augmentation, e.g. 0.5,0.75,1")
    parser.add_argument("--window", type=int, default=0, help="time segmentation in overlapping windows of this size (0: whole frames; ivfuse segment --window)")
    args = parser.parse_args()
    augmentation = dict(flip=args.flip, scales=tuple(float(scale) for scale in args.scales.split(",")), window=args.window or None)
    torch.set_num_threads(args.threads)
    networks = {path: load_network(path, expected="SegmentationNet") for path in args.weights}
    for path in args.config:
        with open(path, "rb") as stream:
            networks[path] = SegmentationNet(SegmentationConfig.from_dict(tomllib.load(stream).get("segmentation", {})))
    if not networks:
        networks["shipped"] = load_network(shipped_weights("segmentation"), expected="SegmentationNet")
    image = torch.rand(1, 3, 480, 640)
    tta = (" flip" if args.flip else "") + (f" scales {args.scales}" if augmentation["scales"] != (1.0,) else "")
    tta += f" windows of {args.window}" if args.window else ""
    print(f"torch {torch.__version__}, {args.threads} threads, 640x480, median of {args.repeats} after one warm-up"
          f"{', test-time augmentation:' + tta if tta else ''}\n")
    print("| network | s/frame | parameters | GMACs/frame |")
    print("|---|---|---|---|")
    for name, network in networks.items():
        network.eval()
        seconds = seconds_per_frame(network, image, args.repeats, **augmentation)
        parameters = sum(p.numel() for p in network.parameters())
        print(f"| {name} | {seconds:.3f} | {parameters:,} | {convolution_macs(network, image) / 1e9:.2f} |")


if __name__ == "__main__":
    main()
