"""The shipped gateway examples bound how long a stalled engine can hold a request."""

from __future__ import annotations

from pathlib import Path

import pytest

from sincere.serve.gateway.config import load_config

EXAMPLES = sorted(
    (Path(__file__).resolve().parents[2] / "examples" / "serve").glob("gateway-*.yaml")
)


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_every_example_tier_sets_a_first_byte_timeout(path: Path) -> None:
    """Each tier of each example gateway config has first_byte_timeout_s (not the 60 s read)."""
    config = load_config(path)
    unset = [name for name, tier in config.tiers.items() if tier.first_byte_timeout_s is None]
    assert unset == []
