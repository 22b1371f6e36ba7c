"""A killed process's unwritten usage, written by a survivor: mirrors and heartbeats.

Each settlement in Redis also adds its usage to its process's *mirror* (by flush batch;
see :data:`~sincere.serve.security.redis_scripts.WRITERS`). Every process beats a
heartbeat every ``renew_s`` (:meth:`Mirror.round`). One silent for ``lease_s`` (killed,
or stalled that long) is taken for dead by a process that has itself beaten without a gap
for ``lease_s`` -- so that after a Redis stall, when every heartbeat looks old, no one
judges before the others had time to beat again. The survivor writes the dead one's
mirror to the key store batch by batch, each under the dead writer's name and number,
and leaves the mirror in Redis (for :data:`~.settlements.GONE_KEEP_S`): a batch is a
running total, and the key store adds of it only what it grew by since it was last
written (:meth:`~.storage.KeyStorage.add_usage`), so a process only stalled, not killed,
that settles more into the same batch and writes it itself (or is killed and judged dead
again) adds what the survivor did not write, and nothing twice.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from sincere.serve.security.settlements import GONE_KEEP_S
from sincere.serve.security.shared import RedisState, StateUnavailableError
from sincere.serve.security.storage import KeyStorage, Totals

log = logging.getLogger("sincere.serve.security.mirror")


class Mirror:
    """This process's heartbeat and mirror upkeep, and survivors' writes for the dead."""

    def __init__(self, state: RedisState, storage: KeyStorage, process_id: str) -> None:
        self.state = state
        self.storage = storage
        self.process_id = process_id
        self._last_batch = 0  # the last flush batch this process wrote
        self._beating_since = 0.0  # monotonic start of this process's unbroken heartbeats
        self._last_beat: float | None = None

    def wrote(self, batch: int) -> None:
        """This process wrote ``batch`` to the key store (its mirror may drop it)."""
        self._last_batch = max(self._last_batch, batch)

    async def round(self, token: str, now: float) -> None:
        """Beat this process's heartbeat; write the mirrored usage of processes gone silent
        (killed before their flush); trim this process's mirror of what it wrote."""
        st = self.state
        procs = st.key(token, "procs", "all")
        mono = time.monotonic()
        if self._last_beat is None or mono - self._last_beat > st.lease_s / 2:
            self._beating_since = mono  # after a gap (Redis or this process stalled) others
        self._last_beat = mono  # may not have beaten yet: judge no one dead for a lease
        judge = mono - self._beating_since >= st.lease_s
        until = repr(now + st.lease_s)
        beat = ["beat", self.process_id, until, repr(now) if judge else "-inf", until]
        dead = await st.call_raw("writers", [procs, procs], beat)
        for raw in dead:
            gone = raw.decode() if isinstance(raw, bytes) else str(raw)
            try:
                await self._write_for(token, gone)
            except StateUnavailableError:
                raise  # Redis is gone: nothing else of this round can be done either
            except Exception as exc:  # the key store refused: claimed for a lease, then again
                log.warning(
                    "could not write the unwritten usage of gateway process %s (silent past "
                    "its lease) to the key store, tried again in %.1f s: %s",
                    gone, st.lease_s, exc,
                )  # fmt: skip
        mine = st.key(token, "w", self.process_id)
        await st.call_raw("writers", [procs, mine], ["trim", self._last_batch])

    async def _write_for(self, token: str, gone: str) -> None:
        """Write the mirror of process ``gone`` to the key store, batch by batch."""
        st = self.state
        procs, mirror = st.key(token, "procs", "all"), st.key(token, "w", gone)
        fields = await st.call_raw("writers", [procs, mirror], ["read"])
        for batch, deltas in sorted(_batches(fields).items()):
            await asyncio.to_thread(self.storage.add_usage, deltas, (gone, batch))
        await st.call_raw("writers", [procs, mirror], ["forget", gone, int(GONE_KEEP_S)])


def _batches(fields: list[Any]) -> dict[int, dict[str, Totals]]:
    """A mirror's fields (``<batch>:<key id>:<s|r|p|c>``, value) as usage by batch."""
    parts: dict[tuple[int, str], dict[str, float]] = {}
    for i in range(0, len(fields), 2):
        name = fields[i].decode() if isinstance(fields[i], bytes) else str(fields[i])
        value = fields[i + 1].decode() if isinstance(fields[i + 1], bytes) else str(fields[i + 1])
        batch, key_id, what = name.split(":")
        parts.setdefault((int(batch), key_id), {})[what] = float(value)
    out: dict[int, dict[str, Totals]] = {}
    for (batch, key_id), v in parts.items():
        totals = Totals(v.get("s", 0.0), int(v.get("r", 0)), int(v.get("p", 0)), int(v.get("c", 0)))
        out.setdefault(batch, {})[key_id] = totals
    return out
