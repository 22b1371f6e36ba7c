"""Hooks for the simulator cross-check and step-model-based deployments."""

from __future__ import annotations

from pathlib import Path

import pytest

from sincere.optimize import load_problem, solve
from sincere.optimize.data import Problem, Server
from sincere.optimize.hooks import cross_check, model_perf_from_step_model
from sincere.optimize.plan import ServerAllocation
from sincere.perf.base import Batch, StepTimeBase

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "plan"


def test_cross_check_pairs_prediction_with_simulation() -> None:
    """Each allocated server is simulated once and its relative errors are reported."""
    p = load_problem(EXAMPLES / "unlimited")
    sol = solve(p)
    calls: list[str] = []

    def fake_sim(_: Problem, srv: Server, alloc: ServerAllocation) -> tuple[float, float]:
        calls.append(srv.name)
        return alloc.ttft_ms * 1.1, alloc.itl_ms * 0.9

    rows = cross_check(p, sol, fake_sim)
    assert calls == [s.name for s in p.servers]
    assert rows[0].ttft_rel_error == pytest.approx(1 / 1.1 - 1)
    assert rows[0].itl_rel_error == pytest.approx(1 / 0.9 - 1)


class _Linear(StepTimeBase):
    def iteration_s(self, batch: Batch) -> float:
        return 0.01 + 0.001 * batch.num_decode_seqs + 2e-5 * batch.prefill_tokens


def test_model_perf_from_step_model() -> None:
    """A model-data entry built from a step model carries the fitted parameters."""
    perf = model_perf_from_step_model(
        "m", "A100", _Linear(), in_tokens=100, out_tokens=50, max_batch=8
    )
    assert perf.at_tokens == 150 and perf.max_batch == 8
    assert perf.params.beta == pytest.approx(1.0)  # type: ignore[union-attr]
