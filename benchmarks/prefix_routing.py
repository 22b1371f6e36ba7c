"""Prefix-aware routing against least-outstanding, simulated, on shared-prefix and plain traffic.

Four Llama-3-8B instances on H100s (roofline step model, vLLM-style continuous batching with
prefix caching on, the engine defaults otherwise) serve two workloads with each router:

* **mooncake** -- the first ``--num-requests`` requests of Mooncake's published conversation
  trace (``../shared/data/traces/mooncake_conversation_trace.jsonl``, Kimi's production
  traffic: recorded arrivals, lengths and 512-token ``hash_ids``, so prompts share prefixes);
* **azure-conv** -- the control: as many requests with the Azure LLM inference conversation
  trace's lengths (shipped quantiles) at Poisson ``--azure-rate`` req/s and no block ids, so
  there is nothing to reuse.

Per run: prefix-cache hit rate (share of prompt tokens served from cache), TTFT p50 / p99,
goodput (requests/s meeting the tier: no targets here, so completed requests/s) and the
simulation's wall time. ``--cache-off`` adds the same runs with ``enable_prefix_caching:
false``; ``--num-kv-blocks`` sets every instance's KV pool (default: what the GPU's memory
holds, which on Mooncake's ~12k-token prompts keeps little beyond the running requests; a
larger pool stands for a host-memory KV tier such as Mooncake's own). One markdown row per
run on stdout, one JSON line per run on stderr.

``--plot FILE`` draws hit rate and TTFT p50 per router, workload and cache setting (from
this run, or with ``--replot JSONL...`` from the JSON lines of earlier runs, without
simulating).

    python benchmarks/prefix_routing.py [--num-requests 1500] [--routers NAME...] [--cache-off]
    python benchmarks/prefix_routing.py --replot runs.jsonl --plot prefix_routing.png
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from sincere.core.request import RequestArrays
from sincere.sim import simulate
from sincere.workload.traces import read_trace

MOONCAKE = Path("../shared/data/traces/mooncake_conversation_trace.jsonl")
ROUTERS = ["least-outstanding", "prefix-aware", "weighted-score", "session-affinity"]


def instances(count: int, cache: bool, num_kv_blocks: int | None) -> list[dict[str, Any]]:
    """``count`` Llama-3-8B H100 instances, prefix caching on or off."""
    engine: dict[str, Any] = {"kind": "continuous", "enable_prefix_caching": cache}
    if num_kv_blocks is not None:
        engine["num_kv_blocks"] = num_kv_blocks
    return [
        {
            "name": "h100",
            "model": "llama-3-8b",
            "accelerator": "H100-SXM",
            "step_model": {"kind": "roofline"},
            "engine": engine,
            "count": count,
        }
    ]


def config(
    router: str,
    workload: dict[str, Any],
    count: int,
    cache: bool,
    num_kv_blocks: int | None = None,
) -> dict[str, Any]:
    """The simulation config of one run."""
    return {
        "seed": 1,
        "workload": workload,
        "instances": instances(count, cache, num_kv_blocks),
        "router": {"name": router},
    }


def mooncake(num_requests: int) -> RequestArrays:
    """The first ``num_requests`` of the Mooncake conversation trace, with block ids."""
    t = read_trace(MOONCAKE)
    n = min(num_requests, len(t))
    return RequestArrays.build(
        t.arrival_at[:n] - t.arrival_at[0],
        t.prompt_tokens[:n],
        t.output_tokens[:n],
        models=("llama-3-8b",),
        block_ids=t.block_ids[:n],
        block_tokens=t.block_tokens,
    )


def azure(num_requests: int, rate: float) -> dict[str, Any]:
    """The control workload: Azure conv lengths, Poisson arrivals, no block ids."""
    return {
        "num_requests": num_requests,
        "arrival": {"kind": "poisson", "rate": rate},
        "lengths": {"source": "azure-conv-2023", "max_prompt_tokens": 8000},
        "models": {"llama-3-8b": 1.0},
    }


ROWS: list[dict[str, Any]] = []
"""The rows of this run (what ``--plot`` draws)."""


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    """Hit rate and TTFT p50 per (workload, cache, label) group, one bar per router."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = sorted({(r["workload"], r["cache"], r.get("label", "")) for r in rows})
    routers = list(dict.fromkeys(r["router"] for r in rows))
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    width = 0.8 / max(len(routers), 1)
    for panel, (key, title) in zip(
        axes, (("hit_rate", "prefix-cache hit rate"), ("ttft_p50_s", "TTFT p50 (s)")), strict=True
    ):
        for k, router in enumerate(routers):
            values = []
            for g in groups:
                match = [r for r in rows if (r["workload"], r["cache"], r.get("label", "")) == g
                         and r["router"] == router]  # fmt: skip
                values.append(float(match[0][key] or 0.0) if match else 0.0)
            xs = [x + k * width for x in range(len(groups))]
            panel.bar(xs, values, width=width, label=router)
        panel.set_xticks([x + 0.4 - width / 2 for x in range(len(groups))])
        names = [f"{w}\ncache {'on' if c else 'off'}\n{lab}".strip() for w, c, lab in groups]
        panel.set_xticklabels(names, fontsize=8)
        panel.set_title(title)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def run(name: str, router: str, cfg: dict[str, Any], requests: RequestArrays | None) -> str:
    """Simulate one cell; its markdown row (and a JSON line on stderr)."""
    started = time.perf_counter()
    summary = simulate(cfg, requests=requests).summary
    wall = time.perf_counter() - started
    ttft = summary["ttft_s"]
    prefix = summary.get("prefix_cache") or {}
    cache = cfg["instances"][0]["engine"]["enable_prefix_caching"]
    row = {
        "workload": name,
        "router": router,
        "cache": cache,
        "hit_rate": prefix.get("hit_rate"),
        "ttft_p50_s": ttft["p50"],
        "ttft_p99_s": ttft["p99"],
        "goodput_rps": summary["goodput_rps"],
        "wall_s": wall,
    }
    ROWS.append(row)
    print(json.dumps(row), file=sys.stderr, flush=True)
    hit = "-" if row["hit_rate"] is None else f"{row['hit_rate']:.1%}"
    return (
        f"| {name} | {router} | {'on' if cache else 'off'} | {hit} | {ttft['p50']:.3f} | "
        f"{ttft['p99']:.3f} | {summary['goodput_rps']:.3f} | {wall:.0f} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--num-requests", type=int, default=1500)
    parser.add_argument("--instances", type=int, default=4)
    parser.add_argument("--azure-rate", type=float, default=12.0)
    parser.add_argument("--routers", nargs="+", default=ROUTERS)
    parser.add_argument("--workloads", nargs="+", default=["mooncake", "azure-conv"])
    parser.add_argument("--cache-off", action="store_true", help="also run without caching")
    parser.add_argument(
        "--num-kv-blocks",
        type=int,
        default=None,
        help="KV blocks per instance (default: what the GPU memory holds); a larger pool "
        "stands for a host-memory KV tier",
    )
    parser.add_argument("--plot", type=Path, default=None, help="write the figure here")
    parser.add_argument(
        "--replot", type=Path, nargs="+", default=None, help="JSON lines of earlier runs"
    )
    args = parser.parse_args()
    if args.replot:
        rows = [json.loads(line) for f in args.replot for line in f.read_text().splitlines()
                if line.startswith("{")]  # fmt: skip
        plot(rows, args.plot or Path("prefix_routing.png"))
        return
    print(
        "| workload | router | cache | hit rate | TTFT p50 s | TTFT p99 s | goodput req/s "
        "| sim wall s |\n|---|---|---|---|---|---|---|---|",
        flush=True,
    )
    caches = [True, False] if args.cache_off else [True]
    trace = mooncake(args.num_requests) if "mooncake" in args.workloads else None
    placeholder = azure(len(trace) if trace is not None else 1, 1.0)
    for name in args.workloads:
        for cache in caches:
            for router in args.routers:
                if name == "mooncake":
                    cfg = config(router, placeholder, args.instances, cache, args.num_kv_blocks)
                    print(run(name, router, cfg, trace), flush=True)
                else:
                    work = azure(args.num_requests, args.azure_rate)
                    cfg = config(router, work, args.instances, cache, args.num_kv_blocks)
                    print(run(name, router, cfg, None), flush=True)
    if args.plot is not None:
        plot(ROWS, args.plot)


if __name__ == "__main__":
    main()
