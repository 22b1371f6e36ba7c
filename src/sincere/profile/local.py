"""Profile a random-weight PyTorch model built from an architecture, on CPU or GPU.

**What it measures**: an eager transformers forward pass (Python dispatch and one kernel
launch per operator, no CUDA graphs), as a request-level engine such as SINCERE's Hugging
Face pipeline runs it. That is meaningful for such engines; for engines that replay CUDA
graphs (vLLM, SGLang, TensorRT-LLM) its small-batch decode times are mostly launch
overhead -- use ``profile gpu`` (:mod:`sincere.profile.gpu`) to calibrate those.

Timing does not depend on weight values, so the model is a transformers
``LlamaForCausalLM`` built from a catalog :class:`~sincere.catalog.specs.ModelArch` (or
a local ``config.json``) with a seeded random initialisation: nothing is downloaded.
Three measurements, each written as a CSV in a published layout:

* ``iterations.csv`` — one forward pass per point: a *prefill* of ``batch_size``
  prompts of ``context_tokens`` tokens, and a *decode* step of ``batch_size``
  sequences holding ``context_tokens`` tokens of KV cache; the median of ``repeats``
  timed runs after one warm-up (``sincere fit`` reads it);
* ``fingerprints.csv`` — MaverIQ's 1- and 2-layer fingerprints: end-to-end latency
  of generating ``Output_Lenght`` tokens (greedy, no early stop) per batch size, with
  device memory before and after the run in GB (CUDA allocator figures on a GPU, the
  process's resident memory on CPU), in data/maveriq's columns;
* ``model_loading_times.csv`` — save the weights to local disk (safetensors), then
  load them onto the device and unload them, ``swap_repeats`` times: mean and std,
  in data/sincere's ``model_loading_times`` columns (plus the save time);
* ``series.csv`` — how each series of growing batch sizes ended
  (:mod:`sincere.profile.series`): out-of-memory ends a series and is recorded there
  (an iteration that ran out of memory is also an ``iterations.csv`` row without a
  time), the other series still run and every file is written.

Logits are computed only where generation needs them: the prefill timing asks for the
last position's logits alone (``logits_to_keep=1``), as an engine samples one token
per sequence.

torch and transformers are the ``ml`` extra, imported only here and only when called.
"""

from __future__ import annotations

import gc
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from sincere.catalog.loader import default_catalog
from sincere.core.errors import ConfigError
from sincere.profile.arch import hf_config_dict, read_config_json
from sincere.profile.csvio import write_profile_csv
from sincere.profile.monitor import Monitor
from sincere.profile.series import SERIES_COLUMNS, OutOfMemory, SeriesLog, oom_errors

GB = 1e9
DTYPES = ("float32", "bfloat16", "float16")
ITERATION_COLUMNS = ["model", "phase", "batch_size", "context_tokens", "num_tokens", "iteration_s"]
FINGERPRINT_COLUMNS = [
    "Model", "TP", "PP", "PP_Map", "DTYPE", "INT8_KV_Cache", "Output_Lenght", "Batch_Size",
    "Latency", "Memory-Pre-Run", "Memory-After-Run",
]  # fmt: skip
LOADING_COLUMNS = [
    "model_name", "model_size /GB", "mean_loading_time /s", "std_loading_time /s",
    "mean_unloading_time /s", "std_unloading_time /s", "mean_saving_time /s",
]  # fmt: skip


@dataclass(frozen=True, slots=True)
class LocalProfileConfig:
    """The grid and repetitions of a local profile."""

    device: str = "cpu"  # torch device
    dtype: str = "bfloat16"  # one of DTYPES
    batch_sizes: tuple[int, ...] = (1, 2, 4, 8)  # sequences per iteration
    context_tokens: tuple[int, ...] = (32, 128)  # prompt length / decode context, tokens
    repeats: int = 3  # timed runs per point (after one warm-up)
    output_lengths: tuple[int, ...] = (10, 20)  # fingerprint output lengths (MaverIQ's o1, o2)
    fingerprint_layers: tuple[int, ...] = (1, 2)  # fingerprint depths
    swap_repeats: int = 3  # save / load / unload repetitions
    seed: int = 0  # torch seed of the weights and inputs

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise ConfigError("unknown dtype", value=self.dtype, allowed=DTYPES)
        sizes = (*self.batch_sizes, *self.context_tokens, *self.output_lengths)
        if not self.batch_sizes or not self.context_tokens or min(sizes) < 1:
            raise ConfigError("batch sizes and token counts must be >= 1", value=sizes)
        if min(self.repeats, self.swap_repeats) < 1:
            raise ConfigError("repeats must be >= 1", value=(self.repeats, self.swap_repeats))


