"""Admission, routing and gateway-side queueing: which instance serves a request, and when.

For each request the :class:`Dispatcher`

1. **admits** it or rejects it early (429 with a reason): a budget that cannot pay
   for the prompt plus one token on any instance; a deadline the best predicted
   latency already misses (:class:`~sincere.policy.admission.PredictedMissShedder`
   on the instances' observed TTFT / time-per-token EWMAs plus the expected queue
   wait); optional :class:`~sincere.policy.admission.PriorityBands`;
2. **routes** it with the configured router (the same objects the simulator drives),
   over views of the instances of its model that are healthy (breaker), have room
   (``max_in_flight``) and that its budget can pay; a router rejection (e.g. the
   price router's budget check) is a 429 with the router's reason;
3. **queues** it when no instance has room, ordered by priority then deadline, with
   head insertion for priority requests (:mod:`sincere.serve.gateway.wait_queue`); a freed
   slot routes the head of the queue at once (the slot is reserved before the waiter
   wakes), and a waiter gives up with 504 at its queue timeout or deadline. With
   ``queue.shed_early`` a request that would wait longer than that -- its place in
   the queue over the rate at which the model's instances free slots (each
   instance's ``max_in_flight`` over the mean time a request holds a slot) -- is
   refused at once (429 ``queue_overloaded``) instead of timing out.

A budget (or a router's cap) only ever lowers ``max_tokens``: the cap sent upstream
is the smaller of ``floor((budget - p_in·prompt) / p_out)`` on the chosen instance
(the reference router's rule) and the client's ``max_tokens`` (else
``limits.default_max_tokens``). ``instances`` is the one record of membership;
``by_model`` and ``served`` are derived from it on every change, and a second
instance with a name already in use is refused. Everything here runs on the event
loop's thread without awaiting, except the waiter in :meth:`Dispatcher.acquire`.
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass

import numpy as np

from sincere.core.errors import ConfigError
from sincere.core.request import Request
from sincere.policy.admission import PredictedMissShedder, PriorityBands, cluster_utilisation
from sincere.policy.router_base import InstanceView, Outcome, RouteDecision, Router
from sincere.policy.routers import make_router
from sincere.predict.latency import LatencyEstimate
from sincere.serve.gateway.config import GatewayConfig
from sincere.serve.gateway.instances import InstanceState
from sincere.serve.gateway.metrics import GatewayMetrics
from sincere.serve.gateway.wait_queue import RequestQueue, Ticket


class DuplicateInstanceError(ConfigError):
    """An instance with this name is already in routing."""


class RefusalError(Exception):
    """The gateway answers a request itself with an error status and reason."""

    def __init__(self, status: int, message: str, outcome: str, code: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.outcome = outcome  # label of sincere_gateway_requests_total
        self.code = code  # OpenAI error ``code``


@dataclass(frozen=True, slots=True)
class Slot:
    """A reserved place on an instance for one request."""

    instance: InstanceState
    max_tokens: int | None  # cap to send upstream (budget or router); None = client's
    reason: str  # the router's reason
    reserved_at: float  # loop time the slot was taken


@dataclass(eq=False, slots=True)
class Pending:
    """A request being dispatched (possibly waiting in the queue)."""

    request: Request
    deadline_at: float  # absolute, loop time; inf when none
    exclude: frozenset[str] = frozenset()  # instances already tried (retries)
    waiter: asyncio.Future[Slot | RefusalError] | None = None
    enqueued_at: float = 0.0
    instance: str = ""  # the instance of the latest attempt ("" before routing)


class Dispatcher:
    """Holds instances, the router and the queues; decides where requests go."""

    def __init__(self, config: GatewayConfig, metrics: GatewayMetrics) -> None:
        self.config = config
        self.metrics = metrics
        self.router: Router = make_router(
            config.router.name, np.random.default_rng(config.router.seed), **config.router.params
        )
        self.instances: dict[str, InstanceState] = {}
        self.by_model: dict[str, list[InstanceState]] = {}
        self.queues: dict[str, RequestQueue[Pending]] = {}
        self.served: set[str] = set()  # models with at least one instance
        self.max_age_s = config.scrape.max_age_s
        self.shedder = PredictedMissShedder(config.admission.shed_factor)
        bands = config.admission.priority_bands
        self.bands = PriorityBands(bands) if bands else None

    # ----------------------------------------------------------------- instances

    def add(self, state: InstanceState) -> None:
        """Put an instance into routing for each of its models; a taken name raises."""
        if state.name in self.instances:
            raise DuplicateInstanceError(
                "an instance with this name is already in routing",
                value=state.name,
                allowed="a name not in use (remove the old instance first)",
            )
        self.instances[state.name] = state
        self._index()
        for model in state.backend.models:
            self.queues.setdefault(model, RequestQueue(self.config.queue.max_len))
            self.drain(model, self._now())

    def remove(self, name: str) -> InstanceState:
        """Take an instance out of routing (its requests in flight finish)."""
        state = self.instances.pop(name)
        state.removed = True
        self._index()
        return state

    def _index(self) -> None:
        """Rebuild ``by_model`` and ``served`` from ``instances`` (in instance order)."""
        by_model: dict[str, list[InstanceState]] = {}
        for state in self.instances.values():
            for model in state.backend.models:
                by_model.setdefault(model, []).append(state)
        self.by_model = by_model
        self.served = set(by_model)

    # ------------------------------------------------------------------ routing

    def views(self, pending: Pending, now: float) -> list[InstanceView]:
        """Views of the instances that may take ``pending`` now."""
        req = pending.request
        out = []
        for s in self.by_model.get(req.model, ()):
            if s.name in pending.exclude or not s.has_room() or not s.breaker.can_send(now):
                continue
            if req.budget_usd is not None and budget_cap(req, s) == 0:
                continue
            out.append(s.view(req.model, now, self.max_age_s))
        return out

    def try_route(self, pending: Pending, now: float) -> Slot | RefusalError | None:
        """Route now: a reserved slot, a refusal, or None (no instance has room)."""
        views = self.views(pending, now)
        if not views:
            return None
        decision = self.router.route(pending.request, views, now)
        if decision.instance is None:
            return RefusalError(
                429, f"rejected by router: {decision.reason}", "rejected", "rejected"
            )
        return self._reserve(pending.request, decision, now)

    def _reserve(self, req: Request, decision: RouteDecision, now: float) -> Slot:
        state = self.instances[str(decision.instance)]
        state.num_in_flight += 1
        state.num_requests += 1
        state.breaker.send(now)
        caps = [c for c in (decision.max_tokens, budget_cap(req, state)) if c is not None]
        max_tokens = req.max_tokens
        if caps:  # a budget or router cap only lowers what would be generated anyway
            max_tokens = min(*caps, req.max_tokens or self.config.limits.default_max_tokens)
        return Slot(state, max_tokens, decision.reason, now)

    def release(self, slot: Slot, now: float) -> None:
        """Free a slot and route queued requests into it."""
        state = slot.instance
        state.num_in_flight -= 1
        state.observe_hold(now - slot.reserved_at)
        for model in state.backend.models:
            self.drain(model, now)

    def observe(self, outcome: Outcome) -> None:
        """Feed a finished request back to the router."""
        self.router.observe(outcome)

    # -------------------------------------------------------------- admission

    def admit(self, pending: Pending, now: float) -> RefusalError | None:
        """Early rejection (429) of a request that cannot meet its budget or deadline."""
        if not self.config.admission.enabled:
            return None
        req = pending.request
        if req.budget_usd is None and self.bands is None and not _has_targets(req):
            return None  # nothing to check: no budget, no latency target, no bands
        states = [s for s in self.by_model.get(req.model, ()) if s.breaker.can_send(now)]
        unaffordable = req.budget_usd is not None and states
        if unaffordable and all(budget_cap(req, s) == 0 for s in states):
            return RefusalError(
                429,
                f"budget {req.budget_usd:g} USD cannot pay for {req.prompt_tokens} prompt "
                "tokens and one output token on any instance",
                "rejected",
                "budget_exceeded",
            )
        estimates = self._estimates(req, states, now)
        decision = self.shedder.admit(req, estimates, now)
        if not decision.admit:
            return RefusalError(
                429,
                f"deadline cannot be met: {decision.reason}",
                "rejected",
                "deadline_unreachable",
            )
        if self.bands is not None:
            views = [s.view(req.model, now, self.max_age_s) for s in states]
            band = self.bands.admit(req, cluster_utilisation(views))
            if not band.admit:
                return RefusalError(429, f"overloaded: {band.reason}", "rejected", "priority_shed")
        return None

    def _estimates(
        self, req: Request, states: list[InstanceState], now: float
    ) -> list[LatencyEstimate]:
        """Predicted TTFT / E2E per instance with recent history, plus the expected queue wait."""
        out_tokens = req.max_tokens or self.config.limits.default_max_tokens
        queued = len(self.queues.get(req.model, ()))
        slots = sum(s.max_in_flight for s in states) or 1
        out = []
        for s in states:
            e2e = s.predicted_e2e_s(out_tokens, now)
            if e2e is None or s.ttft_s is None:
                continue
            wait = 0.0 if s.has_room() and not queued else (queued + 1) / slots * e2e
            out.append(LatencyEstimate(s.ttft_s + wait, e2e + wait, float(out_tokens)))
        return out

    # ---------------------------------------------------------------- queueing

    async def acquire(self, pending: Pending, loop: asyncio.AbstractEventLoop) -> Slot:
        """A slot for ``pending``: at once, or after waiting in its model's queue."""
        now = loop.time()
        queue = self.queues.get(pending.request.model)
        if queue is None or not self.by_model.get(pending.request.model):
            raise RefusalError(
                503,
                f"no instance serves model {pending.request.model!r}",
                "unavailable",
                "no_instance",
            )
        if not len(queue):
            got = self.try_route(pending, now)
            if got is not None:
                return _slot_or_raise(got)
        return await self._wait(pending, queue, loop)

    async def _wait(
        self, pending: Pending, queue: RequestQueue[Pending], loop: asyncio.AbstractEventLoop
    ) -> Slot:
        now = loop.time()
        if not queue.can_push():
            raise RefusalError(
                503,
                f"gateway queue for {pending.request.model!r} is full ({queue.max_len} waiting)",
                "unavailable",
                "queue_full",
            )
        head_at = self.config.queue.head_priority
        head = head_at is not None and pending.request.priority <= head_at
        if self.config.queue.shed_early:
            self._shed_if_undrainable(pending, 1 if head else len(queue) + 1, now)
        pending.waiter = loop.create_future()
        pending.enqueued_at = now
        ticket = queue.push(
            pending, priority=pending.request.priority, deadline_at=pending.deadline_at, head=head
        )
        wait_s = min(self.config.queue.timeout_s, pending.deadline_at - now)
        try:
            got = await asyncio.wait_for(pending.waiter, timeout=max(0.0, wait_s))
        except TimeoutError:
            queue.cancel(ticket)
            self._record_wait(pending, loop.time())
            why = "its deadline" if wait_s < self.config.queue.timeout_s else "the queue timeout"
            raise RefusalError(
                504,
                f"waited {loop.time() - now:.3f}s in the gateway queue for "
                f"{pending.request.model!r} and reached {why}",
                "timeout",
                "queue_timeout",
            ) from None
        except asyncio.CancelledError:
            queue.cancel(ticket)
            raise
        return _slot_or_raise(got)

    def _shed_if_undrainable(self, pending: Pending, place: int, now: float) -> None:
        """429 when ``place`` requests cannot leave the queue before the wait limit."""
        model = pending.request.model
        rates = [s.service_rate() for s in self.by_model.get(model, ()) if s.breaker.can_send(now)]
        if not rates or any(r is None for r in rates):
            return  # an instance without history: no basis to refuse
        rate = sum(r for r in rates if r is not None)
        wait_s = min(self.config.queue.timeout_s, pending.deadline_at - now)
        expected_s = place / rate
        if expected_s > wait_s:
            raise RefusalError(
                429,
                f"overloaded: {place - 1} requests wait for {model!r} and its instances free "
                f"{rate:.3g} slots/s, so this one would wait ~{expected_s:.3g}s, over its "
                f"limit of {wait_s:.3g}s; retry later",
                "rejected",
                "queue_overloaded",
            )

    def drain(self, model: str, now: float) -> None:
        """Route queued requests of ``model`` while instances have room."""
        queue = self.queues.get(model)
        while queue:
            ticket: Ticket[Pending] | None = queue.peek()
            if ticket is None:
                return
            pending = ticket.payload
            if pending.waiter is None or pending.waiter.done():
                queue.pop()
                continue
            got = self.try_route(pending, now)
            if got is None:
                return
            queue.pop()
            self._record_wait(pending, now)
            pending.waiter.set_result(got)

    def drain_all(self, now: float) -> None:
        """Drain every model's queue (breakers may have turned half-open)."""
        for model in list(self.queues):
            self.drain(model, now)

    def fail_queued(self, model: str, message: str) -> None:
        """Answer every request queued for ``model`` with 503 (its last instance went)."""
        queue = self.queues.get(model)
        while queue:
            ticket = queue.pop()
            if ticket is None:
                return
            waiter = ticket.payload.waiter
            if waiter is not None and not waiter.done():
                waiter.set_result(RefusalError(503, message, "unavailable", "no_instance"))

    def _record_wait(self, pending: Pending, now: float) -> None:
        self.metrics.queue_wait[pending.request.model].observe(now - pending.enqueued_at)

    def _now(self) -> float:
        try:
            return asyncio.get_running_loop().time()
        except RuntimeError:
            return 0.0


