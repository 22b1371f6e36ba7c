"""A multi-model day on a fleet: dedicated per-model scaling against shared, actuated slots.

Usage: ``python benchmarks/autoscale_day.py [--seed 0] [--hour-s 150] [--plots]``
(interpreted: twenty-four runs, about two and a half minutes of CPU on the project's 2-core
VM).

The trace (generated here with ``--seed``): five models of different popularity (shares
0.40, 0.25, 0.15, 0.12, 0.08 of a mean 7 req/s), each a Poisson process whose rate
follows a day -- ``1 + 0.8 sin`` over 24 hours, peak phases 3 hours apart per model
(phase-shifted diurnal load) -- plus three bursts (4x the model's mean rate for half an
hour, on models 1, 3 and 4). A day is compressed: one hour is ``--hour-s`` simulated
seconds (150 by default, so the day is one simulated hour): the actuation and
provisioning times stay real seconds, which makes them weigh more than in a real day.
Prompts and outputs are log-normal (medians 600 and 150 tokens, sigma 0.8, clipped to
3,072 / 1,024, so that every request fits Llama-2-7B's 4,096-token context).

Fleet: 7-8B models in bf16 on A100-80GB (one GPU per slot, up to 16 slots), Sarathi
chunked prefill (512), roofline step times. Every policy reads requests in flight every
10 s with the same threshold rule (one more slot above ``up`` per serving slot, one fewer
below ``down``; the sweep runs up/down = 8/2, 12/3, 16/4 and 32/8), a 60 s cool-down,
60 s to provision a machine and loads at 5 GB/s from storage:

* ``dedicated`` -- each model its own group, at least one slot, a slot released when
  scaled down: the existing per-model threshold autoscaler (the baseline);
* ``swap`` -- one pool; a model with no load wants no slot; a slot changes model by
  discarding the weights and loading the next from storage (3-3.4 s); an empty slot is
  released after 120 s;
* ``sleep`` -- as ``swap``, but a slot keeps two models asleep in host RAM (vLLM sleep
  level 1) and wakes them over PCIe (32 GB/s x 0.8: 0.6-0.7 s), putting the leaving one
  to sleep likewise;
* ``sleep+headroom`` -- as ``sleep``, keeping one empty slot provisioned (paid) for a
  model that finds no slot: it loads there at once (about 3 s) instead of waiting for a
  provisioned one (60 s); the one taken is replaced at once.
* ``dedicated+predictive`` -- as ``dedicated``, each model scaled on its arrival rate
  forecast 63 s ahead (Holt's smoothing, alpha 0.5, beta 0.3), wanting ``ceil(forecast /
  rate_per_instance)`` slots; the rate one slot serves is matched to the threshold pair by
  Little's law, ``up`` requests in flight over a request's mean E2E of about 3 s
  (measured: 3.08 s in the dedicated 16/4 run): 2.7, 4, 5.3 and 10.7 req/s.
* ``dedicated+seasonal`` -- as ``dedicated+predictive``, the forecast read from the
  previous day: the same generator with seed ``--seed + 1`` (not the day judged), each
  model's arrivals per half hour as its profile over the day, scaled to the level observed
  (``forecast_profile``, ``forecast_period_s``: 24 hours).

SLOs: TTFT <= 2 s and TPOT <= 100 ms; attainment = requests meeting both over all
requests. Time to recover after a burst: from its start to the arrival of the last request
of the burst's model (within the burst and 10 minutes after) that misses the TTFT SLO.
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from sincere.core.request import RequestArrays
from sincere.sim.api import SimulationResult, simulate
from sincere.workload.traces import write_trace

MODELS = ("llama-3-8b", "mistral-7b", "qwen2.5-7b", "gemma-7b", "llama-2-7b")
SHARES = (0.40, 0.25, 0.15, 0.12, 0.08)
MEAN_RATE = 7.0  # requests per second, all models
BURSTS = ((1, 7.0), (3, 13.0), (4, 18.0))  # (model, start hour): 4x its mean for 0.5 h
TTFT_SLO_S, TPOT_SLO_S = 2.0, 0.1
POLICIES = (
    "dedicated", "swap", "sleep", "sleep+headroom", "dedicated+predictive", "dedicated+seasonal"
)  # fmt: skip
HEADROOM = "+headroom"  # a policy's suffix: one empty slot kept
PREDICTIVE = "+predictive"  # a policy's suffix: the predictive rule instead of thresholds
SEASONAL = "+seasonal"  # ... the predictive rule reading the previous day's profile
MEAN_E2E_S = 3.0  # a request's mean E2E (Little's law: up in flight per slot -> req/s)
THRESHOLDS = ((8.0, 2.0), (12.0, 3.0), (16.0, 4.0), (32.0, 8.0))  # (up, down), per slot
HERE = Path(__file__).parent


def rate_at(m: int, hour: float) -> float:
    """Model ``m``'s rate (requests per second) at ``hour`` of the day."""
    base = MEAN_RATE * SHARES[m]
    rate = base * (1.0 + 0.8 * math.sin(2 * math.pi * (hour - 3.0 * m) / 24.0))
    for burst_m, start in BURSTS:
        if burst_m == m and start <= hour < start + 0.5:
            rate += 4.0 * base
    return rate


