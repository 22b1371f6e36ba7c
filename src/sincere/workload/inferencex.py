"""InferenceX's closed-loop operating points: one CSV row per measured configuration.

The file (AIConfigurator's ``silicon_sample.csv`` layout, rows from the public InferenceX
database) holds one benchmark point a row: a serving configuration run at a fixed
concurrency with fixed input and output lengths (``ignore_eos``), and the measured means.

* ``id`` (unique), ``silicon_data_source`` (free text; ``silicon_concurrency=N`` in it, when
  present, is the number of clients the benchmark ran);
* ``backend`` (``vllm``, ``sglang``, ``trtllm``), ``backend_version`` (may be empty),
  ``model_path`` (a Hugging Face id), ``system`` (AIConfigurator's system name: ``h100_sxm``,
  ``h200_sxm``, ``b200_sxm``, ``b300_sxm``, ``gb200``, ``gb300``, ...; any non-empty name is
  read, and the replay says which it cannot place), ``precision`` (``fp8``, ``fp4``,
  ``bf16``, ``int4``; empty: not stated),
  ``gemm_quant_mode`` and ``moe_quant_mode`` (free text: ``nvfp4``, ``fp8_block``, ...);
* ``mode``: ``agg`` (prefill and decode on the same engines) or ``disagg`` (a prefill /
  decode split described by the ``prefill_*`` and ``decode_*`` columns);
* ``isl``, ``osl``: input and output tokens of every request;
* ``batch_size``: concurrent requests per attention-data-parallel rank of an ``agg`` point
  (the clients are ``batch_size x attention_dp_size``; 0 or empty on ``disagg`` rows);
* ``tp_size``, ``pp_size``, ``attention_dp_size``, ``moe_tp_size``, ``moe_ep_size``: the
  ``agg`` engine's parallelism (empty on ``disagg`` rows; 0 or empty: not stated);
* ``prefill_`` / ``decode_`` + ``batch_size``, ``num_workers``, ``tp_size``, ``pp_size``,
  ``attention_dp_size``, ``moe_tp_size``, ``moe_ep_size``: each side of a ``disagg`` point;
* ``silicon_ttft_ms``, ``silicon_tpot_ms``: the measured mean TTFT and TPOT, ms (> 0).

:func:`read_operating_points` reads and checks the whole file before anything uses it; a
missing column, a bad value or a duplicate id raises :class:`~sincere.core.errors.DataError`
naming the file, line, column, value and what is allowed. :func:`select_points` keeps the
rows a ``key=value,...`` filter names.
"""

from __future__ import annotations

import csv
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

from sincere.core.csv_lines import refuse_blank_lines
from sincere.core.errors import ConfigError, DataError

BACKENDS = ("vllm", "sglang", "trtllm")
SYSTEMS = ("b200_sxm", "b300_sxm", "gb200", "gb300")
"""The systems of the Blackwell file (``../shared/data/serving-runs/inferencex``); rows of
other systems are read too (:func:`read_operating_points`)."""
PRECISIONS = ("fp8", "fp4", "bf16", "int4")
MODES = ("agg", "disagg")
GROUP_FIELDS = (
    "batch_size",
    "num_workers",
    "tp_size",
    "pp_size",
    "attention_dp_size",
    "moe_tp_size",
    "moe_ep_size",
)
PARALLEL_COLUMNS = ("tp_size", "pp_size", "attention_dp_size", "moe_tp_size", "moe_ep_size")
REQUIRED_COLUMNS = (
    "id",
    "silicon_data_source",
    "backend",
    "backend_version",
    "model_path",
    "system",
    "precision",
    "mode",
    "isl",
    "osl",
    "gemm_quant_mode",
    "moe_quant_mode",
    "batch_size",
    *PARALLEL_COLUMNS,
    *(f"{side}_{f}" for side in ("prefill", "decode") for f in GROUP_FIELDS),
    "silicon_ttft_ms",
    "silicon_tpot_ms",
)
FILTER_KEYS = ("backend", "backend_version", "model", "system", "precision", "mode")
"""Fields a ``--filter`` may name (``model`` is the row's ``model_path``)."""
_CONCURRENCY = re.compile(r"silicon_concurrency=(\d+)")


