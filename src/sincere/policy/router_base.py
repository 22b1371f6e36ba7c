"""The router contract: pick an instance for a request, given read-only views.

A router is clock-free: ``now`` is an argument, and it sees only
:class:`InstanceView` snapshots and the :class:`~sincere.core.request.Request`.
It may keep state (a round-robin pointer, a history for a latency predictor) and
learn from ``observe``. Randomness comes from a ``numpy.random.Generator`` passed
to the constructor. The same router object runs in the simulator and the gateway.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Literal

import numpy as np

from sincere.core.registry import Needs, Registry
from sincere.core.request import Request
from sincere.core.types import InstanceId, ModelName, Seconds
from sincere.perf.base import StepTimeModel
from sincere.policy.reads import Reads

if TYPE_CHECKING:  # the records module imports pyarrow: routers must not
    from sincere.core.records import RecordArrays


CountKey = Literal["outstanding", "requests"]
"""A count per instance a router may choose by alone (:attr:`Router.count_key`)."""


@dataclass(frozen=True, slots=True)
class InstanceView:
    """What a router may know about one serving instance.

    Both paths build it with :func:`sincere.engine.instance.instance_view` from the
    instance's static facts and its engine's load record. A load field is ``None`` when
    the instance cannot report it (a live backend without that metric, or a stale
    sample): unknown, never 0. Routers handle unknown explicitly, falling back to a
    measure every candidate has and saying so in their reason.
    """

    id: InstanceId
    model: ModelName  # model it serves
    accelerator: str  # catalog name
    precision: str | None = None  # weight precision; None: not declared
    num_running: int | None = 0  # sequences in its running batch
    num_waiting: int | None = 0  # requests queued at the engine
    num_outstanding: int = 0  # routed and not finished (running + waiting + in flight)
    waiting_prefill_tokens: int | None = 0  # prompt tokens queued at the engine
    running_remaining_tokens: int | None = 0  # decode tokens still due for running sequences
    running_ctx_tokens: int | None = 0  # context tokens of the running sequences, summed
    kv_usage: float | None = 0.0  # fraction of KV blocks used
    max_num_seqs: int = 256  # batch limit
    price_in_per_token_usd: float = 0.0  # price charged per prompt token
    price_out_per_token_usd: float = 0.0  # price charged per output token
    quality: float = 1.0  # relative quality of model+precision (1.0 = reference)
    healthy: bool = True
    step_model: StepTimeModel | None = None  # for latency prediction, when known
    max_in_flight: int | None = None  # most requests the driver sends it at once; None: no cap

    @property
    def has_room(self) -> bool:
        """Whether the driver may send it one more request (its in-flight cap)."""
        return self.max_in_flight is None or self.num_outstanding < self.max_in_flight

    @property
    def engine_load_known(self) -> bool:
        """Whether every engine-side load field is known (what a step-model prediction reads)."""
        return (
            self.num_running is not None
            and self.num_waiting is not None
            and self.waiting_prefill_tokens is not None
            and self.running_remaining_tokens is not None
            and self.running_ctx_tokens is not None
        )


@dataclass(frozen=True, slots=True)
class RouteDecision:
    """A router's answer. ``instance`` is ``None`` when the request is rejected."""

    instance: InstanceId | None  # chosen instance, or None to reject
    max_tokens: int | None = None  # new cap on generated tokens (budget), None = unchanged
    reason: str = ""  # why (logged by the gateway, kept in the records on rejection)
    # what the router compared, per candidate (a predicted latency, a score, a price),
    # for decision logs; empty when the views' load fields say it all
    estimates: tuple[tuple[InstanceId, float], ...] = ()


@dataclass(frozen=True, slots=True)
class Outcome:
    """A finished request, fed back to policies that learn (``observe``)."""

    request: Request
    instance: InstanceId
    ttft_s: Seconds | None  # None: the first token was not measured (a whole answer)
    e2e_s: Seconds
    output_tokens: int
    finished_at: Seconds

    @classmethod
    def of_record(
        cls,
        records: RecordArrays,
        i: int,
        request: Request,
        instance: InstanceId,
        arrival_at: Seconds,
        *,
        end_at: Seconds | None = None,
        output_tokens: int | None = None,
    ) -> Outcome:
        """Request ``i``'s outcome as a run's records hold it, from ``arrival_at``: TTFT to
        its first token (None when it has none), E2E to ``end_at`` (default: its finish), and
        ``output_tokens`` (default: the records'). A phase of a request (a disaggregated
        prefill) passes its own end and tokens."""
        first = float(records.first_token_at[i])
        end = float(records.finished_at[i]) if end_at is None else end_at
        return cls(
            request=request,
            instance=instance,
            ttft_s=None if math.isnan(first) else first - arrival_at,
            e2e_s=end - arrival_at,
            output_tokens=int(records.output_tokens[i]) if output_tokens is None else output_tokens,
            finished_at=end,
        )


