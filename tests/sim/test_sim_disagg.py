"""Prefill/decode disaggregation in the simulator: formula case, invariants, config edge."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sincere.catalog import get_model
from sincere.core.errors import ConfigError
from sincere.core.request import Request, RequestArrays
from sincere.policy.router_base import InstanceView, Outcome, RouteDecision, Router
from sincere.sim import load_config, simulate
from sincere.sim.api import SimulationWarning
from sincere.sim.build import build_cluster, canonical_requests
from sincere.sim.runner import run_events

# inferno linear step times, ms: decode step alpha + beta * n, prefill gamma + delta * tokens
ALPHA, BETA, GAMMA, DELTA = 10.0, 1.0, 5.0, 0.1
STEP = {"kind": "inferno", "params": {"alpha_ms": ALPHA, "beta_ms": BETA,
                                       "gamma_ms": GAMMA, "delta_ms": DELTA}}  # fmt: skip
ENGINE = {"kind": "continuous", "scheduler": "sarathi", "scheduler_params": {"chunk_size": 4096},
          "max_num_seqs": 64, "max_num_batched_tokens": 4096}  # fmt: skip
MODEL = "llama-3-8b"


def instance(role: str | None, name: str, **extra: Any) -> dict[str, Any]:
    """One Llama-3-8B A100 instance with the linear step model."""
    inst = {"name": name, "model": MODEL, "accelerator": "A100-80GB", "step_model": STEP,
            "engine": ENGINE, **extra}  # fmt: skip
    if role is not None:
        inst["role"] = role
    return inst


def pd_config(link: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """One prefill and one decode instance joined by ``link``."""
    return {
        "seed": 0,
        "workload": {
            "num_requests": 1,
            "arrival": {"kind": "poisson", "rate": 1.0},
            "lengths": {
                "prompt": {"kind": "fixed", "tokens": 100},
                "output": {"kind": "fixed", "tokens": 10},
            },
            "models": {MODEL: 1.0},
        },
        "instances": [instance("prefill", "p"), instance("decode", "d")],
        "disaggregation": {"kv_link": link, **extra},
    }


def kv_bytes_per_token() -> float:
    """Llama-3-8B's KV bytes per token at fp16 (the catalog's memory figure)."""
    return get_model(MODEL).kv_bytes_per_token("fp16")


def test_an_isolated_request_meets_the_formula() -> None:
    """Prefill done after the prefill time; TTFT (the client's first token, from the decode
    side) = that + latency + bytes / bandwidth; E2E = TTFT + (O - 1) decode steps."""
    prompt, output, bw_gbps, lat_s = 1000, 10, 1.0, 0.002
    arrivals = [0.0, 10.0, 20.0]  # far apart: each request is alone in the system
    requests = RequestArrays.build(arrivals, [prompt] * 3, [output] * 3, models=(MODEL,))
    cfg = pd_config({"kind": "rdma", "bandwidth_gbps": bw_gbps, "latency_s": lat_s})
    result = simulate(cfg, requests=requests)
    table = result.requests.to_pydict()
    prefill = (GAMMA + DELTA * prompt) / 1e3
    transfer = lat_s + prompt * kv_bytes_per_token() / (bw_gbps * 1e9)
    ttft = prefill + transfer
    e2e = ttft + (output - 1) * (ALPHA + BETA * 1) / 1e3
    assert table["prefill_done_at"] == pytest.approx([prefill + a for a in arrivals], rel=1e-9)
    assert table["ttft_s"] == pytest.approx([ttft] * 3, rel=1e-9)
    assert result.summary["disaggregation"]["prefill_ttft_s"]["mean"] == pytest.approx(prefill)
    assert table["kv_transfer_s"] == pytest.approx([transfer] * 3, rel=1e-9)
    assert table["e2e_s"] == pytest.approx([e2e] * 3, rel=1e-9)
    assert table["prefill_instance"] == ["p"] * 3
    assert table["decode_instance"] == ["d"] * 3
    assert table["instance"] == ["d"] * 3
    assert table["output_tokens"] == [output] * 3


def test_transfers_starting_together_share_the_link() -> None:
    """Two prefills ending together: each KV moves at half the bandwidth, both land at 2 W."""
    prompt, bw_gbps, lat_s = 1000, 1.0, 0.002
    requests = RequestArrays.build([0.0, 0.0], [prompt] * 2, [5] * 2, models=(MODEL,))
    cfg = pd_config({"kind": "rdma", "bandwidth_gbps": bw_gbps, "latency_s": lat_s})
    table = simulate(cfg, requests=requests).requests.to_pydict()
    done = (GAMMA + DELTA * 2 * prompt) / 1e3  # one prefill iteration of both prompts
    wire = prompt * kv_bytes_per_token() / (bw_gbps * 1e9)
    assert table["prefill_done_at"] == pytest.approx([done, done], rel=1e-9)
    assert table["kv_ready_at"] == pytest.approx([done + 2 * wire + lat_s] * 2, rel=1e-9)
    assert table["ttft_s"] == table["kv_ready_at"]  # the idle decode instance takes both


def test_staggered_transfers_share_the_link_by_hand() -> None:
    """Processor sharing by hand: A alone for d, then both at half rate; A ends at
    s_A + 2W - d, B at s_A + 2W (W: one KV's wire time alone, d: the gap of the starts)."""
    prompt, bw_gbps, lat_s, gap = 1000, 0.5, 0.002, 0.15
    requests = RequestArrays.build([0.0, gap], [prompt] * 2, [5] * 2, models=(MODEL,))
    cfg = pd_config({"kind": "rdma", "bandwidth_gbps": bw_gbps, "latency_s": lat_s})
    table = simulate(cfg, requests=requests).requests.to_pydict()
    prefill = (GAMMA + DELTA * prompt) / 1e3  # each prefill alone on the prefill instance
    wire = prompt * kv_bytes_per_token() / (bw_gbps * 1e9)
    assert gap < wire  # B starts while A is on the wire
    start_a = prefill
    # A moves gap * bw alone, then (wire - gap) * bw at half rate: 2 (wire - gap) more
    end_a = start_a + gap + 2 * (wire - gap)
    # B moved (wire - gap) * bw by then; its last gap * bw alone
    end_b = end_a + gap
    assert end_b == pytest.approx(start_a + 2 * wire, rel=1e-12)
    assert table["kv_ready_at"] == pytest.approx([end_a + lat_s, end_b + lat_s], rel=1e-9)
    assert table["kv_transfer_s"] == pytest.approx(
        [end_a + lat_s - prefill, end_b + lat_s - (gap + prefill)], rel=1e-9
    )


def test_nvlink_takes_the_catalog_figure() -> None:
    """NVLink by default: the A100's 600 GB/s (both ways) halved, times its one GPU."""
    requests = RequestArrays.build([0.0], [1000], [4], models=(MODEL,))
    result = simulate(pd_config({"kind": "nvlink", "latency_s": 0.0}), requests=requests)
    transfer = result.requests.column("kv_transfer_s").to_pylist()[0]
    assert transfer == pytest.approx(1000 * kv_bytes_per_token() / 300e9, rel=1e-9)


def test_the_never_decider_serves_whole_requests_on_the_decode_instance() -> None:
    """Not disaggregated: prefilled and decoded where it decodes, no transfer recorded."""
    requests = RequestArrays.build([0.0], [1000], [4], models=(MODEL,))
    cfg = pd_config({"kind": "rdma"}, decider={"name": "never"})
    table = simulate(cfg, requests=requests).requests.to_pydict()
    assert table["instance"] == ["d"]
    assert table["prefill_instance"] == [None]
    assert table["kv_transfer_s"] == [None]


def test_the_threshold_decider_keeps_short_prompts_colocated() -> None:
    """Threshold 500 uncached tokens: the 100-token prompt stays, the 1,000-token one splits."""
    requests = RequestArrays.build([0.0, 5.0], [100, 1000], [4, 4], models=(MODEL,))
    cfg = pd_config({"kind": "rdma"}, decider={"name": "threshold", "min_uncached_tokens": 500})
    table = simulate(cfg, requests=requests).requests.to_pydict()
    assert table["prefill_instance"] == [None, "p"]


def test_colocated_runs_have_no_new_columns() -> None:
    """Without roles the request table keeps its columns (outputs stay byte-identical)."""
    cfg = pd_config({"kind": "rdma"})
    del cfg["disaggregation"]
    cfg["instances"] = [instance(None, "a")]
    table = simulate(cfg).requests
    assert "kv_transfer_s" not in table.column_names


@pytest.mark.parametrize(
    ("roles", "needle"),
    [(["prefill"], "no decode instance"), (["decode", "both"], "no prefill instance")],
)
def test_a_split_model_needs_both_roles(roles: list[str], needle: str) -> None:
    """A model with prefill but no decode instance (or the reverse) is refused at build."""
    cfg = pd_config({"kind": "rdma"})
    cfg["instances"] = [instance(r, f"i{k}") for k, r in enumerate(roles)]
    with pytest.raises(ConfigError, match=needle):
        simulate(cfg)


def test_disaggregation_without_roles_is_refused() -> None:
    """A disaggregation section with only colocated instances is a config error."""
    cfg = pd_config({"kind": "rdma"})
    cfg["instances"] = [instance(None, "a")]
    with pytest.raises(ConfigError, match="no instance has a prefill or decode role"):
        simulate(cfg)


def test_an_unknown_role_names_the_allowed_ones() -> None:
    """role: 'prefil' is rejected at load, listing prefill, decode and both."""
    cfg = pd_config({"kind": "rdma"})
    cfg["instances"][0]["role"] = "prefil"
    with pytest.raises(ConfigError, match="prefill"):
        load_config(cfg)


def test_a_zero_bandwidth_link_is_refused() -> None:
    """bandwidth_gbps must be positive."""
    with pytest.raises(ConfigError, match="bandwidth_gbps"):
        load_config(pd_config({"kind": "rdma", "bandwidth_gbps": 0}))


def test_decode_admission_waits_for_free_kv() -> None:
    """A decode instance with little KV: landed KV waits for blocks (backpressure), and
    every request still finishes."""
    n = 40
    requests = RequestArrays.build([0.0] * n, [3000] * n, [400] * n, models=(MODEL,))
    cfg = pd_config({"kind": "rdma", "bandwidth_gbps": 100.0})
    cfg["instances"][1]["engine"] = {**ENGINE, "gpu_memory_utilization": 0.3}
    result = simulate(cfg, requests=requests)
    pd = result.pd
    assert pd is not None
    assert result.log.num_unfinished == 0 and not result.records.rejected.any()
    waited = pd.decode_started_at - pd.kv_ready_at
    assert (waited >= 0).all()
    assert (waited > 1.0).any()


def _run(seed: int, n: int, rate: float, kv_blocks_tight: bool) -> Any:
    cfg = pd_config({"kind": "rdma", "bandwidth_gbps": 5.0})
    cfg["seed"] = seed
    cfg["workload"] = {"num_requests": n, "arrival": {"kind": "poisson", "rate": rate},
                       "lengths": {"prompt": {"kind": "uniform", "low": 16, "high": 3000},
                                   "output": {"kind": "uniform", "low": 1, "high": 300}},
                       "models": {MODEL: 1.0}}  # fmt: skip
    cfg["instances"] = [instance("prefill", "p", count=2), instance("decode", "d", count=2)]
    if kv_blocks_tight:  # little KV on the decode side: arrivals wait for blocks
        cfg["instances"][1]["engine"] = {**ENGINE, "gpu_memory_utilization": 0.3}
    return simulate(cfg)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 10_000),
    n=st.integers(1, 60),
    rate=st.floats(0.5, 50.0),
    tight=st.booleans(),
)
def test_pd_invariants(seed: int, n: int, rate: float, tight: bool) -> None:
    """Each request prefills once and decodes once (or is rejected with a reason), its KV
    crosses whole, decoding starts after it lands, and the run repeats exactly."""
    result = _run(seed, n, rate, tight)
    t = result.requests.to_pydict()
    pd = result.pd
    assert pd is not None
    kvb = kv_bytes_per_token()
    for i in range(n):
        if t["rejected"][i]:
            assert t["reject_reason"][i] is not None
            continue
        assert t["prefill_instance"][i] in ("p-0", "p-1")
        if t["output_tokens"][i] <= 1:  # answered by the prefill: its first token
            assert t["first_token_at"][i] == pytest.approx(pd.prefill_done_at[i])
            assert t["decode_instance"][i] is None
            continue
        # the client's first token: when the decode side took the KV
        assert t["first_token_at"][i] == pd.decode_started_at[i]
        assert t["decode_instance"][i] == t["instance"][i]
        assert t["instance"][i] in ("d-0", "d-1")
        assert pd.kv_bytes[i] == pytest.approx(t["prompt_tokens"][i] * kvb)
        assert pd.kv_ready_at[i] >= pd.prefill_done_at[i] + pd.kv_bytes[i] / 5e9
        assert pd.decode_started_at[i] >= pd.kv_ready_at[i]
        assert t["finished_at"][i] > pd.decode_started_at[i]
    assert result.log.num_unfinished == 0
    again = _run(seed, n, rate, tight).requests
    assert again.equals(result.requests)
    assert np.array_equal(result.pd.kv_ready_at, again.column("kv_ready_at").to_numpy(
        zero_copy_only=False), equal_nan=True)  # fmt: skip


