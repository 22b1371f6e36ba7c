"""xPyD sizing: hand-computed pools, the queueing pieces, the pool MILP, input errors."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sincere.core.errors import ConfigError
from sincere.optimize.pd_input import LENGTH_SAMPLE, compare, load_plan_input
from sincere.optimize.pd_plan import (
    Candidate,
    PDLoad,
    PDTargets,
    busy_sequences,
    deployment,
    erlang_c,
    phase_times,
    plan_pd,
    predict_prefill,
)
from sincere.optimize.solvers import PoolChoice, solve_pools
from sincere.perf.factory import StepModelConfig
from sincere.sim.config import KvLinkConfig

# decode step 10 + 0.1·n ms, prefill 0.1 ms per prompt token: a 1000-token prompt is 100 ms
LINEAR = StepModelConfig(
    kind="inferno", params={"alpha_ms": 10.0, "beta_ms": 0.1, "gamma_ms": 0.0, "delta_ms": 0.1}
)
FAST_LINK = KvLinkConfig(kind="rdma", bandwidth_gbps=1e9, latency_s=0.0)  # hand-off ~ 0
H100 = [Candidate("H100-SXM", 1)]


def _plan(rate: float, ttft_ms: float = 200.0, tpot_ms: float = 20.0, out: int = 101):
    return plan_pd(
        "llama-3-8b",
        H100,
        PDLoad(rate, 1000, out),
        PDTargets(ttft_ms, tpot_ms),
        kv_link=FAST_LINK,
        step_model=LINEAR,
    )


def _times(rate: float, out: int):
    dep = deployment("llama-3-8b", H100[0])
    return phase_times(dep, LINEAR.build(dep), PDLoad(rate, 1000, out), FAST_LINK)


def test_one_prefill_instance_is_pollaczek_khinchine_and_a_pool_shares_its_queue() -> None:
    """M/D/c at c = 1 is M/D/1 exactly; two instances sharing a queue wait less than two
    halves of the load each on its own (the router sends a prompt to the least loaded)."""
    t = _times(6.0, 101)
    assert predict_prefill(t, 6.0, 1).ttft_ms == pytest.approx(175.0, rel=1e-6)  # ρ = 0.6
    pooled = predict_prefill(t, 12.0, 2).ttft_ms
    assert pooled == pytest.approx(128.125, rel=1e-6) and pooled < 175.0


def test_hand_computed_prefill_and_decode_pools() -> None:
    """12 req/s of 1000 in / 101 out, TTFT 200 ms, TPOT 20 ms: 2 prefill and 1 decode
    instance, figures as M/D/c and Little's law give them by hand."""
    plan = _plan(12.0)
    # one instance alone: t_p = 100 ms; W + t_p <= 200 ms with W = ρ·t_p/(2(1 − ρ)) (M/D/1)
    # holds up to ρ = 2/3
    assert plan.prefill.capacity_per_s == pytest.approx(20.0 / 3.0, rel=1e-6)
    assert plan.prefill.count == 2  # a = 12·0.1 = 1.2 Erlangs needs 2
    # the pool, M/D/2 at a = 1.2: Erlang C = 1.8 / 4 = 0.45; M/M/2 wait 0.45·100 / 0.8 =
    # 56.25 ms, halved for deterministic service: W = 28.125 ms, TTFT = 128.125 ms
    assert plan.prefill.predicted.ttft_ms == pytest.approx(128.125, rel=1e-6)
    # decode: s(b) = 10 + 0.1·b <= 20 ms up to b = 100 (the KV of 1101 tokens holds more)
    assert plan.decode.batch == 100
    assert plan.decode.count == 1
    # L = 12·100·(0.010 + 0.0001·L)  =>  L = 12 / 0.88; TPOT = 10 + 0.1·L ms (no slot wait)
    busy = 12.0 / 0.88
    assert plan.decode.predicted.utilization == pytest.approx(busy / 100, rel=1e-6)
    assert plan.tpot_ms == pytest.approx(10.0 + 0.1 * busy, rel=1e-6)
    assert plan.cost_per_hour_usd == pytest.approx(3 * 2.99)
    assert plan.meets


def test_tpot_target_sets_the_decode_batch() -> None:
    """A tighter TPOT (15 ms) halves the decode batch to 50 (s(50) = 15 ms)."""
    assert _plan(2.0, tpot_ms=15.0).decode.batch == 50


def test_kv_capacity_caps_the_decode_batch() -> None:
    """On an L4 (24 GB) the KV of 1101-token sequences, not the TPOT, bounds the batch."""
    plan = plan_pd(
        "llama-3-8b",
        [Candidate("L4", 1)],
        PDLoad(0.5, 1000, 101),
        PDTargets(2000.0, 20.0),
        kv_link=FAST_LINK,
        step_model=LINEAR,
    )
    assert 1 <= plan.decode.batch < 100


