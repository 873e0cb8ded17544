"""Classical infrared–visible fusion baselines, on luminance.

Every baseline is a function ``f(ir, vis_y) -> fused``: ``ir`` and ``vis_y`` (the
visible luminance) are HxW float32 arrays in [0, 1] of the same shape, of any size; the
result is HxW float32, clipped to [0, 1] (never min-max stretched). Colour is handled
around them by the caller (fuse Y, keep the visible chroma), as for the network.

Example:
    >>> import numpy as np
    >>> ir, vis = np.zeros((16, 16), np.float32), np.ones((16, 16), np.float32)
    >>> float(BASELINES["average"](ir, vis)[0, 0])
    0.5
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pywt
from scipy import ndimage

__all__ = ["BASELINES", "average_fusion", "dwt_fusion", "gff_fusion", "laplacian_fusion", "max_fusion"]


def _check_pair(ir: np.ndarray, vis_y: np.ndarray) -> None:
    if ir.shape != vis_y.shape or ir.ndim != 2:
        raise ValueError(f"expected two HxW images of one shape, got {ir.shape} and {vis_y.shape}")


def _as_output(fused: np.ndarray) -> np.ndarray:
    return np.clip(fused, 0.0, 1.0).astype(np.float32)


def _select_max_abs(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per pixel, the coefficient with the larger magnitude (ties take ``a``)."""
    return np.where(np.abs(a) >= np.abs(b), a, b)


def average_fusion(ir: np.ndarray, vis_y: np.ndarray) -> np.ndarray:
    """Pixel average ``(ir + vis_y) / 2``.

    Args:
        ir, vis_y: HxW float32 in [0, 1].

    Returns:
        HxW float32 in [0, 1].

    Example:
        >>> import numpy as np
        >>> float(average_fusion(np.zeros((2, 2)), np.ones((2, 2)))[0, 0])
        0.5
    """
    _check_pair(ir, vis_y)
    return _as_output((np.asarray(ir, np.float64) + vis_y) / 2.0)


def max_fusion(ir: np.ndarray, vis_y: np.ndarray) -> np.ndarray:
    """Max-luminance: the brighter of the two pixels.

    Args:
        ir, vis_y: HxW float32 in [0, 1].

    Returns:
        HxW float32 in [0, 1].

    Example:
        >>> import numpy as np
        >>> max_fusion(np.array([[0.2, 0.9]]), np.array([[0.5, 0.1]])).tolist()
        [[0.5, 0.8999999761581421]]
    """
    _check_pair(ir, vis_y)
    return _as_output(np.maximum(ir, vis_y))


_BINOMIAL_5 = np.array([1.0, 4.0, 6.0, 4.0, 1.0]) / 16.0


def _blur(image: np.ndarray) -> np.ndarray:
    blurred = ndimage.correlate1d(image, _BINOMIAL_5, axis=0, mode="reflect")
    return ndimage.correlate1d(blurred, _BINOMIAL_5, axis=1, mode="reflect")


