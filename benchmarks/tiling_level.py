"""How far tiled fusion is from whole-image fusion, away from the tiles' overlap bands.

Images larger than ``--tile-size`` are fused in overlapping tiles; the network sets its level
from what it sees, so each tile would take its own. ``Fuser`` gives every tile the coarse layer
of one fusion of the whole pair at a tile's size (``Fuser.tile_coarse_fraction``: its sigma as
a fraction of the tile size; 0 turns it off). This prints, per tile size and fraction, the
absolute difference to the whole-image fusion in grey levels (0-255): mean, 99.9th percentile
and maximum over the pixels that one tile alone covers (8 pixels away from every overlap band).

    PYTHONPATH=src python benchmarks/tiling_level.py [--pair examples/ir/00004N.png examples/vi/00004N.png] \
        [--tiles 256,384] [--fractions 0,0.03125,0.0625,0.125] [--upscale 2]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from ivfuse.fuser import Fuser
from ivfuse.io import read_image
from ivfuse.models.segmentation import window_starts


def away_from_overlaps(shape: tuple[int, int], tile: int, overlap: int) -> np.ndarray:
    """``(H, W)`` bool: pixels more than 8 pixels from every overlap band of the tile grid."""
    mask = np.ones(shape, dtype=bool)
    for axis, length in enumerate(shape):
        for start in window_starts(length, tile, overlap)[1:]:
            band = [slice(None), slice(None)]
            band[axis] = slice(max(0, start - 8), start + overlap + 8)
            mask[tuple(band)] = False
    return mask


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pair", nargs=2, default=["examples/ir/00004N.png", "examples/vi/00004N.png"], metavar=("IR", "VIS"))
    parser.add_argument("--tiles", default="256,384", help="tile sizes, comma-separated (multiples of 8)")
    parser.add_argument("--fractions", default="0,0.03125,0.0625,0.125", help="values of Fuser.tile_coarse_fraction")
    parser.add_argument("--upscale", type=int, default=1, help="repeat each pixel N x N times first (a larger image)")
    parser.add_argument("--overlap", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    ir, vis = (np.repeat(np.repeat(read_image(path), args.upscale, 0), args.upscale, 1) for path in args.pair)
    whole = Fuser(tile_size=8 * ((max(ir.shape[:2]) + 7) // 8)).fuse(ir, vis, grey=True)
    print(f"pair {args.pair[0]} (+ visible), {ir.shape[1]}x{ir.shape[0]}, overlap {args.overlap}")
    print("| tile | coarse fraction | mean | p99.9 | max |\n|---:|---:|---:|---:|---:|")
    for tile in (int(value) for value in args.tiles.split(",")):
        away = away_from_overlaps(whole.shape, tile, args.overlap)
        for fraction in (float(value) for value in args.fractions.split(",")):
            fuser = Fuser(tile_size=tile, tile_overlap=args.overlap)
            fuser.tile_coarse_fraction = fraction
            difference = np.abs(whole - fuser.fuse(ir, vis, grey=True))[away] * 255
            print(f"| {tile} | {fraction:g} | {difference.mean():.2f} | {np.percentile(difference, 99.9):.1f} | {difference.max():.1f} |")


if __name__ == "__main__":
    main()
