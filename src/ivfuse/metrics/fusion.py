"""Image fusion quality metrics.

Every metric works on **greyscale images on the 0..255 scale as float64 arrays of shape
HxW** (use :func:`to_gray255` to convert what :func:`ivfuse.io.read_image` returns).
``ir`` is the infrared source A, ``vis`` the visible source B and ``fused`` the fused
image F; the three must have the same shape.

Three conventions are supported (see ``docs/metrics.md``):

* ``"canonical"``: the definitions of the original papers.
* ``"cddfuse"``: the numbers of MMIF-CDDFuse's ``utils/Evaluator.py``.
* ``"tang"``: the numbers of Tang's MATLAB toolbox (current version).

Example:
    >>> import numpy as np
    >>> from ivfuse.metrics import compute_all
    >>> rng = np.random.default_rng(0)
    >>> ir, vis = rng.integers(0, 256, (2, 64, 64)).astype(np.float64)
    >>> scores = compute_all(ir, vis, (ir + vis) / 2, metrics=["EN", "SSIM"])
    >>> sorted(scores)
    ['EN', 'SSIM']
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterable

import numpy as np
from scipy import ndimage

__all__ = [
    "CONVENTIONS",
    "HIGHER_IS_BETTER",
    "METRIC_NAMES",
    "MetricUndefinedWarning",
    "ag",
    "cc",
    "compute_all",
    "en",
    "mi",
    "nabf",
    "psnr",
    "qabf",
    "resolve_metric_names",
    "scd",
    "sd",
    "sf",
    "ssim",
    "to_gray255",
    "vif",
]

CONVENTIONS = ("canonical", "cddfuse", "tang")

METRIC_NAMES = ("EN", "SD", "SF", "AG", "MI", "SCD", "CC", "PSNR", "VIF", "Qabf", "SSIM", "Nabf")

#: Direction of "better" for each metric; Nabf measures artefacts, so lower is better.
HIGHER_IS_BETTER = {name: name != "Nabf" for name in METRIC_NAMES}


class MetricUndefinedWarning(RuntimeWarning):
    """A metric is undefined for the given images (for example a correlation with a constant)."""


class ImageTooSmallError(ValueError):
    """The image is smaller than a metric's window (VIF needs about 41x41 pixels, SSIM 11x11)."""


# --------------------------------------------------------------------------------------
# Greyscale conversion
# --------------------------------------------------------------------------------------


def to_gray255(image: np.ndarray) -> np.ndarray:
    """Convert an image to the integer-valued 0..255 float64 greyscale the metrics use.

    Metrics are defined on 8-bit grey levels (EN and MI bin by grey level), so values are
    rounded to integers. Colour images become BT.601 luma ``0.299 R + 0.587 G + 0.114 B``
    rounded half up, computed in integer arithmetic so that an image with equal channels
    is returned exactly. An alpha channel is dropped.

    Args:
        image: HxW, HxWx1, HxWx3 or HxWx4 array. ``uint8`` is taken as 0..255, ``uint16``
            as 0..65535 (rescaled to 0..255), any float dtype as 0..1 (what
            :func:`ivfuse.io.read_image` returns).

    Returns:
        HxW float64 array of integers in 0..255.

    Example:
        >>> import numpy as np
        >>> to_gray255(np.array([[[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]]]))
        array([[255.,  76.]])
    """
    array = np.asarray(image)
    if array.ndim == 3 and array.shape[2] in (1, 3, 4):
        channels = array.shape[2]
    elif array.ndim == 2:
        channels = 0
    else:
        raise ValueError(f"expected an HxW or HxWxC (C = 1, 3, 4) image, got shape {array.shape}")
    if array.dtype == np.uint8:
        levels = array.astype(np.int64)
    elif array.dtype == np.uint16:
        levels = np.floor(array.astype(np.float64) * (255.0 / 65535.0) + 0.5).astype(np.int64)
    elif np.issubdtype(array.dtype, np.floating):
        levels = np.floor(np.clip(array.astype(np.float64), 0.0, 1.0) * 255.0 + 0.5).astype(np.int64)
    else:
        raise ValueError(f"unsupported image dtype {array.dtype}; use uint8, uint16 or float in 0..1")
    if channels in (3, 4):
        red, green, blue = levels[..., 0], levels[..., 1], levels[..., 2]
        # Integer weights (per mille) make "round half up" exact and keep R = G = B exact.
        levels = (299 * red + 587 * green + 114 * blue + 500) // 1000
    elif channels == 1:
        levels = levels[..., 0]
    return levels.astype(np.float64)