class _Recorder(Router):
    """A router that takes turns and keeps every view it saw and every outcome told."""

    def __init__(self) -> None:
        super().__init__(np.random.default_rng(0))
        self.seen: list[list[InstanceView]] = []
        self.outcomes: list[Outcome] = []

    def choose(
        self, request: Request, candidates: Sequence[InstanceView], now: float
    ) -> RouteDecision:
        self.seen.append(list(candidates))
        return RouteDecision(candidates[len(self.seen) % len(candidates)].id)

    def observe(self, outcome: Outcome) -> None:
        self.outcomes.append(outcome)


def _two_by_two(requests: RequestArrays, decode_memory: float = 0.9) -> tuple[Any, Any, Any]:
    """A 2P2D run whose two phase routers are recorders: (result records, prefill, decode).
    The recorders replace the configured routers after the run's shortcuts are planned, so
    the prefill router configured is one that reads engine load (the default two read
    none, and the recorders would then see load-blind views)."""
    link = {"kind": "rdma", "bandwidth_gbps": 50.0}
    cfg = pd_config(link, prefill_router={"name": "join-shortest-queue"})
    cfg["instances"] = [
        instance("prefill", "p", count=2),
        instance("decode", "d", count=2,
                 engine={**ENGINE, "gpu_memory_utilization": decode_memory}),
    ]  # fmt: skip
    cluster = build_cluster(load_config(cfg), canonical_requests(requests))
    plan = cluster.pd
    assert plan is not None
    prefill, decode = _Recorder(), _Recorder()
    plan.door.prefill.router, plan.door.decode.router = prefill, decode
    run_events(cluster)
    return cluster, prefill, decode