def test_busy_sequences_solves_littles_law() -> None:
    """For s(n) = 10 + 0.1·n ms and 100 decodes, L = λ / (1 − 0.01·λ)."""
    steps = (10.0 + 0.1 * np.arange(1, 101)) / 1e3
    for rate in (1.0, 10.0, 40.0):
        assert busy_sequences(steps, 100, rate, 100) == pytest.approx(rate / (1 - 0.01 * rate))
    assert math.isinf(busy_sequences(steps, 100, 60.0, 100))  # needs L = 150 > 100


def test_erlang_c_known_values() -> None:
    """C(1, a) = a; C(2, 1) = 1/3; a full system always waits."""
    assert erlang_c(1, 0.4) == pytest.approx(0.4)
    assert erlang_c(2, 1.0) == pytest.approx(1.0 / 3.0)
    assert erlang_c(4, 4.0) == 1.0


def test_pool_milp_shares_the_accelerators() -> None:
    """Both pools' cheapest choice is an H100; with one H100 left the MILP gives it to
    the pool that saves most by it, and refuses when nothing fits."""
    choice = PoolChoice(
        pool=np.array([0, 0, 1, 1]),
        count=np.array([1, 2, 1, 1]),
        cost=np.array([3.0, 1.8, 1.5, 1.8]),  # prefill: 1 H100 or 2 A100; decode: H100 or A100
        units=np.array([1, 1, 1, 1]),
        type_ix=np.array([0, 1, 0, 1]),
        capacity=np.array([math.inf, math.inf]),
        num_pools=2,
    )
    assert list(solve_pools(choice)) == [0, 2]  # 3.0 + 1.5
    one_h100 = replace(choice, capacity=np.array([1.0, math.inf]))
    assert list(solve_pools(one_h100)) == [0, 3]  # 3.0 + 1.8 < 3.6 + 1.5
    with pytest.raises(ConfigError, match="fits"):
        solve_pools(replace(choice, capacity=np.array([0.0, 2.0])))


@settings(max_examples=25, deadline=None)
@given(
    rate=st.floats(0.5, 40.0),
    out=st.integers(2, 400),
    ttft=st.floats(120.0, 2000.0),
    tpot=st.floats(11.0, 40.0),
)
def test_planned_pools_meet_targets_and_are_minimal(
    rate: float, out: int, ttft: float, tpot: float
) -> None:
    """The chosen pools meet both targets, and one instance fewer in a pool would not."""
    plan = _plan(rate, ttft, tpot, out)
    assert plan.meets
    n = plan.prefill.count
    if n > 1:  # a pool one instance smaller misses the TTFT target (or saturates)
        times = _times(rate, out)
        fewer = predict_prefill(times, rate, n - 1)
        assert fewer.ttft_ms + fewer.handoff_ms > ttft
    assert plan.decode.capacity_per_s * (plan.decode.count - 1) < rate


def test_unmeetable_slo_names_the_way_out() -> None:
    """A TTFT below one prefill's time leaves no prefill candidate: a ConfigError says so."""
    with pytest.raises(ConfigError, match="no candidate meets the SLOs") as err:
        _plan(1.0, ttft_ms=50.0)
    assert "looser" in str(err.value)


BASE = {
    "model": "llama-3-8b",
    "load": {"rate_per_s": 2.0, "prompt_tokens": 1000, "output_tokens": 101},
    "slo": {"ttft_ms": 200, "tpot_ms": 20},
    "candidates": [{"accelerator": "H100-SXM"}],
    "step_model": LINEAR.model_dump(),
    "disaggregation": {"kv_link": {"kind": "rdma"}},
}


@pytest.mark.parametrize(
    ("patch", "needle"),
    [
        ({"load": {"rate_per_s": 0, "prompt_tokens": 10, "output_tokens": 5}}, "rate_per_s"),
        ({"load": {"rate_per_s": 1, "prompt_tokens": 10, "output_tokens": 1}}, "output_tokens"),
        ({"slo": {"ttft_ms": -1, "tpot_ms": 20}}, "ttft_ms"),
        ({"candidates": []}, "candidates"),
        ({"candidates": [{"accelerator": "H100-SXM", "tp": 0}]}, "tp"),
        ({"disaggregation": {"kv_link": {"kind": "wifi"}}}, "kind"),
        ({"capacity": {"H100-SXM": -1}}, "capacity"),
        ({"colour": "red"}, "colour"),
    ],
)
def test_bad_plan_input_is_named(patch: dict[str, object], needle: str) -> None:
    """Each bad field is a ConfigError naming it."""
    with pytest.raises(ConfigError, match=needle):
        load_plan_input({**BASE, **patch})


