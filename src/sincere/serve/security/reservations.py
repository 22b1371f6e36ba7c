"""Admission and settlement: what each admitted request holds until it is settled.

:meth:`Reservations.admit` checks a key's requests-per-minute and tokens-per-minute
windows and its budget and, only if all three allow, records the request and *reserves*
its worst case: ``prompt_tokens + max_tokens`` in the tokens window and their price at the
dearest instance's prices against the budget. :meth:`Reservations.settle` replaces the
reservation by what the request used (its actual tokens at the prices of the instance that
served it) and leaves that usage pending for the :class:`~.usage_writer.UsageWriter`. Both
are synchronous, with no ``await`` between check and record, so the asyncio tasks of one
process cannot interleave inside them: a budget is never over-spent by requests in
flight, only by a request whose actual usage exceeds what it reserved.

With shared state (a :class:`~sincere.serve.security.ledger.SharedLedger`) Redis decides
admission and holds the windows, reservations and spend: each admission is one atomic
script (:meth:`Reservations.admit_async`) that also applies this process's settlements
made since the last one (:meth:`Reservations.settle` defers them:
:mod:`~sincere.serve.security.settlements`); :meth:`Reservations.settle_async` sends its
settlement at once and returns when Redis applied it. Redis unreachable, a 503
``state_store_unavailable`` refusal with ``Retry-After``.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

from sincere.serve.security.keybook import KeyBook, KeyState
from sincere.serve.security.keys import KeyRecord, KeySpec, Prices
from sincere.serve.security.ledger import SharedLedger
from sincere.serve.security.metrics import TenantMetrics
from sincere.serve.security.settlements import Settlement
from sincere.serve.security.shared import (
    Admitted,
    KeyLimits,
    RedisState,
    Refused,
    StateUnavailableError,
)
from sincere.serve.security.storage import Totals
from sincere.serve.security.usage_writer import UsageWriter

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Reservation:
    """What one admitted request holds until it is settled."""

    number: int  # the store's sequence number of this reservation
    key_id: str
    tenant: str
    reserved_usd: float  # worst-case cost held against the budget
    reserved_tokens: int  # prompt + max_tokens held in the tokens-per-minute window
    tokens_bucket: int | None  # the window bucket holding them; None: no tokens limit
    made_at: float  # when it was admitted (the caller's clock)


@dataclass(frozen=True, slots=True)
class LimitRefusal:
    """Why a key's limits or budget refused a request."""

    status: int  # 429 (rate), 402 (budget) or 503 (shared state store unreachable)
    code: str  # requests_per_minute_exceeded, tokens_per_minute_exceeded, budget_exhausted
    message: str  # names the limit, the amounts and what would help
    retry_after_s: float | None  # when a retry can succeed; None: not by waiting
    remaining_usd: float | None  # budget left; None: the key has no budget


