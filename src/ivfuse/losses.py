"""Training losses: content losses that keep what both sources carry, and the semantic loss.

The content losses take ``(B, 1, H, W)`` float tensors in ``[0, 1]`` (fused Y, IR, visible Y)
and return a scalar tensor. The semantic loss takes segmentation logits and class-id labels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import kornia
import torch
import torch.nn.functional as F

from .classes import CLASS_NAMES, IGNORE_INDEX
from .models.fusion import sobel_magnitude


def _masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return values[mask.expand_as(values)].mean()


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian blur of ``(B, C, H, W)``, reflect-padded, radius ``3 sigma`` capped at
    ``min(H, W) - 1`` (the most reflect padding allows), so small crops take wide kernels too.

    Example:
        >>> gaussian_blur(torch.ones(1, 1, 8, 8), 2.0).allclose(torch.ones(1, 1, 8, 8))
        True
    """
    radius = max(1, min(math.ceil(3 * sigma), min(x.shape[-2:]) - 1))
    return kornia.filters.gaussian_blur2d(x, (2 * radius + 1,) * 2, (sigma, sigma), border_type="reflect")


def intensity_target(ir: torch.Tensor, vis_y: torch.Tensor, weights: ContentWeights | None = None) -> torch.Tensor:
    """The image the intensity loss pulls the fused Y to; ``(B, 1, H, W)`` float, not clamped.

    Default: the element-wise maximum of the sources. Each setting (:class:`ContentWeights`)
    changes it in turn:

    * ``mean_share`` ``s`` mixes in the sources' mean, ``X = (1 - s) max + s mean``. PSNR is the
      distance to both sources, i.e. to their mean (plus a constant), and the max alone sits half
      the source difference away from it.
    * ``sd_gain`` ``K`` (> 0) stretches ``X`` about its mean, per image, to ``K`` times the max's
      standard deviation: mixing costs global contrast (SD, EN); ``K = 1`` gives it back, ``K > 1``
      raises it above the max's, the cap the max sets on contrast.
    * ``contrast_level`` ``c`` (> 0) stretches ``X`` about its local mean (Gaussian, sigma
      ``contrast_sigma`` pixels) by ``clamp(c / local std, 1, max_gain)``: only areas of low
      local contrast gain.
    * ``base_gain`` ``G`` (> 1) stretches only the base layer of ``X`` (Gaussian, sigma
      ``base_sigma`` pixels) about the image mean, ``X + (G - 1) (base - mean(base))``: global
      contrast (SD, EN) grows by nearly ``G`` while edges grow by ``(G - 1)`` times the base's
      gradient only, so few fused edges exceed both sources' (what Nabf counts).
    * ``detail_gain`` ``k`` (> 0) adds ``k`` times the fine detail (``x - blur(x)``, Gaussian
      sigma ``detail_sigma``) of the source whose Sobel edge is stronger at each pixel: SF rises
      fastest this way, at a cost in Qabf, VIF and Nabf (edges beyond both sources').

    The measurements behind each: docs/fusion_objective.md.

    Args:
        ir, vis_y: ``(B, 1, H, W)`` float in ``[0, 1]``.
        weights: the settings (default: the maximum).

    Example:
        >>> ir, vis = torch.rand(2, 1, 1, 16, 16)
        >>> torch.equal(intensity_target(ir, vis), torch.maximum(ir, vis))
        True
    """
    weights = weights or ContentWeights()
    peak = torch.maximum(ir, vis_y)
    target = peak
    if weights.mean_share:
        target = (1 - weights.mean_share) * peak + weights.mean_share * (ir + vis_y) / 2
    if weights.sd_gain:
        mean = target.mean(dim=(-2, -1), keepdim=True)
        scale = weights.sd_gain * peak.std(dim=(-2, -1), keepdim=True) / target.std(dim=(-2, -1), keepdim=True).clamp_min(1e-6)
        target = mean + scale * (target - mean)
    if weights.contrast_level:
        local_mean = gaussian_blur(target, weights.contrast_sigma)
        local_std = gaussian_blur((target - local_mean) ** 2, weights.contrast_sigma).clamp_min(1e-6).sqrt()
        gain = (weights.contrast_level / local_std).clamp(1, weights.max_gain)
        target = local_mean + gain * (target - local_mean)
    if weights.base_gain != 1:
        base = gaussian_blur(target, weights.base_sigma)
        target = target + (weights.base_gain - 1) * (base - base.mean(dim=(-2, -1), keepdim=True))
    if weights.detail_gain:
        target = target + weights.detail_gain * stronger_detail(ir, vis_y, weights.detail_sigma)
    return target


