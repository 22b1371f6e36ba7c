"""Served requests read from record tables: what the learned predictors train and are judged on.

A record table is a ``requests.parquet`` as ``sincere simulate`` and ``sincere bench``
write it (one row per request, :data:`~sincere.core.records.REQUEST_COLUMNS`); for
output lengths any table with ``prompt_tokens`` and ``output_tokens`` will do (a trace
converted by ``sincere trace convert`` too), with ``model``, ``tier`` and ``prompt``
used when present. A decision log (``--decisions FILE`` of ``sincere serve`` or
``sincere simulate``, ``.jsonl``) reads as the table of what it served
(:mod:`sincere.predict.live_records`). Each file is one run: instance histories never
cross files.

Only *served* requests count (finished, not rejected): they are the ones whose
latencies and lengths are known. Their instance's load at arrival comes from the
``arrival_*`` columns; where those are absent or null (a one-instance simulation, a
load generator that cannot see the server's queues) it is derived from the
timestamps of the same instance's requests (:func:`derive_load`):

* outstanding -- requests that arrived there earlier and had not finished (exact: the
  simulator's own count);
* waiting -- of those, the ones not yet scheduled (``first_scheduled_at``, else the
  first token, stands for admission); running = outstanding - waiting; waiting prompt
  tokens -- their prompt tokens. These ignore preemptions and partly prefilled
  prompts, so they approximate what an engine reports.

An event at the very time of an arrival counts as after it (the simulator handles an
arrival before an engine's step at the same instant).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.parquet as pq

from sincere.core.errors import ConfigError, DataError
from sincere.core.records import LOAD_COLUMNS
from sincere.core.request import DEFAULT_TIER
from sincere.predict.live_records import LOG_SUFFIXES, decision_table

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

LATENCY_COLUMNS: tuple[str, ...] = (
    "instance",
    "arrival_at",
    "finished_at",
    "ttft_s",
    "tpot_s",
    "prompt_tokens",
    "output_tokens",
)
"""Columns a latency predictor's records must have."""

LENGTH_COLUMNS: tuple[str, ...] = ("prompt_tokens", "output_tokens")
"""Columns an output-length predictor's records must have."""


@dataclass(frozen=True, eq=False)
class Lengths:
    """Served requests' prompt features and output lengths (one entry per request)."""

    prompt_tokens: IntArray
    output_tokens: IntArray
    model: tuple[str, ...]  # model name per request ("" when the table has none)
    tier: tuple[str, ...]  # tier name per request ("default" when the table has none)
    prompt: tuple[str | None, ...]  # prompt text per request (None when unknown)

    def __len__(self) -> int:
        return len(self.prompt_tokens)

    @classmethod
    def concat(cls, parts: Sequence[Lengths]) -> Lengths:
        """The requests of every part, in order."""
        return cls(
            np.concatenate([p.prompt_tokens for p in parts]),
            np.concatenate([p.output_tokens for p in parts]),
            tuple(m for p in parts for m in p.model),
            tuple(t for p in parts for t in p.tier),
            tuple(x for p in parts for x in p.prompt),
        )

    def split(self, share: float) -> tuple[Lengths, Lengths]:
        """The first ``share`` of the requests and the rest (the table's order)."""
        cut = int(len(self) * share)
        rows = np.arange(len(self))
        return self.take(rows[:cut]), self.take(rows[cut:])

    def take(self, rows: IntArray) -> Lengths:
        """The requests at positions ``rows``."""
        pick = rows.tolist()
        return Lengths(
            self.prompt_tokens[rows],
            self.output_tokens[rows],
            tuple(self.model[i] for i in pick),
            tuple(self.tier[i] for i in pick),
            tuple(self.prompt[i] for i in pick),
        )


@dataclass(frozen=True, eq=False)
class Served:
    """One run's served requests in arrival order (one entry per request per array)."""

    instance: IntArray  # index into ``instances``
    instances: tuple[str, ...]
    arrival_at: FloatArray
    finished_at: FloatArray
    ttft_s: FloatArray
    tpot_s: FloatArray
    prompt_tokens: IntArray
    output_tokens: IntArray
    running: IntArray  # the instance's load when the request arrived (this one not counted)
    waiting: IntArray
    waiting_tokens: IntArray
    outstanding: IntArray
    tier: tuple[str, ...]  # tier name per request ("default" when the table has none)
    slo_met: npt.NDArray[np.bool_] | None  # as recorded, when the table has it
    num_derived: int  # requests whose load came from the timestamps (see derive_load)
    source: str  # the file it came from

    def __len__(self) -> int:
        return len(self.arrival_at)


