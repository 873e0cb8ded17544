import math
import warnings

import numpy as np
import pytest
from PIL import Image

from ivfuse.metrics import fusion as M


@pytest.fixture(scope="module")
def rng():
    return np.random.default_rng(12345)


@pytest.fixture(scope="module")
def textured(rng):
    """Three smooth-ish, textured 0..255 grey images (64x64)."""
    from scipy import ndimage

    images = rng.uniform(0, 255, (3, 64, 64))
    return tuple(np.rint(ndimage.gaussian_filter(x, 1.0) * 2 - 127).clip(0, 255) for x in images)


@pytest.fixture(scope="module")
def real_triple(msrs_test, msrs_names):
    """A crop of a real MSRS pair, F = their rounded average."""
    name = msrs_names[0]
    ir = M.to_gray255(np.asarray(Image.open(msrs_test / "ir" / name)))[100:228, 200:360]
    vis = M.to_gray255(np.asarray(Image.open(msrs_test / "vi" / name)))[100:228, 200:360]
    return ir, vis, np.floor((ir + vis) / 2 + 0.5)


# ---------------------------------------------------------------- greyscale conversion


def test_to_gray255_luma_rounding_and_equal_channels():
    rgb = np.array([[[255, 0, 0], [0, 255, 0], [0, 0, 250], [17, 17, 17]]], dtype=np.uint8)
    # 76.245 -> 76, 149.685 -> 150, 28.5 -> 29 (half up), equal channels exact.
    np.testing.assert_array_equal(M.to_gray255(rgb), [[76, 150, 29, 17]])
    grey = np.arange(256, dtype=np.uint8).reshape(16, 16)
    np.testing.assert_array_equal(M.to_gray255(np.stack([grey] * 3, axis=-1)), grey)
    assert M.to_gray255(grey).dtype == np.float64


def test_to_gray255_dtypes_and_alpha():
    grey = np.arange(256, dtype=np.uint8).reshape(16, 16)
    as_float32 = (grey / np.float32(255)).astype(np.float32)
    np.testing.assert_array_equal(M.to_gray255(as_float32), grey)
    np.testing.assert_array_equal(M.to_gray255(grey.astype(np.uint16) * 257), grey)
    rgba = np.concatenate([np.stack([grey] * 3, -1), np.zeros_like(grey)[..., None]], axis=-1)
    np.testing.assert_array_equal(M.to_gray255(rgba), grey)
    with pytest.raises(ValueError):
        M.to_gray255(np.zeros((4, 4, 2)))


# ---------------------------------------------------------------- reference-free metrics


def test_en_closed_forms():
    assert M.en(np.arange(256.0).reshape(16, 16)) == 8.0
    assert M.en(np.full((8, 8), 37.0)) == 0.0
    assert M.en(np.array([[0.0, 255.0], [0.0, 255.0]])) == 1.0


def test_sd_closed_forms(textured):
    assert M.sd(np.full((5, 7), 200.0)) == 0.0
    assert M.sd(np.array([[0.0, 255.0]])) == 127.5
    assert M.sd(textured[0]) == pytest.approx(np.std(textured[0], ddof=0))


def test_sf_normalises_each_direction_by_its_own_count():
    image = np.array([[0.0, 0.0, 6.0], [0.0, 0.0, 6.0]])
    # RF^2 = (0 + 36 + 0 + 36) / (2 x 2) = 18, CF^2 = 0.
    assert M.sf(image) == pytest.approx(math.sqrt(18.0))
    assert M.sf(image.T) == pytest.approx(math.sqrt(18.0))
    assert M.sf(np.full((4, 4), 9.0)) == 0.0


def test_ag_ramp_and_conventions():
    height, width, slope = 5, 8, 3.0
    ramp = np.tile(np.arange(width) * slope, (height, 1))
    per_pixel = slope / math.sqrt(2.0)
    assert M.ag(ramp) == pytest.approx(per_pixel * height * width / ((height - 1) * (width - 1)))
    assert M.ag(ramp, convention="cddfuse") == pytest.approx(per_pixel)
    assert M.ag(ramp, convention="tang") == M.ag(ramp)
    with pytest.raises(ValueError, match="convention"):
        M.ag(ramp, convention="matlab")


# ---------------------------------------------------------------- metrics with sources


def test_mi_identities(textured):
    a, b, _ = textured
    assert M.mi(a, a, a) == pytest.approx(2 * M.en(a))
    # MI(A, A) = EN(A); MI with a constant is 0.
    assert M.mi(a, np.full_like(a, 3.0), a) == pytest.approx(M.en(a))
    assert M.mi(a, b, np.full_like(a, 3.0)) == pytest.approx(0.0, abs=1e-12)
    assert M.mi(a, b, a) == pytest.approx(M.mi(b, a, a))


