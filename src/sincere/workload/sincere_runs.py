"""SINCERE's real experiment runs, cell by cell: the ``sincere-runs`` folder layout.

SINCERE published one scheduler log per cell of its study (one H100, granite-7b,
gemma-7b and llama3-8b swapped in and out, HF transformers pipeline, 50 new tokens per
request). Converted, a folder of runs holds:

* ``cells.csv`` -- one row per cell: ``cell`` (its folder), ``env`` (``cc`` /
  ``non-cc``), ``strategy``, ``traffic``, ``mean_rate``, ``sla_s``, ``duration_s``,
  ``received``, ``processed``, ``batches``, ``model_switches`` (the log's switch count:
  model loads, the first one included), ``total_time_s`` and ``total_inference_time_s``
  (the scheduler's own totals; empty when the log has none);
* ``<cell>/requests.csv`` -- ``request_id, model, arrival_s, finished_s, batch_size``:
  ``finished_s`` is the end of the batch that served the request, empty if it never ran
  while the log lasted (times in seconds from the cell's first request);
* ``<cell>/batches.csv`` -- ``model, start_s, end_s, size, processing_s``;
* ``<cell>/loads.csv`` -- ``model, start_s, end_s`` (from "starting to load" to "loaded",
  whatever the server did in between, such as releasing the previous model).

:func:`read_cells` and :func:`read_cell` read and check them: a malformed value raises
:class:`~sincere.core.errors.DataError` naming the file, line, column and value; nothing
is skipped. :func:`read_sincere_runs` is the ``sincere-runs`` trace reader (a cell folder
or its ``requests.csv`` as arrivals and models), so ``sincere trace stats`` / ``convert``
and trace replay accept a cell. The prompts are not in the logs: every request gets
``prompt_tokens`` (a nominal 128; SINCERE's request-level timing does not depend on it)
and generates ``output_tokens`` (50, SINCERE's cap).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from sincere.core.errors import ConfigError, DataError
from sincere.core.request import DEFAULT_TIER, RequestArrays, Tier
from sincere.core.types import ModelName, Seconds
from sincere.workload.mixes import sincere_sla
from sincere.workload.tabular import read_csv_strings, to_numbers

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]

CELLS_FILE = "cells.csv"
CELL_COLUMNS = (
    "cell",
    "env",
    "strategy",
    "traffic",
    "mean_rate",
    "sla_s",
    "duration_s",
    "received",
    "processed",
    "batches",
    "model_switches",
)
OPTIONAL_CELL_COLUMNS = ("total_time_s", "total_inference_time_s")
REQUEST_COLUMNS = ("request_id", "model", "arrival_s", "finished_s", "batch_size")
BATCH_COLUMNS = ("model", "start_s", "end_s", "size", "processing_s")
LOAD_COLUMNS = ("model", "start_s", "end_s")
ENVS = ("cc", "non-cc")
NOMINAL_PROMPT_TOKENS = 128  # the logs carry no prompts; request-level timing ignores them
SINCERE_OUTPUT_TOKENS = 50  # SINCERE's cap on new tokens


@dataclass(frozen=True, slots=True)
class RunCell:
    """One row of ``cells.csv``: a cell's setting and the totals its log reports."""

    name: str  # folder of the cell
    env: str  # "cc" or "non-cc"
    strategy: str  # SINCERE's name, e.g. "BestBatch+Timer"
    traffic: str  # "gamma", "bursty", "ramp", ...
    mean_rate: float  # nominal mean arrival rate, req/s
    sla_s: Seconds  # end-to-end SLA the strategy planned for
    duration_s: Seconds  # nominal length of the run
    received: int  # requests that arrived
    processed: int  # requests whose batch finished while the log lasted
    num_batches: int  # batches the log records
    model_switches: int  # the log's switch count (model loads, the first one included)
    total_time_s: Seconds | None = None  # the scheduler's total time, when logged
    total_inference_time_s: Seconds | None = None  # its total inference time, when logged

    @property
    def cc(self) -> bool:
        """Whether the cell ran in confidential-computing mode."""
        return self.env == "cc"


