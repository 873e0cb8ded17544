"""Training data: IR/visible pairs (and labels where they exist) from folders, with augmentation.

A dataset folder follows ``<root>/{ir,vi[,label]}/<name>``; any number of roots can be mixed
(e.g. ``MSRS/train`` and ``RoadScene/train``). Pairs without a label still train the content
losses; labelled ones also train segmentation. Images are held in memory as ``uint8``: the
shared training sets take a few hundred MB.

The segmentation benchmark (:mod:`ivfuse.segbench`) trains on single images instead of pairs:
a :class:`LabelledImage` is an RGB image (IR-only, visible-only or fused) with its label, drawn
into batches by the same augmentation (:func:`draw_crops`).

Batches are drawn from a generator seeded by ``(seed, step)`` alone, so a run resumed at step
``k`` sees exactly the batches an uninterrupted run sees from step ``k`` on.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from .classes import IGNORE_INDEX, OBJECT_CLASS_IDS
from .color import infrared_to_grey, rgb_to_luma, to_tensor
from .io import ImageReadError, LabelSizeError, find_pairs, list_images, read_image, read_label, read_pair
from .losses import gaussian_blur


@dataclass
class Sample:
    """One training pair in memory: ``ir (1, H, W)``, ``vis (3, H, W)`` uint8, ``label (H, W)`` uint8 or None."""

    name: str
    ir: torch.Tensor
    vis: torch.Tensor
    label: torch.Tensor | None

    def planes(self) -> tuple[torch.Tensor, ...]:
        """The images cropped together, in channel order of the crop: ``(ir, vis)``."""
        return self.ir, self.vis


@dataclass
class LabelledImage:
    """One segmentation frame in memory: ``image (3, H, W)`` uint8 RGB, ``label (H, W)`` uint8 class ids."""

    name: str
    image: torch.Tensor
    label: torch.Tensor

    def planes(self) -> tuple[torch.Tensor, ...]:
        """The images cropped together: ``(image,)``."""
        return (self.image,)


def load_pairs(roots: list[str | Path], *, labels: bool = True) -> list[Sample]:
    """Load every pair under the given dataset roots into memory.

    Args:
        roots: folders each holding ``ir/`` and ``vi/`` (and optionally ``label/``).
        labels: read ``label/<stem>.*`` where it exists.

    Raises:
        ImageReadError: a root has no pairs, or a file is unreadable or of mismatched size.
    """
    samples = []
    for root in map(Path, roots):
        listing = find_pairs(root / "ir", root / "vi")
        if not listing.pairs:
            raise ImageReadError(f"{root}: no IR/visible pairs found in ir/ and vi/")
        label_files = list_images(root / "label")[0] if labels and (root / "label").is_dir() else {}
        for stem, ir_path, vis_path in listing.pairs:
            ir, vis = (to_tensor(image) for image in read_pair(ir_path, vis_path))
            label = torch.from_numpy(read_label(label_files[stem])) if stem in label_files else None
            if label is not None and label.shape != ir.shape[-2:]:
                raise LabelSizeError(f"{label_files[stem]}: label size differs from its pair's")
            samples.append(
                Sample(
                    name=f"{root.parent.name}/{root.name}/{stem}",
                    ir=_to_uint8(infrared_to_grey(ir)),
                    vis=_to_uint8(vis.expand(-1, 3, -1, -1)),
                    label=label,
                )
            )
    return samples


def load_labelled_image(name: str, path: str | Path, label: torch.Tensor) -> LabelledImage:
    """Read an image for its label; grey images (IR-only input) are repeated to three channels.

    Args:
        name: the frame's name (its file stem).
        path: PNG, JPEG, ... file, grey or colour, 8 or 16 bits (see :func:`ivfuse.io.read_image`).
        label: ``(H, W)`` uint8 class ids (:func:`ivfuse.io.read_label`).

    Raises:
        ImageReadError: the file is missing or unreadable.
        LabelSizeError: the image's size differs from the label's (message names both sizes).

    Example:
        >>> label = torch.from_numpy(read_label("tests/data/tiny/MSRS/label/00501D.png"))
        >>> load_labelled_image("00501D", "tests/data/tiny/MSRS/ir/00501D.png", label).image.shape
        torch.Size([3, 120, 160])
    """
    image = to_tensor(read_image(path))
    if image.shape[-2:] != label.shape:
        (height, width), (label_height, label_width) = image.shape[-2:], label.shape
        raise LabelSizeError(f"{path}: size {width}x{height} differs from its label's ({label_width}x{label_height})")
    return LabelledImage(name=name, image=_to_uint8(image.expand(-1, 3, -1, -1)), label=label)


def _to_uint8(image: torch.Tensor) -> torch.Tensor:
    """``(1, C, H, W)`` float in ``[0, 1]`` -> ``(C, H, W)`` uint8, 4x less memory to hold."""
    return torch.round(image[0] * 255).to(torch.uint8).contiguous()


@dataclass(frozen=True)
class Augment:
    """Random crop with scale jitter and horizontal flip, then optional photometric jitter.

    ``scale_range``: the crop's resize factor is drawn from it (0.5: objects at half their size).
    ``object_crops``: share of the crops of labelled frames centred on a pixel of a labelled
    object (classes 1-8; the class drawn uniformly among those in the frame, then the pixel),
    the rest placed uniformly. Objects are 7 % of MSRS pixels and the rare classes under 1 %
    each: uniform crops show the network mostly road and sky.
    Photometric jitter, each drawn per crop and applied to all its planes alike (for pairs: before
    fusion), off at 0, so that batches without it are drawn exactly as before it existed:
    ``contrast`` (factor ``1 ± contrast`` around the crop's mean), ``brightness`` (``± brightness``
    added), ``gamma`` (exponent ``exp(± gamma)``), ``noise`` (Gaussian, standard deviation up to
    ``noise``). Night frames are dark and low in contrast, day frames bright: the jitter teaches
    the segmentation network shapes rather than the lighting of the 140-odd training frames.
    ``per_modality``: for pairs, draw that jitter separately for the IR plane and the visible
    planes (other sensors differ in contrast, gamma and noise per camera, not alike), and
    ``blur`` (Gaussian, sigma up to ``blur`` pixels of the crop, drawn per plane) on top; see
    :func:`jitter_planes`. A grey visible camera (TNO) needs no option of its own: the fusion
    network sees only the visible luminance, which a grey image has unchanged.
    ``copy_paste``: share of the crops of labelled frames whose frame first receives the labelled
    objects of another frame of the pool, drawn at random, at their own positions (the
    :func:`paste_objects` copy-paste augmentation; a donor of another size gives nothing). Objects
    keep the place and size a fixed road camera gives them, and appear in scenes and lighting
    they were not recorded in.
    """

    crop_size: int = 192
    scale_range: tuple[float, float] = (0.6, 1.2)
    flip: bool = True
    object_crops: float = 0.0
    contrast: float = 0.0
    brightness: float = 0.0
    gamma: float = 0.0
    noise: float = 0.0
    per_modality: bool = False
    blur: float = 0.0
    copy_paste: float = 0.0

    def __post_init__(self):
        for name in ("contrast", "brightness", "gamma", "noise", "blur"):
            if getattr(self, name) < 0:
                raise ValueError(f"[augment] {name} must be >= 0, not {getattr(self, name)}")
        for name in ("object_crops", "copy_paste"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"[augment] {name} must be in [0, 1], not {getattr(self, name)}")


def draw_batch(
    samples: list[Sample], batch_size: int, augment: Augment, seed: int, step: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The batch of training step ``step``: a pure function of ``(seed, step)``.

    Returns:
        ``ir (B, 1, S, S)`` and ``vis (B, 3, S, S)`` float in ``[0, 1]``, ``label (B, S, S)``
        int64 with :data:`IGNORE_INDEX` where unlabelled; ``S = augment.crop_size``.
    """
    images, labels = draw_crops(samples, batch_size, augment, seed, step)
    return images[:, :1].contiguous(), images[:, 1:].contiguous(), labels


