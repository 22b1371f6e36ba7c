"""Whole mixture-of-experts layers measured on a real GPU against the step model that prices them.

Three verbs; ``measure`` needs a CUDA GPU and PyTorch and nothing else (no sincere, no
pydantic: it runs on a bare GPU machine), ``compare`` runs anywhere sincere does,
``selftest`` on any CPU with PyTorch:

``measure``: for each model shard (shapes from sincere's catalog, ``models.yaml``, copied
into :data:`SHARDS` so that the verb needs no sincere; ``selftest`` checks them against the
catalog), one MoE layer in bf16 with random weights (experts ``N(0, 0.02)``, the router
``N(0, 1/hidden)`` so that its logits are about ``N(0, 1)`` on inputs ``N(0, 1)``, seed 0),
timed at 1 to 8,192 tokens (powers of two) under two routings:

* ``qwen3-30b-a3b tp1``: 128 experts of 768, top 8, hidden 2,048, on one GPU;
* ``mixtral-8x7b tp2``: 8 experts of 14,336 split over 2 GPUs (7,168 each), top 2;
* ``gpt-oss-20b tp1``: 32 experts of 2,880, top 4, in bf16 (the published checkpoint is
  MXFP4); plain SiLU(gate) x up, without GPT-OSS's expert biases and clamped SwiGLU
  (elementwise work of the same size);
* ``qwen3-235b-a22b ep8``: one GPU of eight under expert parallelism without attention
  data parallelism (vLLM's ``--enable-expert-parallel`` at TP 8): every GPU holds every
  token, routes it over all 128 experts (top 8) and computes only its own 16 (experts 0-15,
  vLLM's linear placement) at full width 1,536; pairs routed elsewhere are not computed
  here (the TP all-reduce would sum them), but the permutation and the combine still move
  them (static shapes, as a CUDA graph needs);
* ``qwen3-235b-a22b tp8``: the same layer split by TP over 8 GPUs: all 128 experts, each
  1,536 / 8 = 192 wide.

The layer, as plain PyTorch runs it (no fused MoE kernel):

1. router: ``hidden -> experts`` linear, softmax in fp32, top-k, renormalised over the k
   (Qwen3 and Mixtral renormalise; GPT-OSS's softmax over the top-k logits is the same);
2. permutation: the ``T k`` (token, slot) pairs sorted by expert, counts per expert by
   ``scatter_add_`` (no host sync), their int32 cumulative ends, the tokens gathered;
3. experts: ``torch._grouped_mm`` of the gathered tokens with gate/up ``[E, hidden, 2 I]``
   (stored ``[E, 2 I, hidden]`` as a linear layer's weight and passed transposed, i.e.
   column-major, as torchtitan passes its experts; on Hopper in bf16 it runs CUTLASS's
   grouped GEMM with no host sync, taking either major with 16-byte-aligned strides),
   SiLU(gate) x up, ``_grouped_mm`` with down ``[E, I, hidden]`` (stored ``[E, hidden, I]``,
   passed transposed);
4. combine: each pair's output times its routing weight, ``index_add_`` back onto its token
   (an expert-parallel shard's foreign pairs land on one spare row, dropped).

Routings: ``balanced``, the random router alone (near-uniform); ``skewed``, a fixed bias of
``-ln(1 + rank)`` added to the logits, ``rank`` a fixed random order of the experts
(:data:`SKEW_BIAS`: expert of rank ``r`` has its odds cut by ``1 + r``; at 8,192 tokens the
hottest of Qwen3-30B's 128 experts takes ~95 % of the tokens, and 16 tokens reach ~35
experts where balanced routing reaches ~85). Each row records the distinct experts of this
GPU the batch reached and the busiest one's tokens (an EP shard: of its 16).

Parts, each captured in a CUDA graph and replayed: ``layer`` (1-4), ``experts`` (3 alone,
on the same batch's permuted tokens), ``rest`` (1, 2 and 4 without 3: the experts' output a
fixed tensor). ``ms`` is the median of ``--replays`` replays each after an L2 flush (a
512 MB read, queued before the replay: a served model's other layers evict the L2 between
two calls of this one), ``hot_ms`` the median of as many back to back (a GPU spin queued
first, so that the events time kernels, not the launch), both by CUDA events; ``mode``
``graph``. A part whose capture fails is timed the same way without a graph (``eager``).
Where ``torch._grouped_mm`` is missing or fails on the GPU (probed once per shard), the
experts run as a loop over the experts (``impl=loop``: a host sync for the group ends, one
GEMM pair per active expert, eager): such rows time no fused kernel and say little about
one. A shape that fails (out of memory, a capture error) is a row with its ``error``; the
run goes on, and stops starting new shapes past ``--max-duration`` (rows ``time limit``).

Files in ``--out``: ``moe_layers.csv`` (:data:`COLUMNS`) and ``device.json`` (GPU,
multiprocessors, memory, PyTorch, CUDA, when, seconds).

``compare``: each row against sincere's step model at the shipped constants of the named
accelerator (``ArchStep``, :mod:`sincere.perf.arch_step`, as the roofline builds it): the
``experts`` part against its routed-experts price (``expert_work`` / ``fused_moe_s``:
padded grouped-GEMM FLOPs, the active experts' weights, the activations and the
permutation's bytes), ``rest`` against the router GEMM (the only other term it charges:
softmax, top-k, sort and the scatter are not priced apart, the permutation's bytes sit in
the experts' price), ``layer`` against both. Routing: at the step model's own assumption
(``MoEParams.routing_skew`` 0, uniform), or with ``--match-distinct`` at the Zipf exponent
whose expected distinct experts (per GPU) equal the row's measured count. ``--ratio``
prices at another sustained-load compute ratio (1: the boost clock a short benchmark
runs at). Prints per model, routing and part: rows, mean absolute error, max, bias (+: the
model slower) and by token range; ``--csv FILE`` writes every row's prediction. Rows with
an error and ``impl=loop`` rows are left out and counted.

``selftest``: the layer on a CPU at small shapes (grouped and loop experts, an EP shard,
both routings, fp32 and bf16) against a per-token, per-expert reference; the counts against
``bincount``; ``measure``'s rows and files at three token counts; :data:`SHARDS` against the
catalog where sincere is installed.

    PYTHONUNBUFFERED=1 python benchmarks/gpu_moe.py measure --out DIR [--shards KEY,...]
    python benchmarks/gpu_moe.py compare DIR [--accelerator H200] [--ratio R] [--csv FILE]
    python benchmarks/gpu_moe.py selftest
"""

