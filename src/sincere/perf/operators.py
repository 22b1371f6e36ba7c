"""Operator-level GPU kernel profiles, read from the layout Vidur publishes.

One accelerator's folder holds CSV files named by what they time (times are the
``time_stats.<op>.median`` columns, **milliseconds per layer per GPU**):

* ``mlp_<model>.csv`` -- the linear work of one layer, one row per
  (``num_tokens``, ``num_tensor_parallel_workers``): the GEMMs ``attn_pre_proj`` (QKV),
  ``attn_post_proj`` (O), ``mlp_up_proj`` (gate + up), ``mlp_down_proj`` and the
  elementwise ops ``input_layernorm``, ``post_attention_layernorm``, ``attn_rope``,
  ``mlp_act``, ``add``; at TP > 1 a row is one GPU's shard, without communication. The
  architecture columns (``n_head``, ``n_kv_head``, ``n_embd``, ``n_expanded_embd``,
  ``use_gated_mlp``) are checked against the catalog model ``<model>`` names.
* ``attention_<model>_tp<N>.csv`` -- attention kernels of one per-GPU shape (query and
  KV heads per GPU, head size): ``attn_prefill`` by (``prefill_chunk_size``,
  ``kv_cache_size``) at batch 1, ``attn_decode`` by (``batch_size``, ``kv_cache_size``).
  Any model with the same per-GPU shape at its TP may use it.
* ``all_reduce_<topology>.csv`` -- NCCL all-reduce by ``size`` (bytes),
  ``num_workers`` and ``devices_per_node``.
* ``engine_steps_<model>_tp<N>.csv`` -- whole engine steps by ``batch_size``: the CPU
  parts ``schedule``, ``sampler_e2e``, ``prepare_inputs_e2e``,
  ``process_model_outputs`` (medians, ms).

Other files (``send_recv_*.csv`` and the like) are listed in
:attr:`OperatorProfiles.unused` and otherwise ignored. Lookups interpolate: the token
count of the linear work is rounded up to a multiple of 8 (the profiles' grid below
1,024 tokens, which keeps the steps the GEMMs take just above multiples of 128),
attention is interpolated along each measured row and then across rows, and
all-reduce times are a running median over five neighbouring sizes (small messages
vary by 2-5x from one size to the next; the median keeps the level and the
bandwidth). Beyond the grids, times grow proportionally (tokens, batch, context) and
a prefill chunk longer than the longest profiled one is timed as successive chunks.
"""

from __future__ import annotations

import csv
import math
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt

from sincere.catalog.loader import Catalog, default_catalog
from sincere.catalog.specs import ModelArch
from sincere.core.errors import ConfigError, DataError

FArray = npt.NDArray[np.float64]

GEMM_OPS = ("attn_pre_proj", "attn_post_proj", "mlp_up_proj", "mlp_down_proj")
ELEMENTWISE_OPS = ("input_layernorm", "post_attention_layernorm", "attn_rope", "mlp_act", "add")
LINEAR_OPS = GEMM_OPS + ELEMENTWISE_OPS
CPU_COLUMNS = ("schedule", "sampler_e2e", "prepare_inputs_e2e", "process_model_outputs")
TOKEN_ROUNDING = 8  # the linear work is looked up at the token count rounded up to this
DECODE_KV_ROUNDING = 64  # decode attention is looked up at the mean context rounded up to this
_ARCH_CHECKS = (  # mlp file column -> ModelArch field
    ("n_embd", "hidden_size"),
    ("n_expanded_embd", "intermediate_size"),
    ("n_head", "num_heads"),
    ("n_kv_head", "num_kv_heads"),
)
_ATTENTION_NAME = re.compile(r"^attention_(?P<model>.+)_tp(?P<tp>\d+)$")
_STEPS_NAME = re.compile(r"^engine_steps_(?P<model>.+)_tp(?P<tp>\d+)$")
HOW_TO_ADD_MODEL = (
    "add it to a catalog file (see docs/catalog.md: a YAML file with a 'models:' entry "
    "giving num_params_b, num_layers, hidden_size, intermediate_size, num_heads, "
    "num_kv_heads, vocab_size, max_context and source, listed in $SINCERE_CATALOG "
    "or given with --catalog), or give it an alias of an existing entry"
)


