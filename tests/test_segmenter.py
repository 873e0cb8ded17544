import numpy as np

from ivfuse.segmenter import colorize, overlay


def test_colorize_uses_the_msrs_palette_and_white_for_ignored():
    rgb = np.rint(colorize(np.array([[0, 8, 255]])) * 255)
    assert rgb.tolist() == [[[0, 0, 0], [192, 64, 0], [255, 255, 255]]]


def test_overlay_leaves_unlabelled_pixels_untouched():
    image = np.full((1, 2, 3), 0.5, np.float32)
    blended = overlay(image, np.array([[0, 1]]), opacity=1.0)
    assert blended[0, 0].tolist() == [0.5, 0.5, 0.5]
    np.testing.assert_allclose(blended[0, 1] * 255, [64, 0, 128], atol=1e-4)