# --------------------------------------------------------------------------------------
# Shared helpers
# --------------------------------------------------------------------------------------


def _check_convention(convention: str) -> None:
    if convention not in CONVENTIONS:
        raise ValueError(f"unknown convention {convention!r}; choose one of {', '.join(CONVENTIONS)}")


def _grey_levels(image: np.ndarray) -> np.ndarray:
    """Integer grey levels 0..255 used as histogram bins."""
    return np.clip(np.rint(image), 0, 255).astype(np.int64)


def _entropy_bits(counts: np.ndarray) -> float:
    """Shannon entropy in bits of a histogram given as counts (0 log 0 = 0)."""
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log2(p)).sum())


def _mutual_information_bits(x: np.ndarray, y: np.ndarray, merge_top_levels: bool) -> float:
    """MI(x, y) = H(x) + H(y) - H(x, y) in bits from 256-bin marginals and a 256x256 joint.

    ``merge_top_levels`` merges grey levels 254 and 255 in the joint histogram only
    (Tang's toolbox).
    """
    x_levels, y_levels = _grey_levels(x).ravel(), _grey_levels(y).ravel()
    h_x = _entropy_bits(np.bincount(x_levels, minlength=256))
    h_y = _entropy_bits(np.bincount(y_levels, minlength=256))
    if merge_top_levels:
        x_levels, y_levels = np.minimum(x_levels, 254), np.minimum(y_levels, 254)
    h_xy = _entropy_bits(np.bincount(x_levels * 256 + y_levels, minlength=256 * 256))
    return h_x + h_y - h_xy


def _corr2(x: np.ndarray, y: np.ndarray, what: str) -> float:
    """Pearson correlation of two images (MATLAB ``corr2``); NaN with a warning if undefined."""
    dx, dy = x - x.mean(), y - y.mean()
    denominator = math.sqrt(float((dx * dx).sum()) * float((dy * dy).sum()))
    if denominator == 0.0:
        warnings.warn(f"{what} is undefined: an image in a correlation is constant", MetricUndefinedWarning, stacklevel=3)
        return math.nan
    return float((dx * dy).sum()) / denominator


def _gaussian_window_1d(size: int, sigma: float) -> np.ndarray:
    """Normalised 1-D Gaussian; its outer product is MATLAB's ``fspecial('gaussian')``."""
    offsets = np.arange(size) - (size - 1) / 2.0
    window = np.exp(-(offsets**2) / (2.0 * sigma**2))
    return window / window.sum()


def _filter_valid(image: np.ndarray, window_1d: np.ndarray) -> np.ndarray:
    """Separable 2-D filtering with ``outer(window_1d, window_1d)``, 'valid' region only."""
    size = window_1d.size
    if image.shape[0] < size or image.shape[1] < size:
        raise ImageTooSmallError(f"image of shape {image.shape} is smaller than the {size}x{size} metric window")
    # 'valid' output does not depend on the boundary mode; origin shifts centre the window.
    half = (size - 1) // 2
    rows = ndimage.correlate1d(image, window_1d, axis=0, mode="constant")
    both = ndimage.correlate1d(rows, window_1d, axis=1, mode="constant")
    return both[half : half + image.shape[0] - size + 1, half : half + image.shape[1] - size + 1]