def test_both_phase_routers_learn_the_outcomes() -> None:
    """The prefill router is told each prefill (first token, on its prefill instance), the
    decode router each whole request (on its decode instance), matching the records."""
    n = 12
    arrivals = [0.2 * k for k in range(n)]
    requests = RequestArrays.build(arrivals, [800] * n, [20] * n, models=(MODEL,))
    cluster, prefill, decode = _two_by_two(requests)
    rec = cluster.records
    assert len(prefill.outcomes) == n and len(decode.outcomes) == n
    names = cluster.infos
    by_id = {o.request.id: o for o in prefill.outcomes}
    for i in range(n):
        request_id = cluster.requests.request(i).id
        first = by_id[request_id]
        p = names[int(cluster.pd.records.prefill_instance[i])].id
        assert first.instance == p and first.output_tokens == 1
        assert first.e2e_s == pytest.approx(first.ttft_s)
        done = cluster.pd.records.prefill_done_at[i]
        assert first.ttft_s == pytest.approx(done - arrivals[i])
    for whole in decode.outcomes:
        i = next(k for k in range(n) if cluster.requests.request(k).id == whole.request.id)
        assert whole.instance == names[int(rec.instance[i])].id
        assert whole.output_tokens == 20
        assert whole.e2e_s == pytest.approx(rec.finished_at[i] - arrivals[i])
        assert whole.finished_at > by_id[whole.request.id].finished_at


