"""Invariants every router keeps, on arbitrary instance views (hypothesis)."""

from __future__ import annotations

from typing import TypeVar

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from sincere.core import Request, Tier
from sincere.perf.base import Batch, StepTimeBase
from sincere.policy.router_base import ROUTERS, InstanceView, Outcome
from sincere.policy.routers import make_router

T = TypeVar("T")


class LinearStep(StepTimeBase):
    """Iteration time = base + per_token * tokens."""

    def __init__(self, base_s: float, per_token_s: float) -> None:
        super().__init__()
        self.base_s, self.per_token_s = base_s, per_token_s

    def iteration_s(self, batch: Batch) -> float:
        return self.base_s + self.per_token_s * batch.num_tokens


def maybe(values: st.SearchStrategy[T]) -> st.SearchStrategy[T | None]:
    """A load field as a live backend may report it: a value, or unknown (None)."""
    return st.one_of(st.none(), values)


@st.composite
def views(draw: st.DrawFn) -> list[InstanceView]:
    n = draw(st.integers(1, 8))
    out = []
    for k in range(n):
        step = draw(
            st.one_of(st.none(), st.builds(LinearStep, st.floats(1e-4, 0.1), st.floats(0.0, 1e-3)))
        )
        out.append(
            InstanceView(
                f"i{k}",
                draw(st.sampled_from(["small", "large"])),
                "H100",
                num_running=draw(maybe(st.integers(0, 300))),
                num_waiting=draw(maybe(st.integers(0, 50))),
                num_outstanding=draw(st.integers(0, 400)),
                waiting_prefill_tokens=draw(maybe(st.integers(0, 100_000))),
                running_remaining_tokens=draw(maybe(st.integers(0, 100_000))),
                running_ctx_tokens=draw(maybe(st.integers(0, 1_000_000))),
                kv_usage=draw(maybe(st.floats(0.0, 1.0))),
                max_num_seqs=draw(st.integers(1, 256)),
                price_in_per_token_usd=draw(st.floats(0.0, 1e-5)),
                price_out_per_token_usd=draw(st.floats(0.0, 1e-5)),
                quality=draw(st.floats(0.0, 1.0)),
                healthy=draw(st.booleans()),
                step_model=step,
            )
        )
    return out


requests = st.builds(
    Request,
    id=st.integers(0, 10),
    arrival_at=st.just(0.0),
    model=st.just("m"),
    prompt_tokens=st.integers(1, 8000),
    output_tokens=st.integers(1, 500),
    max_tokens=st.one_of(st.none(), st.integers(1, 2048)),
    tier=st.sampled_from([Tier("none"), Tier("i", ttft_s=0.5), Tier("b", ttlt_s=30.0)]),
    budget_usd=st.one_of(st.none(), st.floats(0.0, 0.05)),
)


@settings(max_examples=60, deadline=None)
@given(views=views(), request=requests, seed=st.integers(0, 2**16), warm=st.booleans())
def test_routers_choose_a_listed_healthy_instance(
    views: list[InstanceView], request: Request, seed: int, warm: bool
) -> None:
    """No router returns an unknown id or an unhealthy instance while a healthy one exists,
    whichever load fields are unknown."""
    ids = {v.id for v in views}
    any_healthy = any(v.healthy for v in views)
    by_id = {v.id: v for v in views}
    for name in ROUTERS.names():
        router = make_router(name, np.random.default_rng(seed))
        if warm:  # give learning routers some history first
            for v in views:
                router.observe(Outcome(request, v.id, 0.1, 1.0, 10, 1.0))
        decision = router.route(request, views, 0.0)
        if decision.instance is None:
            assert not any_healthy or request.budget_usd is not None, name
            continue
        assert decision.instance in ids, name
        assert by_id[decision.instance].healthy, name
        if decision.max_tokens is not None:
            assert decision.max_tokens >= 1, name
