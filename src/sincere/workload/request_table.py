"""Our own request-table format (CSV or Parquet), plus writers for third-party layouts.

The table holds one row per request, in arrival order, and round-trips a
:class:`RequestArrays` exactly: core columns ``arrival_at`` (s), ``model``,
``prompt_tokens``, ``output_tokens``, ``tier``, ``priority``, ``max_tokens``; then the
tier's targets ``tier_ttft_s``, ``tier_ttlt_s``, ``tier_tbt_s`` (empty / null = no
target) and ``tier_priority``, ``budget_usd`` (empty = none), and ``prompt`` when the
requests carry text. Only the first four columns are required when reading.

Writers for other layouts (``azure``, ``mooncake``, ``burstgpt``, ``vidur``) let ``sincere trace
convert`` produce files other tools read; the Azure writer dates the first request
2023-11-16 00:00:00.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from sincere.core.errors import ConfigError, DataError
from sincere.core.request import RequestArrays, Tier
from sincere.workload.tabular import read_csv_strings, to_numbers

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

REQUIRED = ("arrival_at", "model", "prompt_tokens", "output_tokens")
_INT_COLUMNS = ("prompt_tokens", "output_tokens", "priority", "max_tokens", "tier_priority")
_FLOAT_COLUMNS = ("arrival_at", "tier_ttft_s", "tier_ttlt_s", "tier_tbt_s", "budget_usd")
_TARGETS = ("ttft_s", "ttlt_s", "tbt_s")


def to_table(requests: RequestArrays) -> pa.Table:
    """The request table of ``requests`` (see the module docstring)."""
    tiers = requests.tiers

    def target(attr: str) -> FloatArray:
        per_tier = np.array([getattr(t, attr) or np.nan for t in tiers], dtype=np.float64)
        return np.asarray(per_tier[requests.tier], dtype=np.float64)

    columns: dict[str, object] = {
        "arrival_at": requests.arrival_at,
        "model": np.asarray(requests.models, dtype=object)[requests.model],
        "prompt_tokens": requests.prompt_tokens,
        "output_tokens": requests.output_tokens,
        "tier": np.asarray([t.name for t in tiers], dtype=object)[requests.tier],
        "priority": requests.priority,
        "max_tokens": requests.max_tokens,
        **{f"tier_{a}": pa.array(target(a), from_pandas=True) for a in _TARGETS},
        "tier_priority": np.array([t.priority for t in tiers], dtype=np.int64)[requests.tier],
        "budget_usd": pa.array(requests.budget_usd, from_pandas=True),
    }
    if requests.prompts:
        columns["prompt"] = pa.array(list(requests.prompts), type=pa.string())
    return pa.table(columns)


def write_sincere_csv(requests: RequestArrays, path: Path) -> None:
    """Write the request table as CSV."""
    pacsv.write_csv(to_table(requests), path)


def write_sincere_parquet(requests: RequestArrays, path: Path) -> None:
    """Write the request table as Parquet."""
    pq.write_table(to_table(requests), path)


def read_sincere_csv(path: Path) -> RequestArrays:
    """Read a request table written as CSV (errors name the line and column)."""
    cols = read_csv_strings(path, REQUIRED)
    numbers: dict[str, FloatArray] = {}
    for name in (*_FLOAT_COLUMNS, *_INT_COLUMNS):
        if name in cols:
            numbers[name] = to_numbers(
                cols[name],
                path=path,
                column=name,
                integral=name in _INT_COLUMNS,
                minimum=1 if name in ("prompt_tokens", "output_tokens", "max_tokens") else None,
                allow_empty=name.startswith("tier_") or name == "budget_usd",
            )
    text: dict[str, list[str | None]] = {
        k: cols[k].to_pylist() for k in ("model", "tier", "prompt") if k in cols
    }
    return _from_columns(path, numbers, text)


def read_sincere_parquet(path: Path) -> RequestArrays:
    """Read a request table written as Parquet."""
    try:
        table = pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise DataError(f"unreadable Parquet file: {exc}", path=path) from None
    missing = [c for c in REQUIRED if c not in table.column_names]
    if missing:
        raise DataError(f"missing column(s) {missing}", path=path, value=table.column_names)
    numbers: dict[str, FloatArray] = {}
    for name in (*_FLOAT_COLUMNS, *_INT_COLUMNS):
        if name in table.column_names:
            numbers[name] = _parquet_numbers(path, table, name)
    text = {
        k: table.column(k).to_pylist()
        for k in ("model", "tier", "prompt")
        if k in table.column_names
    }
    return _from_columns(path, numbers, text)


def _parquet_numbers(path: Path, table: pa.Table, name: str) -> FloatArray:
    import pyarrow.compute as pc  # (here: most runs read no request table)

    try:
        col = pc.cast(table.column(name), pa.float64())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        raise DataError(
            "expected numbers", path=path, column=name, value=str(table.schema.field(name).type)
        ) from None
    x = np.asarray(col.to_numpy(), dtype=np.float64)
    bad = ~np.isfinite(x) if name in REQUIRED else np.isinf(x)
    if name in _INT_COLUMNS:
        bad |= np.isnan(x) | (np.isfinite(x) & (x != np.round(x)))
    if name in ("prompt_tokens", "output_tokens", "max_tokens"):
        bad |= x < 1
    if bad.any():
        i = int(np.argmax(bad))
        raise DataError(f"bad value in row {i + 1}", path=path, column=name, value=x[i])
    return x


def _tiers(
    path: Path, numbers: dict[str, FloatArray], names: list[str]
) -> tuple[tuple[Tier, ...], IntArray]:
    """Tiers by first appearance of their name; every row of a tier must agree on targets."""
    uniq, first, inverse = np.unique(
        np.asarray(names, dtype=str), return_index=True, return_inverse=True
    )
    n = len(names)
    fields = [numbers.get(f"tier_{a}", np.full(n, np.nan)) for a in _TARGETS]
    fields.append(numbers.get("tier_priority", np.zeros(n)))
    for col, arr in zip((*_TARGETS, "priority"), fields, strict=True):
        ref = arr[first][inverse]
        differ = ~((ref == arr) | (np.isnan(ref) & np.isnan(arr)))
        if differ.any():
            i = int(np.argmax(differ))
            raise DataError(
                f"tier {names[i]!r} has another {col} on an earlier row",
                path=path,
                line=i + 2,
                column=f"tier_{col}",
                value=arr[i],
            )
    appear = np.argsort(first)
    tiers = []
    for u in appear:
        j = first[u]
        vals = [None if np.isnan(f[j]) else float(f[j]) for f in fields[:3]]
        try:
            tier = Tier(str(uniq[u]), vals[0], vals[1], vals[2], priority=int(fields[3][j]))
        except ConfigError as exc:
            raise DataError(str(exc), path=path, line=int(j) + 2, column="tier") from None
        tiers.append(tier)
    return tuple(tiers), np.argsort(appear)[inverse].astype(np.int64)


def _from_columns(
    path: Path, numbers: dict[str, FloatArray], text: dict[str, list[str | None]]
) -> RequestArrays:
    n = len(numbers["arrival_at"])
    if np.any(np.diff(numbers["arrival_at"]) < 0):
        i = int(np.argmax(np.diff(numbers["arrival_at"]) < 0)) + 1
        raise DataError(
            "arrival_at must not decrease",
            path=path,
            line=i + 2,
            column="arrival_at",
            value=numbers["arrival_at"][i],
        )
    model_names = [str(m) for m in text["model"]]
    models = tuple(dict.fromkeys(model_names)) or ("default",)
    index = {m: i for i, m in enumerate(models)}
    tier_names = [str(t) for t in text["tier"]] if "tier" in text else ["default"] * n
    tiers, tier_ix = _tiers(path, numbers, tier_names)
    ints = {k: numbers[k].astype(np.int64) for k in _INT_COLUMNS if k in numbers}
    prompts = text.get("prompt", [])
    return RequestArrays.build(
        numbers["arrival_at"],
        ints["prompt_tokens"],
        ints["output_tokens"],
        models=models,
        model=np.array([index[m] for m in model_names], dtype=np.int64),
        tiers=tiers or (Tier("default"),),
        tier=tier_ix,
        max_tokens=ints.get("max_tokens"),
        priority=ints.get("priority"),
        budget_usd=numbers.get("budget_usd"),
        prompts=[p if p is None else str(p) for p in prompts],
    )


AZURE_EPOCH = np.datetime64("2023-11-16T00:00:00", "ns")


def write_azure(requests: RequestArrays, path: Path) -> None:
    """Write the Azure 2023 CSV layout (7-digit fractional seconds, like the original)."""
    stamps = AZURE_EPOCH + np.round(requests.arrival_at * 1e9).astype("timedelta64[ns]")
    text = np.datetime_as_string(stamps, unit="ns")
    trimmed = [s.replace("T", " ")[:-2] for s in text.tolist()]  # 100 ns ticks, as the trace
    table = pa.table(
        {
            "TIMESTAMP": trimmed,
            "ContextTokens": requests.prompt_tokens,
            "GeneratedTokens": requests.output_tokens,
        }
    )
    pacsv.write_csv(table, path, pacsv.WriteOptions(quoting_style="none"))


def write_vidur(requests: RequestArrays, path: Path) -> None:
    """Write Vidur's processed-trace CSV (``arrived_at`` in seconds, token counts)."""
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["arrived_at", "num_prefill_tokens", "num_decode_tokens"])
        writer.writerows(
            zip(
                requests.arrival_at.tolist(),
                requests.prompt_tokens.tolist(),
                requests.output_tokens.tolist(),
                strict=True,
            )
        )


