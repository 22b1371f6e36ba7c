"""``profile gpu``: the kernel times an engine with CUDA graphs sees, in Vidur's layouts.

For a catalog architecture or a ``config.json`` (random weights, nothing downloaded),
one GPU's tensor-parallel shard (:mod:`sincere.profile.gpu_model`) is timed shape by
shape and written as files ``sincere fit gpu-profiles`` reads exactly like the published
A100 / H100 profiles:

* ``mlp_<model>.csv`` -- every linear-work operator (``attn_pre_proj`` … ``add``, and
  ``emb``) per token count and TP degree, ms per layer per GPU;
* ``attention_<model>_tp<N>.csv`` -- prefill attention by (chunk, cached tokens) at batch
  1 and decode attention by (batch, context);
* ``all_reduce_local.csv`` -- NCCL all-reduce by message size over the visible GPUs
  (only when more than one is visible);
* ``iterations.csv`` -- whole iterations of the full shard (prefill, decode, mixed), the
  LM head on the last token of each sequence, to check a fit against;
* ``series.csv`` -- how each series of shapes ended: ``complete``, ``oom`` (the largest
  size that fit and the one that did not) or ``time limit``.

Timing: on CUDA every shape is captured in a CUDA graph and replayed, each replay timed
by CUDA events, the median kept (``timer: cuda_graph``; a shape whose capture fails is
timed the same way without the graph, ``cuda_events``). On a CPU the same code runs and
the median of wall-clock repeats is kept (``wall_clock``): that path exists so the
profiler is tested anywhere, its figures describe the CPU. Out-of-memory ends the series
it happens in (sizes grow along a series) and is recorded; the other series still run,
and every file is written. ``max_duration_s`` bounds the whole run the same way.
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sincere.core.errors import ConfigError
from sincere.profile.csvio import write_profile_csv
from sincere.profile.gpu_model import IterationShape, Op, ShardModel, ShardShape
from sincere.profile.local import DTYPES, require_ml, resolve_config
from sincere.profile.series import (
    SERIES_COLUMNS,
    OutOfMemory,
    OutOfTimeError,
    SeriesLog,
    oom_errors,
    release,
)

MLP_OPS = (
    "emb", "input_layernorm", "attn_pre_proj", "attn_rope", "attn_post_proj",
    "post_attention_layernorm", "mlp_up_proj", "mlp_act", "mlp_down_proj", "add",
)  # fmt: skip
STATS = ("min", "max", "mean", "median", "std")
IterationPoint = tuple[int, str, int, IterationShape]
"""A whole iteration of a series: (batch size, phase, context tokens, its shape); the batch
size first, as ``series.csv`` names a series' points by their first field."""
ITERATION_COLUMNS = [
    "model", "phase", "batch_size", "context_tokens", "num_tokens", "iteration_s",
    "prefill_seqs", "prefill_chunk", "prefill_ctx", "decode_seqs", "decode_ctx", "tp",
    "timer", "device", "dtype", "status", "fused",
]  # fmt: skip


@dataclass(frozen=True, slots=True)
class GpuProfileConfig:
    """The shapes, repetitions and limits of a ``profile gpu`` run."""

    device: str = "cuda"  # torch device
    dtype: str = "bfloat16"  # one of DTYPES
    tp: tuple[int, ...] = (1,)  # tensor-parallel degrees whose shard is timed
    num_tokens: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)
    prefill_chunks: tuple[int, ...] = (64, 128, 256, 512, 1024, 2048)  # attention, batch 1
    kv_sizes: tuple[int, ...] = (0, 256, 1024, 2048, 4096)  # cached tokens before a chunk
    decode_batches: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64, 128, 256)  # decode attention
    decode_contexts: tuple[int, ...] = (128, 512, 1024, 2048, 4096)  # tokens per sequence
    batch_sizes: tuple[int, ...] = (1, 4, 16, 64)  # whole iterations: sequences
    context_tokens: tuple[int, ...] = (128, 1024)  # whole iterations: prompt / context
    replays: int = 20  # timed replays per shape (median kept)
    warmups: int = 3  # untimed runs before capture / timing
    use_graphs: bool = True  # capture each shape in a CUDA graph (CUDA only)
    # whole iterations: torch.compile the work around attention, as vLLM V1 does
    # (None: on a CUDA device, off on a CPU, where it is a test run and compiling is slow)
    fused: bool | None = None
    max_duration_s: float = 1800.0  # whole-run limit
    seed: int = 0  # weights and inputs

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise ConfigError("unknown dtype", value=self.dtype, allowed=DTYPES)
        grids = (self.tp, self.num_tokens, self.prefill_chunks, self.decode_batches,
                 self.decode_contexts, self.batch_sizes, self.context_tokens)  # fmt: skip
        if not all(grids) or min(min(g) for g in grids) < 1 or min(self.kv_sizes, default=0) < 0:
            raise ConfigError("profile shapes must be non-empty and >= 1 (kv sizes >= 0)")
        if self.replays < 1 or self.warmups < 0:
            raise ConfigError("replays must be >= 1, warmups >= 0", value=(self.replays,))
        if self.max_duration_s <= 0:
            raise ConfigError("max duration must be > 0 s", value=self.max_duration_s)