def stronger_detail(ir: torch.Tensor, vis_y: torch.Tensor, sigma: float = 2.0) -> torch.Tensor:
    """Fine detail ``x - blur_sigma(x)`` of whichever source has the stronger Sobel edge at each pixel.

    Args:
        ir, vis_y: ``(B, 1, H, W)`` float in ``[0, 1]``.
        sigma: Gaussian sigma in pixels of the blur that the detail is taken against.

    Returns:
        ``(B, 1, H, W)`` float, signed, about 0 on flat areas.

    Example:
        >>> flat = torch.full((1, 1, 16, 16), 0.5)
        >>> float(stronger_detail(flat, flat).abs().max()) < 1e-6
        True
    """
    detail_ir, detail_vis = ir - gaussian_blur(ir, sigma), vis_y - gaussian_blur(vis_y, sigma)
    return torch.where(sobel_magnitude(ir) >= sobel_magnitude(vis_y), detail_ir, detail_vis)


def intensity_loss(
    fused: torch.Tensor, ir: torch.Tensor, vis_y: torch.Tensor, mask: torch.Tensor | None = None, target: torch.Tensor | None = None
) -> torch.Tensor:
    """L1 distance to ``target`` (default: the element-wise maximum of the sources, which keeps hot
    targets and bright areas; see :func:`intensity_target`).

    ``mask`` (``(B, 1, H, W)`` bool, optional; also for the other content losses): average over
    these pixels only, e.g. to measure the loss outside the pixels another term moves on purpose.

    Example:
        >>> x = torch.rand(2, 1, 16, 16)
        >>> float(intensity_loss(x, x, x))
        0.0
    """
    target = torch.maximum(ir, vis_y) if target is None else target
    return F.l1_loss(fused, target) if mask is None else _masked_mean((fused - target).abs(), mask)


def texture_loss(
    fused: torch.Tensor, ir: torch.Tensor, vis_y: torch.Tensor, mask: torch.Tensor | None = None, target: torch.Tensor | None = None
) -> torch.Tensor:
    """L1 distance between Sobel magnitudes of the fused image and the stronger source edge, or,
    with an intensity ``target`` given, the stronger of that and the target's own edge (so a
    contrast-stretched target asks for edges above the sources' where it stretches)."""
    edges, goal = sobel_magnitude(fused), torch.maximum(sobel_magnitude(ir), sobel_magnitude(vis_y))
    if target is not None:
        goal = torch.maximum(goal, sobel_magnitude(target))
    return F.l1_loss(edges, goal) if mask is None else _masked_mean((edges - goal).abs(), mask)


