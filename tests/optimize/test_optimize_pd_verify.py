"""``plan FILE.yaml --verify`` on the trace's own arrivals, with a prefix hit rate, and a
flag when the planned TPOT is under-predicted."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from sincere.optimize.pd_check import SimCheck, _workload, arrivals_line, verify_lines
from sincere.optimize.pd_input import colocated_problem, load_plan_input
from sincere.optimize.pd_plan import deployment, phase_times
from sincere.sim.config import KvLinkConfig
from sincere.workload.config import WorkloadConfig, generate

BASE: dict[str, Any] = {
    "model": "llama-3.1-8b",
    "load": {"rate_per_s": 2.0, "prompt_tokens": 3000, "output_tokens": 150},
    "slo": {"ttft_ms": 800, "tpot_ms": 25},
    "candidates": [{"accelerator": "H100-SXM"}],
    "disaggregation": {"kv_link": {"kind": "rdma"}},
}


def _input(**load: Any) -> Any:
    return load_plan_input({**BASE, "load": {**BASE["load"], **load}})


def _bursty_trace(path: Path) -> Path:
    """A Mooncake-format trace whose arrivals come in bursts (inter-arrival CV well over 1)."""
    rows = []
    for k in range(200):
        burst, within = divmod(k, 20)
        rows.append({"timestamp": 10_000 * burst + 10 * within, "input_length": 1000 + k,
                     "output_length": 50, "hash_ids": [k % 3, 100 + k]})  # fmt: skip
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _cv(times: np.ndarray) -> float:
    gaps = np.diff(times)
    return float(gaps.std() / gaps.mean())


def test_verify_replays_a_traces_own_arrivals_at_the_planned_rate(tmp_path: Path) -> None:
    """Lengths from a trace file: the trace's bursty arrivals, rescaled to the load's rate
    (not Poisson); with replay, the trace itself with its block ids."""
    trace = str(_bursty_trace(tmp_path / "t.jsonl"))
    resampled = _input(lengths={"source": trace})
    workload = _workload(resampled, 200)
    assert workload["arrival"] == {"kind": "trace", "path": trace, "rate": 2.0}
    requests = generate(WorkloadConfig.model_validate(workload), 0)
    assert _cv(requests.arrival_at) > 2.0
    assert (len(requests) - 1) / requests.arrival_at[-1] == pytest.approx(2.0)
    assert "the trace's own" in arrivals_line(resampled)
    replayed = _workload(_input(lengths={"source": trace, "replay": True}), 200)
    requests = generate(WorkloadConfig.model_validate(replayed), 0)
    assert requests.prompt_tokens[:3].tolist() == [1000, 1001, 1002] and requests.block_ids
    poisson = _workload(_input(), 10)
    assert poisson["arrival"] == {"kind": "poisson", "rate": 2.0}


def test_a_prefix_hit_rate_shortens_the_planned_prefill_of_both_plans() -> None:
    """load.prefix_hit_rate: the prefill computes the uncached tokens only (xPyD's service
    time; the colocated server's Inferno load carries it); out of [0, 1) is refused."""
    cached, plain = _input(prefix_hit_rate=0.5), _input()
    dep = deployment("llama-3.1-8b", plain.shapes()[0])
    step = plain.step_model.build(dep)
    link = KvLinkConfig(kind="rdma")
    fast = phase_times(dep, step, cached.pd_load(), link)
    slow = phase_times(dep, step, plain.pd_load(), link)
    assert fast is not None and slow is not None
    assert fast.prefill_s < 0.7 * slow.prefill_s and fast.wire_s == slow.wire_s
    problem, _ = colocated_problem(cached)
    assert problem.servers[0].current.load.prefix_hit_rate == 0.5
    with pytest.raises(Exception, match="prefix_hit_rate"):
        _input(prefix_hit_rate=1.0)


def _sim(tpot_ms: float, hit: float | None = None) -> SimCheck:
    return SimCheck(100.0, tpot_ms, 1.0, 1.0, 300, hit, 80.0)


def test_verify_flags_an_under_predicted_tpot_beyond_the_tolerance() -> None:
    """Simulated TPOT 19.7 ms against 10.6 planned is flagged with both figures; 11 ms is not."""
    inp = _input()
    lines = verify_lines(inp, "disaggregated", 100.0, 10.6, _sim(19.7))
    assert "TTFT planned 100.0 ms vs sim 100.0 ms (end of prefill 80.0)" in lines[0]
    assert lines[1] == (
        "  warning: disaggregated TPOT under-predicted: planned 10.60 ms, simulated 19.70 ms "
        "(+86 %, over the 10 % tolerance)"
    )
    assert len(verify_lines(inp, "disaggregated", 100.0, 10.6, _sim(11.0))) == 1


def test_verify_says_when_the_simulation_lacks_the_planned_hit_rate() -> None:
    """A planned hit rate without shared prefixes in the simulation is noted; with them,
    both hit rates are printed."""
    inp = _input(prefix_hit_rate=0.4)
    assert "planned with prefix_hit_rate 0.4" in verify_lines(inp, "colocated", 1, 10, _sim(10))[1]
    lines = verify_lines(inp, "disaggregated", 1, 10, _sim(10, 0.25))
    assert lines[1] == "  prefix hit rate: planned 0.4, simulated 0.250"