def _has_targets(req: Request) -> bool:
    """Whether the request's tier sets a TTFT or TTLT target (what the shedder checks)."""
    return req.tier.ttft_s is not None or req.tier.ttlt_s is not None


def _slot_or_raise(got: Slot | RefusalError) -> Slot:
    if isinstance(got, RefusalError):
        raise got
    return got


_NO_CAP = float(1 << 53)  # a budget paying this many tokens caps nothing


def budget_cap(req: Request, state: InstanceState) -> int | None:
    """Output tokens the budget pays on ``state`` (0: not even one); None: no cap.

    None without a budget, with free output, or when the budget pays for more tokens
    than any request could ask (huge budgets never overflow into a cap).
    """
    if req.budget_usd is None:
        return None
    p_in = state.backend.price_in_per_token_usd
    p_out = state.backend.price_out_per_token_usd
    left = req.budget_usd - p_in * req.prompt_tokens
    if left < 0:
        return 0
    if p_out <= 0:
        return None
    tokens = left / p_out + 1e-9
    return None if not tokens < _NO_CAP else max(0, math.floor(tokens))


def deadline_at(req: Request) -> float:
    """The request's absolute deadline (the earlier of its TTLT and TTFT ones), or inf."""
    ds = [d for d in (req.ttft_deadline_at, req.ttlt_deadline_at) if d is not None]
    return min(ds) if ds else math.inf
