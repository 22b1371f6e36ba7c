"""Which instance serves a request, and when: a thin driver of the front-door policy.

The decisions are the :class:`~sincere.policy.front_door.FrontDoor`'s -- the very object
the simulator's cluster drives (budget, admission, eligibility, holding, routing,
capping; see that module). The :class:`Dispatcher` supplies what only the live path
has and applies the answers:

* **views**: one per instance serving the request's model
  (:meth:`~sincere.serve.gateway.instances.InstanceState.view`: health from the circuit
  breaker, in-flight counts, the engine's last reported load);
* **Route**: a slot is reserved (``num_in_flight``) and the request relayed with the
  route's ``max_tokens`` cap (a budget or router cap only ever lowers it);
* **Reject**: the client gets the code's status (``no_instance``: 503; the others:
  429) with the reason;
* **Hold**: the request waits in its model's queue (:mod:`.wait_queue`; ordered by
  priority, then deadline, with head insertion for priority requests) for at most the
  hold's ``max_wait_s`` (504 after); a freed slot asks the front door again about the
  head of the queue at once (the slot is reserved before the waiter wakes). A full
  queue (``queue.max_len``) is a 503.

Admission runs once per request (:meth:`Dispatcher.admit`), told of the queued
requests ahead of it (at least as important), not those a less important tier queued;
a retry after an instance
failed and a queued request asks only for a place (:meth:`FrontDoor.place`). Finished
requests and slot releases are fed back (:meth:`Dispatcher.observe`,
:meth:`Dispatcher.release`); :meth:`Dispatcher.reserve` is the one way a slot is taken
(the P/D stage takes its phases' slots with it too). With a decision log every call and
outcome is written (:mod:`sincere.policy.decision_log`). ``instances`` is the one record
of membership; ``by_model`` and ``served`` are derived from it on every change, and a
second instance with a name already in use is refused. An instance put to sleep
(:meth:`Dispatcher.set_routable`) stays a member, so its models stay served: its view is
unhealthy, so their requests are held until it wakes, and every request held is told to
``on_held`` (the control plane wakes an instance for it). Everything here runs on the event
loop's thread without awaiting, except the waiter in :meth:`Dispatcher.acquire`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

from sincere.core.errors import ConfigError
from sincere.core.request import Request
from sincere.policy.decision_log import DecisionLog
from sincere.policy.front_door import (
    Decision,
    FrontDoor,
    Hold,
    HoldRules,
    Reject,
    Route,
    build_front_door,
    deadline_at,
)
from sincere.policy.router_base import InstanceView, Outcome
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


def refusal(reject: Reject) -> RefusalError:
    """The HTTP answer to a front-door rejection."""
    if reject.code == "no_instance":
        return RefusalError(503, reject.reason, "unavailable", reject.code)
    return RefusalError(429, reject.reason, "rejected", reject.code)


@dataclass(frozen=True, slots=True)
class Slot:
    """A reserved place on an instance for one request."""

    instance: InstanceState
    max_tokens: int | None  # cap to send upstream: the route's, else the client's (or None)
    reason: str  # the router's reason
    reserved_at: float  # loop time the slot was taken


@dataclass(eq=False, slots=True)
class Pending:
    """A request being dispatched (possibly waiting in the queue)."""

    request: Request
    client_id: str | None = None  # the client's x-request-id, for decision logs
    exclude: frozenset[str] = frozenset()  # instances already tried (retries)
    waiter: asyncio.Future[Slot | RefusalError] | None = None
    enqueued_at: float = 0.0
    instance: str = ""  # the instance of the latest attempt ("" before routing)
    decision: Decision | None = None  # admission's answer, until acquire applies it
    skip: frozenset[str] = frozenset()  # instances that cannot take it (sealed or not)
    headers: tuple[tuple[str, str], ...] = ()  # added to the answer (budget left)
    sealed: dict[str, str] | None = None  # headers of a sealed body relayed unread
    prompt_tokens_used: int | None = None  # as the upstream counted them, when it said
    output_tokens: int | None = None  # tokens generated (None: no instance answered)
    deadline_at: float | None = None  # the client's deadline_s, loop time; None: none
    num_sequences: int = 1  # sequences generated: n choices of each prompt of a batch


def front_door_of(config: GatewayConfig) -> FrontDoor:
    """The gateway's front door: its router, admission and queue rules."""
    queue = config.queue
    hold = HoldRules(queue.timeout_s, queue.head_priority, queue.shed_early)
    return build_front_door(
        config.router,
        config.admission,
        0,  # the router's seed when router.seed is not set
        hold=hold,
        default_max_tokens=config.limits.default_max_tokens,
    )


