"""Offline accuracy and cost of the learned predictors against the online ones.

Latency. Records come from simulated heterogeneous clusters (examples/hetero-explore.yaml:
the cluster of hetero.yaml -- Llama-3-8B on 2 H100s and 4 L40S in fp8, Llama-3-70B on 4
H100s at TP4 -- behind the random router, so every instance sees varied loads, the
reference router's explore phase; tiers tight enough that some requests miss them: TTFT
150 ms / TBT 30 ms, TTFT 500 ms / TBT 50 ms, TTLT 10 s) at 30 req/s with Poisson
arrivals ("hetero") and with gamma arrivals of CV 4 ("hetero-bursty"). Per scenario the
LSTM trains on three runs (seeds 0-2, 8,000 requests each) and every predictor is scored
on a held-out run (seed 10): the online baselines (EWMA ``recent-window``, ridge
``linear``) learn during it as they would serving it, the step-time model predicts
analytically, and the LSTM only extends its per-instance windows
(``sincere.predict.evaluate``). The first 10 % of the held-out run is not scored. The
LSTM trained on the other scenario is scored too (does it transfer?).

Output length. The Azure LLM inference trace 2023 (code and conversation services,
Microsoft, CC-BY 4.0), read from ../shared/data when present: the first 70 % of each
service by time trains, the last 30 % is scored; the model knows the service (as the
"model"), the prompt's tokens and no text (the trace has none). SINCERE's prompts carry
text but no output lengths, so no real data here pairs prompt text with output length.

Cost. Microseconds per call on this machine, at 16 instances with full windows: the
LSTM batched over the 16 (clean windows), one call per instance, and refreshing 16
changed windows; the baselines' 16 calls; one length prediction with and without text.

Live. The same cluster behind the random router, 900 requests at 10 req/s (seed 20),
replayed on the wall clock through sincere's gateway in front of emulated engines; the
gateway's decision log is the held-out record (``sincere.predict.live_records``), scored
like the simulated ones, with the LSTMs trained on simulated runs.

Routing. Each router on held-out simulated runs (seeds 10-12, 8,000 requests, both
scenarios): ``random`` and ``least-outstanding`` as baselines, ``latency-optimal`` and
``cost-optimal`` with the step model (their default where the view has one) and with
each learned latency predictor on every instance (``use_step_model: false``; the LSTM
of the scenario). Goodput, SLO attainment and cost per 1M output tokens.

    .venv/bin/python benchmarks/predictors.py              # about 10 minutes on 2 cores
    .venv/bin/python benchmarks/predictors.py --quick      # 2,000-request runs, 1 training run
    .venv/bin/python benchmarks/predictors.py --parts cost # only the per-call costs
    .venv/bin/python benchmarks/predictors.py --parts routing  # routing outcomes (trains the LSTMs)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from sincere.cli.predict import instance_facts
from sincere.core.request import Request
from sincere.predict.evaluate import evaluate_length
from sincere.predict.latency import LinearLatency, RecentWindow, RouteContext
from sincere.predict.length import HistoryMean
from sincere.predict.lstm import LstmLatency
from sincere.predict.lstm_train import LstmParams, train_lstm
from sincere.predict.offline import evaluate_model
from sincere.predict.quantile_length import LengthParams, QuantileLength
from sincere.predict.records import Lengths, read_lengths, read_served
from sincere.sim import simulate

ROOT = Path(__file__).resolve().parents[1]
TRACES = ROOT.parent / "shared" / "data" / "traces"
SCENARIOS = {
    "hetero": {"kind": "poisson", "rate": 30.0},
    "hetero-bursty": {"kind": "gamma", "rate": 30.0, "cv": 4.0},
}
TRAIN_SEEDS, TEST_SEED = (0, 1, 2), 10
LIVE_SEED, LIVE_RATE = 20, 10.0
ROUTING_SEEDS = (10, 11, 12)


def _explore_config(seed: int, num_requests: int, scenario: str = "hetero") -> dict[str, Any]:
    raw: dict[str, Any] = yaml.safe_load((ROOT / "examples" / "hetero-explore.yaml").read_text())
    raw["seed"] = seed
    raw["workload"].update(num_requests=num_requests, arrival=SCENARIOS[scenario])
    return raw


def sim_records(folder: Path, scenario: str, seed: int, num_requests: int) -> Path:
    """One simulated run of ``scenario`` behind the random router; its output folder."""
    out = folder / f"{scenario}-{seed}"
    if not (out / "requests.parquet").is_file():
        simulate(_explore_config(seed, num_requests, scenario)).write(out)
    return out


SOURCES: dict[str, Callable[[Path, str, int, int], Path]] = {"sim": sim_records}
"""Where training records come from (live records: :func:`live_rows`)."""


def train_models(
    folder: Path, num_requests: int, train_seeds: tuple[int, ...]
) -> dict[str, tuple[Path, float, Any]]:
    """The LSTM of each scenario trained on its training runs: (file, seconds, report)."""
    models = {}
    for scenario in SCENARIOS:
        train = [SOURCES["sim"](folder, scenario, seed, num_requests) for seed in train_seeds]
        path = folder / f"lstm-{scenario}.npz"
        started = time.perf_counter()
        served = [read_served(r / "requests.parquet") for r in train]
        model, report = train_lstm(served, LstmParams())
        model.save(path, asdict(LstmParams()), {"records": [str(r) for r in train]})
        models[scenario] = (path, time.perf_counter() - started, report)
    return models


def latency_rows(
    folder: Path, num_requests: int, models: dict[str, tuple[Path, float, Any]]
) -> list[dict]:
    """Scores of every latency predictor per scenario, and the LSTM across scenarios."""
    tests = {s: SOURCES["sim"](folder, s, TEST_SEED, num_requests) for s in SCENARIOS}
    rows = []
    for scenario, test in tests.items():
        facts = instance_facts(test / "config.yaml")
        own = [scenario, *(s for s in models if s != scenario)]  # its own model first
        rows += _scored(scenario, [test / "requests.parquet"], facts, models, own)
    return rows


def _scored(
    label: str, records: list[Path], facts: Any, models: dict, order: list[str]
) -> list[dict]:
    """Every predictor's scores on ``records``; the LSTM of each scenario in ``order``."""
    rows = []
    for k, trained_on in enumerate(order):
        path, train_s, report = models[trained_on]
        for s in evaluate_model(path, records, facts=facts):
            if s.name != "lstm" and k > 0:
                continue  # the baselines were scored beside the first model
            row = {"scenario": label, **asdict(s)}
            if s.name == "lstm":
                row.update(name=f"lstm (trained on {trained_on})", train_s=train_s)
                row.update(epochs=report.epochs_run)
            rows.append(row)
    return rows


