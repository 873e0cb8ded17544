"""Where segmentation fails: IoU per group of frames (e.g. day and night) and recall per object size.

    python benchmarks/segmentation_breakdown.py --labels MSRS/test/label [--predicted seg/labels] \\
        [--groups 'day=D$,night=N$'] [--classes car,person] [--sizes 0,400,1600,6400]

Reads label PNGs as ``ivfuse seg-eval`` does (predictions as ``ivfuse segment`` writes them to
``labels/``, paired by stem). Frames are grouped by regular expressions on the stem (the default
splits MSRS's day and night frames by their ``D``/``N`` suffix; a frame may fall in no group;
"all" holds every frame). Prints:

1. the ground truth per group: frames, and per class of ``--classes`` the frames that hold it and
   its pixels;
2. with ``--predicted``: per group, mIoU and the IoU of each class (one confusion matrix per
   group), then per class of ``--classes`` and per object size (8-connected ground-truth
   regions, :func:`ivfuse.segmentation_eval.object_recall`; area bins in pixels from
   ``--sizes``) the objects, their share of the class's pixels, pixel recall, and the share of
   objects at least half found.
"""

import argparse
import re
import sys

import numpy as np

from ivfuse.classes import CLASS_NAMES, NUM_CLASSES
from ivfuse.io import list_images, read_label
from ivfuse.metrics.segmentation import confusion_matrix, segmentation_scores
from ivfuse.segmentation_eval import object_recall, percent_cells


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--labels", required=True, help="folder of ground-truth class-id PNGs")
    parser.add_argument("--predicted", help="folder of predicted class-id PNGs (without: ground-truth counts only)")
    parser.add_argument("--groups", default="day=D$,night=N$", help="NAME=REGEX,... on the file stem")
    parser.add_argument("--classes", default="car,person", help="classes counted per frame and by object size")
    parser.add_argument("--sizes", default="0,400,1600,6400", help="lower edges of the area bins, pixels")
    arguments = parser.parse_args()
    patterns = {name: re.compile(pattern) for name, pattern in (item.split("=", 1) for item in arguments.groups.split(","))}
    class_ids = [CLASS_NAMES.index(name) for name in arguments.classes.split(",")]
    edges = [int(edge) for edge in arguments.sizes.split(",")]
    labels = list_images(arguments.labels)[0]
    predicted = list_images(arguments.predicted)[0] if arguments.predicted else None
    stems = sorted(set(labels) & set(predicted) if predicted is not None else labels)
    if not stems:
        sys.exit(f"error: no label of {arguments.labels} has a prediction in {arguments.predicted}" if predicted is not None
                 else f"error: {arguments.labels}: no label images")
    groups = ["all", *patterns]
    frames = dict.fromkeys(groups, 0)
    holding = {(group, class_id): [0, 0] for group in groups for class_id in class_ids}  # frames, pixels
    confusions = {group: np.zeros((NUM_CLASSES, NUM_CLASSES), np.int64) for group in groups}
    objects = {(group, class_id): [] for group in groups for class_id in class_ids}
    for stem in stems:
        label = read_label(labels[stem])
        prediction = read_label(predicted[stem]) if predicted is not None else None
        confusion = confusion_matrix(label, prediction) if prediction is not None else None
        found = {c: object_recall(label, prediction, c) for c in class_ids} if prediction is not None else None
        for group in (g for g in groups if g == "all" or patterns[g].search(stem)):
            frames[group] += 1
            for class_id in class_ids:
                pixels = int((label == class_id).sum())
                holding[group, class_id][0] += pixels > 0
                holding[group, class_id][1] += pixels
                if found is not None:
                    objects[group, class_id].append(found[class_id])
            if confusion is not None:
                confusions[group] += confusion

    print(f"{len(stems)} frames of {arguments.labels}" + (f" against {arguments.predicted}" if predicted else "") + ".\n")
    print("| frames | count | " + " | ".join(f"frames with {CLASS_NAMES[c]} | {CLASS_NAMES[c]} pixels" for c in class_ids) + " |")
    print("|---|---:|" + "---:|---:|" * len(class_ids))
    for group in groups:
        cells = " | ".join(f"{holding[group, c][0]} | {holding[group, c][1]}" for c in class_ids)
        print(f"| {group} | {frames[group]} | {cells} |")
    if predicted is None:
        return

    print("\nIoU in percent, one confusion matrix per group.\n")
    print("| frames | count | mIoU | " + " | ".join(CLASS_NAMES) + " |")
    print("|---|---:|---:|" + "---:|" * NUM_CLASSES)
    for group in groups:
        scores = segmentation_scores(confusions[group])
        print(f"| {group} | {frames[group]} | {100 * scores['miou']:.2f} | {percent_cells(scores['iou'])} |")

    print("\nObjects (8-connected ground-truth regions) by area in pixels; found: at least half its pixels predicted as its class.\n")
    print("| frames | class | area | objects | share of the class's pixels | pixel recall | objects found |")
    print("|---|---|---|---:|---:|---:|---:|")
    for (group, class_id), per_frame in objects.items():
        table = np.concatenate(per_frame) if per_frame else np.zeros((0, 2), np.int64)
        for low, high in zip(edges, [*edges[1:], None]):
            chosen = table[(table[:, 0] >= low) & (table[:, 0] < (high if high is not None else np.inf))]
            area = f"{low}-{high - 1}" if high is not None else f">= {low}"
            if len(chosen) == 0:
                print(f"| {group} | {CLASS_NAMES[class_id]} | {area} | 0 | - | - | - |")
                continue
            share = chosen[:, 0].sum() / table[:, 0].sum()
            recall = chosen[:, 1].sum() / chosen[:, 0].sum()
            found_share = np.mean(chosen[:, 1] >= chosen[:, 0] / 2)
            print(f"| {group} | {CLASS_NAMES[class_id]} | {area} | {len(chosen)} | {100 * share:.1f} | "
                  f"{100 * recall:.1f} | {100 * found_share:.1f} |")


if __name__ == "__main__":
    main()
