"""A decode step's memory-bound kernels timed with their data hot and cold in L2.

Hot as a kernel benchmark times them (the same call repeated, its data left in L2), cold
as a served model meets them (L2 flushed before each call, as the other layers' weights
and caches flush it), on this machine's GPU.

Two memory-bound kernels of a decode step, each at working sets from 1 MB to 1 GB:

* ``attention``: decode attention over a bf16 KV cache (one query token per sequence, 32
  query and 8 KV heads of 128; each KV head's four queries against its keys, softmax,
  against its values: batched matrix products that read the keys and the values once),
  the cache grown by the number of sequences at 2,048 tokens each;
* ``gemm``: a bf16 GEMM of 16 tokens against a weight of growing size (the decode side of
  a projection; 4,096 input features).

Each is timed by CUDA events as the median of ``--repeats`` calls: *hot*, back to back
after a warm-up; *cold*, each call after a read of 512 MB that evicts the L2 (a read, so
that no dirty lines are left to write back). The ratio cold / hot is what a database of
repeated calls misses for a model whose layers read each other's data in between;
bytes / cold time is the bandwidth a served model gets.

    python benchmarks/gpu_l2.py --out FILE.json     # measure (a CUDA GPU)
    python benchmarks/gpu_l2.py --table FILE.json   # print a kept result, anywhere

Needs a CUDA GPU and PyTorch; the rows are also printed as a table.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

MB = 1 << 20
SIZES_MB = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
CONTEXT = 2048  # tokens a sequence holds in the attention case
HEADS, KV_HEADS, HEAD_DIM = 32, 8, 128
TOKENS, IN_FEATURES = 16, 4096  # the GEMM's activation: tokens x input features
FLUSH_MB = 512
SLEEP_CYCLES = 400_000  # about 0.2 ms at 2 GHz: longer than queueing a call's kernels


def timed(torch: Any, call: Callable[[], Any], repeats: int, flush: Any | None) -> float:
    """Median milliseconds of ``call`` over ``repeats`` calls, each queued behind GPU work
    (a read of the flush buffer when one is given, else a spin) so that the events time
    the kernels, not their launches."""
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    for _ in range(3):
        call()
    times = []
    for _ in range(repeats):
        if flush is not None:
            flush.sum()  # read, not written: the L2 left holding clean lines of other data
        else:  # the GPU busy while the call's kernels are queued: no launch gap timed
            torch.cuda._sleep(SLEEP_CYCLES)
        start.record()
        call()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def attention_case(torch: Any, size_mb: int) -> tuple[Callable[[], Any], float] | None:
    """Decode attention whose KV cache is about ``size_mb`` MB (None: under one sequence)."""
    per_seq = 2 * KV_HEADS * CONTEXT * HEAD_DIM * 2  # keys and values, bf16
    seqs = round(size_mb * MB / per_seq)
    if seqs < 1:
        return None
    group = HEADS // KV_HEADS
    q = torch.randn(seqs, KV_HEADS, group, HEAD_DIM, device="cuda", dtype=torch.bfloat16)
    k = torch.randn(seqs, KV_HEADS, CONTEXT, HEAD_DIM, device="cuda", dtype=torch.bfloat16)
    v = torch.randn_like(k)
    scale = HEAD_DIM**-0.5

    def call() -> Any:
        scores = torch.matmul(q, k.transpose(-1, -2)) * scale
        return torch.matmul(torch.softmax(scores, dim=-1), v)

    return call, float(seqs * per_seq)


def gemm_case(torch: Any, size_mb: int) -> tuple[Callable[[], Any], float]:
    """16 tokens against a bf16 weight of ``size_mb`` MB (4,096 input features)."""
    out_features = max(128, size_mb * MB // (IN_FEATURES * 2) // 128 * 128)
    x = torch.randn(TOKENS, IN_FEATURES, device="cuda", dtype=torch.bfloat16)
    w = torch.randn(out_features, IN_FEATURES, device="cuda", dtype=torch.bfloat16)
    linear = torch.nn.functional.linear
    return (lambda: linear(x, w)), float(out_features * IN_FEATURES * 2)


def measure(repeats: int) -> dict[str, Any]:
    import torch

    props = torch.cuda.get_device_properties(0)
    flush = torch.empty(FLUSH_MB * MB // 4, device="cuda", dtype=torch.float32)
    rows = []
    for kernel, case in (("attention", attention_case), ("gemm", gemm_case)):
        for size in SIZES_MB:
            made = case(torch, size)
            if made is None:
                continue
            call, moved = made
            hot = timed(torch, call, repeats, None)
            cold = timed(torch, call, repeats, flush)
            row = {
                "kernel": kernel, "mb": round(moved / MB, 1), "hot_ms": round(hot, 5),
                "cold_ms": round(cold, 5), "cold_over_hot": round(cold / hot, 3),
                "hot_gbps": round(moved / hot / 1e6, 1), "cold_gbps": round(moved / cold / 1e6, 1),
            }  # fmt: skip
            rows.append(row)
            print(json.dumps(row), flush=True)
            del call
            torch.cuda.empty_cache()
    return {
        "gpu": props.name,
        "l2_mb": round(getattr(props, "L2_cache_size", 0) / MB, 1),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "repeats": repeats,
        "flush_mb": FLUSH_MB,
        "rows": rows,
    }


def table(result: dict[str, Any]) -> str:
    """The rows as a Markdown table."""
    lines = [
        f"{result['gpu']} (L2 {result['l2_mb']} MB), median of {result['repeats']} calls",
        "",
        "| kernel | MB read | hot ms | cold ms | cold / hot | hot GB/s | cold GB/s |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in result["rows"]:
        lines.append(
            f"| {r['kernel']} | {r['mb']:g} | {r['hot_ms']:.4f} | {r['cold_ms']:.4f} "
            f"| {r['cold_over_hot']:.2f} | {r['hot_gbps']:.0f} | {r['cold_gbps']:.0f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=None, help="JSON file written")
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--table", default=None, help="print the table of an earlier FILE")
    args = parser.parse_args()
    if args.table is not None:
        print(table(json.loads(Path(args.table).read_text())))
        return
    if args.out is None:
        parser.error("--out FILE is needed to measure")
    result = measure(args.repeats)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(table(result))


if __name__ == "__main__":
    main()
