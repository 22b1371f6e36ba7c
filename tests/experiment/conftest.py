"""Fixtures of the experiment tests: a tiny spec that runs in well under a second per cell."""

from __future__ import annotations

import copy
from typing import Any

import pytest


def pytest_configure(config: pytest.Config) -> None:
    """Register the ``ray`` marker (tests that start a local Ray cluster)."""
    config.addinivalue_line("markers", "ray: starts a local Ray cluster (needs sincere[ray])")


TINY: dict[str, Any] = {
    "name": "tiny",
    "description": "two strategies x two rates x CC / non-CC on a request-level H100",
    "seeds": [1, 2],
    "base": {
        "workload": {
            "num_requests": 40,
            "arrival": {"kind": "gamma", "cv": 1.0, "rate": "${rate}"},
            "lengths": {
                "prompt": {"kind": "fixed", "tokens": 64},
                "output": {"kind": "fixed", "tokens": 20},
            },
            "models": "sincere",
            "tiers": {"preset": "sincere-60"},
        },
        "instances": [
            {
                "name": "h100",
                "models": ["granite-7b", "gemma-7b", "llama3-8b"],
                "accelerator": "H100-SXM",
                "step_model": {"kind": "sincere-table"},
                "engine": {
                    "kind": "request-level",
                    "strategy": "fcfs",
                    "max_batch_size": 64,
                    "dispatch": "idle",
                },
            }
        ],
    },
    "axes": {
        "rate": {"values": [2, 6]},
        "strategy": {
            "path": "instances.0.engine.strategy",
            "values": {"FCFS": "fcfs", "BB+T": "best-batch+timer"},
        },
        "env": {"path": "instances.0.cc", "values": {"non-cc": False, "cc": True}},
    },
    "report": {"baseline": "non-cc"},
}


@pytest.fixture
def tiny_spec() -> dict[str, Any]:
    """A fresh copy of the tiny spec mapping (16 cells)."""
    return copy.deepcopy(TINY)


@pytest.fixture(scope="session")
def tiny_spec_session() -> dict[str, Any]:
    """The tiny spec mapping for module- and session-scoped fixtures (do not mutate)."""
    return copy.deepcopy(TINY)