def test_mi_conventions(textured):
    a, b, f = textured
    assert M.mi(a, b, f, convention="cddfuse") == pytest.approx(M.mi(a, b, f) * math.log(2))
    no_top_levels = [np.minimum(x, 253) for x in (a, b, f)]
    assert M.mi(*no_top_levels, convention="tang") == pytest.approx(M.mi(*no_top_levels))
    # Levels 254/255 half and half: 1 bit each canonically; the merged joint makes it 2.
    top = np.tile([254.0, 255.0], (4, 4))
    assert M.mi(top, top, top) == pytest.approx(2.0)
    assert M.mi(top, top, top, convention="tang") == pytest.approx(4.0)


def test_scd_and_cc_closed_forms(textured):
    a, b, _ = textured
    assert M.scd(a, b, a + b) == pytest.approx(2.0)
    assert M.cc(a, b, a + 0 * b) == pytest.approx((1 + np.corrcoef(a.ravel(), b.ravel())[0, 1]) / 2)
    assert M.cc(a, b, 3 * a + 5) == pytest.approx(M.cc(a, b, a))


def test_scd_and_cc_undefined_give_nan_with_warning(textured):
    a, b, _ = textured
    with pytest.warns(M.MetricUndefinedWarning, match="SCD"):
        assert math.isnan(M.scd(a, b, a))
    with pytest.warns(M.MetricUndefinedWarning, match="CC"):
        assert math.isnan(M.cc(a, b, np.full_like(a, 10.0)))


def test_psnr_closed_forms_and_conventions(textured):
    a, b, f = textured
    zeros = np.zeros((4, 4))
    assert M.psnr(zeros, zeros, zeros + 1.0) == pytest.approx(10 * math.log10(255.0**2))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert M.psnr(a, a, a) == math.inf
    canonical = M.psnr(a, b, f)
    assert M.psnr(a, b, f, convention="tang") == pytest.approx(canonical + 48.1308036, abs=1e-6)
    peak = f.max()
    assert M.psnr(a, b, f, convention="cddfuse") == pytest.approx(canonical + 20 * math.log10(peak / 255.0))


def test_vif_invariants(textured):
    a, b, f = textured
    assert M.vif(a, a, a) == pytest.approx(2.0, abs=1e-6)
    assert M.vif(a, b, f) == pytest.approx(M.vif(b, a, f))
    assert M.vif(a, b, np.full_like(a, 128.0)) == 0.0
    # VIF rewards contrast gain: a stretched copy carries more than all information.
    half_term = M.vif(a, a, a * 0.5) / 2
    double_term = M.vif(a, a, a * 2.0) / 2
    assert half_term < 1.0 < double_term


def test_qabf_identity_is_about_0975(textured):
    a, b, f = textured
    expected = 0.9994 * 0.9879 / (1 + math.exp(-22 * 0.2))  # strength term saturates at Tg
    assert M.qabf(a, a, a) == pytest.approx(expected, abs=2e-3)
    assert M.qabf(a, b, f) == pytest.approx(M.qabf(b, a, f))
    assert 0.0 <= M.qabf(a, b, f) < 1.0
    with pytest.warns(M.MetricUndefinedWarning):
        assert math.isnan(M.qabf(np.zeros((8, 8)), np.zeros((8, 8)), a[:8, :8]))


def _ssim_brute_force(x, y, window, c1, c2, ddof):
    """Independent SSIM: explicit weighted window statistics at every valid position."""
    size = window.shape[0]
    values = []
    for i in range(x.shape[0] - size + 1):
        for j in range(x.shape[1] - size + 1):
            px, py = x[i : i + size, j : j + size].ravel(), y[i : i + size, j : j + size].ravel()
            w = window.ravel()
            mx, my = (w * px).sum(), (w * py).sum()
            norm = 1.0 if ddof == 0 else w.size / (w.size - 1.0)
            vx, vy = norm * (w * (px - mx) ** 2).sum(), norm * (w * (py - my) ** 2).sum()
            cxy = norm * (w * (px - mx) * (py - my)).sum()
            values.append((2 * mx * my + c1) * (2 * cxy + c2) / ((mx**2 + my**2 + c1) * (vx + vy + c2)))
    return float(np.mean(values))


