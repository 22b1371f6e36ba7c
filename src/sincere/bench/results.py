"""A benchmark's outcome in the simulator's schema: records, ITL gaps and ``summary.json``.

Measured calls become a :class:`~sincere.core.records.RecordArrays`, so
``requests.parquet`` has exactly the simulator's columns (plus ``sent_at`` and
``lateness_s``, the client's own timing) and ``summary.json`` is built by the
simulator's :func:`~sincere.engine.summary.summarize`, fed with the measured
inter-token gaps. Arrival is the open-loop schedule's time, as in the simulator, so
a late generator shows up as latency *and* as ``client.lateness_s``.

Conventions: times in seconds since the run's start; ``queue_s`` is NaN unless the
server reports its queueing delay; a non-streaming call has no first-token time
(TTFT, TPOT and ITL are NaN); every request is either completed or rejected with a
reason (``http_<status>``, ``connection_error``, ``bad_response``, ``timeout``,
``cancelled``). ``mean_num_in_system`` is Little's law over completed requests.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.parquet as pq

from sincere.bench.client import CallTiming
from sincere.core.jsonsafe import dumps
from sincere.core.output import output_folder, write_requests
from sincere.core.records import RecordArrays, to_table
from sincere.core.request import RequestArrays
from sincere.engine.gaps import GapHistogram
from sincere.engine.summary import describe, summarize

FloatArray = npt.NDArray[np.float64]


@dataclass(eq=False)
class BenchResult:
    """Outcome of one benchmark run; ``write`` stores what the CLI stores."""

    requests_in: RequestArrays  # the workload that was sent (arrival = scheduled time)
    records: RecordArrays  # per-request outcomes, simulator schema
    sent_at: FloatArray  # when each call went out (NaN: never sent)
    dispatched_at: FloatArray  # when the generator released it (NaN: never released)
    itl: pa.Table  # every inter-token gap: request_id, gap_index, gap_s
    summary: dict[str, Any]  # what summary.json holds
    settings: dict[str, Any] = field(default_factory=dict)  # url, model, stream, limits
    # prompt tokens the server reported cached, per request (NaN: not reported); empty: none
    cached_tokens: FloatArray = field(default_factory=lambda: np.zeros(0))
    # disaggregated serving's per-request columns (pd_columns); empty: none reported
    phases: dict[str, pa.Array] = field(default_factory=dict)
    _table: pa.Table | None = field(default=None, repr=False)

    @property
    def requests(self) -> pa.Table:
        """One row per request: the simulator's columns, then ``sent_at``, ``lateness_s``."""
        if self._table is None:
            table = to_table(self.requests_in, self.records)
            table = table.append_column("sent_at", pa.array(self.sent_at))
            lateness = self.dispatched_at - self.requests_in.arrival_at
            table = table.append_column("lateness_s", pa.array(lateness))
            table = with_cached_tokens(table, self.cached_tokens)
            for name, column in self.phases.items():
                table = table.append_column(name, column)
            self._table = table
        return self._table

    def write(self, out_dir: str | Path) -> Path:
        """Write requests.parquet, itl.parquet, summary.json and bench.json into ``out_dir``."""
        out = output_folder(out_dir)
        write_requests(self.requests, out / "requests.parquet")
        pq.write_table(self.itl, out / "itl.parquet")
        for name, data in (("summary.json", self.summary), ("bench.json", self.settings)):
            (out / name).write_text(dumps(data), encoding="utf-8")
        return out


def reported_cached_tokens(timings: list[CallTiming]) -> FloatArray:
    """Per call, the cached prompt tokens the server reported (a disaggregated call's: its
    prefill instance's, where the prompt was computed); empty when none reported any."""
    cached = [
        t.cached_tokens if t.prefill_cached_tokens is None else t.prefill_cached_tokens
        for t in timings
    ]
    if all(c is None for c in cached):
        return np.zeros(0)
    return np.array([math.nan if c is None else c for c in cached])


def with_cached_tokens(table: pa.Table, cached: FloatArray) -> pa.Table:
    """``table`` with a ``cached_tokens`` column of what servers reported (NaN elsewhere).

    Unchanged when nothing was reported; replaces a ``cached_tokens`` column already there.
    """
    if not len(cached):
        return table
    column = pa.array(cached, type=pa.float64())
    if "cached_tokens" in table.column_names:
        return table.set_column(table.column_names.index("cached_tokens"), "cached_tokens", column)
    return table.append_column("cached_tokens", column)


def pd_columns(timings: list[CallTiming]) -> dict[str, pa.Array]:
    """Both phases of each request a disaggregating gateway served (null elsewhere):
    ``prefill_instance``, ``decode_instance``, ``prefill_done_at`` (when the first token
    existed, run clock: the simulator's TTFT point), ``kv_transfer_s`` (as the decode
    instance measured it) and ``kv_wait_s`` (its KV waiting for room); ``{}`` when no
    answer named a prefill instance."""
    if all(t.prefill_instance is None for t in timings):
        return {}

    def floats(values: list[float | None]) -> pa.Array:
        return pa.array([math.nan if v is None else v for v in values], type=pa.float64())

    split = [t.prefill_instance is not None for t in timings]
    done = [t.sent_at + t.prefill_s if t.prefill_s is not None else None for t in timings]
    return {
        "prefill_instance": pa.array([t.prefill_instance for t in timings], type=pa.string()),
        "decode_instance": pa.array(
            [t.instance if s else None for t, s in zip(timings, split, strict=True)],
            type=pa.string(),
        ),
        "prefill_done_at": floats(done),
        "kv_transfer_s": floats([t.kv_transfer_s for t in timings]),
        "kv_wait_s": floats([t.kv_wait_s for t in timings]),
    }