def ssim_loss(fused: torch.Tensor, ir: torch.Tensor, vis_y: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean of ``1 - SSIM`` (11x11 Gaussian window) to each source: keeps local structure."""
    if mask is None:
        return kornia.losses.ssim_loss(fused, ir, 11) + kornia.losses.ssim_loss(fused, vis_y, 11)
    maps = kornia.losses.ssim_loss(fused, ir, 11, reduction="none") + kornia.losses.ssim_loss(fused, vis_y, 11, reduction="none")
    return _masked_mean(maps, mask)


@dataclass(frozen=True)
class ContentWeights:
    """Weights of the content losses (see :func:`content_loss`) and the intensity target's settings.

    ``mean_share`` (in ``[0, 1]``), ``sd_gain`` (0: off), ``contrast_level`` (a local standard
    deviation, in ``[0, 1]`` units; 0: off), ``contrast_sigma`` (pixels), ``max_gain`` (``>= 1``),
    ``base_gain`` (``>= 1``; 1: off), ``base_sigma`` (pixels), ``detail_gain`` (0: off),
    ``detail_sigma`` (pixels): see :func:`intensity_target`. At
    their defaults the target is the maximum of the sources, the loss the one the shipped weights
    were trained with.
    """

    intensity: float = 1.0
    texture: float = 10.0
    ssim: float = 0.0
    mean_share: float = 0.0
    sd_gain: float = 0.0
    contrast_level: float = 0.0
    contrast_sigma: float = 32.0
    max_gain: float = 2.0
    base_gain: float = 1.0
    base_sigma: float = 32.0
    detail_gain: float = 0.0
    detail_sigma: float = 2.0

    def __post_init__(self):
        if (not 0 <= self.mean_share <= 1 or min(self.sd_gain, self.contrast_level, self.detail_gain) < 0
                or min(self.max_gain, self.base_gain) < 1 or min(self.contrast_sigma, self.base_sigma, self.detail_sigma) <= 0):
            raise ValueError(f"[loss] mean_share must be in [0, 1], sd_gain, contrast_level and detail_gain >= 0, max_gain and "
                             f"base_gain >= 1, contrast_sigma, base_sigma and detail_sigma > 0, not {self.mean_share}, "
                             f"{self.sd_gain}, {self.contrast_level}, {self.detail_gain}, {self.max_gain}, {self.base_gain}, "
                             f"{self.contrast_sigma}, {self.base_sigma}, {self.detail_sigma}")

    @property
    def plain_target(self) -> bool:
        """Whether the intensity target is the plain maximum of the sources."""
        return not (self.mean_share or self.sd_gain or self.contrast_level or self.base_gain != 1 or self.detail_gain)


def content_loss(
    fused: torch.Tensor,
    ir: torch.Tensor,
    vis_y: torch.Tensor,
    weights: ContentWeights = ContentWeights(),
    mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Weighted sum of intensity, texture and SSIM losses (over ``mask``'s pixels when given).

    Returns:
        ``(loss, parts)``: the scalar to back-propagate and each term's value for logging.

    Example:
        >>> x = torch.rand(2, 1, 16, 16)
        >>> loss, parts = content_loss(x, x, x)
        >>> sorted(parts)
        ['intensity', 'ssim', 'texture']
    """
    # The plain max is passed as None so that the default loss is computed exactly as before.
    target = None if weights.plain_target else intensity_target(ir, vis_y, weights)
    terms = {"intensity": intensity_loss(fused, ir, vis_y, mask, target), "texture": texture_loss(fused, ir, vis_y, mask, target)}
    terms["ssim"] = ssim_loss(fused, ir, vis_y, mask) if weights.ssim else fused.new_zeros(())
    loss = sum(getattr(weights, name) * value for name, value in terms.items())
    return loss, {name: value.detach().item() for name, value in terms.items()}


@dataclass(frozen=True)
class SalientTargetConfig:
    """Settings of the salient-target loss (see :func:`salient_target_loss`).

    ``weight``: its weight in the fusion phases (0: off). Above ``[loss] intensity`` (1 in the
    shipped configs) it outweighs the intensity term's pull towards the maximum of the sources
    in the surround (the texture and SSIM terms still pull too).
    ``classes``: names from :data:`ivfuse.classes.CLASS_NAMES` whose surround takes the IR
    intensity. ``margin``: how far, in pixels of the training crop, the surround reaches.
    """

    weight: float = 0.0
    classes: tuple[str, ...] = ("person",)
    margin: int = 8

    def __post_init__(self):
        objects = CLASS_NAMES[1:]  # "unlabelled" is the background itself
        unknown = [name for name in self.classes if name not in objects]
        if unknown or not self.classes:
            raise ValueError(f"[salient_target] classes must name objects from {', '.join(objects)}; "
                             f"not {', '.join(unknown) if unknown else 'none'}")
        if self.margin < 1 or self.weight < 0:
            raise ValueError(f"[salient_target] weight must be >= 0 and margin >= 1, not {self.weight} and {self.margin}")

    @property
    def class_ids(self) -> tuple[int, ...]:
        return tuple(CLASS_NAMES.index(name) for name in self.classes)


def object_surround(label: torch.Tensor, class_ids: tuple[int, ...], margin: int, include_objects: bool = False) -> torch.Tensor:
    """Background pixels (class 0) within ``margin`` pixels (a square window) of the given classes.

    Args:
        label: ``(B, H, W)`` integer class ids (``IGNORE_INDEX`` is neither object nor background).
        class_ids: the object classes whose surround is wanted.
        margin: reach in pixels, ``>= 0`` (0: no surround).
        include_objects: also return the pixels of the given classes themselves.

    Returns:
        ``(B, 1, H, W)`` bool.

    Example:
        >>> label = torch.zeros(1, 5, 5, dtype=torch.long)
        >>> label[0, 2, 2] = 2
        >>> int(object_surround(label, (2,), 1).sum())  # the 8 neighbours
        8
    """
    seeds = torch.zeros_like(label, dtype=torch.bool)
    for class_id in class_ids:
        seeds |= label == class_id
    # A square max filter is a row filter then a column filter, at 2/(2 margin + 1) of the work.
    size = 2 * margin + 1
    grown = F.max_pool2d(seeds[:, None].float(), (1, size), stride=1, padding=(0, margin))
    grown = F.max_pool2d(grown, (size, 1), stride=1, padding=(margin, 0))
    kept = (label == 0) | seeds if include_objects else label == 0
    return (grown > 0) & kept[:, None]


def salient_target_loss(fused: torch.Tensor, ir: torch.Tensor, region: torch.Tensor) -> torch.Tensor:
    """L1 distance to the IR image inside ``region``, averaged over all pixels.

    The intensity loss's target, the maximum of the sources, gives a person walking in daylight
    the bright visible background around it and so takes away the contrast that IR gives it
    (docs/training.md, "Salient-target loss"). In the surround of labelled objects (see
    :func:`object_surround`) this term pulls the fused intensity to the darker IR background
    instead, while the objects keep the maximum. (Pulling the objects themselves to IR as well
    was measured to *lower* their contrast: IR persons are darker than the maximum.) Averaging
    over all pixels, not the region, keeps a frame with a small person from weighing as much as
    one full of people.

    Args:
        fused, ir: ``(B, 1, H, W)`` float in ``[0, 1]``.
        region: ``(B, 1, H, W)`` bool, e.g. from :func:`object_surround`.

    Returns:
        Scalar float tensor; ``0`` when the region is empty.

    Example:
        >>> ir = torch.ones(1, 1, 4, 4)
        >>> region = torch.zeros(1, 1, 4, 4, dtype=torch.bool)
        >>> region[..., :2, :] = True
        >>> float(salient_target_loss(torch.zeros(1, 1, 4, 4), ir, region))
        0.5
    """
    return ((fused - ir).abs() * region).mean()


@dataclass(frozen=True)
class SemanticLossConfig:
    """Settings of the semantic loss (see :func:`semantic_loss`).

    ``threshold``: pixels whose true-class probability is below it are *hard* and always kept.
    ``min_kept_fraction``: at least this share of the valid pixels (the hardest) is kept, so
    the loss never rests on a handful of pixels once the network is confident. A share rather
    than a count: it means the same for any crop size, batch size or number of processes.
    ``aux_weight``: weight of the auxiliary head's loss while training the segmentation network.
    ``class_weights``: one weight per class (empty: all 1).
    ``lovasz_weight``: weight of the Lovász-softmax loss (:func:`lovasz_softmax`) added to the
    main head's cross-entropy (0: off). Cross-entropy counts every pixel alike; IoU, what
    segmentation is scored by, weighs a class's false pixels against its true ones, per class.
    """

    threshold: float = 0.7
    min_kept_fraction: float = 1 / 16
    aux_weight: float = 0.4
    class_weights: tuple[float, ...] = ()
    lovasz_weight: float = 0.0

    def __post_init__(self):
        if self.lovasz_weight < 0:
            raise ValueError(f"[semantic_loss] lovasz_weight must be >= 0, not {self.lovasz_weight}")


def ohem_cross_entropy(
    logits: torch.Tensor,
    target: torch.Tensor,
    *,
    threshold: float = 0.7,
    min_kept_fraction: float = 1 / 16,
    class_weights: torch.Tensor | None = None,
    ignore_index: int = IGNORE_INDEX,
) -> torch.Tensor:
    """Cross-entropy over the hard pixels only (online hard example mining).

    Background (class 0) is ~93% of MSRS label pixels and quickly becomes easy; averaging over
    all pixels would let it drown the rare classes. Only pixels whose probability of the true
    class is below ``threshold`` count, and at least ``ceil(min_kept_fraction * valid)`` of the
    hardest valid pixels (ties broken by ``torch.topk``). With ``class_weights`` the kept pixels
    are averaged with weight ``class_weights[target]``, as ``F.cross_entropy`` does.

    Args:
        logits: ``(B, K, H, W)`` float, unnormalised class scores.
        target: ``(B, H, W)`` int64 class ids in ``[0, K)``, or ``ignore_index`` (never counted).
        threshold: true-class probability in ``(0, 1]`` below which a pixel is hard.
        min_kept_fraction: share in ``[0, 1]`` of the valid pixels kept at least.
        class_weights: ``(K,)`` float, or ``None`` for equal weights.
        ignore_index: label value of pixels to ignore (unlabelled pairs are all ``ignore_index``).

    Returns:
        Scalar float tensor; ``0`` (still attached to ``logits``) when no pixel is valid.

    Example:
        >>> logits = torch.zeros(1, 9, 4, 4)
        >>> target = torch.full((1, 4, 4), 255)
        >>> target[0, 0, 0] = 3
        >>> round(float(ohem_cross_entropy(logits, target)), 4)  # log(9): one uniform pixel
        2.1972
    """
    per_pixel = F.cross_entropy(logits, target, ignore_index=ignore_index, reduction="none")
    valid = target != ignore_index
    losses = per_pixel[valid]
    if losses.numel() == 0:
        return logits.sum() * 0.0
    weights = class_weights.to(losses)[target[valid]] if class_weights is not None else torch.ones_like(losses)
    # probability < threshold  <=>  -log(probability) > -log(threshold)
    hard = losses.detach() > -math.log(threshold)
    min_kept = min(losses.numel(), math.ceil(min_kept_fraction * losses.numel()))
    if int(hard.sum()) < min_kept:
        kept = torch.topk(losses.detach(), min_kept, sorted=False).indices
        losses, weights = losses[kept], weights[kept]
    else:
        losses, weights = losses[hard], weights[hard]
    return (losses * weights).sum() / weights.sum().clamp_min(torch.finfo(losses.dtype).tiny)


def lovasz_softmax(
    logits: torch.Tensor, target: torch.Tensor, *, stride: int = 1, ignore_index: int = IGNORE_INDEX
) -> torch.Tensor:
    """Lovász-softmax loss: a convex surrogate of 1 - IoU, averaged over the classes present.

    Berman, Rannen Triki and Blaschko (CVPR 2018). For each class present in ``target``, the
    pixels' errors ``|[target = c] - p_c|`` are sorted, largest first, and weighted by the steps of
    the class's Jaccard loss as pixels are counted wrong in that order: the Lovász extension of
    1 - IoU at those errors. Classes absent from the batch are left out (their IoU is undefined).

    Args:
        logits: ``(B, K, H, W)`` float, unnormalised class scores.
        target: ``(B, H, W)`` int64 class ids in ``[0, K)``, or ``ignore_index`` (never counted).
        stride: use every ``stride``-th pixel in each direction (sorting is the cost; the
            segmentation network's logits are upsampled from 1/8, so neighbours nearly repeat).
        ignore_index: label value of pixels to ignore.

    Returns:
        Scalar float tensor in ``[0, 1]``; ``0`` (still attached to ``logits``) when no pixel is valid.

    Example:
        >>> target = torch.tensor([[[0, 1], [1, 1]]])
        >>> right = 20 * F.one_hot(target, 2).permute(0, 3, 1, 2).float()
        >>> round(float(lovasz_softmax(right, target)), 4), round(float(lovasz_softmax(-right, target)), 4)
        (0.0, 1.0)
    """
    probabilities = logits[:, :, ::stride, ::stride].softmax(dim=1)
    target = target[:, ::stride, ::stride]
    valid = target != ignore_index
    probabilities = probabilities.permute(1, 0, 2, 3)[:, valid]  # (K, N)
    target = target[valid]
    losses = []
    for index in target.unique().tolist():
        foreground = (target == index).to(probabilities.dtype)
        errors, order = torch.sort((foreground - probabilities[index]).abs(), descending=True)
        foreground = foreground[order]
        # Jaccard loss once the first i pixels of that order are counted wrong, and its steps.
        total = foreground.sum()
        jaccard = 1 - (total - foreground.cumsum(0)) / (total + (1 - foreground).cumsum(0))
        steps = torch.cat([jaccard[:1], jaccard[1:] - jaccard[:-1]])
        losses.append(torch.dot(errors, steps))
    if not losses:
        return logits.sum() * 0.0
    return torch.stack(losses).mean()


def semantic_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    config: SemanticLossConfig = SemanticLossConfig(),
    aux_logits: torch.Tensor | None = None,
) -> torch.Tensor:
    """OHEM cross-entropy of the main head, plus ``aux_weight`` times that of the auxiliary head,
    plus ``lovasz_weight`` times the main head's :func:`lovasz_softmax` (every fourth pixel, each way).

    Args:
        logits: ``(B, K, H, W)`` main-head logits.
        target: ``(B, H, W)`` int64 class ids, 255 where unlabelled.
        config: threshold, minimum kept share, auxiliary weight, class weights.
        aux_logits: ``(B, K, H, W)`` auxiliary-head logits while training the segmentation
            network; ``None`` when the loss drives the fusion network (main head only).

    Returns:
        Scalar float tensor.

    Example:
        >>> logits, target = torch.randn(2, 9, 8, 8), torch.randint(0, 9, (2, 8, 8))
        >>> semantic_loss(logits, target, aux_logits=logits).shape
        torch.Size([])
    """
    options = dict(threshold=config.threshold, min_kept_fraction=config.min_kept_fraction)
    if config.class_weights:
        options["class_weights"] = torch.tensor(config.class_weights, dtype=logits.dtype, device=logits.device)
    loss = ohem_cross_entropy(logits, target, **options)
    if config.lovasz_weight:
        loss = loss + config.lovasz_weight * lovasz_softmax(logits, target, stride=4)
    if aux_logits is not None:
        loss = loss + config.aux_weight * ohem_cross_entropy(aux_logits, target, **options)
    return loss
