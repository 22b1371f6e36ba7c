"""The contract between an engine and whatever drives it (simulator or emulator).

An engine owns its queues and its model state and never reads a clock: the driver
passes ``now`` in. The driver's loop is

1. ``engine.add(i, now)`` when request ``i`` is routed to it;
2. ``engine.next_event_at()`` to know when to call back (``None`` when idle);
3. ``engine.advance(now)`` at that time: the engine applies every piece of work
   that completes by ``now``, writes outcomes into the shared
   :class:`~sincere.core.records.RecordArrays`, and returns the positions of
   requests that finished or were rejected since the last call.

``load()`` is a cheap read-only summary the routers see (:class:`EngineLoad`, the one
load record both paths build router views from), ``queue_sizes()`` three of its fields
alone; ``stats()`` the run's totals.

Every engine also answers, so no driver has to probe for them:

* ``drain(now)`` -- no more requests will arrive: serve whatever is held back (a
  request-level strategy waiting for a full batch); a no-op for engines that never hold
  requests back, which say so with ``holds_back`` false;
* ``gaps`` -- inter-token gaps per tier (empty for engines whose answers come whole);
* ``configure(exact_loads=..., inner_ends=...)`` -- how the driver's readers need the
  engine's work cut into events, said once before the run: ``exact_loads`` -- a router
  reads ``load()`` between any two iterations, so the engine must end an event at each (no
  multi-iteration shortcuts between reads); ``inner_ends`` -- nothing reads ``load()``
  between events, but the driver sums over time as if every iteration were an event: the
  engine may run identical iterations as one piece, adds its own sums iteration by
  iteration, and appends the end of each iteration inside a piece (but its last) to
  ``inner_ends`` when the piece starts. Neither: the engine cuts its work as it likes;
* ``progress_at(now)`` -- how far a closed-form decode run in flight got by ``now`` (its
  token counts and KV usage move on between events; a driver reading token counts at
  an arrival advances the load by it);
* ``kv_intake`` -- the engine's intake of KV prefilled on another instance (a
  :class:`KvIntake`, what a decode instance of prefill/decode disaggregation needs), or
  ``None`` for an engine that takes none: an optional capability, declared rather than
  found by the engine's class;
* ``max_model_len`` -- the longest prompt plus ``max_tokens`` it serves (``None``: no
  context limit modelled), for the messages that explain context rejections;
* ``batch_log()`` -- every batch a request-level engine ran (start, end, model, size,
  swap), ``None`` for engines that run iterations instead;
* ``rejection_detail(i, reason)`` -- why request ``i`` was rejected, with its numbers
  (``None``: the reason says it all).

:class:`EngineBase` holds the defaults of the optional parts (no-op drain, no gaps, no
intake, no batch log...): an engine derives from it and overrides what it has, so a
new optional part is added once, with its default, and no driver asks an engine for its
class.

Lazy reads. An engine reads request ``i``'s fields from the run's
:class:`~sincere.core.request.RequestArrays` at ``add(i, now)`` or later, never at
construction (it keeps references to the columns, not copies). So a live driver may
preallocate RequestArrays of capacity N (placeholder values) and fill slot ``i`` in
place just before calling ``add(i, now)``.

Live driving (the emulator) needs a :class:`StreamingEngine` (such as
:class:`~sincere.engine.continuous.ContinuousEngine`): it also has ``on_tokens`` (a
callback ``(iteration_end_at, positions)`` after every iteration, which then runs one
iteration per event) and ``abort(i, now) -> bool`` (cancel a waiting or running
request; it comes back from ``advance`` as rejected, reason ``"aborted"``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from sincere.core.types import InstanceId, Seconds
from sincere.engine.gaps import GapHistogram
from sincere.engine.kv_tiers import KvTierStats

if TYPE_CHECKING:
    from sincere.engine.batch_log import BatchLog

TokenHook = Callable[[Seconds, list[int]], None]
"""``on_tokens(iteration_end_at, positions)``: requests that produced a token, in order."""


@dataclass(frozen=True, slots=True)
class EngineLoad:
    """An engine's load at one moment: every dynamic field a router reads.

    Engines fill every field. The same record carries what a live driver learns from a
    backend, where a field the backend cannot report is ``None`` (unknown, never 0).
    """

    num_running: int | None  # sequences in the running batch
    num_waiting: int | None  # requests queued at the engine, not yet started
    waiting_prefill_tokens: int | None  # prompt tokens still to compute for queued requests
    running_remaining_tokens: int | None  # decode tokens still due for running sequences
    running_ctx_tokens: int | None  # context tokens (cached) of the running sequences, summed
    kv_usage: float | None  # fraction of KV blocks in use, 0..1
    busy_s: Seconds | None  # total time spent computing so far
    resident_model: str | None = None  # model on the device (request-level engines)
    # cumulative prompt tokens looked up in / found in the prefix cache (vLLM's
    # prefix_cache_queries / prefix_cache_hits); None: no prefix cache or not reported
    prefix_cache_queries: int | None = None
    prefix_cache_hits: int | None = None


@dataclass(frozen=True, slots=True)
class DecodeProgress:
    """Decode iterations of a run in flight that have ended since the engine's last event.

    Between two events an engine's :meth:`Engine.load` is the state at the last one; a
    closed-form decode run advances every running sequence by one token per iteration,
    so the token counts and KV usage move on without an event.
    """

    steps: int  # decode iterations ended since the last event
    num_decode: int  # sequences each of them advanced by one token
    kv_usage: float  # fraction of KV blocks in use after them


@dataclass(frozen=True, slots=True)
class SpecDecodeStats:
    """Speculative decoding's counters over a run (vLLM's ``vllm:spec_decode_*``)."""

    num_drafts: int  # sequences' speculative steps (one draft of k tokens each)
    num_draft_tokens: int  # tokens drafted
    num_accepted_tokens: int  # of those, accepted by the verify pass
    accepted_per_pos: tuple[int, ...]  # accepted drafts at drafted position 1, 2, ..., k

    @staticmethod
    def total(counts: Sequence[SpecDecodeStats]) -> SpecDecodeStats:
        """The counters of ``counts`` (engines or ranks; at least one) summed; drafts of
        different lengths are summed position by position."""
        width = max(len(c.accepted_per_pos) for c in counts)
        per_pos = tuple(
            sum(c.accepted_per_pos[j] for c in counts if j < len(c.accepted_per_pos))
            for j in range(width)
        )
        return SpecDecodeStats(
            sum(c.num_drafts for c in counts),
            sum(c.num_draft_tokens for c in counts),
            sum(c.num_accepted_tokens for c in counts),
            per_pos,
        )


@dataclass(frozen=True, slots=True)
class EngineStats:
    """Totals over a run, for utilisation and switch-count metrics."""

    busy_s: Seconds  # time spent computing (iterations or request-level batches)
    swap_s: Seconds  # time spent loading and unloading models
    num_steps: int  # iterations (continuous batching) or batches (request level) run
    num_swaps: int  # model loads
    num_preemptions: int  # sequences preempted (recomputed later)
    num_generated_tokens: int  # output tokens produced
    prefix_cache_queries: int = 0  # prompt tokens looked up in the prefix cache
    prefix_cache_hits: int = 0  # of those, tokens served from it
    prefix_cache_evictions: int = 0  # cached blocks evicted
    kv_tiers: KvTierStats | None = None  # KV offload tiers' counters; None: no tiers
    spec_decode: SpecDecodeStats | None = None  # None: the engine does not speculate


class Engine(Protocol):
    """One inference engine, as the simulator and emulator drive it."""

    id: InstanceId

    def add(self, request_ix: int, now: Seconds) -> None:
        """Accept request ``request_ix`` (a position in the run's RequestArrays)."""
        ...

    def next_event_at(self) -> Seconds | None:
        """When the engine next needs ``advance``; ``None`` when it has nothing to do."""
        ...

    def advance(self, now: Seconds) -> list[int]:
        """Apply all work completing by ``now``; return requests finished or rejected."""
        ...

    def load(self) -> EngineLoad:
        """Current load summary."""
        ...

    def queue_sizes(self) -> tuple[int, int, int]:
        """``(num_running, num_waiting, waiting_prefill_tokens)`` as ``load()`` reports
        them: what the simulator's records keep at an arrival, without the whole report."""
        ...

    def stats(self) -> EngineStats:
        """Totals so far."""
        ...

    def drain(self, now: Seconds) -> None:
        """No more requests will arrive: serve every request held back from now on."""
        ...

    @property
    def holds_back(self) -> bool:
        """Whether ``drain`` may serve anything: the engine can hold requests back with no
        event pending (a request-level batch waiting to fill). When none can, a driver
        need not know when the whole run's arrivals end to finish one engine's work."""
        ...

    @property
    def gaps(self) -> Sequence[GapHistogram]:
        """Inter-token gaps per tier of the run's requests (empty: not modelled)."""
        ...

    def configure(
        self, *, exact_loads: bool = False, inner_ends: list[float] | None = None
    ) -> None:
        """How to cut work into events (module docstring): ``exact_loads``, one event per
        iteration; ``inner_ends``, pieces of identical iterations summed iteration by
        iteration, their inner ends reported there. Raises ``ValueError`` given both."""
        ...

    def progress_at(self, now: Seconds) -> DecodeProgress | None:
        """How far a decode run in flight got by ``now`` since the last event (``None``:
        the load has not changed since, e.g. no decode run, or an engine without them)."""
        ...

    def progress_until(self, now: Seconds) -> tuple[DecodeProgress | None, Seconds]:
        """:meth:`progress_at` ``now``, and the time before which it stays the same for
        any later time as long as the engine has no event and takes no request."""
        ...

    @property
    def kv_intake(self) -> KvIntake | None:
        """Its intake of KV prefilled elsewhere; ``None``: it takes none."""
        ...

    @property
    def max_model_len(self) -> int | None:
        """Longest prompt plus ``max_tokens`` it serves (``None``: no limit modelled)."""
        ...

    def batch_log(self) -> BatchLog | None:
        """Every batch run so far (``None``: an engine of iterations, not batches)."""
        ...

    def rejection_detail(self, request_ix: int, reason: str) -> str | None:
        """Why request ``request_ix`` was rejected for ``reason``, with its numbers."""
        ...

    def take_tier_loaded_tokens(self, request_ix: int) -> tuple[int, int]:
        """Prompt tokens request ``request_ix``'s first load brought back from the CPU and
        the disk KV tier (part of its prefix hit), taken once (then ``(0, 0)``); a live
        driver's engine keeps them (a simulator's does not)."""
        ...


class EngineBase:
    """The defaults of an :class:`Engine`'s optional parts; an engine overrides what it has.

    A plain class with no state of its own (compiled engines derive from it too).
    """

    def drain(self, now: Seconds) -> None:
        """Nothing held back: nothing to serve."""

    @property
    def holds_back(self) -> bool:
        """No: every request it takes is worked on without waiting for more."""
        return False

    @property
    def gaps(self) -> Sequence[GapHistogram]:
        """None: every answer comes back whole (no inter-token gaps)."""
        return ()

    def configure(
        self, *, exact_loads: bool = False, inner_ends: list[float] | None = None
    ) -> None:
        """Nothing to cut: every piece of work is one event, with no iterations inside."""
        check_pacing(exact_loads, inner_ends)

    def progress_at(self, now: Seconds) -> DecodeProgress | None:
        """None: the load changes only at events."""
        return None

    def progress_until(self, now: Seconds) -> tuple[DecodeProgress | None, Seconds]:
        """:meth:`progress_at` ``now``; promised for ``now`` only (subclasses that know
        more say how long it lasts)."""
        return self.progress_at(now), now

    @property
    def kv_intake(self) -> KvIntake | None:
        """None: it takes no KV prefilled elsewhere."""
        return None

    @property
    def max_model_len(self) -> int | None:
        """None: no context limit is modelled."""
        return None

    def batch_log(self) -> BatchLog | None:
        """None: it runs no batches of whole requests."""
        return None

    def rejection_detail(self, request_ix: int, reason: str) -> str | None:
        """None: the reason says it all."""
        return None

    def take_tier_loaded_tokens(self, request_ix: int) -> tuple[int, int]:
        """(0, 0): no KV tiers below the GPU."""
        return (0, 0)


def check_pacing(exact_loads: bool, inner_ends: list[float] | None) -> None:
    """:meth:`Engine.configure`'s two modes exclude each other: ``ValueError`` given both."""
    if exact_loads and inner_ends is not None:
        raise ValueError(
            "configure: exact_loads (an event per iteration) and inner_ends (pieces of "
            "several iterations) exclude each other; give one or neither"
        )


class KvIntake(Protocol):
    """An engine's intake of requests prefilled on another instance (P/D disaggregation):
    their KV arrives, waits for room, and joins the decode batch."""

    def add_prefilled(self, request_ix: int, now: Seconds, kv_tokens: int) -> None:
        """Take request ``request_ix``, whose ``kv_tokens`` tokens of KV have arrived."""
        ...

    @property
    def kv_admitted(self) -> list[tuple[int, Seconds]]:
        """``(request, time)`` of each start of decoding of such a request, in order,
        since the driver last cleared this list (the time its client gets its first
        token)."""
        ...


class StreamingEngine(Engine, Protocol):
    """An engine a live driver can stream from and cancel requests on."""

    on_tokens: TokenHook | None  # called after every iteration; set: one iteration per event

    def abort(self, request_ix: int, now: Seconds) -> bool:
        """Cancel a waiting or running request; whether the engine held it."""
        ...