@dataclass(frozen=True)
class WorkerGroup:
    """One side of a disaggregated point; None where the row leaves a column empty."""

    batch_size: int | None  # concurrent requests per worker
    num_workers: int | None  # engines on this side
    tp: int | None
    pp: int | None
    attention_dp: int | None
    moe_tp: int | None
    moe_ep: int | None


@dataclass(frozen=True)
class OperatingPoint:
    """One measured closed-loop point (module docstring); None: the row leaves it empty."""

    id: str
    line: int  # the row's line in the file (the header is line 1)
    backend: str
    backend_version: str  # "" when not recorded
    model: str  # model_path, a Hugging Face id
    system: str
    precision: str  # "" when not stated
    gemm_quant: str
    moe_quant: str
    mode: str
    isl: int  # input tokens per request
    osl: int  # output tokens per request
    batch_size: int  # concurrent requests per attention-DP rank (agg); 0 or as given on disagg
    tp: int | None
    pp: int | None
    attention_dp: int | None
    moe_tp: int | None
    moe_ep: int | None
    prefill: WorkerGroup | None  # disagg rows only
    decode: WorkerGroup | None
    source_concurrency: int | None  # silicon_concurrency=N of silicon_data_source
    ttft_ms: float  # measured mean TTFT
    tpot_ms: float  # measured mean TPOT

    @property
    def clients(self) -> int:
        """Concurrent clients of an agg point: ``batch_size x`` its attention-DP ranks."""
        return self.batch_size * max(self.attention_dp or 1, 1)


class _Row:
    """One CSV row and where it is, for values checked with a full error."""

    def __init__(self, path: Path, line: int, values: dict[str, str]) -> None:
        self.path, self.line, self.values = path, line, values

    def error(self, column: str, message: str) -> DataError:
        return DataError(
            message, path=self.path, line=self.line, column=column, value=self.values.get(column)
        )

    def text(self, column: str) -> str:
        return (self.values.get(column) or "").strip()

    def choice(self, column: str, allowed: Sequence[str], *, empty: bool = False) -> str:
        value = self.text(column)
        if value in allowed or (empty and not value):
            return value
        extra = " (or empty)" if empty else ""
        raise self.error(column, f"unknown value; allowed: {', '.join(allowed)}{extra}")

    def count(self, column: str, minimum: int = 0) -> int:
        value = self.optional_count(column, minimum)
        if value is None:
            raise self.error(column, f"missing; allowed: an integer >= {minimum}")
        return value

    def optional_count(self, column: str, minimum: int = 0) -> int | None:
        text = self.text(column)
        if not text:
            return None
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not math.isfinite(value) or value != int(value) or value < minimum:
            raise self.error(column, f"expected an integer >= {minimum} (or empty)")
        return int(value)

    def positive(self, column: str) -> float:
        try:
            value = float(self.text(column))
        except ValueError:
            value = math.nan
        if not math.isfinite(value) or value <= 0:
            raise self.error(column, "expected a finite number > 0")
        return value


def _group(row: _Row, side: str) -> WorkerGroup | None:
    values = [row.optional_count(f"{side}_{f}") for f in GROUP_FIELDS]
    return None if all(v is None for v in values) else WorkerGroup(*values)


def _source_concurrency(text: str) -> int | None:
    match = _CONCURRENCY.search(text)
    return int(match.group(1)) if match else None


