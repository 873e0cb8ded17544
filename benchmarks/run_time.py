"""How long did a training run's steps take? Reads the ``seconds`` column of its ``log.csv``.

    python benchmarks/run_time.py RUN/log.csv

Prints, per network (fusion, segmentation): steps, median seconds per step, median x steps and
the plain sum. The sum is the compute time when the run had its core(s) to itself; the
median x steps estimate is robust to stretches where other jobs slowed the run down (a run
resumed across sessions, a niced run). Neither counts checkpoint writes and per-round
validation (a few seconds each); the progress bar's elapsed time of an uninterrupted run does.
"""

import csv
import statistics
import sys


def main(path: str) -> None:
    seconds: dict[str, list[float]] = {}
    with open(path, newline="") as stream:
        for row in csv.DictReader(stream):
            seconds.setdefault(row["network"], []).append(float(row["seconds"]))
    print("network       steps  median s/step  median x steps (min)  sum (min)")
    for network, values in seconds.items():
        median = statistics.median(values)
        print(f"{network:<12} {len(values):>6} {median:>14.3f} {median * len(values) / 60:>21.1f} {sum(values) / 60:>10.1f}")


if __name__ == "__main__":
    main(sys.argv[1])
