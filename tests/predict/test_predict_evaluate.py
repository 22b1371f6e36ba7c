"""Offline evaluation replays records causally and scores every predictor alike."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from sincere.core.request import Tier
from sincere.predict.evaluate import (
    bucket_quantiles,
    evaluate_latency,
    met_tier,
    replay_latency,
    score_latency,
)
from sincere.predict.latency import LatencyEstimate, LinearLatency, RecentWindow, RouteContext
from sincere.predict.lstm_train import LstmParams, train_lstm
from sincere.predict.records import Lengths, Served, read_served


class _Spy:
    """Predicts a constant and logs every call, to check what it was allowed to see."""

    def __init__(self) -> None:
        self.log: list[tuple[str, float, float]] = []  # (call, routed_at, finish)

    def predict(self, instance: str, ctx: RouteContext) -> LatencyEstimate | None:
        self.log.append(("predict", ctx.routed_at, math.nan))
        return LatencyEstimate(0.1, 1.0, ctx.expected_output_tokens)

    def observe(self, instance: str, ctx: RouteContext, ttft: float, e2e: float, n: int) -> None:
        self.log.append(("observe", ctx.routed_at, ctx.routed_at + e2e))


def test_replay_never_shows_a_predictor_the_future(hetero_runs: list[Path]) -> None:
    """Before predicting an arrival, exactly the outcomes finished before it were observed."""
    run = read_served(hetero_runs[1] / "requests.parquet")
    spy = _Spy()
    replay_latency(run, {"spy": spy})
    finishes = np.sort(run.finished_at)
    seen: list[float] = []
    for call, routed_at, finish in spy.log:
        if call == "observe":
            seen.append(finish)
            continue
        assert max(seen, default=-math.inf) < routed_at
        assert len(seen) == np.searchsorted(finishes, routed_at, side="left")
    assert sum(c == "predict" for c, _, _ in spy.log) == len(run)


def test_scores_on_a_hand_made_run() -> None:
    """MAE, MAPE and coverage of a constant predictor are what they should be."""
    run = _tiny_run(ttft=[0.1, 0.2, 0.4], tpot=[0.01, 0.02, 0.04])
    tracks = replay_latency(run, {"spy": _Spy()}, {"t": Tier("t", ttft_s=0.15)})
    (score,) = score_latency([(run, tracks)], warmup=0.0, tiers={"t": Tier("t", ttft_s=0.15)})
    assert score.num_scored == 3
    assert score.ttft_mae_s == pytest.approx((0.0 + 0.1 + 0.3) / 3)
    assert score.ttft_mape == pytest.approx((0.0 + 0.5 + 0.75) / 3)
    # constant 0.1 s TTFT, E2E 1 s over 10 tokens: TPOT 0.1 s
    assert score.tpot_mae_s == pytest.approx((0.09 + 0.08 + 0.06) / 3)
    assert score.slo_brier is not None and 0.0 <= score.slo_brier <= 1.0


def test_learned_model_beats_the_online_baselines_on_a_held_out_run(
    hetero_runs: list[Path],
) -> None:
    """Trained on one run, the LSTM predicts another run's TTFT better than the EWMA."""
    train, test = (read_served(f / "requests.parquet") for f in hetero_runs)
    model = train_lstm([train], LstmParams(epochs=4, hidden=8, head=8))[0]
    scores = {
        s.name: s
        for s in evaluate_latency(
            {
                "ewma": RecentWindow,
                "ridge": LinearLatency,
                "lstm": lambda: type(model)(model.weights, model.length),
            },
            [test],
        )
    }
    assert scores["lstm"].ttft_mae_s < scores["ewma"].ttft_mae_s
    assert scores["lstm"].tpot_mae_s < scores["ewma"].tpot_mae_s
    assert len({s.num_scored for s in scores.values()}) == 1  # the same requests


def test_met_tier_checks_every_target() -> None:
    """A request meets its tier only when TTFT, E2E and TPOT are all within target."""
    run = _tiny_run(ttft=[0.1, 0.2, 0.4], tpot=[0.01, 0.02, 0.04])
    met = met_tier(run, {"t": Tier("t", ttft_s=0.3, tbt_s=0.03)})
    assert met.tolist() == [True, True, False]


def test_bucket_quantiles_fall_back_to_the_model_then_to_all() -> None:
    """A bucket with too few rows uses its model's rows; an unknown model uses all rows."""
    n = 40
    train = Lengths(np.array([10] * n), np.arange(1, n + 1), ("a",) * n, ("t",) * n, (None,) * n)
    test = Lengths(np.array([10, 5000, 10]), np.array([1, 1, 1]), ("a", "a", "b"), ("t",) * 3,
                   (None,) * 3)  # fmt: skip
    q = bucket_quantiles(train, test, (0.5,), (64, 1024))
    assert q[:, 0].tolist() == [20.5, 20.5, 20.5]


def _tiny_run(ttft: list[float], tpot: list[float]) -> Served:
    n = len(ttft)
    arrival = np.arange(n, dtype=np.float64) * 10.0
    out = np.full(n, 10, dtype=np.int64)
    t, p = np.array(ttft), np.array(tpot)
    zeros = np.zeros(n, dtype=np.int64)
    return Served(
        instance=zeros, instances=("a",), arrival_at=arrival, finished_at=arrival + t + 9 * p,
        ttft_s=t, tpot_s=p, prompt_tokens=np.full(n, 100), output_tokens=out, running=zeros,
        waiting=zeros, waiting_tokens=zeros, outstanding=zeros, tier=("t",) * n, slo_met=None,
        num_derived=0, source="hand-made",
    )  # fmt: skip