def test_kv_waiting_for_decode_blocks_counts_as_waiting() -> None:
    """Under backpressure the decode router sees the landed KV waiting for blocks in
    num_waiting (decode-only instances queue nothing else)."""
    n = 40
    arrivals = [0.05 * k for k in range(n)]
    requests = RequestArrays.build(arrivals, [3000] * n, [400] * n, models=(MODEL,))
    cluster, _, decode = _two_by_two(requests, decode_memory=0.3)
    waited = cluster.pd.records.decode_started_at - cluster.pd.records.kv_ready_at
    assert (waited > 0.5).any()
    seen = [v.num_waiting for views in decode.seen for v in views]
    assert all(w is not None for w in seen)
    assert max(w for w in seen if w is not None) > 0


def test_nvlink_between_accelerators_is_refused() -> None:
    """NVLink joins one node's GPUs: prefill and decode pools on different accelerators are
    refused over it, naming rdma; the same pools over RDMA (and aliases of one GPU) load."""
    cfg = pd_config({"kind": "nvlink"})
    cfg["instances"][0]["accelerator"] = "H100-SXM"
    with pytest.raises(ConfigError, match="rdma") as err:
        simulate(cfg)
    assert err.value.where == "disaggregation.kv_link.kind"
    cfg["disaggregation"]["kv_link"] = {"kind": "rdma"}
    assert simulate(cfg).summary["num_completed"] == 1
    same = pd_config({"kind": "nvlink"})
    same["instances"][0]["accelerator"] = "a100-80gb"  # an alias of the decode side's
    assert simulate(same).summary["num_completed"] == 1


