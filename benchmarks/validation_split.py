"""Link a train config's held-out validation frames, and the rest, into two folders.

``ivfuse seg-bench`` trains on one folder of images and scores on another. To choose
segmentation settings without the test split, point it at these: it trains on the labelled
train frames that ``ivfuse train`` trains on and scores on the ones it holds out
(``[data] validation_pairs``, :func:`ivfuse.train.hold_out`), for any folder of images named
like the pairs (e.g. fused train frames). ``--validation-list`` holds out the labelled frames a
list names instead, e.g. whole drives, so that no validation frame has a training frame of the
same scene beside it (``configs/msrs_validation_drives.txt``). Example (docs/segmentation.md)::

    python benchmarks/validation_split.py --config configs/segmentation_fast.toml \\
        --images runs/segdata/fused_train_all --out runs/segdata/fused
    # -> runs/segdata/fused/{train,validation}/*.png (140 and 16 labelled frames), and their
    #    labels in runs/segdata/fused/labels/{train,validation} (seg-bench's --train/--test-labels)
"""

import argparse
import sys
from pathlib import Path

from ivfuse.data import load_pairs
from ivfuse.evaluate import image_stems, read_image_list
from ivfuse.io import list_images
from ivfuse.train import hold_out, load_config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", required=True, help="train config: [data] train and validation_pairs")
    parser.add_argument("--images", required=True, help="folder of images named by the pairs' stems")
    parser.add_argument("--out", required=True, help="gets train/ and validation/ folders of links")
    parser.add_argument("--data-root", help="overrides [data] root")
    parser.add_argument("--validation-list", help="hold out the frames this file names (one per line) instead of [data] validation_pairs")
    arguments = parser.parse_args()
    config = load_config(arguments.config)
    root = Path(arguments.data_root or config.data.root)
    samples = load_pairs([root / folder for folder in config.data.train])
    if arguments.validation_list:
        names = image_stems(read_image_list(arguments.validation_list))
        training = [sample for sample in samples if sample.name.rsplit("/", 1)[1] not in names]
        validation = [sample for sample in samples if sample.name.rsplit("/", 1)[1] in names]
        if len(validation) != len(names):
            sys.exit(f"error: {arguments.validation_list} names {len(names) - len(validation)} frame(s) that {config.data.train} lacks")
    else:
        training, validation = hold_out(samples, config.data.validation_pairs)
    images = list_images(arguments.images)[0]
    for split, samples in (("train", training), ("validation", validation)):
        folder = Path(arguments.out) / split
        folder.mkdir(parents=True, exist_ok=True)
        stems = [sample.name.rsplit("/", 1)[1] for sample in samples if sample.label is not None]
        missing = [stem for stem in stems if stem not in images]
        if missing:
            sys.exit(f"error: {arguments.images} lacks {len(missing)} frame(s), e.g. {missing[0]}")
        labels = Path(arguments.out) / "labels" / split
        labels.mkdir(parents=True, exist_ok=True)
        for stem, sample in zip(stems, (s for s in samples if s.label is not None)):
            # Sample names are "<dataset>/<split>/<stem>", e.g. MSRS/train/00101D.
            label_file = list_images(root / sample.name.rsplit("/", 1)[0] / "label")[0][stem]
            for link, target in ((folder / images[stem].name, images[stem]), (labels / label_file.name, label_file)):
                link.unlink(missing_ok=True)
                link.symlink_to(target.resolve())
        print(f"{folder}: {len(stems)} labelled frames")


if __name__ == "__main__":
    main()
