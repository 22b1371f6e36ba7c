"""Latency-optimal routing with step-time models and with learned predictors."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from sincere.core import Request
from sincere.perf.base import Batch, StepTimeBase
from sincere.policy.router_base import InstanceView, Outcome
from sincere.policy.routers import LatencyOptimalRouter, make_router
from sincere.policy.routers._estimates import context_of
from sincere.predict.latency import RouteContext, step_model_latency
from sincere.predict.length import MaxTokens


class LinearStep(StepTimeBase):
    """Iteration time = base + per_token * tokens."""

    def __init__(self, base_s: float, per_token_s: float) -> None:
        super().__init__()
        self.base_s, self.per_token_s = base_s, per_token_s

    def iteration_s(self, batch: Batch) -> float:
        return self.base_s + self.per_token_s * batch.num_tokens


def router(**kw: Any) -> LatencyOptimalRouter:
    r = make_router("latency-optimal", np.random.default_rng(0), length_predictor=MaxTokens(), **kw)
    assert isinstance(r, LatencyOptimalRouter)
    return r


def view(name: str, step: StepTimeBase | None, **kw: Any) -> InstanceView:
    return InstanceView(name, "m", "H100", step_model=step, **kw)


REQ = Request(0, 0.0, "m", 1000, 50, max_tokens=100)


def test_picks_the_faster_instance_and_reports_its_prediction() -> None:
    """With idle instances the faster step model wins; the reason carries its predicted E2E."""
    fast, slow = LinearStep(0.01, 0.0001), LinearStep(0.02, 0.001)
    decision = router().route(REQ, [view("slow", slow), view("fast", fast)], 0.0)
    assert decision.instance == "fast"
    expected = step_model_latency(fast, RouteContext(1000, 100.0)).e2e_s
    assert f"{expected:.4g}" in decision.reason


def test_a_long_queue_sends_the_request_elsewhere() -> None:
    """Queued prefill work on the fast instance makes the slower idle one preferable."""
    fast, slow = LinearStep(0.01, 0.0001), LinearStep(0.02, 0.001)
    views = [
        view("fast", fast, num_waiting=40, waiting_prefill_tokens=400_000, num_running=200),
        view("slow", slow),
    ]
    assert router().route(REQ, views, 0.0).instance == "slow"


def test_objective_ttft_and_e2e_can_disagree() -> None:
    """A cheap-prefill / slow-decode instance wins on TTFT and loses on E2E."""
    prefill_fast = LinearStep(0.05, 0.00001)  # ttft 0.06 s, e2e ~5 s
    decode_fast = LinearStep(0.01, 0.001)  # ttft 1.01 s, e2e ~2.1 s
    views = [view("prefill-fast", prefill_fast), view("decode-fast", decode_fast)]
    assert router(objective="ttft").route(REQ, views, 0.0).instance == "prefill-fast"
    assert router(objective="e2e").route(REQ, views, 0.0).instance == "decode-fast"


def test_without_step_models_it_explores_then_learns_from_outcomes() -> None:
    """Unknown instances are tried first; after outcomes the observed faster one wins."""
    r = router()
    views = [view("a", None), view("b", None, num_outstanding=1)]
    first = r.route(REQ, views, 0.0)
    assert first.instance == "a"
    assert "exploring" in first.reason
    for k, (inst, e2e) in enumerate([("a", 9.0), ("b", 3.0)]):
        req = Request(10 + k, 0.0, "m", 1000, 50, max_tokens=100)
        r.route(req, [view(inst, None)], 0.0)
        r.observe(Outcome(req, inst, ttft_s=1.0, e2e_s=e2e, output_tokens=100, finished_at=e2e))
    assert r.route(REQ, [view("a", None), view("b", None)], 1.0).instance == "b"
    assert r.estimator.num_pending == 1  # the very first request never came back


def test_unhealthy_fast_instance_is_skipped() -> None:
    """An unhealthy instance is never chosen even when it is predicted fastest."""
    views = [view("fast", LinearStep(0.001, 0.0), healthy=False), view("ok", LinearStep(1.0, 0.1))]
    assert router().route(REQ, views, 0.0).instance == "ok"


def test_seeded_runs_are_identical() -> None:
    """Two routers fed the same requests and outcomes make the same decisions."""
    views = [view(f"i{k}", None, num_outstanding=k % 2) for k in range(4)]

    def run() -> list[str | None]:
        r, out = router(), []
        for k in range(20):
            req = Request(k, float(k), "m", 100 + k, 10, max_tokens=20)
            d = r.route(req, views, float(k))
            out.append(d.instance)
            if d.instance is not None:
                r.observe(Outcome(req, d.instance, 0.1 * (k % 3 + 1), 1.0 + k % 4, 10, k + 1.0))
        return out

    assert run() == run()
    assert len(set(run())) > 1


@pytest.mark.parametrize("name", ["recent-window", "linear"])
def test_learned_predictor_is_chosen_by_name(name: str) -> None:
    """latency_predictor accepts a registered name."""
    r = router(latency_predictor=name)
    assert type(r.estimator.latency).__name__ in ("RecentWindow", "LinearLatency")


def test_roofline_models_send_work_to_the_faster_accelerator() -> None:
    """With catalog roofline models, an idle H100 beats an idle L4 for the same model."""
    from sincere.catalog import get_accelerator, get_model
    from sincere.perf.base import Deployment
    from sincere.perf.roofline import Roofline

    model = get_model("llama-3-8b")
    views = [
        view("l4", Roofline(Deployment(model, get_accelerator("L4")))),
        view("h100", Roofline(Deployment(model, get_accelerator("H100-SXM")))),
    ]
    assert router().route(REQ, views, 0.0).instance == "h100"
    busy_h100 = view(
        "h100",
        Roofline(Deployment(model, get_accelerator("H100-SXM"))),
        num_waiting=64,
        waiting_prefill_tokens=2_000_000,
    )
    assert router().route(REQ, [views[0], busy_h100], 0.0).instance == "l4"


def _choose_by_options(r: LatencyOptimalRouter, request: Request, views: list[InstanceView]) -> Any:
    """The choice written out plainly (every candidate's estimate, then ``min`` over
    (candidate, estimate) pairs): what ``choose`` must answer."""
    expected = r.estimator.length.predict(request)
    ests = [p.estimate for p in r.estimator.estimates(views, [
        context_of(request, v, expected, 0.0) for v in views
    ])]  # fmt: skip
    options = list(zip(views, ests, strict=True))
    unknown = [o for o in options if o[1] is None]
    if unknown:
        return min(unknown, key=lambda o: o[0].num_outstanding)[0].id, None

    def value(est: Any) -> float:
        return float(est.e2e_s if r.objective == "e2e" else est.ttft_s)

    best = min(options, key=lambda o: (value(o[1]), o[0].num_outstanding))
    return best[0].id, tuple((v.id, value(e)) for v, e in options)


@pytest.mark.parametrize("objective", ["e2e", "ttft"])
def test_choice_and_estimates_equal_the_plain_minimum_with_ties(objective: str) -> None:
    """Random fleets with shared step models and repeated loads (many equal predictions),
    some instances without a step model: the chosen instance and the estimates reported
    are those of the plain minimum over the candidates, first one on ties; the point
    estimates are those ``estimates`` gives."""
    rng = np.random.default_rng(5)
    models: list[StepTimeBase | None] = [LinearStep(0.01, 0.0001), LinearStep(0.02, 0.00005), None]
    for trial in range(200):
        r = router(objective=objective)
        views = [
            view(
                f"i{k}", models[int(rng.integers(3 if trial % 2 else 2))],
                num_running=int(rng.integers(3)), num_waiting=int(rng.integers(2)),
                waiting_prefill_tokens=int(rng.integers(2)) * 500,
                running_remaining_tokens=10, running_ctx_tokens=100,
                num_outstanding=int(rng.integers(3)),
            )
            for k in range(int(rng.integers(2, 12)))
        ]  # fmt: skip
        request = Request(trial, 0.0, "m", int(rng.integers(1, 3)) * 400, 50, max_tokens=100)
        ctxs = [context_of(request, v, 100.0, 0.0) for v in views]
        assert r.estimator.point_estimates(views, ctxs) == [
            p.estimate for p in r.estimator.estimates(views, ctxs)
        ]
        instance, estimates = _choose_by_options(r, request, views)
        decision = r.choose(request, views, 0.0)
        assert decision.instance == instance
        if estimates is not None:
            assert decision.estimates == estimates


@pytest.mark.parametrize("objective", ["e2e", "ttft"])
def test_roofline_fleets_choose_as_the_plain_minimum(objective: str) -> None:
    """Fleets of shared rooflines (predicted by the router's pass over the fleet), a linear
    model, instances without a step model or with their engine load unknown, and repeated
    loads (ties): the chosen instance, the estimates reported, the reason's note and the
    prediction kept for the outcome are the plain computation's, view objects reused
    between requests or not."""
    from sincere.catalog import get_accelerator, get_model
    from sincere.perf.base import Deployment
    from sincere.perf.roofline import Roofline

    rng = np.random.default_rng(11)
    llama = get_model("llama-3-8b")
    models: list[StepTimeBase | None] = [
        Roofline(Deployment(llama, get_accelerator("A100-80GB"))),
        Roofline(Deployment(llama, get_accelerator("H100-SXM"), tp=2)),
        LinearStep(0.02, 0.00005),
        None,
    ]
    r = router(objective=objective)
    pool: list[InstanceView] = []
    for trial in range(300):
        views = [
            pool[k] if k < len(pool) and rng.random() < 0.5 else view(
                f"i{k}", models[int(rng.integers(4 if trial % 3 == 0 else 2))],
                num_running=None if rng.random() < 0.05 else int(rng.integers(3)) * 60,
                num_waiting=int(rng.integers(2)), waiting_prefill_tokens=int(rng.integers(2)) * 500,
                running_remaining_tokens=10, running_ctx_tokens=int(rng.integers(2)) * 9000,
                num_outstanding=int(rng.integers(3)), max_num_seqs=int(rng.choice([64, 128])),
            )
            for k in range(int(rng.integers(2, 12)))
        ]  # fmt: skip
        pool = views
        request = Request(trial, 0.0, "m", int(rng.integers(1, 3)) * 400, 50, max_tokens=100)
        instance, estimates = _choose_by_options(r, request, views)
        decision = r.choose(request, views, 0.0)
        assert decision.instance == instance
        if estimates is not None:
            assert decision.estimates == estimates
        assert decision.reason.endswith(r.estimator.unused_step_models(views))
        chosen = next(v for v in views if v.id == instance)
        ctx = context_of(request, chosen, 100.0, 0.0)
        assert r.estimator._pending[request.id].estimate == r.estimator.estimate(chosen, ctx)
        assert r.estimator._pending[request.id].ctx == ctx