def require_ml() -> tuple[Any, Any]:
    """``(torch, transformers)``, or a ``ConfigError`` saying how to install them."""
    try:
        import torch  # type: ignore[import-not-found, unused-ignore]
        import transformers  # type: ignore[import-not-found, unused-ignore]
    except ImportError as exc:
        raise ConfigError(
            f"local profiling needs torch and transformers ({exc.name} is missing)",
            allowed="pip install 'sincere[ml]'",
        ) from None
    return torch, transformers


@contextmanager
def quiet_progress(transformers: Any) -> Iterator[None]:
    """Turn off transformers' (and the Hub's) tqdm bars, as they were before afterwards."""
    from huggingface_hub import utils as hub_utils  # a dependency of transformers

    hub: Any = hub_utils

    hf_logging = transformers.utils.logging
    was_on, hub_was_off = hf_logging.is_progress_bar_enabled(), hub.are_progress_bars_disabled()
    hf_logging.disable_progress_bar()
    hub.disable_progress_bars()
    try:
        yield
    finally:
        if was_on:
            hf_logging.enable_progress_bar()
        if not hub_was_off:
            hub.enable_progress_bars()


def resolve_config(arch: str) -> tuple[str, dict[str, Any]]:
    """``(name, config.json dict)`` of a catalog model or a local config file / directory."""
    path = Path(arch)
    if path.exists():
        return path.stem if path.is_file() else path.name, read_config_json(path)
    return arch, hf_config_dict(default_catalog().model(arch))


