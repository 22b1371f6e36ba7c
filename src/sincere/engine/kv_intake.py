"""KV prefilled elsewhere, waiting to join a decode batch (prefill/decode disaggregation).

A decode instance takes a request whose prompt was prefilled on another instance once its
KV has arrived. It joins the decode batch at an iteration boundary, in arrival order, once
the blocks of its KV (plus the next decode step's growth and the watermark) and a
``max_num_seqs`` slot are free -- backpressure: until then it waits, holding nothing. This
module keeps that queue and the record of when each request joined (the time its client
gets its first token); :class:`~sincere.engine.continuous.ContinuousEngine`, whose
``kv_intake`` it backs (:class:`~sincere.engine.base.KvIntake`), checks the request and
wakes itself.
"""

from __future__ import annotations

from sincere.core.records import RecordArrays
from sincere.core.types import Seconds
from sincere.engine.kv import blocks_for
from sincere.engine.state import BatchState, EngineLimits


class ArrivedKv:
    """Requests whose KV arrived, in arrival order, and the starts of their decoding."""

    def __init__(self, limits: EngineLimits) -> None:
        self.limits = limits
        self.waiting: list[tuple[int, int]] = []  # (request, KV tokens), first come first
        # (request, time) of each one's start of decoding, until the driver clears it
        self.admitted: list[tuple[int, Seconds]] = []

    def arrive(self, i: int, kv_tokens: int) -> None:
        """Request ``i``'s ``kv_tokens`` tokens of KV arrived: it waits for room."""
        self.waiting.append((i, kv_tokens))

    def admit(self, st: BatchState, now: Seconds) -> None:
        """Arrived KV joins the decode batch, in order, while its blocks and a slot are free
        (the next decode step's growth and the watermark kept free)."""
        lim = self.limits
        waiting = self.waiting
        while waiting:
            i, kv_tokens = waiting[0]
            if st.num_running >= lim.max_num_seqs:
                return
            free = st.num_blocks - st.pre_blocks - st.dec.total(st.step + st.lookahead)
            if blocks_for(kv_tokens + 1, lim.block_size) > free - lim.watermark_blocks:
                return
            waiting.pop(0)
            st.start_decoding(i, kv_tokens)
            self.admitted.append((i, now))

    def abort(self, i: int, st: BatchState, records: RecordArrays) -> bool:
        """Forget request ``i`` if its KV waits for room, marked ``aborted`` (one token, the
        first that came with its KV); whether it did."""
        if not self.drop(i):
            return False
        del st.held[i]
        records.output_tokens[i] = 1
        st.reject(i, "aborted")
        return True

    def drop(self, i: int) -> bool:
        """Forget request ``i`` if its KV waits for room; whether it did."""
        for k, (j, _) in enumerate(self.waiting):
            if j == i:
                del self.waiting[k]
                return True
        return False