@dataclass(frozen=True, eq=False)
class CellLog:
    """Everything one cell's log holds, as arrays sorted by time.

    ``models`` names the models by first appearance in ``requests.csv``; the ``*_model``
    arrays index into it. ``finished_s`` is NaN for requests that never ran.
    """

    cell: RunCell
    folder: Path
    models: tuple[ModelName, ...]
    arrival_s: FloatArray  # per request, sorted
    request_model: IntArray
    finished_s: FloatArray
    batch_start_s: FloatArray  # per batch, sorted by start
    batch_end_s: FloatArray
    batch_size: IntArray
    batch_model: IntArray
    load_start_s: FloatArray  # per load, sorted by start
    load_end_s: FloatArray
    load_model: IntArray

    @property
    def end_s(self) -> Seconds:
        """When the log ends: the last logged time, and at least the nominal duration.

        The real run's end: a batch still running then, or a request still queued, was
        never processed.
        """
        times = [self.cell.duration_s]
        for values in (self.arrival_s, self.batch_end_s, self.load_end_s):
            if len(values):
                times.append(float(values.max()))
        return max(times)

    @property
    def num_loads(self) -> int:
        """Model loads in the log."""
        return len(self.load_start_s)

    def to_requests(
        self,
        prompt_tokens: int = NOMINAL_PROMPT_TOKENS,
        output_tokens: int = SINCERE_OUTPUT_TOKENS,
    ) -> RequestArrays:
        """The cell's arrivals and models as a workload, tier = the cell's SLA."""
        return _fixed_length_requests(
            self.arrival_s, self.models, self.request_model, sincere_sla(self.cell.sla_s),
            prompt_tokens, output_tokens,
        )  # fmt: skip


def read_cells(root: str | Path) -> list[RunCell]:
    """Every row of ``root/cells.csv``, checked."""
    path = Path(root) / CELLS_FILE
    if not path.is_file():
        raise DataError("no cells.csv in the runs folder", path=path)
    cols = read_csv_strings(path, CELL_COLUMNS)
    num = len(cols["cell"])
    text = {k: _texts(cols[k], path, k) for k in ("cell", "env", "strategy", "traffic")}
    floats = {
        k: to_numbers(cols[k], path=path, column=k, minimum=0.0)
        for k in ("mean_rate", "sla_s", "duration_s")
    }
    for k in ("sla_s", "duration_s"):
        _require(floats[k] > 0, path, k, cols[k], "expected a number > 0")
    ints = {
        k: to_numbers(cols[k], path=path, column=k, integral=True, minimum=0).astype(np.int64)
        for k in ("received", "processed", "batches", "model_switches")
    }
    optional = {
        k: to_numbers(cols[k], path=path, column=k, minimum=0.0, allow_empty=True)
        if k in cols
        else np.full(num, np.nan)
        for k in OPTIONAL_CELL_COLUMNS
    }
    envs = np.array([e in ENVS for e in text["env"]], dtype=bool)
    _require(envs, path, "env", cols["env"], f"expected one of {list(ENVS)}")
    _require(_first_seen(text["cell"]), path, "cell", cols["cell"], "duplicate cell name")
    return [
        RunCell(
            name=text["cell"][i],
            env=text["env"][i],
            strategy=text["strategy"][i],
            traffic=text["traffic"][i],
            mean_rate=float(floats["mean_rate"][i]),
            sla_s=float(floats["sla_s"][i]),
            duration_s=float(floats["duration_s"][i]),
            received=int(ints["received"][i]),
            processed=int(ints["processed"][i]),
            num_batches=int(ints["batches"][i]),
            model_switches=int(ints["model_switches"][i]),
            total_time_s=_maybe(optional["total_time_s"][i]),
            total_inference_time_s=_maybe(optional["total_inference_time_s"][i]),
        )
        for i in range(num)
    ]


def select_cells(cells: Sequence[RunCell], pattern: str | None) -> list[RunCell]:
    """Cells whose name matches ``pattern`` (shell globs, comma-separated; None = all)."""
    if pattern is None or not pattern.strip():
        return list(cells)
    globs = [p.strip() for p in pattern.split(",") if p.strip()]
    chosen = [c for c in cells if any(fnmatch.fnmatchcase(c.name, g) for g in globs)]
    if not chosen:
        raise ConfigError(
            "no cell matches the pattern",
            value=pattern,
            allowed="shell globs over cell names, e.g. 'cc_*' or '*gamma*,*bursty_mean4*'",
        )
    return chosen


def read_cell(root: str | Path, cell: RunCell) -> CellLog:
    """The log of ``cell`` from its folder under ``root``."""
    folder = Path(root) / cell.name
    if not folder.is_dir():
        raise DataError("cells.csv names a cell without a folder", path=folder, value=cell.name)
    names: dict[str, int] = {}
    arrival, model, finished = _read_requests(folder / "requests.csv", names)
    b_start, b_end, b_size, b_model = _read_batches(folder / "batches.csv", names)
    l_start, l_end, l_model = _read_loads(folder / "loads.csv", names)
    models, remap = _by_first_arrival(names, model)
    return CellLog(
        cell, folder, models, arrival, remap[model], finished,
        b_start, b_end, b_size, remap[b_model], l_start, l_end, remap[l_model],
    )  # fmt: skip


