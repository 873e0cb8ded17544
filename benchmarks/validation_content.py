"""Validation content loss of fusion networks, on the whole frame and outside the salient surround.

    PYTHONPATH=src python benchmarks/validation_content.py --config configs/semantic.toml \
        --weights shipped=src/ivfuse/weights/fusion.safetensors --weights surround=runs/surround_w2/fusion.safetensors

The salient-target loss moves the background around labelled persons away from the content
loss's target on purpose, so a rise of the whole-frame validation content loss mixes that
intended change with any loss of fusion quality elsewhere. This scores each network on the
held-out validation pairs of ``--config`` (the same frames and the same whole-frame figure as
the last row of ``validation.csv``) and again on the pixels *outside* the surround of the
config's ``[salient_target]`` classes (``margin`` pixels of the full frame, where training
measures it on rescaled crops). Prints one table row per network.

``--write-names FILE`` also writes the validation pairs' names, one per line, so that
``ivfuse eval --images FILE`` scores the fusion metrics on the same held-out frames.
"""

import argparse
import sys

import torch

from ivfuse.data import load_pairs
from ivfuse.io import atomic_write
from ivfuse.losses import content_loss, object_surround
from ivfuse.serialization import load_network
from ivfuse.train import hold_out, load_config, validation_frame


@torch.no_grad()
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="run config whose [data] validation frames and [loss] weights are used")
    parser.add_argument("--data-root", help="overrides [data] root")
    parser.add_argument("--weights", action="append", required=True, metavar="NAME=FILE")
    parser.add_argument("--write-names", metavar="FILE", help="write the validation pairs' names here, one per line")
    arguments = parser.parse_args()
    if any("=" not in entry for entry in arguments.weights):
        parser.error("--weights takes NAME=FILE")
    try:
        config = load_config(arguments.config)
        networks = {name: load_network(path, expected="FusionNet").eval() for name, path in (e.split("=", 1) for e in arguments.weights)}
        root = arguments.data_root or config.data.root
        _, validation = hold_out(load_pairs([f"{root}/{folder}" for folder in config.data.train]), config.data.validation_pairs)
    except (ValueError, OSError) as error:
        sys.exit(f"error: {error}")
    if not validation:
        sys.exit(f"error: {arguments.config}: [data] validation_pairs is 0, nothing to score")
    if arguments.write_names:
        try:
            with atomic_write(arguments.write_names) as names:  # sample names are "<dataset>/<split>/<stem>"
                names.write("".join(f"{sample.name.rsplit('/', 1)[-1]}\n" for sample in validation).encode())
        except OSError as error:
            sys.exit(f"error: {error}")
    salient = config.salient_target
    print(f"Content loss on the {len(validation)} validation pairs of {arguments.config}: whole frame, and outside the "
          f"background within {salient.margin} px of {', '.join(salient.classes)} (mean over frames).\n")
    print("| network | whole frame | outside the surround | surround share of pixels |")
    print("|---|---:|---:|---:|")
    for name, network in networks.items():
        whole = outside = share = 0.0
        for sample in validation:
            ir, vis_y, _, label = validation_frame(sample, network.size_multiple, torch.device("cpu"))
            fused = network(ir, vis_y)
            surround = object_surround(label, salient.class_ids, salient.margin)
            whole += content_loss(fused, ir, vis_y, config.loss)[0].item() / len(validation)
            outside += content_loss(fused, ir, vis_y, config.loss, mask=~surround)[0].item() / len(validation)
            share += surround.float().mean().item() / len(validation)
        print(f"| {name} | {whole:.4f} | {outside:.4f} | {share:.2%} |")


if __name__ == "__main__":
    main()