def pd_section(requests: RequestArrays, phases: dict[str, pa.Array]) -> dict[str, Any] | None:
    """``summary.json``'s ``disaggregation``: counts, transfer times, the prefill's end."""
    if not phases:
        return None
    split = np.array(phases["prefill_instance"].is_valid())
    transfer = phases["kv_transfer_s"].to_numpy(zero_copy_only=False)[split]
    transfer = transfer[np.isfinite(transfer)]
    ttft = phases["prefill_done_at"].to_numpy(zero_copy_only=False) - requests.arrival_at
    return {
        "num_disaggregated": int(split.sum()),
        "kv_transfer_s_mean": float(transfer.mean()) if len(transfer) else None,
        "kv_transfer_s_max": float(transfer.max()) if len(transfer) else None,
        "prefill_ttft_s": describe(ttft[split]),
    }


def prefix_cache_section(requests: RequestArrays, cached: FloatArray) -> dict[str, Any] | None:
    """Reported cached prompt tokens over the prompt tokens of the calls that reported them."""
    if not len(cached):
        return None
    known = np.isfinite(cached)
    prompt = float(requests.prompt_tokens[known].sum())
    hits = float(cached[known].sum())
    return {
        "num_reported": int(known.sum()),
        "cached_tokens": hits,
        "prompt_tokens": prompt,
        "hit_rate": hits / prompt if prompt > 0 else None,
    }


def measured_prefix_cache(reported: dict[str, Any]) -> dict[str, Any]:
    """The summary's top-level ``prefix_cache`` block of a measured run: the servers'
    reported hits (:func:`prefix_cache_section`) under the simulator's names."""
    return {
        "hit_rate": reported["hit_rate"],
        "query_tokens": int(reported["prompt_tokens"]),
        "hit_tokens": int(reported["cached_tokens"]),
        "num_reported": reported["num_reported"],
    }


def build_records(
    requests: RequestArrays, timings: list[CallTiming], reasons: list[str | None]
) -> RecordArrays:
    """Records from the calls' timings; ``reasons[i]`` rejects request ``i`` when set."""
    instances = sorted({t.instance for t in timings if t.instance is not None})
    index = {name: i for i, name in enumerate(instances)}
    records = RecordArrays.empty(len(requests), instances)
    records.first_token_at[:] = [t.first_token_at for t in timings]
    records.finished_at[:] = [t.finished_at for t in timings]
    records.output_tokens[:] = [t.output_tokens for t in timings]
    queue = np.array([math.nan if t.queue_s is None else t.queue_s for t in timings])
    records.first_scheduled_at[:] = requests.arrival_at + queue
    records.instance[:] = [-1 if t.instance is None else index[t.instance] for t in timings]
    for i, reason in enumerate(reasons):
        if reason is not None:
            records.reject(i, reason)
            records.finished_at[i] = math.nan
    return records


def itl_table(timings: list[CallTiming]) -> pa.Table:
    """Every gap between two consecutive text chunks of one request."""
    counts = np.array([len(t.chunk_at) for t in timings], dtype=np.int64)
    total = int(counts.sum())
    flat = np.fromiter((x for t in timings for x in t.chunk_at), dtype=np.float64, count=total)
    owner = np.repeat(np.arange(len(timings), dtype=np.int64), counts)
    position = np.arange(total, dtype=np.int64) - np.repeat(np.cumsum(counts) - counts, counts)
    same = owner[1:] == owner[:-1]
    return pa.table(
        {
            "request_id": owner[1:][same],
            "gap_index": position[1:][same] - 1,
            "gap_s": np.diff(flat)[same],
        }
    )


def _gap_histograms(requests: RequestArrays, itl: pa.Table) -> list[GapHistogram]:
    owner = itl.column("request_id").to_numpy()
    gaps = itl.column("gap_s").to_numpy()
    tier = requests.tier[owner]
    hists = []
    for t in range(len(requests.tiers)):
        hist = GapHistogram()
        mine = gaps[tier == t]
        hist.add_each(mine.tolist(), 1.0, float(mine.sum()))
        hists.append(hist)
    return hists


def bench_summary(
    requests: RequestArrays,
    records: RecordArrays,
    itl: pa.Table,
    duration_s: float,
    client: dict[str, Any],
) -> dict[str, Any]:
    """The simulator's summary of the measured run, plus a ``client`` section."""
    summary = summarize(requests, records, duration_s, [], [], _gap_histograms(requests, itl))
    done = ~np.isnan(records.finished_at) & ~records.rejected
    in_system_s = float((records.finished_at[done] - requests.arrival_at[done]).sum())
    summary["mean_num_in_system"] = in_system_s / duration_s if duration_s > 0 else 0.0
    summary["client"] = client
    return summary


def client_section(
    requests: RequestArrays,
    records: RecordArrays,
    dispatched_at: FloatArray,
    sent_at: FloatArray,
    late_after_s: float,
    num_coalesced: int = 0,
) -> dict[str, Any]:
    """How well the generator kept its schedule, why requests were rejected, and how many
    streams came coalesced (several tokens in one chunk: client TTFT / ITL unreliable)."""
    lateness = dispatched_at - requests.arrival_at
    finite = lateness[np.isfinite(lateness)]
    worst = float(finite.max()) if len(finite) else None
    p99 = float(np.percentile(finite, 99)) if len(finite) else 0.0
    reasons = Counter(r for r in records.reject_reason if r is not None)
    return {
        "lateness_s": {**describe(lateness), "max": worst},
        "send_delay_s": describe(sent_at - requests.arrival_at),
        "kept_up": p99 <= late_after_s,
        "late_after_s": late_after_s,
        "num_late": int((finite > late_after_s).sum()),
        "reject_reasons": dict(sorted(reasons.items())),
        "num_coalesced_streams": num_coalesced,
    }
