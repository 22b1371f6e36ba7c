"""benchmarks/ttft_split.py: the lockstep test on iteration ends."""

from __future__ import annotations

from types import ModuleType

import numpy as np
from tests.conftest import benchmark_script


def _script() -> ModuleType:
    return benchmark_script("ttft_split")


def _grid(step_s: float, n: int, phase_s: float, rng: np.random.Generator) -> np.ndarray:
    """Iteration ends of one engine: steps of ``step_s`` ± 10 %, from ``phase_s``."""
    return phase_s + np.cumsum(step_s * rng.uniform(0.9, 1.1, n))


def test_engines_stepping_together_leave_no_gaps_inside_an_iteration() -> None:
    script = _script()
    rng = np.random.default_rng(0)
    one = _grid(0.05, 400, 0.0, rng)
    together = np.concatenate([one, one + rng.uniform(0.0, 0.001, len(one))])
    assert script._mid_gaps(together, 0.05) == 0.0


def test_engines_stepping_apart_leave_many_gaps_inside_an_iteration() -> None:
    script = _script()
    rng = np.random.default_rng(0)
    apart = np.concatenate([_grid(0.05, 400, 0.0, rng), _grid(0.05, 400, 0.013, rng)])
    share = script._mid_gaps(apart, 0.05)
    # the other engine's ends land across the iteration: about (25 - 4) / 50 of the gaps
    assert 0.2 < share < 0.6
