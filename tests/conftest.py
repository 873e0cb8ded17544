"""Shared test fixtures: paths to the real datasets beside the repository."""

from pathlib import Path

import pytest

# The repository root's sibling `shared/` folder holds the datasets (also in CI).
DATASETS = Path(__file__).resolve().parents[1] / ".." / "shared" / "datasets"
MSRS_TEST = DATASETS / "MSRS" / "test"


@pytest.fixture(scope="session")
def msrs_test() -> Path:
    if not (MSRS_TEST / "ir").is_dir():
        pytest.skip(f"datasets not found at {DATASETS.resolve()}")
    return MSRS_TEST


@pytest.fixture(scope="session")
def msrs_names(msrs_test) -> list:
    """A few MSRS test frames, day and night."""
    names = sorted(p.name for p in (msrs_test / "ir").iterdir())
    return [names[0], names[1], names[-1]]
