"""The xPyD planner against the simulator, beside the colocated plan, over loads and mixes.

For each case (Llama-3-8B, roofline step model, candidates H100-SXM and A100-80GB at TP 1
and 2) ``sincere plan``'s comparison is computed, then both answers are simulated
(:mod:`sincere.optimize.pd_check`: Poisson arrivals at the planned rate, the case's
lengths, every request disaggregated over the case's KV link for the xPyD plan) and the
planned mean TTFT / TPOT are printed beside the simulated ones with the share of
requests within both targets (attainment) and whether the means meet the SLOs. Lengths
are fixed at the means except in the ``azure-conv`` cases, whose simulated lengths come
from the shipped Azure conversation table (clipped), the planner reading its means and a
prompt sample. The colocated plan is sized both ways the planner can: Inferno's analyzer
(its default) and the simulator's capacity search (``--sizing simulate``, SLOs on means,
400 requests, a cold cache). Fixed seeds; one markdown table.

    python benchmarks/plan_pd_vs_sim.py [--requests 1000] [--cases long-6,chat-8]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from sincere.optimize.pd_check import SimCheck, check, colocated_sim_config, pd_sim_config
from sincere.optimize.pd_input import Comparison, PlanInput, compare, load_plan_input
from sincere.optimize.simsize import SimSettings

CANDIDATES = [
    {"accelerator": "H100-SXM", "tp": 1},
    {"accelerator": "H100-SXM", "tp": 2},
    {"accelerator": "A100-80GB", "tp": 1},
    {"accelerator": "A100-80GB", "tp": 2},
]
AZURE_CONV = {"kind": "trace", "source": "azure-conv-2023", "max_prompt_tokens": 4096}
AZURE_CONV["max_output_tokens"] = 512
# name -> (rate/s, prompt, output, TTFT ms, TPOT ms, kv_link, lengths)
CASES: dict[str, tuple[float, int, int, float, float, dict[str, Any], dict[str, Any] | None]] = {
    "long-6": (6.0, 3000, 150, 800, 25, {"kind": "nvlink"}, None),
    "long-20": (20.0, 3000, 150, 800, 25, {"kind": "nvlink"}, None),
    "long-20-rdma5": (20.0, 3000, 150, 800, 25, {"kind": "rdma", "bandwidth_gbps": 5}, None),
    "chat-8": (8.0, 1000, 300, 500, 30, {"kind": "nvlink"}, None),
    "chat-30": (30.0, 1000, 300, 500, 30, {"kind": "nvlink"}, None),
    "short-20-loose": (20.0, 200, 400, 1000, 60, {"kind": "nvlink"}, None),
    "azure-conv-8": (8.0, 0, 0, 800, 30, {"kind": "rdma"}, AZURE_CONV),
}


def plan_input(name: str) -> PlanInput:
    """The plan input of one case."""
    rate, p, o, ttft, tpot, link, lengths = CASES[name]
    load: dict[str, Any] = {"rate_per_s": rate, "lengths": lengths}
    if lengths is None:
        load |= {"prompt_tokens": p, "output_tokens": o}
    return load_plan_input(
        {
            "model": "llama-3-8b",
            "load": load,
            "slo": {"ttft_ms": ttft, "tpot_ms": tpot},
            "candidates": CANDIDATES,
            "disaggregation": {"kv_link": link},
        }
    )


def _shape(acc: str, tp: int, count: int) -> str:
    return f"{count}x{acc}" + (f"/tp{tp}" if tp > 1 else "")


def rows(
    name: str, inp: PlanInput, cmp: Comparison, by_sim: Comparison, num_requests: int
) -> list[str]:
    """One table row per plan of the case (colocated sized both ways, then xPyD)."""
    out = []
    for kind, c in (("colocated (analyzer)", cmp.colocated), ("colocated (sim)", by_sim.colocated)):
        if c is None:
            out.append(f"| {name} | {kind} | none meets the SLOs |  |  |  |  |  |")
            continue
        sim = check(inp, colocated_sim_config(inp, c, num_requests))
        shape = _shape(c.candidate.accelerator, c.candidate.tp, c.count) + f" (b {c.batch})"
        out.append(_row(name, kind, shape, c.cost_per_hour_usd, c.ttft_ms, c.tpot_ms, sim, inp))
    d = cmp.disaggregated
    if d is not None:
        sim = check(inp, pd_sim_config(inp, d, num_requests))
        pre = _shape(d.prefill.candidate.accelerator, d.prefill.candidate.tp, d.prefill.count)
        dec = _shape(d.decode.candidate.accelerator, d.decode.candidate.tp, d.decode.count)
        shape = f"P {pre} + D {dec} (b {d.decode.batch})"
        out.append(_row(name, "xPyD", shape, d.cost_per_hour_usd, d.ttft_ms, d.tpot_ms, sim, inp))
    return out


def _row(
    case: str,
    kind: str,
    shape: str,
    cost: float,
    ttft: float,
    tpot: float,
    sim: SimCheck,
    inp: PlanInput,
) -> str:
    meets = "yes" if sim.meets(inp) else "**no**"
    return (
        f"| {case} | {kind} | {shape} | {cost:.2f} | {ttft:.0f} / {sim.ttft_ms:.0f} | "
        f"{tpot:.1f} / {sim.tpot_ms:.1f} | {100 * sim.attainment:.1f} % | {meets} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--cases", default=",".join(CASES))
    args = parser.parse_args()
    print(
        "| case | plan | shape | $/h | TTFT ms plan / sim | TPOT ms plan / sim | "
        "sim attainment | sim meets |"
    )
    print("|---|---|---|---:|---:|---:|---:|---|")
    start = time.perf_counter()
    cache = Path(tempfile.mkdtemp(prefix="plan-pd-vs-sim-"))  # cold: nothing reused
    settings = SimSettings(num_requests=400, min_attainment=0.0, cache_dir=cache)
    for name in args.cases.split(","):
        inp = plan_input(name)
        cmp = compare(inp)
        by_sim = compare(inp, "simulate", replace(settings, lengths=inp.load.lengths))
        for row in rows(name, inp, cmp, by_sim, args.requests):
            print(row, flush=True)
        for label, c in (("analyzer", cmp), ("sim", by_sim)):
            if c.saving is not None:
                verdict = f"vs colocated ({label}): {c.winner}, {100 * c.saving:.1f} % cheaper"
                print(f"|  | {verdict} |  |  |  |  |  |  |")
        if cmp.pd_reason:
            print(f"|  | no xPyD plan: {cmp.pd_reason} |  |  |  |  |  |  |")
    print(f"\nwall {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
