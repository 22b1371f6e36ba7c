"""Per-request result records, shared by the simulator, the emulator and the load generator.

:class:`RecordArrays` is a struct of arrays indexed by request position; engines write
into it as requests progress (cheap in the simulator's hot loop), and
:func:`to_table` turns it into the ``requests.parquet`` schema below. Times are
seconds since the start of the run; NaN means "never happened" (e.g. a rejected
request has no first token).

Metric definitions (vLLM's): TTFT = first token - arrival; TPOT = (E2E - TTFT) /
(output tokens - 1); E2E = last token - arrival; queueing delay = first scheduled -
arrival.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from sincere.core.request import RequestArrays

REQUEST_COLUMNS: tuple[str, ...] = (
    "request_id",
    "model",
    "tier",
    "instance",
    "arrival_at",
    "first_scheduled_at",
    "first_token_at",
    "finished_at",
    "prompt_tokens",
    "output_tokens",
    "ttft_s",
    "tpot_s",
    "e2e_s",
    "queue_s",
    "num_preemptions",
    "cached_tokens",
    "slo_met",
    "rejected",
    "reject_reason",
    "arrival_num_running",
    "arrival_num_waiting",
    "arrival_waiting_prefill_tokens",
    "arrival_num_outstanding",
)
"""Columns of ``requests.parquet``, in order."""

LOAD_COLUMNS: tuple[str, ...] = REQUEST_COLUMNS[-4:]
"""The load-at-arrival columns (null where not recorded)."""


@dataclass(eq=False)
class RecordArrays:
    """Mutable per-request outcomes, one slot per request of a :class:`RequestArrays`."""

    instance: npt.NDArray[np.int64]  # index into ``instances``; -1 before routing
    first_scheduled_at: npt.NDArray[np.float64]
    first_token_at: npt.NDArray[np.float64]
    finished_at: npt.NDArray[np.float64]
    output_tokens: npt.NDArray[np.int64]  # tokens actually generated
    num_preemptions: npt.NDArray[np.int64]
    cached_tokens: npt.NDArray[np.int64]  # prompt tokens cached at first admission
    rejected: npt.NDArray[np.bool_]
    reject_reason: list[str | None]
    instances: list[str]
    # the chosen instance's load when the request was routed (LOAD_COLUMNS); -1: not seen
    arrival_num_running: npt.NDArray[np.int64]
    arrival_num_waiting: npt.NDArray[np.int64]
    arrival_waiting_prefill_tokens: npt.NDArray[np.int64]
    arrival_num_outstanding: npt.NDArray[np.int64]

    @classmethod
    def empty(cls, n: int, instances: list[str] | None = None) -> RecordArrays:
        """Records for ``n`` requests, none of which has happened yet."""
        nan = np.full(n, np.nan)
        unseen = np.full(n, -1, dtype=np.int64)
        return cls(
            instance=np.full(n, -1, dtype=np.int64),
            first_scheduled_at=nan.copy(),
            first_token_at=nan.copy(),
            finished_at=nan.copy(),
            output_tokens=np.zeros(n, dtype=np.int64),
            num_preemptions=np.zeros(n, dtype=np.int64),
            cached_tokens=np.zeros(n, dtype=np.int64),
            rejected=np.zeros(n, dtype=np.bool_),
            reject_reason=[None] * n,
            instances=list(instances or []),
            arrival_num_running=unseen.copy(),
            arrival_num_waiting=unseen.copy(),
            arrival_waiting_prefill_tokens=unseen.copy(),
            arrival_num_outstanding=unseen,
        )

    def note_load(
        self, i: int, running: int, waiting: int, waiting_prefill_tokens: int, outstanding: int
    ) -> None:
        """Record the load request ``i``'s instance had when the request was routed."""
        self.arrival_num_running[i] = running
        self.arrival_num_waiting[i] = waiting
        self.arrival_waiting_prefill_tokens[i] = waiting_prefill_tokens
        self.arrival_num_outstanding[i] = outstanding

    def reject(self, i: int, reason: str) -> None:
        """Mark request ``i`` as explicitly rejected, with a reason."""
        self.rejected[i] = True
        self.reject_reason[i] = reason

    def unfinished(self) -> npt.NDArray[np.int64]:
        """Positions of requests neither finished nor rejected."""
        return np.flatnonzero(np.isnan(self.finished_at) & ~self.rejected)


def latencies(requests: RequestArrays, records: RecordArrays) -> dict[str, npt.NDArray[np.float64]]:
    """TTFT, TPOT, E2E and queueing delay per request (NaN where undefined)."""
    arrival = requests.arrival_at
    ttft = records.first_token_at - arrival
    e2e = records.finished_at - arrival
    steps = records.output_tokens - 1
    with np.errstate(invalid="ignore", divide="ignore"):
        tpot = np.where(steps > 0, (e2e - ttft) / np.maximum(steps, 1), 0.0)
    tpot = np.where(np.isnan(e2e), np.nan, tpot)
    queue = records.first_scheduled_at - arrival
    return {"ttft_s": ttft, "tpot_s": tpot, "e2e_s": e2e, "queue_s": queue}


