import numpy as np
import pytest
from PIL import Image

from ivfuse.classes import CLASS_NAMES, PALETTE
from ivfuse.segmenter import colorize, legend, overlay


def test_colorize_uses_the_msrs_palette_and_white_for_ignored():
    rgb = np.rint(colorize(np.array([[0, 8, 255]])) * 255)
    assert rgb.tolist() == [[[0, 0, 0], [192, 64, 0], [255, 255, 255]]]


def test_overlay_leaves_unlabelled_pixels_untouched():
    image = np.full((1, 2, 3), 0.5, np.float32)
    blended = overlay(image, np.array([[0, 1]]), opacity=1.0)
    assert blended[0, 0].tolist() == [0.5, 0.5, 0.5]
    np.testing.assert_allclose(blended[0, 1] * 255, [64, 0, 128], atol=1e-4)


def test_shipped_weights_segment_a_real_pair_into_msrs_classes():
    from ivfuse.io import read_pair
    from ivfuse.segmenter import Segmenter

    from .conftest import EXAMPLES

    labels, fused = Segmenter().segment(*read_pair(EXAMPLES / "ir" / "00055D.png", EXAMPLES / "vi" / "00055D.png"))
    assert labels.shape == (480, 640) and labels.dtype == np.uint8 and labels.max() <= 8
    assert fused.shape == (480, 640, 3)
    assert len(np.unique(labels)) > 1  # a road scene with people and a car is not all background


def test_legend_lists_each_class_with_its_palette_swatch():
    key = np.rint(legend() * 255).astype(np.uint8)
    assert key.shape[0] == 22 * len(CLASS_NAMES) + 8
    for class_id in range(len(CLASS_NAMES)):
        swatch_centre = key[4 + class_id * 22 + 11, 6 + 8]
        assert swatch_centre.tolist() == PALETTE[class_id].tolist()
    assert legend([2]).shape[0] == 30


def test_probability_maps_and_masks_agree_with_the_labels(tmp_path):
    from ivfuse import segmenter as module

    from .conftest import EXAMPLES

    stem = "00055D"
    label_path = module.segment_pair_files(
        module.Segmenter(), EXAMPLES / "ir" / f"{stem}.png", EXAMPLES / "vi" / f"{stem}.png", tmp_path, stem, probabilities=True, masks=True
    )
    labels = np.asarray(Image.open(label_path))
    folders = [name.replace(" ", "_") for name in CLASS_NAMES]
    probabilities = np.stack([np.asarray(Image.open(tmp_path / "probabilities" / f / f"{stem}.png"), np.float64) for f in folders])
    masks = np.stack([np.asarray(Image.open(tmp_path / "masks" / f / f"{stem}.png")) for f in folders])
    assert probabilities.shape == (9, 480, 640) and masks.shape == (9, 480, 640)
    # 8-bit probabilities of the 9 classes sum to 255 up to the rounding of each.
    assert np.abs(probabilities.sum(0) - 255).max() <= 5
    np.testing.assert_array_equal(masks.argmax(0), labels)
    assert set(np.unique(masks).tolist()) <= {0, 255} and (masks > 0).sum(0).max() == 1
    # The labelled class is the most probable one wherever it leads by more than the rounding.
    top_two = np.sort(probabilities, axis=0)[-2:]
    clear = top_two[1] - top_two[0] > 1
    np.testing.assert_array_equal(probabilities.argmax(0)[clear], labels[clear])