def test_the_threshold_reads_the_decode_instances_cache_and_serves_there() -> None:
    """A 600-token prompt kept whole on the decode instance (under 1,000 uncached); its
    1,200-token follow-up shares 512 tokens cached there: 688 uncached, kept, and it hits
    the decode instance's cache instead of being recomputed."""
    first, follow = list(range(1, 10)), [*range(1, 9), *range(50, 60)]  # 64-token blocks
    requests = RequestArrays.build(
        [0.0, 5.0], [600, 1200], [4, 4], models=(MODEL,),
        block_ids=[first, follow], block_tokens=64,
    )  # fmt: skip
    cfg = pd_config({"kind": "rdma"}, decider={"name": "threshold", "min_uncached_tokens": 1000})
    table = simulate(cfg, requests=requests).requests.to_pydict()
    assert table["prefill_instance"] == [None, None]
    assert table["instance"] == ["d", "d"]
    assert table["cached_tokens"] == [0, 512]


def test_a_decode_role_without_kv_intake_is_refused_at_build() -> None:
    """A decode instance on an engine that takes no prefilled KV is a config error naming
    the instance's engine kind."""
    cfg = pd_config({"kind": "rdma"})
    cfg["instances"] = [
        instance("prefill", "p"),
        instance("decode", "d", engine={"kind": "request-level"}),
    ]
    with pytest.raises(ConfigError, match=r"decode instance needs an engine that .* takes"):
        simulate(cfg)


def closed_pd_config(num: int, prompt: int, output: int, **link: Any) -> dict[str, Any]:
    """One prefill and one decode instance (RDMA at 1 GB/s, 2 ms) and two closed-loop
    clients sending fixed-length requests."""
    cfg = pd_config({"kind": "rdma", "bandwidth_gbps": 1.0, "latency_s": 0.002, **link})
    cfg["workload"]["num_requests"] = num
    cfg["workload"]["arrival"] = {"kind": "closed", "concurrency": 2}
    cfg["workload"]["lengths"] = {"prompt": {"kind": "fixed", "tokens": prompt},
                                  "output": {"kind": "fixed", "tokens": output}}  # fmt: skip
    return cfg


def test_a_closed_loop_client_sends_when_its_request_ends_on_the_decode_instance() -> None:
    """Two clients, three requests of 1,000 prompt and 10 output tokens, by hand: both
    prompts prefill in one iteration, their KV share the link and land together, decode 9
    steps of two sequences; the third request is sent when they end (not when their
    prefill did) and runs alone."""
    prompt, output, lat = 1000, 10, 0.002
    table = simulate(closed_pd_config(3, prompt, output)).requests.to_pydict()
    wire = prompt * kv_bytes_per_token() / 1e9  # one KV alone on 1 GB/s
    prefill_both = (GAMMA + DELTA * 2 * prompt) / 1e3
    landed = prefill_both + 2 * wire + lat  # two transfers sharing the link
    ended = landed + (output - 1) * (ALPHA + BETA * 2) / 1e3
    third_prefilled = ended + (GAMMA + DELTA * prompt) / 1e3
    third_landed = third_prefilled + wire + lat
    third_ended = third_landed + (output - 1) * (ALPHA + BETA * 1) / 1e3
    assert table["arrival_at"] == pytest.approx([0.0, 0.0, ended], rel=1e-12)
    assert table["prefill_done_at"] == pytest.approx(
        [prefill_both, prefill_both, third_prefilled], rel=1e-12
    )
    assert table["first_token_at"] == pytest.approx([landed, landed, third_landed], rel=1e-12)
    assert table["finished_at"] == pytest.approx([ended, ended, third_ended], rel=1e-12)
    assert table["ttft_s"] == pytest.approx([landed, landed, third_landed - ended], rel=1e-12)
    assert table["e2e_s"] == pytest.approx([ended, ended, third_ended - ended], rel=1e-12)


