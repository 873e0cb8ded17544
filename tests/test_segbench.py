"""`ivfuse seg-bench` on the tiny labelled MSRS frames (tests/segbench_tiny.toml: seconds per run)."""

import csv
import dataclasses
import json
import shutil

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from ivfuse import segbench
from ivfuse.classes import IOU_COLUMNS
from ivfuse.cli import main
from ivfuse.io import ImageReadError, LabelSizeError
from ivfuse.metrics.segmentation import segmentation_scores

from .conftest import REPO

TINY_CONFIG = REPO / "tests" / "segbench_tiny.toml"
TINY_MSRS = REPO / "tests" / "data" / "tiny" / "MSRS"


@pytest.fixture(autouse=True)
def restore_threads():
    """run_bench sets the thread count from its config; later tests get theirs back."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture()
def folders(tmp_path):
    """ir/ and vi/ as train and test folders: the tiny frames split 4 + 2 by name, each with label/."""
    stems = sorted(path.stem for path in (TINY_MSRS / "label").iterdir())
    for split, chosen in (("train", stems[:4]), ("test", stems[4:])):
        for sub in ("ir", "vi", "label"):
            (tmp_path / split / sub).mkdir(parents=True)
            for stem in chosen:
                shutil.copy(TINY_MSRS / sub / f"{stem}.png", tmp_path / split / sub / f"{stem}.png")
    return tmp_path


def _kinds(root, *names):
    return [segbench.InputKind(name, root / "train" / name, root / "test" / name) for name in names]


def _load(root, *names):
    return segbench.load_bench_data(_kinds(root, *names), root / "train" / "label", root / "test" / "label")


def test_cli_end_to_end_writes_per_seed_and_summary_tables(folders, tmp_path):
    report = tmp_path / "report"
    arguments = ["seg-bench", "--config", str(TINY_CONFIG), "--seeds", "0,1", "-o", str(report), "--quiet",
                 "--train-labels", str(folders / "train" / "label"), "--test-labels", str(folders / "test" / "label")]
    for name in ("ir", "vi"):
        arguments += ["--input", name, str(folders / "train" / name), str(folders / "test" / name)]
    outcome = CliRunner().invoke(main, arguments)
    assert outcome.exit_code == 0, outcome.output
    assert "on 4 labelled frames, tested on 2 whole frames" in outcome.stdout
    assert "| ir |" in outcome.stdout and "| vi |" in outcome.stdout and "| input | unlabelled | car |" in outcome.stdout
    with open(report / "per_seed.csv", newline="") as stream:
        rows = list(csv.DictReader(stream))
    assert [(row["input"], row["seed"]) for row in rows] == [("ir", "0"), ("ir", "1"), ("vi", "0"), ("vi", "1")]
    assert all(row["train_frames"] == "4" and row["test_frames"] == "2" for row in rows)
    with open(report / "summary.csv", newline="") as stream:
        summary = {(row["input"], row["score"]): row for row in csv.DictReader(stream)}
    assert len(summary) == 2 * (3 + 9)
    mious = [float(row["miou"]) for row in rows if row["input"] == "ir"]
    assert float(summary["ir", "miou"]["mean"]) == pytest.approx(np.mean(mious))
    assert float(summary["ir", "miou"]["std"]) == pytest.approx(np.std(mious, ddof=1))
    assert (report / "summary.md").read_text().startswith("Segmentation trained from scratch")
    assert "| ir − vi | 2 |" in (report / "summary.md").read_text()
    with open(report / "paired.csv", newline="") as stream:
        paired = {row["score"]: row for row in csv.DictReader(stream)}
    assert set(paired) == {*segbench.SCORES, *IOU_COLUMNS} and paired["miou"]["first"] == "ir" and paired["miou"]["second"] == "vi"
    vi_mious = [float(row["miou"]) for row in rows if row["input"] == "vi"]
    assert float(paired["miou"]["mean"]) == pytest.approx(np.mean(np.subtract(mious, vi_mious)))
    assert len(list((report / "runs").glob("*.json"))) == 4
    # Run again (progress shown this time): nothing retrains, the summary is the same.
    again = CliRunner().invoke(main, [a for a in arguments if a != "--quiet"] + ["--set", "run.threads=2"])
    assert again.exit_code == 0 and again.stdout == outcome.stdout
    assert again.stderr.count("finished earlier") == 4


def test_scores_come_from_one_confusion_matrix_over_the_whole_test_set(folders):
    data = _load(folders, "vi")
    config = segbench.load_config(TINY_CONFIG)
    torch.set_num_threads(config.run.threads)
    (result,) = segbench.run_bench(data, config, [3], progress=False)
    # The same seed trains the same network again; score its test frames one by one.
    network = segbench.train_segmentation(data.train["vi"], config, 3, torch.device("cpu"))
    per_frame = [segbench.confusion_over_frames(network, [frame], torch.device("cpu")) for frame in data.test["vi"]]
    np.testing.assert_array_equal(result.confusion, sum(per_frame))
    labelled_pixels = sum(int((frame.label != 255).sum()) for frame in data.test["vi"])
    assert result.confusion.sum() == labelled_pixels == 2 * 120 * 160
    np.testing.assert_equal(result.scores, segmentation_scores(result.confusion))  # NaN == NaN here
    per_frame_mean = np.mean([segmentation_scores(matrix)["miou"] for matrix in per_frame])
    assert result.scores["miou"] != pytest.approx(per_frame_mean)


def test_seeds_give_different_but_reproducible_results(folders):
    data = _load(folders, "ir")
    config = segbench.load_config(TINY_CONFIG)
    first, other, again = segbench.run_bench(data, config, [0, 1, 0], progress=False)
    np.testing.assert_array_equal(first.confusion, again.confusion)
    assert not np.array_equal(first.confusion, other.confusion)


def _result(kind, seed, miou):
    scores = {"miou": miou, "miou_without_0": miou, "pixel_accuracy": miou, "iou": np.full(9, miou)}
    return segbench.SeedResult(kind, seed, np.zeros((9, 9), np.int64), scores, 1.0)


def test_paired_differences_by_hand():
    # a - b per seed: 0.02, 0.04, 0.03 (seed 3 of a has no partner in b and is left out).
    results = [_result("a", 0, 0.30), _result("a", 1, 0.34), _result("a", 2, 0.33), _result("a", 3, 0.9),
               _result("b", 0, 0.28), _result("b", 1, 0.30), _result("b", 2, 0.30),
               _result("c", 0, 0.30), _result("c", 1, 0.30), _result("c", 2, 0.30)]
    rows = {(row["a"], row["b"]): row for row in segbench.paired_differences(results)}
    assert list(rows) == [("a", "b"), ("a", "c"), ("b", "c")]
    row = rows["a", "b"]
    assert row["n"] == 3 and row["mean"] == pytest.approx(0.03) and row["std"] == pytest.approx(0.01)
    assert row["se"] == pytest.approx(0.01 / np.sqrt(3))
    t_975_2 = 4.302653  # Student t quantile, 2 degrees of freedom
    assert row["low"] == pytest.approx(0.03 - t_975_2 * 0.01 / np.sqrt(3)) and row["high"] == pytest.approx(0.03 + t_975_2 * 0.01 / np.sqrt(3))
    assert row["resolved"]  # 0.03 ± 0.0248 excludes 0
    # b - c: -0.02, 0.0, 0.0: mean -0.0067, interval [-0.035, 0.022] contains 0.
    assert not rows["b", "c"]["resolved"] and rows["b", "c"]["low"] < 0 < rows["b", "c"]["high"]
    table = segbench.paired_markdown(results)
    assert "| a − b | 3 | +3.00 | 1.00 | 0.58 | [+0.52, +5.48] | yes |" in table


def test_per_class_differences_leave_out_seeds_where_the_class_is_absent():
    results = [_result("a", 0, 0.3), _result("a", 1, 0.4), _result("b", 0, 0.2), _result("b", 1, 0.2)]
    results[1].scores["iou"][2] = np.nan  # seed 1 of "a": class 2 neither labelled nor predicted
    (row,) = segbench.paired_differences(results, IOU_COLUMNS[2])
    assert row["n"] == 1 and row["mean"] == pytest.approx(0.1)
    (row,) = segbench.paired_differences(results, IOU_COLUMNS[1])
    assert row["n"] == 2 and row["mean"] == pytest.approx(0.15)


def test_one_seed_has_no_interval():
    (row,) = segbench.paired_differences([_result("a", 0, 0.3), _result("b", 0, 0.2)])
    assert row["n"] == 1 and row["mean"] == pytest.approx(0.1) and np.isnan(row["low"]) and not row["resolved"]


def test_runs_go_seed_by_seed(folders, monkeypatch):
    """A benchmark stopped part way has run every kind for its first seeds."""
    order = []
    train = segbench.train_segmentation

    def recording(frames, config, seed, device, show):
        order.append(seed)
        return train(frames, config, seed, device, show)

    monkeypatch.setattr(segbench, "train_segmentation", recording)
    results = segbench.run_bench(_load(folders, "ir", "vi"), segbench.load_config(TINY_CONFIG), [0, 1], progress=False)
    assert order == [0, 0, 1, 1]
    assert [(r.kind, r.seed) for r in results] == [("ir", 0), ("ir", 1), ("vi", 0), ("vi", 1)]


def test_finished_runs_are_kept_and_not_trained_again(folders, tmp_path, monkeypatch):
    config = segbench.load_config(TINY_CONFIG)
    results_dir = tmp_path / "runs"
    # Kinds run separately into one folder, as two processes would ...
    separate = [segbench.run_bench(_load(folders, name), config, [0, 1], progress=False, results_dir=results_dir) for name in ("ir", "vi")]
    assert len(list(results_dir.glob("*.json"))) == 4

    def no_training(*args, **kwargs):
        raise AssertionError("a finished run was trained again")

    # ... then one call with both kinds only collects them, with identical scores.
    monkeypatch.setattr(segbench, "train_segmentation", no_training)
    both = segbench.run_bench(_load(folders, "ir", "vi"), config, [0, 1], progress=False, results_dir=results_dir)
    assert [(r.kind, r.seed) for r in both] == [("ir", 0), ("ir", 1), ("vi", 0), ("vi", 1)]
    for again, first in zip(both, separate[0] + separate[1]):
        np.testing.assert_array_equal(again.confusion, first.confusion)
        assert again.scores["miou"] == first.scores["miou"]
    # A different budget, seed or image is a different run.
    for changed_config, seeds, data in ((dataclasses.replace(config, run=dataclasses.replace(config.run, steps=7)), [0], _load(folders, "ir")),
                                        (config, [2], _load(folders, "ir"))):
        with pytest.raises(AssertionError, match="trained again"):
            segbench.run_bench(data, changed_config, seeds, progress=False, results_dir=results_dir)
    data = _load(folders, "ir")
    data.test["ir"][0].image[0, 0, 0] ^= 1
    with pytest.raises(AssertionError, match="trained again"):
        segbench.run_bench(data, config, [0], progress=False, results_dir=results_dir)
    # The same frames split differently between train and test are a different run.
    data = _load(folders, "ir")
    data.train["ir"], data.test["ir"] = data.train["ir"][:-1], data.train["ir"][-1:] + data.test["ir"]
    with pytest.raises(AssertionError, match="trained again"):
        segbench.run_bench(data, config, [0], progress=False, results_dir=results_dir)
    # Execution settings do not change what a run measures.
    other_threads = dataclasses.replace(config, run=dataclasses.replace(config.run, threads=2))
    segbench.run_bench(_load(folders, "ir"), other_threads, [0], progress=False, results_dir=results_dir)


def test_options_added_later_keep_the_fingerprints_of_saved_runs(folders):
    config = segbench.load_config(TINY_CONFIG)
    frames = _load(folders, "ir").train["ir"]
    # The fingerprint these frames had before `segmentation.norm`, `semantic_loss.lovasz_weight`
    # and `optim.ema_decay` existed.
    assert segbench.run_fingerprint(frames, config, 0) == "96f1f25070c5bca607a4fc53ff88ab4e9d7dc41b8a14ac53ba7df7f9c5a4c293"
    batch = dataclasses.replace(config, segmentation=dataclasses.replace(config.segmentation, norm="batch"))
    lovasz = dataclasses.replace(config, semantic_loss=dataclasses.replace(config.semantic_loss, lovasz_weight=1.0))
    average = dataclasses.replace(config, optim=dataclasses.replace(config.optim, ema_decay=0.9))
    assert len({segbench.run_fingerprint(frames, c, 0) for c in (config, batch, lovasz, average)}) == 4


def test_ema_decay_returns_the_moving_average_of_the_trained_weights(folders):
    config = segbench.load_config(TINY_CONFIG)
    config = dataclasses.replace(config, run=dataclasses.replace(config.run, steps=3))
    frames = _load(folders, "ir").train["ir"]
    plain = segbench.train_segmentation(frames, config, 0, torch.device("cpu")).state_dict()
    averaged_config = dataclasses.replace(config, optim=dataclasses.replace(config.optim, ema_decay=0.5))
    averaged = segbench.train_segmentation(frames, averaged_config, 0, torch.device("cpu")).state_dict()
    # The trained weights are the same in both runs; the average lags behind them.
    key = next(k for k in plain if k.endswith("weight") and plain[k].dim() == 4)
    assert not torch.allclose(plain[key], averaged[key])


def test_an_unreadable_saved_result_is_trained_again(folders, tmp_path):
    config = segbench.load_config(TINY_CONFIG)
    data = _load(folders, "ir")
    (first,) = segbench.run_bench(data, config, [0], progress=False, results_dir=tmp_path)
    (saved,) = tmp_path.glob("*.json")
    saved.write_text("{truncated")
    (again,) = segbench.run_bench(data, config, [0], progress=False, results_dir=tmp_path)
    np.testing.assert_array_equal(again.confusion, first.confusion)
    assert json.loads(saved.read_text())["confusion"] == first.confusion.tolist()


def test_same_seed_gives_every_kind_the_same_start_and_crops(folders):
    config = segbench.load_config(TINY_CONFIG)
    config = dataclasses.replace(config, run=dataclasses.replace(config.run, steps=0))
    data = _load(folders, "ir", "vi")
    ir, vi = (segbench.train_segmentation(data.train[name], config, 5, torch.device("cpu")) for name in ("ir", "vi"))
    for (key, a), b in zip(ir.state_dict().items(), vi.state_dict().values()):
        assert torch.equal(a, b), key
    assert [frame.name for frame in data.train["ir"]] == [frame.name for frame in data.train["vi"]]


def test_grey_images_are_repeated_to_three_channels(folders):
    data = _load(folders, "ir")
    image = data.test["ir"][0].image
    assert image.shape == (3, 120, 160) and torch.equal(image[0], image[1]) and torch.equal(image[1], image[2])


def test_frames_without_label_are_ignored_and_bad_frames_left_out_for_every_kind(folders):
    train_vi = folders / "train" / "vi"
    stems = sorted(path.stem for path in train_vi.iterdir())
    Image.new("RGB", (160, 120)).save(train_vi / "unlabelled.png")  # no label: ignored, not reported
    (train_vi / f"{stems[0]}.png").write_bytes(b"not a png")  # unreadable in one kind
    (folders / "train" / "ir" / f"{stems[1]}.png").unlink()  # missing in the other kind
    data = _load(folders, "ir", "vi")
    assert [frame.name for frame in data.train["ir"]] == [frame.name for frame in data.train["vi"]] == stems[2:]
    assert len(data.left_out) == 2
    assert any(f"{stems[0]}.png: cannot read image" in line for line in data.left_out)
    assert any(f"no image {stems[1]} (or more than one) in {folders / 'train' / 'ir'}" in line for line in data.left_out)


def test_cli_reports_left_out_frames_and_exits_1(folders, tmp_path):
    stem = sorted(path.stem for path in (folders / "test" / "vi").iterdir())[0]
    (folders / "test" / "vi" / f"{stem}.png").write_bytes(b"broken")
    outcome = CliRunner().invoke(main, ["seg-bench", "--config", str(TINY_CONFIG), "--seeds", "0", "-o", str(tmp_path / "r"), "--quiet",
                                        "--input", "vi", str(folders / "train" / "vi"), str(folders / "test" / "vi"),
                                        "--train-labels", str(folders / "train" / "label"), "--test-labels", str(folders / "test" / "label")])
    assert outcome.exit_code == 1, outcome.output
    assert f"left out: {folders / 'test' / 'vi' / stem}.png: cannot read image" in outcome.stderr
    assert "tested on 1 whole frames" in outcome.stdout


@pytest.mark.parametrize("problem", ["missing folder", "no labelled frame", "size mismatch", "unknown config key", "bad seeds"])
def test_bad_input_is_one_line_naming_the_problem_and_exit_2(folders, tmp_path, problem):
    train_labels, test_labels, config = folders / "train" / "label", folders / "test" / "label", TINY_CONFIG
    train_ir, seeds = folders / "train" / "ir", "0"
    if problem == "missing folder":
        train_ir, expected = folders / "nowhere", f"{folders / 'nowhere'}: no such folder"
    elif problem == "no labelled frame":
        train_labels = tmp_path / "other_labels"
        train_labels.mkdir()
        Image.new("L", (160, 120)).save(train_labels / "elsewhere.png")
        expected = f"{train_ir}: no image has a label in {train_labels}"
    elif problem == "size mismatch":
        name = sorted(train_ir.iterdir())[0]
        Image.open(name).resize((80, 60)).save(name)
        expected = f"{name}: size 80x60 differs from its label's (160x120)"
    elif problem == "unknown config key":
        config = tmp_path / "bad.toml"
        config.write_text("[run]\nstep = 3\n")
        expected = "unknown key(s) in [run]: step"
    else:
        seeds, expected = "0,-1", "expected comma-separated integers >= 0"
    outcome = CliRunner().invoke(main, ["seg-bench", "--config", str(config), "--seeds", seeds, "-o", str(tmp_path / "r"), "--quiet",
                                        "--input", "ir", str(train_ir), str(folders / "test" / "ir"),
                                        "--train-labels", str(train_labels), "--test-labels", str(test_labels)])
    assert outcome.exit_code == 2, outcome.output
    assert expected in outcome.stderr
    if problem != "bad seeds":
        assert len(outcome.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "r").exists()


def test_library_errors_have_their_types(folders):
    name = sorted((folders / "test" / "vi").iterdir())[0]
    Image.open(name).resize((80, 60)).save(name)
    with pytest.raises(LabelSizeError):
        _load(folders, "vi")
    with pytest.raises(ValueError, match="must differ"):
        segbench.load_bench_data(_kinds(folders, "ir") * 2, folders / "train" / "label", folders / "test" / "label")
    with pytest.raises(ImageReadError, match="no such folder"):
        segbench.load_bench_data(_kinds(folders, "ir"), folders / "nowhere", folders / "test" / "label")


def test_real_msrs_test_split_is_labelled_throughout(datasets):
    test = datasets / "MSRS" / "test"
    # The test split as both "train" and "test": loading is all this checks.
    kind = segbench.InputKind("ir", test / "ir", test / "ir")
    data = segbench.load_bench_data([kind], test / "label", test / "label")
    assert len(data.test["ir"]) == 316 and not data.left_out
    assert data.test["ir"][0].image.shape == (3, 480, 640)


def test_shipped_config_loads_and_benchmarks_the_shipped_segmentation_network():
    from ivfuse import train as training

    config = segbench.load_config(REPO / "configs" / "segbench.toml")
    assert config.segmentation == training.load_config(REPO / "configs" / "segmentation.toml").segmentation
    assert config.run.threads == 1
