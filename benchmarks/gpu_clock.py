"""How a GPU's clock follows a serving engine's iterations: the history behind the
sustained-load ratio.

``sincere/data/perf/sustained_clock.yaml`` holds one number per GPU: the share of the
kernel benchmark's compute rate that a compute-bound GEMM keeps when it runs back to back
for seconds (an H100 or H200 lowers its SM clock to stay within 700 W). An engine is not
one GEMM run back to back: its prefills and mixed iterations (compute) alternate with
decode iterations (mostly memory traffic), and the clock follows that mix with some lag.
This script measures the lag and the mix on whole iterations, as an engine runs them:

``measure`` (a CUDA GPU and PyTorch): one Llama-3.1-8B shard of ``sincere profile gpu``
(random weights, the work around attention compiled as vLLM V1 runs it), four iterations
captured as CUDA graphs -- a prefill of 2,048 tokens (``P``), decodes of 64 and 256
sequences at 1,024 tokens (``D``, ``B``) and a 2,048-token chunk beside 64 decodes
(``M``) -- replayed in patterns with a CUDA event before and after every iteration, so
that every iteration's time and its place on the GPU's timeline are known:

- ``burst``: each iteration alone after 2 s idle (the kernel benchmark's state);
- ``step``: 3 s idle, then prefills back to back for about 5 s (how fast the clock falls);
- ``duty k``: 2 s idle, then ``P`` followed by ``k`` decodes, repeated for 3.5 s (the
  share of compute a period holds, and what the prefill keeps under it);
- ``recover g``: 2.5 s of back-to-back prefills, then decodes for ``g`` seconds, then one
  prefill (how fast the clock comes back once compute stops);
- ``sustained X``: ``B`` or ``M`` back to back for 3 s (a big decode and a mixed iteration
  under their own load).

The SM clock and power are read from NVML every 20 ms by a thread beside it. The rows go
to ``clock_history.json`` (one per iteration) with ``device.json``.

``depth`` (a CUDA GPU): how deep the sustained slowdown goes for other shards, on one
chip: for each ``model:tp`` of ``--shards`` (in order, the first repeated last to see any
drift), a prefill of each ``--chunks`` size (``P``) and the shard's gate/up GEMM at as many
tokens, ten in one graph (``G``; ``--no-gemm`` leaves them out): each timed alone after
0.7 s idle (burst, three times), then back to back for 3 s after 2 s idle. Rows go to
``depth.json`` after every shard. ``depth-report DIR [--ratio R]`` (any machine): the
back-to-back slowdowns against the engine's clock on the roofline, and the ratio that fits
them.

``report DIR`` (any machine): per pattern, the prefill's time against its burst time, and
three models of it: the kernel benchmark's clock (ratio 1), the shipped constant ratio,
and the clock following the compute duty of the recent past, ``1 - (1 - r) * D`` with
``D`` the share of the last ``tau`` seconds (exponentially weighted) spent in compute-bound
iterations, ``tau`` fitted on the ``step`` and ``recover`` patterns.

    python benchmarks/gpu_clock.py measure --out DIR [--model M --tp N] [--scale 1.0]
    python benchmarks/gpu_clock.py report DIR [--ratio 0.838]
    python benchmarks/gpu_clock.py depth --out DIR --shards llama-3.1-8b:1,qwen3-32b:2
    python benchmarks/gpu_clock.py depth-report DIR
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import statistics
import threading
import time
from pathlib import Path
from typing import Any

from gpu_moe import device_facts  # the sibling script (stdlib-only at import)

from sincere.catalog import get_accelerator
from sincere.engine.build import ridge_tokens
from sincere.engine.clock import EXPONENT, TAU_S, mean_square_duty
from sincere.profile.gpu import GpuProfileConfig, GpuProfiler
from sincere.profile.gpu_model import IterationShape, ShardShape
from sincere.profile.local import resolve_config

DUTY_DECODES = (1, 3, 7, 15, 31, 63)
RECOVER_S = (0.02, 0.05, 0.1, 0.2, 0.5, 1.0)


def shapes(small: bool) -> dict[str, IterationShape]:
    """The four iterations (small: a CPU test's)."""
    if small:
        return {
            "P": IterationShape(prefill_seqs=1, chunk=64),
            "D": IterationShape(decode_seqs=4, decode_ctx=32),
            "B": IterationShape(decode_seqs=8, decode_ctx=32),
            "M": IterationShape(prefill_seqs=1, chunk=64, decode_seqs=4, decode_ctx=32),
        }
    return {
        "P": IterationShape(prefill_seqs=1, chunk=2048),
        "D": IterationShape(decode_seqs=64, decode_ctx=1024),
        "B": IterationShape(decode_seqs=256, decode_ctx=1024),
        "M": IterationShape(prefill_seqs=1, chunk=2048, decode_seqs=64, decode_ctx=1024),
    }


class Clocks:
    """NVML's SM clock and power every ``period`` seconds, on a thread (none without NVML)."""

    def __init__(self, period: float = 0.02) -> None:
        self.samples: list[tuple[float, int, float]] = []
        self._stop = threading.Event()
        try:
            import pynvml  # nvidia-ml-py

            pynvml.nvmlInit()
            handle = pynvml.nvmlDeviceGetHandleByIndex(0)
        except Exception:  # no NVML (a CPU test): no samples
            self._thread = None
            return

        def loop() -> None:
            while not self._stop.is_set():
                sm = pynvml.nvmlDeviceGetClockInfo(handle, pynvml.NVML_CLOCK_SM)
                watts = pynvml.nvmlDeviceGetPowerUsage(handle) / 1e3
                self.samples.append((time.monotonic(), sm, watts))
                self._stop.wait(period)

        self._thread = threading.Thread(target=loop, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()


class Runner:
    """Replays captured iterations in patterns with an event around each (module docstring)."""

    def __init__(self, torch: Any, device: Any, closures: dict[str, Any], scale: float) -> None:
        self.torch, self.device, self.scale = torch, device, scale
        self.cuda = device.type == "cuda"
        self.graphs = {name: self._capture(fn) for name, fn in closures.items()}
        self.rows: list[dict[str, Any]] = []
        self.burst_s = {name: self._burst(name) for name in self.graphs}

    def _capture(self, fn: Any) -> Any:
        if not self.cuda:
            return fn
        cuda = self.torch.cuda
        side = cuda.Stream(self.device)
        side.wait_stream(cuda.current_stream(self.device))
        with cuda.stream(side):
            for _ in range(3):
                fn()
        cuda.current_stream(self.device).wait_stream(side)
        cuda.synchronize(self.device)
        graph = cuda.CUDAGraph()
        with cuda.graph(graph):
            fn()
        return graph.replay

    def _sync(self) -> None:
        if self.cuda:
            self.torch.cuda.synchronize(self.device)

    def idle(self, seconds: float) -> None:
        self._sync()
        time.sleep(seconds * self.scale)

    def _burst(self, name: str) -> float:
        times = []
        for _ in range(3):
            self.idle(0.7)
            times.append(self.run(f"burst {name}", [name])[0])
        return statistics.median(times)

    def run(self, pattern: str, kinds: list[str]) -> list[float]:
        """Replay ``kinds`` back to back; one row per iteration; their seconds."""
        host_start = time.monotonic()
        if not self.cuda:  # a CPU test: wall clock
            marks = [time.perf_counter()]
            for kind in kinds:
                self.graphs[kind]()
                marks.append(time.perf_counter())
            offsets = [m - marks[0] for m in marks]
        else:
            cuda = self.torch.cuda
            events = [cuda.Event(enable_timing=True) for _ in range(len(kinds) + 1)]
            events[0].record()
            for kind, event in zip(kinds, events[1:], strict=True):
                self.graphs[kind]()
                event.record()
            events[-1].synchronize()
            offsets = [events[0].elapsed_time(e) / 1e3 for e in events]
        seconds = [b - a for a, b in itertools.pairwise(offsets)]
        for i, (kind, s) in enumerate(zip(kinds, seconds, strict=True)):
            self.rows.append({"pattern": pattern, "index": i, "kind": kind,
                              "start_s": round(offsets[i], 7), "seconds": round(s, 7),
                              "host_start": round(host_start, 4)})  # fmt: skip
        return seconds

    def count(self, kind: str, seconds: float) -> int:
        """Iterations of ``kind`` that fill ``seconds`` (scaled) at its burst time."""
        return max(1, round(seconds * self.scale / self.burst_s[kind]))

    def patterns(self) -> None:
        self.idle(3.0)
        self.run("step", ["P"] * self.count("P", 5.0))
        for k in DUTY_DECODES:
            self.idle(2.0)
            period = self.burst_s["P"] + k * self.burst_s["D"]
            repeats = max(2, round(3.5 * self.scale / period))
            self.run(f"duty {k}", (["P"] + ["D"] * k) * repeats)
        for gap in RECOVER_S:
            self.idle(2.0)
            kinds = ["P"] * self.count("P", 2.5) + ["D"] * self.count("D", gap) + ["P"]
            self.run(f"recover {gap}", kinds)
        for kind in ("B", "M"):
            self.idle(2.0)
            self.run(f"sustained {kind}", [kind] * self.count(kind, 3.0))


def shard_model(model: str, tp: int, device: str) -> tuple[str, GpuProfiler, ShardShape, Any]:
    """``sincere profile gpu``'s TP shard of ``model`` with random weights, fused on a GPU
    (every layer; two on a CPU test): its catalog name, profiler, shape and model (None
    when its weights do not fit)."""
    name, config = resolve_config(model)
    cfg = GpuProfileConfig(device=device, fused=None if device == "cuda" else False)
    profiler = GpuProfiler(name, config, cfg)
    shape = ShardShape.of(config, tp)
    layers = shape.num_layers if profiler.device.type == "cuda" else 2
    return name, profiler, shape, profiler.model(shape, layers, f"iterations tp{tp}")


def shard_of(spec: str, device: str) -> tuple[str, GpuProfiler, ShardShape, Any] | None:
    """:func:`shard_model` of ``MODEL:TP`` (``TP`` 1 when left out); None, said in one line,
    when its weights do not fit on ``device``."""
    model_name, _, tp_text = spec.partition(":")
    if not (tp_text or "1").isdigit():
        raise SystemExit(f"--shards: {spec!r} is not MODEL:TP (e.g. qwen3-32b:2)")
    name, profiler, shape, model = shard_model(model_name, int(tp_text or 1), device)
    if model is None:
        print(json.dumps({"shard": spec, "skipped": "weights do not fit"}), flush=True)
        return None
    return name, profiler, shape, model


def measure(args: argparse.Namespace) -> None:
    """The ``measure`` verb (module docstring)."""
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    name, profiler, _, model = shard_model(args.model, args.tp, args.device)
    if model is None:
        raise SystemExit(f"{name}: the shard's weights do not fit on {args.device}")
    torch = profiler.torch
    with torch.inference_mode():
        closures = {k: model.iteration(it) for k, it in shapes(args.device != "cuda").items()}
        runner = Runner(torch, profiler.device, closures, args.scale)
        print(json.dumps({k: round(v * 1e3, 3) for k, v in runner.burst_s.items()}), flush=True)
        clocks = Clocks()
        try:
            runner.patterns()
        finally:
            clocks.stop()
    facts = device_facts(torch) if profiler.device.type == "cuda" else {"device": args.device}
    its = shapes(args.device != "cuda")
    facts.update(model=name, tp=args.tp, fused=profiler.fused, scale=args.scale,
                 shapes={k: str(v) for k, v in its.items()},
                 tokens={k: v.num_tokens for k, v in its.items()},
                 burst_s=runner.burst_s, seconds=round(time.monotonic() - started, 1))  # fmt: skip
    (out / "device.json").write_text(json.dumps(facts, indent=2) + "\n")
    history = {"rows": runner.rows, "clocks": clocks.samples}
    (out / "clock_history.json").write_text(json.dumps(history) + "\n")
    print(json.dumps({"rows": len(runner.rows), "clock_samples": len(clocks.samples),
                      "seconds": facts["seconds"]}), flush=True)  # fmt: skip


def depth(args: argparse.Namespace) -> None:
    """The ``depth`` verb (module docstring)."""
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    specs = [s.strip() for s in args.shards.split(",") if s.strip()]
    specs.append(specs[0])  # the first again, last: drift over the run
    chunks = [int(c) for c in args.chunks.split(",")]
    clocks = Clocks()
    runs: list[dict[str, Any]] = []
    torch: Any = None

    def save() -> None:  # after every shard: a run cut short keeps what it measured
        facts = device_facts(torch) if torch is not None and args.device == "cuda" else {}
        facts.update(chunks=chunks, scale=args.scale, seconds=round(time.monotonic() - started, 1))
        (out / "depth.json").write_text(json.dumps({"facts": facts, "runs": runs,
                                                    "clocks": clocks.samples}) + "\n")  # fmt: skip

    try:
        for spec in specs:
            shard = shard_of(spec, args.device)
            if shard is None:
                continue
            name, profiler, shape, model = shard
            torch = profiler.torch
            with torch.inference_mode():
                closures: dict[str, Any] = {}
                for chunk in chunks if profiler.device.type == "cuda" else [64]:
                    closures[f"P{chunk}"] = model.iteration(
                        IterationShape(prefill_seqs=1, chunk=chunk)
                    )
                    if args.gemm:
                        x = torch.randn(
                            chunk, shape.hidden, device=profiler.device, dtype=profiler.dtype
                        )
                        w = model.layers[0]["gate_up"]
                        closures[f"G{chunk}"] = lambda x=x, w=w: [x @ w for _ in range(10)]
                runner = Runner(torch, profiler.device, closures, args.scale)
                for kind in closures:
                    runner.idle(2.0)
                    runner.run(f"b2b {kind}", [kind] * runner.count(kind, 3.0))
            run = {"shard": spec, "model": name, "tp": shape.tp, "burst_s": runner.burst_s,
                   "rows": runner.rows}  # fmt: skip
            runs.append(run)
            burst_ms = {k: round(v * 1e3, 3) for k, v in runner.burst_s.items()}
            elapsed = round(time.monotonic() - started, 1)
            print(
                json.dumps({"shard": spec, "burst_ms": burst_ms, "elapsed_s": elapsed}), flush=True
            )
            del runner, closures, model
            profiler.free()
            save()
    finally:
        clocks.stop()
        save()


def depth_report(args: argparse.Namespace) -> None:
    """The ``depth-report`` verb: per shard and iteration, the back-to-back time over the
    burst time (median of the last three quarters) against the engine's clock on the
    roofline: back to back the compute keeps the sustained ratio ``r``; the lone iteration
    after an idle pause keeps ``1 - (1 - r) * mean(D^2)`` over its own time (the clock
    falls within an iteration as long as the time constant). Then the ``r`` that fits the
    whole prefills of every shard (least mean |log error|), beside the shipped one."""
    from functools import cache

    from sincere.catalog import get_model
    from sincere.fit.gpu_check import gpu_seconds
    from sincere.perf import Batch, Deployment, make_step_model
    from sincere.perf.calibration import default_roofline_params

    data = json.loads((Path(args.dir) / "depth.json").read_text())
    facts = data["facts"]
    acc = get_accelerator(args.accelerator or accelerator_of(facts))
    shipped = args.ratio or default_roofline_params(acc).sustained_compute_ratio
    ridge = ridge_tokens(acc)

    @cache
    def seconds(model: str, tp: int, tokens: int, keep: float) -> float:
        dep = Deployment(get_model(model), acc, "bf16", tp=tp)
        step = make_step_model("roofline", dep, {"sustained_compute_ratio": keep})
        return gpu_seconds(step, Batch.of(prefill=[(tokens, 0)], decode=[]))

    def predicted(model: str, tp: int, tokens: int, r: float) -> float:
        """Back to back over the lone iteration, the engine's clock at ratio ``r``."""
        r = round(r, 4)
        share = min(1.0, tokens / ridge)
        lone = seconds(model, tp, tokens, 1.0)
        for _ in range(3):  # the lone iteration's time and the duty through it
            keep = round(1.0 - (1.0 - r) * mean_square_duty(0.0, share, lone), 4)
            lone = seconds(model, tp, tokens, keep)
        return seconds(model, tp, tokens, r) / lone

    cases = []
    samples = data["clocks"]
    for run in data["runs"]:
        for kind, burst in run["burst_s"].items():
            rows = [r for r in run["rows"] if r["pattern"] == f"b2b {kind}"]
            if not rows:
                continue
            times = [r["seconds"] for r in rows]
            slow = statistics.median(times[len(times) // 4 :]) / burst
            t0 = rows[0]["host_start"]
            t1 = t0 + rows[-1]["start_s"] + rows[-1]["seconds"]
            mhz = [c[1] for c in samples if t0 + (t1 - t0) / 4 <= c[0] <= t1]
            cases.append((run, kind, burst, slow, statistics.median(mhz) if mhz else None))
    prefills = [(run["model"], run["tp"], int(k[1:]), slow) for run, k, _, slow, _ in cases
                if k.startswith("P")]  # fmt: skip

    def score(r: float) -> float:
        return statistics.mean(
            abs(math.log(predicted(m, tp, n, r) / s)) for m, tp, n, s in prefills
        )

    fitted = min((0.80 + 0.002 * i for i in range(86)), key=score)
    which = "the ratio given" if args.ratio else "the shipped ratio"
    print(f"{facts.get('gpu')} ({acc.name}), {facts.get('measured_at')}; the engine's clock at "
          f"{which}, {shipped:.3f}, and at the ratio fitted here, {fitted:.3f}")  # fmt: skip
    print("\n| shard | iteration | burst ms | back to back / burst | SM MHz (median, back to back) "
          f"| clock at {shipped:.3f} | clock at {fitted:.3f} |")  # fmt: skip
    print("|---|---|---:|---:|---:|---:|---:|")
    errs: list[list[float]] = [[], []]
    for run, kind, burst, slow, mhz in cases:
        cells = ["—", "—"]
        if kind.startswith("P"):
            for j, r in enumerate((shipped, fitted)):
                pred = predicted(run["model"], run["tp"], int(kind[1:]), r)
                errs[j].append(pred / slow - 1.0)
                cells[j] = f"{pred:.3f}"
        clock = "—" if mhz is None else f"{mhz:.0f}"
        print(f"| {run['shard']} | {kind} | {burst * 1e3:.2f} | {slow:.3f} | {clock} | "
              f"{cells[0]} | {cells[1]} |")  # fmt: skip
    at_start = [seconds(m, tp, n, round(shipped, 4)) / seconds(m, tp, n, 1.0) / s - 1.0
                for m, tp, n, s in prefills]  # fmt: skip
    for label, e in (
        (f"ratio {shipped:.3f}", errs[0]),
        (f"ratio {fitted:.3f}", errs[1]),
        (f"ratio {shipped:.3f}, a lone prefill at the burst clock throughout", at_start),
    ):
        mean, most, bias = (100 * statistics.mean(abs(x) for x in e), 100 * max(map(abs, e)),
                            100 * statistics.mean(e))  # fmt: skip
        print(f"\n{label}: prefills' back-to-back slowdown, mean |error| {mean:.1f} %, "
              f"max {most:.1f} %, bias {bias:+.1f} %")  # fmt: skip


# --- report ------------------------------------------------------------------------------
def duty_trace(
    rows: list[dict[str, Any]], busy: dict[str, float], tau: float, power: float
) -> list[float]:
    """Per row, the mean of ``D ** power`` through the iteration, ``D`` the exponentially
    weighted compute duty: each iteration pulls it towards its compute share
    ``busy[kind]`` over its own time, idle before the pattern counts as zero duty (every
    pattern starts after >= 2 s idle). The square's mean is exact
    (:func:`sincere.engine.clock.mean_square_duty`, the engine's); another power takes the
    mean of the iteration's start and end duty to that power."""
    d, out, last_end = 0.0, [], 0.0
    for row in rows:
        gap = max(0.0, row["start_s"] - last_end)
        d *= math.exp(-gap / tau)
        share, seconds = busy[row["kind"]], row["seconds"]
        w = math.exp(-seconds / tau)
        after = d * w + share * (1.0 - w)
        if power == 2.0:
            out.append(mean_square_duty(d, share, seconds, tau))
        else:
            out.append(((d + after) / 2) ** power)
        d, last_end = after, row["start_s"] + row["seconds"]
    return out


def model_error(patterns: dict[str, list[dict[str, Any]]], burst: dict[str, float],
                busy: dict[str, float], ratio: float, tau: float | None,
                power: float = 1.0) -> dict[str, float]:  # fmt: skip
    """Mean |error| and bias of the prefills' times per pattern family under one clock
    model: the prefill keeps ``1 - (1 - ratio) * mean(D ** power)`` of its burst rate
    (``tau`` None: the constant ``ratio``; ``ratio`` 1: the burst clock). ``burst`` is
    the time measured alone after an idle pause, which the clock model prices too: the
    predicted time is the burst time over the model's keep for the iteration, times the
    model's keep for the lone one."""
    errors: dict[str, list[float]] = {}
    lone = 1.0
    if tau:  # the lone prefill's own keep (from idle, busy the whole iteration)
        lone_trace = duty_trace([{"kind": "P", "start_s": 0.0, "seconds": burst["P"]}],
                                busy, tau, power)  # fmt: skip
        lone = 1.0 - (1.0 - ratio) * lone_trace[0]
    for name, rows in patterns.items():
        trace = duty_trace(rows, busy, tau, power) if tau else [1.0] * len(rows)
        for row, d in zip(rows, trace, strict=True):
            if row["kind"] != "P":
                continue
            keep = 1.0 - (1.0 - ratio) * d if tau else ratio
            predicted = burst["P"] * lone / keep
            errors.setdefault(name.split()[0], []).append(predicted / row["seconds"] - 1.0)
    return {k: statistics.mean(abs(e) for e in v) * 100 for k, v in errors.items()} | {
        f"{k} bias": statistics.mean(v) * 100 for k, v in errors.items()
    }


def accelerator_of(facts: dict[str, Any]) -> str:
    """The catalog accelerator of a ``device.json``'s GPU name (H100 SXM or H200)."""
    gpu = str(facts.get("gpu", ""))
    if "H200" in gpu:
        return "H200"
    if "H100" in gpu:
        return "H100-SXM"
    raise SystemExit(f"report: which catalog GPU is {gpu!r}? name it with --accelerator")


def report(args: argparse.Namespace) -> None:
    """The ``report`` verb (module docstring)."""
    folder = Path(args.dir)
    facts = json.loads((folder / "device.json").read_text())
    history = json.loads((folder / "clock_history.json").read_text())
    burst = facts["burst_s"]
    patterns: dict[str, list[dict[str, Any]]] = {}
    for row in history["rows"]:
        if not row["pattern"].startswith("burst"):
            patterns.setdefault(row["pattern"], []).append(row)
    print(f"{facts.get('gpu', facts.get('device'))}: burst ms " +
          ", ".join(f"{k} {v * 1e3:.2f}" for k, v in burst.items()))  # fmt: skip
    print("\n| pattern | prefills | prefill / burst (first, median, last) | compute duty |")
    print("|---|---:|---:|---:|")
    for name, rows in patterns.items():
        p = [r["seconds"] / burst["P"] for r in rows if r["kind"] == "P"]
        total = sum(r["seconds"] for r in rows)
        duty = sum(r["seconds"] for r in rows if r["kind"] in ("P", "M")) / total
        if not p:
            k = rows[0]["kind"]
            s = [r["seconds"] / burst[k] for r in rows]
            print(f"| {name} | {k} x{len(s)} | {s[0]:.3f}, {statistics.median(s):.3f}, "
                  f"{statistics.median(s[-max(1, len(s) // 4):]):.3f} | {duty:.2f} |")  # fmt: skip
            continue
        print(f"| {name} | {len(p)} | {p[0]:.3f}, {statistics.median(p):.3f}, {p[-1]:.3f} "
              f"| {duty:.2f} |")  # fmt: skip
    step = [r["seconds"] / burst["P"] for r in patterns["step"] if r["kind"] == "P"]
    ratio = args.ratio or 1.0 / statistics.median(step[len(step) // 4 :])
    acc = get_accelerator(args.accelerator or accelerator_of(facts))
    ridge = ridge_tokens(acc)
    default = {k: it.num_tokens for k, it in shapes(False).items()}  # runs before --tp
    tokens = {k: int(n) for k, n in facts.get("tokens", default).items()}
    by_tokens = {k: min(1.0, n / ridge) for k, n in tokens.items()}
    fits = []
    for decode_busy in (0.0, 0.1, 0.2, 0.3):
        busy = {"P": 1.0, "M": 1.0, "D": decode_busy, "B": decode_busy}
        for power in (1.0, 1.5, 2.0, 2.5, 3.0):
            for tau in [0.01 * 1.25**i for i in range(25)]:
                err = model_error(patterns, burst, busy, ratio, tau, power)
                score = statistics.mean(v for k, v in err.items() if "bias" not in k)
                fits.append((score, tau, power, decode_busy, err))
    best = min(fits, key=lambda f: f[0])
    busy0 = {"P": 1.0, "M": 1.0, "D": 0.0, "B": 0.0}
    print(
        f"\nprefill time, mean |error| % (bias) by pattern family; sustained keep {ratio:.3f}"
        f" ({'given' if args.ratio else 'the step pattern, its last three quarters'}):"
    )
    for label, err in (
        ("burst clock (keep 1)", model_error(patterns, burst, busy0, 1.0, None)),
        (f"constant keep {ratio:.3f}", model_error(patterns, burst, busy0, ratio, None)),
        (f"the engine's clock (tau {TAU_S * 1e3:.0f} ms, duty ** {EXPONENT:g}, busy = tokens / "
         f"{ridge:.0f}, {acc.name}'s ridge)",
         model_error(patterns, burst, by_tokens, ratio, TAU_S, EXPONENT)),
        (f"best of the grid: tau {best[1] * 1e3:.0f} ms, duty ** {best[2]:g}, a decode "
         f"{best[3]:g} busy", best[4]),
    ):  # fmt: skip
        cells = ", ".join(f"{k} {v:.1f} ({err[k + ' bias']:+.1f})"
                          for k, v in err.items() if "bias" not in k)  # fmt: skip
        print(f"- {label}: {cells}")
    samples = history.get("clocks") or []
    if samples:
        mhz = [s[1] for s in samples]
        print(
            f"\nNVML: {len(samples)} samples, SM clock {min(mhz)}-{max(mhz)} MHz, "
            f"power up to {max(s[2] for s in samples):.0f} W"
        )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    verbs = parser.add_subparsers(dest="verb", required=True)
    m = verbs.add_parser("measure", help="time the patterns on a GPU")
    m.add_argument("--out", required=True)
    m.add_argument("--model", default="llama-3.1-8b")
    m.add_argument("--tp", type=int, default=1, help="the tensor-parallel shard one GPU runs")
    m.add_argument("--device", default="cuda")
    m.add_argument("--scale", type=float, default=1.0, help="multiply every hold and pause")
    r = verbs.add_parser("report", help="the tables and the clock models (any machine)")
    r.add_argument("dir")
    r.add_argument("--ratio", type=float, default=None,
                   help="the prefill's sustained keep (default: the step pattern's)")  # fmt: skip
    r.add_argument("--accelerator", default=None, help="catalog GPU (default: device.json's)")
    d = verbs.add_parser("depth", help="back-to-back slowdown of several shards, one GPU")
    d.add_argument("--out", required=True)
    d.add_argument("--shards", default="llama-3.1-8b:1,qwen3-32b:2")
    d.add_argument("--chunks", default="2048", help="prefill sizes, comma-separated")
    d.add_argument("--no-gemm", dest="gemm", action="store_false", help="prefills only")
    d.add_argument("--device", default="cuda")
    d.add_argument("--scale", type=float, default=1.0, help="multiply every hold and pause")
    dr = verbs.add_parser("depth-report", help="the depth table (any machine)")
    dr.add_argument("dir")
    dr.add_argument("--accelerator", default=None, help="catalog GPU (default: depth.json's)")
    dr.add_argument("--ratio", type=float, default=None,
                    help="the ratio beside the fitted one (default: the shipped)")  # fmt: skip
    args = parser.parse_args(argv)
    verbs_ = {"measure": measure, "report": report, "depth": depth, "depth-report": depth_report}
    verbs_[args.verb](args)


if __name__ == "__main__":
    main()