def test_unknown_accelerator_lists_the_known_ones() -> None:
    """An accelerator not in the catalog is refused when the input is read, naming the
    candidate and the catalog's names."""
    with pytest.raises(ConfigError, match="H100-SXM") as info:
        load_plan_input({**BASE, "candidates": [{"accelerator": "Z9000"}]})
    assert "candidates[0]" in str(info.value) and "Z9000" in str(info.value)


def test_compare_reports_both_and_the_cheaper() -> None:
    """The comparison carries the colocated plan, the xPyD plan, the winner and the saving."""
    cmp = compare(load_plan_input(BASE))
    assert cmp.colocated is not None and cmp.disaggregated is not None
    cheaper = min(cmp.colocated.cost_per_hour_usd, cmp.disaggregated.cost_per_hour_usd)
    dearer = max(cmp.colocated.cost_per_hour_usd, cmp.disaggregated.cost_per_hour_usd)
    assert cmp.winner in ("colocated", "disaggregated", "tie")
    assert cmp.saving == pytest.approx((dearer - cheaper) / dearer)
    alone = compare(load_plan_input({k: v for k, v in BASE.items() if k != "disaggregation"}))
    assert alone.disaggregated is None and alone.winner == "colocated"


def test_prompt_sample_gives_the_mg1_wait() -> None:
    """Prompts of 500 and 1500 tokens (50 and 150 ms) at 5 req/s: E[S²] = 12,500 ms², so
    W = λ·E[S²]/(2(1 − ρ)) = 62.5 ms and TTFT = 162.5 ms, against 150 ms for fixed 1000."""
    dep = deployment("llama-3-8b", H100[0])
    step = LINEAR.build(dep)
    mixed = phase_times(dep, step, PDLoad(5.0, 1000, 101, (500, 1500)), FAST_LINK)
    fixed = phase_times(dep, step, PDLoad(5.0, 1000, 101), FAST_LINK)
    assert mixed is not None and fixed is not None
    assert predict_prefill(mixed, 5.0).ttft_ms == pytest.approx(162.5, rel=1e-6)
    assert predict_prefill(fixed, 5.0).ttft_ms == pytest.approx(150.0, rel=1e-6)


def test_lengths_block_gives_means_and_a_prompt_sample() -> None:
    """A load given as a lengths block is planned on its sampled means and prompt sample."""
    lengths = {
        "prompt": {"kind": "uniform", "low": 500, "high": 1500},
        "output": {"kind": "fixed", "tokens": 101},
    }
    inp = load_plan_input({**BASE, "load": {"rate_per_s": 2.0, "lengths": lengths}})
    load = inp.pd_load()
    assert load.prompt_tokens == pytest.approx(1000, abs=15) and load.output_tokens == 101
    assert len(load.prompt_sample) == LENGTH_SAMPLE
    assert load == inp.pd_load()  # seeded: the same sample every time
    with pytest.raises(ConfigError, match="lengths"):
        load_plan_input({**BASE, "load": {"rate_per_s": 2.0}})


def test_slow_prefill_link_that_no_decode_count_fixes_is_an_error() -> None:
    """Two L4 TP-1 prefill instances are cheapest, but each sends over one GPU's link (32
    GB/s, half the TP-2 decode side's own): ~33 ms per 8,000-token KV spread over 2 decodes
    keeps TPOT above 20 ms however many decode instances, and the plan says so instead of
    returning a plan that misses."""
    with pytest.raises(ConfigError, match="KV link"):
        plan_pd(
            "llama-3-8b",
            [Candidate("L4", 1), Candidate("L4", 2)],
            PDLoad(1.5, 8000, 3),
            PDTargets(2000.0, 20.0),
            kv_link=KvLinkConfig(kind="nvlink"),
            step_model=LINEAR,
        )


def test_nvlink_keeps_both_pools_on_one_accelerator() -> None:
    """Over NVLink (one node's GPUs) the cheapest pair on a single accelerator is chosen even
    when a mixed pair would cost less; over RDMA the mixed pair is allowed."""
    cands = [Candidate("L4", 1), Candidate("H100-SXM", 1)]
    load, targets = PDLoad(1.0, 1000, 101), PDTargets(400.0, 20.0)
    rdma = plan_pd("llama-3-8b", cands, load, targets, kv_link=FAST_LINK, step_model=LINEAR)
    nvlink = plan_pd("llama-3-8b", cands, load, targets, step_model=LINEAR,
                     kv_link=KvLinkConfig(kind="nvlink"))  # fmt: skip
    pools = (nvlink.prefill.candidate.accelerator, nvlink.decode.candidate.accelerator)
    assert pools[0] == pools[1]
    assert nvlink.cost_per_hour_usd >= rdma.cost_per_hour_usd