def live_rows(folder: Path, num_requests: int, models: dict) -> list[dict]:
    """Scores on the gateway's decision log of a live run on emulated engines.

    The hetero cluster behind the random router, replayed on the wall clock through
    sincere's gateway in front of emulated engines (``sincere.bench.parity.live_run``),
    at a third of the simulated rate so this machine's event loop keeps up. The LSTMs
    trained on simulated records are scored on it (simulation to live transfer).
    """
    import asyncio

    from sincere.bench.parity import live_run
    from sincere.policy.decision_log import open_log
    from sincere.sim.build import base_dir_of, canonical_requests
    from sincere.sim.config import load_config
    from sincere.workload.config import generate

    raw = _explore_config(LIVE_SEED, num_requests)
    raw["workload"]["arrival"] = {"kind": "poisson", "rate": LIVE_RATE}
    cfg = load_config(raw)
    requests = canonical_requests(generate(cfg.workload, cfg.seed, base_dir=base_dir_of(cfg)))
    run = simulate(raw)  # for its instance names and config (facts)
    run.write(folder / "live-sim")
    log = folder / "live-decisions.jsonl"
    with open_log(log) as decisions:
        asyncio.run(live_run(cfg, requests, list(run.records.instances), None, decisions))
    facts = instance_facts(folder / "live-sim" / "config.yaml")
    return _scored("live (gateway, emulated engines)", [log], facts, models, list(models))