from __future__ import annotations

import argparse
import csv
import gc
import json
import platform
import statistics
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

SEED = 0
WEIGHT_STD = 0.02  # experts' weights
SKEW_BIAS = 1.0  # skewed routing: -SKEW_BIAS * ln(1 + rank) added to the logits
TOKENS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192)
ROUTINGS = ("balanced", "skewed")
PARTS = ("layer", "experts", "rest")
RANGES = ((1, 64), (128, 1024), (2048, 8192))  # compare's token ranges
WARMUPS = 3
FLUSH_MB = 512  # read before each cold replay (H200's L2: 60 MB)
SLEEP_CYCLES = 400_000  # ~0.2 ms at 2 GHz: longer than launching a graph
COLUMNS = [
    "model", "shard", "experts_local", "top_k", "hidden", "intermediate", "tokens", "routing",
    "distinct_experts", "max_per_expert", "part", "ms", "hot_ms", "mode", "impl", "error",
]  # fmt: skip


@dataclass(frozen=True, slots=True)
class Shard:
    """One GPU's share of a model's MoE layer."""

    model: str  # catalog name
    shard: str  # "tpN" (every expert split over N GPUs) or "epN" (TP N, experts over N)
    num_experts: int  # the router's experts (the whole model's)
    local_experts: int  # experts this GPU computes: 0 .. local_experts - 1
    top_k: int
    hidden: int
    width: int  # one expert's intermediate size on this GPU
    renormalise: bool = True  # top-k weights rescaled to sum to 1

    @property
    def key(self) -> str:
        return f"{self.model}:{self.shard}"


