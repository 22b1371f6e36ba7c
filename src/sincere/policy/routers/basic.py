"""Load-balancing baselines: random, round-robin, least-outstanding, JSQ, power of two.

These ignore models, prices and predictions; they spread load over the healthy
instances and are the baselines of the reference router ("random", "round-robin")
and of Vidur's global schedulers (least-outstanding requests).

* ``random`` -- uniform over healthy instances.
* ``round-robin`` -- cycles over healthy instances in the order given.
* ``least-outstanding`` -- fewest requests routed and not finished (``num_outstanding``),
  which counts requests still in flight to the engine; ties go to the earlier instance.
* ``join-shortest-queue`` -- shortest engine queue; ``metric="requests"`` (default)
  compares ``num_waiting + num_running``, ``metric="tokens"`` compares queued prompt
  tokens plus decode tokens still due (``waiting_prefill_tokens +
  running_remaining_tokens``), which weighs long prompts properly. Where the engine
  does not report the metric (a live backend without that metric), the candidates are
  compared by ``requests``, then ``outstanding``, and the reason says so.
* ``power-of-two`` -- samples ``num_choices`` (2) distinct healthy instances and takes the
  less loaded by ``metric`` (default ``outstanding``): near-JSQ balance with O(1) state
  reads (Mitzenmacher, "The power of two choices in randomized load balancing", 2001).
"""

from __future__ import annotations

from collections.abc import Sequence
from operator import attrgetter
from typing import Any, Literal

import numpy as np
from pydantic import Field

from sincere.core.params import Params, params_from
from sincere.core.request import Request
from sincere.core.types import Seconds
from sincere.policy.reads import READS_NOTHING, Reads
from sincere.policy.router_base import (
    ROUTERS,
    CountKey,
    InstanceView,
    RouteDecision,
    Router,
    choose_first_least,
)
from sincere.policy.routers._common import LoadMetric, LoadMetricRouter
from sincere.policy.routers._draws import WordDraws


@ROUTERS.register("random")
class RandomRouter(Router):
    """Uniformly random healthy instance."""

    @property
    def reads(self) -> Reads:
        """Nothing of the instances: one draw of the router's generator per request."""
        return READS_NOTHING

    def choose_many(self, count: int, candidates: Sequence[InstanceView]) -> list[int] | None:
        """``count`` draws at once: the generator gives a vector of bounded integers as
        the same number of single draws (a test holds it to that)."""
        drawn: list[int] = self.rng.integers(len(candidates), size=count).tolist()
        return drawn

    def choose(
        self, request: Request, candidates: Sequence[InstanceView], now: Seconds
    ) -> RouteDecision:
        """A healthy instance drawn uniformly from the router's generator."""
        return RouteDecision(
            candidates[int(self.rng.integers(len(candidates)))].id, reason="random"
        )


@ROUTERS.register("round-robin")
class RoundRobinRouter(Router):
    """Healthy instances in turn."""

    def __init__(self, rng: np.random.Generator) -> None:
        super().__init__(rng)
        self._next = 0

    @property
    def reads(self) -> Reads:
        """Nothing of the instances: the position alone decides."""
        return READS_NOTHING

    def choose_many(self, count: int, candidates: Sequence[InstanceView]) -> list[int] | None:
        """The next ``count`` positions in turn (``choose`` wraps its position below the
        number of candidates, so the k-th call picks ``(start + k) % n``)."""
        if count == 0:
            return []
        n, start = len(candidates), self._next
        self._next = (start + count) % n
        return [(start + k) % n for k in range(count)]

    def choose(
        self, request: Request, candidates: Sequence[InstanceView], now: Seconds
    ) -> RouteDecision:
        """The next healthy instance after the previous choice (by position)."""
        choice = candidates[self._next % len(candidates)]
        self._next = (self._next + 1) % len(candidates)
        return RouteDecision(choice.id, reason="round-robin")


@ROUTERS.register("least-outstanding")
class LeastOutstandingRouter(Router):
    """Fewest outstanding requests; first in order on ties."""

    @property
    def reads(self) -> Reads:
        """Only the driver's outstanding counts (not oblivious: they follow the serving)."""
        return Reads(load=False, tokens=False, outcomes=self.learns_from_outcomes)

    def choose(
        self, request: Request, candidates: Sequence[InstanceView], now: Seconds
    ) -> RouteDecision:
        """The healthy instance with the smallest ``num_outstanding``."""
        best = min(candidates, key=attrgetter("num_outstanding"))
        return RouteDecision(best.id, reason=f"outstanding={best.num_outstanding}")

    @property
    def count_key(self) -> CountKey | None:
        """The outstanding counts alone."""
        return "outstanding"

    choose_by_count = choose_first_least  # the first of the fewest outstanding