def day_trace(seed: int, hour_s: float) -> RequestArrays:
    """The day's requests (thinned Poisson per model, merged in arrival order)."""
    rng = np.random.default_rng(seed)
    peak = MEAN_RATE * (1.8 + 4.0)  # a bound on any model's rate
    times, models = [], []
    for m in range(len(MODELS)):
        n = rng.poisson(peak * 24 * hour_s)
        at = np.sort(rng.uniform(0.0, 24 * hour_s, n))
        keep = rng.uniform(0.0, peak, n) < [rate_at(m, t / hour_s) for t in at]
        times.append(at[keep])
        models.append(np.full(int(keep.sum()), m))
    at, model = np.concatenate(times), np.concatenate(models)
    order = np.argsort(at, kind="stable")
    n = len(at)
    prompts = np.clip(rng.lognormal(math.log(600), 0.8, n), 16, 3072).astype(np.int64)
    outputs = np.clip(rng.lognormal(math.log(150), 0.8, n), 2, 1024).astype(np.int64)
    return RequestArrays.build(
        at[order], prompts, outputs, models=MODELS, model=model[order].tolist()
    )


def config(
    policy: str, up: float = 16.0, down: float = 4.0, yesterday: Path | None = None,
    day_s: float = 24 * 150.0,
) -> dict[str, Any]:  # fmt: skip
    """The simulation config of ``policy`` (the module docstring's fleet), scaling up above
    ``up`` requests in flight per serving slot and down below ``down`` (``+predictive``:
    a slot serves ``up / MEAN_E2E_S`` requests a second; ``+seasonal``: as well, with the
    profile of the trace ``yesterday`` over ``day_s``)."""
    groups = [
        {
            "name": f"m{k}", "model": model, "accelerator": "A100-80GB", "count": 1,
            "step_model": {"kind": "roofline"},
            "engine": {"kind": "continuous", "scheduler": "sarathi",
                       "scheduler_params": {"chunk_size": 512}, "max_num_seqs": 64,
                       "max_num_batched_tokens": 512},
        }
        for k, model in enumerate(MODELS)
    ]  # fmt: skip
    scaling = {
        "policy": "threshold", "signal": "in_flight", "interval_s": 10.0,
        "min_instances": 1, "max_instances": 8, "scale_up_threshold": up,
        "scale_down_threshold": down, "cooldown_s": 60.0, "provisioning_s": 60.0,
    }  # fmt: skip
    if policy.endswith((PREDICTIVE, SEASONAL)):
        del scaling["scale_up_threshold"], scaling["scale_down_threshold"]
        scaling.update(policy="predictive", rate_per_instance=up / MEAN_E2E_S)
    if policy.endswith(SEASONAL):
        assert yesterday is not None, "a seasonal forecast reads the previous day"
        scaling.update(forecast_profile=str(yesterday), forecast_period_s=day_s)
    base = policy.removesuffix(HEADROOM).removesuffix(PREDICTIVE).removesuffix(SEASONAL)
    actuation = {
        "policy": base, "max_slots": 16,
        "scaling": scaling,
        "release_after_s": 120.0, "max_asleep_per_slot": 2,
        "headroom_slots": int(policy.endswith(HEADROOM)),
    }  # fmt: skip
    return {
        "seed": 0,
        "workload": {  # a placeholder: the runs are given the day's trace
            "num_requests": 1,
            "models": dict.fromkeys(MODELS, 0.2),
            "arrival": {"kind": "poisson", "rate": 1.0},
            "lengths": {
                "prompt": {"kind": "fixed", "tokens": 1},
                "output": {"kind": "fixed", "tokens": 1},
            },
        },
        "router": {"name": "least-outstanding"},
        "instances": groups,
        "actuation": actuation,
    }


