"""Shared test fixtures: where the real images are."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"
DATASETS = REPO.parent / "shared" / "datasets"


@pytest.fixture(scope="session")
def datasets() -> Path:
    """``../shared/datasets`` beside the repository; CI always has it, elsewhere its tests skip."""
    if not DATASETS.is_dir():
        if os.environ.get("CI"):
            pytest.fail(f"{DATASETS} is missing on CI")
        pytest.skip(f"{DATASETS} not present")
    return DATASETS


@pytest.fixture(scope="session")
def msrs_test(datasets) -> Path:
    return datasets / "MSRS" / "test"


@pytest.fixture(scope="session")
def msrs_names(msrs_test) -> list:
    """Three MSRS test frames, night and day."""
    names = sorted(p.name for p in (msrs_test / "ir").iterdir())
    return [names[0], names[1], names[-1]]
