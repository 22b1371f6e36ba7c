"""Writing settled usage behind the request path: pending deltas, flushed in batches.

Settlement adds a key's usage to its ``pending`` delta (:class:`~.keybook.KeyState`);
:meth:`UsageWriter.flush` (or :meth:`UsageWriter.flush_async`, in a worker thread, which
the gateway calls every second or so) takes the pending deltas as one numbered *batch* and
adds it to the durable record. A batch whose write fails keeps its number and is written
again, before any later batch, by the next flush (so a batch is always the same usage:
with shared state a survivor may write it from Redis's mirror, under that number, and the
key store adds it once). :meth:`close` waits for a write under way, flushes the rest and,
all written, closes this process's batches in the key store (dropping their kept totals).
A crash loses at most the usage not yet written (under-counting, never double counting).
With shared state the ledger (:class:`~sincere.serve.security.ledger.SharedLedger`) is
told what each batch wrote, and asks what is still unwritten (:meth:`unwritten_usd`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor

from sincere.serve.security.keybook import KeyBook
from sincere.serve.security.ledger import SharedLedger
from sincere.serve.security.storage import KeyStorage, Totals

Batch = tuple[int, dict[str, Totals]]  # a flush batch: its number, usage per key id


class UsageWriter:
    """Writes the key book's pending usage to storage, once each (see the module)."""

    def __init__(self, book: KeyBook, storage: KeyStorage) -> None:
        self.book = book  # whose states hold the pending usage
        self.storage = storage
        self.ledger: SharedLedger | None = None  # told what each batch wrote (shared state)
        self.batch = 1  # the flush batch pending usage belongs to (named in Redis's mirror)
        self._writer: ThreadPoolExecutor | None = None  # the write-behind thread
        self._unwritten: list[Batch] = []  # batches taken and not written yet, in order
        self._writing: Future[int] | None = None  # a write of them under way

    def take_pending(self) -> dict[str, Totals]:
        """The usage settled since the last flush, cleared from memory."""
        pending = {}
        for key_id, state in self.book.states.items():
            if state.pending.num_requests:
                pending[key_id] = state.pending
                state.pending = Totals()
        return pending

    def _take(self) -> None:
        """Close the open batch (if it holds usage): unwritten, to be written."""
        pending = self.take_pending()
        if pending:
            self._unwritten.append((self.batch, pending))
            self.batch += 1

    def flush(self) -> int:
        """Write pending usage now (blocking): first any batch whose write failed, then the
        usage settled since; the number of key deltas written."""
        self._take()
        return self._write_unwritten()

    async def flush_async(self) -> int:
        """:meth:`flush` with the writes in a worker thread, off the event loop.

        Cancelled while a write is under way (the gateway stopping), the write still
        completes in its thread, and :meth:`close` waits for it: the usage is written
        once, neither lost nor counted twice.
        """
        self._take()
        if not self._unwritten:
            return 0
        if self._writer is None:
            self._writer = ThreadPoolExecutor(1, thread_name_prefix="sincere-keystore")
        job = self._writer.submit(self._write_unwritten)
        self._writing = job
        try:
            return await asyncio.shield(asyncio.wrap_future(job))
        except asyncio.CancelledError:
            raise  # the write goes on; close() waits for it
        finally:
            if job.done():
                self._writing = None

    def _write_unwritten(self) -> int:
        """Write the unwritten batches in order, each dropped once written; a failure
        stops there (the rest wait: a batch is never written before an earlier one).
        The number of key deltas written."""
        done = 0
        while self._unwritten:
            batch, pending = self._unwritten[0]
            self._write(batch, pending)
            self._unwritten.pop(0)
            done += len(pending)
        return done

    def _write(self, batch: int, pending: Mapping[str, Totals]) -> None:
        """Add ``pending`` to the durable record (tell the ledger what was written)."""
        if self.ledger is None:
            self.storage.add_usage(pending)
            return
        written = self.storage.add_usage(pending, (self.ledger.process_id, batch))
        self.ledger.wrote(written, batch)

    def unwritten_usd(self, key_id: str) -> float:
        """Spend settled here and not yet written: pending, or in a batch not written yet
        (one being written counts until its write is done)."""
        state = self.book.states.get(key_id)
        usd = 0.0 if state is None else state.pending.spent_usd
        for _, pending in list(self._unwritten):
            usd += pending[key_id].spent_usd if key_id in pending else 0.0
        return usd

    async def writes_done(self) -> None:
        """Wait until a write under way has ended (either way)."""
        if self._writing is not None:
            with contextlib.suppress(Exception):
                await asyncio.shield(asyncio.wrap_future(self._writing))

    def close(self) -> None:
        """Wait for a write under way and stop the writer thread, then flush the rest;
        everything written, close this process's batches in the key store."""
        if self._writing is not None:
            job, self._writing = self._writing, None
            with contextlib.suppress(Exception):
                job.result()  # a batch it failed to write is still unwritten: written below
        if self._writer is not None:
            self._writer.shutdown(wait=True)
            self._writer = None
        self.flush()
        if self.ledger is not None and self.batch > 1:  # all written: close the batches
            self.storage.close_writer(self.ledger.process_id, self.batch - 1)
