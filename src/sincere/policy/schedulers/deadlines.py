"""SLA deadlines of a request, as Niyama defines them.

A tier sets a TTFT deadline directly, or a TTLT (last-token) deadline that Niyama
converts to a TTFT deadline by leaving room for the predicted decode tokens:
``ttft_deadline = ttlt_deadline - n_dec * tbt`` (REFERENCE.md §4). After the first
token, token ``k`` of a request is due at
``max(first_token_at, arrival + ttft_deadline) + k * tbt``. Times in seconds.
"""

from __future__ import annotations

import math

from sincere.core.request import RequestArrays, Tier
from sincere.core.types import Seconds


def ttft_deadline_s(tier: Tier, predicted_decode_tokens: float) -> Seconds:
    """TTFT deadline relative to arrival (``inf`` when the tier sets none)."""
    if tier.ttft_s is not None:
        return tier.ttft_s
    if tier.ttlt_s is not None:
        return tier.ttlt_s - predicted_decode_tokens * (tier.tbt_s or 0.0)
    return math.inf


def predicted_decode_tokens(requests: RequestArrays, i: int, fixed: int | None) -> int:
    """Decode tokens after the first: ``fixed - 1`` if given, else ``max_tokens - 1``."""
    out = fixed if fixed is not None else int(requests.max_tokens[i])
    return max(out - 1, 0)


def ttft_deadline_at(requests: RequestArrays, i: int, fixed_output: int | None = None) -> Seconds:
    """Absolute TTFT deadline of request ``i``."""
    tier = requests.tiers[int(requests.tier[i])]
    n_dec = predicted_decode_tokens(requests, i, fixed_output)
    return float(requests.arrival_at[i]) + ttft_deadline_s(tier, n_dec)


def next_token_due_at(
    deadline_at: Seconds, first_token_at: Seconds, num_produced: int, tbt_s: float
) -> Seconds:
    """When the next token (index ``num_produced``, 0 = first) of a decode is due."""
    return max(first_token_at, deadline_at) + num_produced * tbt_s