def slo_met(
    requests: RequestArrays,
    records: RecordArrays,
    lat: dict[str, npt.NDArray[np.float64]] | None = None,
) -> npt.NDArray[np.bool_]:
    """Whether each request finished and met every target of its tier.

    ``lat`` is :func:`latencies` of the same arguments, when already computed.
    """
    if lat is None:
        lat = latencies(requests, records)
    met = ~np.isnan(records.finished_at) & ~records.rejected
    for t_ix, tier in enumerate(requests.tiers):
        sel = requests.tier == t_ix
        if tier.ttft_s is not None:
            met[sel] &= lat["ttft_s"][sel] <= tier.ttft_s
        if tier.ttlt_s is not None:
            met[sel] &= lat["e2e_s"][sel] <= tier.ttlt_s
        if tier.tbt_s is not None:
            met[sel] &= lat["tpot_s"][sel] <= tier.tbt_s
    return met


def to_table(requests: RequestArrays, records: RecordArrays) -> pa.Table:
    """The ``requests.parquet`` table (columns :data:`REQUEST_COLUMNS`).

    Columns are laid into Arrow buffers from the NumPy arrays directly (:func:`arrow_column`):
    ``pa.array`` and ``pa.table`` on NumPy data import pandas to ask whether it is a
    Series, about a second of a short run's start-up."""
    lat = latencies(requests, records)
    instance = np.where(records.instance < 0, len(records.instances), records.instance)
    columns: dict[str, pa.Array] = {
        "request_id": arrow_column(np.arange(len(requests), dtype=np.int64)),
        "model": arrow_strings(requests.models, requests.model),
        "tier": arrow_strings([t.name for t in requests.tiers], requests.tier),
        "instance": arrow_strings([*records.instances, ""], instance),
        "arrival_at": arrow_column(requests.arrival_at),
        "first_scheduled_at": arrow_column(records.first_scheduled_at),
        "first_token_at": arrow_column(records.first_token_at),
        "finished_at": arrow_column(records.finished_at),
        "prompt_tokens": arrow_column(requests.prompt_tokens),
        "output_tokens": arrow_column(records.output_tokens),
        "ttft_s": arrow_column(lat["ttft_s"]),
        "tpot_s": arrow_column(lat["tpot_s"]),
        "e2e_s": arrow_column(lat["e2e_s"]),
        "queue_s": arrow_column(lat["queue_s"]),
        "num_preemptions": arrow_column(records.num_preemptions),
        "cached_tokens": arrow_column(records.cached_tokens),
        "slo_met": arrow_column(slo_met(requests, records, lat)),
        "rejected": arrow_column(records.rejected),
        "reject_reason": _reasons(records),
        **{name: _counts(getattr(records, name)) for name in LOAD_COLUMNS},
    }
    return pa.Table.from_arrays(list(columns.values()), names=list(columns))


_ARROW_TYPES = {"int64": pa.int64(), "float64": pa.float64(), "bool": pa.bool_()}


def arrow_column(values: npt.NDArray[Any], null: npt.NDArray[np.bool_] | None = None) -> pa.Array:
    """A 1-D int64, float64 or bool NumPy array as an Arrow array (``null``: masked rows).

    An int64 or float64 column shares ``values``' memory (no copy: at 1M requests the
    request table would otherwise hold a second copy of every column), so ``values``
    must not change while the Arrow array is in use; bools are packed into bits anew."""
    kind = _ARROW_TYPES[values.dtype.name]
    n = len(values)
    if values.dtype == np.bool_:
        data = pa.py_buffer(np.packbits(values, bitorder="little"))
    else:
        data = pa.py_buffer(np.ascontiguousarray(values))
    if null is None or not null.any():
        return pa.Array.from_buffers(kind, n, [None, data], null_count=0)
    valid = pa.py_buffer(np.packbits(~null, bitorder="little"))
    return pa.Array.from_buffers(kind, n, [valid, data], null_count=int(null.sum()))


def _counts(values: npt.NDArray[np.int64]) -> pa.Array:
    """A load column: -1 (not seen) becomes null."""
    return arrow_column(values.astype(np.int64, copy=False), values < 0)


def arrow_strings(
    names: Sequence[str], index: npt.NDArray[np.int64], null: npt.NDArray[np.bool_] | None = None
) -> pa.Array:
    """``names[index]`` as an Arrow string array, without a Python object per row (the
    few names laid into Arrow buffers directly; ``null``: rows that are null)."""
    encoded = [name.encode("utf-8") for name in names]
    offsets = np.zeros(len(encoded) + 1, dtype=np.int32)
    offsets[1:] = np.cumsum([len(b) for b in encoded])
    dictionary = pa.StringArray.from_buffers(
        len(encoded), pa.py_buffer(offsets.tobytes()), pa.py_buffer(b"".join(encoded))
    )
    return dictionary.take(arrow_column(index.astype(np.int64, copy=False), null))


def _reasons(records: RecordArrays) -> pa.Array:
    """The ``reject_reason`` column; all nulls (the common case) without a Python list walk."""
    if not records.rejected.any():
        return pa.nulls(len(records.rejected), type=pa.string())
    reasons = records.reject_reason
    names = sorted({r for r in reasons if r is not None})
    code = {name: k for k, name in enumerate(names)}
    index = np.array([-1 if r is None else code[r] for r in reasons], dtype=np.int64)
    return arrow_strings(names, np.maximum(index, 0), index < 0)
