"""Compare two training logs step by step: does a run reproduce another?

    PYTHONPATH=src python benchmarks/compare_logs.py RUN_A/log.csv RUN_B/log.csv

Prints how many of the steps both logs have carry the same learning rate and loss (as logged,
6 significant digits), and the first step where they differ. Runs on the CPU with the same
config and thread count are bitwise deterministic, so a re-run of a shipped config, stopped
after N steps, must match the shipped run's log on all N.
"""

import csv
import sys


def main(first: str, second: str) -> None:
    with open(first, newline="") as a, open(second, newline="") as b:
        rows = list(zip(csv.DictReader(a), csv.DictReader(b)))
    differ = [x["step"] for x, y in rows if (x["step"], x["lr"], x["loss"]) != (y["step"], y["lr"], y["loss"])]
    print(f"{len(rows) - len(differ)} of {len(rows)} common steps identical (lr, loss)")
    if differ:
        print(f"first difference at step {differ[0]}")


if __name__ == "__main__":
    main(*sys.argv[1:3])
