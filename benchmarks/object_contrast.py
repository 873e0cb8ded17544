"""How much do labelled objects stand out from their surroundings in each kind of image?

    PYTHONPATH=src python benchmarks/object_contrast.py --labels MSRS/train/label \
        --input ir=MSRS/train/ir --input vis=MSRS/train/vi --input fused=runs/fused/train [--ring 8]

A segmentation network finds a person by the contrast between the person and what surrounds it;
thermal cameras give people a strong one at any hour. This measures, per class and input kind,
the mean over labelled frames of ``|mean luminance inside the object - mean luminance of a ring
of --ring pixels around it| x 255`` (luminance: BT.601 luma, IR as grey). All objects of a class
in one frame count as one region; frames without the class are skipped. Also printed: the share
of frames where the object is brighter than its ring. A frame missing from an input folder is an
error naming it, so every column averages the same frames. ``--max-of ir,vis`` adds a row for
the pixel-wise maximum of two inputs (the content loss's intensity target), and a second table
gives the mean luminance of objects and of their rings.
"""

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

from ivfuse.classes import CLASS_NAMES
from ivfuse.color import rgb_to_luma, to_tensor
from ivfuse.io import list_images, read_image, read_label
from ivfuse.losses import object_surround


def object_and_ring(label: np.ndarray, class_id: int, ring: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Boolean masks ``(H, W)``: the class's pixels, and the background pixels within ``ring`` of them."""
    label = torch.from_numpy(label)
    return label == class_id, object_surround(label[None], (class_id,), ring)[0, 0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--labels", required=True, type=Path)
    parser.add_argument("--input", action="append", required=True, metavar="NAME=DIR")
    parser.add_argument("--max-of", metavar="NAME,NAME", help="add a row for the pixel-wise maximum of two inputs' luminance")
    parser.add_argument("--classes", default="car,person,bike,color cone")
    parser.add_argument("--ring", type=int, default=8)
    arguments = parser.parse_args()
    if any("=" not in entry for entry in arguments.input):
        parser.error("--input takes NAME=DIR")
    inputs = dict(entry.split("=", 1) for entry in arguments.input)
    maximum_of = arguments.max_of.split(",") if arguments.max_of else []
    if maximum_of and (len(maximum_of) != 2 or not set(maximum_of) <= set(inputs)):
        parser.error(f"--max-of takes two input names from {', '.join(inputs)}")
    unknown = [name for name in arguments.classes.split(",") if name.strip() not in CLASS_NAMES]
    if unknown:
        parser.error(f"unknown class(es) {', '.join(unknown)}; choose from {', '.join(CLASS_NAMES)}")
    classes = [CLASS_NAMES.index(name.strip()) for name in arguments.classes.split(",")]
    labels, _, _ = list_images(arguments.labels)
    folders = {name: list_images(folder)[0] for name, folder in inputs.items()}
    rows = [*inputs, *([f"max({', '.join(maximum_of)})"] if maximum_of else [])]
    levels = {(row, c): [] for row in rows for c in classes}  # (object mean, ring mean) per frame
    for stem, label_path in sorted(labels.items()):
        label = read_label(label_path)
        regions = {c: object_and_ring(label, c, arguments.ring) for c in classes if (label == c).any()}
        luma = {}
        for name, files in folders.items():
            if stem not in files:
                sys.exit(f"error: {inputs[name]}: no image for label {label_path.name}")
            luma[name] = rgb_to_luma(to_tensor(read_image(files[stem])))[0, 0] * 255
        if maximum_of:
            luma[rows[-1]] = torch.maximum(luma[maximum_of[0]], luma[maximum_of[1]])
        for c, (inside, around) in regions.items():
            if around.any():
                for row in rows:
                    levels[row, c].append((float(luma[row][inside].mean()), float(luma[row][around].mean())))
    count = {c: len(levels[rows[0], c]) for c in classes}
    header = "| input | " + " | ".join(f"{CLASS_NAMES[c]} (n={count[c]})" for c in classes) + " |\n|---|" + "---:|" * len(classes)
    print(f"Object-to-ring contrast (grey levels, ring {arguments.ring} px), mean over frames with the class; "
          "in brackets the share of frames where the object is brighter.\n")
    print(header)
    for row in rows:
        cells = []
        for c in classes:
            difference = np.array([inside - around for inside, around in levels[row, c]])
            cells.append(f"{np.abs(difference).mean():.1f} ({np.mean(difference > 0):.0%})" if count[c] else "-")
        print(f"| {row} | " + " | ".join(cells) + " |")
    print("\nMean luminance of the object / of its ring (grey levels), over the same frames.\n")
    print(header)
    for row in rows:
        cells = [" / ".join(f"{value:.1f}" for value in np.mean(levels[row, c], axis=0)) if count[c] else "-" for c in classes]
        print(f"| {row} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
