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
All of :data:`TARGETS` take about 15 minutes on one core; the tables and what each name means
are in docs/fusion_objective.md.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import numpy as np
import torch

from ivfuse.io import find_pairs, read_image
from ivfuse.losses import ContentWeights, intensity_target, stronger_detail
from ivfuse.losses import gaussian_blur as blur
from ivfuse.metrics import compute_all, to_gray255
from ivfuse.models.fusion import sobel_magnitude as sobel

METRICS = ["Qabf", "EN", "PSNR", "SF", "SD", "VIF", "Nabf"]


def local_stretch(x: torch.Tensor, sigma: float, gain: float) -> torch.Tensor:
    """``mu + gain (x - mu)`` with ``mu`` the Gaussian local mean: a fixed local contrast gain."""
    mu = blur(x, sigma)
    return mu + gain * (x - mu)


def detail_boost(ir: torch.Tensor, vis: torch.Tensor, base: torch.Tensor, k: float) -> torch.Tensor:
    """``base`` plus ``k`` times the fine detail (x - blur_2(x)) of the source with the stronger edge."""
    return base + k * stronger_detail(ir, vis, 2.0)


def flat_detail(ir: torch.Tensor, vis: torch.Tensor, base: torch.Tensor, k: float, level: float = 0.1) -> torch.Tensor:
    """:func:`detail_boost` weighted by flatness ``clamp(1 - max(Sobel) / level, 0, 1)``: detail is
    added where both sources' edges are weak, which Nabf (weighted by the sources' edge strength)
    counts least."""
    flatness = (1 - torch.maximum(sobel(ir), sobel(vis)) / level).clamp(0, 1)
    return base + flatness * (detail_boost(ir, vis, base, k) - base)


def salient_mix(ir: torch.Tensor, vis: torch.Tensor, sigma: float = 16.0, tau: float = 0.1) -> torch.Tensor:
    """Max where IR stands out of its surround (hot objects), mean elsewhere."""
    weight = ((ir - blur(ir, sigma)) / tau).clamp(0, 1)
    return weight * torch.maximum(ir, vis) + (1 - weight) * (ir + vis) / 2


def _mix(ir: torch.Tensor, vis: torch.Tensor, share: float) -> torch.Tensor:
    """``(1 - share) max + share mean`` of the sources."""
    return (1 - share) * torch.maximum(ir, vis) + share * (ir + vis) / 2


def loss_target(share: float, sigma: float, level: float, max_gain: float, sd_gain: float = 0.0, base_gain: float = 1.0, base_sigma: float = 32.0):
    """The content loss's own target (:func:`ivfuse.losses.intensity_target`) with these settings."""
    weights = ContentWeights(mean_share=share, contrast_sigma=sigma, contrast_level=level, max_gain=max_gain, sd_gain=sd_gain,
                             base_gain=base_gain, base_sigma=base_sigma)
    return lambda ir, vis: intensity_target(ir, vis, weights)


#: The shipped content network's intensity target (configs/content_v3.toml's [loss]).
V3_TARGET = loss_target(0.25, 32, 0.0, 2, base_gain=1.5)


