import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from ivfuse.cli import main
from ivfuse.io import ImageReadError
from ivfuse.segmentation_eval import object_recall, score_label_folders, scores_markdown


def _save(path, ids):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(ids, np.uint8), mode="L").save(path)


@pytest.fixture()
def folders(tmp_path):
    truth, predicted = tmp_path / "truth", tmp_path / "predicted"
    # Frame a: 2 car pixels, one predicted as car; frame b: a person found exactly; 255 is not scored.
    _save(truth / "a.png", [[0, 1], [1, 255]])
    _save(predicted / "a.png", [[0, 1], [0, 2]])
    _save(truth / "b.png", [[2, 0], [0, 0]])
    _save(predicted / "b.png", [[2, 0], [0, 0]])
    return predicted, truth


def test_one_confusion_matrix_over_all_frames(folders):
    predicted, truth = folders
    result = score_label_folders(predicted, truth)
    assert result.frames == ["a", "b"] and not result.missing and not result.failed
    iou = result.scores["iou"]
    # unlabelled: 4 of 5 predicted-or-true background pixels agree; car: 1 of 2; person: 1 of 1.
    assert iou[0] == pytest.approx(4 / 5) and iou[1] == pytest.approx(1 / 2) and iou[2] == pytest.approx(1.0)
    assert np.isnan(iou[3]) and result.scores["miou"] == pytest.approx((0.8 + 0.5 + 1.0) / 3)
    table = scores_markdown(result)
    assert "| 76.67 | 75.00 |" in table
    # Background: all 4 of its pixels found, 4 of the 5 pixels predicted as it right; car: 1 of 2 found.
    assert "| recall | 100.00 | 50.00 | 100.00 | - |" in table and "| precision | 80.00 | 100.00 | 100.00 | - |" in table


def test_cli_prints_the_table_and_exits_1_for_a_frame_without_prediction(folders, tmp_path):
    predicted, truth = folders
    _save(truth / "c.png", [[0, 0], [0, 0]])
    _save(predicted / "d.png", [[0, 9], [0, 0]])  # no label of that name: never read
    out = tmp_path / "scores.md"
    result = CliRunner().invoke(main, ["seg-eval", "--predicted", str(predicted), "--labels", str(truth), "-o", str(out)])
    assert result.exit_code == 1, result.output
    assert "2 frames" in result.stdout and out.read_text() == result.stdout
    assert result.stderr.strip() == f"warning: {truth}: 1 label file(s) without a prediction of the same name, left out (first: c.png)"


def test_a_bad_prediction_is_left_out_with_one_line(folders):
    predicted, truth = folders
    _save(predicted / "b.png", [[2, 0, 0], [0, 0, 0]])
    _save(truth / "e.png", [[0]])
    _save(predicted / "e.png", [[255]])
    result = score_label_folders(predicted, truth)
    assert result.frames == ["a"]
    assert result.failed[0] == f"{predicted / 'b.png'}: size 3x2 differs from label {truth / 'b.png'} (2x2)"
    assert "ignore value 255" in result.failed[1]


def test_nothing_to_score_is_an_error(tmp_path):
    _save(tmp_path / "truth" / "a.png", [[0]])
    (tmp_path / "predicted").mkdir()
    with pytest.raises(ImageReadError, match="no frame with a readable prediction"):
        score_label_folders(tmp_path / "predicted", tmp_path / "truth")
    result = CliRunner().invoke(main, ["seg-eval", "--predicted", str(tmp_path / "nowhere"), "--labels", str(tmp_path / "truth")])
    assert result.exit_code == 2 and result.stderr == f"error: {tmp_path / 'nowhere'}: no such folder\n"


def test_object_recall_counts_each_connected_object():
    label = np.array([[1, 1, 0, 0, 0],
                      [0, 1, 0, 0, 2],
                      [0, 0, 0, 1, 255],
                      [0, 0, 1, 1, 0]])
    prediction = np.array([[1, 0, 0, 0, 0],
                           [0, 1, 0, 0, 1],
                           [0, 0, 0, 0, 1],
                           [0, 0, 0, 0, 0]])
    # Two cars: the 3-pixel one top left (2 found), the 3-pixel one bottom right (none found);
    # car predictions on the person and on the unscored pixel belong to no object.
    assert object_recall(label, prediction, 1).tolist() == [[3, 2], [3, 0]]
    # Diagonal neighbours are one object.
    assert object_recall(np.eye(3, dtype=np.uint8), np.eye(3, dtype=np.uint8), 1).tolist() == [[3, 3]]
    assert object_recall(np.zeros((2, 2)), np.zeros((2, 2)), 1).shape == (0, 2)