def read_table(path: str | Path, required: Sequence[str]) -> pa.Table:
    """A record table, with a clear error for a missing file, bad Parquet or a missing column.

    A decision log (``.jsonl``, :mod:`sincere.predict.live_records`) is read as the
    table of its served requests.
    """
    p = Path(path)
    if not p.is_file():
        raise ConfigError(
            "no such records file", where=p, allowed="a requests.parquet or a decision log"
        )
    if p.suffix in LOG_SUFFIXES:
        table = decision_table(p)
    else:
        try:
            table = pq.read_table(p)
        except (OSError, pa.ArrowException) as exc:
            raise DataError(f"not a Parquet record table ({exc})", path=p) from None
    for name in required:
        if name not in table.column_names:
            raise DataError(
                "missing column (sincere simulate and sincere bench write it)",
                path=p,
                column=name,
                value=table.column_names,
            )
    return table


def _served_rows(table: pa.Table, path: Path) -> IntArray:
    """Positions of requests that finished and were not rejected."""
    n = table.num_rows
    keep = np.ones(n, dtype=np.bool_)
    if "rejected" in table.column_names:
        keep &= ~_numbers(table, "rejected", path).astype(np.bool_)
    if "finished_at" in table.column_names:
        keep &= np.isfinite(_numbers(table, "finished_at", path))
    keep &= _numbers(table, "output_tokens", path) >= 1
    rows = np.flatnonzero(keep)
    if len(rows) == 0:
        raise DataError(f"no served requests among {n} rows", path=path)
    return rows


def _numbers(table: pa.Table, name: str, path: Path) -> FloatArray:
    """A numeric column as floats (null -> NaN); a non-numeric one is a DataError."""
    column = table.column(name)
    if not (pa.types.is_integer(column.type) or pa.types.is_floating(column.type)) and not (
        pa.types.is_boolean(column.type)
    ):
        raise DataError("column is not numeric", path=path, column=name, value=str(column.type))
    return np.asarray(column.to_numpy(zero_copy_only=False), dtype=np.float64)


def _strings(table: pa.Table, name: str, rows: IntArray, missing: str = "") -> tuple[str, ...]:
    """A string column at ``rows``; ``missing`` where the table has no such column or a null."""
    if name not in table.column_names:
        return (missing,) * len(rows)
    values = table.column(name).take(pa.array(rows)).to_pylist()
    return tuple(missing if v is None else str(v) for v in values)


def _check_finite(values: FloatArray, name: str, path: Path, minimum: float) -> None:
    """Every served value finite and >= ``minimum``, or a DataError naming the first bad row."""
    bad = np.flatnonzero(~(np.isfinite(values) & (values >= minimum)))
    if len(bad):
        raise DataError(
            f"served request has an invalid value (need >= {minimum:g})",
            path=path,
            line=int(bad[0]) + 2,
            column=name,
            value=float(values[bad[0]]),
        )


def read_lengths(paths: Sequence[str | Path]) -> Lengths:
    """Served requests' prompt features and output lengths from every file, concatenated."""
    if not paths:
        raise ConfigError("no records files given", allowed="one or more requests.parquet")
    return Lengths.concat([read_lengths_of(p) for p in paths])


def read_lengths_of(path: str | Path) -> Lengths:
    """Served requests' prompt features and output lengths of one file."""
    path = Path(path)
    table = read_table(path, LENGTH_COLUMNS)
    rows = _served_rows(table, path)
    prompt = _numbers(table, "prompt_tokens", path)[rows]
    _check_finite(prompt, "prompt_tokens", path, 1.0)
    texts: tuple[str | None, ...] = (None,) * len(rows)
    if "prompt" in table.column_names:
        texts = tuple(table.column("prompt").take(pa.array(rows)).to_pylist())
    return Lengths(
        prompt.astype(np.int64),
        _numbers(table, "output_tokens", path)[rows].astype(np.int64),
        _strings(table, "model", rows),
        _strings(table, "tier", rows, DEFAULT_TIER.name),
        texts,
    )


def read_served(path: str | Path) -> Served:
    """One run's served requests, their latencies and their instance's load at arrival."""
    p = Path(path)
    table = read_table(p, LATENCY_COLUMNS)
    rows = _served_rows(table, p)
    names = _strings(table, "instance", rows)
    instances = tuple(sorted(set(names)))
    if "" in instances:
        raise DataError("served request without an instance", path=p, column="instance")
    col = {name: _numbers(table, name, p)[rows] for name in LATENCY_COLUMNS[1:]}
    for name, low in (("arrival_at", -math.inf), ("ttft_s", 0.0), ("tpot_s", 0.0)):
        _check_finite(col[name], name, p, low)
    _check_finite(col["prompt_tokens"], "prompt_tokens", p, 1.0)
    order = np.argsort(col["arrival_at"], kind="stable")
    index = {name: i for i, name in enumerate(instances)}
    instance = np.array([index[n] for n in names], dtype=np.int64)[order]
    load, num_derived = _load(table, p, rows[order])
    slo = None
    if "slo_met" in table.column_names:
        slo = np.asarray(table.column("slo_met").to_numpy(zero_copy_only=False))[rows][order]
    return Served(
        instance=instance,
        instances=instances,
        arrival_at=col["arrival_at"][order],
        finished_at=col["finished_at"][order],
        ttft_s=col["ttft_s"][order],
        tpot_s=col["tpot_s"][order],
        prompt_tokens=col["prompt_tokens"][order].astype(np.int64),
        output_tokens=col["output_tokens"][order].astype(np.int64),
        running=load[0],
        waiting=load[1],
        waiting_tokens=load[2],
        outstanding=load[3],
        tier=_strings(table, "tier", rows[order], DEFAULT_TIER.name),
        slo_met=slo,
        num_derived=num_derived,
        source=str(p),
    )


