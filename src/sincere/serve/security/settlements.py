"""Settlements on their way to Redis: deferred to ride the next admission, sent in batches.

A request's settlement is not sent on its own. It waits in the :class:`Outbox` and the
next admission of this process (any key) carries it: the admission script applies the
settlements it carries first, then admits -- one round trip per request. When no
admission comes within ``settle_within_s`` (``state.settle_within_s``), the waiting
settlements go in one call of their own. Deferring a settlement never lets a budget be
over-spent: until it is applied, its request's worst case stays reserved in Redis, so the
budget looks *smaller* meanwhile, never larger. What it changes: a process killed
(``kill -9``) within ``settle_within_s`` of an answer loses that answer's settlement, as
it lost one in flight before (see ``docs/security.md``); a call that fails keeps its
settlements for the background round to retry, as a failed settlement always was.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from sincere.serve.security.shared import RedisState

GONE_KEEP_S = 3600.0  # ids of run-out leases and cancelled admissions kept this long
KEY_TTL_S = 7 * 86400  # a key's books idle this long leave Redis (re-seeded on next use)
MAX_PER_CALL = 32  # settlements one call carries at most (the rest wait for the next)


@dataclass(frozen=True, slots=True)
class Settlement:
    """A settlement to send to Redis (kept to retry when the first try failed)."""

    key_id: str
    rid: str
    cost: float
    tokens_bucket: int | None
    tokens_delta: int
    made_at: float  # when the request was admitted (its window bucket's time)
    token: str  # the instance it belongs to: in a rebuilt one the sync carried it
    batch: int  # the flush batch its usage is written with (this process's mirror)
    used: tuple[int, int]  # prompt and completion tokens
    cancel: bool = False  # an admission that failed here: release it if Redis ran it


class Outbox:
    """Deferred settlements, and the timer that sends them when no admission does."""

    def __init__(self, within_s: float, send: Callable[[], Coroutine[Any, Any, None]]) -> None:
        self.within_s = within_s  # a deferred settlement waits at most this long
        self._send = send  # sends what waits (the ledger's flush)
        self._items: list[Settlement] = []
        self._timer: asyncio.TimerHandle | None = None
        self._timer_loop: asyncio.AbstractEventLoop | None = None  # the loop it is armed on
        self._sending: set[asyncio.Task[None]] = set()

    def __len__(self) -> int:
        return len(self._items)

    def put(self, item: Settlement) -> None:
        """Defer ``item`` (on the running loop): the next admission or the timer sends it."""
        self._items.append(item)
        loop = asyncio.get_running_loop()
        if self._timer is None or self._timer_loop is not loop:  # none armed on this loop
            self._timer, self._timer_loop = loop.call_later(self.within_s, self._due, loop), loop

    def take(self, token: str) -> list[Settlement]:
        """Up to :data:`MAX_PER_CALL` waiting settlements of instance ``token``, removed.

        Those of another (older) instance are dropped: Redis would refuse them, and the
        sync that joins each of their keys to the new instance counts their usage.
        """
        mine = [item for item in self._items if item.token == token]
        self._items = mine[MAX_PER_CALL:]
        return mine[:MAX_PER_CALL]

    def _due(self, loop: asyncio.AbstractEventLoop) -> None:
        self._timer = None
        if self._items:
            task = loop.create_task(self._send())
            self._sending.add(task)
            task.add_done_callback(self._sending.discard)

    async def drain(self) -> None:
        """Stop the timer; wait for the sends under way (the caller sends what is left)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        while self._sending:
            await asyncio.gather(*list(self._sending), return_exceptions=True)


def settle_keys(state: RedisState, item: Settlement) -> list[str]:
    """The 5 Redis keys of one settlement (see :data:`~.redis_scripts.SETTLE`)."""
    return [
        state.key(item.token, item.key_id, w) for w in ("money", "res", "lease", "gone", "tokens")
    ]


def settle_args(state: RedisState, item: Settlement) -> list[Any]:
    """The 10 arguments of one settlement (see :data:`~.redis_scripts.SETTLE`)."""
    return [
        item.rid, repr(item.cost), -1 if item.tokens_bucket is None else item.tokens_bucket,
        item.tokens_delta, state.bucket(item.made_at), item.batch, item.used[0], item.used[1],
        item.key_id, 1 if item.cancel else 0,
    ]  # fmt: skip


def settle_call(
    state: RedisState, process_id: str, items: list[Settlement], clock: int, now: float
) -> tuple[list[str], list[Any]]:
    """Keys and arguments of one :data:`~.redis_scripts.SETTLE` call applying ``items``
    (all of one instance) for process ``process_id``, which has seen ``clock``."""
    token = items[0].token
    keys = [state.instance_key, state.key(token, "w", process_id)]
    args: list[Any] = [token, repr(now), clock, state.num_buckets, GONE_KEEP_S, KEY_TTL_S]
    for item in items:
        keys += settle_keys(state, item)
        args += settle_args(state, item)
    return keys, args
