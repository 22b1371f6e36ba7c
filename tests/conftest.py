"""Shared fixtures: where the published measurements and traces live."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` beside the checkout (published traces and measurements)."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"published data not found at {SHARED_DATA}")
    return SHARED_DATA