class Router(ABC):
    """Chooses an instance per request. Subclasses register in :data:`ROUTERS`.

    ``ROUTERS.build(name, params, rng=generator, **collaborators)`` makes one: it checks
    ``params`` against the parameter model the subclass registered with and calls
    ``cls(rng=generator, params=<checked model>, **collaborators)``; the constructor
    copies the values into plain attributes and calls ``super().__init__(rng)``. A
    subclass implements :meth:`choose`, which only sees healthy instances; :meth:`route`
    is what callers use.
    """

    # whether choose() reads token counts exact at the decision (``Reads.tokens``); a
    # router that reads engine load only as the engine reports it sets this False
    reads_exact_tokens: ClassVar[bool] = True

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng

    def route(
        self, request: Request, instances: Sequence[InstanceView], now: Seconds
    ) -> RouteDecision:
        """Pick one of ``instances`` (all serve a compatible model) for ``request``.

        Unhealthy instances are never chosen; with none healthy the request is rejected
        (:func:`no_instance`). Otherwise :meth:`choose` decides among the healthy ones.
        """
        candidates = healthy(instances)
        if not candidates:
            return no_instance(instances)
        return self.choose(request, candidates, now)

    @abstractmethod
    def choose(
        self, request: Request, candidates: Sequence[InstanceView], now: Seconds
    ) -> RouteDecision:
        """Pick one of ``candidates`` (healthy, non-empty, in the given order)."""

    def observe(self, outcome: Outcome) -> None:  # noqa: B027 (optional hook)
        """Learn from a finished request. Default: nothing."""

    @property
    def learns_from_outcomes(self) -> bool:
        """Whether :meth:`observe` is overridden (a router that learns from finished
        requests); a driver may skip building outcomes for one that does not."""
        return type(self).observe is not Router.observe

    def choose_many(self, count: int, candidates: Sequence[InstanceView]) -> list[int] | None:
        """For a router that declares oblivious ``reads`` and never caps ``max_tokens``: the
        positions in ``candidates`` that ``count`` calls of :meth:`choose`, one per request in turn
        with these candidates, would pick -- and the router's state after them. ``None``
        (the default): not known without asking :meth:`choose` request by request."""
        return None

    @property
    def count_key(self) -> CountKey | None:
        """The one number per candidate :meth:`choose` depends on, besides the candidates'
        order and the router's generator, when it reads nothing else of the views and never
        caps ``max_tokens``: ``"outstanding"`` (``num_outstanding``) or ``"requests"``
        (``num_waiting + num_running``, both known). ``None`` (the default): more than
        that. A driver that keeps those counts may then ask :meth:`choose_by_count`."""
        return None

    def choose_by_count(self, counts: Sequence[int]) -> int:
        """The position :meth:`choose` would pick among candidates (at least two, healthy,
        no in-flight cap) whose :attr:`count_key` values are ``counts``, in order, and the
        router's state after it -- no view built. Only asked when :attr:`counts_by` is not
        ``None``. ``counts`` may be the driver's own list: read, never kept or changed.
        A router whose answer is the first smallest count says so by taking
        :func:`choose_first_least` as this method (:attr:`picks_first_least`)."""
        raise NotImplementedError(f"{type(self).__name__} does not choose by a count")

    @property
    def picks_first_least(self) -> bool:
        """Whether :meth:`choose_by_count` is :func:`choose_first_least`: the first position
        of the smallest count, with no state of the router's read or changed, so a driver
        may find that position in its own loop instead of asking."""
        return type(self).choose_by_count is choose_first_least

    @property
    def count_key_without_content(self) -> CountKey | None:
        """:attr:`count_key` for requests that carry no prompt content (no block ids):
        a router that reads the content otherwise (a prefix router) may compare loads
        alone without it. The default: :attr:`count_key`."""
        return self.count_key

    @property
    def count_key_with_prompt(self) -> CountKey | None:
        """For requests that carry prompt content (block ids): the one count per candidate
        that, with the request's chained block keys, prompt length and block size and the
        candidates' ids, is all :meth:`choose` reads (a prefix router that compares loads
        by that count and keeps its own index of what went where). ``None`` (the default):
        more than that. A driver that keeps those counts may then ask
        :meth:`choose_by_prompt`."""
        return None

    def choose_by_prompt(
        self,
        counts: Sequence[int],
        ids: Sequence[InstanceId],
        keys: Sequence[int],
        prompt_tokens: int,
        block_tokens: int,
    ) -> int:
        """The position :meth:`choose` would pick among candidates (at least two, healthy,
        no in-flight cap) with ids ``ids`` whose :attr:`count_key_with_prompt` values are
        ``counts``, for a request of ``prompt_tokens`` whose blocks of ``block_tokens``
        have the chained keys ``keys`` (:func:`sincere.core.prefix.chain_keys`, one per
        block, a partial last block's included), and the router's state after it -- no
        request object, no view. Only asked when :attr:`counts_by_with_prompt` is not
        ``None``; ``counts``, ``ids`` and ``keys`` are read, never kept or changed."""
        raise NotImplementedError(f"{type(self).__name__} does not choose by a prompt's keys")

    @property
    def counts_by(self) -> CountKey | None:
        """:attr:`count_key`, when the class that defines :meth:`choose` also defines
        :meth:`choose_by_count` (a subclass that overrides only ``choose`` chooses by the
        views again); else ``None``."""
        return self.count_key if self._chooses_by("choose_by_count") else None

    @property
    def counts_by_without_content(self) -> CountKey | None:
        """:attr:`counts_by` for requests without prompt content
        (:attr:`count_key_without_content`)."""
        return self.count_key_without_content if self._chooses_by("choose_by_count") else None

    @property
    def counts_by_with_prompt(self) -> CountKey | None:
        """:attr:`count_key_with_prompt`, when the class that defines :meth:`choose` also
        defines :meth:`choose_by_prompt`; else ``None``."""
        return self.count_key_with_prompt if self._chooses_by("choose_by_prompt") else None

    def _chooses_by(self, method: str) -> bool:
        """Whether the class that defines :meth:`choose` also defines ``method`` (a shortcut
        that answers as ``choose`` does)."""
        cls = type(self)
        by = next(c for c in cls.__mro__ if method in c.__dict__)
        return by is not Router and by.__dict__.get("choose") is cls.choose

    @property
    def reads(self) -> Reads:
        """What :meth:`choose` and :meth:`observe` depend on (:class:`Reads`), the one
        declaration a driver plans its shortcuts by: engine-reported load (rather than
        only an instance's fixed fields and ``num_outstanding``, the driver's own count),
        token counts exact at the decision, outcomes (whether :meth:`observe` is
        overridden), and whether the answers are oblivious (from the candidates' ids and
        order, the requests asked about so far and the router's generator alone: a
        simulator may then route every request first and run each instance apart).
        Default: reads load, and tokens unless :attr:`reads_exact_tokens` says otherwise;
        not oblivious -- the safe side."""
        return Reads(tokens=self.reads_exact_tokens, outcomes=self.learns_from_outcomes)


