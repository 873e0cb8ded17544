"""The README's first picture: IR | visible | fused | segmentation of one bundled pair.

    python scripts/overview_figure.py [--stem 00004N] [-o docs/images/overview.png]

Runs the shipped networks on ``examples/{ir,vi}/<stem>.png``; every panel keeps the pair's
size and the picture is written at half resolution to stay small.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ivfuse.io import read_pair, write_image
from ivfuse.segmenter import Segmenter, legend, overlay

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stem", default="00004N", help="bundled pair to show (examples/ir/<stem>.png)")
    parser.add_argument("-o", "--out", type=Path, default=Path("docs/images/overview.png"))
    args = parser.parse_args()

    ir, vis = read_pair(EXAMPLES / "ir" / f"{args.stem}.png", EXAMPLES / "vi" / f"{args.stem}.png")
    labels, fused = Segmenter().segment(ir, vis)
    grey = ir if ir.ndim == 2 else ir[..., 0]
    panels = [np.repeat(grey[..., None], 3, axis=2), vis if vis.ndim == 3 else np.repeat(vis[..., None], 3, axis=2), fused, overlay(fused, labels)]
    captions = ["infrared", "visible", "fused (ivfuse)", "segmentation"]
    height, width = fused.shape[:2]
    strip = Image.new("RGB", (width * len(panels), height + 36), (255, 255, 255))
    draw = ImageDraw.Draw(strip)
    font = ImageFont.load_default(size=24)
    for index, (panel, caption) in enumerate(zip(panels, captions)):
        strip.paste(Image.fromarray(np.rint(panel * 255).astype(np.uint8)), (index * width, 36))
        draw.text((index * width + width / 2, 18), caption, fill=(0, 0, 0), font=font, anchor="mm")
    key = Image.fromarray(np.rint(legend(sorted(set(np.unique(labels).tolist()) - {0}) or [0]) * 255).astype(np.uint8))
    strip.paste(key, (strip.width - key.width, strip.height - key.height))
    half = strip.resize((strip.width // 2, strip.height // 2), Image.LANCZOS)
    print(f"wrote {write_image(args.out, np.asarray(half, np.float32) / 255)}")


if __name__ == "__main__":
    main()
