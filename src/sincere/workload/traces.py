"""Trace readers and writers: published request traces to and from :class:`RequestArrays`.

Formats (names for ``format=``; :func:`detect_format` guesses from extension and header):

* ``azure`` -- Azure LLM inference trace CSV, 2023 and 2024 layouts
  (``TIMESTAMP,ContextTokens,GeneratedTokens``; timestamps with any sub-second
  precision, with or without a zone offset). Microsoft, CC-BY 4.0.
* ``burstgpt`` -- BurstGPT CSV (``Timestamp,Model,Request tokens,Response tokens,Total
  tokens,Log Type``; seconds). Rows with 0 response tokens are failed requests in its
  log: dropped with a warning (``drop_failed=False`` makes them an error).
* ``sharegpt`` -- ShareGPT JSON (a list of ``{"conversations": [{"from", "value"}...]}``);
  the first human turn is the prompt and the next assistant turn the output, both
  counted by :func:`count_tokens`. No times: arrivals come from ``arrival`` (required:
  without it the reader refuses, rather than invent a rate) and ``seed``.
* ``vidur`` -- Vidur's processed traces (CSV): ``arrived_at`` (seconds, optional),
  ``num_prefill_tokens``, ``num_decode_tokens``; other columns (``num_total_tokens``,
  ``pd_ratio``) are ignored. Without ``arrived_at`` (Vidur's length-only traces)
  arrivals come from ``arrival`` (required, as for ShareGPT) and ``seed``.
  :func:`read_lengths` reads any trace for its lengths only.
* ``mooncake`` -- Mooncake JSONL (``timestamp`` in ms, ``input_length``,
  ``output_length``, ``hash_ids``: the ids of the prompt's 512-token blocks, kept as the
  requests' ``block_ids`` for prefix caching; a list that is not of integers or has more
  blocks than the prompt is refused with file, line and value).
* ``sincere-prompts`` -- SINCERE's prompt JSONL / JSON (``{"prompt", "model_alias"}``);
  every request generates ``max_new_tokens`` (50, SINCERE's cap); arrivals as ShareGPT.
* ``sincere-runs`` -- one cell of SINCERE's real runs (its folder, or its
  ``requests.csv``): arrivals and models as they came (see
  :mod:`sincere.workload.sincere_runs`).
* ``sincere-csv`` / ``sincere-parquet`` -- our own request table, read and written
  losslessly: ``arrival_at, model, prompt_tokens, output_tokens, tier, priority,
  max_tokens`` plus the tier's targets (``tier_ttft_s, tier_ttlt_s, tier_tbt_s,
  tier_priority``), ``budget_usd`` and, when known, ``prompt``.

Third-party traces are shifted to start at 0 and stably sorted by time. A malformed row
raises :class:`DataError` with file, line, column and value; nothing is skipped silently.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from sincere.core.errors import ConfigError, DataError
from sincere.core.registry import Registry
from sincere.core.request import RequestArrays
from sincere.workload import request_table, sincere_runs
from sincere.workload.arrivals import ArrivalProcess, Constant
from sincere.workload.tabular import (
    count_tokens,
    csv_header,
    read_csv_strings,
    to_numbers,
    to_seconds,
)

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]
Reader = Callable[..., RequestArrays]
Writer = Callable[[RequestArrays, Path], None]

TRACE_READERS: Registry[Reader] = Registry("trace format")
"""Reader functions ``(path, **options) -> RequestArrays`` by format name."""
TRACE_WRITERS: Registry[Writer] = Registry("trace output format")
"""Writer functions ``(requests, path) -> None`` by format name."""

AZURE_COLUMNS = ("TIMESTAMP", "ContextTokens", "GeneratedTokens")
BURSTGPT_COLUMNS = ("Timestamp", "Model", "Request tokens", "Response tokens")
VIDUR_COLUMNS = ("num_prefill_tokens", "num_decode_tokens")
VIDUR_TIME = "arrived_at"
SINCERE_COLUMNS = (
    "arrival_at",
    "model",
    "prompt_tokens",
    "output_tokens",
    "tier",
    "priority",
    "max_tokens",
)


def read_trace(path: str | Path, format: str | None = None, **options: Any) -> RequestArrays:
    """Read a trace file; ``format`` overrides detection (see the module docstring)."""
    p = Path(path)
    if p.is_dir() and (p / "requests.csv").is_file() and format in (None, "sincere-runs"):
        return TRACE_READERS.get("sincere-runs")(p, **options)  # a sincere-runs cell folder
    if not p.is_file():
        raise DataError("no such trace file", path=p)
    fmt = format or detect_format(p)
    return TRACE_READERS.get(fmt)(p, **options)


class NoArrivalTimesError(ConfigError):
    """A trace without arrival times was read for its arrivals, with no process to make them."""


LENGTH_ONLY_FORMATS = ("sharegpt", "vidur", "sincere-prompts")
"""Formats that may carry no arrival times (Vidur's only without ``arrived_at``)."""


def read_lengths(path: str | Path, format: str | None = None) -> RequestArrays:
    """A trace read for its (prompt, output) lengths only: a format without arrival times
    gets placeholder ones (one per second), which the caller must not use."""
    p = Path(path)
    fmt = format or (detect_format(p) if p.is_file() else None)
    placeholder: dict[str, Any] = {"arrival": Constant(rate=1.0)}
    return read_trace(p, format, **(placeholder if fmt in LENGTH_ONLY_FORMATS else {}))


def output_format(path: str | Path, format: str | None = None) -> str:
    """The writer format for ``path``: ``format`` if given (checked), else from the extension
    (.csv or .parquet: ours). Raises before anything is read or written."""
    p = Path(path)
    fmt = format or {".parquet": "sincere-parquet", ".csv": "sincere-csv"}.get(p.suffix.lower())
    if fmt is None:
        raise ConfigError(
            "cannot tell the output format from the extension",
            where=p,
            value=p.suffix,
            allowed=TRACE_WRITERS.names(),
        )
    TRACE_WRITERS.get(fmt)  # an unknown name raises, listing the writers
    return fmt


def write_trace(requests: RequestArrays, path: str | Path, format: str | None = None) -> None:
    """Write ``requests``; the format defaults from the extension (.csv or .parquet: ours)."""
    p = Path(path)
    writer = TRACE_WRITERS.get(output_format(p, format))
    p.parent.mkdir(parents=True, exist_ok=True)
    writer(requests, p)


def detect_format(path: Path) -> str:
    """The format of ``path``, from its extension and first line or record."""
    suffix = path.suffix.lower()
    if suffix in (".parquet", ".pq"):
        return "sincere-parquet"
    if suffix == ".csv":
        return _detect_csv(path)
    if suffix in (".jsonl", ".json"):
        return _detect_json(path)
    raise DataError(
        f"unknown trace extension {suffix!r}; pass format= one of {TRACE_READERS.names()}",
        path=path,
    )


def _detect_csv(path: Path) -> str:
    header = set(csv_header(path))
    for fmt, cols in (
        ("azure", AZURE_COLUMNS),
        ("burstgpt", BURSTGPT_COLUMNS),
        ("vidur", VIDUR_COLUMNS),
        ("sincere-csv", SINCERE_COLUMNS[:4]),
        ("sincere-runs", sincere_runs.REQUEST_COLUMNS[1:4]),
    ):
        if header.issuperset(cols):
            return fmt
    raise DataError(f"CSV header {sorted(header)} matches no known trace format", path=path, line=1)


def _detect_json(path: Path) -> str:
    with path.open(encoding="utf-8") as f:
        head = f.read(65536).lstrip()
    keys = head[:4096]
    if '"conversations"' in keys:
        return "sharegpt"
    if '"input_length"' in keys:
        return "mooncake"
    if '"prompt"' in keys:
        return "sincere-prompts"
    raise DataError(
        "JSON record matches no known trace format (sharegpt, mooncake, sincere-prompts)",
        path=path,
        line=1,
    )


def _assemble(
    arrival_s: FloatArray,
    prompt_tokens: IntArray,
    output_tokens: IntArray,
    *,
    model_names: Sequence[str] | None = None,
    prompts: Sequence[str] = (),
    max_tokens: IntArray | None = None,
    block_ids: Sequence[IntArray] = (),
    block_tokens: int = 0,
) -> RequestArrays:
    """Shift to start at 0, sort stably by time and pack; models by first appearance."""
    order = np.argsort(arrival_s, kind="stable")
    t = arrival_s[order] - (arrival_s[order[0]] if len(order) else 0.0)
    models: tuple[str, ...] = ("default",)
    model_ix = np.zeros(len(t), dtype=np.int64)
    if model_names is not None and len(model_names):
        names, first, inverse = np.unique(
            np.asarray(model_names, dtype=object).astype(str),
            return_index=True,
            return_inverse=True,
        )
        rank = np.argsort(np.argsort(first))  # order of first appearance
        models = tuple(str(n) for n in names[np.argsort(first)])
        model_ix = rank[inverse][order]
    return RequestArrays.build(
        t,
        prompt_tokens[order],
        output_tokens[order],
        models=models,
        model=model_ix,
        max_tokens=None if max_tokens is None else max_tokens[order],
        prompts=[prompts[i] for i in order] if prompts else (),
        block_ids=[block_ids[i] for i in order] if block_ids else (),
        block_tokens=block_tokens if block_ids else 0,
    )


@TRACE_READERS.register("azure")
def read_azure(path: Path) -> RequestArrays:
    """Azure LLM inference trace CSV (2023 or 2024 layout)."""
    cols = read_csv_strings(path, AZURE_COLUMNS)
    t = to_seconds(cols["TIMESTAMP"], path=path, column="TIMESTAMP")
    prompt = to_numbers(
        cols["ContextTokens"], path=path, column="ContextTokens", integral=True, minimum=1
    )
    output = to_numbers(
        cols["GeneratedTokens"], path=path, column="GeneratedTokens", integral=True, minimum=1
    )
    return _assemble(t, prompt.astype(np.int64), output.astype(np.int64))


@TRACE_READERS.register("burstgpt")
def read_burstgpt(path: Path, drop_failed: bool = True) -> RequestArrays:
    """BurstGPT CSV; ``drop_failed`` drops (with a warning) rows with 0 response tokens."""
    cols = read_csv_strings(path, BURSTGPT_COLUMNS)
    t = to_numbers(cols["Timestamp"], path=path, column="Timestamp")
    floor = 0 if drop_failed else 1
    prompt = to_numbers(
        cols["Request tokens"], path=path, column="Request tokens", integral=True, minimum=1
    )
    output = to_numbers(
        cols["Response tokens"], path=path, column="Response tokens", integral=True, minimum=floor
    )
    models = cols["Model"].to_pylist()
    keep = output >= 1
    if not keep.all():
        warnings.warn(
            f"{path}: dropped {int((~keep).sum())} failed BurstGPT requests (0 response tokens)",
            stacklevel=2,
        )
        models = [m for m, k in zip(models, keep, strict=True) if k]
    return _assemble(
        t[keep], prompt[keep].astype(np.int64), output[keep].astype(np.int64), model_names=models
    )


@TRACE_READERS.register("vidur")
def read_vidur(path: Path, arrival: ArrivalProcess | None = None, seed: int = 0) -> RequestArrays:
    """Vidur's processed trace CSV: arrived_at (optional), prefill and decode tokens."""
    cols = read_csv_strings(path, VIDUR_COLUMNS)
    prompt, output = (
        to_numbers(cols[c], path=path, column=c, integral=True, minimum=1).astype(np.int64)
        for c in VIDUR_COLUMNS
    )
    if VIDUR_TIME in cols:
        t = to_numbers(cols[VIDUR_TIME], path=path, column=VIDUR_TIME, minimum=0)
    else:
        t = _arrivals_for(len(prompt), arrival, seed, path)
    return _assemble(t, prompt, output)


def _json_records(path: Path) -> Iterator[tuple[int, Any]]:
    """(line or record number, parsed record) from a JSON list or a JSONL file."""
    text = path.read_text(encoding="utf-8")
    if text.lstrip().startswith("["):
        try:
            records = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DataError(f"invalid JSON: {exc.msg}", path=path, line=exc.lineno) from None
        yield from enumerate(records, start=1)
        return
    for line, raw in enumerate(text.splitlines(), start=1):
        if raw.strip():
            try:
                yield line, json.loads(raw)
            except json.JSONDecodeError as exc:
                raise DataError(
                    f"invalid JSON: {exc.msg}", path=path, line=line, value=raw[:80]
                ) from None


def _field(path: Path, line: int, record: Any, key: str, kind: type) -> Any:
    if not isinstance(record, dict) or key not in record:
        raise DataError("missing field", path=path, line=line, column=key, value=record)
    value = record[key]
    ok = isinstance(value, kind) and not isinstance(value, bool)
    if kind is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        ok = ok and math.isfinite(value)
    if not ok:
        raise DataError(f"expected {kind.__name__}", path=path, line=line, column=key, value=value)
    return value


MOONCAKE_BLOCK_TOKENS = 512
"""Prompt tokens per entry of Mooncake's ``hash_ids``."""
_INT64_MAX = 2**63 - 1  # the largest id a block id array holds


def _hash_ids(path: Path, line: int, record: dict[str, Any], prompt_tokens: int) -> IntArray:
    """A record's ``hash_ids`` (missing: none), checked: integers, no more than the prompt has."""
    ids = record.get("hash_ids", [])
    ok = isinstance(ids, list) and set(map(type, ids)) <= {int}  # bool is not int here
    # checked in Python (a few ids a record): no array reduction per record
    if ok and ids and (min(ids) < 0 or max(ids) > _INT64_MAX):
        ok = False
    if not ok:
        raise DataError(
            "expected a list of integers >= 0 (ids of 512-token prompt blocks)",
            path=path,
            line=line,
            column="hash_ids",
            value=ids,
        )
    most = -(-prompt_tokens // MOONCAKE_BLOCK_TOKENS)
    if len(ids) > most:
        raise DataError(
            f"{len(ids)} blocks of {MOONCAKE_BLOCK_TOKENS} tokens is more than the "
            f"{prompt_tokens}-token prompt has (at most {most})",
            path=path,
            line=line,
            column="hash_ids",
            value=ids,
        )
    return np.array(ids, dtype=np.int64)


@TRACE_READERS.register("mooncake")
def read_mooncake(path: Path) -> RequestArrays:
    """Mooncake JSONL: ``timestamp`` (ms), ``input_length``, ``output_length``, ``hash_ids``."""
    rows: list[tuple[float, int, int]] = []
    blocks: list[IntArray] = []
    for line, rec in _json_records(path):
        t = _field(path, line, rec, "timestamp", float)
        vals = [_field(path, line, rec, k, int) for k in ("input_length", "output_length")]
        for key, v in zip(("input_length", "output_length"), vals, strict=True):
            if v < 1:
                raise DataError(
                    "expected an integer >= 1", path=path, line=line, column=key, value=v
                )
        rows.append((t / 1000.0, vals[0], vals[1]))
        blocks.append(_hash_ids(path, line, rec, vals[0]))
    arr = np.array(rows, dtype=np.float64).reshape(-1, 3)
    has_ids = any(len(b) for b in blocks)
    return _assemble(
        arr[:, 0],
        arr[:, 1].astype(np.int64),
        arr[:, 2].astype(np.int64),
        block_ids=blocks if has_ids else (),
        block_tokens=MOONCAKE_BLOCK_TOKENS,
    )


def _arrivals_for(n: int, arrival: ArrivalProcess | None, seed: int, path: Path) -> FloatArray:
    """Arrival times from ``arrival`` for a trace without its own; refused without one."""
    if arrival is None:
        raise NoArrivalTimesError(
            "this trace has no arrival times (lengths only), and no arrival process was given",
            where=path,
            allowed="its lengths with an arrival process: in a workload `lengths: {source: "
            "FILE}` beside `arrival: {kind: poisson, rate: R}` (or any arrival kind); in "
            "Python read_trace(FILE, arrival=Poisson(rate=R))",
        )
    t = arrival.times(np.random.default_rng(seed), num_requests=n)
    if len(t) < n:
        raise ConfigError(f"the arrival process gave {len(t)} times for {n} requests")
    return t


@TRACE_READERS.register("sharegpt")
def read_sharegpt(
    path: Path, arrival: ArrivalProcess | None = None, seed: int = 0
) -> RequestArrays:
    """ShareGPT JSON: first (human, assistant) turn pair of each conversation."""
    prompts: list[str] = []
    replies: list[str] = []
    num_short = 0
    for num, rec in _json_records(path):
        turns = _field(path, num, rec, "conversations", list)
        if len(turns) < 2:
            num_short += 1
            continue
        for k, turn in enumerate(turns[:2]):
            if not isinstance(turn, dict) or not isinstance(turn.get("value"), str):
                raise DataError(
                    "turn without a text 'value'",
                    path=path,
                    line=num,
                    column=f"conversations[{k}]",
                    value=turn,
                )
        prompts.append(turns[0]["value"])
        replies.append(turns[1]["value"])
    if num_short:
        warnings.warn(
            f"{path}: skipped {num_short} conversations with fewer than 2 turns", stacklevel=2
        )
    t = _arrivals_for(len(prompts), arrival, seed, path)
    return _assemble(t, count_tokens(prompts), count_tokens(replies), prompts=prompts)


@TRACE_READERS.register("sincere-prompts")
def read_sincere_prompts(
    path: Path, arrival: ArrivalProcess | None = None, seed: int = 0, max_new_tokens: int = 50
) -> RequestArrays:
    """SINCERE prompts (``{"prompt", "model_alias"}``); each generates ``max_new_tokens``."""
    prompts: list[str] = []
    models: list[str] = []
    for line, rec in _json_records(path):
        prompts.append(_field(path, line, rec, "prompt", str))
        models.append(_field(path, line, rec, "model_alias", str))
    if max_new_tokens < 1:
        raise ConfigError("max_new_tokens must be >= 1", value=max_new_tokens)
    n = len(prompts)
    t = _arrivals_for(n, arrival, seed, path)
    out = np.full(n, max_new_tokens, dtype=np.int64)
    return _assemble(
        t, _counts_by_model(prompts, models), out, model_names=models, prompts=prompts,
        max_tokens=out.copy(),
    )  # fmt: skip


def _counts_by_model(prompts: list[str], models: list[str]) -> IntArray:
    """Token counts of ``prompts``, each with its model's tokenizer when that is at hand."""
    counts = np.empty(len(prompts), dtype=np.int64)
    for model in dict.fromkeys(models):
        rows = [k for k, m in enumerate(models) if m == model]
        counts[rows] = count_tokens([prompts[k] for k in rows], model)
    return counts


TRACE_READERS.register("sincere-runs")(sincere_runs.read_sincere_runs)
TRACE_READERS.register("sincere-csv")(request_table.read_sincere_csv)
TRACE_READERS.register("sincere-parquet")(request_table.read_sincere_parquet)
TRACE_WRITERS.register("sincere-csv")(request_table.write_sincere_csv)
TRACE_WRITERS.register("sincere-parquet")(request_table.write_sincere_parquet)
TRACE_WRITERS.register("azure")(request_table.write_azure)
TRACE_WRITERS.register("mooncake")(request_table.write_mooncake)
TRACE_WRITERS.register("burstgpt")(request_table.write_burstgpt)
TRACE_WRITERS.register("vidur")(request_table.write_vidur)
