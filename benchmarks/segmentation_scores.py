"""Score segmentation weights on a folder of images with labels: mIoU and IoU per class.

    python benchmarks/segmentation_scores.py --weights runs/X/segmentation.safetensors \\
        --images FUSED_DIR --labels MSRS/test/label [--threads 2] [--flip] [--scales 0.75,1,1.25] [--window 192]

One confusion matrix over every labelled frame of ``--images`` (whole frames as ``ivfuse
seg-bench`` scores them, :func:`ivfuse.segbench.confusion_over_frames`, or in ``--window``
windows as ``ivfuse segment`` does by default), then mIoU over
the 9 classes including unlabelled (the field's convention), mIoU over classes 1-8, pixel accuracy
and the IoU of each class, then each class's recall and precision, in percent, as ``ivfuse
seg-eval`` prints them (:func:`ivfuse.segmentation_eval.scores_markdown`). A class absent from labels and
predictions prints as "-" and is left out of the means. ``--flip`` and ``--scales`` predict with
test-time augmentation (:func:`ivfuse.models.class_probabilities`), as ``ivfuse segment`` does.
"""

import argparse
import sys
import time

import torch

from ivfuse.data import load_labelled_image
from ivfuse.io import list_images, read_label
from ivfuse.metrics.segmentation import segmentation_scores
from ivfuse.segbench import confusion_over_frames
from ivfuse.segmentation_eval import LabelScores, scores_markdown
from ivfuse.serialization import load_network


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--weights", required=True, help="segmentation .safetensors")
    parser.add_argument("--images", required=True, help="folder of RGB images (e.g. fused frames)")
    parser.add_argument("--labels", required=True, help="folder of label PNGs named like the images")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--flip", action="store_true", help="flip test-time augmentation")
    parser.add_argument("--scales", default="1", help="comma-separated resize factors, e.g. 0.75,1,1.25")
    parser.add_argument("--window", type=int, default=0, help="segment in overlapping windows of this size (pixels; 0: whole frames), as ivfuse segment --window")
    arguments = parser.parse_args()
    torch.set_num_threads(arguments.threads)
    scales = tuple(float(scale) for scale in arguments.scales.split(","))
    network = load_network(arguments.weights, expected="SegmentationNet").eval()
    images, labels = list_images(arguments.images)[0], list_images(arguments.labels)[0]
    stems = sorted(set(images) & set(labels))
    if not stems:
        sys.exit(f"error: no image of {arguments.images} has a label in {arguments.labels}")
    began = time.perf_counter()
    frames = (load_labelled_image(stem, images[stem], torch.from_numpy(read_label(labels[stem]))) for stem in stems)
    confusion = confusion_over_frames(network, frames, torch.device("cpu"), flip=arguments.flip, scales=scales, window=arguments.window or None)
    seconds = time.perf_counter() - began
    augmentation = (", flip" if arguments.flip else "") + (f", scales {arguments.scales}" if scales != (1.0,) else "")
    augmentation += f", windows of {arguments.window}" if arguments.window else ""
    print(f"{arguments.weights} on {len(stems)} frames of {arguments.images} ({seconds:.0f} s, {arguments.threads} threads{augmentation})\n")
    print(scores_markdown(LabelScores(segmentation_scores(confusion), confusion, stems)), end="")


if __name__ == "__main__":
    main()