class LocalProfiler:
    """Runs the three measurements of the module docstring for one architecture."""

    def __init__(self, name: str, config: Mapping[str, Any], cfg: LocalProfileConfig) -> None:
        self.torch, self.transformers = require_ml()
        self.name = name
        self.hf_config = dict(config)
        self.cfg = cfg
        self.dtype = getattr(self.torch, cfg.dtype)
        self.device = self.torch.device(cfg.device)
        self.gen = self.torch.Generator().manual_seed(cfg.seed)

    def build(self, num_layers: int | None = None, device: str | None = None) -> Any:
        """The model (``num_layers`` layers if given) with seeded random weights, in eval mode,
        on the profiled device (or ``device``)."""
        torch = self.torch
        config = dict(self.hf_config)
        if num_layers is not None:
            config["num_hidden_layers"] = num_layers
        torch.manual_seed(self.cfg.seed)
        llama_config = self.transformers.LlamaConfig(**config)
        model = self.transformers.LlamaForCausalLM(llama_config)
        return model.to(device=device or self.device, dtype=self.dtype).eval()

    def sync(self) -> None:
        """Wait for queued device work (a no-op on CPU)."""
        if self.device.type == "cuda":
            self.torch.cuda.synchronize(self.device)

    def tokens(self, batch: int, length: int) -> Any:
        """Random token ids of shape (batch, length)."""
        vocab = int(self.hf_config["vocab_size"])
        ids = self.torch.randint(3, vocab, (batch, length), generator=self.gen)
        return ids.to(self.device)

    def timed(self, fn: Callable[[], Any]) -> tuple[float, Any]:
        """Seconds ``fn`` takes (device synchronised) and its result."""
        self.sync()
        started = time.perf_counter()
        result = fn()
        self.sync()
        return time.perf_counter() - started, result

    def prefill_s(self, model: Any, batch: int, ctx: int) -> list[float]:
        """Times of a prefill of ``batch`` prompts of ``ctx`` tokens, warm-up excluded."""
        ids, n = self.tokens(batch, ctx), self.cfg.repeats
        with self.torch.inference_mode():
            forward = partial(model, ids, use_cache=True, logits_to_keep=1)
            runs = [self.timed(forward)[0] for _ in range(1 + n)]
        return runs[1:]

    def decode_s(self, model: Any, batch: int, ctx: int) -> list[float]:
        """Times of consecutive decode steps of ``batch`` sequences after a ``ctx`` prefill."""
        with self.torch.inference_mode():
            out = model(self.tokens(batch, ctx), use_cache=True, logits_to_keep=1)
            step = self.tokens(batch, 1)
            runs = []
            for _ in range(1 + self.cfg.repeats):
                t, out = self.timed(
                    partial(model, step, past_key_values=out.past_key_values, logits_to_keep=1)
                )
                runs.append(t)
        return runs[1:]

    def iteration_rows(self, log: SeriesLog) -> list[dict[str, Any]]:
        """One row per (phase, context, batch size) point; a series stops at out-of-memory."""
        model = self.built(log, "iterations")
        if model is None:
            return []
        rows = []
        for phase, timer in (("prefill", self.prefill_s), ("decode", self.decode_s)):
            for ctx in self.cfg.context_tokens:

                def measure(
                    batch: int, phase: str = phase, ctx: int = ctx, timer: Any = timer
                ) -> Any:
                    return self._iteration_row(phase, batch, ctx, timer(model, batch, ctx))

                for row in log.run(f"iterations {phase} ctx {ctx}", self.cfg.batch_sizes, measure):
                    if isinstance(row, OutOfMemory):
                        row = self._iteration_row(phase, row.size, ctx, [])
                    rows.append(row)
        return rows

    def built(self, log: SeriesLog, name: str, num_layers: int | None = None) -> Any:
        """:meth:`build`, or None (recorded in ``log``) when the model does not fit."""
        try:
            return self.build(num_layers)
        except oom_errors(self.torch) as exc:
            log.record(f"{name} (model load)", "oom", None, num_layers, str(exc)[:200])
            gc.collect()
            return None

    def _iteration_row(self, phase: str, batch: int, ctx: int, runs: list[float]) -> dict[str, Any]:
        """A measured point, or (no runs) the point that ran out of memory."""
        return {
            "model": self.name,
            "phase": phase,
            "batch_size": batch,
            "context_tokens": ctx,
            "num_tokens": batch * ctx if phase == "prefill" else batch,
            "iteration_s": statistics.median(runs) if runs else None,
            "iteration_std_s": statistics.pstdev(runs) if runs else None,
            "repeats": len(runs),
            "device": str(self.device),
            "dtype": self.cfg.dtype,
            "status": "ok" if runs else "oom",
        }

    def memory_gb(self) -> float:
        """Device memory in use: the CUDA allocator's, or this process's resident set."""
        if self.device.type == "cuda":
            return float(self.torch.cuda.memory_allocated(self.device)) / GB
        import psutil  # type: ignore[import-untyped, unused-ignore]

        return float(psutil.Process().memory_info().rss) / GB

    def generate_s(self, model: Any, batch: int, out_len: int) -> float:
        """Seconds to generate exactly ``out_len`` tokens greedily for ``batch`` prompts."""
        ids = self.tokens(batch, min(self.cfg.context_tokens))
        kwargs = {"max_new_tokens": out_len, "min_new_tokens": out_len, "do_sample": False}
        with self.torch.inference_mode():
            model.generate(ids, **kwargs)  # warm-up
            return self.timed(lambda: model.generate(ids, **kwargs))[0]

    def fingerprint_rows(self, log: SeriesLog) -> list[dict[str, Any]]:
        """MaverIQ fingerprint rows for every depth, output length and batch size that fit."""
        rows: list[dict[str, Any]] = []
        for layers in self.cfg.fingerprint_layers:
            before = self.memory_gb()
            model = self.built(log, f"fingerprint {layers}l", layers)
            if model is None:
                continue
            model.generation_config.pad_token_id = 0
            for out_len in self.cfg.output_lengths:
                rows += self._fingerprint_series(log, model, layers, out_len, before)
            del model
            gc.collect()
        return rows

    def _fingerprint_series(
        self, log: SeriesLog, model: Any, layers: int, out_len: int, before: float
    ) -> list[dict[str, Any]]:
        """One depth and output length over the growing batch sizes."""

        def measure(batch: int) -> dict[str, Any]:
            latency = self.generate_s(model, batch, out_len)
            return self._fingerprint_row(layers, batch, out_len, latency, before)

        series = log.run(f"fingerprint {layers}l out {out_len}", self.cfg.batch_sizes, measure)
        return [r for r in series if not isinstance(r, OutOfMemory)]

    def _fingerprint_row(
        self, layers: int, batch: int, out_len: int, latency: float, before: float
    ) -> dict[str, Any]:
        return dict(
            zip(
                FINGERPRINT_COLUMNS,
                [self.name, 1, 1, str(layers), self.cfg.dtype, False, out_len, batch,
                 latency, before, self.memory_gb()],
                strict=True,
            )
        )  # fmt: skip

    def loading_row(self, directory: Path, log: SeriesLog) -> dict[str, Any]:
        """Save / load / unload times of the full model through ``directory`` (without the
        progress bars transformers would draw over the command's own).

        A load that runs out of device memory is recorded in ``log``; the row then has
        the save time and no load / unload times.
        """
        with quiet_progress(self.transformers):
            return self._loading_row(directory, log)

    def _loading_row(self, directory: Path, log: SeriesLog) -> dict[str, Any]:
        saves: list[float] = []
        loads: list[float] = []
        unloads: list[float] = []
        model = self.build(device="cpu")  # saved from host memory; only the load uses the device
        size_gb = sum(p.numel() * p.element_size() for p in model.parameters()) / GB

        def measure(repeat: int) -> dict[str, Any]:
            saves.append(self.timed(partial(model.save_pretrained, directory))[0])
            t, loaded = self.timed(partial(self._load, directory))
            loads.append(t)
            unloads.append(self.timed(partial(self._unload, loaded))[0])
            return {"repeat": repeat}

        for _ in log.run("model loading", range(1, self.cfg.swap_repeats + 1), measure):
            pass
        return self._loading_dict(size_gb, saves, loads, unloads)

    def _load(self, directory: Path) -> Any:
        cls = self.transformers.LlamaForCausalLM
        return cls.from_pretrained(directory, dtype=self.dtype).to(self.device)

    def _unload(self, model: Any) -> None:
        model.to("meta")
        gc.collect()
        if self.device.type == "cuda":
            self.torch.cuda.empty_cache()

    def _loading_dict(
        self, size_gb: float, saves: list[float], loads: list[float], unloads: list[float]
    ) -> dict[str, Any]:
        def mean(xs: list[float]) -> float | None:
            return statistics.mean(xs) if xs else None

        def std(xs: list[float]) -> float | None:
            return statistics.pstdev(xs) if xs else None

        values = [self.name, size_gb, mean(loads), std(loads), mean(unloads), std(unloads)]
        values.append(mean(saves))
        return dict(zip(LOADING_COLUMNS, values, strict=True))