def _upsample(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Zero-insertion upsampling to ``shape``, blurred and normalised by the blurred mask.

    The normalisation makes the interpolation exact for constants up to the borders and
    for odd sizes, so flat regions give zero band-pass layers.
    """
    up, mask = np.zeros(shape), np.zeros(shape)
    up[::2, ::2] = image
    mask[::2, ::2] = 1.0
    return _blur(up) / _blur(mask)


def _laplacian_pyramid(image: np.ndarray, levels: int) -> list[np.ndarray]:
    """Band-pass layers, finest first, then the low-pass residual; odd sizes are fine."""
    pyramid, current = [], image
    for _ in range(levels):
        smaller = _blur(current)[::2, ::2]
        pyramid.append(current - _upsample(smaller, current.shape))
        current = smaller
    pyramid.append(current)
    return pyramid


def laplacian_fusion(ir: np.ndarray, vis_y: np.ndarray, levels: int = 4) -> np.ndarray:
    """Laplacian-pyramid fusion: max-abs band-pass coefficients, averaged base.

    Args:
        ir, vis_y: HxW float32 in [0, 1].
        levels: band-pass levels, reduced for small images so the base keeps >= 4 px.

    Returns:
        HxW float32 in [0, 1].

    Example:
        >>> import numpy as np
        >>> laplacian_fusion(np.zeros((17, 23)), np.ones((17, 23))).shape
        (17, 23)
    """
    _check_pair(ir, vis_y)
    levels = max(0, min(levels, int(np.log2(min(ir.shape))) - 2))
    pyramid_ir = _laplacian_pyramid(np.asarray(ir, np.float64), levels)
    pyramid_vis = _laplacian_pyramid(np.asarray(vis_y, np.float64), levels)
    fused = (pyramid_ir[-1] + pyramid_vis[-1]) / 2.0
    for band_ir, band_vis in zip(reversed(pyramid_ir[:-1]), reversed(pyramid_vis[:-1])):
        fused = _upsample(fused, band_ir.shape) + _select_max_abs(band_ir, band_vis)
    return _as_output(fused)


def dwt_fusion(ir: np.ndarray, vis_y: np.ndarray, wavelet: str = "db2", levels: int = 3) -> np.ndarray:
    """Discrete-wavelet fusion: max-abs detail coefficients, averaged approximation.

    Args:
        ir, vis_y: HxW float32 in [0, 1].
        wavelet: a PyWavelets discrete wavelet name.
        levels: decomposition levels, capped by the image size.

    Returns:
        HxW float32 in [0, 1].

    Example:
        >>> import numpy as np
        >>> dwt_fusion(np.zeros((16, 16)), np.ones((16, 16))).shape
        (16, 16)
    """
    _check_pair(ir, vis_y)
    levels = min(levels, pywt.dwt_max_level(min(ir.shape), pywt.Wavelet(wavelet).dec_len))
    coeffs_ir = pywt.wavedec2(np.asarray(ir, np.float64), wavelet, level=levels)
    coeffs_vis = pywt.wavedec2(np.asarray(vis_y, np.float64), wavelet, level=levels)
    fused = [(coeffs_ir[0] + coeffs_vis[0]) / 2.0]
    for details_ir, details_vis in zip(coeffs_ir[1:], coeffs_vis[1:]):
        fused.append(tuple(_select_max_abs(d_ir, d_vis) for d_ir, d_vis in zip(details_ir, details_vis)))
    # Odd sizes reconstruct one row/column too many.
    return _as_output(pywt.waverec2(fused, wavelet)[: ir.shape[0], : ir.shape[1]])


def _box_mean(image: np.ndarray, radius: int) -> np.ndarray:
    return ndimage.uniform_filter(image, size=2 * radius + 1, mode="reflect")


def _guided_filter(guide: np.ndarray, source: np.ndarray, radius: int, eps: float) -> np.ndarray:
    """He et al.'s guided filter with a grey guide."""
    mean_guide, mean_source = _box_mean(guide, radius), _box_mean(source, radius)
    cov = _box_mean(guide * source, radius) - mean_guide * mean_source
    var = _box_mean(guide * guide, radius) - mean_guide**2
    slope = cov / (var + eps)
    offset = mean_source - slope * mean_guide
    return _box_mean(slope, radius) * guide + _box_mean(offset, radius)


def gff_fusion(
    ir: np.ndarray,
    vis_y: np.ndarray,
    base_radius: int = 45,
    base_eps: float = 0.3,
    detail_radius: int = 7,
    detail_eps: float = 1e-6,
) -> np.ndarray:
    """Guided-filtering fusion (Li, Kang, Hu 2013) with the paper's parameters.

    Two-scale split (31x31 mean = base, rest = detail); saliency = Gaussian-smoothed
    (r = 5, sigma = 5) absolute 3x3 Laplacian; binary weight maps pick the most salient
    source; each map is refined by a guided filter with the source as guide, (45, 0.3) for
    the base and (7, 1e-6) for the detail weights, then the weights are normalised.

    Args:
        ir, vis_y: HxW float32 in [0, 1].
        base_radius, base_eps, detail_radius, detail_eps: guided filter parameters.

    Returns:
        HxW float32 in [0, 1].

    Example:
        >>> import numpy as np
        >>> gff_fusion(np.zeros((16, 16)), np.ones((16, 16))).shape
        (16, 16)
    """
    _check_pair(ir, vis_y)
    sources = [np.asarray(ir, np.float64), np.asarray(vis_y, np.float64)]
    bases = [ndimage.uniform_filter(s, size=31, mode="reflect") for s in sources]
    details = [s - b for s, b in zip(sources, bases)]
    saliency = [
        ndimage.gaussian_filter(np.abs(ndimage.laplace(s, mode="reflect")), sigma=5, truncate=1.0, mode="reflect")
        for s in sources
    ]
    # Equal saliency (e.g. flat regions in both) splits the weight instead of favouring IR.
    ir_share = (saliency[0] > saliency[1]) + 0.5 * (saliency[0] == saliency[1])
    binary = [ir_share, 1.0 - ir_share]

    def blend(layers, radius, eps):
        # Guided filtering can leave weights slightly negative; clip, then normalise
        # (equal weights where both vanish).
        weights = [np.clip(_guided_filter(s, p, radius, eps), 0.0, None) for s, p in zip(sources, binary)]
        total = weights[0] + weights[1]
        safe_total = np.where(total > 1e-12, total, 1.0)
        share_ir = np.where(total > 1e-12, weights[0] / safe_total, 0.5)
        return share_ir * layers[0] + (1.0 - share_ir) * layers[1]

    return _as_output(blend(bases, base_radius, base_eps) + blend(details, detail_radius, detail_eps))


#: CLI name -> baseline, for ``ivfuse fuse --method NAME``.
BASELINES: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "average": average_fusion,
    "max": max_fusion,
    "laplacian": laplacian_fusion,
    "dwt": dwt_fusion,
    "gff": gff_fusion,
}
