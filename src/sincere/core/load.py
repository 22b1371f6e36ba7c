"""Observed load of one (model, tier): what the live path measures and the planner sizes for.

A plain value, here at the bottom so the gateway can report it without importing the
planner (:mod:`sincere.optimize.scaling` takes it; :mod:`sincere.serve.gateway.observed_load`
makes it).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["LoadSummary"]


@dataclass(frozen=True, slots=True)
class LoadSummary:
    """Load of one (model, tier) over a window."""

    model: str
    tier: str
    rate_per_min: float  # requests per minute
    avg_in_tokens: float
    avg_out_tokens: float
    num_requests: int
