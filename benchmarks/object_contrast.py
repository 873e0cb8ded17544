"""How much do labelled objects stand out from their surroundings in each kind of image?

    PYTHONPATH=src python benchmarks/object_contrast.py --labels MSRS/train/label \
        --input ir=MSRS/train/ir --input vis=MSRS/train/vi --input fused=runs/fused/train [--ring 8]

A segmentation network finds a person by the contrast between the person and what surrounds it;
thermal cameras give people a strong one at any hour. This measures, per class and input kind,
the mean over labelled frames of ``|mean luminance inside the object - mean luminance of a ring
of --ring pixels around it| x 255`` (luminance: BT.601 luma, IR as grey). All objects of a class
in one frame count as one region; frames without the class are skipped. Also printed: the share
of frames where the object is brighter than its ring. A frame missing from an input folder is an
error naming it, so every column averages the same frames.
"""

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ivfuse.classes import CLASS_NAMES
from ivfuse.color import rgb_to_luma, to_tensor
from ivfuse.io import list_images, read_image, read_label


def object_and_ring(label: np.ndarray, class_id: int, ring: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Boolean masks ``(H, W)``: the class's pixels, and the pixels within ``ring`` of them that are not in any object."""
    mask = torch.from_numpy(label == class_id)
    grown = F.max_pool2d(mask[None, None].float(), 2 * ring + 1, stride=1, padding=ring)[0, 0] > 0
    background = torch.from_numpy(label == 0)
    return mask, grown & ~mask & background


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--labels", required=True, type=Path)
    parser.add_argument("--input", action="append", required=True, metavar="NAME=DIR")
    parser.add_argument("--classes", default="car,person,bike,color cone")
    parser.add_argument("--ring", type=int, default=8)
    arguments = parser.parse_args()
    if any("=" not in entry for entry in arguments.input):
        parser.error("--input takes NAME=DIR")
    inputs = dict(entry.split("=", 1) for entry in arguments.input)
    unknown = [name for name in arguments.classes.split(",") if name.strip() not in CLASS_NAMES]
    if unknown:
        parser.error(f"unknown class(es) {', '.join(unknown)}; choose from {', '.join(CLASS_NAMES)}")
    classes = [CLASS_NAMES.index(name.strip()) for name in arguments.classes.split(",")]
    labels, _, _ = list_images(arguments.labels)
    folders = {name: list_images(folder)[0] for name, folder in inputs.items()}
    contrast = {(name, c): [] for name in inputs for c in classes}
    brighter = {(name, c): [] for name in inputs for c in classes}
    for stem, label_path in sorted(labels.items()):
        label = read_label(label_path)
        regions = {c: object_and_ring(label, c, arguments.ring) for c in classes if (label == c).any()}
        for name, files in folders.items():
            if stem not in files:
                sys.exit(f"error: {inputs[name]}: no image for label {label_path.name}")
            luma = rgb_to_luma(to_tensor(read_image(files[stem])))[0, 0] * 255
            for c, (inside, around) in regions.items():
                if around.any():
                    difference = luma[inside].mean() - luma[around].mean()
                    contrast[name, c].append(abs(float(difference)))
                    brighter[name, c].append(float(difference) > 0)
    print(f"Object-to-ring contrast (grey levels, ring {arguments.ring} px), mean over frames with the class; "
          "in brackets the share of frames where the object is brighter.\n")
    print("| input | " + " | ".join(f"{CLASS_NAMES[c]} (n={len(contrast[next(iter(inputs)), c])})" for c in classes) + " |")
    print("|---|" + "---:|" * len(classes))
    for name in inputs:
        cells = [f"{np.mean(contrast[name, c]):.1f} ({np.mean(brighter[name, c]):.0%})" if contrast[name, c] else "-" for c in classes]
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
