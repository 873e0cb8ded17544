"""Batch jobs killed with SIGKILL mid-job: no partial output, and a rerun finishes them exactly.

``ivfuse fuse`` and ``ivfuse segment`` on a folder of ten 160x128 crops of MSRS test pairs, and
``ivfuse eval`` writing its report, each run as a user would (a subprocess, one thread), killed at
two seeded-random points: once a random number of outputs exist, the moment the next one is being
written (its temporary file seen) or has just been. Then:

* every visible file is byte-identical to the same file of an uninterrupted run (so complete and
  decodable), fewer than all are there, and anything else is a hidden atomic-write temporary
  (``.<name>.<random>.tmp``, never read as an output);
* ``--skip-existing`` (fuse, segment) or a plain rerun (eval, whose report is rewritten whole)
  ends with exactly the files and bytes of the uninterrupted run.
"""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

from .conftest import REPO

PAIRS = 10
CROP = (240, 200, 400, 328)  # left, top, right, bottom: 160x128, MSRS's road area with its objects
TEMPORARY = re.compile(r"\..+\.tmp")  # ivfuse.io.atomic_write's temporary file names
KILL_POINTS = 2


def _run(*arguments: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(_command(*arguments), env=_environment(), capture_output=True, text=True, cwd=REPO, timeout=300)
    if check:
        assert result.returncode == 0, result.stderr[-2000:]
    return result


def _command(*arguments: str) -> list[str]:
    return [sys.executable, "-m", "ivfuse", *arguments]


def _environment() -> dict:
    return {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"}


def _scan(folder: Path) -> tuple[dict[str, Path], list[Path]]:
    """``({relative path: file}, [hidden files])`` under ``folder``; hidden means any part starts with '.'."""
    visible, hidden = {}, []
    for path in sorted(folder.rglob("*")) if folder.exists() else []:
        if path.is_file():
            relative = path.relative_to(folder)
            if any(part.startswith(".") for part in relative.parts):
                hidden.append(path)
            else:
                visible[relative.as_posix()] = path
    return visible, hidden


def _contents(folder: Path) -> dict[str, bytes]:
    return {name: path.read_bytes() for name, path in _scan(folder)[0].items()}


def _kill_mid_job(arguments: list[str], out: Path, after: int) -> int:
    """Start ``ivfuse *arguments``; SIGKILL it once ``after`` outputs exist and the next is being
    written (a temporary file is there) or is done. Returns how many outputs existed at the kill."""
    process = subprocess.Popen(_command(*arguments), env=_environment(), cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    try:
        while True:
            visible, hidden = _scan(out)
            if len(visible) > after or (len(visible) == after and hidden):
                break
            assert process.poll() is None, f"ivfuse {arguments[0]} ended (exit {process.returncode}) before it could be killed"
            assert time.monotonic() < deadline, f"ivfuse {arguments[0]} wrote {len(visible)} outputs in 240 s"
            time.sleep(0.001)
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait()
    assert process.returncode == -signal.SIGKILL, f"ivfuse {arguments[0]} finished before the kill"
    return len(visible)


def _assert_nothing_partial(out: Path, uninterrupted: dict[str, bytes]) -> dict[str, bytes]:
    visible, hidden = _scan(out)
    present = {name: path.read_bytes() for name, path in visible.items()}
    assert 0 < len(present) < len(uninterrupted), "the kill did not land mid-job"
    for name, data in present.items():
        assert data == uninterrupted.get(name), f"{name}: differs from the uninterrupted run's (partial or corrupt)"
        if name.endswith(".png"):
            with Image.open(visible[name]) as image:
                image.load()
    assert all(TEMPORARY.fullmatch(path.name) for path in hidden), [path.name for path in hidden]
    return present


def _kill_points(job: str, total: int) -> list[int]:
    """Seeded, so a failure can be replayed; from the first output to the third-last."""
    generator = random.Random(f"crash-safety-{job}")
    return [generator.randint(1, total - 3) for _ in range(KILL_POINTS)]


@pytest.fixture(scope="module")
def pairs(msrs_test, tmp_path_factory) -> tuple[Path, Path]:
    """Ten crops of MSRS test pairs spread over the sorted names (day and night)."""
    root = tmp_path_factory.mktemp("pairs")
    names = sorted(path.name for path in (msrs_test / "ir").iterdir())
    for name in names[:: len(names) // PAIRS][:PAIRS]:
        for folder in ("ir", "vi"):
            (root / folder).mkdir(exist_ok=True)
            with Image.open(msrs_test / folder / name) as image:
                image.crop(CROP).save(root / folder / name)
    return root / "ir", root / "vi"


def _fuse_arguments(pairs, out: Path) -> list[str]:
    return ["fuse", "--ir", str(pairs[0]), "--vis", str(pairs[1]), "-o", str(out), "--threads", "1", "--quiet"]


@pytest.fixture(scope="module")
def fused(pairs, tmp_path_factory) -> Path:
    """The uninterrupted fuse run."""
    out = tmp_path_factory.mktemp("fused")
    _run(*_fuse_arguments(pairs, out))
    return out


def test_fuse_killed_mid_folder_leaves_only_complete_images_and_skip_existing_finishes_it(pairs, fused, tmp_path):
    uninterrupted = _contents(fused)
    assert len(uninterrupted) == PAIRS
    for index, after in enumerate(_kill_points("fuse", PAIRS)):
        out = tmp_path / f"kill{index}"
        _kill_mid_job(_fuse_arguments(pairs, out), out, after)
        done = _assert_nothing_partial(out, uninterrupted)
        result = _run(*_fuse_arguments(pairs, out), "--skip-existing")
        assert f"fused {PAIRS - len(done)} pair(s), skipped {len(done)}, failed 0" in result.stdout
        assert _contents(out) == uninterrupted


def test_segment_killed_mid_folder_leaves_only_complete_pairs_and_skip_existing_finishes_it(pairs, tmp_path):
    def arguments(out: Path) -> list[str]:
        return ["segment", "--ir", str(pairs[0]), "--vis", str(pairs[1]), "-o", str(out), "--threads", "1", "--quiet"]

    _run(*arguments(tmp_path / "uninterrupted"))
    uninterrupted = _contents(tmp_path / "uninterrupted")
    for index, after in enumerate(_kill_points("segment", len(uninterrupted))):
        out = tmp_path / f"kill{index}"
        _kill_mid_job(arguments(out), out, after)
        done = _assert_nothing_partial(out, uninterrupted)
        # The label is written last: a pair with a label is complete and skipped, any other redone.
        labelled = [name for name in done if name.startswith("labels/")]
        assert all(name.replace("labels/", "overlays/") in done for name in labelled)
        result = _run(*arguments(out), "--skip-existing")
        assert f"segmented {PAIRS - len(labelled)} pair(s), skipped {len(labelled)}, failed 0" in result.stdout
        assert _contents(out) == uninterrupted


def test_eval_killed_while_writing_its_report_leaves_only_complete_files_and_a_rerun_rewrites_it_exactly(pairs, fused, tmp_path):
    def arguments(out: Path) -> list[str]:
        return ["eval", "--ir", str(pairs[0]), "--vis", str(pairs[1]), "--fused", f"cdiim={fused}", "-o", str(out), "--quiet"]

    _run(*arguments(tmp_path / "uninterrupted"))
    uninterrupted = _contents(tmp_path / "uninterrupted")
    assert {"per_image.csv", "summary.md", "summary.csv", "figure_grid.png"} < uninterrupted.keys()
    for index, after in enumerate(_kill_points("eval", len(uninterrupted))):
        out = tmp_path / f"kill{index}"
        _kill_mid_job(arguments(out), out, after)
        _assert_nothing_partial(out, uninterrupted)
        _run(*arguments(out))
        assert _contents(out) == uninterrupted