def _local_moments(x: np.ndarray, y: np.ndarray, window_1d: np.ndarray):
    """Windowed means, variances and covariance ('valid'): (mu_x, mu_y, var_x, var_y, cov)."""
    mu_x, mu_y = _filter_valid(x, window_1d), _filter_valid(y, window_1d)
    var_x = _filter_valid(x * x, window_1d) - mu_x * mu_x
    var_y = _filter_valid(y * y, window_1d) - mu_y * mu_y
    cov = _filter_valid(x * y, window_1d) - mu_x * mu_y
    return mu_x, mu_y, var_x, var_y, cov


_SOBEL_ROW = np.array([1.0, 2.0, 1.0])
_SOBEL_DIFF = np.array([-1.0, 0.0, 1.0])


def _sobel_strength_orientation(image: np.ndarray, mode: str, scale: float):
    """Sobel edge strength and orientation.

    Orientation is ``atan(Sy / Sx)`` in [-pi/2, pi/2] with ``pi/2`` where ``Sx = 0``, as in
    the reference implementations (not ``atan2``). ``mode`` is the scipy boundary mode:
    "constant" is zero padding, "mirror" mirrors about the edge sample without repeating it
    (padding row -1 equals row 1).
    """
    sx = ndimage.correlate1d(ndimage.correlate1d(image, _SOBEL_DIFF, axis=1, mode=mode), _SOBEL_ROW, axis=0, mode=mode)
    sy = ndimage.correlate1d(ndimage.correlate1d(image, _SOBEL_DIFF, axis=0, mode=mode), _SOBEL_ROW, axis=1, mode=mode)
    sx, sy = sx * scale, sy * scale
    strength = np.sqrt(sx * sx + sy * sy)
    vertical = sx == 0
    orientation = np.where(vertical, np.pi / 2, np.arctan(sy / np.where(vertical, 1.0, sx)))
    return strength, orientation


def _relative_strength(g_source: np.ndarray, g_fused: np.ndarray) -> np.ndarray:
    """min(g)/max(g) of the two strengths; ratio of the smaller to the larger."""
    smaller, larger = np.minimum(g_source, g_fused), np.maximum(g_source, g_fused)
    return smaller / np.where(larger == 0, 1.0, larger)


def _sigmoid(x: np.ndarray, gain: float, steepness: float, midpoint: float) -> np.ndarray:
    """``gain / (1 + exp(-steepness (x - midpoint)))``, increasing for positive steepness."""
    return gain / (1.0 + np.exp(-steepness * (x - midpoint)))


# --------------------------------------------------------------------------------------
# Metrics without references
# --------------------------------------------------------------------------------------


def en(fused: np.ndarray) -> float:
    """Entropy: ``-sum p_k log2 p_k`` over the 256-bin grey-level histogram of F, in bits.

    Args:
        fused: HxW float64 on 0..255 (values are rounded to grey levels).

    Returns:
        Entropy in bits, in [0, 8].

    Example:
        >>> import numpy as np
        >>> en(np.arange(256.0).reshape(16, 16))
        8.0
    """
    return _entropy_bits(np.bincount(_grey_levels(fused).ravel(), minlength=256))


def sd(fused: np.ndarray) -> float:
    """Standard deviation of F (population, ddof = 0).

    Args:
        fused: HxW float64 on 0..255.

    Returns:
        ``sqrt(mean((F - mean F)^2))``.

    Example:
        >>> import numpy as np
        >>> sd(np.array([[0.0, 255.0]]))
        127.5
    """
    return float(np.std(fused))