def _by_first_arrival(names: dict[str, int], model: IntArray) -> tuple[tuple[str, ...], IntArray]:
    """Model names in order of their first request (then of appearance), and the index
    map from file order to that order: the same cell reads the same whatever the row order."""
    seen = list(dict.fromkeys(model.tolist()))
    order = seen + [i for i in range(len(names)) if i not in seen]
    remap = np.empty(len(names), dtype=np.int64)
    remap[order] = np.arange(len(order))
    by_ix = {i: n for n, i in names.items()}
    return tuple(by_ix[i] for i in order), remap


def _read_requests(path: Path, names: dict[str, int]) -> tuple[FloatArray, IntArray, FloatArray]:
    cols = _read(path, REQUEST_COLUMNS)
    models = _model_ix(cols["model"], path, names)
    arrival = to_numbers(cols["arrival_s"], path=path, column="arrival_s", minimum=0.0)
    finished = to_numbers(cols["finished_s"], path=path, column="finished_s", allow_empty=True)
    to_numbers(
        cols["batch_size"], path=path, column="batch_size", integral=True, minimum=1,
        allow_empty=True,
    )  # fmt: skip
    early = np.isfinite(finished) & (finished < arrival)
    _require(~early, path, "finished_s", cols["finished_s"], "finished before it arrived")
    order = np.argsort(arrival, kind="stable")
    return arrival[order], models[order], finished[order]


def _read_batches(
    path: Path, names: dict[str, int]
) -> tuple[FloatArray, FloatArray, IntArray, IntArray]:
    cols = _read(path, BATCH_COLUMNS)
    models = _model_ix(cols["model"], path, names)
    start = to_numbers(cols["start_s"], path=path, column="start_s")
    end = to_numbers(cols["end_s"], path=path, column="end_s")
    size = to_numbers(cols["size"], path=path, column="size", integral=True, minimum=1)
    to_numbers(cols["processing_s"], path=path, column="processing_s", minimum=0.0)
    _require(end >= start, path, "end_s", cols["end_s"], "a batch ends before it starts")
    order = np.argsort(start, kind="stable")
    return start[order], end[order], size.astype(np.int64)[order], models[order]


def _read_loads(path: Path, names: dict[str, int]) -> tuple[FloatArray, FloatArray, IntArray]:
    cols = _read(path, LOAD_COLUMNS)
    models = _model_ix(cols["model"], path, names)
    start = to_numbers(cols["start_s"], path=path, column="start_s")
    end = to_numbers(cols["end_s"], path=path, column="end_s")
    _require(end >= start, path, "end_s", cols["end_s"], "a load ends before it starts")
    order = np.argsort(start, kind="stable")
    return start[order], end[order], models[order]


def _read(path: Path, columns: Sequence[str]) -> dict[str, pa.Array]:
    if not path.is_file():
        raise DataError("missing file of the cell", path=path)
    return read_csv_strings(path, columns)


def _texts(values: pa.Array, path: Path, column: str) -> list[str]:
    out = [str(v).strip() for v in values.to_pylist()]
    _require(np.array([bool(v) for v in out], dtype=bool), path, column, values, "empty value")
    return out


def _model_ix(values: pa.Array, path: Path, names: dict[str, int]) -> IntArray:
    """Model names to indices, adding unseen names to ``names`` in order of appearance."""
    texts = _texts(values, path, "model")
    return np.array([names.setdefault(t, len(names)) for t in texts], dtype=np.int64)


def _require(
    ok: npt.NDArray[np.bool_], path: Path, column: str, values: pa.Array, why: str
) -> None:
    """Raise a DataError at the first row where ``ok`` is false (line = row + 2)."""
    if not ok.all():
        i = int(np.argmin(ok))
        raise DataError(why, path=path, line=i + 2, column=column, value=values[i].as_py())


def _first_seen(values: Sequence[str]) -> npt.NDArray[np.bool_]:
    seen: set[str] = set()
    out = np.ones(len(values), dtype=bool)
    for i, v in enumerate(values):
        out[i] = v not in seen
        seen.add(v)
    return out


def _maybe(value: float) -> float | None:
    return None if np.isnan(value) else float(value)


