"""What a class gain at inference does: IoU, recall and precision per gain of one class.

    python benchmarks/class_gains.py --ir D/ir --vis D/vi --labels D/label \\
        [--seg-weights W] [--fusion-weights F] [--class car] [--gains 1,1.25,1.5,2,3] [--threads 1]

Segments every pair of the folders once, as ``ivfuse segment`` does with its default test-time
augmentation, and keeps the class probabilities; then, for each gain of ``--gains``, labels
every frame with that gain on ``--class`` (:func:`ivfuse.segmenter.gained_labels`, every
other class 1) and scores all frames as one confusion matrix, as ``ivfuse seg-eval`` does.
Prints one row per gain: mIoU (9 classes), the 3-class mean (unlabelled, car, person: the classes
of the held-out drives), and the class's IoU, recall and precision, in percent.
"""

import argparse
import sys

import numpy as np
import torch

from ivfuse.classes import CLASS_NAMES, NUM_CLASSES
from ivfuse.io import ImageReadError, find_pairs, list_images, read_label, read_pair
from ivfuse.metrics.segmentation import confusion_matrix, segmentation_scores
from ivfuse.segmenter import Segmenter, class_gain_vector, gained_labels

THREE_CLASSES = (CLASS_NAMES.index("unlabelled"), CLASS_NAMES.index("car"), CLASS_NAMES.index("person"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ir", required=True, help="folder of infrared images")
    parser.add_argument("--vis", required=True, help="folder of visible images (stems match the IR's)")
    parser.add_argument("--labels", required=True, help="folder of ground-truth class-id PNGs")
    parser.add_argument("--seg-weights", help="segmentation weights (default: the shipped ones)")
    parser.add_argument("--fusion-weights", help="fusion weights (default: the shipped ones)")
    parser.add_argument("--class", dest="class_name", default="car", help="the class whose gain varies")
    parser.add_argument("--gains", default="1,1.25,1.5,2,3", help="comma-separated gains")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads")
    arguments = parser.parse_args()
    torch.set_num_threads(arguments.threads)
    gains = [float(gain) for gain in arguments.gains.split(",")]
    try:
        vectors = [class_gain_vector({arguments.class_name: gain}) for gain in gains]
        pairs = {stem: (ir, vis) for stem, ir, vis in find_pairs(arguments.ir, arguments.vis).pairs}
        labels = list_images(arguments.labels)[0]
    except (ValueError, ImageReadError) as error:
        sys.exit(f"error: {error}")
    stems = [stem for stem in pairs if stem in labels]
    if not stems:
        sys.exit(f"error: no pair of {arguments.ir} has a label in {arguments.labels}")
    class_id = CLASS_NAMES.index(arguments.class_name.replace("_", " "))
    segmenter = Segmenter(arguments.fusion_weights, arguments.seg_weights, class_gains={})
    confusions = [np.zeros((NUM_CLASSES, NUM_CLASSES), np.int64) for _ in gains]
    for stem in stems:
        probabilities, _ = segmenter.probabilities(*read_pair(*pairs[stem]))
        label = read_label(labels[stem])
        for confusion, vector in zip(confusions, vectors):
            confusion += confusion_matrix(label, gained_labels(probabilities, vector))
    name = CLASS_NAMES[class_id]
    print(f"{len(stems)} frames; gain on '{name}'; percent\n")
    print(f"| gain | mIoU | 3-class mean | {name} IoU | {name} recall | {name} precision |")
    print("|---:|---:|---:|---:|---:|---:|")
    for gain, confusion in zip(gains, confusions):
        scores = segmentation_scores(confusion)
        three_class_mean = np.nanmean([scores["iou"][c] for c in THREE_CLASSES])
        print(f"| {gain:g} | {100 * scores['miou']:.2f} | {100 * three_class_mean:.2f} | {100 * scores['iou'][class_id]:.2f} | "
              f"{100 * scores['class_accuracy'][class_id]:.2f} | {100 * scores['precision'][class_id]:.2f} |")


if __name__ == "__main__":
    main()