class Reservations:
    """Admits requests against their key's limits and budget; settles what they used."""

    def __init__(
        self,
        book: KeyBook,
        writer: UsageWriter,
        metrics: TenantMetrics | None,
        shared: RedisState | None = None,
        ledger: SharedLedger | None = None,
    ) -> None:
        self.book = book  # the keys' states: windows, reservations, spend
        self.writer = writer  # whose flush batch a shared settlement names
        self.metrics = metrics  # told of every settlement (None: no tenant metrics)
        self.shared = shared  # None: windows, reservations and spend in this process
        self.ledger = ledger  # the shared books' side of this process (with ``shared``)
        self._remaining: dict[str, float | None] = {}  # shared: budget left at last admit
        self._settling: set[asyncio.Task[None]] = set()  # settlements on their way to Redis
        self._open: dict[int, Reservation] = {}  # admitted, not yet settled
        self._num_reservations = 0

    @property
    def num_open(self) -> int:
        """Reservations admitted and not yet settled."""
        return len(self._open)

    def admit(
        self, record: KeyRecord, prompt_tokens: int, max_tokens: int, prices: Prices, now: float
    ) -> Reservation | LimitRefusal:
        """Check limits and budget; if all allow, record the request and reserve its worst case."""
        state = self.book.states[record.key_id]
        amount = prompt_tokens + max_tokens
        if self.shared is not None:
            return self._run(self.admit_async(record, prompt_tokens, max_tokens, prices, now))
        refusal = _rate_refusal(state, now, amount)
        if refusal is not None:
            return refusal
        cost = prices.cost_usd(prompt_tokens, max_tokens)
        remaining = state.remaining_usd()
        if remaining is not None and (remaining <= 0 or cost > remaining):
            return _budget_refusal(remaining, cost, prompt_tokens, max_tokens)
        if state.requests is not None:
            state.requests.add(now, 1)
        bucket = None if state.tokens is None else state.tokens.add(now, amount)
        state.reserved_usd += cost
        self.book.changed(state)
        self._num_reservations += 1
        reservation = Reservation(
            self._num_reservations, record.key_id, record.name, cost, amount, bucket, now
        )
        self._open[reservation.number] = reservation
        return reservation

    async def admit_async(
        self, record: KeyRecord, prompt_tokens: int, max_tokens: int, prices: Prices, now: float
    ) -> Reservation | LimitRefusal:
        """:meth:`admit`; with shared state the Redis call is awaited, not blocking the loop."""
        if self.ledger is None:
            return self.admit(record, prompt_tokens, max_tokens, prices, now)
        state, spec = self.book.states[record.key_id], record.spec
        limits = KeyLimits(
            record.key_id, spec.max_requests_per_min, spec.max_tokens_per_min, spec.budget_usd
        )
        amount, cost = prompt_tokens + max_tokens, prices.cost_usd(prompt_tokens, max_tokens)
        self._num_reservations += 1
        number = self._num_reservations
        try:
            got = await self.ledger.admit(limits, amount, cost, self._rid(number), now)
        except StateUnavailableError as exc:
            return LimitRefusal(503, "state_store_unavailable", str(exc), exc.retry_after_s, None)
        return self._shared_answer(got, state, prompt_tokens, max_tokens, cost, now, number)

    def _rid(self, number: int) -> str:
        """A reservation's id in Redis: this process's id and its number."""
        assert self.ledger is not None
        return f"{self.ledger.process_id}:{number}"

    def _shared_answer(
        self,
        got: Admitted | Refused,
        state: KeyState,
        prompt_tokens: int,
        max_tokens: int,
        cost: float,
        now: float,
        number: int,
    ) -> Reservation | LimitRefusal:
        record, spec = state.record, state.record.spec
        amount = prompt_tokens + max_tokens
        if not isinstance(got, Admitted):
            return _shared_refusal(got.limit, spec, amount, got.retry_after_s, got.remaining_usd,
                                   cost, prompt_tokens, max_tokens)  # fmt: skip
        self._remaining[record.key_id] = got.remaining_usd
        state.reserved_usd += cost  # this process's share, for the gauges (Redis decides)
        self.book.changed(state)
        bucket = got.bucket if spec.max_tokens_per_min is not None else None
        reservation = Reservation(number, record.key_id, record.name, cost, amount, bucket, now)
        self._open[reservation.number] = reservation
        return reservation

    def settle(
        self,
        reservation: Reservation,
        prompt_tokens: int,
        completion_tokens: int,
        prices: Prices,
    ) -> float:
        """Replace a reservation by actual usage at the serving instance's prices; its cost."""
        if self._open.pop(reservation.number, None) is None:
            raise ValueError(f"reservation {reservation.number} is not open (settled twice?)")
        cost = self._settle_here(reservation, prompt_tokens, completion_tokens, prices)
        if self.ledger is not None:
            item = self._shared_item(reservation, (prompt_tokens, completion_tokens), cost)
            try:
                asyncio.get_running_loop()
            except RuntimeError:
                self._run(self.ledger.send(item))
            else:  # the next admission carries it to Redis (or a flush within settle_within_s)
                self.ledger.defer(item)
        return cost

    def _settle_here(
        self, reservation: Reservation, prompt_tokens: int, completion_tokens: int, prices: Prices
    ) -> float:
        """This process's side of a settlement: usage pending for the flush, windows, gauges."""
        state = self.book.states[reservation.key_id]
        cost = prices.cost_usd(prompt_tokens, completion_tokens)
        delta = Totals(cost, 1, prompt_tokens, completion_tokens)
        state.totals += delta
        state.pending += delta
        state.reserved_usd = max(0.0, state.reserved_usd - reservation.reserved_usd)
        self.book.changed(state)
        local = state.tokens if self.ledger is None else None  # shared: Redis holds windows
        if local is not None and reservation.tokens_bucket is not None:
            used = prompt_tokens + completion_tokens
            local.adjust(reservation.tokens_bucket, used - reservation.reserved_tokens)
        if self.metrics is not None:
            self.metrics.settled(reservation.tenant, prompt_tokens, completion_tokens, cost)
        return cost

    def _shared_item(
        self, reservation: Reservation, used: tuple[int, int], cost: float
    ) -> Settlement | None:
        """The ledger's part, decided now (right after the usage became pending: a rebuild
        of Redis's books either counts it there or gets it from here, never both)."""
        assert self.ledger is not None
        return self.ledger.settle(
            reservation.key_id, self._rid(reservation.number), cost, reservation.tokens_bucket,
            sum(used) - reservation.reserved_tokens, reservation.made_at, self.writer.batch, used,
        )  # fmt: skip

    async def settle_async(
        self,
        reservation: Reservation,
        prompt_tokens: int,
        completion_tokens: int,
        prices: Prices,
    ) -> float:
        """:meth:`settle`; with shared state the Redis call is awaited (done when it returns)."""
        if self.ledger is None:
            return self.settle(reservation, prompt_tokens, completion_tokens, prices)
        if self._open.pop(reservation.number, None) is None:
            raise ValueError(f"reservation {reservation.number} is not open (settled twice?)")
        cost = self._settle_here(reservation, prompt_tokens, completion_tokens, prices)
        item = self._shared_item(reservation, (prompt_tokens, completion_tokens), cost)
        task = asyncio.get_running_loop().create_task(self.ledger.send(item))
        self._settling.add(task)
        task.add_done_callback(self._settling.discard)
        # shielded: a caller cancelled meanwhile must not leave the reservation held in Redis
        await asyncio.shield(task)
        return cost

    def _run(self, call: Coroutine[Any, Any, T]) -> T:
        """Run a shared-state call to the end from synchronous code (no loop running)."""
        shared = self.shared
        assert shared is not None

        async def run() -> T:
            try:
                return await call
            finally:
                await shared.aclose()  # its connections belong to this loop

        return asyncio.run(run())

    async def drain(self) -> None:
        """Send deferred settlements, wait for those under way (before the loop stops); close
        the loop's client."""
        while self._settling:
            await asyncio.gather(*list(self._settling), return_exceptions=True)
        if self.ledger is not None:
            await self.ledger.drain()
        if self.shared is not None:
            await self.shared.aclose()

    def remaining_usd(self, key_id: str) -> float | None:
        """Budget left after spend and reservations; ``None``: the key has no budget.

        With shared state: as Redis said at this key's last admission in this process.
        """
        if self.shared is not None:
            return self._remaining.get(key_id)
        return self.book.states[key_id].remaining_usd()


