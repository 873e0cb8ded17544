"""Seconds per training step of each kind, measured by running the real loop briefly.

    python benchmarks/training_speed.py [--config configs/semantic.toml] [--threads 2] [--steps 12]

Runs ``ivfuse.train.train`` on the config's data, networks, batch and crop size with a short
schedule (round 0: fusion + segmentation, round 1: fusion with the semantic loss), reads the
per-step times from its ``log.csv`` (first two steps of each phase dropped as warm-up), prints a
Markdown table of medians, and estimates the full schedule's wall time from the config's step
counts (validation and data loading not included).
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import statistics
import tempfile
from pathlib import Path

from ivfuse import train as training


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/semantic.toml")
    parser.add_argument("--data-root")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=12, help="steps per measured phase")
    arguments = parser.parse_args()

    config = training.load_config(arguments.config)
    short = dataclasses.replace(
        config,
        data=dataclasses.replace(config.data, validation_pairs=0),
        schedule=dataclasses.replace(
            config.schedule, rounds=2, fusion_steps=(arguments.steps,), segmentation_steps=(arguments.steps, 0),
            semantic_weight=config.schedule.semantic_weight or 0.1,
        ),
        run=dataclasses.replace(config.run, threads=arguments.threads, checkpoint_minutes=1e9),
    )
    with tempfile.TemporaryDirectory() as out:
        training.train(short, out, data_root=arguments.data_root)
        with open(Path(out) / "log.csv", newline="") as stream:
            rows = list(csv.DictReader(stream))
    kinds = {"fusion, content only": ("0", "fusion"), "fusion, + semantic": ("1", "fusion"), "segmentation": ("0", "segmentation")}
    # Every phase has ``--steps`` steps, so ``step % steps`` is the position inside its phase.
    seconds = {
        kind: statistics.median(float(r["seconds"]) for r in rows if (r["round"], r["network"]) == key and int(r["step"]) % arguments.steps >= 2)
        for kind, key in kinds.items()
    }
    print(f"| step ({config.run.batch_size} x {config.augment.crop_size}^2 crops, {arguments.threads} thread(s)) | median s/step |")
    print("|---|---|")
    for kind, value in seconds.items():
        print(f"| {kind} | {value:.3f} |")

    phases = training.plan_phases(config.schedule)
    total = 0.0
    for phase in phases:
        kind = "segmentation" if phase.network == "segmentation" else ("fusion, + semantic" if phase.semantic_weight else "fusion, content only")
        total += phase.steps * seconds[kind]
    print(f"\nestimated training time of {arguments.config}: {total:.0f} s ({total / 60:.0f} min) without validation and data loading")


if __name__ == "__main__":
    main()