class Timer:
    """Times a closure: CUDA graph + events on CUDA, wall clock elsewhere (module docstring)."""

    def __init__(self, torch: Any, device: Any, cfg: GpuProfileConfig) -> None:
        self.torch, self.device, self.cfg = torch, device, cfg
        self.cuda = device.type == "cuda"

    def seconds(self, fn: Op) -> tuple[list[float], str]:
        """Per-replay seconds of ``fn`` and the timer that measured them."""
        with self.torch.inference_mode():
            return self._cuda(fn) if self.cuda else self._wall(fn)

    def _wall(self, fn: Op) -> tuple[list[float], str]:
        for _ in range(self.cfg.warmups):
            fn()
        times = []
        for _ in range(self.cfg.replays):
            started = time.perf_counter()
            fn()
            times.append(time.perf_counter() - started)
        return times, "wall_clock"

    def _cuda(self, fn: Op) -> tuple[list[float], str]:
        cuda = self.torch.cuda
        side = cuda.Stream(self.device)
        side.wait_stream(cuda.current_stream(self.device))
        with cuda.stream(side):  # warm-up on a side stream, as capture requires
            for _ in range(max(1, self.cfg.warmups)):
                fn()
        cuda.current_stream(self.device).wait_stream(side)
        cuda.synchronize(self.device)
        graph = self._capture(fn) if self.cfg.use_graphs else None
        run = graph.replay if graph is not None else fn
        times = []
        for _ in range(self.cfg.replays):
            start, end = cuda.Event(enable_timing=True), cuda.Event(enable_timing=True)
            start.record()
            run()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
        timer = "cuda_graph" if graph is not None else "cuda_events"
        del graph, run
        return times, timer

    def _capture(self, fn: Op) -> Any:
        """``fn`` captured in a CUDA graph, or None when it cannot be captured."""
        cuda = self.torch.cuda
        graph = cuda.CUDAGraph()
        try:
            with cuda.graph(graph):
                fn()
        except oom_errors(self.torch):
            raise
        except RuntimeError:
            cuda.synchronize(self.device)
            return None
        return graph


def stats_ms(times: Sequence[float]) -> dict[str, float]:
    """min / max / mean / median / std of ``times`` (seconds), in ms."""
    ms = [t * 1e3 for t in times]
    return dict(
        zip(
            STATS,
            (min(ms), max(ms), statistics.mean(ms), statistics.median(ms), statistics.pstdev(ms)),
            strict=True,
        )
    )


