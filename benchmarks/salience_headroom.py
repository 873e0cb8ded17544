"""What would adding IR local contrast to fused images cost and gain, before training anything?

    PYTHONPATH=src python benchmarks/salience_headroom.py --fused runs/fused/train \
        --ir MSRS/train/ir --gain 0.5 -o runs/headroom/g05/train
    PYTHONPATH=src python benchmarks/salience_headroom.py --fused runs/fused/train \
        --ir MSRS/train/ir --gain 1.0 --labels MSRS/train/label --classes car,person,bike \
        -o runs/headroom/objects_g10/train

Writes each fused image of ``--fused`` with ``gain x`` :func:`ivfuse.models.fusion.infrared_local_contrast`
of its IR image added to its luminance (chrominance kept), the change the fusion network's
salience gain (``[model] salience``) can make. Without ``--labels`` the gain is the same
everywhere; with them it applies only to the given classes and the background within
``--margin`` pixels of them, a gain map that knows where the objects are (an upper bound on what
a learned one can do), and frames without a label file are copied unchanged. Score the output
with ``benchmarks/object_contrast.py`` and ``ivfuse eval`` (docs/training.md, "Salience gain").
"""

import argparse
from pathlib import Path

import torch

from ivfuse.classes import CLASS_NAMES
from ivfuse.color import infrared_to_grey, merge_luma, split_luma, to_tensor
from ivfuse.io import list_images, read_image, read_label, write_image
from ivfuse.losses import object_surround
from ivfuse.models.fusion import infrared_local_contrast


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fused", required=True, type=Path, help="fused images (colour or grey)")
    parser.add_argument("--ir", required=True, type=Path, help="their IR images, same file names")
    parser.add_argument("--gain", required=True, type=float, help="share of the IR local contrast to add, e.g. 0.5")
    parser.add_argument("--labels", type=Path, help="label folder: add only at the --classes and their surround")
    parser.add_argument("--classes", default="car,person,bike", help="comma-separated class names (with --labels)")
    parser.add_argument("--margin", type=int, default=8, help="surround in pixels (with --labels)")
    parser.add_argument("-o", "--out", required=True, type=Path)
    args = parser.parse_args()
    names = [name.strip() for name in args.classes.split(",")]
    unknown = [name for name in names if name not in CLASS_NAMES[1:]]
    if unknown:
        parser.error(f"--classes: unknown {', '.join(unknown)} (known: {', '.join(CLASS_NAMES[1:])})")
    class_ids = tuple(CLASS_NAMES.index(name) for name in names)

    fused_files, _, _ = list_images(args.fused)
    ir_files, _, _ = list_images(args.ir)
    missing = sorted(set(fused_files) - set(ir_files))
    if missing:
        parser.error(f"{args.ir}: no IR image for {', '.join(missing[:3])}{' ...' if len(missing) > 3 else ''} ({len(missing)} in all)")
    args.out.mkdir(parents=True, exist_ok=True)
    for stem, path in sorted(fused_files.items()):
        y, cbcr = split_luma(to_tensor(read_image(path)))
        ir = infrared_to_grey(to_tensor(read_image(ir_files[stem])))
        added = args.gain * infrared_local_contrast(ir)
        if args.labels is not None:
            label_path = args.labels / f"{stem}.png"
            if label_path.exists():
                label = torch.from_numpy(read_label(label_path))[None].long()
                added = added * object_surround(label, class_ids, args.margin, include_objects=True)
            else:
                added = torch.zeros_like(added)
        image = merge_luma(y + added, cbcr)[0].permute(1, 2, 0).squeeze(-1).numpy()
        write_image(args.out / path.name, image)
    print(f"wrote {len(fused_files)} images to {args.out}")


if __name__ == "__main__":
    main()
