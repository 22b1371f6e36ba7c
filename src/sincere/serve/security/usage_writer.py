"""Writing settled usage behind the request path: pending deltas, flushed in batches.

Settlement adds a key's usage to its ``pending`` delta (:class:`~.keybook.KeyState`);
:meth:`UsageWriter.flush` (or :meth:`UsageWriter.flush_async`, in a worker thread, which
the gateway calls every second or so) adds the pending deltas to the durable record and
clears them; a write that fails puts them back for the next flush. :meth:`close` waits for
a write under way and flushes the rest. A crash loses at most the last flush interval's
usage (under-counting, never double counting). Each flush is one numbered *batch*: with
shared state the ledger (:class:`~sincere.serve.security.ledger.SharedLedger`) is told
what each batch wrote, and asks what is still unwritten (:meth:`unwritten_usd`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor

from sincere.serve.security.keybook import KeyBook
from sincere.serve.security.ledger import SharedLedger
from sincere.serve.security.storage import KeyStorage, Totals


class UsageWriter:
    """Writes the key book's pending usage to storage, once each (see the module)."""

    def __init__(self, book: KeyBook, storage: KeyStorage) -> None:
        self.book = book  # whose states hold the pending usage
        self.storage = storage
        self.ledger: SharedLedger | None = None  # told what each batch wrote (shared state)
        self.batch = 1  # the flush batch pending usage belongs to (named in Redis's mirror)
        self._writer: ThreadPoolExecutor | None = None  # the write-behind thread
        self._writing: tuple[Future[None], dict[str, Totals]] | None = None  # under way

    def take_pending(self) -> dict[str, Totals]:
        """The usage settled since the last flush, cleared from memory."""
        pending = {}
        for key_id, state in self.book.states.items():
            if state.pending.num_requests:
                pending[key_id] = state.pending
                state.pending = Totals()
        return pending

    def restore_pending(self, pending: dict[str, Totals]) -> None:
        """Put back usage whose write failed, to be written by the next flush."""
        for key_id, delta in pending.items():
            state = self.book.states[key_id]
            state.pending = delta + state.pending

    def flush(self) -> int:
        """Write pending usage now (blocking); the number of keys written."""
        pending = self.take_pending()
        if pending:
            batch, self.batch = self.batch, self.batch + 1
            try:
                self._write(pending, batch)
            except BaseException:
                self.restore_pending(pending)
                raise
        return len(pending)

    async def flush_async(self) -> int:
        """:meth:`flush` with the write in a worker thread, off the event loop.

        Cancelled while the write is under way (the gateway stopping), the write still
        completes in its thread, and :meth:`close` waits for it: the usage is written
        once, neither lost nor counted twice.
        """
        pending = self.take_pending()
        if not pending:
            return 0
        if self._writer is None:
            self._writer = ThreadPoolExecutor(1, thread_name_prefix="sincere-keystore")
        batch, self.batch = self.batch, self.batch + 1
        job = self._writer.submit(self._write, pending, batch)
        self._writing = (job, pending)
        try:
            await asyncio.shield(asyncio.wrap_future(job))
        except asyncio.CancelledError:
            raise  # the write goes on; close() waits for it
        except BaseException:
            self._writing = None
            self.restore_pending(pending)
            raise
        self._writing = None
        return len(pending)

    def _write(self, pending: Mapping[str, Totals], batch: int) -> None:
        """Add ``pending`` to the durable record (tell the ledger what was written)."""
        if self.ledger is None:
            self.storage.add_usage(pending)
            return
        after = self.storage.add_usage(pending, (self.ledger.process_id, batch))
        self.ledger.wrote(pending, after, batch)

    def unwritten_usd(self, key_id: str) -> float:
        """Spend settled here and not yet written: pending, or in a write not yet done."""
        state = self.book.states.get(key_id)
        usd = 0.0 if state is None else state.pending.spent_usd
        if self._writing is not None:
            job, batch = self._writing
            if not job.done() or job.exception() is not None:
                usd += batch[key_id].spent_usd if key_id in batch else 0.0
        return usd

    async def writes_done(self) -> None:
        """Wait until a write under way has ended (either way)."""
        if self._writing is not None:
            with contextlib.suppress(Exception):
                await asyncio.shield(asyncio.wrap_future(self._writing[0]))

    def close(self) -> None:
        """Wait for a write under way and stop the writer thread, then flush the rest."""
        if self._writing is not None:
            job, pending = self._writing
            self._writing = None
            try:
                job.result()
            except Exception:
                self.restore_pending(pending)  # written again below
        if self._writer is not None:
            self._writer.shutdown(wait=True)
            self._writer = None
        self.flush()
