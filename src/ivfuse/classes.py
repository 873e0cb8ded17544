"""The MSRS (MFNet) segmentation classes: names, ids and the official colour palette.

One place for them: the segmentation network, the training loop, ``ivfuse segment`` and the
segmentation metrics all import from here.
"""

from __future__ import annotations

import numpy as np

#: Class names, index = class id (label PNGs store these ids).
CLASS_NAMES = ("unlabelled", "car", "person", "bike", "curve", "car stop", "guardrail", "color cone", "bump")
#: Official MSRS palette (``visualize.py``), RGB per class id, uint8 ``(9, 3)``.
PALETTE = np.array(
    [(0, 0, 0), (64, 0, 128), (64, 64, 0), (0, 128, 192), (0, 0, 192),
     (128, 128, 0), (64, 64, 128), (192, 128, 128), (192, 64, 0)],
    dtype=np.uint8,
)
NUM_CLASSES = len(CLASS_NAMES)
#: Every class but "unlabelled" (id 0, the background).
OBJECT_CLASS_IDS = tuple(range(1, NUM_CLASSES))
#: Column names of the per-class IoUs in CSV files (training validation, segmentation benchmark).
IOU_COLUMNS = tuple(f"iou_{name.replace(' ', '_')}" for name in CLASS_NAMES)
#: Label value that no loss or metric counts (also used for the pixels of unlabelled pairs).
IGNORE_INDEX = 255