class Dispatcher:
    """Holds instances, the front door and the queues; applies the front door's answers."""

    def __init__(
        self, config: GatewayConfig, metrics: GatewayMetrics, decisions: DecisionLog | None = None
    ) -> None:
        self.config = config
        self.metrics = metrics
        self.front_door = front_door_of(config)
        self.decisions = decisions  # where every call and outcome is logged (None: nowhere)
        self.instances: dict[str, InstanceState] = {}
        self.by_model: dict[str, list[InstanceState]] = {}
        self.queues: dict[str, RequestQueue[Pending]] = {}
        self.served: set[str] = set()  # models with at least one instance
        # told the model of every request queued (the control plane wakes an instance)
        self.on_held: list[Callable[[str], None]] = []
        self.max_age_s = config.scrape.max_age_s

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

    def views(
        self, model: str, now: float, skip: frozenset[str] = frozenset()
    ) -> list[InstanceView]:
        """Views of every instance serving ``model`` but those in ``skip`` (health, load now)."""
        states = self.by_model.get(model, ())
        if skip:
            return [s.view(model, now, self.max_age_s) for s in states if s.name not in skip]
        return [s.view(model, now, self.max_age_s) for s in states]

    # ------------------------------------------------------------------ deciding

    def admit(self, pending: Pending, now: float) -> RefusalError | None:
        """The front door's answer to a new request: a refusal now, or None (then acquire)."""
        req = pending.request
        views = self.views(req.model, now, pending.skip)
        queue = self.queues.get(req.model)
        num_queued = 0 if queue is None else queue.num_ahead(req.priority)  # ahead of it
        decision = self.front_door.decide(req, views, now, num_queued)
        if self.decisions is not None:
            self.decisions.call(
                "decide", req, views, now, decision,
                num_queued=num_queued, client_id=pending.client_id,
            )  # fmt: skip
        pending.decision = decision
        return refusal(decision) if isinstance(decision, Reject) else None

    def _place(self, pending: Pending, now: float, waiting: bool) -> Decision:
        """The front door's place for a retried (or, ``waiting``, a queued) request."""
        req = pending.request
        views = self.views(req.model, now, pending.skip)
        num_queued = 0 if waiting else len(self.queues.get(req.model, ()))
        decision = self.front_door.place(
            req, views, now, exclude=pending.exclude, num_queued=num_queued, waiting=waiting
        )
        if self.decisions is not None:
            self.decisions.call(
                "place", req, views, now, decision, num_queued=num_queued,
                exclude=pending.exclude, waiting=waiting, client_id=pending.client_id,
            )  # fmt: skip
        return decision

    def reserve(
        self, pending: Pending, route: Route, now: float, max_tokens: int | None = None
    ) -> Slot:
        """A slot on the routed instance (counted in flight until :meth:`release`), with
        the cap to send: ``max_tokens``, else the route's, else the client's."""
        state = self.instances[route.instance]
        state.num_in_flight += 1
        state.num_requests += 1
        state.breaker.send(now)
        cap = route.max_tokens if max_tokens is None else max_tokens
        cap = pending.request.max_tokens if cap is None else cap
        return Slot(state, cap, route.reason, now)

    def release(self, slot: Slot, now: float) -> None:
        """Free a slot and route queued requests into it."""
        state = slot.instance
        state.num_in_flight -= 1
        state.last_done_at = now
        held_s = now - slot.reserved_at
        self.front_door.observe_hold(state.name, held_s)
        if self.decisions is not None:
            self.decisions.hold(state.name, held_s, now)
        for model in state.backend.models:
            self.drain(model, now)

    def observe(self, outcome: Outcome) -> None:
        """Feed a finished request back to the front door (router, admission history)."""
        self.front_door.observe(outcome)
        if self.decisions is not None:
            self.decisions.outcome(outcome)

    # ---------------------------------------------------------------- queueing

    async def acquire(self, pending: Pending, loop: asyncio.AbstractEventLoop) -> Slot:
        """A slot for ``pending``: at once, or after waiting in its model's queue."""
        now = loop.time()
        decision = pending.decision or self._place(pending, now, waiting=False)
        pending.decision = None
        if isinstance(decision, Route):
            return self.reserve(pending, decision, now)
        if isinstance(decision, Reject):
            raise refusal(decision)
        return await self._wait(pending, decision, loop)

    async def _wait(self, pending: Pending, hold: Hold, loop: asyncio.AbstractEventLoop) -> Slot:
        now = loop.time()
        model = pending.request.model
        queue = self.queues[model]
        if not queue.can_push():
            raise RefusalError(
                503,
                f"gateway queue for {model!r} is full ({queue.max_len} waiting)",
                "unavailable",
                "queue_full",
            )
        pending.waiter = loop.create_future()
        pending.enqueued_at = now
        ticket = queue.push(
            pending,
            priority=pending.request.priority,
            deadline_at=deadline_at(pending.request),
            head=hold.at_head,
        )
        for listener in self.on_held:
            listener(model)
        try:
            got = await asyncio.wait_for(pending.waiter, timeout=hold.max_wait_s)
        except TimeoutError:
            queue.cancel(ticket)
            self._record_wait(pending, loop.time())
            timeout = self.config.queue.timeout_s
            why = "its deadline" if hold.max_wait_s < timeout else "the queue timeout"
            raise RefusalError(
                504,
                f"waited {loop.time() - now:.3f}s in the gateway queue for "
                f"{model!r} and reached {why}",
                "timeout",
                "queue_timeout",
            ) from None
        except asyncio.CancelledError:
            queue.cancel(ticket)
            raise
        if isinstance(got, RefusalError):
            raise got
        return got

    def drain(self, model: str, now: float) -> None:
        """Ask the front door about the head of ``model``'s queue while it has a place."""
        queue = self.queues.get(model)
        while queue:
            ticket: Ticket[Pending] | None = queue.peek()
            if ticket is None:
                return
            pending = ticket.payload
            if pending.waiter is None or pending.waiter.done():
                queue.pop()
                continue
            decision = self._place(pending, now, waiting=True)
            if isinstance(decision, Hold):
                return
            queue.pop()
            self._record_wait(pending, now)
            if isinstance(decision, Route):
                pending.waiter.set_result(self.reserve(pending, decision, now))
            else:
                pending.waiter.set_result(refusal(decision))

    def set_routable(self, name: str, routable: bool) -> None:
        """Put an instance to sleep in routing (its models stay served, their requests
        wait in the queue) or wake it there (the queues drain into it)."""
        state = self.instances[name]
        state.routable = routable
        if routable:
            for model in state.backend.models:
                self.drain(model, self._now())

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