class GpuProfiler:
    """Runs the series of the module docstring for one architecture."""

    def __init__(
        self,
        name: str,
        config: dict[str, Any],
        cfg: GpuProfileConfig,
        on_step: Callable[[int, int], None] | None = None,
    ) -> None:
        self.torch, _ = require_ml()
        self.name, self.config, self.cfg = name, config, cfg
        self.device = self.torch.device(cfg.device)
        self.dtype = getattr(self.torch, cfg.dtype)
        self.timer = Timer(self.torch, self.device, cfg)
        self.fused = cfg.fused if cfg.fused is not None else self.device.type == "cuda"
        deadline = time.monotonic() + cfg.max_duration_s
        self.log = SeriesLog(self.torch, self.device, deadline, self.step)
        self.run_series = self.log.run
        self.on_step = on_step
        self.done, self.total = 0, self.num_steps()

    def num_steps(self) -> int:
        """Shapes the run times at most (for the progress bar)."""
        c = self.cfg
        per_tp = len(c.num_tokens) + len(c.prefill_chunks) * len(c.kv_sizes)
        per_tp += len(c.decode_batches) * len(c.decode_contexts)
        per_tp += len(c.batch_sizes) * len(c.context_tokens) * 3
        return per_tp * len(c.tp) + (20 if self.num_gpus() > 1 else 0)

    def num_gpus(self) -> int:
        """CUDA devices visible (0 on a CPU run)."""
        return int(self.torch.cuda.device_count()) if self.device.type == "cuda" else 0

    def model(self, shape: ShardShape, num_layers: int, series: str) -> ShardModel | None:
        """The shard with ``num_layers`` layers of random weights, or None (recorded as
        the ``series``' out-of-memory) when its weights do not fit."""
        try:
            model = ShardModel(
                self.torch, shape, self.device, self.dtype, self.cfg.seed, num_layers
            )
            if self.fused and series.startswith("iterations"):
                self.fuse(model, series)
        except oom_errors(self.torch) as exc:
            model = None
            self.free()
            detail = f"{num_layers}-layer shard: {str(exc).splitlines()[0][:160]}"
            self.log.record(f"{series} (weights)", "oom", None, f"tp{shape.tp}", detail)
        return model

    def fuse(self, model: ShardModel, series: str) -> None:
        """Compile ``model``'s layers (:meth:`ShardModel.fuse`) and run one small iteration
        through them; a compiler that fails (no Triton for this GPU, an unsupported
        PyTorch) leaves the rest of the run unfused, recorded in ``series.csv`` and said
        on stderr, instead of ending the profile."""
        model.fuse()
        trial = IterationShape(prefill_seqs=1, chunk=4, decode_seqs=2, decode_ctx=4)
        try:
            with self.torch.inference_mode():
                model.iteration(trial)()
        except oom_errors(self.torch):
            raise
        except Exception as exc:  # any compiler failure: the profile goes on unfused
            model.unfuse()
            self.fused = False
            detail = f"torch.compile failed, iterations run unfused: {exc!s:.200}"
            self.log.record(f"{series} (fused)", "unfused", None, None, detail)
            print(f"warning: {detail}", file=sys.stderr)

    def free(self) -> None:
        """Return cached device memory (between stages)."""
        release(self.torch, self.device)

    def step(self) -> None:
        """One shape done: tell the progress bar."""
        self.done += 1
        if self.on_step is not None:
            self.on_step(self.done, self.total)

    # --- the measurements --------------------------------------------------------------
    def mlp_rows(self, shape: ShardShape) -> list[dict[str, Any]]:
        """One row per token count: every operator's stats, then the architecture columns."""
        model = self.model(shape, 1, f"mlp tp{shape.tp}")
        if model is None:
            return []

        def measure(tokens: int) -> dict[str, Any]:
            row: dict[str, Any] = {}
            for op, fn in model.operators(tokens).items():
                times, timer = self.timer.seconds(fn)
                row.update({f"time_stats.{op}.{k}": v for k, v in stats_ms(times).items()})
            return {**row, **self.arch_columns(shape), "num_tokens": tokens,
                    "num_tensor_parallel_workers": shape.tp, "timer": timer}  # fmt: skip

        rows = self.run_series(f"mlp tp{shape.tp}", self.cfg.num_tokens, measure)
        out = [r for r in rows if not isinstance(r, OutOfMemory)]
        return out

    def arch_columns(self, shape: ShardShape) -> dict[str, Any]:
        """The model columns of Vidur's mlp files."""
        return {
            "n_head": shape.model_heads,
            "n_kv_head": shape.model_kv_heads,
            "n_embd": shape.hidden,
            "n_expanded_embd": shape.model_inter,
            "vocab_size": shape.model_vocab,
            "use_gated_mlp": True,
        }

    def attention_rows(self, shape: ShardShape) -> list[dict[str, Any]]:
        """Prefill rows (batch 1) by chunk and cached tokens, decode rows by batch and context."""
        model = self.model(shape, 1, f"attention tp{shape.tp}")
        rows: list[dict[str, Any]] = []
        if model is None:
            return rows
        for chunk in self.cfg.prefill_chunks:

            def prefill(kv: int, chunk: int = chunk) -> dict[str, Any]:
                times, timer = self.timer.seconds(model.prefill_attention(chunk, kv))
                return self._attention_row(shape, "prefill", times, timer, 1, chunk, kv)

            series = self.run_series(f"attention prefill tp{shape.tp} chunk {chunk}",
                                     self.cfg.kv_sizes, prefill)  # fmt: skip
            rows.extend(r for r in series if not isinstance(r, OutOfMemory))
        for batch in self.cfg.decode_batches:

            def decode(ctx: int, batch: int = batch) -> dict[str, Any]:
                times, timer = self.timer.seconds(model.decode_attention(batch, ctx))
                return self._attention_row(shape, "decode", times, timer, batch, 0, ctx)

            series = self.run_series(f"attention decode tp{shape.tp} batch {batch}",
                                     self.cfg.decode_contexts, decode)  # fmt: skip
            rows.extend(r for r in series if not isinstance(r, OutOfMemory))
        return rows

    def _attention_row(
        self, shape: ShardShape, kind: str, times: list[float], timer: str,
        batch: int, chunk: int, kv: int,
    ) -> dict[str, Any]:  # fmt: skip
        stats = {f"time_stats.attn_{kind}.{k}": v for k, v in stats_ms(times).items()}
        return {
            **stats,
            "n_embd": shape.model_heads * shape.head_dim,
            "n_q_head": shape.model_heads,
            "n_kv_head": shape.model_kv_heads,
            "block_size": 16,
            "num_tensor_parallel_workers": shape.tp,
            "max_model_len": max(self.cfg.kv_sizes) + max(self.cfg.prefill_chunks),
            "batch_size": batch,
            "prefill_chunk_size": chunk,
            "kv_cache_size": kv,
            "is_prefill": kind == "prefill",
            "attention_backend": "torch_sdpa",
            "profile_method": timer,
        }

    def iteration_series(self, tp: int) -> list[tuple[str, list[IterationPoint]]]:
        """The whole-iteration series of the config's grid: per phase and context, the
        batch sizes in turn (mixed: one chunk of ``ctx`` tokens beside the decodes)."""
        return [
            (f"{phase} tp{tp} ctx {ctx}",
             [(b, phase, ctx, _iteration(phase, b, ctx)) for b in self.cfg.batch_sizes])
            for phase in ("prefill", "decode", "mixed")
            for ctx in self.cfg.context_tokens
        ]  # fmt: skip

    def iteration_rows(
        self, shape: ShardShape, series: list[tuple[str, list[IterationPoint]]] | None = None
    ) -> list[dict[str, Any]]:
        """Whole iterations of the full shard, series by series (``series``: named lists of
        growing points; default :meth:`iteration_series`); out-of-memory ends a series."""
        model = self.model(shape, shape.num_layers, f"iterations tp{shape.tp}")
        rows: list[dict[str, Any]] = []
        if model is None:
            return rows

        def measure(point: IterationPoint) -> dict[str, Any]:
            batch, phase, ctx, it = point
            times, timer = self.timer.seconds(model.iteration(it))
            return self._iteration_row(shape, phase, batch, ctx, it, times, timer)

        for name, points in self.iteration_series(shape.tp) if series is None else series:
            for row in self.run_series(f"iterations {name}", points, measure):
                if isinstance(row, OutOfMemory):
                    batch, phase, ctx, it = row.size
                    row = self._iteration_row(shape, phase, batch, ctx, it, None, "oom")
                rows.append(row)
        return rows

    def _iteration_row(
        self, shape: ShardShape, phase: str, batch: int, ctx: int, it: IterationShape,
        times: list[float] | None, timer: str,
    ) -> dict[str, Any]:  # fmt: skip
        return {
            "model": self.name, "phase": phase, "batch_size": batch, "context_tokens": ctx,
            "num_tokens": it.num_tokens,
            "iteration_s": statistics.median(times) if times else None,
            "prefill_seqs": it.prefill_seqs, "prefill_chunk": it.chunk,
            "prefill_ctx": it.prefill_ctx, "decode_seqs": it.decode_seqs,
            "decode_ctx": it.decode_ctx, "tp": shape.tp,
            "timer": timer if times else None, "device": str(self.device),
            "dtype": self.cfg.dtype, "status": "ok" if times else "oom",
            "fused": self.fused,
        }  # fmt: skip

    def all_reduce_rows(self) -> list[dict[str, Any]]:
        """NCCL all-reduce over every visible GPU (one process), by message size."""
        torch, n = self.torch, self.num_gpus()
        sizes = [2**k for k in range(11, 29)]  # 2 KiB .. 256 MiB

        def measure(size: int) -> dict[str, Any]:
            tensors = [
                torch.empty(size // 2, dtype=torch.float16, device=f"cuda:{i}") for i in range(n)
            ]
            times = []
            for i in range(self.cfg.warmups + self.cfg.replays):
                for d in range(n):
                    torch.cuda.synchronize(d)
                started = time.perf_counter()
                torch.cuda.nccl.all_reduce(tensors)
                for d in range(n):
                    torch.cuda.synchronize(d)
                if i >= self.cfg.warmups:
                    times.append(time.perf_counter() - started)
            stats = {f"time_stats.all_reduce.{k}": v for k, v in stats_ms(times).items()}
            return {**stats, "rank": 0, "num_workers": n, "size": size,
                    "collective": "all_reduce", "devices_per_node": n,
                    "max_devices_per_node": n}  # fmt: skip

        rows = [
            r
            for r in self.run_series("all_reduce", sizes, measure)
            if not isinstance(r, OutOfMemory)
        ]
        self.free()
        return rows


def _iteration(phase: str, batch: int, ctx: int) -> IterationShape:
    """The iteration a series point stands for (mixed: one chunk of ``ctx`` and decodes)."""
    if phase == "prefill":
        return IterationShape(prefill_seqs=batch, chunk=ctx)
    if phase == "decode":
        return IterationShape(decode_seqs=batch, decode_ctx=ctx)
    return IterationShape(prefill_seqs=1, chunk=ctx, decode_seqs=batch, decode_ctx=ctx)


def run_gpu_profile(
    arch: str,
    cfg: GpuProfileConfig,
    out_dir: str | Path,
    *,
    on_step: Callable[[int, int], None] | None = None,
) -> dict[str, Path]:
    """Run every series and write every file (module docstring); returns kind -> path."""
    name, config = resolve_config(arch)
    profiler = GpuProfiler(name, config, cfg, on_step)
    out = Path(out_dir)
    mlp: list[dict[str, Any]] = []
    attention: dict[int, list[dict[str, Any]]] = {}
    iterations: list[dict[str, Any]] = []
    reduce: list[dict[str, Any]] = []
    try:
        for tp in cfg.tp:
            shape = ShardShape.of(config, tp)
            mlp += profiler.mlp_rows(shape)
            profiler.free()  # each stage's model is released before the next is built
            attention[tp] = profiler.attention_rows(shape)
            profiler.free()
            iterations += profiler.iteration_rows(shape)
            profiler.free()
        if profiler.num_gpus() > 1:
            reduce = profiler.all_reduce_rows()
    except OutOfTimeError:
        pass
    return write_outputs(out, name, mlp, attention, iterations, reduce, profiler.log.rows)


def write_outputs(
    out: Path,
    name: str,
    mlp: list[dict[str, Any]],
    attention: dict[int, list[dict[str, Any]]],
    iterations: list[dict[str, Any]],
    reduce: list[dict[str, Any]],
    series: list[dict[str, Any]],
) -> dict[str, Path]:
    """Write the files that have rows, plus iterations.csv and series.csv always."""
    paths: dict[str, Path] = {}
    op_columns = [f"time_stats.{op}.{k}" for op in MLP_OPS for k in STATS]
    if mlp:
        paths["mlp"] = write_profile_csv(mlp, out / f"mlp_{name}.csv", op_columns)
    for tp, rows in attention.items():
        if rows:
            path = out / f"attention_{name}_tp{tp}.csv"
            paths[f"attention tp{tp}"] = write_profile_csv(rows, path, [])
    if reduce:
        paths["all_reduce"] = write_profile_csv(reduce, out / "all_reduce_local.csv", [])
    paths["iterations"] = write_profile_csv(iterations, out / "iterations.csv", ITERATION_COLUMNS)
    paths["series"] = write_profile_csv(series, out / "series.csv", SERIES_COLUMNS)
    return paths
