"""Shared pieces of the routers: load measures, prices and budgets.

A router that compares candidates by one of the load measures derives from
:class:`LoadMetricRouter`: it keeps the ``metric`` and declares what comparing by it reads.

Prices follow the reference router: an instance charges ``p_in`` per prompt token
and ``p_out`` per output token (USD), so a request costs
``p_in * prompt_tokens + p_out * output_tokens``. A request budget caps its output at
``floor((budget - p_in * prompt_tokens) / p_out)`` tokens on that instance; below one
token the instance cannot serve it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Literal, cast

import numpy as np

from sincere.core.request import Request
from sincere.policy.reads import Reads
from sincere.policy.router_base import InstanceView, Router


def queue_requests(view: InstanceView) -> float | None:
    """Requests at the engine: waiting plus running (``None`` when either is unknown)."""
    if view.num_waiting is None or view.num_running is None:
        return None
    return float(view.num_waiting + view.num_running)


def queue_tokens(view: InstanceView) -> float | None:
    """Tokens of work at the engine: queued prompt tokens plus decode tokens still due."""
    if view.waiting_prefill_tokens is None or view.running_remaining_tokens is None:
        return None
    return float(view.waiting_prefill_tokens + view.running_remaining_tokens)


def outstanding(view: InstanceView) -> float:
    """Requests routed to the instance and not finished (always known: drivers count them)."""
    return float(view.num_outstanding)


LoadMetric = Literal["outstanding", "requests", "tokens"]
"""Names of the load measures in :data:`LOAD_METRICS` (a router parameter's type)."""

LOAD_METRICS: dict[str, Callable[[InstanceView], float | None]] = {
    "outstanding": outstanding,
    "requests": queue_requests,
    "tokens": queue_tokens,
}
"""Load measures a router may compare instances by (smaller is less loaded)."""

LOAD_FALLBACK = {"tokens": "requests", "requests": "outstanding"}
"""The measure a router compares by when its own is unknown on some candidate."""


def load_measure(
    metric: str, views: Sequence[InstanceView]
) -> tuple[str, Callable[[InstanceView], float], str]:
    """``(measure, key, note)``: the first of ``metric`` and its fallbacks every view knows.

    ``note`` is empty when ``metric`` itself is known everywhere, else it names the
    candidates where it is not and the measure used instead (for the decision's reason).
    One measure for all candidates: mixing measures would compare unlike things.
    """
    used = metric
    unknown: list[str] = []
    while used in LOAD_FALLBACK:
        missing = [v.id for v in views if LOAD_METRICS[used](v) is None]
        if not missing:
            break
        unknown = unknown or missing
        used = LOAD_FALLBACK[used]
    key = cast(Callable[[InstanceView], float], LOAD_METRICS[used])
    note = f"; {metric} unknown on {', '.join(unknown)}, by {used}" if unknown else ""
    return used, key, note


class LoadMetricRouter(Router):
    """A router that compares candidates by the load measure ``metric`` (its fallbacks where
    a candidate does not report it: :func:`load_measure`)."""

    def __init__(self, rng: np.random.Generator, metric: LoadMetric) -> None:
        super().__init__(rng)
        self.metric = metric

    @property
    def reads(self) -> Reads:
        """Engine load unless the metric is ``outstanding`` (the driver's own count, which
        every view carries); token counts when it is ``tokens``. A router that reads more
        of the views (a KV usage, say) says so in its own declaration."""
        return Reads(
            load=self.metric != "outstanding",
            tokens=self.metric == "tokens",
            outcomes=self.learns_from_outcomes,
        )

    def load_measure(
        self, views: Sequence[InstanceView]
    ) -> tuple[str, Callable[[InstanceView], float], str]:
        """:func:`load_measure` of ``views`` by this router's metric."""
        return load_measure(self.metric, views)


MAX_BUDGET_TOKENS = 2**40
"""A budget buying at least this many tokens counts as unlimited."""


def budget_max_tokens(request: Request, view: InstanceView) -> int | None:
    """Most output tokens ``request``'s budget buys on ``view``; ``None`` if unlimited.

    Returns 0 when the prompt alone exhausts the budget.
    """
    if request.budget_usd is None:
        return None
    left = request.budget_usd - view.price_in_per_token_usd * request.prompt_tokens
    if left < 0.0:
        return 0
    if view.price_out_per_token_usd <= 0.0:
        return None
    tokens = left / view.price_out_per_token_usd
    if tokens >= MAX_BUDGET_TOKENS:
        return None
    return math.floor(tokens + 1e-9)  # 1e-9: 250.0 computed as 249.99999999 is still 250


def request_price(request: Request, view: InstanceView, output_tokens: float) -> float:
    """USD charged for ``request`` on ``view`` if it generates ``output_tokens``."""
    return (
        view.price_in_per_token_usd * request.prompt_tokens
        + view.price_out_per_token_usd * output_tokens
    )


def capped_tokens(request: Request, cap: int | None) -> int | None:
    """The ``max_tokens`` a decision should carry: ``cap`` if it tightens the request's own."""
    if cap is None or (request.max_tokens is not None and request.max_tokens <= cap):
        return None
    return cap