def _with_monitor(
    rows: list[dict[str, Any]], monitor: Monitor | None, started: float
) -> list[dict[str, Any]]:
    """Add the monitor's summary since ``started`` to every row."""
    if monitor is None:
        return rows
    window = monitor.window(started, time.monotonic())
    return [{**row, **window} for row in rows]


def run_local_profile(
    arch: str,
    cfg: LocalProfileConfig,
    out_dir: str | Path,
    *,
    monitor: Monitor | None = None,
    on_step: Callable[[int, int], None] | None = None,
) -> dict[str, Path]:
    """Run all three measurements; returns ``{"iterations"|"fingerprints"|"loading": path}``."""
    name, config = resolve_config(arch)
    profiler = LocalProfiler(name, config, cfg)
    out = Path(out_dir)
    points = len(cfg.batch_sizes) * len(cfg.context_tokens) * 2
    fps = len(cfg.fingerprint_layers) * len(cfg.batch_sizes) * len(cfg.output_lengths)
    total, done = points + fps + cfg.swap_repeats, [0]

    def step() -> None:
        done[0] += 1
        if on_step is not None:
            on_step(done[0], total)

    log = SeriesLog(profiler.torch, profiler.device, None, step)
    started = time.monotonic()
    paths = {"iterations": out / "iterations.csv", "fingerprints": out / "fingerprints.csv"}
    rows = _with_monitor(profiler.iteration_rows(log), monitor, started)
    write_profile_csv(rows, paths["iterations"], ITERATION_COLUMNS)
    started = time.monotonic()
    rows = _with_monitor(profiler.fingerprint_rows(log), monitor, started)
    write_profile_csv(rows, paths["fingerprints"], FINGERPRINT_COLUMNS)
    with tempfile.TemporaryDirectory(prefix="sincere-load-") as tmp:
        loading = profiler.loading_row(Path(tmp), log)
    paths["loading"] = write_profile_csv(
        [loading], out / "model_loading_times.csv", LOADING_COLUMNS
    )
    paths["series"] = write_profile_csv(log.rows, out / "series.csv", SERIES_COLUMNS)
    return paths