def _rate_refusal(state: KeyState, now: float, amount: int) -> LimitRefusal | None:
    spec = state.record.spec
    if state.requests is not None:
        wait = state.requests.retry_after_s(now, 1)
        if wait is not None:
            message = (
                f"requests per minute: the key's limit is {spec.max_requests_per_min}; "
                f"retry after {wait:.1f} s"
            )
            return LimitRefusal(429, "requests_per_minute_exceeded", message, wait, None)
    if state.tokens is not None:
        wait = state.tokens.retry_after_s(now, amount)
        if wait is not None:
            limit = spec.max_tokens_per_min
            if wait == float("inf"):
                message = (
                    f"tokens per minute: this request needs {amount} tokens (prompt + "
                    f"max_tokens), more than the key's limit of {limit}; lower max_tokens"
                )
                return LimitRefusal(429, "tokens_per_minute_exceeded", message, None, None)
            message = (
                f"tokens per minute: the key's limit is {limit}, this request needs {amount} "
                f"(prompt + max_tokens); retry after {wait:.1f} s"
            )
            return LimitRefusal(429, "tokens_per_minute_exceeded", message, wait, None)
    return None


def _shared_refusal(
    limit: str,
    spec: KeySpec,
    amount: int,
    retry_after_s: float | None,
    remaining: float | None,
    cost: float,
    prompt_tokens: int,
    max_tokens: int,
) -> LimitRefusal:
    """The refusal of a limit the shared state named (``rpm``, ``tpm`` or ``budget``)."""
    if limit == "budget":
        return _budget_refusal(remaining or 0.0, cost, prompt_tokens, max_tokens)
    wait = math.inf if retry_after_s is None else retry_after_s
    if limit == "rpm":
        message = (
            f"requests per minute: the key's limit is {spec.max_requests_per_min}; "
            f"retry after {wait:.1f} s"
        )
        return LimitRefusal(429, "requests_per_minute_exceeded", message, wait, None)
    cap = spec.max_tokens_per_min
    if wait == math.inf:
        message = (
            f"tokens per minute: this request needs {amount} tokens (prompt + "
            f"max_tokens), more than the key's limit of {cap}; lower max_tokens"
        )
        return LimitRefusal(429, "tokens_per_minute_exceeded", message, None, None)
    message = (
        f"tokens per minute: the key's limit is {cap}, this request needs {amount} "
        f"(prompt + max_tokens); retry after {wait:.1f} s"
    )
    return LimitRefusal(429, "tokens_per_minute_exceeded", message, wait, None)


def _budget_refusal(
    remaining: float, cost: float, prompt_tokens: int, max_tokens: int
) -> LimitRefusal:
    if remaining <= 0:
        message = f"budget: the key's budget is spent (remaining {max(remaining, 0.0):.6f} USD)"
    else:
        message = (
            f"budget: this request may cost up to {cost:.6f} USD ({prompt_tokens} prompt + "
            f"{max_tokens} max_tokens) and the key has {remaining:.6f} USD left; lower max_tokens"
        )
    return LimitRefusal(402, "budget_exhausted", message, None, max(remaining, 0.0))
