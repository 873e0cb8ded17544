import numpy as np
import pytest
from PIL import Image

from ivfuse.baselines import BASELINES, laplacian_fusion

SIZES = [(16, 16), (17, 23), (31, 9), (120, 161)]


@pytest.fixture(scope="module")
def real_pair(msrs_test, msrs_names):
    name = msrs_names[-1]
    ir = np.asarray(Image.open(msrs_test / "ir" / name), np.float32) / 255
    vis_y = np.asarray(Image.open(msrs_test / "vi" / name).convert("L"), np.float32) / 255
    return ir[:96, :128], vis_y[:96, :128]


def test_cli_names():
    assert list(BASELINES) == ["average", "max", "laplacian", "dwt", "gff"]


@pytest.mark.parametrize("name", list(BASELINES))
@pytest.mark.parametrize("shape", SIZES)
def test_shape_dtype_range(name, shape):
    rng = np.random.default_rng(0)
    ir, vis = rng.uniform(0, 1, (2,) + shape).astype(np.float32)
    fused = BASELINES[name](ir, vis)
    assert fused.shape == shape and fused.dtype == np.float32
    assert fused.min() >= 0.0 and fused.max() <= 1.0


@pytest.mark.parametrize("name", list(BASELINES))
def test_identical_sources_are_reproduced(name, real_pair):
    # Fusing an image with itself must give it back (no stretching, no shift).
    ir, _ = real_pair
    np.testing.assert_allclose(BASELINES[name](ir, ir), ir, atol=2e-3)


@pytest.mark.parametrize("name", list(BASELINES))
def test_constant_sources_are_not_stretched(name):
    ir, vis = np.full((20, 21), 0.2, np.float32), np.full((20, 21), 0.4, np.float32)
    fused = BASELINES[name](ir, vis)
    expected = 0.4 if name == "max" else 0.3
    np.testing.assert_allclose(fused, expected, atol=1e-5)


def test_detail_from_either_source_survives(real_pair):
    ir, vis = real_pair
    flat = np.full_like(ir, float(ir.mean()))
    for name in ("laplacian", "dwt", "gff"):
        fused = BASELINES[name](ir, flat)
        assert np.corrcoef(fused.ravel(), ir.ravel())[0, 1] > 0.9, name


def test_shape_mismatch_raises():
    with pytest.raises(ValueError, match="shape"):
        laplacian_fusion(np.zeros((8, 8)), np.zeros((8, 9)))
