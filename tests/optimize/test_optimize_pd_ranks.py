"""Planning instances of attention ranks sharing one expert group (``attention_dp``): the
ranks as the queues' servers by hand, the colocated model data of a group, the shape
errors, the simulated check and the manifests of such a plan."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

import sincere.cli.plan  # noqa: F401  (registers the command)
from sincere.cli.app import app
from sincere.core.errors import ConfigError
from sincere.optimize import simsize
from sincere.optimize.derive import derive_model_data, grouped
from sincere.optimize.manifests import ManifestOptions, colocated_pool, manifests
from sincere.optimize.pd_check import (
    check,
    colocated_sim_config,
    group_replica,
    pd_sim_config,
)
from sincere.optimize.pd_input import ColocatedPlan, compare, load_plan_input, plan_colocated
from sincere.optimize.pd_plan import Candidate, PDLoad, PDTargets, deployment, plan_pd
from sincere.optimize.simsize import GroupJob, SimSettings
from sincere.perf.factory import StepModelConfig
from sincere.sim.config import KvLinkConfig

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "plan" / "pd"
WIDE = EXAMPLE / "deepseek-v3-wide-ep.yaml"
# decode step 10 + 0.1·n ms, prefill 0.1 ms per prompt token: a 1000-token prompt is 100 ms
LINEAR = StepModelConfig(
    kind="inferno", params={"alpha_ms": 10.0, "beta_ms": 0.1, "gamma_ms": 0.0, "delta_ms": 0.1}
)
LINEAR_BLOCK = {"kind": "inferno", "params": dict(LINEAR.params)}
FAST_LINK = KvLinkConfig(kind="rdma", bandwidth_gbps=1e9, latency_s=0.0)  # hand-off ~ 0
MOE = "qwen3-30b-a3b"
TWO_RANKS = Candidate("H100-SXM", 1, ep=2, attention_dp=2)


def _plan(cand: Candidate, rate: float = 12.0):
    return plan_pd(
        MOE,
        [cand],
        PDLoad(rate, 1000, 101),
        PDTargets(200.0, 20.0),
        kv_link=FAST_LINK,
        step_model=LINEAR,
    )


def test_ranks_are_the_queues_servers_by_hand() -> None:
    """12 req/s of 1000 in / 101 out, TTFT 200 ms, TPOT 20 ms, a rank timed as one GPU of
    the linear model: the prefill pool needs two servers (M/D/2, 128.125 ms: the pool of
    test_optimize_pd_plan's hand case), which one instance of two ranks is; the decode
    instance is two servers of 100 sequences at 6 req/s each, L = 6·100·(0.010 +
    0.0001·L)."""
    plan = _plan(TWO_RANKS)
    pre, dec = plan.prefill, plan.decode
    assert (pre.count, pre.num_gpus) == (1, 2)
    assert pre.predicted.ttft_ms == pytest.approx(128.125, rel=1e-6)
    assert pre.capacity_per_s == pytest.approx(2 * 20.0 / 3.0, rel=1e-6)  # two M/D/1 ranks
    assert (dec.count, dec.num_gpus, dec.batch) == (1, 2, 100)  # batch: per rank
    busy = 6.0 / 0.94
    assert dec.predicted.utilization == pytest.approx(busy / 100, rel=1e-6)
    assert plan.tpot_ms == pytest.approx(10.0 + 0.1 * busy, rel=1e-6)
    price = deployment(MOE, TWO_RANKS).accelerator.price_per_hour_usd
    assert plan.cost_per_hour_usd == pytest.approx(2 * 2 * price)  # two instances of 2 GPUs


def test_ranks_round_up_to_whole_instances() -> None:
    """Three rank-servers of prefill at 30 req/s need two instances of two ranks: four
    servers, which only shorten the wait (M/D/4 below the M/D/3 that three would give)."""
    three = _plan(Candidate("H100-SXM", 1, ep=2, attention_dp=2), rate=20.0).prefill
    assert three.count == 2 and three.num_gpus == 2
    four = _plan(Candidate("H100-SXM", 1, ep=4, attention_dp=4), rate=20.0).prefill
    assert four.count == 1 and four.num_gpus == 4
    assert three.predicted.ttft_ms == pytest.approx(four.predicted.ttft_ms, rel=1e-9)


def test_a_groups_model_data_is_a_ranks_at_its_share() -> None:
    """The colocated planner's model data of a group of D ranks: a rank's intercepts, its
    slopes over D (n requests hold n / D a rank), D times its batch and GPUs."""
    dep = deployment(MOE, TWO_RANKS)
    rank = derive_model_data(dep, LINEAR.build(dep), in_tokens=1000, out_tokens=101)
    group = grouped(rank, 2)
    assert group.decode.intercept_ms == rank.decode.intercept_ms
    assert group.decode.slope_ms == pytest.approx(rank.decode.slope_ms / 2)
    assert group.prefill.slope_ms == pytest.approx(rank.prefill.slope_ms / 2)
    assert group.entry["maxBatchSize"] == 2 * rank.entry["maxBatchSize"]
    assert group.entry["accCount"] == 2 * rank.entry["accCount"] == 2
    assert grouped(rank, 1) is rank
    with pytest.raises(ConfigError, match="attention ranks"):
        grouped(rank, 0)


@pytest.mark.parametrize(
    ("model", "candidate", "needle"),
    [
        (MOE, {"accelerator": "H100-SXM", "tp": 2, "ep": 3, "attention_dp": 2}, "ep must divide"),
        ("llama-3-8b", {"accelerator": "H200", "attention_dp": 2, "ep": 2}, "no experts"),
    ],
)
def test_a_shape_the_model_cannot_take_is_named_at_load(
    model: str, candidate: dict[str, object], needle: str
) -> None:
    """A candidate the model cannot run is refused when the input is read, naming the
    candidate, its shape and why."""
    data = {
        "model": model,
        "load": {"rate_per_s": 1.0, "prompt_tokens": 100, "output_tokens": 10},
        "slo": {"ttft_ms": 500, "tpot_ms": 50},
        "candidates": [{"accelerator": "H100-SXM", "tp": 1}, candidate],
    }
    with pytest.raises(ConfigError, match=needle) as info:
        load_plan_input(data)
    assert "candidates[1]" in str(info.value) and "dp 2" in str(info.value)


def test_attention_ranks_without_ep_split_their_experts_over_the_group() -> None:
    """Attention ranks without ``ep`` are planned with every expert split by TP over the
    group's GPUs: sized as servers like any ranks, simulated with no ``ep`` (the step
    model's all-reduces over the group), run by vLLM as data-parallel ranks without
    ``--enable-expert-parallel``."""
    inp = load_plan_input({
        "model": MOE,
        "load": {"rate_per_s": 4.0, "prompt_tokens": 1000, "output_tokens": 100},
        "slo": {"ttft_ms": 500, "tpot_ms": 50},
        "candidates": [{"accelerator": "H100-SXM", "attention_dp": 2}],
        "disaggregation": {"kv_link": {"kind": "rdma"}},
    })  # fmt: skip
    cmp = compare(inp)
    assert cmp.colocated is not None and cmp.disaggregated is not None
    assert cmp.colocated.candidate == Candidate("H100-SXM", 1, ep=1, attention_dp=2)
    assert all(s.capacity_per_s > 0 for s in cmp.disaggregated.sized)
    (inst,) = colocated_sim_config(inp, cmp.colocated, num_requests=10)["instances"]
    assert inst["attention_dp"] == 2 and "ep" not in inst
    pool = colocated_pool(MOE, cmp.colocated, None, ManifestOptions())
    assert pool.data_parallel == 2 and not pool.expert_parallel


def test_wide_ep_plan_simulated_meets_its_slos_as_planned() -> None:
    """The wide-EP example: the planned xPyD (instances of attention ranks), simulated as
    its ranks, meets both targets, its TTFT and TPOT within 15 % of the planner's; the
    decode instances run more requests a second per GPU than TP-8 ones (the reason to plan
    them)."""
    inp = load_plan_input(WIDE)
    cmp = compare(inp)
    plan = cmp.disaggregated
    assert plan is not None and cmp.colocated is not None
    assert plan.decode.candidate.attention_dp > 1
    by_shape = {(s.pool, s.candidate): s for s in plan.sized}
    tp8 = by_shape[("decode", Candidate("H200", 8))]
    assert plan.decode.capacity_per_s / plan.decode.num_gpus > tp8.capacity_per_s / 8
    cfg = pd_sim_config(inp, plan, num_requests=150)
    pre, dec = cfg["instances"]
    ranks = plan.decode.candidate.attention_dp
    assert dec["count"] == plan.decode.count * ranks
    assert (dec["attention_dp"], dec["ep"], dec["tp"]) == (
        ranks, plan.decode.candidate.ep, plan.decode.candidate.tp,
    )  # fmt: skip
    assert dec["engine"]["max_num_seqs"] == plan.decode.batch
    assert pre["count"] == plan.prefill.count * plan.prefill.candidate.attention_dp
    sim = check(inp, cfg)
    assert sim.finished == 1.0 and sim.meets(inp)
    assert sim.ttft_ms == pytest.approx(plan.client_ttft_ms, rel=0.15)
    assert sim.tpot_ms == pytest.approx(plan.client_tpot_ms, rel=0.15)
    colo = colocated_sim_config(inp, cmp.colocated, num_requests=10)["instances"][0]
    dp = cmp.colocated.candidate.attention_dp
    assert cmp.colocated.num_gpus == cmp.colocated.candidate.tp * dp
    # the roofline prices a group: the colocated instances are whole groups in lockstep
    assert colo["count"] == cmp.colocated.count and colo["engine"]["dp_ranks"] == "lockstep"
    assert colo["engine"]["max_num_seqs"] == cmp.colocated.batch


def test_colocated_ranks_step_together_where_the_step_model_can_price_it() -> None:
    """The colocated check of an instance of ranks: a group stepping together under the
    roofline (it runs, every request served); symmetric ranks under a step model that
    times whole iterations (Inferno's lines), which a group cannot split."""
    inp = load_plan_input(WIDE)
    plan = ColocatedPlan(Candidate("H200", 1, ep=8, attention_dp=8), 8, 1, 64, 28.0, 1.0, 1.0)
    cfg = colocated_sim_config(inp, plan, num_requests=40)
    sim = check(inp, cfg)
    assert sim.finished == 1.0 and sim.tpot_ms > 0
    linear = load_plan_input({**yaml.safe_load(WIDE.read_text()), "step_model": LINEAR_BLOCK})
    (ranks,) = colocated_sim_config(linear, plan, num_requests=10)["instances"]
    assert ranks["count"] == 8 and "dp_ranks" not in ranks["engine"]


def test_simulated_sizing_runs_a_group_of_ranks_as_the_group() -> None:
    """``--sizing simulate`` searches a group's capacity on the group stepping together
    (one rank's prefill holds the others' decodes), not on its fitted lines: the plan it
    sizes passes the same lockstep check it is verified with; a candidate the step model
    cannot split keeps the fitted lines."""
    raw = yaml.safe_load(WIDE.read_text())
    inp = load_plan_input({**raw, "candidates": raw["candidates"][2:]})  # the two DP shapes
    seen: list[object] = []
    real = simsize.capacities

    def spy(jobs, starts, settings):  # type: ignore[no-untyped-def]
        seen.extend(jobs)
        return real(jobs, starts, settings)

    settings = SimSettings(num_requests=150, lengths=None, min_attainment=0.0, cache_dir=None)
    simsize.capacities = spy  # type: ignore[assignment]
    try:
        plan = plan_colocated(inp, sizing="simulate", settings=settings)
    finally:
        simsize.capacities = real  # type: ignore[assignment]
    assert seen and all(isinstance(j, GroupJob) for j in seen)
    assert {j.instance["attention_dp"] for j in seen} == {4, 8}  # type: ignore[union-attr]
    assert all(j.instance["engine"]["dp_ranks"] == "lockstep" for j in seen)  # type: ignore[union-attr]
    assert plan is not None
    sim = check(inp, colocated_sim_config(inp, plan, num_requests=150))
    assert sim.finished == 1.0 and sim.meets(inp), sim
    cand = Candidate("H200", 1, ep=8, attention_dp=8)
    assert group_replica(inp, cand, 64)["engine"]["max_num_seqs"] == 8  # type: ignore[index]
    linear = load_plan_input({**raw, "step_model": LINEAR_BLOCK})
    assert group_replica(linear, cand, 64) is None


def test_cli_prints_the_shape_and_writes_it(tmp_path: Path) -> None:
    """``sincere plan`` shows an instance of ranks as ``TP x dp D, ep E`` and the JSON
    carries the candidate's fields."""
    out = tmp_path / "wide.json"
    res = CliRunner().invoke(app, ["plan", str(WIDE), "--out", str(out), "--no-verify"])
    assert res.exit_code == 0, res.output
    assert " x dp " in res.output and ", ep 8" in res.output
    decode = json.loads(out.read_text())["disaggregated"]["decode"]["candidate"]
    assert decode["attention_dp"] > 1 and decode["ep"] == 8


def test_manifests_run_the_ranks_as_vllm_data_parallel_with_expert_parallelism() -> None:
    """A colocated plan of 4 ranks of TP 2: one pod of 8 GPUs per replica, vLLM's TP 2 x
    DP 4 with expert parallelism, --max-num-seqs per rank, the autoscaler's target every
    rank's batch; an ep vLLM cannot express is refused."""
    cand = Candidate("H200", 2, ep=8, attention_dp=4)
    plan = ColocatedPlan(cand, 8, 3, 64, 84.0, 500.0, 30.0)
    pool = colocated_pool("deepseek-v3", plan, None, ManifestOptions())
    deploy, _, hpa = manifests(pool, ManifestOptions())
    container = deploy["spec"]["template"]["spec"]["containers"][0]
    args = container["args"]
    assert args[args.index("--tensor-parallel-size") + 1] == "2"
    assert args[args.index("--data-parallel-size") + 1] == "4"
    assert args[args.index("--max-num-seqs") + 1] == "64"
    assert "--enable-expert-parallel" in args
    assert list(container["resources"]["limits"].values()) == [8]
    assert deploy["spec"]["replicas"] == 3
    target = hpa["spec"]["metrics"][0]["pods"]["target"]["averageValue"]
    assert target == str(64 * 4)
    odd = ColocatedPlan(Candidate("H200", 2, ep=4, attention_dp=4), 8, 1, 64, 28.0, 1.0, 1.0)
    with pytest.raises(ConfigError, match="1 or 8"):
        colocated_pool("deepseek-v3", odd, None, ManifestOptions())