SHARDS = {
    s.key: s
    for s in (
        Shard("qwen3-30b-a3b", "tp1", 128, 128, 8, 2048, 768),
        Shard("mixtral-8x7b", "tp2", 8, 8, 2, 4096, 14336 // 2),
        Shard("gpt-oss-20b", "tp1", 32, 32, 4, 2880, 2880),
        Shard("qwen3-235b-a22b", "ep8", 128, 128 // 8, 8, 4096, 1536),
        Shard("qwen3-235b-a22b", "tp8", 128, 128, 8, 4096, 1536 // 8),
    )
}


def shard_degrees(shard: str) -> tuple[int, int]:
    """``tpN`` -> (N, 1), ``epN`` -> (N, N): (TP, EP) of the deployment."""
    kind, n = shard[:2], shard[2:]
    if kind not in ("tp", "ep") or not n.isdigit() or int(n) < 1:
        raise ValueError(f"shard {shard!r} is not tpN or epN (N >= 1)")
    return int(n), int(n) if kind == "ep" else 1


# --- the layer ---------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Weights:
    """A layer's random weights on its device."""

    router: Any  # [E, hidden]
    gate_up: Any  # [E_local, 2 I, hidden]: gate rows, then up rows
    down: Any  # [E_local, hidden, I]
    skew: Any  # [E] fp32 logit bias of the skewed routing


@dataclass(frozen=True, slots=True)
class Routed:
    """One batch's (token, slot) pairs in expert order."""

    token: Any  # [T k] int64 the pair's token
    weight: Any  # [T k, 1] its routing weight, in the activations' dtype
    dest: Any  # [T k] row it is added to (T: a pair of another GPU's expert)
    offsets: Any  # [E_local] int32 end of each local expert's rows
    counts: Any  # [E_local + 1] int32 pairs per local expert (last: the other GPUs')


def make_weights(torch: Any, shard: Shard, device: Any, dtype: Any) -> Weights:
    """Seeded random weights (module docstring)."""
    gen = torch.Generator(device=device).manual_seed(SEED)

    def normal(shape: tuple[int, ...], std: float) -> Any:
        return torch.empty(shape, device=device, dtype=dtype).normal_(0.0, std, generator=gen)

    e, h, w = shard.local_experts, shard.hidden, shard.width
    rank = torch.randperm(shard.num_experts, generator=torch.Generator().manual_seed(SEED))
    skew = (-SKEW_BIAS * torch.log1p(rank.double())).float().to(device)
    return Weights(
        normal((shard.num_experts, h), h**-0.5),
        normal((e, 2 * w, h), WEIGHT_STD),
        normal((e, h, w), WEIGHT_STD),
        skew,
    )


def route(torch: Any, shard: Shard, w: Weights, x: Any, skewed: bool) -> Routed:
    """Steps 1 and 2 but the gather: router, top-k and the pairs sorted by expert, with no
    host sync."""
    logits = (x @ w.router.T).float()
    if skewed:
        logits = logits + w.skew
    top, ids = torch.softmax(logits, dim=-1).topk(shard.top_k, dim=-1)
    if shard.renormalise:
        top = top / top.sum(dim=-1, keepdim=True)
    local = shard.local_experts
    key = ids.flatten()
    if local < shard.num_experts:  # other GPUs' experts share one key past this GPU's
        key = key.clamp(max=local)
    key, order = key.sort()
    counts = torch.zeros(local + 1, dtype=torch.int32, device=x.device)
    counts.scatter_add_(0, key, torch.ones_like(key, dtype=torch.int32))
    offsets = counts[:local].cumsum(0, dtype=torch.int32)
    token = torch.div(order, shard.top_k, rounding_mode="floor")
    weight = top.flatten()[order].to(x.dtype).unsqueeze(1)
    dest = token if local == shard.num_experts else torch.where(key < local, token, len(x))
    return Routed(token, weight, dest, offsets, counts)


def experts_grouped(torch: Any, w: Weights, xs: Any, offsets: Any) -> Any:
    """Step 3 by two grouped GEMMs; rows past the last local expert's are left undefined."""
    gate_up = torch._grouped_mm(xs, w.gate_up.transpose(-2, -1), offs=offsets)
    gate, up = gate_up.chunk(2, dim=-1)
    act = torch.nn.functional.silu(gate) * up
    return torch._grouped_mm(act, w.down.transpose(-2, -1), offs=offsets)


def experts_loop(torch: Any, w: Weights, xs: Any, offsets: Any) -> Any:
    """Step 3 expert by expert (the group ends read on the host); other rows zero."""
    out = torch.zeros(xs.shape[0], w.down.shape[1], device=xs.device, dtype=xs.dtype)
    start = 0
    for e, end in enumerate(offsets.tolist()):
        if end > start:
            gate, up = (xs[start:end] @ w.gate_up[e].T).chunk(2, dim=-1)
            out[start:end] = (torch.nn.functional.silu(gate) * up) @ w.down[e].T
        start = end
    return out


EXPERTS: dict[str, Callable[[Any, Weights, Any, Any], Any]] = {
    "grouped": experts_grouped,
    "loop": experts_loop,
}


def combine(torch: Any, y: Any, routed: Routed, num_tokens: int, foreign: bool) -> Any:
    """Step 4: each pair's output weighted and added onto its token (``foreign``: one spare
    row takes the other GPUs' pairs and is dropped)."""
    out = torch.zeros(num_tokens + int(foreign), y.shape[1], device=y.device, dtype=y.dtype)
    out.index_add_(0, routed.dest, y * routed.weight)
    return out[:num_tokens]


def moe_layer(torch: Any, shard: Shard, w: Weights, x: Any, skewed: bool, impl: str) -> Any:
    """The whole layer (steps 1-4) over tokens ``x`` ``[T, hidden]``."""
    routed = route(torch, shard, w, x, skewed)
    y = EXPERTS[impl](torch, w, x.index_select(0, routed.token), routed.offsets)
    return combine(torch, y, routed, len(x), shard.local_experts < shard.num_experts)


# --- timing ------------------------------------------------------------------------------
def _median_ms(
    torch: Any, run: Callable[[], Any], replays: int, before: Callable[[], Any]
) -> float:
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    times = []
    for _ in range(replays):
        before()  # queued ahead of the start event: the GPU busy while the replay launches
        start.record()
        run()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return float(statistics.median(times))


def _capture(torch: Any, fn: Callable[[], Any]) -> Any:
    """``fn`` captured in a CUDA graph, or None when it cannot be."""
    graph = torch.cuda.CUDAGraph()
    try:
        with torch.cuda.graph(graph):
            fn()
    except torch.cuda.OutOfMemoryError:
        raise
    except Exception:  # an op the graph cannot hold: timed without one
        torch.cuda.synchronize()
        return None
    return graph


def time_part(
    torch: Any, fn: Callable[[], Any], replays: int, flush: Any, capture: bool
) -> tuple[float, float, str]:
    """(cold ms, hot ms, mode) of ``fn`` (module docstring); on a CPU the wall clock's
    median, cold and hot alike."""
    if flush is None:
        for _ in range(WARMUPS):
            fn()
        walls = []
        for _ in range(replays):
            started = time.perf_counter()
            fn()
            walls.append(1e3 * (time.perf_counter() - started))
        ms = float(statistics.median(walls))
        return ms, ms, "wall"
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up on a side stream, as capture requires
        for _ in range(2):
            fn()
    torch.cuda.current_stream().wait_stream(side)
    torch.cuda.synchronize()
    graph = _capture(torch, fn) if capture else None
    run = graph.replay if graph is not None else fn
    for _ in range(WARMUPS):
        run()
    cold = _median_ms(torch, run, replays, flush.sum)
    hot = _median_ms(torch, run, replays, lambda: torch.cuda._sleep(SLEEP_CYCLES))
    mode = "eager" if graph is None else "graph"
    del graph, run
    return cold, hot, mode


@dataclass(frozen=True, slots=True)
class Bench:
    """What every shape of one shard is measured with."""

    torch: Any
    shard: Shard
    weights: Weights
    inputs: Any  # [max tokens, hidden] N(0, 1)
    impl: str  # EXPERTS key
    replays: int
    flush: Any  # the L2 flush buffer; None on a CPU


def measure_point(bench: Bench, tokens: int, routing: str) -> list[dict[str, Any]]:
    """The three parts' rows of one token count and routing; a part that fails is a row with
    its error."""
    torch, shard, w = bench.torch, bench.shard, bench.weights
    skewed, foreign = routing == "skewed", shard.local_experts < shard.num_experts
    x = bench.inputs[:tokens]
    experts = EXPERTS[bench.impl]
    routed = route(torch, shard, w, x, skewed)
    xs = x.index_select(0, routed.token)
    y = experts(torch, w, xs, routed.offsets)
    counts = routed.counts[: shard.local_experts].tolist()

    def rest() -> Any:
        r = route(torch, shard, w, x, skewed)
        x.index_select(0, r.token)
        return combine(torch, y, r, tokens, foreign)

    parts: dict[str, Callable[[], Any]] = {
        "layer": lambda: moe_layer(torch, shard, w, x, skewed, bench.impl),
        "experts": lambda: experts(torch, w, xs, routed.offsets),
        "rest": rest,
    }
    base = row_base(shard, tokens, routing, bench.impl)
    base.update(distinct_experts=sum(c > 0 for c in counts), max_per_expert=max(counts))
    rows = []
    for part, fn in parts.items():
        row = {**base, "part": part}
        try:
            cold, hot, mode = time_part(torch, fn, bench.replays, bench.flush, bench.impl != "loop")
            row.update(ms=round(cold, 5), hot_ms=round(hot, 5), mode=mode)
        except Exception as exc:  # out of memory, a kernel refused: recorded, the run goes on
            row["error"] = _error(exc)
            free(torch)
        rows.append(row)
    return rows


def row_base(shard: Shard, tokens: int, routing: str, impl: str) -> dict[str, Any]:
    """A row's shape columns, the timing ones empty."""
    row: dict[str, Any] = dict.fromkeys(COLUMNS, "")
    row.update(
        model=shard.model, shard=shard.shard, experts_local=shard.local_experts,
        top_k=shard.top_k, hidden=shard.hidden, intermediate=shard.width, tokens=tokens,
        routing=routing, impl=impl,
    )  # fmt: skip
    return row


def _error(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:200]


def free(torch: Any) -> None:
    """Drop what Python still holds and give the cached blocks back."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def probe_impl(torch: Any, shard: Shard, w: Weights, x: Any) -> tuple[str, str]:
    """``grouped`` where ``torch._grouped_mm`` runs this shard's experts on the device and
    agrees with the loop, else ``loop``; and why not."""
    if not hasattr(torch, "_grouped_mm"):
        return "loop", "torch._grouped_mm missing"
    try:
        routed = route(torch, shard, w, x, False)
        xs = x.index_select(0, routed.token)
        n = int(routed.offsets[-1])
        got = experts_grouped(torch, w, xs, routed.offsets)[:n].float()
        want = experts_loop(torch, w, xs, routed.offsets)[:n].float()
        scale = want.abs().max().clamp(min=1e-6)
        if not bool(((got - want).abs().max() / scale) < 0.05):
            return "loop", "torch._grouped_mm disagrees with the loop"
    except Exception as exc:
        return "loop", f"torch._grouped_mm failed: {_error(exc)}"
    return "grouped", ""


def run_shards(
    torch: Any, shards: list[Shard], tokens: tuple[int, ...], device: Any, dtype: Any,
    replays: int, deadline: float, save: Callable[[list[dict[str, Any]]], None],
) -> tuple[list[dict[str, Any]], dict[str, str]]:  # fmt: skip
    """Every shard's rows (one layer at a time, freed after; all so far handed to ``save``
    after each routing) and the shards whose experts fell back to the loop, with why."""
    rows: list[dict[str, Any]] = []
    fallbacks: dict[str, str] = {}
    cuda = torch.device(device).type == "cuda"
    flush = torch.empty(FLUSH_MB << 18, device=device) if cuda else None  # fp32: MB * 2^18
    started = time.monotonic()
    for shard in shards:
        try:
            w = make_weights(torch, shard, device, dtype)
            gen = torch.Generator(device=device).manual_seed(SEED + 1)
            inputs = torch.randn(max(tokens), shard.hidden, generator=gen, device=device,
                                 dtype=dtype)  # fmt: skip
            impl, why = probe_impl(torch, shard, w, inputs[:256])
        except Exception as exc:  # the weights do not fit: every row says so
            error = _error(exc)
            for routing in ROUTINGS:
                for t in tokens:
                    rows += [{**row_base(shard, t, routing, ""), "part": p, "error": error}
                             for p in PARTS]  # fmt: skip
            print(f"{shard.key}: {error}", flush=True)
            free(torch)
            continue
        if why:
            fallbacks[shard.key] = why
            print(f"{shard.key}: experts as a loop ({why})", flush=True)
        bench = Bench(torch, shard, w, inputs, impl, replays, flush)
        for routing in ROUTINGS:
            done = []
            for t in tokens:
                if time.monotonic() > deadline:
                    done += [{**row_base(shard, t, routing, impl), "part": p,
                              "error": "time limit"} for p in PARTS]  # fmt: skip
                    continue
                try:
                    done += measure_point(bench, t, routing)
                except Exception as exc:  # the routing itself failed
                    done += [{**row_base(shard, t, routing, impl), "part": p,
                              "error": _error(exc)} for p in PARTS]  # fmt: skip
                    free(torch)
            rows += done
            save(rows)
            print(progress(shard, routing, done, time.monotonic() - started), flush=True)
        del bench, w, inputs
        free(torch)
    return rows, fallbacks


def progress(shard: Shard, routing: str, rows: list[dict[str, Any]], elapsed: float) -> str:
    """One line per shard and routing: the layer's range of times, errors, when."""
    layer = [float(r["ms"]) for r in rows if r["part"] == "layer" and r["ms"] != ""]
    errors = sum(1 for r in rows if r["error"])
    span = f"layer {min(layer):.3f}-{max(layer):.3f} ms" if layer else "no layer timed"
    return f"{shard.key} {routing}: {span}, {errors} errors, at {elapsed:.0f} s"


def device_facts(torch: Any) -> dict[str, Any]:
    """The GPU, its driver and the software that timed it."""
    props = torch.cuda.get_device_properties(0)
    return {
        "gpu": torch.cuda.get_device_name(0),
        "multiprocessors": props.multi_processor_count,
        "memory_gib": round(props.total_memory / 2**30, 1),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "python": platform.python_version(),
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def write_rows(path: Path, rows: list[dict[str, Any]]) -> None:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)


def parse_shards(text: str) -> list[Shard]:
    """``KEY,...`` -> shards; a clear exit for an unknown key."""
    keys = [k.strip() for k in text.split(",") if k.strip()]
    unknown = [k for k in keys if k not in SHARDS]
    if unknown or not keys:
        raise SystemExit(f"--shards: unknown {unknown or text!r}; known: {', '.join(SHARDS)}")
    return [SHARDS[k] for k in keys]


def measure(args: argparse.Namespace) -> None:
    """The ``measure`` verb (module docstring)."""
    import torch

    started = time.monotonic()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    shards = parse_shards(args.shards)
    tokens = tuple(int(t) for t in args.tokens.split(","))
    cuda = torch.device(args.device).type == "cuda"
    facts: dict[str, Any] = (
        device_facts(torch) if cuda else {"gpu": "cpu", "torch": torch.__version__}
    )
    facts.update(shards=",".join(s.key for s in shards), replays=args.replays, seed=SEED)
    (out / "device.json").write_text(json.dumps(facts, indent=2) + "\n")  # again at the end

    def save(rows: list[dict[str, Any]]) -> None:
        write_rows(out / "moe_layers.csv", rows)

    with torch.inference_mode():
        rows, fallbacks = run_shards(
            torch, shards, tokens, args.device, torch.bfloat16, args.replays,
            started + args.max_duration, save,
        )  # fmt: skip
    save(rows)
    facts.update(
        skew_bias=SKEW_BIAS, loop_fallbacks=fallbacks,
        errors=sum(1 for r in rows if r["error"]),
        seconds=round(time.monotonic() - started, 1),
    )  # fmt: skip
    (out / "device.json").write_text(json.dumps(facts, indent=2) + "\n")
    print(json.dumps(facts), flush=True)


# --- compare -----------------------------------------------------------------------------
def matched_skew(
    tokens: int, num_experts: int, top_k: int, ep: int, distinct: int, tile: int
) -> float:
    """The Zipf exponent at which the step model expects ``distinct`` experts per GPU over
    ``tokens`` tokens (0 where uniform routing expects no more)."""
    from sincere.perf.moe import routing_load

    def expected(skew: float) -> float:
        return routing_load(tokens, num_experts, top_k, skew, tile)[0] / ep

    if distinct >= expected(0.0):
        return 0.0
    low, high = 0.0, 8.0
    for _ in range(40):  # fewer distinct experts as the exponent grows
        mid = (low + high) / 2
        low, high = (mid, high) if expected(mid) > distinct else (low, mid)
    return round((low + high) / 2, 3)


class Pricer:
    """The step model's MoE layer terms per (model, shard, skew), built once each."""

    def __init__(self, accelerator: str, ratio: float | None) -> None:
        from sincere.catalog import get_accelerator
        from sincere.perf.calibration import default_roofline_params

        self.accelerator = get_accelerator(accelerator)
        overrides = {} if ratio is None else {"sustained_compute_ratio": ratio}
        self.params = default_roofline_params(self.accelerator, overrides)
        self._steps: dict[tuple[str, str, float], Any] = {}

    def step(self, model: str, shard: str, skew: float) -> Any:
        from sincere.catalog import get_model
        from sincere.perf.arch_step import ArchStep, MoEParams
        from sincere.perf.base import Deployment

        key = (model, shard, skew)
        if key not in self._steps:
            tp, ep = shard_degrees(shard)
            dep = Deployment(get_model(model), self.accelerator, "bf16", tp=tp, ep=ep)
            self._steps[key] = ArchStep(dep, self.params, MoEParams(routing_skew=skew))
        return self._steps[key]

    def seconds(self, model: str, shard: str, skew: float, tokens: int) -> dict[str, float]:
        """One MoE layer's priced parts: ``experts``, ``rest`` (the router), ``layer``."""
        step = self.step(model, shard, skew)
        arch = step.deployment.model
        moe_frac = arch.num_moe_layers / arch.num_layers  # layer_linear averages the layers
        _, router, experts, _ = step.layer_linear(tokens)
        router, experts = router / moe_frac, experts / moe_frac
        return {"experts": experts, "rest": router, "layer": router + experts}


def catalog_shard(model: str, shard: str) -> Shard:
    """The shard as the catalog shapes it (to check a row against)."""
    from sincere.catalog import get_model

    arch = get_model(model)
    tp, ep = shard_degrees(shard)
    split = max(1, tp // ep)  # GPUs each expert's width is split over
    return Shard(
        model, shard, arch.num_experts, arch.num_experts // ep, arch.experts_per_token,
        arch.hidden_size, arch.expert_intermediate_size // split,
    )  # fmt: skip


def priced_rows(
    rows: list[dict[str, str]], pricer: Pricer, column: str, match: bool
) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """Each timed row with its prediction; the rows left out, by why."""
    out: list[dict[str, Any]] = []
    skipped: dict[str, int] = defaultdict(int)
    checked: dict[tuple[str, str], str] = {}
    for row in rows:
        if row.get("error"):
            skipped["error in the row"] += 1
            continue
        if row.get("impl") == "loop":
            skipped["impl=loop (no fused kernel timed)"] += 1
            continue
        if not row.get(column):
            skipped[f"no {column}"] += 1
            continue
        model, shard = row["model"], row["shard"]
        if (model, shard) not in checked:
            checked[(model, shard)] = _shape_problem(row)
        if checked[(model, shard)]:
            skipped[checked[(model, shard)]] += 1
            continue
        tokens = int(row["tokens"])
        skew = 0.0
        if match:
            spec = catalog_shard(model, shard)
            _, ep = shard_degrees(shard)
            tile = pricer.step(model, shard, 0.0).moe.expert_tile
            skew = matched_skew(tokens, spec.num_experts, spec.top_k, ep,
                                int(row["distinct_experts"]), tile)  # fmt: skip
        predicted = pricer.seconds(model, shard, skew, tokens)[row["part"]]
        measured = float(row[column]) / 1e3
        out.append({
            "model": model, "shard": shard, "routing": row["routing"], "part": row["part"],
            "tokens": tokens, "distinct_experts": int(row["distinct_experts"]),
            "max_per_expert": int(row["max_per_expert"]), "skew": skew,
            "measured_ms": round(1e3 * measured, 5), "predicted_ms": round(1e3 * predicted, 5),
            "error": predicted / measured - 1.0, "mode": row["mode"], "impl": row["impl"],
        })  # fmt: skip
    return out, dict(skipped)


def _shape_problem(row: dict[str, str]) -> str:
    """Why a row's shard cannot be priced ('' where it can)."""
    try:
        spec = catalog_shard(row["model"], row["shard"])
    except Exception as exc:
        return f"{row['model']} {row['shard']}: {_error(exc)}"
    got = (int(row["experts_local"]), int(row["top_k"]), int(row["hidden"]),
           int(row["intermediate"]))  # fmt: skip
    want = (spec.local_experts, spec.top_k, spec.hidden, spec.width)
    if got != want:
        return f"{row['model']} {row['shard']}: shape {got} is not the catalog's {want}"
    return ""


def summary_line(label: str, errs: list[tuple[int, float]]) -> str:
    """A table row: count, mean abs error, max, bias, and mean abs (bias) by token range."""
    es = [e for _, e in errs]
    mean_abs = statistics.fmean(abs(e) for e in es)
    cells = [label, str(len(es)), f"{100 * mean_abs:.1f} %"]
    cells += [f"{100 * max(abs(e) for e in es):.1f} %", f"{100 * statistics.fmean(es):+.1f} %"]
    for low, high in RANGES:
        part = [e for t, e in errs if low <= t <= high]
        cells.append(
            f"{100 * statistics.fmean(abs(e) for e in part):.0f} % "
            f"({100 * statistics.fmean(part):+.0f})"
            if part
            else ""
        )
    return "| " + " | ".join(cells) + " |"


def compare(args: argparse.Namespace) -> None:
    """The ``compare`` verb (module docstring)."""
    folder = Path(args.folder)
    with (folder / "moe_layers.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    facts_path = folder / "device.json"
    facts = json.loads(facts_path.read_text()) if facts_path.exists() else {}
    pricer = Pricer(args.accelerator, args.ratio)
    column = "hot_ms" if args.hot else "ms"
    table, skipped = priced_rows(rows, pricer, column, args.match_distinct)
    routing = ("Zipf exponent matching each row's distinct experts" if args.match_distinct
               else "the step model's own (uniform, routing_skew 0)")  # fmt: skip
    print(f"{len(table)} rows priced on {pricer.accelerator.name} (sustained compute ratio "
          f"{pricer.params.sustained_compute_ratio}), measured {column} "
          f"({'back to back' if args.hot else 'L2 flushed'}); routing: {routing}")  # fmt: skip
    print(f"measured on {facts.get('gpu', 'an unnamed device')} (torch {facts.get('torch', '?')}, "
          f"CUDA {facts.get('cuda', '?')}); {sum(t['mode'] == 'eager' for t in table)} of the "
          "priced rows timed without a CUDA graph")  # fmt: skip
    for why, n in sorted(skipped.items()):
        print(f"skipped {n} rows: {why}")
    print(
        "experts: routed experts (fused_moe_s, the permutation's bytes in it); rest: the "
        "router GEMM, all the model charges beside; layer: both"
    )
    print()
    head = " | ".join(f"{lo}-{hi} tokens" for lo, hi in RANGES)
    print(f"| model | routing | part | rows | mean abs error | max | bias | {head} |")
    print("|---|---|---|---:|---:|---:|---:|" + "---:|" * len(RANGES))
    by: dict[tuple[str, str, str], list[tuple[int, float]]] = defaultdict(list)
    order = {p: i for i, p in enumerate(PARTS)}
    for t in table:
        by[(f"{t['model']} {t['shard']}", t["routing"], t["part"])].append(
            (t["tokens"], t["error"])
        )
        by[("all", t["routing"], t["part"])].append((t["tokens"], t["error"]))
    keys = sorted(by, key=lambda k: (k[0] == "all", k[0], k[1], order.get(k[2], 9)))
    for key in keys:
        print(summary_line(" | ".join(key), by[key]))
    if args.kernels:
        print()
        predicted = {
            (t["model"], t["shard"], t["tokens"]): t["predicted_ms"]
            for t in table
            if t["part"] == "experts" and t["routing"] == "balanced"
        }
        for line in kernel_rows_table(rows, Path(args.kernels), column, predicted):
            print(line)
    if args.csv:
        with Path(args.csv).open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(table[0]) if table else ["model"])
            writer.writeheader()
            writer.writerows(table)


def kernel_rows_table(
    rows: list[dict[str, str]],
    folder: Path,
    column: str,
    predicted: dict[tuple[str, str, int], float],
) -> list[str]:
    """The ``experts`` part of the balanced rows beside vLLM's own fused-MoE kernel at the
    same shape, as AIConfigurator's database measured it on a GPU of the same kind
    (``folder``: one GPU's ``moe/vllm/<release>/moe_perf.parquet`` files, bf16, balanced
    routing, the median over releases), and the step model's price (``predicted``, ms by
    model, shard and tokens): what the grouped GEMM measured here says about the kernel
    the step model was fitted to, and the model against that kernel."""
    import pandas as pd

    files = sorted(folder.glob("moe/vllm/*/moe_perf.parquet"))
    if not files:
        return [f"no moe/vllm/*/moe_perf.parquet under {folder}"]
    db = pd.concat([pd.read_parquet(f) for f in files])
    db = db[(db.moe_dtype == "bfloat16") & (db.distribution == "balanced")]
    out = [
        f"experts part (balanced) against vLLM's fused MoE in {folder} "
        f"({len(files)} releases, bf16, balanced; median ms over releases)",
        "",
        "| model | tokens | measured here ms | vLLM's kernel ms | here / vLLM | model / vLLM |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        if row["part"] != "experts" or row["routing"] != "balanced" or row.get("error"):
            continue
        tp, ep = shard_degrees(row["shard"])
        experts = int(row["experts_local"]) * ep
        match = db[
            (db.hidden_size == int(row["hidden"]))
            & (db.inter_size == int(row["intermediate"]) * max(1, tp // ep))
            & (db.topk == int(row["top_k"]))
            & (db.num_experts == experts)
            & (db.moe_tp_size == tp // ep)
            & (db.moe_ep_size == ep)
            & (db.num_tokens == int(row["tokens"]))
        ]
        if match.empty:
            continue
        theirs = float(match.latency.median())
        ours = float(row[column])
        price = predicted.get((row["model"], row["shard"], int(row["tokens"])))
        priced = f"{price / theirs:.2f}" if price is not None else ""
        out.append(f"| {row['model']} {row['shard']} | {row['tokens']} | {ours:.4f} | "
                   f"{theirs:.4f} | {ours / theirs:.2f} | {priced} |")  # fmt: skip
    return out


# --- selftest ----------------------------------------------------------------------------
def reference_layer(torch: Any, shard: Shard, w: Weights, x: Any, skewed: bool) -> Any:
    """The layer token by token and slot by slot, in float64 from the same router logits
    (what :func:`moe_layer` must equal)."""
    xd = x.double()
    logits = (x @ w.router.T).double() + (w.skew.double() if skewed else 0.0)
    probs = torch.softmax(logits, dim=-1)
    out = torch.zeros_like(xd)
    for t in range(len(x)):
        picked = torch.argsort(probs[t], descending=True)[: shard.top_k]
        total = float(probs[t, picked].sum()) if shard.renormalise else 1.0
        for e in picked.tolist():
            if e >= shard.local_experts:
                continue
            gate, up = (w.gate_up[e].double() @ xd[t]).chunk(2)
            expert = w.down[e].double() @ (torch.nn.functional.silu(gate) * up)
            out[t] += float(probs[t, e]) / total * expert
    return out


def check_layers(torch: Any) -> list[str]:
    """The layer against the reference at small shapes; the lines to print."""
    lines = []
    shards = (
        Shard("tiny", "tp1", 8, 8, 2, 64, 32),
        Shard("tiny-ep", "ep4", 16, 4, 4, 64, 48, renormalise=False),
    )
    for shard in shards:
        for dtype, tol in ((torch.float32, 1e-4), (torch.bfloat16, 3e-2)):
            w = make_weights(torch, shard, "cpu", dtype)
            gen = torch.Generator().manual_seed(SEED + 1)
            x = torch.randn(37, shard.hidden, generator=gen).to(dtype)
            for skewed in (False, True):
                want = reference_layer(torch, shard, w, x, skewed)
                routed = route(torch, shard, w, x, skewed)
                keys = torch.softmax((x @ w.router.T).float() + (w.skew if skewed else 0.0), -1)
                ids = keys.topk(shard.top_k, -1).indices.flatten().clamp(max=shard.local_experts)
                counts = torch.bincount(ids, minlength=shard.local_experts + 1)
                assert routed.counts.tolist() == counts.tolist(), "counts differ from bincount"
                for impl in EXPERTS:
                    got = moe_layer(torch, shard, w, x, skewed, impl).double()
                    err = float((got - want).abs().max() / want.abs().max())
                    assert err < tol, f"{shard.key} {dtype} {impl}: relative error {err:.2e}"
                    what = f"{shard.key} {str(dtype)[6:]} skewed={skewed} {impl}"
                    lines.append(f"{what}: max error {err:.1e} of the largest output (< {tol:g})")
    return lines


def check_measure(torch: Any) -> list[str]:
    """``measure``'s rows and file for tiny shards on the CPU; a shard too big to build and
    one past the deadline leave rows with their error."""
    shards = [Shard("tiny", "tp1", 8, 8, 2, 64, 32), Shard("tiny-ep", "ep4", 16, 4, 4, 64, 48)]
    tokens = (1, 4, 16)
    saved: list[list[dict[str, Any]]] = []
    with torch.inference_mode():
        rows, fallbacks = run_shards(torch, shards, tokens, "cpu", torch.bfloat16, 2,
                                     time.monotonic() + 60, saved.append)  # fmt: skip
        huge = Shard("huge", "tp1", 8, 8, 2, 1 << 24, 1 << 24)
        failed, _ = run_shards(torch, [huge, shards[0]], tokens, "cpu", torch.bfloat16, 2,
                               time.monotonic() - 1, saved.append)  # fmt: skip
    want = len(shards) * len(ROUTINGS) * len(tokens) * len(PARTS)
    assert len(rows) == want, f"{len(rows)} rows, not {want}"
    assert len(saved) == 2 * len(shards) + len(ROUTINGS), f"saved {len(saved)} times"
    errors = [r["error"] for r in rows if r["error"]]
    assert not errors, f"rows with errors: {errors[:3]}"
    assert len(failed) == want and all(r["error"] for r in failed), "failures not recorded"
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "moe_layers.csv"
        write_rows(path, rows + failed)
        with path.open(newline="") as f:
            back = list(csv.DictReader(f))
    assert [r["ms"] for r in back] == [str(r["ms"]) for r in rows + failed]
    impls = sorted({r["impl"] for r in rows})
    kinds = sorted({r["error"].split(":")[0] for r in failed})
    return [
        f"measure on the CPU: {len(rows)} rows, impl {impls}, fallbacks {fallbacks}",
        f"failures recorded, not raised: {len(failed)} rows ({', '.join(kinds)})",
    ]


def check_catalog() -> list[str]:
    """:data:`SHARDS` against the catalog (where sincere is installed)."""
    try:
        import sincere.catalog  # noqa: F401
    except ImportError:
        return ["catalog: sincere not installed, shapes not checked"]
    for shard in SHARDS.values():
        want = catalog_shard(shard.model, shard.shard)
        assert replace(shard, renormalise=True) == want, f"{shard} is not the catalog's {want}"
    return [f"catalog: {len(SHARDS)} shards match models.yaml"]


def selftest(args: argparse.Namespace) -> None:
    """The ``selftest`` verb (module docstring)."""
    import torch

    started = time.monotonic()
    checks: tuple[Callable[[], list[str]], ...] = (
        check_catalog,
        lambda: check_layers(torch),
        lambda: check_measure(torch),
    )
    for check in checks:
        for line in check():
            print(line, flush=True)
    print(f"selftest passed in {time.monotonic() - started:.1f} s (torch {torch.__version__})")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    sub = parser.add_subparsers(dest="verb", required=True)
    m = sub.add_parser("measure", help="time the MoE layers on this machine's GPU")
    m.add_argument("--out", required=True)
    m.add_argument("--shards", default=",".join(SHARDS), help="MODEL:SHARD,... of SHARDS")
    m.add_argument("--tokens", default=",".join(map(str, TOKENS)))
    m.add_argument("--device", default="cuda")
    m.add_argument("--replays", type=int, default=20)
    m.add_argument("--max-duration", type=float, default=200.0, help="no new shape after, s")
    c = sub.add_parser("compare", help="the step model against a measured folder")
    c.add_argument("folder")
    c.add_argument("--accelerator", default="H200")
    c.add_argument("--ratio", type=float, default=None, help="sustained_compute_ratio")
    c.add_argument("--hot", action="store_true", help="judge hot_ms (L2 warm), not ms")
    c.add_argument(
        "--match-distinct",
        action="store_true",
        help="price each row at the Zipf skew matching its distinct experts",
    )
    c.add_argument("--csv", default=None, help="also write the per-row predictions here")
    c.add_argument(
        "--kernels",
        default=None,
        help="a GPU's AIConfigurator folder: the experts beside vLLM's measured fused MoE",
    )
    sub.add_parser("selftest", help="the layer against a reference on the CPU")
    args = parser.parse_args(argv)
    {"measure": measure, "compare": compare, "selftest": selftest}[args.verb](args)


if __name__ == "__main__":
    main()