def sf(fused: np.ndarray) -> float:
    """Spatial frequency ``sqrt(RF^2 + CF^2)``.

    ``RF^2`` is the mean of squared horizontal first differences over H x (W-1) pixels,
    ``CF^2`` the mean of squared vertical ones over (H-1) x W pixels.

    Args:
        fused: HxW float64 on 0..255, H, W >= 2.

    Returns:
        Spatial frequency (grey levels per pixel).

    Example:
        >>> import numpy as np
        >>> sf(np.tile([0.0, 10.0], (4, 2)))
        10.0
    """
    row_frequency_sq = np.mean(np.diff(fused, axis=1) ** 2)
    column_frequency_sq = np.mean(np.diff(fused, axis=0) ** 2)
    return float(np.sqrt(row_frequency_sq + column_frequency_sq))


def ag(fused: np.ndarray, *, convention: str = "canonical") -> float:
    """Average gradient.

    Gradients as MATLAB ``gradient`` (central differences inside, one-sided at the
    borders); ``s = sqrt((gx^2 + gy^2) / 2)``; AG = ``sum(s) / ((H-1)(W-1))``, or
    ``sum(s) / (H W)`` under the ``cddfuse`` convention.

    Args:
        fused: HxW float64 on 0..255, H, W >= 2.
        convention: "canonical", "cddfuse" or "tang" (tang = canonical).

    Returns:
        Average gradient.

    Example:
        >>> import numpy as np
        >>> round(ag(np.tile(np.arange(3.0) * 2, (3, 1))), 6)  # s = sqrt(2) on 9 px, / (2 x 2)
        3.181981
    """
    _check_convention(convention)
    grad_y, grad_x = np.gradient(fused)
    total = float(np.sqrt((grad_x**2 + grad_y**2) / 2.0).sum())
    height, width = fused.shape
    pixels = height * width if convention == "cddfuse" else (height - 1) * (width - 1)
    return total / pixels


# --------------------------------------------------------------------------------------
# Metrics with references
# --------------------------------------------------------------------------------------


def mi(ir: np.ndarray, vis: np.ndarray, fused: np.ndarray, *, convention: str = "canonical") -> float:
    """Mutual information ``MI(A, F) + MI(B, F)`` from 256x256 joint histograms.

    In bits (canonical); in nats under ``cddfuse`` (canonical x ln 2); under ``tang``
    in bits with grey levels 254 and 255 merged in the joint histograms only.

    Args:
        ir, vis, fused: HxW float64 on 0..255 (rounded to grey levels).
        convention: "canonical", "cddfuse" or "tang".

    Returns:
        Mutual information.

    Example:
        >>> import numpy as np
        >>> x = np.arange(256.0).reshape(16, 16)
        >>> mi(x, x, x)  # 2 x EN(x)
        16.0
    """
    _check_convention(convention)
    merge = convention == "tang"
    bits = _mutual_information_bits(ir, fused, merge) + _mutual_information_bits(vis, fused, merge)
    return bits * math.log(2.0) if convention == "cddfuse" else bits


def scd(ir: np.ndarray, vis: np.ndarray, fused: np.ndarray) -> float:
    """Sum of correlations of differences ``corr2(F - B, A) + corr2(F - A, B)``.

    Undefined (NaN with a :class:`MetricUndefinedWarning`) when a difference or a source is
    constant, e.g. when F equals a source.

    Args:
        ir, vis, fused: HxW float64 on 0..255.

    Returns:
        SCD in [-2, 2] or NaN.

    Example:
        >>> import numpy as np
        >>> rng = np.random.default_rng(0)
        >>> a, b = rng.normal(size=(2, 32, 32))
        >>> round(scd(a, b, a + b), 6)  # F - B = A and F - A = B
        2.0
    """
    return _corr2(fused - vis, ir, "SCD") + _corr2(fused - ir, vis, "SCD")