def test_a_closed_loop_request_answered_by_its_prefill_frees_its_client_there() -> None:
    """One output token: done at the end of the prefill, no transfer; the next request
    is sent then."""
    table = simulate(closed_pd_config(4, 1000, 1)).requests.to_pydict()
    prefill_both = (GAMMA + DELTA * 2000) / 1e3
    assert table["arrival_at"] == pytest.approx([0.0, 0.0, prefill_both, prefill_both])
    assert table["finished_at"] == pytest.approx([prefill_both] * 2 + [2 * prefill_both] * 2)
    assert table["kv_bytes"] == [0.0] * 4


def test_a_closed_loop_request_the_decode_instance_rejects_frees_its_client() -> None:
    """KV that can never fit the decode instance (its context is shorter) is rejected
    when it lands; the client sends its next request then, and every request is answered."""
    cfg = closed_pd_config(4, 1000, 10)
    cfg["instances"][1]["engine"] = {**ENGINE, "max_model_len": 512}
    with pytest.warns(SimulationWarning, match="every request was rejected"):
        result = simulate(cfg)
    table = result.requests.to_pydict()
    assert all(table["rejected"]) and result.log.num_unfinished == 0
    assert set(table["reject_reason"]) == {"prompt_too_long"}
    landed = table["kv_ready_at"][:2]
    assert table["arrival_at"][2:] == pytest.approx(landed)


@pytest.mark.parametrize("concurrency", [1, 3, 8])
def test_a_closed_loop_over_two_by_two_sends_each_request_at_an_end(concurrency: int) -> None:
    """Two prefill and two decode instances, mixed lengths (one-token outputs among them):
    the ``C + j``-th request is sent exactly when the ``j``-th request ended, wherever it
    ended, so never more than ``C`` requests are in the system."""
    cfg = closed_pd_config(40, 100, 10)
    cfg["workload"]["arrival"]["concurrency"] = concurrency
    cfg["workload"]["lengths"] = {"prompt": {"kind": "uniform", "low": 16, "high": 3000},
                                  "output": {"kind": "uniform", "low": 1, "high": 60}}  # fmt: skip
    cfg["instances"] = [instance("prefill", "p", count=2), instance("decode", "d", count=2)]
    result = simulate(cfg)
    table = result.requests.to_pydict()
    assert not any(table["rejected"]) and result.log.num_unfinished == 0
    arrival, ends = np.array(table["arrival_at"]), np.sort(table["finished_at"])
    assert (arrival[:concurrency] == 0.0).all()
    assert np.array_equal(arrival[concurrency:], ends[: 40 - concurrency])
    assert 1 in table["output_tokens"]  # some ended at their prefill
    assert result.summary["closed_loop"]["concurrency"] == concurrency


def test_a_hybrid_models_prompt_carries_its_recurrent_state_across() -> None:
    """Qwen3.5's prefill instance hands over the 15 full layers' KV of the prompt and the
    45 Gated DeltaNet layers' state (a fixed 192 MB a sequence): the transfer and the
    TTFT hold both."""
    qwen = "qwen3.5-397b-a17b"
    prompt, bw_gbps, lat_s = 1000, 50.0, 0.002
    requests = RequestArrays.build([0.0], [prompt], [10], models=(qwen,))
    cfg = pd_config({"kind": "rdma", "bandwidth_gbps": bw_gbps, "latency_s": lat_s})
    cfg["workload"]["models"] = {qwen: 1.0}
    shape = {"model": qwen, "accelerator": "B200", "tp": 8, "precision": "fp8"}
    cfg["instances"] = [instance("prefill", "p", **shape), instance("decode", "d", **shape)]
    result = simulate(cfg, requests=requests)
    pd = result.pd
    assert pd is not None
    arch = get_model(qwen)
    sent = prompt * arch.kv_bytes_per_token("fp16") + arch.linear_state_bytes_per_seq()
    assert pd.kv_bytes[0] == pytest.approx(sent)
    assert pd.kv_ready_at[0] == pytest.approx(pd.prefill_done_at[0] + lat_s + sent / 5e10)
