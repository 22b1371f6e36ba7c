"""Iteration-time samples taken from profile CSVs, the input of every fit.

A step-time model answers "how long does one engine iteration computing this
:class:`~sincere.perf.base.Batch` take", so fitting needs ``(batch, seconds)`` pairs:

* from ``sincere profile local`` rows (``phase``, ``batch_size``, ``context_tokens``,
  ``iteration_s``): each row is one measured forward pass, a prefill of
  ``batch_size`` prompts of ``context_tokens`` tokens or a decode step of
  ``batch_size`` sequences with ``context_tokens`` tokens of context each;
* from ``sincere profile http`` rows (concurrency ``c``, prompt ``p``, output ``o``
  tokens), grouped by ``(c, p)``. With two or more output lengths, the batch's
  processing time is ``prefill + (o − 1)·decode_step`` (all ``c`` requests start
  together), so a line through the points against ``o − 1`` gives the prefill of
  the ``c`` prompts (intercept) and one decode step of ``c`` sequences at the mean
  context ``p + mean(o)/2`` (slope). This uses only the client's start and end
  times, which stay right when a busy server coalesces streamed tokens into bursts
  (a tiny model on a loaded CPU does). With a single output length it falls back to
  the streamed figures: median TTFT as the prefill, mean TPOT as the decode step.
  Both include the HTTP and tokenisation overhead, which the fitted fixed terms
  absorb. Rows with errors are skipped; the prompt length the server reported
  (``measured_prompt_tokens``) wins over the requested one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sincere.core.errors import DataError
from sincere.perf.base import Batch

LOCAL_COLUMNS = ("phase", "batch_size", "context_tokens", "iteration_s")
HTTP_COLUMNS = ("batch_size", "prompt_tokens", "output_tokens", "ttft_p50_s", "tpot_mean_s")


@dataclass(frozen=True, slots=True)
class Sample:
    """One measured iteration."""

    batch: Batch  # what the iteration computed
    time_s: float  # how long it took, seconds
    label: str  # where it comes from, for the per-point table (e.g. "decode c=8 ctx=144")

    @property
    def is_prefill(self) -> bool:
        """Only prompt tokens were computed."""
        return self.batch.num_decode_seqs == 0 and self.batch.prefill_tokens > 0

    @property
    def is_decode(self) -> bool:
        """Only decode tokens were computed."""
        return self.batch.prefill_tokens == 0 and self.batch.num_decode_seqs > 0


def prefill_sample(num_seqs: int, prompt_tokens: int, time_s: float, label: str) -> Sample:
    """``num_seqs`` prompts of ``prompt_tokens`` tokens each, nothing cached."""
    return Sample(Batch.of(prefill=[(prompt_tokens, 0)] * num_seqs), time_s, label)


def decode_sample(num_seqs: int, ctx_tokens: float, time_s: float, label: str) -> Sample:
    """One decode step of ``num_seqs`` sequences with ``ctx_tokens`` of context each."""
    batch = Batch(num_decode_seqs=num_seqs, decode_ctx_tokens=round(num_seqs * ctx_tokens))
    return Sample(batch, time_s, label)


def _positive(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and value > 0 else None


def samples_from_local(rows: Sequence[Mapping[str, Any]]) -> list[Sample]:
    """Samples from ``profile local`` iteration rows (fingerprint rows are skipped)."""
    out: list[Sample] = []
    for row in rows:
        t = _positive(row.get("iteration_s"))
        n, ctx = int(row["batch_size"]), int(row["context_tokens"])
        if t is None or row.get("phase") not in ("prefill", "decode"):
            continue
        if row["phase"] == "prefill":
            out.append(prefill_sample(n, ctx, t, f"prefill c={n} p={ctx}"))
        else:
            out.append(decode_sample(n, ctx, t, f"decode c={n} ctx={ctx}"))
    return out


def samples_from_http(rows: Sequence[Mapping[str, Any]]) -> list[Sample]:
    """Samples from ``profile http`` rows (see the module docstring for the two ways)."""
    groups: dict[tuple[int, int], list[tuple[int, float, Mapping[str, Any]]]] = {}
    for row in rows:
        proc = _positive(row.get("processing time (s)"))
        if row.get("num_errors") or proc is None:
            continue
        c, o = int(row["batch_size"]), int(row["output_tokens"])
        p = round(_positive(row.get("measured_prompt_tokens")) or float(row["prompt_tokens"]))
        groups.setdefault((c, p), []).append((o, proc, row))
    out: list[Sample] = []
    for (c, p), points in sorted(groups.items()):
        if len({o for o, _, _ in points}) >= 2:
            out.extend(_from_processing_times(c, p, points))
        else:
            out.extend(_from_streamed(c, p, points))
    return out


def _from_processing_times(
    c: int, p: int, points: Sequence[tuple[int, float, Mapping[str, Any]]]
) -> list[Sample]:
    """Prefill = intercept and decode step = slope of processing time against ``o − 1``."""
    steps = np.array([o - 1 for o, _, _ in points], dtype=float)
    times = np.array([t for _, t, _ in points], dtype=float)
    slope, intercept = (float(v) for v in np.polyfit(steps, times, 1))
    out = []
    if intercept > 0:
        out.append(prefill_sample(c, p, intercept, f"prefill c={c} p={p}"))
    if slope > 0:
        ctx = p + float(np.mean(steps + 1)) / 2
        out.append(decode_sample(c, ctx, slope, f"decode c={c} ctx={ctx:g}"))
    return out


def _from_streamed(
    c: int, p: int, points: Sequence[tuple[int, float, Mapping[str, Any]]]
) -> list[Sample]:
    """Prefill = median TTFT, decode step = mean TPOT (one output length only)."""
    out = []
    for o, _, row in points:
        ttft, tpot = _positive(row.get("ttft_p50_s")), _positive(row.get("tpot_mean_s"))
        if ttft is not None:
            out.append(prefill_sample(c, p, ttft, f"prefill c={c} p={p}"))
        if tpot is not None:
            ctx = p + o / 2
            out.append(decode_sample(c, ctx, tpot, f"decode c={c} ctx={ctx:g}"))
    return out


def profile_kind(rows: Sequence[Mapping[str, Any]], path: str | Path) -> str:
    """``"local"`` or ``"http"``, told apart by the columns; anything else is an error."""
    columns = set(rows[0]) if rows else set()
    if set(LOCAL_COLUMNS) <= columns:
        return "local"
    if set(HTTP_COLUMNS) <= columns:
        return "http"
    raise DataError(
        "not a sincere profile: need the columns of `profile local` "
        f"({', '.join(LOCAL_COLUMNS)}) or of `profile http` ({', '.join(HTTP_COLUMNS)})",
        path=path,
    )


def samples_from_rows(rows: Sequence[Mapping[str, Any]], path: str | Path) -> list[Sample]:
    """Samples from a local or an http profile, told apart by their columns."""
    if profile_kind(rows, path) == "local":
        samples = samples_from_local(rows)
    else:
        samples = samples_from_http(rows)
    if not samples:
        raise DataError("no usable (error-free, timed) rows in the profile", path=path)
    return samples
