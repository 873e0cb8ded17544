"""Score candidate intensity targets of the content loss directly, before training toward them.

A target is an image built from the two sources alone (no network). If a target cannot reach a
metric itself, a network trained to it will not either, so this ranks objectives in seconds per
pair instead of an hour of training each. Only train-side pairs are read: every 8th of the sorted
MSRS/train pairs and every 6th name of RoadScene/splits/train.txt (about 20 each); the measuring
sets (MSRS/test, TNO/test, RoadScene dev) are never touched.

    PYTHONPATH=src python benchmarks/content_targets.py [--data ../shared/datasets] \
        [--targets max,mean,...] [--out runs/content_targets.csv]

Prints one table per pair set (mean over its pairs of Qabf, EN, PSNR, SF, SD, VIF, Nabf, as
``ivfuse eval`` computes them on 8-bit grey levels) and writes every pair's scores to ``--out``.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ivfuse.io import find_pairs, read_image
from ivfuse.metrics import compute_all, to_gray255

METRICS = ["Qabf", "EN", "PSNR", "SF", "SD", "VIF", "Nabf"]


def blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian blur, reflect-padded, of a ``(1, 1, H, W)`` image (sigma in pixels)."""
    radius = max(1, int(3 * sigma))
    taps = torch.exp(-(torch.arange(-radius, radius + 1, dtype=x.dtype) ** 2) / (2 * sigma**2))
    taps = taps / taps.sum()
    x = F.pad(x, (radius, radius, radius, radius), mode="reflect")
    x = F.conv2d(x, taps.view(1, 1, 1, -1))
    return F.conv2d(x, taps.view(1, 1, -1, 1))


def sobel(x: torch.Tensor) -> torch.Tensor:
    from ivfuse.models.fusion import sobel_magnitude

    return sobel_magnitude(x)


def local_stretch(x: torch.Tensor, sigma: float, gain: float) -> torch.Tensor:
    """``mu + gain (x - mu)`` with ``mu`` the Gaussian local mean: a fixed local contrast gain."""
    mu = blur(x, sigma)
    return mu + gain * (x - mu)


def detail_boost(ir: torch.Tensor, vis: torch.Tensor, base: torch.Tensor, k: float) -> torch.Tensor:
    """``base`` plus ``k`` times the fine detail (x - blur_2(x)) of the source with the stronger edge."""
    detail_ir, detail_vis = ir - blur(ir, 2.0), vis - blur(vis, 2.0)
    return base + k * torch.where(sobel(ir) >= sobel(vis), detail_ir, detail_vis)


def salient_mix(ir: torch.Tensor, vis: torch.Tensor, sigma: float = 16.0, tau: float = 0.1) -> torch.Tensor:
    """Max where IR stands out of its surround (hot objects), mean elsewhere."""
    weight = ((ir - blur(ir, sigma)) / tau).clamp(0, 1)
    return weight * torch.maximum(ir, vis) + (1 - weight) * (ir + vis) / 2


def _mix(ir, vis, share):
    return (1 - share) * torch.maximum(ir, vis) + share * (ir + vis) / 2


#: name -> function of (ir, vis), both (1, 1, H, W) float in [0, 1]; the result is clamped and
#: rounded to 8 bits before scoring, as a fused image is.
TARGETS = {
    "max": lambda ir, vis: torch.maximum(ir, vis),
    "mean": lambda ir, vis: (ir + vis) / 2,
    "mix0.5": lambda ir, vis: _mix(ir, vis, 0.5),
    "mean_gstretch1.8": lambda ir, vis: ((ir + vis) / 2 - ((ir + vis) / 2).mean()) * 1.8 + ((ir + vis) / 2).mean(),
    "mean_lstretch1.8_s32": lambda ir, vis: local_stretch((ir + vis) / 2, 32, 1.8),
    "mix0.5_lstretch1.4_s32": lambda ir, vis: local_stretch(_mix(ir, vis, 0.5), 32, 1.4),
    "max_lstretch1.2_s8": lambda ir, vis: local_stretch(torch.maximum(ir, vis), 8, 1.2),
    "max_lstretch1.3_s32": lambda ir, vis: local_stretch(torch.maximum(ir, vis), 32, 1.3),
    "max_detail0.5": lambda ir, vis: detail_boost(ir, vis, torch.maximum(ir, vis), 0.5),
    "max_detail1.0": lambda ir, vis: detail_boost(ir, vis, torch.maximum(ir, vis), 1.0),
    "salient_mix": salient_mix,
    "salient_mix_lstretch1.5_s32": lambda ir, vis: local_stretch(salient_mix(ir, vis), 32, 1.5),
    "mix0.5_lstretch1.4_s32_detail0.5": lambda ir, vis: detail_boost(ir, vis, local_stretch(_mix(ir, vis, 0.5), 32, 1.4), 0.5),
}


def pair_sets(data: Path) -> dict[str, list[tuple[str, Path, Path]]]:
    """The train-side pairs: every 8th MSRS/train pair, every 6th RoadScene splits/train.txt name."""
    msrs = find_pairs(data / "MSRS/train/ir", data / "MSRS/train/vi").pairs[::8]
    road = find_pairs(data / "RoadScene/train/ir", data / "RoadScene/train/vi").pairs
    train_names = set((data / "RoadScene/splits/train.txt").read_text().split())
    road = [pair for pair in road if pair[0] in train_names][::6]
    return {"MSRS/train": msrs, "RoadScene/train-split": road}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="../shared/datasets", type=Path)
    parser.add_argument("--targets", default=",".join(TARGETS), help="comma-separated names of TARGETS")
    parser.add_argument("--out", default="runs/content_targets.csv", type=Path)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    names = args.targets.split(",")
    rows = []
    for set_name, pairs in pair_sets(args.data).items():
        scores = {name: [] for name in names}
        for stem, ir_path, vis_path in pairs:
            ir_grey, vis_grey = to_gray255(read_image(ir_path)), to_gray255(read_image(vis_path))
            ir, vis = (torch.from_numpy(x / 255.0)[None, None] for x in (ir_grey, vis_grey))
            for name in names:
                target = TARGETS[name](ir, vis)[0, 0].clamp(0, 1).numpy()
                result = compute_all(ir_grey, vis_grey, to_gray255(target), metrics=METRICS)
                scores[name].append(result)
                rows.append({"set": set_name, "pair": stem, "target": name, **result})
        print(f"\n{set_name} ({len(pairs)} pairs)\n")
        print("| target | " + " | ".join(METRICS) + " |")
        print("|---|" + "---:|" * len(METRICS))
        for name in names:
            means = [np.mean([s[m] for s in scores[name]]) for m in METRICS]
            print(f"| {name} | " + " | ".join(f"{v:.4f}" if m in ("Qabf", "VIF", "Nabf") else f"{v:.3f}" for m, v in zip(METRICS, means)) + " |")
        sys.stdout.flush()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["set", "pair", "target", *METRICS])
        writer.writeheader()
        writer.writerows(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