def routing_rows(folder: Path, num_requests: int, models: dict) -> list[dict]:
    """Goodput, SLO attainment and cost of each router and predictor on held-out runs.

    The hetero cluster and tiers of the latency part, seeds ``ROUTING_SEEDS`` (means,
    and the spread of SLO attainment over the seeds). Learned predictors route with
    ``use_step_model: false``: every prediction is the learned one, as in a gateway
    whose engines report no queue (the views still carry the simulator's load, which
    the predictors read).
    """
    rows = []
    for scenario in SCENARIOS:
        lstm = str(models[scenario][0])
        for router, params, label in _routing_variants(lstm):
            runs = []
            for seed in ROUTING_SEEDS:
                raw = _explore_config(seed, num_requests, scenario)
                raw["router"] = {"name": router, "params": params}
                runs.append(simulate(raw).summary)
            slo = [r["slo_attainment"] for r in runs]
            rows.append({
                "scenario": scenario, "router": router, "predictor": label,
                "goodput_rps": float(np.mean([r["goodput_rps"] for r in runs])),
                "slo_attainment": float(np.mean(slo)), "slo_spread": float(np.std(slo)),
                "cost_per_1m_output_tokens_usd": float(
                    np.mean([r["cost_per_1m_output_tokens_usd"] for r in runs])
                ),
                "p90_ttft_s": float(np.mean([r["ttft_s"]["p90"] for r in runs])),
            })  # fmt: skip
    return rows


def _routing_variants(lstm: str) -> list[tuple[str, dict, str]]:
    learned: dict[str, Any] = {
        "recent-window": "recent-window",
        "linear": "linear",
        "lstm": {"name": "lstm", "params": {"path": lstm}},
    }
    out: list[tuple[str, dict, str]] = [("random", {}, "-"), ("least-outstanding", {}, "-")]
    for router in ("latency-optimal", "cost-optimal"):
        out.append((router, {}, "step model"))
        for label, spec in learned.items():
            out.append((router, {"use_step_model": False, "latency_predictor": spec}, label))
    return out


def length_rows(quick: bool) -> list[dict]:
    """The quantile model and its baselines on the Azure traces (time split 70 / 30)."""
    from sincere.workload.traces import read_trace

    if not TRACES.is_dir():
        return [{"skipped": f"no traces at {TRACES}"}]
    parts = []
    for service in ("code", "conv"):
        trace = read_trace(TRACES / f"AzureLLMInferenceTrace_{service}.csv", "azure")
        n = len(trace) // (4 if quick else 1)
        data = Lengths(
            trace.prompt_tokens[:n], trace.output_tokens[:n], (service,) * n,
            ("default",) * n, (None,) * n,
        )  # fmt: skip
        parts.append(data.split(0.7))
    train = Lengths.concat([p[0] for p in parts])
    test = Lengths.concat([p[1] for p in parts])
    model, train_s = QuantileLength.train(train, LengthParams())
    rows = [
        {"data": "azure code+conv 2023", **asdict(s)} for s in evaluate_length(model, train, test)
    ]
    rows[-1]["train_s"] = round(train_s, 1)
    return rows