def test_ssim_matches_brute_force_in_both_conventions(textured):
    a, b, f = (x[:16, :17] for x in textured)
    offsets = np.arange(11) - 5.0
    gauss = np.exp(-(offsets[:, None] ** 2 + offsets[None, :] ** 2) / (2 * 1.5**2))
    gauss /= gauss.sum()
    expected = sum(_ssim_brute_force(s, f, gauss, 2.55**2, 7.65**2, 0) for s in (a, b))
    assert M.ssim(a, b, f) == pytest.approx(expected, rel=1e-10)
    uniform = np.full((7, 7), 1 / 49)
    expected = sum(_ssim_brute_force(s, f, uniform, 0.02**2, 0.06**2, 1) for s in (a, b))
    assert M.ssim(a, b, f, convention="cddfuse") == pytest.approx(expected, rel=1e-10)


def test_ssim_invariants(textured):
    a, b, f = textured
    assert M.ssim(a, a, a) == pytest.approx(2.0)
    assert M.ssim(a, b, f) == pytest.approx(M.ssim(b, a, f))
    flat_a, flat_f = np.full((20, 20), 100.0), np.full((20, 20), 50.0)
    c1 = 2.55**2
    assert M.ssim(flat_a, flat_a, flat_f) == pytest.approx(2 * (2 * 5000 + c1) / (100**2 + 50**2 + c1))


def test_nabf_closed_forms(textured):
    a, b, f = textured
    assert M.nabf(a, a, a) == 0.0
    # The average never has a stronger gradient than both sources.
    assert M.nabf(a, b, (a + b) / 2) == 0.0
    assert M.nabf(a, b, f) == pytest.approx(M.nabf(b, a, f))


def test_nabf_border_mirrors_without_repeating_the_edge():
    # Flat sources (strength 0, weight 0.001 everywhere): Nabf is the share of pixels where F
    # has any edge, times 1 - sqrt(Qg(0) Qa(A)). Padding that mirrors without repeating the
    # edge (reference per_extn_im_fn) gives a ramp no gradient across its first and last
    # samples; padding that repeats the edge would make every pixel an artefact.
    flat = np.zeros((6, 9))
    horizontal_ramp = np.tile(np.arange(9) * 10.0, (6, 1))
    # Orientation term 0 (F's edges are vertical, the flat sources' orientation is pi/2).
    q0 = math.sqrt(0.9999 / (1 + math.exp(19 * 0.5)) * 0.9995 / (1 + math.exp(22 * 0.5)))
    assert M.nabf(flat, flat, horizontal_ramp) == pytest.approx(7 / 9 * (1 - q0))
    # 3x3, rows 0, 8, 16: only the middle row has a gradient (sy = 4 * 16 / 8 = 8, sx = 0, so
    # orientation pi/2 as the sources': term 1); the edge rows mirror to equal neighbours.
    vertical_ramp = np.repeat(np.array([[0.0], [8.0], [16.0]]), 3, axis=1)
    q1 = math.sqrt(0.9999 / (1 + math.exp(19 * 0.5)) * 0.9995 / (1 + math.exp(-22 * 0.5)))
    assert M.nabf(np.zeros((3, 3)), np.zeros((3, 3)), vertical_ramp) == pytest.approx(3 / 9 * (1 - q1))


# ---------------------------------------------------------------- conventions and compute_all


def test_conventions_relate_exactly_on_a_real_pair(real_triple):
    ir, vis, fused = real_triple
    canonical = M.compute_all(ir, vis, fused)
    cddfuse = M.compute_all(ir, vis, fused, convention="cddfuse")
    tang = M.compute_all(ir, vis, fused, convention="tang")
    height, width = fused.shape
    assert cddfuse["MI"] == pytest.approx(canonical["MI"] * math.log(2))
    assert cddfuse["AG"] == pytest.approx(canonical["AG"] * (height - 1) * (width - 1) / (height * width))
    assert tang["PSNR"] == pytest.approx(canonical["PSNR"] + 20 * math.log10(255), abs=1e-9)
    assert cddfuse["SSIM"] < canonical["SSIM"]
    for name in ("EN", "SD", "SF", "SCD", "CC", "VIF", "Qabf", "Nabf"):
        assert cddfuse[name] == canonical[name] == tang[name], name
    for name in ("AG", "SSIM"):
        assert tang[name] == canonical[name], name


def test_compute_all_selection_and_errors(textured):
    a, b, f = textured
    scores = M.compute_all(a, b, f, metrics=["qabf", "EN"])
    assert list(scores) == ["Qabf", "EN"]
    assert list(M.compute_all(a, b, f)) == list(M.METRIC_NAMES)
    with pytest.raises(ValueError, match="unknown metric"):
        M.compute_all(a, b, f, metrics=["ENTROPY"])
    with pytest.raises(ValueError, match="shape"):
        M.compute_all(a, b, f[:-1])
    with pytest.raises(ValueError, match="convention"):
        M.compute_all(a, b, f, convention="CDDFuse ")