def round_up(value: float, multiple: int) -> int:
    """``value`` rounded up to a multiple of ``multiple`` (at least ``multiple``)."""
    return max(multiple, multiple * math.ceil(value / multiple))


@dataclass(frozen=True, slots=True)
class AttentionShape:
    """What an attention kernel's time depends on: heads and head size on one GPU."""

    q_heads: int  # query heads per GPU
    kv_heads: int  # KV heads per GPU (replicated when TP exceeds the KV head count)
    head_size: int  # dimension of one head

    @classmethod
    def of(cls, model: ModelArch, tp: int) -> AttentionShape:
        """The per-GPU attention shape of ``model`` split over ``tp`` GPUs."""
        return cls(
            max(1, model.num_heads // tp),
            max(1, math.ceil(model.num_kv_heads / tp)),
            model.head_size,
        )

    def __str__(self) -> str:
        return f"{self.q_heads} q / {self.kv_heads} kv heads of {self.head_size}"


@dataclass(frozen=True)
class LinearTable:
    """One model's linear-work profile at one TP degree."""

    model: ModelArch  # the catalog model the file names
    tp: int  # tensor-parallel degree of the rows
    tokens: FArray  # sorted token counts
    op_ms: Mapping[str, FArray]  # operator -> ms per layer per GPU at ``tokens``
    total_ms: FArray  # all operators summed at ``tokens``
    source: str  # the file

    def layer_ms(self, num_tokens: float) -> float:
        """All nine operators at ``num_tokens`` (rounded up to a multiple of 8), ms."""
        if num_tokens <= 0:
            return 0.0
        x = round_up(num_tokens, TOKEN_ROUNDING)
        if x > self.tokens[-1]:  # beyond the grid: proportional to the tokens
            return float(self.total_ms[-1] * x / self.tokens[-1])
        return float(np.interp(x, self.tokens, self.total_ms))


@dataclass(frozen=True)
class Curve:
    """Measured ``(x, ms)`` points: linear in between, the first value below them, and
    above them the slope of the upper half of the points (least squares, so one noisy
    last point does not set it)."""

    xs: FArray  # sorted
    ys: FArray  # ms at ``xs``
    tail_slope: float  # ms per unit of x beyond the last point

    @classmethod
    def of(cls, xs: FArray, ys: FArray) -> Curve:
        """The curve through these points."""
        upper = slice(len(xs) // 2, None)
        slope = float(np.polyfit(xs[upper], ys[upper], 1)[0]) if len(xs[upper]) >= 2 else 0.0
        return cls(xs, ys, max(slope, 0.0))

    def at(self, x: float) -> float:
        """The value at ``x``."""
        if x > self.xs[-1]:
            return float(self.ys[-1] + self.tail_slope * (x - self.xs[-1]))
        return float(np.interp(x, self.xs, self.ys))


@dataclass(frozen=True)
class _Rows:
    """Measurements on rows of a grid whose rows may have different columns."""

    keys: FArray  # row values, sorted (chunk size or batch size)
    rows: tuple[Curve, ...]  # per row: ms against the column value (context tokens)

    def at(self, key: float, x: float) -> float:
        """Interpolated along the two rows around ``key``, then across them."""
        keys = self.keys
        if len(keys) == 1:
            return self._row(0, x)
        i = int(np.clip(np.searchsorted(keys, key, side="right") - 1, 0, len(keys) - 2))
        low, high = self._row(i, x), self._row(i + 1, x)
        frac = (key - keys[i]) / (keys[i + 1] - keys[i])
        if key > keys[-1]:  # beyond the last row: grow proportionally
            return float(high * key / keys[-1])
        return max(0.0, float(low + (high - low) * max(frac, 0.0)))

    def _row(self, i: int, x: float) -> float:
        return self.rows[i].at(x)


@dataclass(frozen=True)
class AttentionTable:
    """Attention kernel times of one per-GPU shape."""

    shape: AttentionShape  # heads and head size on one GPU
    prefill: _Rows  # by chunk size, then cached context
    decode: _Rows  # by batch size, then context per sequence
    source: str  # the file
    max_chunk: int  # longest profiled prefill chunk

    def prefill_ms(self, chunk: float, cached: float) -> float:
        """One prefill chunk of ``chunk`` tokens with ``cached`` tokens before it, ms."""
        total, done = 0.0, 0.0
        while chunk - done > 0:
            piece = min(float(self.max_chunk), chunk - done)
            total += self.prefill.at(piece, cached + done)
            done += piece
        return total

    def decode_ms(self, num_seqs: float, mean_context: float) -> float:
        """Decode attention of ``num_seqs`` sequences at this mean context (rounded up to 64)."""
        if num_seqs <= 0:
            return 0.0
        return self.decode.at(num_seqs, round_up(mean_context, DECODE_KV_ROUNDING))


@dataclass(frozen=True)
class AllReduceTable:
    """All-reduce times of one node topology, by group (workers, devices per node)."""

    topology: str  # from the file name, e.g. "dgx", "pairwise_nvlink"
    groups: Mapping[tuple[int, int], Curve]  # -> smoothed ms against size
    raw: Mapping[tuple[int, int], tuple[FArray, FArray]]  # -> (sizes, median ms as measured)
    source: str  # the file

    def time_ms(self, size_bytes: float, num_workers: int) -> float:
        """One all-reduce of ``size_bytes`` over ``num_workers`` GPUs of one node, ms."""
        key = (num_workers, num_workers)
        if key not in self.groups:
            raise ConfigError(
                "no single-node all-reduce profile for this many GPUs",
                where=self.source,
                value=num_workers,
                allowed=sorted(str(w) for w, d in self.groups if w == d),
            )
        return self.groups[key].at(size_bytes)


@dataclass(frozen=True)
class EngineStepsTable:
    """CPU time of whole engine steps by batch size (one model, one TP)."""

    model: ModelArch  # the catalog model the file names
    tp: int  # tensor-parallel degree
    cpu: Curve  # schedule + sampler + prepare inputs + process outputs, ms by batch size
    source: str  # the file

    def step_ms(self, num_seqs: float) -> float:
        """CPU time of one step with ``num_seqs`` sequences, ms."""
        return self.cpu.at(num_seqs)


@dataclass(frozen=True)
class OperatorProfiles:
    """Everything read from one accelerator's folder."""

    folder: Path  # the accelerator's folder
    linear: Mapping[tuple[str, int], LinearTable]  # (catalog model name, tp) -> table
    attention: tuple[AttentionTable, ...]  # one per profiled shape
    all_reduce: Mapping[str, AllReduceTable]  # topology -> table
    engine_steps: tuple[EngineStepsTable, ...]
    unused: tuple[str, ...] = field(default=())  # files of the folder not read

    @property
    def models(self) -> list[str]:
        """Catalog names of the profiled models."""
        return sorted({m for m, _ in self.linear})

    @property
    def files(self) -> list[str]:
        """File names that were read, sorted."""
        names = {Path(t.source).name for t in self.linear.values()}
        names |= {Path(t.source).name for t in self.attention}
        names |= {Path(t.source).name for t in self.all_reduce.values()}
        names |= {Path(t.source).name for t in self.engine_steps}
        return sorted(names)

    def linear_table(self, model: str, tp: int) -> LinearTable:
        """The linear-work table of ``model`` at ``tp``; a missing one raises."""
        table = self.linear.get((model, tp))
        if table is None:
            have = [f"{m} tp{t}" for m, t in sorted(self.linear)]
            raise ConfigError(
                "no linear-work profile for this model and TP",
                where=self.folder,
                value=f"{model} tp{tp}",
                allowed=have,
            )
        return table

    def attention_table(self, shape: AttentionShape) -> AttentionTable | None:
        """The attention table with exactly this per-GPU shape, if profiled."""
        return next((t for t in self.attention if t.shape == shape), None)

    def topology(self, name: str | None = None) -> AllReduceTable:
        """The all-reduce table ``name``; ``None``: one with "dgx" in its name, else the first."""
        if not self.all_reduce:
            raise ConfigError("no all_reduce_*.csv in the profiles", where=self.folder)
        if name is None:
            names = sorted(self.all_reduce)
            name = next((n for n in names if "dgx" in n), names[0])
        if name not in self.all_reduce:
            raise ConfigError(
                "unknown all-reduce topology", value=name, allowed=sorted(self.all_reduce)
            )
        return self.all_reduce[name]

    def steps_table(self, model: str, tp: int) -> EngineStepsTable | None:
        """The engine-steps table of ``model`` at ``tp``, else any other one, else None."""
        own = [t for t in self.engine_steps if t.model.name == model and t.tp == tp]
        candidates = own or list(self.engine_steps)
        return candidates[0] if candidates else None


# --- reading -----------------------------------------------------------------------------
def accelerator_folder(directory: str | Path, accelerator: str) -> Path:
    """The folder of ``accelerator`` under ``directory`` (any case), or ``directory`` itself.

    ``directory`` may be the accelerator's own folder (it holds ``mlp_*.csv``) or the
    folder above it. The accelerator's catalog name and aliases are tried as names.
    """
    root = Path(directory)
    if not root.is_dir():
        raise ConfigError("profile folder not found", value=str(root))
    if any(root.glob("mlp_*.csv")):
        return root
    wanted = {accelerator.lower()}
    catalog = default_catalog()
    if catalog.has_accelerator(accelerator):
        acc = catalog.accelerator(accelerator)
        wanted |= {acc.name.lower(), *(a.lower() for a in acc.aliases)}
    subfolders = sorted(p for p in root.iterdir() if p.is_dir())
    for sub in subfolders:
        if sub.name.lower() in wanted:
            return sub
    raise ConfigError(
        "no profile folder for this accelerator",
        where=root,
        value=accelerator,
        allowed=[p.name for p in subfolders] or "a folder holding mlp_<model>.csv",
    )


def read_operator_profiles(folder: str | Path, catalog: Catalog | None = None) -> OperatorProfiles:
    """Read every profile file of one accelerator's ``folder`` (see the module docstring)."""
    folder = Path(folder)
    catalog = catalog or default_catalog()
    files = sorted(folder.glob("*.csv"))
    mlp = [p for p in files if p.stem.startswith("mlp_")]
    if not mlp:
        raise ConfigError("no mlp_<model>.csv in the profile folder", where=folder)
    models = _resolve_models([p.stem[4:] for p in mlp], catalog, folder)
    linear: dict[tuple[str, int], LinearTable] = {}
    for path in mlp:
        for table in read_linear(path, models[path.stem[4:]]):
            linear[(table.model.name, table.tp)] = table
    attention: list[AttentionTable] = []
    steps: list[EngineStepsTable] = []
    reduce: dict[str, AllReduceTable] = {}
    unused: list[str] = []
    for path in files:
        if path in mlp:
            continue
        if _ATTENTION_NAME.match(path.stem):
            attention.append(read_attention(path))
        elif match := _STEPS_NAME.match(path.stem):
            model = _resolve_models([match["model"]], catalog, folder)[match["model"]]
            steps.append(read_engine_steps(path, model, int(match["tp"])))
        elif path.stem.startswith("all_reduce_"):
            topology = read_all_reduce(path)
            reduce[topology.topology] = topology
        else:
            unused.append(path.name)
    return OperatorProfiles(folder, linear, tuple(attention), reduce, tuple(steps), tuple(unused))


def _resolve_models(names: Iterable[str], catalog: Catalog, folder: Path) -> dict[str, ModelArch]:
    """Catalog models of the file names; unknown ones raise together, saying how to add them."""
    names = list(names)
    unknown = [n for n in names if not catalog.has_model(n)]
    if unknown:
        raise ConfigError(
            f"profiled models not in the catalog: {', '.join(unknown)}; {HOW_TO_ADD_MODEL}",
            where=folder,
            value=unknown,
        )
    return {n: catalog.model(n) for n in names}


def _read_rows(path: Path, required: Sequence[str]) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        columns = reader.fieldnames or []
        for col in required:
            if col not in columns:
                raise DataError("missing column", path=path, column=col)
        rows = list(reader)
    if not rows:
        raise DataError("no rows", path=path)
    return rows


def _number(row: Mapping[str, str], column: str, path: Path, line: int) -> float:
    text = row.get(column, "")
    try:
        value = float(text)
    except ValueError:
        raise DataError("not a number", path=path, line=line, column=column, value=text) from None
    if not math.isfinite(value) or value < 0:
        raise DataError("must be a finite number >= 0", path=path, line=line, column=column)
    return value


def read_linear(path: str | Path, model: ModelArch) -> list[LinearTable]:
    """One table per TP degree of an ``mlp_<model>.csv``; duplicate rows give their median."""
    path = Path(path)
    gemm_cols = [f"time_stats.{op}.median" for op in GEMM_OPS]
    rows = _read_rows(path, ["num_tokens", "num_tensor_parallel_workers", *gemm_cols])
    _check_arch(rows[0], model, path)
    ops = [op for op in LINEAR_OPS if f"time_stats.{op}.median" in rows[0]]
    points: dict[int, dict[int, list[list[float]]]] = defaultdict(lambda: defaultdict(list))
    for line, row in enumerate(rows, start=2):
        num_tokens = int(_number(row, "num_tokens", path, line))
        tp = int(_number(row, "num_tensor_parallel_workers", path, line))
        values = [_op_ms(row, op, path, line) for op in ops]
        points[tp][num_tokens].append(values)
    tables = []
    for tp, by_tokens in sorted(points.items()):
        grid = np.array(sorted(by_tokens), dtype=np.float64)
        medians = np.array([np.median(by_tokens[int(t)], axis=0) for t in grid])
        op_ms = {op: medians[:, i] for i, op in enumerate(ops)}
        tables.append(LinearTable(model, tp, grid, op_ms, medians.sum(axis=1), str(path)))
    return tables


def _op_ms(row: Mapping[str, str], op: str, path: Path, line: int) -> float:
    """An operator's median; an empty elementwise cell is an operator the model lacks (0)."""
    column = f"time_stats.{op}.median"
    if op in ELEMENTWISE_OPS and row.get(column, "").strip().lower() in ("", "nan"):
        return 0.0
    return _number(row, column, path, line)


def _check_arch(row: Mapping[str, str], model: ModelArch, path: Path) -> None:
    """The file's architecture columns must agree with the catalog entry."""
    for column, attr in _ARCH_CHECKS:
        if column in row and row[column] and int(float(row[column])) != getattr(model, attr):
            raise DataError(
                f"disagrees with catalog model {model.name!r} ({attr} = {getattr(model, attr)})",
                path=path,
                line=2,
                column=column,
                value=row[column],
            )
    gated = row.get("use_gated_mlp")
    if gated in ("True", "False") and (gated == "True") != model.gated_mlp:
        raise DataError(
            f"disagrees with catalog model {model.name!r} (gated_mlp = {model.gated_mlp})",
            path=path,
            line=2,
            column="use_gated_mlp",
            value=gated,
        )


def read_attention(path: str | Path) -> AttentionTable:
    """An ``attention_<model>_tp<N>.csv``: prefill and decode rows of one per-GPU shape."""
    path = Path(path)
    cols = ["n_q_head", "n_kv_head", "n_embd", "num_tensor_parallel_workers", "is_prefill"]
    rows = _read_rows(path, [*cols, "batch_size", "prefill_chunk_size", "kv_cache_size"])
    first = rows[0]
    tp = int(_number(first, "num_tensor_parallel_workers", path, 2))
    heads, kv_heads = (
        int(_number(first, "n_q_head", path, 2)),
        int(_number(first, "n_kv_head", path, 2)),
    )
    shape = AttentionShape(
        max(1, heads // tp),
        max(1, math.ceil(kv_heads / tp)),
        int(_number(first, "n_embd", path, 2)) // heads,
    )
    prefill: dict[float, dict[float, list[float]]] = defaultdict(lambda: defaultdict(list))
    decode: dict[float, dict[float, list[float]]] = defaultdict(lambda: defaultdict(list))
    for line, row in enumerate(rows, start=2):
        kv = _number(row, "kv_cache_size", path, line)
        if row["is_prefill"] == "True":
            if _number(row, "batch_size", path, line) != 1:
                continue  # prefill rows are timed one chunk at a time
            chunk = _number(row, "prefill_chunk_size", path, line)
            prefill[chunk][kv].append(_number(row, "time_stats.attn_prefill.median", path, line))
        else:
            batch = _number(row, "batch_size", path, line)
            decode[batch][kv].append(_number(row, "time_stats.attn_decode.median", path, line))
    if not prefill or not decode:
        raise DataError("needs both prefill and decode rows", path=path, column="is_prefill")
    return AttentionTable(shape, _rows(prefill), _rows(decode), str(path), int(max(prefill)))


def _rows(points: Mapping[float, Mapping[float, Sequence[float]]]) -> _Rows:
    """Rows of curves. A row with fewer than 8 points (a long prefill chunk has few
    profiled contexts) takes its tail slope from the well-measured rows (the median of
    slope / row value, times its own row value): the work per extra context token grows
    with the chunk (or the batch)."""
    keys = sorted(points)
    curves = []
    for key in keys:
        xs = np.array(sorted(points[key]), dtype=float)
        curves.append(Curve.of(xs, np.array([float(np.median(points[key][x])) for x in xs])))
    measured = [c.tail_slope / k for k, c in zip(keys, curves, strict=True) if len(c.xs) >= 8]
    if measured:
        per_key = float(np.median(measured))
        for i, curve in enumerate(curves):
            if len(curve.xs) < 8:
                curves[i] = Curve(curve.xs, curve.ys, per_key * keys[i])
    return _Rows(np.array(keys, dtype=float), tuple(curves))


def read_all_reduce(path: str | Path) -> AllReduceTable:
    """An ``all_reduce_<topology>.csv``; medians per size, smoothed over five neighbours."""
    path = Path(path)
    value_col = "time_stats.all_reduce.median"
    rows = _read_rows(path, ["size", "num_workers", "devices_per_node", value_col])
    points: dict[tuple[int, int], dict[float, list[float]]] = defaultdict(lambda: defaultdict(list))
    for line, row in enumerate(rows, start=2):
        key = (
            int(_number(row, "num_workers", path, line)),
            int(_number(row, "devices_per_node", path, line)),
        )
        points[key][_number(row, "size", path, line)].append(_number(row, value_col, path, line))
    raw, groups = {}, {}
    for key, by_size in points.items():
        sizes = np.array(sorted(by_size), dtype=float)
        ms = np.array([float(np.median(by_size[s])) for s in sizes])
        raw[key] = (sizes, ms)
        groups[key] = Curve.of(sizes, running_median(ms, 5))
    return AllReduceTable(path.stem.removeprefix("all_reduce_"), groups, raw, str(path))


def read_engine_steps(path: str | Path, model: ModelArch, tp: int) -> EngineStepsTable:
    """An ``engine_steps_<model>_tp<N>.csv``: CPU parts of whole steps by batch size."""
    path = Path(path)
    cols = [f"{c}_median" for c in CPU_COLUMNS]
    rows = _read_rows(path, ["batch_size", *cols])
    by_batch: dict[float, list[float]] = defaultdict(list)
    for line, row in enumerate(rows, start=2):
        cpu = sum(_number(row, c, path, line) for c in cols)
        by_batch[_number(row, "batch_size", path, line)].append(cpu)
    sizes = np.array(sorted(by_batch), dtype=float)
    cpu_ms = np.array([float(np.median(by_batch[b])) for b in sizes])
    return EngineStepsTable(model, tp, Curve.of(sizes, cpu_ms), str(path))


# --- interpolation -----------------------------------------------------------------------
def running_median(values: FArray, width: int) -> FArray:
    """Median over a centred window of ``width`` points (shrinking at the ends)."""
    half = width // 2
    n = len(values)
    return np.array([np.median(values[max(0, i - half) : i + half + 1]) for i in range(n)])