def cc(ir: np.ndarray, vis: np.ndarray, fused: np.ndarray) -> float:
    """Correlation coefficient ``(corr2(A, F) + corr2(B, F)) / 2``.

    NaN with a :class:`MetricUndefinedWarning` when an image is constant.

    Args:
        ir, vis, fused: HxW float64 on 0..255.

    Returns:
        CC in [-1, 1] or NaN.

    Example:
        >>> import numpy as np
        >>> x = np.arange(16.0).reshape(4, 4)
        >>> cc(x, 2 * x, x)
        1.0
    """
    return (_corr2(ir, fused, "CC") + _corr2(vis, fused, "CC")) / 2.0


def psnr(ir: np.ndarray, vis: np.ndarray, fused: np.ndarray, *, convention: str = "canonical") -> float:
    """Peak signal-to-noise ratio ``10 log10(peak^2 / MSE)``, ``MSE = (MSE(A,F) + MSE(B,F)) / 2``.

    canonical: peak 255. cddfuse: peak ``max(F)``. tang: MSE computed on 0..1 data with
    peak 255, i.e. canonical + 20 log10(255) = canonical + 48.1308 dB.
    ``inf`` when F = A = B (MSE = 0).

    Args:
        ir, vis, fused: HxW float64 on 0..255.
        convention: "canonical", "cddfuse" or "tang".

    Returns:
        PSNR in dB.

    Example:
        >>> import numpy as np
        >>> a = np.zeros((4, 4))
        >>> round(psnr(a, a, a + 1.0), 4)  # MSE = 1
        48.1308
    """
    _check_convention(convention)
    mse = (np.mean((ir - fused) ** 2) + np.mean((vis - fused) ** 2)) / 2.0
    if convention == "tang":
        mse = mse / 255.0**2
    peak = float(np.max(fused)) if convention == "cddfuse" else 255.0
    if mse == 0:
        return math.inf
    with np.errstate(divide="ignore"):
        return float(10.0 * np.log10(peak**2 / mse))


_VIF_NOISE_VARIANCE = 2.0
_VIF_WINDOWS = tuple(_gaussian_window_1d(size, size / 5.0) for size in (17, 9, 5, 3))
# Variances below this are treated as zero (the standard guards of vifp).
_VIF_EPS = 1e-10


def _vifp(reference: np.ndarray, distorted: np.ndarray) -> float:
    """Pixel-domain multi-scale VIF (Sheikh & Bovik) of one reference/distorted pair."""
    numerator = denominator = 0.0
    for scale, window in enumerate(_VIF_WINDOWS):
        if scale > 0:
            reference = _filter_valid(reference, window)[::2, ::2]
            distorted = _filter_valid(distorted, window)[::2, ::2]
        _, _, var_ref, var_dist, cov = _local_moments(reference, distorted, window)
        var_ref = np.maximum(var_ref, 0.0)
        var_dist = np.maximum(var_dist, 0.0)
        gain = cov / (var_ref + _VIF_EPS)
        noise_var = var_dist - gain * cov
        flat_ref = var_ref < _VIF_EPS
        gain[flat_ref] = 0.0
        noise_var[flat_ref] = var_dist[flat_ref]
        var_ref[flat_ref] = 0.0
        flat_dist = var_dist < _VIF_EPS
        gain[flat_dist] = 0.0
        noise_var[flat_dist] = 0.0
        negative_gain = gain < 0
        noise_var[negative_gain] = var_dist[negative_gain]
        gain[negative_gain] = 0.0
        noise_var = np.maximum(noise_var, _VIF_EPS)
        numerator += float(np.log10(1.0 + gain**2 * var_ref / (noise_var + _VIF_NOISE_VARIANCE)).sum())
        denominator += float(np.log10(1.0 + var_ref / _VIF_NOISE_VARIANCE).sum())
    if denominator == 0.0:
        warnings.warn("VIF is undefined: the source image has no texture", MetricUndefinedWarning, stacklevel=3)
        return math.nan
    return numerator / denominator


