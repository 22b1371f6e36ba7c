"""The simulator's cluster drives the front door: admission, budgets and decision logs."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from sincere.policy.decision_log import read_log, replay
from sincere.sim import load_config, simulate
from sincere.sim.build import base_dir_of, build_cluster, canonical_requests
from sincere.workload.config import generate


def same_rows(a: pa.Table, b: pa.Table) -> bool:
    """Equal tables, NaN equal to NaN (rejected requests have no times)."""
    if a.column_names != b.column_names:
        return False
    for name in a.column_names:
        x, y = (
            a.column(name).to_numpy(zero_copy_only=False),
            b.column(name).to_numpy(zero_copy_only=False),
        )
        if x.dtype.kind == "f" and not np.array_equal(x, y, equal_nan=True):
            return False
        if x.dtype.kind != "f" and x.tolist() != y.tolist():
            return False
    return True


def config(**extra: Any) -> dict[str, Any]:
    """Two A100 instances of Llama-3-8B, 300 requests at 12 req/s, a 0.5 s TTFT tier."""
    return {
        "seed": 5,
        "workload": {
            "num_requests": 300,
            "arrival": {"kind": "poisson", "rate": 12.0},
            "lengths": {
                "prompt": {"kind": "uniform", "low": 500, "high": 4000},
                "output": {"kind": "uniform", "low": 10, "high": 200},
            },
            "models": {"llama-3-8b": 1.0},
            "tiers": [{"name": "fast", "ttft_s": 0.5}],
        },
        "instances": [
            {
                "model": "llama-3-8b",
                "accelerator": "A100-80GB",
                "count": 2,
                "price_out_per_mtok_usd": 1.0,
                "engine": {"max_num_seqs": 32},
            },
        ],
        **extra,
    }


def test_admission_sheds_in_the_simulator_as_in_the_gateway() -> None:
    """With admission on, requests predicted to miss their TTFT are rejected, by code."""
    off = simulate(config())
    on = simulate(config(admission={"enabled": True}))
    assert off.summary["num_rejected"] == 0
    reasons = {r for r in on.records.reject_reason if r is not None}
    assert reasons == {"deadline_unreachable"} and on.summary["num_rejected"] > 0
    assert (
        on.summary["tiers"]["fast"]["ttft_s"]["p99"] < off.summary["tiers"]["fast"]["ttft_s"]["p99"]
    )


def test_budgets_cap_max_tokens_and_reject_the_unaffordable() -> None:
    """A budget lowers a request's max_tokens on any router; too small a budget is rejected."""
    cfg = load_config(config())
    requests = generate(cfg.workload, cfg.seed, base_dir=base_dir_of(cfg))
    budget = np.full(len(requests), 20e-6)  # 20 output tokens at 1 USD per 1M tokens
    budget[:5] = 1e-7  # less than one token
    result = simulate(cfg, requests=dataclasses.replace(requests, budget_usd=budget))
    rejected = result.records.rejected
    assert rejected[:5].all() and not rejected[5:].any()
    assert set(result.records.reject_reason[:5]) == {"budget_exceeded"}
    assert int(result.records.output_tokens[5:].max()) <= 20


def test_a_simulation_logs_its_decisions_and_a_fresh_front_door_replays_them(
    tmp_path: Path,
) -> None:
    """The decision log holds every call and outcome; replayed, it gives the same answers."""
    path = tmp_path / "decisions.jsonl"
    cfg = load_config(config(router={"name": "latency-optimal"}, admission={"enabled": True}))
    plain = simulate(cfg)
    logged = simulate(cfg, decisions=path)
    assert same_rows(logged.requests, plain.requests)  # logging changes nothing
    records = list(read_log(path.read_text(encoding="utf-8").splitlines()))
    kinds = {r["event"] for r in records}
    assert kinds == {"decide", "outcome"}
    requests = canonical_requests(generate(cfg.workload, cfg.seed, base_dir=base_dir_of(cfg)))
    cluster = build_cluster(cfg, requests)
    assert cluster.front_door is not None
    steps = {i.id: i.step_model for i in cluster.infos if i.step_model is not None}
    num_calls, mismatches = replay(records, cluster.front_door, steps)
    assert num_calls == 300 and mismatches == []


def test_the_single_instance_shortcut_equals_asking_the_front_door(tmp_path: Path) -> None:
    """A one-instance run gives the same records with the shortcut and through the door."""
    cfg = config()
    cfg["instances"][0]["count"] = 1
    direct = simulate(cfg)
    through = simulate(cfg, decisions=tmp_path / "d.jsonl")  # a log turns the shortcut off
    assert same_rows(direct.requests, through.requests)


def _cluster(**extra: Any) -> Any:
    cfg = load_config(config(**extra))
    reqs = canonical_requests(generate(cfg.workload, cfg.seed, base_dir=base_dir_of(cfg)))
    return build_cluster(cfg, reqs)


def test_outcomes_are_built_only_for_what_learns_from_them() -> None:
    """No outcomes for a router that learns nothing; kept for learning routers and admission."""
    assert not _cluster(router={"name": "round-robin"}).shortcuts.observes
    assert _cluster(router={"name": "latency-optimal"}).shortcuts.observes
    assert _cluster(router={"name": "round-robin"}, admission={"enabled": True}).shortcuts.observes


def test_skipping_outcomes_gives_the_same_records(tmp_path: Path) -> None:
    """Round-robin records are the same with outcomes skipped and with a decision log."""
    cfg = config(router={"name": "round-robin"})
    quiet = simulate(cfg)
    logged = simulate(cfg, decisions=tmp_path / "d.jsonl")  # a log wants every outcome
    assert same_rows(quiet.requests, logged.requests)
