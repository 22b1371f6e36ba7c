"""Record tables from decision logs: what the gateway served, in the form predictors read.

Both drivers write a decision log when asked (``--decisions FILE`` on ``sincere
simulate`` and ``sincere serve``; :mod:`sincere.policy.decision_log`): every front-door
call with the request and every candidate's view, and every outcome. That is all a
learned predictor needs, so a log converts to the record table ``requests.parquet``
holds (:func:`decision_table`), one row per routed request:

* ``instance``, ``model``, ``tier``, ``prompt_tokens`` -- from the last routing call
  of the request (a request re-routed after a failure counts where it finished);
* ``arrival_at`` -- the request's arrival; ``finished_at`` -- its outcome's time;
  ``first_token_at`` -- arrival plus TTFT;
  ``ttft_s`` (the whole answer's time when the first token was not measured),
  ``tpot_s`` and ``output_tokens`` from the outcome (rows without one are left out:
  still running when the log ended);
* the chosen instance's load when it was routed (``arrival_num_running``, ...) from
  its view; a field the driver did not know (a live engine that reports no queue) is
  null, and :func:`~sincere.predict.records.read_served` derives it from the timestamps.

Logs name the file format ``.jsonl``; :func:`~sincere.predict.records.read_table` reads
them through here, so ``sincere predict train`` / ``eval`` take live records as they
take simulated ones.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pyarrow as pa

from sincere.core.errors import DataError
from sincere.core.records import LOAD_COLUMNS
from sincere.predict.latency import time_per_output_token

LOG_SUFFIXES: tuple[str, ...] = (".jsonl", ".ndjson")
"""File suffixes read as decision logs rather than Parquet tables."""

SCHEMA = pa.schema(
    [("id", pa.int64()), ("instance", pa.string()), ("model", pa.string()), ("tier", pa.string())]
    + [(name, pa.float64()) for name in ("arrival_at", "finished_at", "first_token_at")]
    + [(name, pa.float64()) for name in ("ttft_s", "tpot_s")]
    + [("prompt_tokens", pa.int64()), ("output_tokens", pa.int64())]
    + [(name, pa.int64()) for name in LOAD_COLUMNS]
)
"""The columns of a decision log's record table."""

_LOAD = {column: column.removeprefix("arrival_") for column in LOAD_COLUMNS}
"""Each load column and the view field it is read from."""


def _routes_and_outcomes(path: Path) -> tuple[dict[int, dict[str, Any]], dict[int, Any]]:
    """The last routing call and the outcome of each request id."""
    routes: dict[int, dict[str, Any]] = {}
    outcomes: dict[int, dict[str, Any]] = {}
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                event = record["event"]
                if event in ("decide", "place") and record["decision"]["kind"] == "route":
                    routes[int(record["request"]["id"])] = record
                elif event == "outcome":
                    outcomes[int(record["request"])] = record
            except (ValueError, KeyError, TypeError) as exc:
                raise DataError(
                    f"not a decision log record ({exc!r})", path=path, line=number
                ) from None
    return routes, outcomes


def _row(route: dict[str, Any], outcome: dict[str, Any]) -> dict[str, Any]:
    """One served request's columns."""
    req, chosen = route["request"], route["decision"]["instance"]
    view: dict[str, Any] = next((v for v in route["candidates"] if v["id"] == chosen), {})
    e2e, out = float(outcome["e2e_s"]), int(outcome["output_tokens"])
    ttft = e2e if outcome["ttft_s"] is None else float(outcome["ttft_s"])
    row = {
        "id": int(req["id"]),
        "instance": str(outcome["instance"]),
        "model": str(req["model"]),
        "tier": str(req["tier"][0]),
        "arrival_at": float(req["arrival_at"]),
        "finished_at": float(outcome["at"]),
        "first_token_at": float(req["arrival_at"]) + ttft,
        "ttft_s": ttft,
        "tpot_s": time_per_output_token(ttft, e2e, out),
        "prompt_tokens": int(req["prompt_tokens"]),
        "output_tokens": out,
    }
    same = str(outcome["instance"]) == chosen
    for column, field in _LOAD.items():
        value = view.get(field) if same else None
        row[column] = None if value is None or not math.isfinite(value) else int(value)
    return row


def decision_table(path: str | Path) -> pa.Table:
    """The record table of a decision log's served requests, in arrival order.

    Raises :class:`~sincere.core.errors.DataError` naming the file and line of a record
    that is not a decision log's, and when no routed request finished.
    """
    p = Path(path)
    routes, outcomes = _routes_and_outcomes(p)
    rows = [_row(routes[i], outcomes[i]) for i in routes if i in outcomes]
    if not rows:
        raise DataError(
            f"no served request in the decision log ({len(routes)} routed, "
            f"{len(outcomes)} outcomes)",
            path=p,
        )
    rows.sort(key=lambda r: (r["arrival_at"], r["id"]))
    return pa.Table.from_pylist(rows, schema=SCHEMA)