def test_a_pair_whose_write_fails_midway_keeps_none_of_its_outputs_not_even_an_earlier_label(tmp_path, monkeypatch):
    from ivfuse import segmenter as module
    from ivfuse.io import WriteError, write_image

    from .conftest import EXAMPLES

    def refuse_masks(path, *args, **kwargs):
        if "masks" in path.parts:
            raise WriteError(f"{path}: disk full")
        return write_image(path, *args, **kwargs)

    stem = "00055D"
    earlier_label = tmp_path / "labels" / f"{stem}.png"
    earlier_label.parent.mkdir()
    earlier_label.write_bytes(b"label of an earlier run")
    monkeypatch.setattr(module, "write_image", refuse_masks)
    with pytest.raises(WriteError, match="disk full"):
        module.segment_pair_files(module.Segmenter(), EXAMPLES / "ir" / f"{stem}.png", EXAMPLES / "vi" / f"{stem}.png", tmp_path, stem,
                                  probabilities=True, masks=True)
    # The overlay and the probability maps were written before the masks failed: all removed.
    assert [path for path in tmp_path.rglob("*") if path.is_file()] == []


def test_cli_segments_with_flip_and_scales_by_default_and_plain_on_request(tmp_path):
    from click.testing import CliRunner

    from ivfuse.cli import main
    from ivfuse.io import read_pair
    from ivfuse.segmenter import Segmenter

    from .conftest import EXAMPLES

    pair = [str(EXAMPLES / "ir" / "00055D.png"), str(EXAMPLES / "vi" / "00055D.png")]
    outcome = CliRunner().invoke(main, ["segment", "--ir", pair[0], "--vis", pair[1], "-o", str(tmp_path / "default")])
    assert outcome.exit_code == 0, outcome.output
    outcome = CliRunner().invoke(main, ["segment", "--ir", pair[0], "--vis", pair[1], "-o", str(tmp_path / "plain"), "--no-flip", "--scales", "1"])
    assert outcome.exit_code == 0, outcome.output
    written, written_plain = (np.asarray(Image.open(tmp_path / name / "labels" / "00055D.png")) for name in ("default", "plain"))
    expected, _ = Segmenter(flip=True, scales=(0.75, 1.0)).segment(*read_pair(*pair))
    plain, _ = Segmenter(flip=False, scales=(1.0,)).segment(*read_pair(*pair))
    np.testing.assert_array_equal(written, expected)
    np.testing.assert_array_equal(written_plain, plain)
    np.testing.assert_array_equal(Segmenter().segment(*read_pair(*pair))[0], expected)
    assert (written != plain).any()


def test_cli_window_segments_in_windows_whole_images_by_default_and_small_windows_are_refused(tmp_path):
    from click.testing import CliRunner

    from ivfuse.cli import main
    from ivfuse.io import read_pair
    from ivfuse.segmenter import Segmenter

    from .conftest import EXAMPLES

    pair = [str(EXAMPLES / "ir" / "00055D.png"), str(EXAMPLES / "vi" / "00055D.png")]
    outcome = CliRunner().invoke(main, ["segment", "--ir", pair[0], "--vis", pair[1], "-o", str(tmp_path / "windows"), "--window", "192"])
    assert outcome.exit_code == 0, outcome.output
    written = np.asarray(Image.open(tmp_path / "windows" / "labels" / "00055D.png"))
    whole, _ = Segmenter().segment(*read_pair(*pair))  # whole images by default
    windowed, _ = Segmenter(window=192).segment(*read_pair(*pair))
    np.testing.assert_array_equal(written, windowed)
    assert (whole != windowed).any()
    outcome = CliRunner().invoke(main, ["segment", "--ir", pair[0], "--vis", pair[1], "-o", str(tmp_path / "out"), "--window", "16"])
    assert outcome.exit_code == 2 and "--window" in outcome.output and "Traceback" not in outcome.output
    assert not (tmp_path / "out").exists()
    with pytest.raises(ValueError, match="window must be at least 32"):
        Segmenter(window=16)