def _per_call_us(fn: Callable[[], object], repeat: int) -> float:
    for _ in range(max(10, repeat // 10)):
        fn()  # warm-up
    started = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - started) / repeat * 1e6


def cost_rows(model_path: Path, facts: Any, repeat: int) -> list[dict]:
    """Microseconds per routing decision's predictions at 16 instances."""
    lstm = LstmLatency.load(model_path)
    names = [f"i{k}" for k in range(16)]
    ctx = RouteContext(600, 180.0, num_running=24, num_waiting=2, num_outstanding=26,
                       waiting_prefill_tokens=1500, routed_at=100.0)  # fmt: skip
    ctxs = [ctx] * 16
    ewma, ridge = RecentWindow(), LinearLatency()
    rng = np.random.default_rng(0)
    for name in names:
        for j in range(64):
            c = ctx._replace(num_running=int(rng.integers(0, 64)), routed_at=40.0 + j)
            for p in (lstm, ewma, ridge):
                p.observe(name, c, 0.05 + 0.001 * c.num_running, 3.0, 180)
    lstm.refresh()
    step = next(iter(facts.step_models.values()))
    from sincere.predict.latency import step_model_latency

    def refresh_all() -> None:
        for name in names:
            lstm.observe(name, ctx, 0.05, 3.0, 180)
        lstm.refresh()

    text = " ".join(["please explain the following code in detail"] * 12)
    length, mean = QuantileLength.load(model_path.with_name("length.npz")), HistoryMean()
    req = Request(0, 0.0, "llama-3-8b", 600, 180, prompt=text)
    bare = Request(0, 0.0, "llama-3-8b", 600, 180)
    return [
        {"what": "lstm, 16 instances in one call (windows current)",
         "us": _per_call_us(lambda: lstm.distributions(names, ctxs), repeat)},
        {"what": "lstm, 16 calls of predict (windows current)",
         "us": _per_call_us(lambda: [lstm.predict(n, ctx) for n in names], repeat // 4)},
        {"what": "lstm, 16 outcomes observed + refresh of 16 windows",
         "us": _per_call_us(refresh_all, repeat // 10)},
        {"what": "recent-window (EWMA), 16 calls",
         "us": _per_call_us(lambda: [ewma.predict(n, ctx) for n in names], repeat)},
        {"what": "linear (ridge), 16 calls",
         "us": _per_call_us(lambda: [ridge.predict(n, ctx) for n in names], repeat)},
        {"what": "step model, 16 calls",
         "us": _per_call_us(lambda: [step_model_latency(step, ctx) for _ in names], repeat)},
        {"what": "quantile length, one request, 96 words of text",
         "us": _per_call_us(lambda: length.predict(req), repeat)},
        {"what": "quantile length, one request, no text",
         "us": _per_call_us(lambda: length.predict(bare), repeat)},
        {"what": "history-mean length, one request",
         "us": _per_call_us(lambda: mean.predict(bare), repeat)},
    ]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small runs, one training run")
    parser.add_argument(
        "--parts", nargs="+", choices=PARTS, default=list(PARTS), help="what to measure"
    )
    args = parser.parse_args()
    num_requests = 2_000 if args.quick else 8_000
    seeds = TRAIN_SEEDS[:1] if args.quick else TRAIN_SEEDS
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        rows = []
        models = {}
        if {"latency", "live", "routing"} & set(args.parts):
            models = train_models(folder, num_requests, seeds)
        if "latency" in args.parts:
            rows += latency_rows(folder, num_requests, models)
        if "live" in args.parts:
            rows += live_rows(folder, 300 if args.quick else 900, models)
        if "routing" in args.parts:
            rows += routing_rows(folder, num_requests, models)
        if "length" in args.parts:
            rows += length_rows(args.quick)
        if "cost" in args.parts:
            rows += cost_rows(*_cost_models(folder), repeat=400 if args.quick else 4000)
        for row in rows:
            print(json.dumps(_rounded(row)), flush=True)
    cpus, python = os.cpu_count(), platform.python_version()
    print(f"machine: {platform.machine()}, {cpus} CPUs, Python {python}")


PARTS = ("latency", "live", "routing", "length", "cost")


def _cost_models(folder: Path) -> tuple[Path, Any]:
    """The LSTM of the latency part (or a quickly trained one), a length model, the facts.

    Costs do not depend on the weights' values, only on the sizes.
    """
    test_run = folder / f"hetero-{TEST_SEED}"
    if not test_run.is_dir():
        sim_records(folder, "hetero", TEST_SEED, 2_000)
    lstm = folder / "lstm-hetero.npz"
    if not lstm.is_file():
        served = [read_served(test_run / "requests.parquet")]
        train_lstm(served, LstmParams(epochs=1))[0].save(lstm, asdict(LstmParams()), {})
    length_model, _ = QuantileLength.train(
        read_lengths([test_run / "requests.parquet"]), LengthParams(epochs=5)
    )
    length_model.save(folder / "length.npz", {}, {})
    return lstm, instance_facts(test_run / "config.yaml")


def _rounded(row: dict) -> dict:
    return {k: round(v, 5) if isinstance(v, float) else v for k, v in row.items()}


if __name__ == "__main__":
    main()