def sd_floor(ir: torch.Tensor, vis: torch.Tensor, level: float, max_gain: float = 2.5) -> torch.Tensor:
    """v3's target with its base gain raised, per image, until the target's standard deviation
    reaches ``level`` grey levels (of 255), at most ``max_gain``: low-contrast scenes get more
    base stretch, the others keep v3's 1.5."""
    mix = _mix(ir, vis, 0.25)
    base = blur(mix, 32.0)
    base = base - base.mean()
    centred = mix - mix.mean()
    # var(mix + g base) = level^2, solved for the larger root g.
    var_b, cov, var_x = (base * base).mean(), (centred * base).mean(), (centred * centred).mean()
    root = (-cov + (cov * cov - var_b * (var_x - (level / 255) ** 2)).clamp_min(0).sqrt()) / var_b.clamp_min(1e-12)
    return mix + root.clamp(0.5, max_gain - 1) * base


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
    "mix0.25": lambda ir, vis: _mix(ir, vis, 0.25),
    "mix0.25_adapt_s32_c0.12_g2": loss_target(0.25, 32, 0.12, 2),
    "mix0.25_adapt_s32_c0.08_g2": loss_target(0.25, 32, 0.08, 2),
    "mix0.25_adapt_s16_c0.10_g2": loss_target(0.25, 16, 0.10, 2),
    "mix0.5_adapt_s32_c0.12_g2": loss_target(0.5, 32, 0.12, 2),
    "mix0.5_adapt_s32_c0.16_g2": loss_target(0.5, 32, 0.16, 2),
    "mix0.5_adapt_s32_c0.12_g1.5": loss_target(0.5, 32, 0.12, 1.5),
    "mix0.5_adapt_s64_c0.15_g2": loss_target(0.5, 64, 0.15, 2),
    "max_adapt_s32_c0.08_g2": loss_target(0.0, 32, 0.08, 2),
    "mix0.1_adapt_s32_c0.08_g2": loss_target(0.1, 32, 0.08, 2),
    "mix0.1_adapt_s32_c0.10_g2": loss_target(0.1, 32, 0.10, 2),
    "mix0.15_adapt_s64_c0.10_g2": loss_target(0.15, 64, 0.10, 2),
    "mix0.25_sd": loss_target(0.25, 32, 0.0, 2, sd_gain=1.0),
    "mix0.25_sd1.1": loss_target(0.25, 32, 0.0, 2, sd_gain=1.1),
    "mix0.25_sd1.2": loss_target(0.25, 32, 0.0, 2, sd_gain=1.2),
    "mix0.4_sd1.1": loss_target(0.4, 32, 0.0, 2, sd_gain=1.1),
    "mix0.4_sd1.2": loss_target(0.4, 32, 0.0, 2, sd_gain=1.2),
    "mix0.5_sd1.2": loss_target(0.5, 32, 0.0, 2, sd_gain=1.2),
    "mix0.25_sd_adapt_s32_c0.08_g2": loss_target(0.25, 32, 0.08, 2, sd_gain=1.0),
    "max_base1.2_s16": loss_target(0.0, 32, 0.0, 2, base_gain=1.2, base_sigma=16),
    "max_base1.4_s32": loss_target(0.0, 32, 0.0, 2, base_gain=1.4),
    "mix0.25_base1.3_s32": loss_target(0.25, 32, 0.0, 2, base_gain=1.3),
    "mix0.25_base1.5_s32": V3_TARGET,
    "mix0.25_sd_base1.3_s32": loss_target(0.25, 32, 0.0, 2, sd_gain=1.0, base_gain=1.3),
    "mix0.25_base1.6_s32": loss_target(0.25, 32, 0.0, 2, base_gain=1.6),
    "mix0.25_base1.7_s32": loss_target(0.25, 32, 0.0, 2, base_gain=1.7),
    "mix0.35_base1.7_s32": loss_target(0.35, 32, 0.0, 2, base_gain=1.7),
    "mix0.25_base1.5_s32_sdfloor44": lambda ir, vis: sd_floor(ir, vis, 44),
    "mix0.25_base1.5_s32_sdfloor48": lambda ir, vis: sd_floor(ir, vis, 48),
    "mix0.25_base1.5_s32_detail0.5": lambda ir, vis: detail_boost(ir, vis, V3_TARGET(ir, vis), 0.5),
    "mix0.25_base1.5_s32_flatdetail1": lambda ir, vis: flat_detail(ir, vis, V3_TARGET(ir, vis), 1.0),
    "mix0.25_base1.5_s32_flatdetail2": lambda ir, vis: flat_detail(ir, vis, V3_TARGET(ir, vis), 2.0),
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
    parser.add_argument("--sets", default="MSRS/train,RoadScene/train-split", help="comma-separated pair sets to score")
    parser.add_argument("--out", default="runs/content_targets.csv", type=Path)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    names = args.targets.split(",")
    rows = []
    for set_name, pairs in pair_sets(args.data).items():
        if set_name not in args.sets.split(","):
            continue
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
