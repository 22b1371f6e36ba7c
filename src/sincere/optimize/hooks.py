"""Hooks that connect planning to the simulator and to step-time models.

* Simulator cross-check: :func:`cross_check` compares the analyzer's predicted TTFT
  and ITL of every allocated server with what a simulator measures for the same
  allocation. The simulator is passed in as a :class:`ServerSimulator` callable
  (:func:`sincere.optimize.xcheck.replica_simulator` is one: it simulates one replica
  at the server's per-replica Poisson load), so this module does not import it.
* MaverIQ-style deployment choice: :func:`model_perf_from_step_model` turns any
  step-time model (an estimator's, a roofline, a profile table) into a ``model-data``
  entry, so the optimizer can plan deployments that were never profiled.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sincere.optimize.data import ModelPerf, Problem, Server
from sincere.optimize.plan import ServerAllocation, Solution
from sincere.optimize.sizing import params_from_step_model
from sincere.perf.base import StepTimeModel

ServerSimulator = Callable[[Problem, Server, ServerAllocation], tuple[float, float]]
"""Measured (mean TTFT ms, mean ITL ms) of ``server`` run as ``allocation``."""


class PredictedVsMeasured:
    """Relative errors of a record holding predicted and measured mean TTFT and ITL."""

    __slots__ = ()
    predicted_ttft_ms: float
    measured_ttft_ms: float
    predicted_itl_ms: float
    measured_itl_ms: float

    @property
    def ttft_rel_error(self) -> float:
        """(predicted − measured) / measured: negative where the prediction is optimistic."""
        return (self.predicted_ttft_ms - self.measured_ttft_ms) / self.measured_ttft_ms

    @property
    def itl_rel_error(self) -> float:
        """(predicted − measured) / measured: negative where the prediction is optimistic."""
        return (self.predicted_itl_ms - self.measured_itl_ms) / self.measured_itl_ms


@dataclass(frozen=True, slots=True)
class CrossCheck(PredictedVsMeasured):
    """Analyzer against simulator for one server."""

    server: str
    predicted_ttft_ms: float
    measured_ttft_ms: float
    predicted_itl_ms: float
    measured_itl_ms: float


def cross_check(
    problem: Problem, solution: Solution, simulate: ServerSimulator
) -> list[CrossCheck]:
    """Run ``simulate`` on every allocated server and pair its numbers with the analyzer's."""
    out = []
    for srv, alloc in zip(problem.servers, solution.allocations, strict=True):
        if alloc.num_replicas == 0:
            continue
        ttft, itl = simulate(problem, srv, alloc)
        out.append(CrossCheck(srv.name, alloc.ttft_ms, ttft, alloc.itl_ms, itl))
    return out


def model_perf_from_step_model(
    model: str,
    accelerator: str,
    step_model: StepTimeModel,
    *,
    in_tokens: int,
    out_tokens: int,
    max_batch: int,
    acc_count: int = 1,
) -> ModelPerf:
    """A ``model-data`` entry fitted to ``step_model`` at the given request lengths."""
    params = params_from_step_model(step_model, in_tokens, out_tokens, max_batch)
    return ModelPerf(model, accelerator, acc_count, max_batch, in_tokens + out_tokens, params)