def write_mooncake(requests: RequestArrays, path: Path) -> None:
    """Write Mooncake JSONL (timestamp in integer ms); ``hash_ids`` are the requests' block
    ids when they have 512-token ones, else empty."""
    ms = np.round(requests.arrival_at * 1000.0).astype(np.int64)
    keep = bool(requests.block_ids) and requests.block_tokens == 512
    with path.open("w", encoding="utf-8") as f:
        for i, (t, p, o) in enumerate(
            zip(
                ms.tolist(),
                requests.prompt_tokens.tolist(),
                requests.output_tokens.tolist(),
                strict=True,
            )
        ):
            ids = requests.block_ids[i].tolist() if keep else []
            rec = {"timestamp": t, "input_length": p, "output_length": o, "hash_ids": ids}
            f.write(json.dumps(rec) + "\n")


def write_burstgpt(requests: RequestArrays, path: Path) -> None:
    """Write the BurstGPT CSV layout (Log Type is ``Conversation log``)."""
    n = len(requests)
    table = pa.table(
        {
            "Timestamp": requests.arrival_at,
            "Model": np.asarray(requests.models, dtype=object)[requests.model],
            "Request tokens": requests.prompt_tokens,
            "Response tokens": requests.output_tokens,
            "Total tokens": requests.prompt_tokens + requests.output_tokens,
            "Log Type": ["Conversation log"] * n,
        }
    )
    pacsv.write_csv(table, path)
