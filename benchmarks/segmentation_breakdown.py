"""Where segmentation fails: IoU per group of frames (e.g. day and night) and recall per object size.

    python benchmarks/segmentation_breakdown.py --predicted seg/labels --labels MSRS/test/label \\
        [--groups 'day=D$,night=N$'] [--classes car,person] [--sizes 0,400,1600,6400]

Reads label PNGs as ``ivfuse seg-eval`` does (predictions as ``ivfuse segment`` writes them to
``labels/``, paired by stem). Prints:

1. per group of frames (a regular expression on the stem; the default splits MSRS's day and
   night frames by their ``D``/``N`` suffix): frames, mIoU and the IoU of each class, one
   confusion matrix per group;
2. per group, per class of ``--classes`` and per object size (8-connected ground-truth regions,
   :func:`ivfuse.segmentation_eval.object_recall`; area bins in pixels from ``--sizes``): objects,
   share of the class's pixels, pixel recall, and the share of objects at least half found.
"""

import argparse
import re
import sys

import numpy as np

from ivfuse.classes import CLASS_NAMES, NUM_CLASSES
from ivfuse.io import list_images, read_label
from ivfuse.metrics.segmentation import confusion_matrix, segmentation_scores
from ivfuse.segmentation_eval import object_recall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--predicted", required=True, help="folder of predicted class-id PNGs")
    parser.add_argument("--labels", required=True, help="folder of ground-truth class-id PNGs")
    parser.add_argument("--groups", default="day=D$,night=N$", help="NAME=REGEX,... on the file stem; a frame may fall in none")
    parser.add_argument("--classes", default="car,person", help="classes whose objects are counted by size")
    parser.add_argument("--sizes", default="0,400,1600,6400", help="lower edges of the area bins, pixels")
    arguments = parser.parse_args()
    groups = {name: re.compile(pattern) for name, pattern in (item.split("=", 1) for item in arguments.groups.split(","))}
    class_ids = [CLASS_NAMES.index(name) for name in arguments.classes.split(",")]
    edges = [int(edge) for edge in arguments.sizes.split(",")]
    predicted, labels = list_images(arguments.predicted)[0], list_images(arguments.labels)[0]
    stems = sorted(set(predicted) & set(labels))
    if not stems:
        sys.exit(f"error: no label of {arguments.labels} has a prediction in {arguments.predicted}")
    confusions = {name: np.zeros((NUM_CLASSES, NUM_CLASSES), np.int64) for name in ["all", *groups]}
    counts = dict.fromkeys(confusions, 0)
    objects = {(name, class_id): [] for name in confusions for class_id in class_ids}
    for stem in stems:
        label, prediction = read_label(labels[stem]), read_label(predicted[stem])
        frame = confusion_matrix(label, prediction)
        for name in confusions:
            if name == "all" or groups[name].search(stem):
                confusions[name] += frame
                counts[name] += 1
                for class_id in class_ids:
                    objects[name, class_id].append(object_recall(label, prediction, class_id))

    print(f"{len(stems)} frames of {arguments.predicted} against {arguments.labels}; IoU in percent.\n")
    print("| frames | count | mIoU | " + " | ".join(CLASS_NAMES) + " |")
    print("|---|---:|---:|" + "---:|" * NUM_CLASSES)
    for name, confusion in confusions.items():
        scores = segmentation_scores(confusion)
        cells = " | ".join("-" if np.isnan(v) else f"{100 * v:.2f}" for v in scores["iou"])
        print(f"| {name} | {counts[name]} | {100 * scores['miou']:.2f} | {cells} |")

    print("\nObjects (8-connected ground-truth regions) by area in pixels; found: at least half its pixels predicted as its class.\n")
    print("| frames | class | area | objects | share of the class's pixels | pixel recall | objects found |")
    print("|---|---|---|---:|---:|---:|---:|")
    for (name, class_id), found_per_frame in objects.items():
        table = np.concatenate(found_per_frame) if found_per_frame else np.zeros((0, 2), np.int64)
        total = table[:, 0].sum()
        for low, high in zip(edges, [*edges[1:], None]):
            chosen = table[(table[:, 0] >= low) & ((table[:, 0] < high) if high is not None else True)]
            area = f"{low}-{high - 1}" if high is not None else f">= {low}"
            if len(chosen) == 0:
                print(f"| {name} | {CLASS_NAMES[class_id]} | {area} | 0 | - | - | - |")
                continue
            recall = chosen[:, 1].sum() / chosen[:, 0].sum()
            found = np.mean(chosen[:, 1] >= chosen[:, 0] / 2)
            print(f"| {name} | {CLASS_NAMES[class_id]} | {area} | {len(chosen)} | {100 * chosen[:, 0].sum() / total:.1f} | "
                  f"{100 * recall:.1f} | {100 * found:.1f} |")


if __name__ == "__main__":
    main()
