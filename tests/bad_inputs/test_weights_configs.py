"""Bad weights, checkpoints, configs and labels, one case each, through every entry point that reads them.

Every case checks the one-line message (the file and the problem, no traceback), the exit code,
that nothing was written for the bad input and that what was there before, or the good items
beside it, are kept. The promised behaviour is the table "Weights, configs, labels, interrupted
jobs" in docs/robustness.md.
"""

from __future__ import annotations

import io
import pickle
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image
from safetensors.torch import load_file, save_file

from ivfuse import segbench, train
from ivfuse.cli import main
from ivfuse.fuser import Fuser
from ivfuse.models import FusionConfig, FusionNet, SegmentationNet
from ivfuse.segmenter import Segmenter
from ivfuse.serialization import WeightsError, load_checkpoint, load_network, read_metadata, shipped_weights

from ..conftest import REPO

TINY = REPO / "tests" / "data" / "tiny"
TINY_CONFIG = REPO / "configs" / "tiny.toml"
BENCH_CONFIG = REPO / "tests" / "segbench_tiny.toml"
GOOD = "00501D"


class _CreatesFile:
    """Unpickling this calls ``open(path, "w")``: the file's existence proves a loader ran code."""

    def __init__(self, path: Path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def _run(*args) -> object:
    return CliRunner().invoke(main, [str(arg) for arg in args])


def _assert_error(result, path: Path, problem: str) -> None:
    """Exit 2 and stderr exactly ``error: <path>: <problem...>``: one line, no traceback."""
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output, result.output
    assert re.fullmatch(rf"error: {re.escape(str(path))}: {problem}.*\n", result.stderr), result.stderr


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# --- weights ------------------------------------------------------------------------------------

def _shipped_tensors(name: str = "fusion") -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    path = shipped_weights(name)
    return load_file(str(path)), read_metadata(path)


def _first_float(tensors: dict[str, torch.Tensor]) -> str:
    """The tensor the NaN/Inf cases spoil; the message must name it."""
    return sorted(name for name, tensor in tensors.items() if tensor.is_floating_point())[0]


SPOILED = {network: _first_float(_shipped_tensors(network)[0]) for network in ("fusion", "segmentation")}


def _spoiled(value: float, network: str = "fusion"):
    def make(path: Path, marker: Path) -> None:
        tensors, metadata = _shipped_tensors(network)
        flat = tensors[SPOILED[network]].view(-1)
        flat[len(flat) // 2] = value
        save_file(tensors, str(path), metadata=metadata)
    return make


def _non_finite(network: str = "fusion") -> str:
    return rf"tensor {re.escape(SPOILED[network])} holds 1 NaN/Inf value\(s\)"


def _other_widths(path: Path, marker: Path) -> None:
    save_file(FusionNet(FusionConfig(widths=(4, 8, 8, 8))).state_dict(), str(path), metadata=_shipped_tensors()[1])


def _bad_config_metadata(path: Path, marker: Path) -> None:
    tensors, metadata = _shipped_tensors()
    save_file(tensors, str(path), metadata={**metadata, "config": "{widths: oops"})


def _shipped_prefix(fraction: float):
    def make(path: Path, marker: Path) -> None:
        data = shipped_weights("fusion").read_bytes()
        path.write_bytes(data[: int(len(data) * fraction)] if fraction < 1 else data[:-1])
    return make


NOT_SAFETENSORS = r"not a readable safetensors file \(Error while deserializing header: .+\)"

# name -> (how to make the file at path (marker: what a malicious pickle would create), problem).
BAD_WEIGHTS = {
    "missing": (lambda path, marker: None, "weights file not found"),
    "a folder": (lambda path, marker: path.mkdir(), "a folder, not a weights file"),
    "empty": (lambda path, marker: path.write_bytes(b""), NOT_SAFETENSORS),
    "truncated to half": (_shipped_prefix(0.5), NOT_SAFETENSORS),
    "last byte cut": (_shipped_prefix(1), NOT_SAFETENSORS),
    "a PNG renamed": (lambda path, marker: path.write_bytes((REPO / "examples" / "ir" / "05.png").read_bytes()), NOT_SAFETENSORS),
    "torch.save pickle": (lambda path, marker: torch.save(FusionNet().state_dict(), path), NOT_SAFETENSORS),
    "malicious pickle": (lambda path, marker: path.write_bytes(pickle.dumps(_CreatesFile(marker))), NOT_SAFETENSORS),
    "safetensors of no ivfuse network": (lambda path, marker: save_file({"x": torch.zeros(2)}, str(path)), "holds no ivfuse network, expected FusionNet"),
    "segmentation weights": (lambda path, marker: shutil.copy(shipped_weights("segmentation"), path), "holds SegmentationNet, expected FusionNet"),
    "other architecture's tensors": (_other_widths, r"weights do not fit the FusionNet architecture \(.+\)"),
    "corrupt architecture metadata": (_bad_config_metadata, r"weights do not fit the FusionNet architecture \(.+\)"),
    "NaN in a tensor": (_spoiled(float("nan")), _non_finite()),
    "Inf in a tensor": (_spoiled(float("-inf")), _non_finite()),
}


@pytest.fixture()
def bad_weights(request, tmp_path) -> tuple[Path, str]:
    """``(path, problem)`` of the case; afterwards, checks that no pickle payload ran."""
    make, problem = BAD_WEIGHTS[request.param]
    path, marker = tmp_path / "w eights.safetensors", tmp_path / "payload-ran"
    make(path, marker)
    yield path, problem
    assert not marker.exists(), "a pickle in the weights file was run"


@pytest.fixture()
def pair(tmp_path) -> tuple[Path, Path]:
    """One real MSRS pair (tests/data/tiny, 160x120) in ir/ and vi/."""
    for folder in ("ir", "vi"):
        (tmp_path / folder).mkdir()
        shutil.copy(TINY / "MSRS" / folder / f"{GOOD}.png", tmp_path / folder)
    return tmp_path / "ir", tmp_path / "vi"


@pytest.mark.parametrize("bad_weights", BAD_WEIGHTS, indirect=True)
def test_fuse_refuses_bad_weights_and_keeps_earlier_outputs(bad_weights, pair, tmp_path):
    path, problem = bad_weights
    out = tmp_path / "fused"
    out.mkdir()
    (out / "earlier.png").write_bytes((REPO / "examples" / "vi" / "05.png").read_bytes())
    before = _snapshot(out)
    result = _run("fuse", "--ir", pair[0], "--vis", pair[1], "-o", out, "--weights", path, "--quiet")
    _assert_error(result, path, problem)
    assert _snapshot(out) == before


@pytest.mark.parametrize("bad_weights", BAD_WEIGHTS, indirect=True)
def test_api_refuses_bad_weights_with_the_same_message(bad_weights):
    path, problem = bad_weights
    for load in (lambda: Fuser(path), lambda: load_network(path, expected="FusionNet")):
        with pytest.raises(WeightsError) as caught:
            load()
        assert re.fullmatch(rf"{re.escape(str(path))}: {problem}.*", str(caught.value))
        assert "\n" not in str(caught.value)


def test_the_pickle_payload_is_live_so_the_refusals_above_mean_something(tmp_path):
    marker = tmp_path / "payload-ran"
    pickle.loads(pickle.dumps(_CreatesFile(marker))).close()
    assert marker.exists()


@pytest.mark.parametrize("option, make, problem", [
    ("--seg-weights", _spoiled(float("nan"), "segmentation"), _non_finite("segmentation")),
    ("--seg-weights", lambda path, marker: shutil.copy(shipped_weights("fusion"), path), "holds FusionNet, expected SegmentationNet"),
    ("--seg-weights", _shipped_prefix(0.5), NOT_SAFETENSORS),
    ("--fusion-weights", _spoiled(float("inf")), _non_finite()),
    ("--fusion-weights", BAD_WEIGHTS["segmentation weights"][0], "holds SegmentationNet, expected FusionNet"),
], ids=["seg NaN", "seg given fusion", "seg truncated", "fusion Inf", "fusion given seg"])
def test_segment_and_segmenter_refuse_bad_weights_before_writing_anything(option, make, problem, pair, tmp_path):
    path = tmp_path / "bad.safetensors"
    make(path, tmp_path / "payload-ran")
    out = tmp_path / "seg"
    result = _run("segment", "--ir", pair[0], "--vis", pair[1], "-o", out, option, path, "--quiet")
    _assert_error(result, path, problem)
    assert not out.exists()
    keyword = "segmentation_weights" if option == "--seg-weights" else "fusion_weights"
    with pytest.raises(WeightsError, match=rf"^{re.escape(str(path))}: {problem}"):
        Segmenter(**{keyword: path})


def test_debug_shows_the_traceback_of_a_weights_error(tmp_path, pair):
    (tmp_path / "empty.safetensors").write_bytes(b"")
    result = _run("--debug", "fuse", "--ir", pair[0], "--vis", pair[1], "-o", tmp_path / "out", "--weights", tmp_path / "empty.safetensors")
    assert result.exit_code == 2 and "Traceback" in result.stderr and "WeightsError" in result.stderr
    assert result.stderr.splitlines()[-1].startswith(f"error: {tmp_path / 'empty.safetensors'}: not a readable safetensors file")


# --- training checkpoints (ivfuse train --resume) ------------------------------------------------

def _checkpoint(**changes) -> dict:
    """A checkpoint dict as ivfuse.train writes it, of the networks of configs/tiny.toml."""
    config = train.load_config(TINY_CONFIG)
    state = {"fusion": FusionNet(config.model).state_dict(), "segmentation": SegmentationNet(config.segmentation).state_dict(),
             "fusion_optimizer": {}, "segmentation_optimizer": {}, "step": 3}
    return {**state, **changes}


def _saved(state) -> bytes:
    stream = io.BytesIO()
    torch.save(state, stream)
    return stream.getvalue()


def _nan_fusion() -> bytes:
    state = _checkpoint()
    state["fusion"][_first_float(state["fusion"])].view(-1)[0] = float("nan")
    return _saved(state)


# name -> (bytes of checkpoint.pt given the payload marker, problem).
BAD_CHECKPOINTS = {
    "empty": (lambda marker: b"", r"not a readable checkpoint, truncated or corrupt \(EOFError\)"),
    "truncated": (lambda marker: _saved(_checkpoint())[:30000], r"not a readable checkpoint, truncated or corrupt \(.+\)"),
    "malicious pickle in a torch.save file": (lambda marker: _saved({**_checkpoint(), "fusion": _CreatesFile(marker)}),
                                              r"refused: not a checkpoint of tensors and plain values \(.*\bopen\b.*\); nothing in it was run"),
    "a PNG renamed": (lambda marker: (REPO / "examples" / "ir" / "05.png").read_bytes(), r"refused: not a checkpoint of tensors and plain values \(.+\)"),
    "not a dict": (lambda marker: _saved([1, 2, 3]), r"not an ivfuse training checkpoint \(no fusion, segmentation, fusion_optimizer, segmentation_optimizer, step\)"),
    "keys missing": (lambda marker: _saved({"step": 3}), r"not an ivfuse training checkpoint \(no fusion, segmentation, fusion_optimizer, segmentation_optimizer\)"),
    "NaN in a tensor": (lambda marker: _nan_fusion(), r"tensor fusion\.\S+ holds 1 NaN/Inf value\(s\)"),
}


@pytest.mark.parametrize("case", BAD_CHECKPOINTS, ids=list(BAD_CHECKPOINTS))
def test_train_resume_refuses_a_bad_checkpoint_and_keeps_the_run_folder(case, tmp_path):
    make, problem = BAD_CHECKPOINTS[case]
    run, marker = tmp_path / "run", tmp_path / "payload-ran"
    run.mkdir()
    (run / "checkpoint.pt").write_bytes(make(marker))
    (run / "log.csv").write_text("step,round\n0,0\n")
    before = _snapshot(run)
    result = _run("train", "--config", TINY_CONFIG, "--data-root", TINY, "--out", run, "--resume")
    _assert_error(result, run / "checkpoint.pt", problem)
    assert _snapshot(run) == before
    with pytest.raises(WeightsError, match=rf"^{re.escape(str(run / 'checkpoint.pt'))}: {problem}"):
        load_checkpoint(run / "checkpoint.pt", ["fusion", "segmentation", "fusion_optimizer", "segmentation_optimizer", "step"])
    assert not marker.exists(), "a pickle in the checkpoint was run"


def test_a_good_checkpoint_loads_and_the_payload_runs_without_weights_only(tmp_path):
    assert load_checkpoint(_write(tmp_path / "good.pt", _saved(_checkpoint())), ["fusion", "step"])["step"] == 3
    marker = tmp_path / "payload-ran"
    torch.load(_write(tmp_path / "evil.pt", BAD_CHECKPOINTS["malicious pickle in a torch.save file"][0](marker)), weights_only=False)
    assert marker.exists()


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


# --- config files ---------------------------------------------------------------------------------

# name -> (TOML text, problem after "<file>: "); every case is refused by ivfuse.train.load_config.
BAD_CONFIGS = {
    "unknown key": ("[schedule]\nfusion_step = 3\n", r"unknown key\(s\) in \[schedule\]: fusion_step"),
    "unknown section": ("[optimiser]\nlr = 0.1\n", r"unknown section\(s\): optimiser"),
    "string for an integer": ("[run]\nthreads = 'two'\n", r"\[run\] threads must be an integer, not 'two'"),
    "integer for a flag": ("[run]\namp = 1\n", r"\[run\] amp must be true or false, not 1"),
    "table for a number": ("[fusion_optim]\nlr = {value = 1}\n", r"\[fusion_optim\] lr must be a number, not \{'value': 1\}"),
    "negative crop size": ("[augment]\ncrop_size = -64\n", r"\[augment\] crop_size must be > 0, not -64"),
    "zero batch size": ("[run]\nbatch_size = 0\n", r"\[run\] batch_size must be > 0, not 0"),
    "negative width in a list": ("[model]\nwidths = [8, -16, 32, 48]\n", r"\[model\] widths must be > 0, not -16"),
    "negative step count": ("[schedule]\nfusion_steps = -5\n", r"\[schedule\] fusion_steps must be >= 0, not -5"),
    "negative learning rate": ("[fusion_optim]\nlr = -0.001\n", r"\[fusion_optim\] lr must be >= 0, not -0.001"),
    "NaN learning rate": ("[fusion_optim]\nlr = nan\n", r"\[fusion_optim\] lr must be a finite number, not nan"),
    "infinite interval": ("[run]\ncheckpoint_minutes = inf\n", r"\[run\] checkpoint_minutes must be a finite number, not inf"),
    "not TOML": ("[run\nthreads = 1\n", r"cannot read config \(.+\)"),
    "binary file": (b"\x89PNG\r\n\x1a\n\x00\xff", r"cannot read config \(.+\)"),
}


def _config_file(folder: Path, case: str) -> Path:
    text = BAD_CONFIGS[case][0]
    path = folder / "bad config.toml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


@pytest.mark.parametrize("case", BAD_CONFIGS, ids=list(BAD_CONFIGS))
def test_train_refuses_a_bad_config_before_creating_the_run_folder(case, tmp_path):
    path, problem = _config_file(tmp_path, case), BAD_CONFIGS[case][1]
    result = _run("train", "--config", path, "--data-root", TINY, "--out", tmp_path / "run")
    _assert_error(result, path, problem)
    assert not (tmp_path / "run").exists()
    with pytest.raises(ValueError) as caught:
        train.load_config(path)
    assert re.fullmatch(rf"{re.escape(str(path))}: {problem}.*", str(caught.value))


def test_a_missing_config_file_is_named(tmp_path):
    result = _run("train", "--config", tmp_path / "nope.toml", "--out", tmp_path / "run")
    _assert_error(result, tmp_path / "nope.toml", r"cannot read config \(\[Errno 2\] No such file or directory")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("case", ["unknown key", "negative crop size", "zero batch size", "NaN learning rate"])
def test_seg_bench_refuses_a_bad_config_before_writing_its_report(case, tmp_path):
    text, problem = BAD_CONFIGS[case]
    # The same mistakes in the benchmark's own sections ([optim], no [schedule]).
    text, problem = text.replace("fusion_optim", "optim").replace("schedule", "run"), problem.replace("fusion_optim", "optim").replace("schedule", "run")
    path = tmp_path / "bench.toml"
    path.write_text(text)
    labels = TINY / "MSRS" / "label"
    result = _run("seg-bench", "--config", path, "--input", "vis", TINY / "MSRS" / "vi", TINY / "MSRS" / "vi",
                  "--train-labels", labels, "--test-labels", labels, "--seeds", "0", "-o", tmp_path / "report", "--quiet")
    _assert_error(result, path, problem)
    assert not (tmp_path / "report").exists()
    with pytest.raises(ValueError, match=rf"^{re.escape(str(path))}: {problem}"):
        segbench.load_config(path)


def test_init_fusion_weights_named_by_a_config_are_checked_like_weights(tmp_path):
    weights = tmp_path / "start.safetensors"
    _spoiled(float("nan"))(weights, tmp_path / "payload-ran")
    result = _run("train", "--config", TINY_CONFIG, "--data-root", TINY, "--out", tmp_path / "run",
                  "--set", f"schedule.init_fusion='{weights}'")
    _assert_error(result, weights, _non_finite())
    assert not list((tmp_path / "run").iterdir())


# --- label files --------------------------------------------------------------------------------

def _label(values: np.ndarray | None = None, mode: str | None = None, truncate: bool = False):
    """Makes the label of ``stem`` bad: some pixels set to ``values``, saved in ``mode``, or cut short."""
    def make(path: Path) -> None:
        with Image.open(path) as image:
            ids = np.array(image)
        if values is not None:
            ids[0, : len(values)] = values
        image = Image.fromarray(ids)
        if mode == "RGB":
            image = image.convert("RGB")
        elif mode == "I;16":
            image = Image.fromarray(ids.astype(np.uint16))
        image.save(path)
        if truncate:
            path.write_bytes(path.read_bytes()[:200])
    return make


# stem of tests/data/tiny/MSRS -> (how its label is spoiled, problem after "<label file>: ").
BAD_LABELS = {
    "00503D": (_label(np.array([9])), r"label values outside 0\.\.8 and 255: \[9\]"),
    "00517D": (_label(np.array([200, 254, 3])), r"label values outside 0\.\.8 and 255: \[200, 254\]"),
    "01150N": (_label(mode="RGB"), r"cannot read label \(a label must be an 8-bit single-channel image, not mode RGB\)"),
    "01207N": (_label(mode="I;16"), r"cannot read label \(a label must be an 8-bit single-channel image, not mode I(;16)?\)"),
    "01208N": (_label(truncate=True), r"cannot read label \(.+\)"),
}


@pytest.fixture()
def labelled(tmp_path) -> Path:
    """tests/data/tiny with every MSRS label but GOOD's spoiled as in BAD_LABELS, and 255 (ignore) in GOOD's."""
    root = tmp_path / "data"
    shutil.copytree(TINY, root)
    for stem, (spoil, _) in BAD_LABELS.items():
        spoil(root / "MSRS" / "label" / f"{stem}.png")
    _label(np.array([255, 255]))(root / "MSRS" / "label" / f"{GOOD}.png")
    return root


def test_seg_bench_leaves_out_each_bad_label_with_one_line_and_scores_the_good_frame(labelled, tmp_path):
    msrs, report = labelled / "MSRS", tmp_path / "report"
    # Train and test on the same frames: the benchmark's code paths, not its numbers, are under test.
    result = _run("seg-bench", "--config", BENCH_CONFIG, "--input", "vis", msrs / "vi", msrs / "vi",
                  "--train-labels", msrs / "label", "--test-labels", msrs / "label", "--seeds", "0", "-o", report, "--quiet")
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    for stem, (_, problem) in BAD_LABELS.items():
        path = msrs / "label" / f"{stem}.png"
        lines = [line for line in result.stderr.splitlines() if line.startswith(f"warning: left out: {path}: ")]
        assert len(lines) == 2, result.stderr  # once for the train split, once for the test split
        assert re.fullmatch(rf"warning: left out: {re.escape(str(path))}: {problem}", lines[0]), lines[0]
    assert "on 1 labelled frames, tested on 1 whole frames" in (report / "summary.md").read_text()
    assert {"per_seed.csv", "summary.csv", "summary.md"} <= {p.name for p in report.iterdir()}


@pytest.mark.parametrize("stem", BAD_LABELS)
def test_train_refuses_a_bad_label_with_one_line_before_writing_anything(labelled, tmp_path, stem):
    for other in BAD_LABELS:  # only this stem's label is bad
        if other != stem:
            shutil.copy(TINY / "MSRS" / "label" / f"{other}.png", labelled / "MSRS" / "label")
    result = _run("train", "--config", TINY_CONFIG, "--data-root", labelled, "--out", tmp_path / "run")
    _assert_error(result, labelled / "MSRS" / "label" / f"{stem}.png", BAD_LABELS[stem][1])
    assert not list((tmp_path / "run").iterdir())


# --- eval's image list ------------------------------------------------------------------------------

@pytest.mark.parametrize("content, problem", [
    (b"\x89PNG\r\n\x1a\n\xff\xfe", r"cannot read image list \('utf-8' codec can't decode"),
    (b"# only a comment\n\n", "the image list names no image"),
    (None, r"cannot read image list \(\[Errno 2\] No such file or directory"),
], ids=["binary", "no names", "missing"])
def test_eval_refuses_a_bad_image_list_before_writing_its_report(content, problem, pair, tmp_path):
    listing = tmp_path / "names.txt"
    if content is not None:
        listing.write_bytes(content)
    result = _run("eval", "--ir", pair[0], "--vis", pair[1], "--fused", f"vis={pair[1]}", "-o", tmp_path / "report",
                  "--images", listing, "--quiet")
    _assert_error(result, listing, problem)
    assert not (tmp_path / "report").exists()
