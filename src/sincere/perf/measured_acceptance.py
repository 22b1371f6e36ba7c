"""The acceptance rate an engine's counters imply, for pricing its speculation.

A running engine's counters (vLLM's ``spec_decode_num_drafts`` and
``_num_accepted_tokens``) give the accepted tokens per draft it really reached;
:func:`measured_params` turns them into the one acceptance rate ``p`` for every position
whose chain keeps that many on average (``p + p^2 + ... + p^k`` = accepted per draft), so
a step model priced with them (:class:`~sincere.perf.speculation.SpeculativeDecode`) yields
the measured ``1 + accepted / drafts`` tokens per step.
"""

from __future__ import annotations

import dataclasses

from sincere.core.errors import ConfigError
from sincere.perf.speculation import SpeculationParams


def uniform_rate(num_draft_tokens: int, accepted_per_draft: float) -> float:
    """The rate ``p`` at which a chain of ``num_draft_tokens`` drafts keeps
    ``accepted_per_draft`` of them on average: ``p + p^2 + ... + p^k`` equals it (bisection
    to 1e-12; 0 and ``k`` give 0 and 1). Raises :class:`ConfigError` outside ``[0, k]``."""
    k = num_draft_tokens
    if not 0.0 <= accepted_per_draft <= k:
        raise ConfigError(
            f"accepted tokens per draft of {k} drafted tokens",
            value=accepted_per_draft,
            allowed=f"0 to {k}",
        )
    low, high = 0.0, 1.0
    while high - low > 1e-12:
        p = (low + high) / 2
        kept = sum(p**i for i in range(1, k + 1))
        low, high = (p, high) if kept < accepted_per_draft else (low, p)
    return (low + high) / 2


def measured_params(
    declared: SpeculationParams, num_drafts: float, num_accepted_tokens: float
) -> SpeculationParams:
    """``declared`` with the acceptance an engine measured: ``num_accepted_tokens`` kept
    over ``num_drafts`` drafts (one rate for every position, :func:`uniform_rate`)."""
    if num_drafts <= 0:
        raise ConfigError("measured acceptance needs at least one draft", value=num_drafts)
    k = declared.num_draft_tokens
    per_draft = min(max(num_accepted_tokens / num_drafts, 0.0), float(k))
    rate = uniform_rate(k, per_draft)
    source = f"measured: {num_accepted_tokens:g} accepted tokens in {num_drafts:g} drafts"
    return dataclasses.replace(declared, acceptance=(rate,), source=source)
