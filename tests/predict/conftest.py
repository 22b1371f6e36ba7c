"""Small simulated runs of a heterogeneous cluster behind a random router, as records."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from sincere.sim import simulate

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def hetero_config(seed: int, num_requests: int) -> dict[str, Any]:
    """examples/hetero-explore.yaml: hetero.yaml behind the random router, tight tiers; its
    engines eager, without a front end, so the records' clock (the client's) is the decision
    log's and the router's (under a preset's front end the simulated router sees a request
    after its intake: docs/engine.md)."""
    raw: dict[str, Any] = yaml.safe_load((EXAMPLES / "hetero-explore.yaml").read_text())
    raw["seed"] = seed
    raw["workload"]["num_requests"] = num_requests
    for inst in raw["instances"]:
        inst.setdefault("engine", {})["preset"] = "eager"
    return raw


@pytest.fixture(scope="session")
def hetero_runs(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Two runs (seeds 0 and 1, 1,500 requests each): folders with requests.parquet."""
    root = tmp_path_factory.mktemp("hetero-runs")
    out = []
    for seed in (0, 1):
        folder = root / f"seed{seed}"
        simulate(hetero_config(seed, 1500)).write(folder)
        out.append(folder)
    return out