def read_sincere_runs(
    path: Path,
    prompt_tokens: int = NOMINAL_PROMPT_TOKENS,
    output_tokens: int = SINCERE_OUTPUT_TOKENS,
) -> RequestArrays:
    """A cell's arrivals and models as a trace (``path``: its folder or ``requests.csv``).

    Times start at the cell's first request. The tier is the cell's SLA when the
    folder's parent holds a ``cells.csv`` row for it, else the default tier.
    """
    _check_lengths(prompt_tokens, output_tokens)  # before the file is read
    file = path / "requests.csv" if path.is_dir() else path
    names: dict[str, int] = {}
    arrival, model, _ = _read_requests(file, names)
    models, remap = _by_first_arrival(names, model)
    tiers = _cell_tiers(file.parent)
    return _fixed_length_requests(
        arrival - (arrival[0] if len(arrival) else 0.0), models or ("default",), remap[model],
        tiers or (DEFAULT_TIER,), prompt_tokens, output_tokens,
    )  # fmt: skip


def _check_lengths(prompt_tokens: int, output_tokens: int) -> None:
    if prompt_tokens < 1 or output_tokens < 1:
        raise ConfigError(
            "prompt_tokens and output_tokens must be >= 1", value=(prompt_tokens, output_tokens)
        )


def _fixed_length_requests(
    arrival_s: npt.NDArray[np.float64],
    models: Sequence[ModelName],
    model: npt.NDArray[np.int64],
    tiers: Sequence[Tier],
    prompt_tokens: int,
    output_tokens: int,
) -> RequestArrays:
    """Requests arriving at ``arrival_s`` (model and tier indices as given), each with
    ``prompt_tokens`` in and ``output_tokens`` out (also its cap); both must be >= 1."""
    _check_lengths(prompt_tokens, output_tokens)
    n = len(arrival_s)
    out = np.full(n, output_tokens, dtype=np.int64)
    return RequestArrays.build(
        arrival_s, np.full(n, prompt_tokens, dtype=np.int64), out,
        models=models, model=model, tiers=tiers, max_tokens=out.copy(),
    )  # fmt: skip


def _cell_tiers(folder: Path) -> tuple[Tier, ...]:
    """The SLA tier of the cell in ``folder`` when its runs folder lists it."""
    cells_file = folder.parent / CELLS_FILE
    if not cells_file.is_file():
        return ()
    for cell in read_cells(folder.parent):
        if cell.name == folder.name:
            return sincere_sla(cell.sla_s)
    return ()


def write_runs(root: str | Path, logs: Sequence[CellLog]) -> Path:
    """Write ``logs`` in the runs layout under ``root`` (``cells.csv`` and a folder each).

    Times are written with millisecond resolution, as in SINCERE's logs; reading the
    folder back gives the same cells.
    """
    out = Path(root)
    lines = [",".join((*CELL_COLUMNS, *OPTIONAL_CELL_COLUMNS))]
    for log in logs:
        c = log.cell
        totals = ["" if v is None else repr(v) for v in (c.total_time_s, c.total_inference_time_s)]
        values = [c.name, c.env, c.strategy, c.traffic, repr(c.mean_rate), repr(c.sla_s),
                  repr(c.duration_s), str(c.received), str(c.processed), str(c.num_batches),
                  str(c.model_switches), *totals]  # fmt: skip
        lines.append(",".join(values))
        _write_cell(out / c.name, log)
    (out / CELLS_FILE).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return out


def _ms(value: float) -> str:
    return "" if not np.isfinite(value) else f"{value:.3f}"


def _write_cell(folder: Path, log: CellLog) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    names = log.models
    sizes = {float(e): int(n) for e, n in zip(log.batch_end_s, log.batch_size, strict=True)}
    rows = [",".join(REQUEST_COLUMNS)]
    for i, (a, m, f) in enumerate(zip(log.arrival_s, log.request_model, log.finished_s,
                                      strict=True)):  # fmt: skip
        size = str(sizes.get(float(f), "")) if np.isfinite(f) else ""
        rows.append(f"r{i},{names[m]},{_ms(a)},{_ms(f)},{size}")
    (folder / "requests.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    rows = [",".join(BATCH_COLUMNS)]
    for m, s, e, n in zip(log.batch_model, log.batch_start_s, log.batch_end_s, log.batch_size,
                          strict=True):  # fmt: skip
        rows.append(f"{names[m]},{_ms(s)},{_ms(e)},{n},{e - s:.4f}")
    (folder / "batches.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    rows = [",".join(LOAD_COLUMNS)]
    for m, s, e in zip(log.load_model, log.load_start_s, log.load_end_s, strict=True):
        rows.append(f"{names[m]},{_ms(s)},{_ms(e)}")
    (folder / "loads.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