@pytest.mark.parametrize("scales", ["0", "a,b", "1,-2", ""])
def test_cli_bad_scales_exit_2_with_one_line(tmp_path, scales):
    from click.testing import CliRunner

    from ivfuse.cli import main

    from .conftest import EXAMPLES

    pair = [str(EXAMPLES / "ir" / "00055D.png"), str(EXAMPLES / "vi" / "00055D.png")]
    outcome = CliRunner().invoke(main, ["segment", "--ir", pair[0], "--vis", pair[1], "-o", str(tmp_path / "out"), "--scales", scales])
    assert outcome.exit_code == 2 and "--scales" in outcome.output and "Traceback" not in outcome.output
    assert not (tmp_path / "out").exists()


def test_class_gain_vector_names_classes_and_refuses_unknown_classes_and_bad_gains():
    from ivfuse.segmenter import class_gain_vector

    assert class_gain_vector({}).tolist() == [1.0] * len(CLASS_NAMES)
    vector = class_gain_vector({"car": 1.5, "color_cone": 2, "car stop": np.float32(0.5)})
    assert vector.dtype == np.float32 and vector.tolist() == [1, 1.5, 1, 1, 1, 0.5, 1, 2, 1]
    with pytest.raises(ValueError, match="unknown class 'truck'"):
        class_gain_vector({"truck": 2})
    for gain in (0, -1, float("nan"), float("inf"), "2"):
        with pytest.raises(ValueError, match="class gain of 'car' must be a finite number above 0"):
            class_gain_vector({"car": gain})


def test_gained_labels_move_only_pixels_where_the_gained_class_comes_close():
    from ivfuse.segmenter import gained_labels

    # Three pixels: the car (class 1) trails by a little, by a lot, and leads.
    probabilities = np.array([[0.5, 0.9, 0.2], [0.4, 0.1, 0.7], [0.1, 0.0, 0.1]], np.float32)[:, None, :]
    assert gained_labels(probabilities, np.ones(3)).tolist() == [[0, 0, 1]]
    assert gained_labels(probabilities, np.array([1, 1.5, 1])).tolist() == [[1, 0, 1]]
    assert gained_labels(probabilities, np.array([1, 0.2, 1])).tolist() == [[0, 0, 0]]
    assert gained_labels(probabilities, np.ones(3)).dtype == np.uint8


def test_cli_class_gain_labels_as_the_segmenter_with_that_gain_and_bad_gains_exit_2(tmp_path):
    from click.testing import CliRunner

    from ivfuse.cli import main
    from ivfuse.io import read_pair
    from ivfuse.segmenter import Segmenter, gained_labels

    from .conftest import EXAMPLES

    pair = [str(EXAMPLES / "ir" / "00055D.png"), str(EXAMPLES / "vi" / "00055D.png")]
    plain_run = ["--no-flip", "--scales", "1"]
    outcome = CliRunner().invoke(main, ["segment", "--ir", pair[0], "--vis", pair[1], "-o", str(tmp_path / "cars"), "--class-gain", "car=3", *plain_run])
    assert outcome.exit_code == 0, outcome.output
    written = np.asarray(Image.open(tmp_path / "cars" / "labels" / "00055D.png"))
    segmenter = Segmenter(flip=False, scales=(1.0,), class_gains={"car": 3})
    probabilities, _ = segmenter.probabilities(*read_pair(*pair))
    gained, plain = gained_labels(probabilities, segmenter.gains), probabilities.argmax(0)
    np.testing.assert_array_equal(written, gained)
    car = CLASS_NAMES.index("car")
    assert (gained == car).sum() > (plain == car).sum()
    assert ((plain == car) <= (gained == car)).all()  # a gain on cars only adds car pixels
    for value, message in (("car=x", "expected CLASS=GAIN"), ("truck=2", "unknown class 'truck'"), ("car=0", "finite number above 0")):
        outcome = CliRunner().invoke(main, ["segment", "--ir", pair[0], "--vis", pair[1], "-o", str(tmp_path / "bad"), "--class-gain", value])
        assert outcome.exit_code == 2 and message in outcome.output and "Traceback" not in outcome.output
        assert not (tmp_path / "bad").exists()
