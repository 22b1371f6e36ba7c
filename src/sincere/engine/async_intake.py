"""New requests under asynchronous scheduling: they join one iteration later.

An engine that schedules iteration ``n + 1`` while iteration ``n`` runs on the GPU (vLLM
V1's async scheduling, SGLang's and TensorRT-LLM's overlap schedulers) takes new requests
from its input queue between iterations, after the next one is already planned: a request
that arrives while iteration ``n`` runs is seen when ``n`` ends and scheduled into ``n + 2``
(``n + 1`` is already on its way). The published vLLM 0.19 runs show the first half: for
72-263 of each run's 300 requests ``queued_ts`` falls within 0.01 ms of another request's
step event (its first token or its scheduling), not at its arrival.

:class:`AsyncIntake` holds such a request until it may be scheduled: at the start of an
iteration, the requests that arrived before the previous iteration began are released. An
engine that is idle polls at once, so a request that finds it idle is never held.

An engine that polls only every ``N`` decode-only iterations (SGLang's
``--scheduler-recv-interval N``; ``recv_interval`` of the engine's execution model) holds a
request that arrives during a run of decodes until the next poll: the end of the iteration
that completes ``N`` decode-only iterations since the last poll. Any iteration that
prefilled polls at its end (SGLang weighs it above any interval), and so does an idle engine.
With ``N = 1`` every iteration polls, as above.

An engine that *waits to batch* new prompts (TensorRT-LLM's ``batch_wait_timeout_iters
K``; ``batch_wait_iters`` of the execution model) holds them while it runs: the first
prompt that finds nothing held starts a count, and every prompt held by then is seen at
the poll ``K`` iterations after the iteration it arrived in (prefill or decode alike), all
together; the next prompt to find nothing held starts the count again. An idle engine
polls at once, as above. (TensorRT-LLM also stops waiting once the scheduled tokens reach
``batch_wait_max_tokens_ratio`` of its token budget; that condition is not modelled.)
"""

from __future__ import annotations

from collections.abc import Callable

from sincere.core.types import Seconds
from sincere.engine.runs import DecodeStepsTime, Run, RunPlanner
from sincere.engine.view import StateView