class JoinShortestQueueParams(Params):
    """Parameters of ``join-shortest-queue``."""

    metric: Literal["requests", "tokens"] = Field(
        "requests",
        description="queue length in requests (waiting + running) or in tokens of work "
        "(queued prompt tokens + decode tokens still due)",
    )


@ROUTERS.register("join-shortest-queue", params=JoinShortestQueueParams)
class JoinShortestQueueRouter(LoadMetricRouter):
    """Shortest engine queue, in requests or in tokens of work."""

    def __init__(
        self,
        rng: np.random.Generator,
        params: JoinShortestQueueParams | None = None,
        **values: Any,
    ) -> None:
        p = params_from(JoinShortestQueueParams, params, values, "router 'join-shortest-queue'")
        super().__init__(rng, p.metric)

    def choose(
        self, request: Request, candidates: Sequence[InstanceView], now: Seconds
    ) -> RouteDecision:
        """The healthy instance with the least queued work; first in order on ties.

        Where the metric is unknown on a candidate (a live backend that does not report
        it), all are compared by the fallback measure, and the reason says so.
        """
        used, load, note = self.load_measure(candidates)
        best = min(candidates, key=load)
        return RouteDecision(best.id, reason=f"{used}={load(best):g}{note}")

    @property
    def count_key(self) -> CountKey | None:
        """By ``requests``: waiting plus running, a count (``tokens`` is not)."""
        return "requests" if self.metric == "requests" else None

    choose_by_count = choose_first_least  # the first of the shortest queues


class PowerOfTwoParams(Params):
    """Parameters of ``power-of-two``."""

    metric: LoadMetric = Field("outstanding", description="load measure compared")
    num_choices: int = Field(2, ge=1, description="healthy instances sampled per request")


@ROUTERS.register("power-of-two", params=PowerOfTwoParams)
class PowerOfTwoRouter(LoadMetricRouter):
    """Less loaded of ``num_choices`` random healthy instances."""

    def __init__(
        self, rng: np.random.Generator, params: PowerOfTwoParams | None = None, **values: Any
    ) -> None:
        p = params_from(PowerOfTwoParams, params, values, "router 'power-of-two'")
        super().__init__(rng, p.metric)
        self.num_choices = p.num_choices
        # with num_choices <= 2 every draw is an ``integers(n)``, taken from the
        # generator's 32-bit words read ahead in blocks (:class:`WordDraws`); with more,
        # draws of two kinds (``integers`` and ``choice``) go to the generator itself
        self._words = WordDraws(rng)
        self._draw = self._words.below if self.num_choices <= 2 else self._integers

    def choose(
        self, request: Request, candidates: Sequence[InstanceView], now: Seconds
    ) -> RouteDecision:
        """Sample distinct candidates, keep the less loaded (the first sampled on ties)."""
        k = min(self.num_choices, len(candidates))
        sampled = [candidates[i] for i in self._sample(len(candidates), k)]
        used, load, note = self.load_measure(sampled)
        best = min(sampled, key=load)
        return RouteDecision(best.id, reason=f"{used}={load(best):g} of {k}{note}")

    @property
    def count_key(self) -> CountKey | None:
        """The metric, when it is a count (``outstanding`` or ``requests``)."""
        if self.metric == "tokens":
            return None
        return self.metric

    def choose_by_count(self, counts: Sequence[int]) -> int:
        """The same draws as :meth:`choose`, and the first sampled of the smallest count."""
        n = len(counts)
        if self.num_choices == 2 and n >= 2:  # (:meth:`_sample`'s two draws, compiled)
            return self._words.two_choices(counts)
        sampled = self._sample(n, min(self.num_choices, n))
        return min(sampled, key=counts.__getitem__)

    def _sample(self, n: int, k: int) -> list[int]:
        """``k`` distinct positions out of ``n``, uniformly (fast paths for k <= 2)."""
        if k > 2:
            return [int(i) for i in self.rng.choice(n, size=k, replace=False)]
        first = self._draw(n)
        if k == 1:
            return [first]
        second = self._draw(n - 1)
        return [first, second + (second >= first)]

    def _integers(self, n: int) -> int:
        """A draw below ``n`` straight from the generator."""
        return int(self.rng.integers(n))
