"""How much of Mooncake's prefix reuse a CPU KV tier recovers, and what it does to TTFT.

Simulated: ``--instances`` Llama-3.1-8B instances on H100-SXM (roofline step model,
vLLM-style continuous batching, prefix caching on, the memory plan's KV pool) serve the
first ``--num-requests`` requests of Mooncake's published conversation trace
(``../shared/data/traces/mooncake_conversation_trace.jsonl``: recorded arrivals, lengths
and 512-token ``hash_ids``; the whole trace is 12,031 requests, a subsample keeps the run
short), behind each router of ``--routers``. One run per router and CPU tier size in
``--cpu-gib`` (0: GPU only, the baseline); the CPU link is the catalog's PCIe Gen5 x16 (64
GB/s), loads are not overlapped unless ``--overlap``; ``--disk-gib`` adds a disk tier
(``--disk-gbps``) to every tiered run.

Per run: the hit rate (prompt tokens found cached at first admission, GPU and tiers), the
tokens served from the GPU cache and from the CPU / disk tiers (engine counters, recomputes
included), the GB loaded back and the link time they took, TTFT p50 / p99 and goodput
(first token within ``--ttft-slo`` seconds), and the simulation's wall time. One markdown
row per run on stdout.

    python benchmarks/kv_offload_study.py [--num-requests 2000] [--cpu-gib 0 32 128 512]
        [--plot benchmarks/kv_offload_study.png]

``--plot`` draws the hit rate and TTFT p50 against the CPU tier's size, one line per router.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from sincere.core.request import RequestArrays, Tier
from sincere.sim import simulate
from sincere.workload.traces import read_trace

MOONCAKE = (
    Path(__file__).resolve().parents[2] / "shared/data/traces/mooncake_conversation_trace.jsonl"
)
MODEL = "llama-3.1-8b"  # 131,072-token context: Mooncake's longest prompts fit


def mooncake(path: Path, num_requests: int, ttft_slo_s: float) -> RequestArrays:
    """The first ``num_requests`` of the trace, with block ids, one tier with a TTFT target."""
    t = read_trace(path)
    n = min(num_requests, len(t))
    return RequestArrays.build(
        t.arrival_at[:n] - t.arrival_at[0],
        t.prompt_tokens[:n],
        t.output_tokens[:n],
        models=(MODEL,),
        tiers=(Tier("chat", ttft_s=ttft_slo_s),),
        block_ids=t.block_ids[:n],
        block_tokens=t.block_tokens,
    )


def config(args: argparse.Namespace, router: str, cpu_gib: float) -> dict[str, Any]:
    """The simulation config of one run (``cpu_gib`` 0: no tiers)."""
    engine: dict[str, Any] = {"kind": "continuous", "enable_prefix_caching": True}
    if cpu_gib > 0:
        offload: dict[str, Any] = {"cpu_gib": cpu_gib, "overlap": args.overlap}
        if args.disk_gib > 0:
            offload.update(disk_gib=args.disk_gib, disk_gbps=args.disk_gbps)
        engine["kv_offload"] = offload
    instance = {"name": "h100", "model": MODEL, "accelerator": "H100-SXM", "count": args.instances,
                "step_model": {"kind": "roofline"}, "engine": engine}  # fmt: skip
    # the workload section is required but unused: the trace's requests are passed in
    placeholder = {"num_requests": 1, "arrival": {"kind": "poisson", "rate": 1.0},
                   "lengths": {"source": "azure-conv-2023"}, "models": {MODEL: 1.0}}  # fmt: skip
    return {"seed": 1, "workload": placeholder, "instances": [instance],
            "router": {"name": router}}  # fmt: skip


def row(router: str, cpu_gib: float, summary: dict[str, Any], wall_s: float) -> str:
    """One markdown row of a run's summary."""
    prefix = summary["prefix_cache"]
    tiers = summary.get("kv_tiers") or {}
    ttft = summary["ttft_s"]
    cells = [
        router,
        "GPU only" if cpu_gib == 0 else f"{cpu_gib:g} GiB",
        f"{prefix['hit_rate']:.1%}",
        f"{prefix['engine_hit_tokens'] / 1e6:.2f}",
        f"{tiers.get('cpu_hit_tokens', 0) / 1e6:.2f}",
        f"{tiers.get('disk_hit_tokens', 0) / 1e6:.2f}",
        f"{(tiers.get('cpu_to_gpu_bytes', 0) + tiers.get('disk_to_gpu_bytes', 0)) / 1e9:.1f}",
        f"{tiers.get('load_s', 0.0):.2f}",
        f"{ttft['p50']:.3f}",
        f"{ttft['p99']:.3f}",
        f"{summary['goodput_rps']:.3f}",
        f"{wall_s:.0f}",
    ]
    return "| " + " | ".join(cells) + " |"


