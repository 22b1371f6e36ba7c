"""The front door: what becomes of a request before an engine sees it, as one clock-free policy.

For each request, given read-only views of the instances serving its model and ``now``,
:meth:`FrontDoor.decide` answers :class:`Route` (an instance, and a lower ``max_tokens``
when a budget or the router caps it), :class:`Hold` (wait for room, in the driver's
queue) or :class:`Reject` (with a machine-readable ``code`` and a reason). In order:

1. **Budget**: a request with a budget must be able to pay for its prompt and one
   output token on some healthy instance (``budget_exceeded``); instances it cannot
   pay for are not candidates.
2. **Admission** (:class:`~sincere.policy.admission.Admission`, when enabled):
   predicted-miss shedding (``deadline_unreachable``) and priority bands
   (``priority_shed``).
3. **Eligibility and holding**: candidates are the healthy, affordable instances with
   room under their in-flight cap, not excluded (instances a retried request already
   failed on). With none, or with requests already waiting for this model, the request
   is held -- at the head of the queue when its priority is at most ``head_priority``
   (MaverIQ's prior inference) -- unless the queue cannot drain in time: its place over
   the rate at which the model's instances free slots exceeds its wait limit
   (``queue_overloaded``, with ``shed_early``).
4. **Routing**: one candidate is taken without asking the router; among several, the
   router chooses (``rejected`` when it declines), and later learns the outcome.
5. **Capping**: the budget's cap on the chosen instance and the router's cap only ever
   lower what would be generated (the request's ``max_tokens``, else
   ``default_max_tokens``).

:meth:`FrontDoor.place` is steps 3-5 alone: a retry after an instance failed, or the
head of a queue when a slot frees (which is not shed again). :meth:`FrontDoor.observe`
feeds finished requests to the router and to the latency history admission reads, and
:meth:`FrontDoor.observe_hold` how long a request held a slot. The simulator's cluster
and the gateway's dispatcher drive the very same object; only the clock differs.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Collection, Sequence
from dataclasses import dataclass

import numpy as np

from sincere.core.errors import ConfigError
from sincere.core.request import Request
from sincere.core.types import InstanceId, RequestId, Seconds
from sincere.policy.admission import Admission, LatencyHistory, PredictedMissShedder, PriorityBands
from sincere.policy.front_door_config import AdmissionConfig, RouterConfig
from sincere.policy.reads import Reads
from sincere.policy.router_base import (
    CountKey,
    InstanceView,
    Outcome,
    RouteDecision,
    Router,
    healthy,
)
from sincere.policy.routers import make_router
from sincere.policy.routers._common import budget_max_tokens


@dataclass(frozen=True, slots=True)
class HoldRules:
    """How requests wait for room (the gateway's queue; the simulator never holds)."""

    max_wait_s: Seconds = math.inf  # longest wait before giving up (the queue timeout)
    head_priority: int | None = None  # requests at most this priority go to the queue's head
    shed_early: bool = False  # refuse at once a request the queue cannot drain in time


@dataclass(frozen=True, slots=True)
class Route:
    """Send the request to ``instance``."""

    instance: InstanceId  # the chosen instance
    max_tokens: int | None  # cap to apply (budget or router); None: the request's own
    reason: str  # why this instance (the router's reason, or the only candidate)
    estimates: tuple[tuple[InstanceId, float], ...] = ()  # what the router compared


@dataclass(frozen=True, slots=True)
class Hold:
    """Wait for room; ask again (:meth:`FrontDoor.place`) when an instance frees a slot."""

    reason: str  # why it waits
    at_head: bool  # queue it ahead of everything waiting
    max_wait_s: Seconds  # how long it may wait from now (its deadline or the queue timeout)


@dataclass(frozen=True, slots=True)
class Reject:
    """Refuse the request."""

    code: str  # no_instance, budget_exceeded, deadline_unreachable, priority_shed,
    # queue_overloaded or rejected (by the router)
    reason: str  # what a client or a record reads


Decision = Route | Hold | Reject
"""What the front door answers."""


def deadline_at(request: Request) -> Seconds:
    """The request's absolute deadline (the earlier of its TTLT and TTFT ones), or inf."""
    ds = [d for d in (request.ttft_deadline_at, request.ttlt_deadline_at) if d is not None]
    return min(ds) if ds else math.inf


class FrontDoor:
    """Budget, admission, eligibility, holding, routing and capping; see the module docstring."""

    def __init__(
        self,
        router: Router,
        admission: Admission | None = None,
        hold: HoldRules = HoldRules(),
        *,
        history: LatencyHistory | None = None,
        default_max_tokens: int = 256,
    ) -> None:
        self.router = router
        self.admission = admission  # None: admit every affordable request
        self.hold = hold
        self.history = history or (admission.history if admission else LatencyHistory())
        self.default_max_tokens = default_max_tokens  # a request's cap when it sets none
        self.max_pending = 100_000  # requests the router chose whose outcome is awaited
        # those requests, oldest first (an OrderedDict: dropping the oldest is O(1), where
        # a dict's first key is found past every deleted slot before it)
        self._chosen: OrderedDict[RequestId, None] = OrderedDict()
        self._positions: dict[InstanceId, int] = {}  # where each id was among the candidates

    @property
    def reads(self) -> Reads:
        """What a decision depends on: the router's declaration, and with admission
        everything (its step-model predictions read loads and tokens, its latency history
        outcomes). Without a budget, placement itself reads only health, in-flight caps
        and the driver's outstanding counts; its budget checks read prices, not loads."""
        reads = self.router.reads
        return reads if self.admission is None else reads | self.admission.reads

    @property
    def screens(self) -> bool:
        """Whether requests are screened before routing (admission): a request with one
        candidate may then be turned away rather than routed there."""
        return self.admission is not None

    def place_many(self, count: int, views: Sequence[InstanceView]) -> list[int] | None:
        """Positions in ``views`` for ``count`` requests in turn, as :meth:`decide` would
        route them one by one, when that needs no request: an oblivious front door, more
        than one view, every view open (no health or in-flight cap to test), requests
        without budgets. ``None``: ask :meth:`decide` request by request. The requests
        are not noted for outcomes: an oblivious router learns nothing from them."""
        if not self.reads.oblivious or len(views) < 2:
            return None
        return self.router.choose_many(count, views)

    @property
    def counts_by(self) -> CountKey | None:
        """The count :meth:`place_by_count` places by (the router's
        :attr:`~sincere.policy.router_base.Router.counts_by`); ``None`` with admission,
        which reads more, or a router that does."""
        return None if self.admission is not None else self.router.counts_by

    @property
    def counts_by_without_content(self) -> CountKey | None:
        """:attr:`counts_by` for requests that carry no prompt content (no block ids:
        :attr:`~sincere.policy.router_base.Router.counts_by_without_content`)."""
        return None if self.admission is not None else self.router.counts_by_without_content

    @property
    def counts_by_with_prompt(self) -> CountKey | None:
        """The count :meth:`place_by_prompt` places requests with prompt content by (the
        router's :attr:`~sincere.policy.router_base.Router.counts_by_with_prompt`);
        ``None`` with admission, or a router that reads more."""
        return None if self.admission is not None else self.router.counts_by_with_prompt

    def place_by_prompt(
        self,
        counts: Sequence[int],
        ids: Sequence[InstanceId],
        keys: Sequence[int],
        prompt_tokens: int,
        block_tokens: int,
    ) -> int:
        """:meth:`place_by_count` for a request with prompt content, from its chained block
        keys as well (:meth:`~sincere.policy.router_base.Router.choose_by_prompt`), among
        at least two open candidates with ids ``ids``. Not noted for outcomes either."""
        return self.router.choose_by_prompt(counts, ids, keys, prompt_tokens, block_tokens)

    @property
    def places_first_least(self) -> bool:
        """Whether :meth:`place_by_count` answers the first position of the smallest count
        (the router's :attr:`~sincere.policy.router_base.Router.picks_first_least`), so a
        driver may find it in its own loop."""
        return self.router.picks_first_least

    def place_by_count(self, counts: Sequence[int]) -> int | None:
        """The position :meth:`decide` would route a request without budget to among open
        candidates (healthy, no in-flight cap) whose :attr:`counts_by` values are
        ``counts`` (not empty), when that needs neither the request nor the views. The
        request is not noted for outcomes: for drivers that tell no outcomes."""
        if len(counts) < 2:
            return 0 if counts else None  # one candidate: the router is not asked
        return self.router.choose_by_count(counts)

    def decide(
        self,
        request: Request,
        views: Sequence[InstanceView],
        now: Seconds,
        num_queued: int = 0,
        *,
        all_open: bool = False,
    ) -> Decision:
        """Budget, admission, then :meth:`place` for a request arriving at ``now``.

        ``views``: every instance serving the request's model; ``num_queued``: requests
        of that model already waiting in the driver's queue; ``all_open``: the driver
        knows every view is healthy and has no in-flight cap (a simulated fleet), so
        they need no test one by one.
        """
        if not views:
            return Reject("no_instance", f"no instance serves model {request.model!r}")
        if request.budget_usd is not None and _unaffordable(request, healthy(views)):
            return Reject(
                "budget_exceeded",
                f"budget {request.budget_usd:g} USD cannot pay for {request.prompt_tokens} "
                "prompt tokens and one output token on any instance",
            )
        if self.admission is not None:
            verdict = self.admission.check(request, views, now, num_queued)
            if not verdict.admit:
                shed = verdict.code == "priority_shed"
                prefix = "overloaded" if shed else "deadline cannot be met"
                return Reject(verdict.code, f"{prefix}: {verdict.reason}")
        return self.place(request, views, now, num_queued=num_queued, all_open=all_open)

    def place(
        self,
        request: Request,
        views: Sequence[InstanceView],
        now: Seconds,
        *,
        exclude: Collection[InstanceId] = (),
        num_queued: int = 0,
        waiting: bool = False,
        all_open: bool = False,
    ) -> Decision:
        """Eligibility, holding, routing and capping (no budget or admission check).

        ``exclude``: instances the request already failed on; ``waiting``: it is the
        head of the queue (holding it again never sheds it); ``all_open``: as for
        :meth:`decide`.
        """
        if not views:
            return Reject("no_instance", f"no instance serves model {request.model!r}")
        if all_open and request.budget_usd is None and not exclude:
            candidates = list(views)
        elif request.budget_usd is None and not exclude:  # the common case: has_room inlined
            candidates = [
                v for v in views
                if v.healthy and (v.max_in_flight is None or v.num_outstanding < v.max_in_flight)
            ]  # fmt: skip
        else:
            candidates = [
                v for v in views
                if v.healthy and v.has_room and v.id not in exclude and _affordable(request, v)
            ]  # fmt: skip
        if not candidates or num_queued > 0:
            why = "requests of this model wait" if candidates else "no instance has room"
            return self._hold(request, views, now, num_queued, why, shed=not waiting)
        if len(candidates) == 1:  # no choice: the router is not asked (nor told the outcome)
            only = candidates[0]
            return self._capped(request, only, RouteDecision(only.id, None, "only candidate"))
        # the candidates are healthy and not empty: what ``route`` would check first
        decision = self.router.choose(request, candidates, now)
        chosen = self._find(candidates, decision.instance)
        if chosen is None:
            why = decision.reason
            if decision.instance is not None:
                why = f"router chose unknown instance {decision.instance!r}"
            return Reject("rejected", f"rejected by router: {why}")
        self._remember(request.id)
        return self._capped(request, chosen, decision)

    def _find(
        self, candidates: list[InstanceView], instance: InstanceId | None
    ) -> InstanceView | None:
        """The view of ``instance`` among ``candidates`` (``None``: not among them).

        Drivers pass a model's instances in the same order request after request, so the
        position the id had last time is tried first (checked by the id there); only when
        that misses are the candidates searched, and the positions learnt again.
        """
        if instance is None:
            return None
        k = self._positions.get(instance)
        if k is not None and k < len(candidates) and candidates[k].id == instance:
            return candidates[k]
        self._positions.update((v.id, k) for k, v in enumerate(candidates))
        k = self._positions.get(instance)
        return None if k is None else candidates[k]

    def _remember(self, request_id: RequestId) -> None:
        """Note a request the router chose for (it learns from those outcomes)."""
        chosen = self._chosen
        if len(chosen) >= self.max_pending:  # outcomes that never came back (failures)
            chosen.popitem(last=False)
        chosen[request_id] = None

    def _capped(self, request: Request, view: InstanceView, decision: RouteDecision) -> Decision:
        """The route, with the budget's and the router's caps applied (they only lower)."""
        budget = budget_max_tokens(request, view)
        caps = [c for c in (decision.max_tokens, budget) if c is not None]
        if not caps:
            return Route(view.id, None, decision.reason, decision.estimates)
        cap = min(*caps, request.max_tokens or self.default_max_tokens)
        if cap < 1:
            return Reject("budget_exceeded", f"the cap on {view.id} leaves no output token")
        return Route(view.id, cap, decision.reason, decision.estimates)

    def _hold(
        self,
        request: Request,
        views: Sequence[InstanceView],
        now: Seconds,
        num_queued: int,
        why: str,
        shed: bool,
    ) -> Decision:
        """Hold the request, unless the queue cannot drain before its wait limit."""
        rules = self.hold
        head = rules.head_priority is not None and request.priority <= rules.head_priority
        max_wait_s = min(rules.max_wait_s, deadline_at(request) - now)
        if shed and rules.shed_early:
            place = 1 if head else num_queued + 1
            refusal = self._undrainable(request, views, place, max_wait_s)
            if refusal is not None:
                return refusal
        return Hold(why, head, max(0.0, max_wait_s))

    def _undrainable(
        self, request: Request, views: Sequence[InstanceView], place: int, max_wait_s: float
    ) -> Reject | None:
        """``queue_overloaded`` when ``place`` requests cannot leave before ``max_wait_s``."""
        rates = [self.history.service_rate(v) for v in healthy(views)]
        if not rates or None in rates:
            return None  # an instance without history: no basis to refuse
        rate = sum(r for r in rates if r is not None)
        expected_s = place / rate
        if expected_s <= max_wait_s:
            return None
        return Reject(
            "queue_overloaded",
            f"overloaded: {place - 1} requests wait for {request.model!r} and its instances "
            f"free {rate:.3g} slots/s, so this one would wait ~{expected_s:.3g}s, over its "
            f"limit of {max_wait_s:.3g}s; retry later",
        )

    def wants_outcome(self, request_id: RequestId) -> bool:
        """Whether :meth:`observe` learns anything from this request's outcome."""
        return self.admission is not None or request_id in self._chosen

    def observe(self, outcome: Outcome) -> None:
        """A routed request finished: the latency history learns from it, and the router
        when it chose the instance."""
        self.history.observe(outcome)
        if outcome.request.id in self._chosen:
            del self._chosen[outcome.request.id]
            self.router.observe(outcome)

    def observe_hold(self, instance: InstanceId, held_s: Seconds) -> None:
        """A request held a slot of ``instance`` for ``held_s`` (its queue's drain rate)."""
        self.history.observe_hold(instance, held_s)


def _unaffordable(request: Request, views: Sequence[InstanceView]) -> bool:
    """Whether there are instances and the budget pays for one token on none of them."""
    return bool(views) and not any(_affordable(request, v) for v in views)


def _affordable(request: Request, view: InstanceView) -> bool:
    """Whether ``request``'s budget (if any) pays for its prompt and one token on ``view``."""
    return request.budget_usd is None or budget_max_tokens(request, view) != 0


def router_rng(seed: int) -> np.random.Generator:
    """The router's random stream of a run seeded ``seed`` (the same on both paths)."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(1,)))


def build_front_door(
    router: RouterConfig,
    admission: AdmissionConfig,
    seed: int,
    *,
    hold: HoldRules = HoldRules(),
    default_max_tokens: int = 256,
) -> FrontDoor:
    """The front door of a config: its router, admission and holds.

    The router draws from :func:`router_rng` of ``router.seed``, else of ``seed`` (the
    run's). Raises :class:`ConfigError` for an unknown router or bad parameters, with
    the config path.
    """
    rng = router_rng(seed if router.seed is None else router.seed)
    try:
        built = make_router(router.name, rng, **router.params)
    except ConfigError as exc:
        raise ConfigError(str(exc), where="router") from None
    history = LatencyHistory(admission.max_estimate_age_s)
    screen = None
    if admission.enabled:
        bands = PriorityBands(admission.priority_bands) if admission.priority_bands else None
        screen = Admission(
            PredictedMissShedder(admission.shed_factor), bands, history, default_max_tokens
        )
    return FrontDoor(built, screen, hold, history=history, default_max_tokens=default_max_tokens)