def vif(ir: np.ndarray, vis: np.ndarray, fused: np.ndarray) -> float:
    """Visual information fidelity ``vifp(A, F) + vifp(B, F)`` (Sheikh & Bovik, pixel domain).

    Four scales with Gaussian windows N = 17, 9, 5, 3 (sigma = N / 5), 'valid' filtering,
    the image filtered and decimated by 2 before each scale after the first, noise
    variance 2, numerator and denominator summed over scales. This is the "VIF"/"VIFF" of
    most fusion toolboxes, not Han et al.'s VIFF.

    Args:
        ir, vis, fused: HxW float64 on 0..255, at least 41x41 pixels.

    Returns:
        VIF; 1 per term when F equals the source.

    Example:
        >>> import numpy as np
        >>> x = np.random.default_rng(0).uniform(0, 255, (64, 64))
        >>> round(vif(x, x, x), 6)
        2.0
    """
    return _vifp(ir, fused) + _vifp(vis, fused)


_QABF_STRENGTH = (0.9994, 15.0, 0.5)  # Tg, -kg, Dg (the paper writes kg = -15)
_QABF_ORIENTATION = (0.9879, 22.0, 0.8)  # Ta, -ka, Da (the paper writes ka = -22)


def _qabf_edge_preservation(g_source, a_source, g_fused, a_fused) -> np.ndarray:
    relative = _relative_strength(g_source, g_fused)
    # Reference implementations set G = gF (not 1) where the strengths are equal.
    relative = np.where(g_source == g_fused, g_fused, relative)
    orientation = 1.0 - np.abs(a_source - a_fused) / (np.pi / 2)
    return _sigmoid(relative, *_QABF_STRENGTH) * _sigmoid(orientation, *_QABF_ORIENTATION)


def qabf(ir: np.ndarray, vis: np.ndarray, fused: np.ndarray) -> float:
    """Xydeas–Petrovic edge-information preservation Q^{AB/F}.

    3x3 Sobel with zero padding; strengths g and orientations alpha = atan(Sy/Sx);
    ``Qabf = sum(Q_AF gA + Q_BF gB) / sum(gA + gB)``. F = A = B gives about 0.975, not 1.
    NaN with a warning when both sources have no edges.

    Args:
        ir, vis, fused: HxW float64 on 0..255.

    Returns:
        Qabf in [0, 1).

    Example:
        >>> import numpy as np
        >>> x = np.random.default_rng(0).uniform(0, 255, (32, 32))
        >>> round(qabf(x, x, x), 3)
        0.975
    """
    g_ir, a_ir = _sobel_strength_orientation(ir, "constant", 1.0)
    g_vis, a_vis = _sobel_strength_orientation(vis, "constant", 1.0)
    g_fused, a_fused = _sobel_strength_orientation(fused, "constant", 1.0)
    weight_sum = float((g_ir + g_vis).sum())
    if weight_sum == 0.0:
        warnings.warn("Qabf is undefined: both sources are constant", MetricUndefinedWarning, stacklevel=2)
        return math.nan
    q_ir = _qabf_edge_preservation(g_ir, a_ir, g_fused, a_fused)
    q_vis = _qabf_edge_preservation(g_vis, a_vis, g_fused, a_fused)
    return float((q_ir * g_ir + q_vis * g_vis).sum()) / weight_sum


_SSIM_CANONICAL_WINDOW = _gaussian_window_1d(11, 1.5)
_SSIM_CDDFUSE_WINDOW = np.full(7, 1.0 / 7.0)


def _ssim(x: np.ndarray, y: np.ndarray, window_1d: np.ndarray, data_range: float, sample_covariance: bool) -> float:
    """Mean of the SSIM map over the 'valid' region."""
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mu_x, mu_y, var_x, var_y, cov = _local_moments(x, y, window_1d)
    if sample_covariance:
        pixels = window_1d.size**2
        correction = pixels / (pixels - 1.0)
        var_x, var_y, cov = var_x * correction, var_y * correction, cov * correction
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return float(ssim_map.mean())