def plot(path: Path, points: dict[str, list[tuple[float, dict[str, Any]]]]) -> None:
    """Hit rate and TTFT p50 against the CPU tier's size (0: GPU only), one line per router."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (hits, ttft) = plt.subplots(1, 2, figsize=(9.0, 3.6))
    for router, runs in points.items():
        sizes = [max(gib, 8.0) for gib, _ in runs]  # GPU only drawn at the axis' left end
        hits.plot(sizes, [100 * s["prefix_cache"]["hit_rate"] for _, s in runs], marker="o",
                  label=router)  # fmt: skip
        ttft.plot(sizes, [s["ttft_s"]["p50"] for _, s in runs], marker="o", label=router)
    for ax, label in ((hits, "prompt tokens found cached, %"), (ttft, "TTFT p50, s")):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("CPU tier per instance, GiB (left end: GPU only)")
        ax.set_ylabel(label)
        ax.legend(fontsize=8)
    fig.suptitle("Mooncake conversation trace, 4 x Llama-3.1-8B on H100 (simulated)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    print(f"wrote {path}")


def main() -> None:
    """Parse the arguments, run one simulation per CPU tier size, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trace", type=Path, default=MOONCAKE)
    parser.add_argument("--num-requests", type=int, default=2000)
    parser.add_argument("--instances", type=int, default=4)
    parser.add_argument("--routers", nargs="+", default=["least-outstanding", "prefix-aware"])
    parser.add_argument("--cpu-gib", type=float, nargs="+", default=[0, 32, 128, 512])
    parser.add_argument("--disk-gib", type=float, default=0.0)
    parser.add_argument("--disk-gbps", type=float, default=6.0)
    parser.add_argument("--overlap", action="store_true", help="loads overlap the compute")
    parser.add_argument("--ttft-slo", type=float, default=2.0, help="goodput's TTFT target, s")
    parser.add_argument("--plot", type=Path, default=None, help="write the figure as a PNG")
    args = parser.parse_args()
    requests = mooncake(args.trace, args.num_requests, args.ttft_slo)
    print(
        f"{len(requests):,} requests, {args.instances} x {MODEL} on H100-SXM, "
        f"loads {'overlapped' if args.overlap else 'not overlapped'}\n\n"
        "| router | CPU tier | hit rate | GPU hit Mtok | CPU hit Mtok | disk hit Mtok | loaded GB "
        "| link s | TTFT p50 s | TTFT p99 s | goodput req/s | sim wall s |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
        flush=True,
    )
    points: dict[str, list[tuple[float, dict[str, Any]]]] = {}
    for router in args.routers:
        for cpu_gib in args.cpu_gib:
            started = time.perf_counter()
            summary = simulate(config(args, router, cpu_gib), requests=requests).summary
            print(row(router, cpu_gib, summary, time.perf_counter() - started), flush=True)
            points.setdefault(router, []).append((cpu_gib, summary))
    if args.plot is not None:
        plot(args.plot, points)


if __name__ == "__main__":
    main()