def choose_first_least(router: Router, counts: Sequence[int]) -> int:
    """:meth:`Router.choose_by_count` of a router that picks the fewest by its count, the
    first in order on ties (what ``min`` over the views keeps): two passes in C over the
    list of ints, no key call per candidate."""
    return counts.index(min(counts))


def healthy(instances: Sequence[InstanceView]) -> list[InstanceView]:
    """The instances marked healthy, in their given order."""
    return [v for v in instances if v.healthy]


def utilisation(view: InstanceView) -> float:
    """Busy share of an instance: the larger of KV usage and batch-slot occupancy (0..).

    With KV usage unknown, the occupancy alone (the gateway knows what it sent).
    """
    slots = view.num_outstanding / max(view.max_num_seqs, 1)
    return slots if view.kv_usage is None else max(view.kv_usage, slots)


def no_instance(instances: Sequence[InstanceView]) -> RouteDecision:
    """The rejection a router returns when no instance can take the request."""
    return RouteDecision(None, reason=f"no healthy instance among {len(instances)}")


RNG = Needs("rng", np.random.Generator, "a seeded numpy random Generator")
"""The collaborator every router is handed: its source of randomness."""

ROUTERS: Registry[type[Router]] = Registry("router", needs=(RNG,))
"""Router classes by name (``random``, ``round-robin``, ...). Import
:mod:`sincere.policy.routers` to fill it."""