def ssim(ir: np.ndarray, vis: np.ndarray, fused: np.ndarray, *, convention: str = "canonical") -> float:
    """Structural similarity ``SSIM(A, F) + SSIM(B, F)`` (Wang et al. 2004).

    canonical: 11x11 Gaussian window (sigma 1.5), K = (0.01, 0.03), L = 255, mean of the
    'valid' SSIM map, so the sum lies in [-2, 2]. cddfuse: scikit-image 0.19's default on
    float input: 7x7 uniform window, sample covariance, data_range = 2 (about 40% lower,
    not comparable). tang = canonical.

    Args:
        ir, vis, fused: HxW float64 on 0..255, at least 11x11 pixels.
        convention: "canonical", "cddfuse" or "tang".

    Returns:
        SSIM sum; 2 when F = A = B.

    Example:
        >>> import numpy as np
        >>> x = np.random.default_rng(0).uniform(0, 255, (32, 32))
        >>> ssim(x, x, x)
        2.0
    """
    _check_convention(convention)
    if convention == "cddfuse":
        window, data_range, sample_covariance = _SSIM_CDDFUSE_WINDOW, 2.0, True
    else:
        window, data_range, sample_covariance = _SSIM_CANONICAL_WINDOW, 255.0, False
    return _ssim(ir, fused, window, data_range, sample_covariance) + _ssim(vis, fused, window, data_range, sample_covariance)


_NABF_STRENGTH = (0.9999, 19.0, 0.5)
_NABF_ORIENTATION = (0.9995, 22.0, 0.5)
_NABF_EDGE_THRESHOLD = 2.0
_NABF_MIN_WEIGHT = 0.001
_NABF_WEIGHT_EXPONENT = 1.5


def _nabf_loss_terms(g_source, a_source, g_fused, a_fused):
    """(1 - Q_SF) and the weights w_S of one source."""
    relative = np.where((g_source == 0) | (g_fused == 0), 0.0, _relative_strength(g_source, g_fused))
    orientation = np.abs(np.abs(a_source - a_fused) - np.pi / 2) * (2.0 / np.pi)
    preservation = np.sqrt(_sigmoid(relative, *_NABF_STRENGTH) * _sigmoid(orientation, *_NABF_ORIENTATION))
    weight = np.where(g_source >= _NABF_EDGE_THRESHOLD, g_source**_NABF_WEIGHT_EXPONENT, _NABF_MIN_WEIGHT)
    return 1.0 - preservation, weight


def nabf(ir: np.ndarray, vis: np.ndarray, fused: np.ndarray) -> float:
    """Modified fusion-artefact measure N^{AB/F} (Shreyamsha Kumar); lower is better.

    Sobel / 8 with mirror padding that does not repeat the edge sample (the reference
    ``per_extn_im_fn``: the padding row above row 0 is row 1); relative strength 0 where either
    strength is 0; orientation term ``||aS - aF| - pi/2| 2/pi``;
    ``Q = sqrt(Qg Qa)`` with sigmoids (0.9999, 19, 0.5) and (0.9995, 22, 0.5);
    weights ``g^1.5`` where ``g >= 2`` else 0.001; Nabf is the weighted loss
    ``(1 - Q_AF) wA + (1 - Q_BF) wB`` summed where F has stronger edges than both sources,
    over ``sum(wA + wB)``.

    Args:
        ir, vis, fused: HxW float64 on 0..255.

    Returns:
        Nabf in [0, 1]; 0 when F = A = B.

    Example:
        >>> import numpy as np
        >>> x = np.random.default_rng(0).uniform(0, 255, (32, 32))
        >>> nabf(x, x, x)
        0.0
    """
    g_ir, a_ir = _sobel_strength_orientation(ir, "mirror", 1.0 / 8.0)
    g_vis, a_vis = _sobel_strength_orientation(vis, "mirror", 1.0 / 8.0)
    g_fused, a_fused = _sobel_strength_orientation(fused, "mirror", 1.0 / 8.0)
    loss_ir, weight_ir = _nabf_loss_terms(g_ir, a_ir, g_fused, a_fused)
    loss_vis, weight_vis = _nabf_loss_terms(g_vis, a_vis, g_fused, a_fused)
    artefact = (g_fused > g_ir) & (g_fused > g_vis)
    return float(np.where(artefact, loss_ir * weight_ir + loss_vis * weight_vis, 0.0).sum() / (weight_ir + weight_vis).sum())


