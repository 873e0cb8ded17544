"""Fusion networks on the held-out validation frames: content loss, and where they change the image.

    PYTHONPATH=src python benchmarks/validation_content.py --config configs/semantic.toml \
        --weights content=runs/no_semantic/fusion.safetensors --weights shipped=src/ivfuse/weights/fusion.safetensors \
        --weights surround=runs/surround_w2/fusion.safetensors --reference content

The salient-target loss moves the background around labelled persons away from the content
loss's target on purpose, so a rise of the whole-frame validation content loss mixes that
intended change with any loss of fusion quality elsewhere. This scores each network on the
held-out validation pairs of ``--config`` (the same frames and the same whole-frame figure as
the last row of ``validation.csv``) and again on the pixels *outside* the surround of the
config's ``[salient_target]`` classes (``margin`` pixels of the full frame, where training
measures it on rescaled crops). Prints one table row per network.

``--reference NAME`` adds a second table: how each other network's fused luminance differs from
network ``NAME``'s, in grey levels (0-255), on the labelled regions of the frames: the
``[salient_target]`` classes (persons by default), the other objects (classes 1-8), the
surround of the first, and the rest. Per frame the mean signed and the mean absolute difference
over the region's pixels, then the mean over the frames that have the region.

``--write-names FILE`` also writes the validation pairs' names, one per line, so that
``ivfuse eval --images FILE`` scores the fusion metrics on the same held-out frames.
"""

import argparse
import sys

import torch

from ivfuse.classes import IGNORE_INDEX, OBJECT_CLASS_IDS
from ivfuse.data import load_pairs
from ivfuse.io import atomic_write
from ivfuse.losses import content_loss, object_surround
from ivfuse.serialization import load_network
from ivfuse.train import hold_out, load_config, validation_frame


def _regions(label: torch.Tensor, salient) -> dict[str, torch.Tensor]:
    """The labelled regions of ``label (1, H, W)`` as ``(1, 1, H, W)`` bool masks; they do not overlap."""
    chosen = torch.isin(label, torch.tensor(salient.class_ids))[:, None]
    objects = torch.isin(label, torch.tensor(OBJECT_CLASS_IDS))[:, None]
    surround = object_surround(label, salient.class_ids, salient.margin)
    rest = ~objects & ~surround & (label != IGNORE_INDEX)[:, None]
    return {", ".join(salient.classes): chosen, "other objects": objects & ~chosen, "surround": surround, "rest": rest}


@torch.no_grad()
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="run config whose [data] validation frames and [loss] weights are used")
    parser.add_argument("--data-root", help="overrides [data] root")
    parser.add_argument("--weights", action="append", required=True, metavar="NAME=FILE")
    parser.add_argument("--reference", metavar="NAME", help="also tabulate every network's luminance change against this one")
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
    if arguments.reference is not None and arguments.reference not in networks:
        parser.error(f"--reference {arguments.reference}: no --weights of that name")
    if not validation:
        sys.exit(f"error: {arguments.config}: [data] validation_pairs is 0, nothing to score")
    if arguments.write_names:
        try:
            with atomic_write(arguments.write_names) as names:  # sample names are "<dataset>/<split>/<stem>"
                names.write("".join(f"{sample.name.rsplit('/', 1)[-1]}\n" for sample in validation).encode())
        except OSError as error:
            sys.exit(f"error: {error}")
    # Every network sees the frames cropped to the largest size multiple, so their outputs align.
    multiple = max(network.size_multiple for network in networks.values())
    frames = [validation_frame(sample, multiple, torch.device("cpu")) for sample in validation]
    fused = {name: [network(ir, vis_y) for ir, vis_y, _, _ in frames] for name, network in networks.items()}

    salient = config.salient_target
    print(f"Content loss on the {len(validation)} validation pairs of {arguments.config}: whole frame, and outside the "
          f"background within {salient.margin} px of {', '.join(salient.classes)} (mean over frames).\n")
    print("| network | whole frame | outside the surround | surround share of pixels |")
    print("|---|---:|---:|---:|")
    for name in networks:
        whole = outside = share = 0.0
        for (ir, vis_y, _, label), image in zip(frames, fused[name]):
            surround = object_surround(label, salient.class_ids, salient.margin)
            whole += content_loss(image, ir, vis_y, config.loss)[0].item() / len(frames)
            outside += content_loss(image, ir, vis_y, config.loss, mask=~surround)[0].item() / len(frames)
            share += surround.float().mean().item() / len(frames)
        print(f"| {name} | {whole:.4f} | {outside:.4f} | {share:.2%} |")

    if arguments.reference is None:
        return
    regions = [_regions(label, salient) for _, _, _, label in frames]
    shares = {region: sum(masks[region].float().mean().item() for masks in regions) / len(frames) for region in regions[0]}
    print(f"\nLuminance change against {arguments.reference}, grey levels: mean signed (mean absolute), per region.\n")
    print("| network | " + " | ".join(f"{region} ({share:.0%} of px)" for region, share in shares.items()) + " |")
    print("|---|" + "---:|" * len(shares))
    for name in networks:
        if name == arguments.reference:
            continue
        cells = []
        for region in shares:
            changes = [
                (difference[masks[region]].mean().item(), difference[masks[region]].abs().mean().item())
                for masks, difference in ((m, 255 * (a - b)) for m, a, b in zip(regions, fused[name], fused[arguments.reference]))
                if masks[region].any()
            ]
            signed, absolute = (sum(values) / len(changes) for values in zip(*changes)) if changes else (float("nan"),) * 2
            cells.append(f"{signed:+.1f} ({absolute:.1f})")
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