def draw_crops(
    samples: Sequence[Sample | LabelledImage], batch_size: int, augment: Augment, seed: int, step: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Augmented crops of ``batch_size`` samples drawn at random: a pure function of ``(seed, step)``.

    Each sample's :meth:`~Sample.planes` are cropped, scaled and flipped together.

    Args:
        samples: pairs or labelled images (all of one kind).
        batch_size: ``B``.
        augment: crop size ``S``, scale range, flip.
        seed, step: what the batch depends on, and all it depends on.

    Returns:
        ``images (B, C, S, S)`` float in ``[0, 1]``, the planes stacked along channels (``C = 4``
        for pairs: IR then RGB; 3 for labelled images), and ``labels (B, S, S)`` int64 with
        :data:`IGNORE_INDEX` where unlabelled.

    Example:
        >>> frame = LabelledImage("a", torch.zeros(3, 64, 80, dtype=torch.uint8), torch.zeros(64, 80, dtype=torch.uint8))
        >>> images, labels = draw_crops([frame], 2, Augment(crop_size=32), seed=0, step=0)
        >>> images.shape, labels.shape
        (torch.Size([2, 3, 32, 32]), torch.Size([2, 32, 32]))
    """
    generator = torch.Generator().manual_seed(seed * 1_000_003 + step)
    images, labels = [], []
    for index in torch.randint(len(samples), (batch_size,), generator=generator).tolist():
        planes, label = samples[index].planes(), samples[index].label
        # Drawn only when the option is on, so that batches without it are drawn as before it existed.
        if augment.copy_paste and label is not None and float(torch.rand((), generator=generator)) < augment.copy_paste:
            donor = samples[int(torch.randint(len(samples), (), generator=generator))]
            planes, label = paste_objects(planes, label, donor.planes(), donor.label)
        image, label = _augment(planes, label, augment, generator)
        images.append(image)
        labels.append(label)
    return torch.stack(images), torch.stack(labels)


def paste_objects(
    planes: Sequence[torch.Tensor], label: torch.Tensor, donor_planes: Sequence[torch.Tensor], donor_label: torch.Tensor | None
) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
    """Copy-paste augmentation: the donor's labelled object pixels (classes 1-8) over the frame's.

    Objects go where they are in the donor (both frames from the same kind of camera), with their
    pixels in every plane and their labels; elsewhere the frame is unchanged.

    Args:
        planes: the frame's images, each ``(C, H, W)`` (any dtype).
        label: ``(H, W)`` class ids of the frame.
        donor_planes, donor_label: the same of the donor; a donor without labels or of another
            size leaves the frame as it is.

    Returns:
        ``(planes, label)``: new tensors where something was pasted, the inputs otherwise.

    Example:
        >>> frame, donor = torch.zeros(1, 2, 2, dtype=torch.uint8), torch.full((1, 2, 2), 9, dtype=torch.uint8)
        >>> donor_label = torch.tensor([[0, 2], [0, 0]], dtype=torch.uint8)
        >>> planes, label = paste_objects((frame,), torch.zeros(2, 2, dtype=torch.uint8), (donor,), donor_label)
        >>> planes[0][0].tolist(), label.tolist()
        ([[0, 9], [0, 0]], [[0, 2], [0, 0]])
    """
    if donor_label is None or donor_label.shape != label.shape:
        return tuple(planes), label
    objects = torch.isin(donor_label, torch.tensor(OBJECT_CLASS_IDS, dtype=donor_label.dtype))
    pasted = tuple(torch.where(objects, donor, plane) for plane, donor in zip(planes, donor_planes, strict=True))
    return pasted, torch.where(objects, donor_label, label)


def _augment(planes: Sequence[torch.Tensor], label: torch.Tensor | None, augment: Augment, generator: torch.Generator):
    height, width = planes[0].shape[-2:]
    low, high = augment.scale_range
    scale = low + (high - low) * float(torch.rand((), generator=generator))
    # Never let the scaled image be smaller than the crop.
    scale = max(scale, augment.crop_size / min(height, width))
    window = min(height, width, math.ceil(augment.crop_size / scale))
    centre = _object_pixel(label, generator) if augment.object_crops and label is not None else None
    if centre is not None and float(torch.rand((), generator=generator)) < augment.object_crops:
        top, left = (min(max(0, c - window // 2), side - window) for c, side in zip(centre, (height, width)))
    else:
        top = int(torch.randint(height - window + 1, (), generator=generator))
        left = int(torch.randint(width - window + 1, (), generator=generator))
    region = (slice(None), slice(top, top + window), slice(left, left + window))
    image = torch.cat([plane[region] for plane in planes]).float()[None] / 255
    image = F.interpolate(image, size=(augment.crop_size,) * 2, mode="bilinear", align_corners=False, antialias=True)[0]
    if label is None:
        label = torch.full((augment.crop_size,) * 2, IGNORE_INDEX, dtype=torch.int64)
    else:
        label = label[region[1:]][None, None].float()
        label = F.interpolate(label, size=(augment.crop_size,) * 2, mode="nearest")[0, 0].long()
    if augment.flip and bool(torch.rand((), generator=generator) < 0.5):
        image, label = image.flip(-1), label.flip(-1)
    return jitter_planes(image, [plane.shape[0] for plane in planes], augment, generator).clamp(0, 1), label


def night_copies(samples: Sequence[Sample], luma_range: tuple[float, float], noise: float, seed: int) -> list[Sample]:
    """Copies of the day frames as a night camera would see them: visible dark, IR unchanged.

    Night frames are where cars are missed, and few labelled night frames hold cars (MSRS train:
    20 of 80, against 65 of 76 by day). A thermal camera sees a car alike by day and by night; a
    visible camera sees it dim, flat and noisy. So every pair whose visible image is brighter than
    ``luma_range`` allows (mean BT.601 luma in grey levels) gets one copy whose visible image is
    darkened: raised to a power drawn in ``[1, 2.5]`` (shadows and mid-tones sink, light parts
    stay lighter, as under street lamps and headlights), then scaled to a mean luma drawn
    uniformly in ``luma_range`` (contrast and colour fade with it), with Gaussian sensor noise of
    standard deviation up to ``noise`` grey levels, rounded to 8 bits; IR and label stay the
    pair's. Pairs already that dark get none.

    Args:
        samples: pairs, ``vis (3, H, W)`` uint8.
        luma_range: ``(low, high)`` grey levels, ``0 <= low <= high <= 255``; MSRS night frames'
            mean luma lies between about 16 and 45 (5th and 95th percentile of the train split).
        noise: largest noise standard deviation, grey levels, ``>= 0``.
        seed: the draws depend on it (and on the samples' order) alone.

    Returns:
        the copies, named ``<name>#night``, in the order of ``samples``.

    Example:
        >>> day = Sample("d", torch.zeros(1, 4, 4, dtype=torch.uint8), torch.full((3, 4, 4), 200, dtype=torch.uint8), None)
        >>> night = Sample("n", day.ir, torch.full((3, 4, 4), 20, dtype=torch.uint8), None)
        >>> copies = night_copies([day, night], (30, 30), 0.0, seed=0)
        >>> [copy.name for copy in copies], int(copies[0].vis.max())
        (['d#night'], 30)
    """
    low, high = luma_range
    generator = torch.Generator().manual_seed(seed)
    copies = []
    for sample in samples:
        vis = sample.vis.float() / 255
        if 255 * float(rgb_to_luma(vis[None]).mean()) <= high:
            continue
        vis = vis ** (1 + 1.5 * float(torch.rand((), generator=generator)))
        target = low + (high - low) * float(torch.rand((), generator=generator))
        sigma = noise * float(torch.rand((), generator=generator))
        dark = vis * (target / float(rgb_to_luma(vis[None]).mean())) + sigma * torch.randn(vis.shape[-2:], generator=generator)
        copies.append(Sample(f"{sample.name}#night", sample.ir, dark.round().clamp(0, 255).to(torch.uint8), sample.label))
    return copies


def _object_pixel(label: torch.Tensor, generator: torch.Generator) -> tuple[int, int] | None:
    """``(row, column)`` of a random object pixel: class uniform among the objects present, then pixel."""
    present = [c for c in torch.unique(label).tolist() if c in OBJECT_CLASS_IDS]
    if not present:
        return None
    chosen = present[int(torch.randint(len(present), (), generator=generator))]
    rows, columns = torch.nonzero(label == chosen, as_tuple=True)
    index = int(torch.randint(len(rows), (), generator=generator))
    return int(rows[index]), int(columns[index])


def photometric_jitter(image: torch.Tensor, augment: Augment, generator: torch.Generator) -> torch.Tensor:
    """Random contrast, brightness, gamma and noise as set in ``augment`` (each skipped at 0).

    Args:
        image: ``(C, S, S)`` float in ``[0, 1]``.
        augment: the amounts.
        generator: draws the random values (none when every amount is 0).

    Returns:
        ``(C, S, S)`` float, not clamped.

    Example:
        >>> image = torch.full((3, 8, 8), 0.5)
        >>> torch.equal(photometric_jitter(image, Augment(), torch.Generator()), image)
        True
    """

    def uniform(amount: float) -> float:  # in [-amount, amount]
        return amount * (2 * float(torch.rand((), generator=generator)) - 1)

    if augment.contrast:
        mean = image.mean()
        image = (image - mean) * (1 + uniform(augment.contrast)) + mean
    if augment.brightness:
        image = image + uniform(augment.brightness)
    if augment.gamma:
        # Clamped first: a negative value has no real power.
        image = image.clamp(0, 1) ** math.exp(uniform(augment.gamma))
    if augment.noise:
        image = image + augment.noise * float(torch.rand((), generator=generator)) * torch.randn(image.shape, generator=generator)
    return image


def jitter_planes(image: torch.Tensor, channels: Sequence[int], augment: Augment, generator: torch.Generator) -> torch.Tensor:
    """Photometric jitter and blur of each plane of a crop, drawn separately per plane.

    With ``augment.per_modality`` each plane (for pairs: IR, then the visible RGB) gets its own
    :func:`photometric_jitter`, otherwise one draw is applied to all planes alike; then each plane
    is blurred with a Gaussian of sigma drawn uniformly in ``[0, augment.blur]`` (none at 0).

    Args:
        image: ``(C, S, S)`` float in ``[0, 1]``, the planes stacked along channels.
        channels: each plane's channel count, summing to ``C`` (pairs: ``[1, 3]``).
        augment: the amounts.
        generator: draws the random values.

    Returns:
        ``(C, S, S)`` float, not clamped.

    Example:
        >>> image = torch.rand(4, 16, 16)
        >>> jitter_planes(image, [1, 3], Augment(per_modality=True, blur=1.0), torch.Generator()).shape
        torch.Size([4, 16, 16])
    """
    if augment.per_modality:
        planes = [photometric_jitter(plane, augment, generator) for plane in image.split(list(channels))]
    else:
        planes = list(photometric_jitter(image, augment, generator).split(list(channels)))
    if augment.blur:
        planes = [_random_blur(plane, augment.blur, generator) for plane in planes]
    return torch.cat(planes)


def _random_blur(plane: torch.Tensor, most: float, generator: torch.Generator) -> torch.Tensor:
    """``(C, S, S)`` blurred with a Gaussian of sigma uniform in ``[0, most]`` pixels."""
    sigma = most * float(torch.rand((), generator=generator))
    if sigma < 0.3:  # a Gaussian this narrow is (nearly) the identity: skip building it
        return plane
    return gaussian_blur(plane[None], sigma)[0]
