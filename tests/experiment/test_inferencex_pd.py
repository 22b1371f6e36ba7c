"""InferenceX's disaggregated points: the row -> P/D fleet mapping (ranks, slice, KV link),
the closed loop over it, and the skips of what a row does not state or the simulator lacks."""

from __future__ import annotations

import dataclasses
import math

import pytest

from sincere.experiment.inferencex import (
    SKIP_REASONS,
    PointResult,
    PointSpec,
    Skip,
    point_config,
    point_spec,
    simulate_point,
)
from sincere.experiment.inferencex_pd import RDMA_GBPS_PER_GPU
from sincere.workload.inferencex import OperatingPoint, WorkerGroup

# WorkerGroup(batch_size, num_workers, tp, pp, attention_dp, moe_tp, moe_ep)
PREFILL = WorkerGroup(1, 1, 1, 1, 8, 1, 8)  # one worker: 8 ranks of 1 GPU, experts EP 8
DECODE = WorkerGroup(16, 2, 1, 1, 8, 1, 8)  # two such workers, 16 sequences per rank
PD_POINT = OperatingPoint(
    id="dsr1-pd", line=2, backend="trtllm", backend_version="0.8.1",
    model="deepseek-ai/DeepSeek-R1", system="b200_sxm", precision="fp8", gemm_quant="fp8",
    moe_quant="fp8_block", mode="disagg", isl=1024, osl=256, batch_size=0, tp=None,
    pp=None, attention_dp=None, moe_tp=None, moe_ep=None, prefill=PREFILL, decode=DECODE,
    source_concurrency=256, ttft_ms=500.0, tpot_ms=20.0,
)  # fmt: skip
"""DeepSeek-R1 in fp8 on B200s: 1 prefill worker and 2 decode workers of 8 GPUs each."""


def _spec(point: OperatingPoint) -> PointSpec:
    spec = point_spec(point)
    assert isinstance(spec, PointSpec) and spec.pd is not None
    return spec


def test_a_pd_point_maps_to_a_slice_of_its_fleet() -> None:
    """8 prefill ranks and 16 decode ranks: gcd 8, so one slice of 1 prefill and 2 decode
    instances with 256 / 8 = 32 clients and 10 x 32 requests; 24 GPUs over HGX boards of
    8: the KV crosses RDMA at one NIC per prefill GPU."""
    spec = _spec(PD_POINT)
    pd = spec.pd
    assert pd is not None
    assert (pd.slices, pd.prefill.ranks, pd.decode.ranks) == (8, 1, 2)
    assert (spec.clients, spec.num_requests, pd.fleet_gpus) == (256, 320, 24)
    assert pd.kv_link == {"kind": "rdma", "bandwidth_gbps": RDMA_GBPS_PER_GPU}
    assert pd.label() == "1P(tp1 adp8 ep8) 2D(tp1 adp8 ep8) /8"
    config = point_config(spec)
    prefill, decode = config.instances
    assert (prefill.role, prefill.count, prefill.engine.max_num_seqs) == ("prefill", 1, 1)
    assert (decode.role, decode.count, decode.engine.max_num_seqs) == ("decode", 2, 16)
    for inst in config.instances:
        assert (inst.tp, inst.attention_dp, inst.ep, inst.kv_precision) == (1, 8, 8, "fp8")
    assert config.workload.arrival.params == {"concurrency": 32}
    assert config.disaggregation is not None
    assert config.disaggregation.kv_link.kind == "rdma"


def test_an_nvfp4_pd_point_runs_both_sides_in_nvfp4_with_an_fp8_cache() -> None:
    """An fp4 DeepSeek-R1 row is NVFP4 weights on the prefill and the decode side alike."""
    fp4 = dataclasses.replace(PD_POINT, precision="fp4", gemm_quant="nvfp4", moe_quant="nvfp4")
    config = point_config(_spec(fp4))
    assert {(i.role, i.precision, i.kv_precision) for i in config.instances} == {
        ("prefill", "nvfp4", "fp8"),
        ("decode", "nvfp4", "fp8"),
    }


def test_a_fleet_within_one_nvlink_domain_sends_its_kv_over_nvlink() -> None:
    """The same fleet on a GB200 NVL72 rack: 24 GPUs of 72, NVLink's default figures."""
    pd = _spec(dataclasses.replace(PD_POINT, system="gb200")).pd
    assert pd is not None and pd.kv_link == {"kind": "nvlink"}


def test_the_closed_loop_over_the_fleet_runs() -> None:
    """A shortened run: every request measured, finite means, TTFT above the prefill alone."""
    spec = dataclasses.replace(_spec(PD_POINT), num_requests=64)
    result = simulate_point(spec)
    assert isinstance(result, PointResult)
    assert result.num_measured == 64
    assert math.isfinite(result.sim_ttft_ms) and result.sim_ttft_ms > 0
    assert math.isfinite(result.sim_tpot_ms) and result.sim_tpot_ms > 0


@pytest.mark.parametrize(
    ("change", "reason", "detail"),
    [
        ({"decode": dataclasses.replace(DECODE, num_workers=None)}, "pd-workers",
         "decode: workers, tp or batch_size not stated"),
        ({"prefill": None}, "pd-workers", "prefill: workers, tp or batch_size not stated"),
        ({"decode": dataclasses.replace(DECODE, attention_dp=16, moe_ep=16)}, "multi-node",
         "decode worker of 16 GPUs > 8 per node"),
        ({"source_concurrency": 64}, "concurrency",
         "decode batch_size 16 x workers 2 x attention DP 8 vs silicon_concurrency 64"),
        ({"prefill": dataclasses.replace(PREFILL, moe_tp=2, moe_ep=2)}, "moe-split",
         "moe_tp 2 x moe_ep 2 vs 8 GPUs per worker"),
        ({"model": "zhipuai/GLM-5"}, "model", "zhipuai/GLM-5"),
    ],
)  # fmt: skip
def test_pd_points_the_simulator_cannot_express_are_skipped(
    change: dict[str, object], reason: str, detail: str
) -> None:
    """Each is a Skip naming its reason and the row's values."""
    skip = point_spec(dataclasses.replace(PD_POINT, **change))  # type: ignore[arg-type]
    assert isinstance(skip, Skip)
    assert (skip.reason, skip.detail) == (reason, detail)
    assert reason in SKIP_REASONS