def _point(row: _Row) -> OperatingPoint:
    mode = row.choice("mode", MODES)
    agg = mode == "agg"
    parallel = {
        c: row.optional_count(c, 1 if agg and c == "tp_size" else 0) for c in PARALLEL_COLUMNS
    }
    if agg and parallel["tp_size"] is None:
        raise row.error("tp_size", "missing on an agg row; allowed: an integer >= 1")
    point_id = row.text("id")
    if not point_id:
        raise row.error("id", "missing; allowed: a non-empty identifier")
    return OperatingPoint(
        id=point_id,
        line=row.line,
        backend=row.choice("backend", BACKENDS),
        backend_version=row.text("backend_version"),
        model=row.text("model_path") or _missing(row, "model_path"),
        system=row.text("system") or _missing(row, "system"),
        precision=row.choice("precision", PRECISIONS, empty=True),
        gemm_quant=row.text("gemm_quant_mode"),
        moe_quant=row.text("moe_quant_mode"),
        mode=mode,
        isl=row.count("isl", 1),
        osl=row.count("osl", 1),
        batch_size=row.count("batch_size", 1) if agg else row.optional_count("batch_size") or 0,
        tp=parallel["tp_size"],
        pp=parallel["pp_size"],
        attention_dp=parallel["attention_dp_size"],
        moe_tp=parallel["moe_tp_size"],
        moe_ep=parallel["moe_ep_size"],
        prefill=None if agg else _group(row, "prefill"),
        decode=None if agg else _group(row, "decode"),
        source_concurrency=_source_concurrency(row.text("silicon_data_source")),
        ttft_ms=row.positive("silicon_ttft_ms"),
        tpot_ms=row.positive("silicon_tpot_ms"),
    )


def _missing(row: _Row, column: str) -> NoReturn:
    raise row.error(column, "missing; allowed: a non-empty value")


def read_operating_points(path: str | Path) -> list[OperatingPoint]:
    """Every row of ``path`` as an :class:`OperatingPoint`, in file order (module docstring)."""
    path = Path(path)
    if not path.is_file():
        raise DataError("no such file", path=path)
    refuse_blank_lines(path)
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = [c for c in REQUIRED_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise DataError(
                f"missing columns {', '.join(missing)}; the file needs "
                f"{', '.join(REQUIRED_COLUMNS)}",
                path=path,
                line=1,
            )
        points = [_point(_Row(path, reader.line_num, row)) for row in reader]
    if not points:
        raise DataError("no operating points (only a header)", path=path)
    seen: dict[str, int] = {}
    for p in points:
        if p.id in seen:
            raise DataError(
                f"duplicate id (first on line {seen[p.id]})",
                path=path,
                line=p.line,
                column="id",
                value=p.id,
            )
        seen[p.id] = p.line
    return points


def parse_filter(text: str) -> dict[str, set[str]]:
    """``"backend=vllm,system=b200_sxm,backend=sglang"`` -> ``{key: {values}}``.

    Values of one key are alternatives; different keys must all hold. Raises
    :class:`ConfigError` on a term without ``=`` or a key not in :data:`FILTER_KEYS`.
    """
    wanted: dict[str, set[str]] = {}
    for term in (t.strip() for t in text.split(",")):
        if not term:
            continue
        key, sep, value = term.partition("=")
        key = key.strip()
        if not sep or not value.strip():
            raise ConfigError("a filter term is key=value", where="--filter", value=term)
        if key not in FILTER_KEYS:
            raise ConfigError(
                "unknown filter key", where="--filter", value=key, allowed=FILTER_KEYS
            )
        wanted.setdefault(key, set()).add(value.strip())
    return wanted


def _field(point: OperatingPoint, key: str) -> str:
    return point.model if key == "model" else str(getattr(point, key))


def select_points(
    points: Sequence[OperatingPoint], wanted: dict[str, set[str]]
) -> list[OperatingPoint]:
    """The points whose every filtered field holds one of its wanted values, in order."""
    return [p for p in points if all(_field(p, k) in v for k, v in wanted.items())]