def attained(result: SimulationResult) -> np.ndarray[Any, np.dtype[np.bool_]]:
    """Per request: finished within both SLOs."""
    req, rec = result.requests_in, result.records
    ttft = rec.first_token_at - req.arrival_at
    steps = np.maximum(rec.output_tokens - 1, 1)
    tpot = (rec.finished_at - rec.first_token_at) / steps
    with np.errstate(invalid="ignore"):
        met = (ttft <= TTFT_SLO_S) & (tpot <= TPOT_SLO_S) & ~rec.rejected
    return np.asarray(met, dtype=np.bool_)


def recoveries(result: SimulationResult, hour_s: float) -> list[float]:
    """Per burst: seconds from its start to its model's last TTFT miss (0: none)."""
    req, rec = result.requests_in, result.records
    ttft = rec.first_token_at - req.arrival_at
    out = []
    for m, start in BURSTS:
        lo, hi = start * hour_s, (start + 0.5) * hour_s + 600.0
        sel = (req.model == m) & (req.arrival_at >= lo) & (req.arrival_at < hi)
        miss = sel & ~(ttft <= TTFT_SLO_S)
        out.append(float(req.arrival_at[miss].max() - lo) if miss.any() else 0.0)
    return out


def measure(
    policy: str, thresholds: tuple[float, float], trace: RequestArrays, hour_s: float,
    yesterday: Path | None = None,
) -> dict[str, Any]:  # fmt: skip
    """One policy's run: its figures, its time series and its attainment per hour."""
    started = time.perf_counter()
    cfg = config(policy, *thresholds, yesterday=yesterday, day_s=24 * hour_s)
    result = simulate(cfg, requests=trace)
    wall_s = time.perf_counter() - started
    block = result.summary["actuation"]
    met = attained(result)
    hours = (result.requests_in.arrival_at // hour_s).astype(np.int64)
    per_hour = [float(met[hours == h].mean()) if (hours == h).any() else 1.0 for h in range(24)]
    counts = ("num_scale_ups", "num_scale_downs", "num_provisions", "num_loads",
              "num_wakes", "num_sleeps", "num_swaps", "num_releases")  # fmt: skip
    return {
        "policy": policy,
        "thresholds": thresholds,
        "gpu_hours": block["gpu_hours"],
        "attainment": float(met.mean()),
        "ttft_p99_s": float(np.nanpercentile(result.records.first_token_at
                                             - result.requests_in.arrival_at, 99)),
        "events": {k: block[k] for k in counts},
        "recover_s": recoveries(result, hour_s),
        "per_hour": per_hour,
        "timeline": block["timeline"],
        "wall_s": wall_s,
    }  # fmt: skip


def table(rows: list[dict[str, Any]]) -> str:
    """The results as a Markdown table; GPU-hours against dedicated at the same thresholds
    and against the cheapest dedicated run of the sweep with at least the same attainment."""
    lines = [
        "| policy | up/down | GPU-h | vs dedicated, same thresholds | vs cheapest dedicated "
        "with >= attainment | attainment | TTFT p99 s | provisions | loads | wakes | swaps "
        "| releases | recover s (3 bursts) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    base = {r["thresholds"]: r["gpu_hours"] for r in rows if r["policy"] == "dedicated"}
    curve = [(r["attainment"], r["gpu_hours"]) for r in rows if r["policy"] == "dedicated"]
    for r in rows:
        ev, (up, down) = r["events"], r["thresholds"]
        same = base.get(r["thresholds"])
        vs = f"{r['gpu_hours'] / same - 1:+.1%}" if same else "-"
        rec = ", ".join(f"{x:.0f}" for x in r["recover_s"])
        lines.append(
            f"| {r['policy']} | {up:g}/{down:g} | {r['gpu_hours']:.2f} | {vs} "
            f"| {_at_equal(r, curve)} | {r['attainment']:.4f} | {r['ttft_p99_s']:.1f} "
            f"| {ev['num_provisions']} | {ev['num_loads']} | {ev['num_wakes']} "
            f"| {ev['num_swaps']} | {ev['num_releases']} | {rec} |"
        )
    return "\n".join(lines)


def _at_equal(row: dict[str, Any], dedicated: list[tuple[float, float]]) -> str:
    """GPU-hours of ``row`` against the cheapest dedicated run (``(attainment,
    GPU-hours)``) whose attainment is at least ``row``'s ("none" when none is)."""
    if row["policy"] == "dedicated":
        return "-"
    hours = [h for a, h in dedicated if a >= row["attainment"]]
    return f"{row['gpu_hours'] / min(hours) - 1:+.1%}" if hours else "none"


def plot(rows: list[dict[str, Any]], trace: RequestArrays, hour_s: float) -> None:
    """Two small PNGs: slots paid against the load; attainment per hour."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 3.6), dpi=80)
    for r in rows:
        tl = r["timeline"]
        at = np.array(tl["at_s"]) / hour_s
        paid = np.array(tl["up"]) + np.array(tl["provisioning"]) + np.array(tl["warm"])
        label = f"{r['policy']}: slots paid (draining not shown)"
        ax.step(at, paid, where="post", label=label, lw=1)
    edges = np.arange(0, 24 * hour_s + 1, hour_s / 4)
    load, _ = np.histogram(trace.arrival_at, edges)
    twin = ax.twinx()
    twin.plot(edges[:-1] / hour_s, load / (hour_s / 4), color="grey", lw=0.8, ls=":")
    twin.set_ylabel("requests / s (dotted)")
    ax.set(xlabel="hour of the day", ylabel="GPU slots paid")
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(HERE / "autoscale_day_slots.png")
    fig, ax = plt.subplots(figsize=(8, 3), dpi=80)
    for r in rows:
        ax.plot(range(24), r["per_hour"], marker=".", label=r["policy"], lw=1)
    ax.set(xlabel="hour of the day", ylabel="SLO attainment", ylim=(0, 1.02))
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(HERE / "autoscale_day_attainment.png")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--hour-s", type=float, default=150.0)
    parser.add_argument("--plots", action="store_true")
    parser.add_argument("--policies", default=",".join(POLICIES))
    args = parser.parse_args()
    trace = day_trace(args.seed, args.hour_s)
    print(f"{len(trace):,} requests over {24 * args.hour_s:.0f} s (seed {args.seed})")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:  # the previous day, for +seasonal
        yesterday = Path(folder) / "yesterday.csv"
        write_trace(day_trace(args.seed + 1, args.hour_s), yesterday)
        rows = [
            measure(p, t, trace, args.hour_s, yesterday)
            for t in THRESHOLDS
            for p in args.policies.split(",")
        ]
    print(table(rows))
    print(f"{len(rows)} runs in {time.perf_counter() - started:.0f} s")
    if args.plots:
        plot([r for r in rows if r["thresholds"] == (16.0, 4.0)], trace, args.hour_s)


if __name__ == "__main__":
    main()