# --------------------------------------------------------------------------------------
# All metrics at once
# --------------------------------------------------------------------------------------

_FUSED_ONLY: dict[str, Callable[..., float]] = {"EN": en, "SD": sd, "SF": sf}
_WITH_SOURCES: dict[str, Callable[..., float]] = {
    "SCD": scd, "CC": cc, "VIF": vif, "Qabf": qabf, "Nabf": nabf,
}
_WITH_SOURCES_AND_CONVENTION: dict[str, Callable[..., float]] = {"MI": mi, "PSNR": psnr, "SSIM": ssim}


def resolve_metric_names(metrics: Iterable[str] | None) -> list[str]:
    """Canonical spelling of metric names (case-insensitive), in the order given.

    Args:
        metrics: names such as ``["en", "QABF"]``; ``None`` means all of :data:`METRIC_NAMES`.

    Returns:
        Names as spelled in :data:`METRIC_NAMES`.

    Example:
        >>> resolve_metric_names(["en", "qabf"])
        ['EN', 'Qabf']
    """
    if metrics is None:
        return list(METRIC_NAMES)
    by_lower = {name.lower(): name for name in METRIC_NAMES}
    resolved = []
    for name in metrics:
        key = name.strip().lower()
        if key not in by_lower:
            raise ValueError(f"unknown metric {name!r}; choose from {', '.join(METRIC_NAMES)}")
        if by_lower[key] not in resolved:
            resolved.append(by_lower[key])
    return resolved


def compute_all(
    ir: np.ndarray,
    vis: np.ndarray,
    fused: np.ndarray,
    metrics: Iterable[str] | None = None,
    convention: str = "canonical",
) -> dict[str, float]:
    """Compute several fusion metrics of one triple.

    Args:
        ir, vis, fused: HxW float64 greyscale on 0..255 of the same shape (see
            :func:`to_gray255`).
        metrics: metric names (case-insensitive), default all of :data:`METRIC_NAMES`.
        convention: "canonical", "cddfuse" or "tang".

    Returns:
        ``{name: value}`` in the order requested; undefined values are NaN, with a
        :class:`MetricUndefinedWarning` (also when the images are too small for VIF or SSIM).

    Example:
        >>> import numpy as np
        >>> x = np.arange(256.0).reshape(16, 16)
        >>> compute_all(x, x, x, metrics=["EN", "MI"], convention="cddfuse")["EN"]
        8.0
    """
    _check_convention(convention)
    if not (ir.shape == vis.shape == fused.shape) or ir.ndim != 2:
        raise ValueError(f"expected three HxW images of one shape, got {ir.shape}, {vis.shape}, {fused.shape}")
    scores = {}
    for name in resolve_metric_names(metrics):
        try:
            if name in _FUSED_ONLY:
                scores[name] = _FUSED_ONLY[name](fused)
            elif name == "AG":
                scores[name] = ag(fused, convention=convention)
            elif name in _WITH_SOURCES:
                scores[name] = _WITH_SOURCES[name](ir, vis, fused)
            else:
                scores[name] = _WITH_SOURCES_AND_CONVENTION[name](ir, vis, fused, convention=convention)
        except ImageTooSmallError as error:
            warnings.warn(f"{name} undefined: {error}", MetricUndefinedWarning, stacklevel=2)
            scores[name] = float("nan")
    return scores
