"""Price-optimal routing: the instance that charges least for the request.

The reference router's price objective. Each instance charges ``p_in`` per prompt
token and ``p_out`` per output token (``InstanceView.price_*_per_token_usd``), so the
request's expected price there is ``p_in * prompt_tokens + p_out * expected_output``,
with the expected output from ``length_predictor`` (default: the model's history
mean, ``max_tokens`` until enough requests finished).

A request with a budget (``Request.budget_usd``) may buy at most
``floor((budget - p_in * prompt_tokens) / p_out)`` output tokens on an instance; the
expected output is capped there, the decision carries that cap as ``max_tokens``
when it is tighter than the request's own, and instances where the cap is below one
token are skipped. When every instance is skipped the request is rejected. Ties in
price go to the instance with fewer outstanding requests.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from sincere.core.params import params_from
from sincere.core.request import Request
from sincere.core.types import Seconds
from sincere.policy.router_base import (
    ROUTERS,
    InstanceView,
    Outcome,
    RouteDecision,
    Router,
)
from sincere.policy.routers._common import budget_max_tokens, capped_tokens, request_price
from sincere.policy.routers._estimates import LENGTH, LengthPredictorParams
from sincere.predict.length import OutputLengthPredictor


def affordable(
    request: Request, views: Sequence[InstanceView], expected_output: float
) -> list[tuple[InstanceView, float, int | None]]:
    """``(view, expected price, token cap)`` of each instance the budget can pay for."""
    out = []
    for view in views:
        cap = budget_max_tokens(request, view)
        if cap is not None and cap < 1:
            continue
        tokens = expected_output if cap is None else min(expected_output, float(cap))
        out.append((view, request_price(request, view, tokens), cap))
    return out


def over_budget(request: Request, num_instances: int) -> RouteDecision:
    """The rejection of a request whose budget buys no output token anywhere."""
    return RouteDecision(
        None,
        reason=f"budget ${request.budget_usd:g} buys no output token on any of "
        f"{num_instances} instances",
    )


class PriceOptimalParams(LengthPredictorParams):
    """Parameters of ``price-optimal``."""


@ROUTERS.register("price-optimal", params=PriceOptimalParams, needs=(LENGTH,))
class PriceOptimalRouter(Router):
    """Cheapest expected price within the request's budget."""

    reads_exact_tokens = False  # engine load as reported; no exact token counts

    def __init__(
        self,
        rng: np.random.Generator,
        params: PriceOptimalParams | None = None,
        *,
        length_predictor: OutputLengthPredictor,
        **values: Any,
    ) -> None:
        super().__init__(rng)
        params_from(PriceOptimalParams, params, values, "router 'price-optimal'")
        self.length = length_predictor

    def choose(
        self, request: Request, candidates: Sequence[InstanceView], now: Seconds
    ) -> RouteDecision:
        """The cheapest affordable healthy instance, or a rejection."""
        options = affordable(request, candidates, self.length.predict(request))
        if not options:
            return over_budget(request, len(candidates))
        view, price, cap = min(options, key=lambda o: (o[1], o[0].num_outstanding))
        return RouteDecision(
            view.id,
            max_tokens=capped_tokens(request, cap),
            reason=f"price=${price:.6g}",
            estimates=tuple((o[0].id, o[1]) for o in options),
        )

    def observe(self, outcome: Outcome) -> None:
        """Train the length predictor."""
        self.length.observe(outcome.request, outcome.output_tokens)