def _load(table: pa.Table, path: Path, rows: IntArray) -> tuple[list[IntArray], int]:
    """The four load columns for ``rows`` (recorded, or derived where missing)."""
    recorded = [
        _numbers(table, name, path)[rows] if name in table.column_names else None
        for name in LOAD_COLUMNS
    ]
    missing = np.zeros(len(rows), dtype=np.bool_)
    for values in recorded:
        missing |= np.ones(len(rows), dtype=np.bool_) if values is None else np.isnan(values)
    if not missing.any():
        return [np.asarray(v, dtype=np.int64) for v in recorded if v is not None], 0
    derived = derive_load(table, path, rows)
    out = []
    for values, fallback in zip(recorded, derived, strict=True):
        merged = fallback if values is None else np.where(missing, fallback, values)
        out.append(np.asarray(merged, dtype=np.int64))
    return out, int(missing.sum())


def derive_load(table: pa.Table, path: Path, rows: IntArray) -> list[IntArray]:
    """Running, waiting, waiting prompt tokens and outstanding at the arrival of ``rows``.

    Derived from the timestamps of the same instance's requests; every routed request
    of the table (served or not) counts as load. See the module docstring.
    """
    every = np.flatnonzero(_routed(table))
    arrival = _numbers(table, "arrival_at", path)
    finished = np.nan_to_num(_numbers(table, "finished_at", path), nan=math.inf)
    admitted = _admitted_at(table, path)
    prompt = _numbers(table, "prompt_tokens", path)
    names = _strings(table, "instance", every)
    out = [np.zeros(len(rows), dtype=np.int64) for _ in range(4)]
    by_name = {
        name: every[np.array([n == name for n in names], dtype=np.bool_)] for name in set(names)
    }
    targets = _strings(table, "instance", rows)
    for name, members in by_name.items():
        mine = np.flatnonzero(np.array([t == name for t in targets], dtype=np.bool_))
        if len(mine):
            _derive_one(members, rows[mine], arrival, finished, admitted, prompt, out, mine)
    return [out[0], out[1], out[2], out[3]]


def _derive_one(
    members: IntArray,
    asked: IntArray,
    arrival: FloatArray,
    finished: FloatArray,
    admitted: FloatArray,
    prompt: FloatArray,
    out: list[IntArray],
    slots: IntArray,
) -> None:
    """Load at the arrival of each ``asked`` request among one instance's ``members``."""
    members = members[np.lexsort((members, arrival[members]))]
    rank = {int(r): k for k, r in enumerate(members.tolist())}
    ahead = np.array([rank[int(r)] for r in asked], dtype=np.int64)  # arrived before it
    t = arrival[asked]
    num_done = np.searchsorted(np.sort(finished[members]), t, side="left")
    adm_order = np.argsort(admitted[members], kind="stable")
    adm_sorted = admitted[members][adm_order]
    num_admitted = np.searchsorted(adm_sorted, t, side="left")
    tokens_arrived = np.concatenate([[0.0], np.cumsum(prompt[members])])
    tokens_admitted = np.concatenate([[0.0], np.cumsum(prompt[members][adm_order])])
    outstanding = ahead - num_done
    waiting = np.maximum(ahead - num_admitted, 0)
    out[0][slots] = np.maximum(outstanding - waiting, 0)
    out[1][slots] = waiting
    out[2][slots] = np.maximum(tokens_arrived[ahead] - tokens_admitted[num_admitted], 0)
    out[3][slots] = outstanding


def _routed(table: pa.Table) -> npt.NDArray[np.bool_]:
    """Requests that reached an instance (served, still running at the end, or cut off)."""
    names = table.column("instance").to_pylist()
    return np.array([bool(n) for n in names], dtype=np.bool_)


def _admitted_at(table: pa.Table, path: Path) -> FloatArray:
    """When each request left the queue: first scheduled, else its first token, else never."""
    out = np.full(table.num_rows, math.inf)
    for name in ("first_token_at", "first_scheduled_at"):
        if name in table.column_names:
            values = _numbers(table, name, path)
            out = np.where(np.isfinite(values), values, out)
    return out
