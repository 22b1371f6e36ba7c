"""The router's pass over a fleet gives step_model_latency's floats, bit for bit."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from sincere.catalog import get_accelerator, get_model
from sincere.perf import Deployment, Roofline
from sincere.perf.base import Batch, StepTimeBase
from sincere.perf.calibration import default_roofline_params
from sincere.predict.fleet_latency import FleetLatency, LoadTerms, fast_roofline, fleet_latencies
from sincere.predict.latency import RouteContext, step_model_latency

A100, H100 = get_accelerator("A100-80GB"), get_accelerator("H100-SXM")


def rooflines() -> list[Roofline]:
    """Dense rooflines on every branch of the pass: no TP, TP with and without an eager
    all-reduce floor, a small CUDA-graph size, fp8 weights, decode attention's second
    fixed cost (L40S's FlashAttention 2)."""
    llama8, llama70 = get_model("llama-3-8b"), get_model("llama-3-70b")
    floor = replace(
        default_roofline_params(H100), allreduce_eager_floor_s=40e-6, cuda_graph_max_tokens=64
    )
    no_floor = replace(default_roofline_params(H100), allreduce_eager_floor_s=0.0)
    return [
        Roofline(Deployment(llama8, A100)),
        Roofline(Deployment(llama8, H100, precision="fp8")),
        Roofline(Deployment(llama70, H100, tp=4), floor),
        Roofline(Deployment(llama70, H100, tp=2), no_floor),
        Roofline(Deployment(llama8, get_accelerator("L40S"))),
    ]


def random_loads(rng: np.random.Generator, count: int) -> list[tuple[int, ...]]:
    """(running, waiting, waiting tokens, running remaining, running context, batch limit):
    idle, queued, full batches (a slot wait) and batches of one."""
    loads = [(0, 0, 0, 0, 0, 256), (0, 0, 0, 0, 0, 1), (3, 0, 0, 0, 0, 4)]
    for _ in range(count):
        running = int(rng.integers(0, 300))
        waiting = int(rng.integers(0, 40)) if rng.random() < 0.7 else 0
        limit = int(rng.choice([1, 8, 64, 128, 256]))
        loads.append(
            (
                running,
                waiting,
                int(rng.integers(1, 5000)) * waiting,
                int(rng.integers(0, 400)) * running,
                int(rng.integers(1, 4000)) * running,
                limit,
            )
        )
    return loads


def test_the_pass_equals_step_model_latency_bit_for_bit() -> None:
    """TTFT and E2E of the pass equal step_model_latency's (as floats' hex) on every load,
    prompt and expected length, across rooflines of every branch."""
    rng = np.random.default_rng(3)
    builder = FleetLatency()
    checked = slot_waits = 0
    for model in rooflines():
        loads = random_loads(rng, 60)
        terms = [builder.terms(model, *load) for load in loads]
        assert all(isinstance(t, LoadTerms) for t in terms)
        kept = [t for t in terms if t is not None]
        slot_waits += sum(1 for t in kept if t.rare.slot_rounds > 0)
        for prompt in (0, 1, 7, 300, 511, 512, 513, 4096):
            for expected in (0.0, 0.4, 1.0, 1.5, 2.5, 37.2, 812.0):
                ttfts, e2es = fleet_latencies(kept, prompt, expected)
                assert fleet_latencies(kept, prompt, expected, e2e=False) == (ttfts, [])
                for load, ttft, e2e in zip(loads, ttfts, e2es, strict=True):
                    ctx = RouteContext(prompt, expected, load[0], load[1], 0, *load[2:])
                    want = step_model_latency(model, ctx)
                    assert (ttft.hex(), e2e.hex()) == (want.ttft_s.hex(), want.e2e_s.hex())
                    checked += 1
    assert checked == len(rooflines()) * 63 * 8 * 7
    assert slot_waits > 20  # full batches were among the loads


class Linear(StepTimeBase):
    def iteration_s(self, batch: Batch) -> float:
        return 0.01 + 1e-4 * batch.num_tokens


@pytest.mark.parametrize(
    ("model", "fast"),
    [
        (Roofline(Deployment(get_model("llama-3-8b"), A100)), True),
        (Roofline(Deployment(get_model("llama-3-8b"), A100, tp=2, pp=2)), False),
        (Roofline(Deployment(get_model("mixtral-8x7b"), H100, tp=2)), False),
        (Linear(), False),
        (None, False),
    ],
)
def test_only_dense_single_stage_rooflines_are_in_the_pass(model: object, fast: bool) -> None:
    """Pipeline stages, experts and other models have no load terms: the router predicts
    them with step_model_latency itself."""
    assert (fast_roofline(model) is not None) == fast  # type: ignore[arg-type]
    if model is not None:
        terms = FleetLatency().terms(model, 2, 1, 300, 50, 900, 128)  # type: ignore[arg-type]
        assert (terms is not None) == fast


def test_equal_models_share_one_constants_object() -> None:
    """Two rooflines of the same deployment: one constants object, so the pass unpacks it
    once for a homogeneous fleet."""
    builder = FleetLatency()
    one, two = (Roofline(Deployment(get_model("llama-3-8b"), A100)) for _ in range(2))
    a, b = builder.terms(one, 1, 0, 0, 10, 500, 128), builder.terms(two, 4, 2, 90, 8, 70, 128)
    assert a is not None and b is not None
    assert a.coef is b.coef
    assert a.linear_memo is one.kernels.linear_memo and b.linear_memo is two.kernels.linear_memo


def test_constants_equal_but_for_the_sign_of_a_zero_stay_apart() -> None:
    """Constants are shared only when every one is the same float, sign of zero included."""
    builder = FleetLatency()
    dep = Deployment(get_model("llama-3-8b"), A100)
    params = default_roofline_params(A100)
    plain = Roofline(dep, replace(params, attn_kernel_s=0.0))
    signed = Roofline(dep, replace(params, attn_kernel_s=-0.0))
    a, b = builder.terms(plain, 1, 0, 0, 10, 500, 128), builder.terms(signed, 1, 0, 0, 10, 500, 128)
    assert a is not None and b is not None
    assert a.coef == b.coef and a.coef is not b.coef