class AsyncIntake:
    """Requests waiting to be seen by an asynchronously scheduling engine, in arrival order."""

    __slots__ = (
        "_held",
        "_polled_at_start",
        "_since_poll",
        "_wait_left",
        "poll_every",
        "seen_by",
        "tokens",
        "wait_iters",
    )

    def __init__(self, poll_every: int = 1, wait_iters: int = 0) -> None:
        self._held: list[tuple[int, int, Seconds]] = []  # (request, prefill tokens, arrival)
        self.tokens = 0  # prefill tokens of the held requests
        self.seen_by: Seconds = float("-inf")  # the poll the next iteration was planned after
        self.poll_every = poll_every  # decode-only iterations between two polls
        self.wait_iters = wait_iters  # iterations a batch-waiting engine holds prompts (0: no)
        self._since_poll = 0  # decode-only iterations since the last poll
        self._polled_at_start = True  # the engine polled as the run in flight began
        # batch waiting: iterations of the run in flight after which the held prompts are
        # seen (counted from its first iteration; meaningful while any is held)
        self._wait_left = 0

    def __len__(self) -> int:
        return len(self._held)

    def __contains__(self, request_ix: object) -> bool:
        return any(i == request_ix for i, _, _ in self._held)

    def hold(self, request_ix: int, prefill_len: int, now: Seconds) -> None:
        """Hold ``request_ix`` (``prefill_len`` tokens to prefill), arrived at ``now``."""
        self._held.append((request_ix, prefill_len, now))
        self.tokens += prefill_len

    def release(self, seen_by: Seconds) -> list[tuple[int, int]]:
        """Every request that arrived before ``seen_by`` (the start of the iteration before
        the one being planned, when the engine last polled): ``(request, prefill tokens)``,
        in arrival order. One arriving at that very moment (a closed-loop client's next
        request, sent as its last one ends) missed that poll: it waits for the next."""
        held = self._held
        k = 0
        while k < len(held) and held[k][2] < seen_by:
            k += 1
        out = [(i, n) for i, n, _ in held[:k]]
        del held[:k]
        for _, n in out:
            self.tokens -= n
        return out

    def release_all(self) -> list[tuple[int, int]]:
        """Every held request (the engine went idle: it polls at once)."""
        out = [(i, n) for i, n, _ in self._held]
        self._held.clear()
        self.tokens = 0
        return out

    def take(self, request_ix: int) -> tuple[int, int] | None:
        """Remove ``request_ix`` (an abort); ``(request, prefill tokens)`` or None."""
        for k, (i, n, _) in enumerate(self._held):
            if i == request_ix:
                del self._held[k]
                self.tokens -= n
                return i, n
        return None

    # --- the engine's side ---------------------------------------------------------------
    def _next_poll(self, after: int) -> int:
        """The first iteration ``j >= after`` of the decode run in flight whose end is a
        poll (``after`` >= 1)."""
        n = self.poll_every
        return after + (n - (self._since_poll + after) % n) % n

    def arrive(
        self, i: int, prompt: int, now: Seconds, run: Run, f: DecodeStepsTime, room: bool
    ) -> None:
        """``i`` arrived while ``run`` is in flight: held, and a decode run cut after the
        iteration that follows the poll that sees it (when the batch has ``room``)."""
        if self.wait_iters:
            self._arrive_waiting(i, prompt, now, run, f, room)
            return
        self.hold(i, prompt, now)
        if room and not (run.chunks or run.durations) and run.steps > 1:
            run.cut_decode(self._next_poll(run.steps_covering(now, f)) + 1, f)

    def _arrive_waiting(
        self, i: int, prompt: int, now: Seconds, run: Run, f: DecodeStepsTime, room: bool
    ) -> None:
        """:meth:`arrive` for a batch-waiting engine: the first prompt held starts the count
        (the poll ``wait_iters`` iterations after the one in flight)."""
        if not self._held:
            if run.durations:
                at = run.iteration_covering(now)[0]
            else:  # a decode run, or a piece of one iteration
                at = 1 if run.chunks else run.steps_covering(now, f)
            self._wait_left = at + self.wait_iters
        self.hold(i, prompt, now)
        if room and not (run.chunks or run.durations) and self._wait_left < run.steps:
            run.cut_decode(self._wait_left + 1, f)

    def _ended_waiting(self, run: Run, f: DecodeStepsTime) -> None:
        """:meth:`ended` for a batch-waiting engine: the held prompts are seen at the end of
        the iteration their count reaches, if this piece holds it; else the count goes on."""
        if not self._held:
            self.seen_by = run.last_iteration_start(f)
            return
        poll = self._wait_left
        if poll >= run.steps:  # not reached in this piece: carry the rest over
            self._wait_left = poll - run.steps
            return
        if poll <= 0:
            seen = run.start_at
        elif run.durations:
            seen = run.start_at + sum(run.durations[:poll])
        else:
            seen = run.start_at + f(run.num_decode, run.ctx_tokens, poll)
        self.seen_by = seen
        # prompts held after that poll start a count of their own with the next piece
        later = any(at >= seen for _, _, at in self._held)
        self._wait_left = self.wait_iters if later else 0

    def ended(self, run: Run, f: DecodeStepsTime) -> None:
        """``run`` ended: the next iteration was planned after the last poll by the end of
        its second-to-last iteration (every iteration's end when ``poll_every`` is 1: the
        start of its last iteration)."""
        if self.wait_iters:
            self._ended_waiting(run, f)
            return
        if run.chunks or run.durations or self.poll_every == 1:
            self.seen_by = run.last_iteration_start(f)
            self._since_poll, self._polled_at_start = 0, True
            return
        n, steps = self.poll_every, run.steps
        before_last = steps - 1  # iterations that ended before the last one began
        last = before_last - (self._since_poll + before_last) % n
        if last >= 1:
            self.seen_by = run.start_at + f(run.num_decode, run.ctx_tokens, last)
        elif self._polled_at_start:
            self.seen_by = run.start_at
        total = self._since_poll + steps
        self._since_poll = total % n
        self._polled_at_start = self._since_poll == 0

    def before_planning(self, planner: RunPlanner, view: StateView) -> None:
        """Queue the requests seen by the last poll."""
        for i, prompt in self.release(self.seen_by):
            planner.enqueue(view, i, prompt)

    def after_planning(
        self,
        run: Run | None,
        plan: Callable[[], Run | None],
        planner: RunPlanner,
        view: StateView,
        f: DecodeStepsTime,
    ) -> Run | None:
        """Requests still held: with nothing to run the engine would idle and poll at once,
        so they are queued and ``plan`` asked again; a decode run is cut after one
        iteration so that they join the next."""
        if not self._held:
            return run
        if run is None:
            self._since_poll, self._polled_at_start = 0, True  # idle: it polls at once
            self._wait_left = 0
            for i, prompt in self.release_all():
                planner.enqueue(view, i, prompt)
            return plan()
        if not (run.chunks or run.durations) and run.steps > 1:
            if self.wait_iters:
                seen = self._wait_left
            else:
                seen = 0 if self._polled_at_start else self._next_poll(1)
            run.cut_decode(seen + 1, f)
        return run
