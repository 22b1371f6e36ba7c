"""Offline evaluation of predictors on held-out records, as a router would have used them.

Latency. A run's served requests are replayed in time order: at each arrival every
predictor predicts the request on the instance it went to, from the load the records
say that instance had (:class:`~sincere.predict.latency.RouteContext`); each finish is
then observed, in finish order, by every predictor (a finish at the very time of an
arrival comes after it). Online baselines thus learn during the held-out run exactly as
they would serving it; a trained model only extends its per-instance windows. Output
lengths are the true ones, so the error is the latency predictor's own. The first
``warmup`` share of arrivals is not scored (every predictor starts cold), nor are
requests some predictor had no prediction for; every predictor is scored on the same
requests.

A point predictor's spread comes from a :class:`~sincere.predict.slo.LognormalError`
learned online from its TTFT and E2E errors, as the cost-optimal router does; a
predictor with a ``distribution`` method gives its own. Scores: mean absolute error and
mean absolute percentage error of TTFT and of time per output token (requests of two
or more tokens), the share of TTFTs inside the predicted 10-90 % interval (0.8 when
calibrated), and, with tiers, the Brier score of the predicted probability of meeting
the tier (mean squared difference to the 0/1 outcome; lower is better).

Output length. Online baselines observe the training rows, then predict each held-out
row before observing it; a trained model predicts. Scores: MAE and MAPE of the point
prediction routers use, and, for those giving quantiles, the 10-90 % coverage.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from sincere.core.errors import ConfigError
from sincere.core.request import Request, Tier
from sincere.core.types import InstanceId
from sincere.perf.base import StepTimeModel
from sincere.predict.features import finish_order
from sincere.predict.latency import (
    LatencyEstimate,
    LatencyPredictor,
    RouteContext,
    step_model_latency,
)
from sincere.predict.length import (
    DEFAULT_BUCKET_EDGES,
    HistoryMean,
    OutputLengthPredictor,
    PromptBucket,
)
from sincere.predict.quantile_length import LEVELS, QuantileLength
from sincere.predict.records import Lengths, Served, read_served
from sincere.predict.slo import (
    LatencyDistribution,
    LognormalError,
    distribution_slo_probability,
    slo_probability,
)

FloatArray = npt.NDArray[np.float64]
Z90 = 1.2815515655446004
"""The standard normal's 90 % quantile (the 10-90 % interval is +-Z90 sigma)."""


@runtime_checkable
class DistributionPredictor(Protocol):
    """A latency predictor that gives a lognormal distribution per request."""

    def distribution(self, instance: InstanceId, ctx: RouteContext) -> LatencyDistribution | None:
        """Distribution of the request's TTFT and TPOT on ``instance``."""
        ...


class StepModelLatency:
    """The analytic step-model prediction as a latency predictor (nothing to learn)."""

    def __init__(
        self, models: Mapping[str, StepTimeModel], max_num_seqs: Mapping[str, int]
    ) -> None:
        self.models = dict(models)
        self.max_num_seqs = dict(max_num_seqs)

    def predict(self, instance: InstanceId, ctx: RouteContext) -> LatencyEstimate | None:
        """:func:`~sincere.predict.latency.step_model_latency` on the instance's model."""
        model = self.models.get(instance)
        if model is None:
            return None
        limit = self.max_num_seqs.get(instance, ctx.max_num_seqs)
        return step_model_latency(model, ctx._replace(max_num_seqs=limit))

    def observe(
        self, instance: InstanceId, ctx: RouteContext, ttft_s: float, e2e_s: float, out: int
    ) -> None:
        """Nothing: the model is analytic."""


@dataclass(eq=False)
class _Track:
    """One predictor's predictions over a replay."""

    ttft: FloatArray
    tpot: FloatArray
    low: FloatArray  # TTFT 10 % quantile
    high: FloatArray  # TTFT 90 % quantile
    slo: FloatArray  # probability of meeting the tier
    error: LognormalError
    estimates: list[LatencyEstimate | None]

    @classmethod
    def empty(cls, n: int) -> _Track:
        nan = np.full(n, np.nan)
        return cls(
            nan, nan.copy(), nan.copy(), nan.copy(), nan.copy(), LognormalError(), [None] * n
        )


def _context(run: Served, i: int) -> RouteContext:
    return RouteContext(
        prompt_tokens=int(run.prompt_tokens[i]),
        expected_output_tokens=float(run.output_tokens[i]),
        num_running=int(run.running[i]),
        num_waiting=int(run.waiting[i]),
        num_outstanding=int(run.outstanding[i]),
        waiting_prefill_tokens=int(run.waiting_tokens[i]),
        routed_at=float(run.arrival_at[i]),
    )


def warm_start(predictor: LatencyPredictor, path: str | Path) -> int:
    """Feed the served requests of the records at ``path`` (a ``requests.parquet`` or a
    decision log) to ``predictor.observe``, in finish order; how many.

    What a train phase recorded thus warms a predictor up before it serves: instance
    names must be those of the cluster it will serve.
    """
    run = read_served(path)
    done = finish_order(run).tolist()
    for j in done:
        ttft, e2e = float(run.ttft_s[j]), float(run.finished_at[j] - run.arrival_at[j])
        instance = run.instances[run.instance[j]]
        predictor.observe(instance, _context(run, j), ttft, e2e, int(run.output_tokens[j]))
    return len(done)


def replay_latency(
    run: Served,
    predictors: Mapping[str, LatencyPredictor],
    tiers: Mapping[str, Tier] | None = None,
) -> dict[str, _Track]:
    """Every predictor's prediction of every request of ``run`` (module docstring)."""
    n = len(run)
    tracks = {name: _Track.empty(n) for name in predictors}
    spread = {name: isinstance(p, DistributionPredictor) for name, p in predictors.items()}
    done = finish_order(run).tolist()
    next_done = 0
    for i in range(n):
        t = float(run.arrival_at[i])
        while next_done < n and run.finished_at[done[next_done]] < t:
            _observe(run, done[next_done], predictors, tracks)
            next_done += 1
        ctx = _context(run, i)
        tier = None if tiers is None else tiers.get(run.tier[i])
        for name, predictor in predictors.items():
            instance = run.instances[run.instance[i]]
            _predict(instance, ctx, predictor, spread[name], tracks[name], i, tier)
    return tracks


def _predict(
    instance: str,
    ctx: RouteContext,
    predictor: LatencyPredictor,
    own_spread: bool,
    track: _Track,
    i: int,
    tier: Tier | None,
) -> None:
    out = ctx.expected_output_tokens
    if own_spread:
        assert isinstance(predictor, DistributionPredictor)
        dist = predictor.distribution(instance, ctx)
        if dist is None:
            return
        est = dist.estimate(out)
        track.low[i], track.high[i] = dist.ttft_quantile(0.1), dist.ttft_quantile(0.9)
        if tier is not None:
            track.slo[i] = distribution_slo_probability(tier, dist, out)
    else:
        found = predictor.predict(instance, ctx)
        if found is None:
            return
        est = found
        spread, shift = Z90 * track.error.sigma, math.exp(track.error.bias)
        track.low[i] = est.ttft_s * shift * math.exp(-spread)
        track.high[i] = est.ttft_s * shift * math.exp(spread)
        if tier is not None:
            track.slo[i] = slo_probability(tier, est, track.error)
    track.ttft[i], track.tpot[i] = est.ttft_s, est.tpot_s
    track.estimates[i] = est


def _observe(
    run: Served, j: int, predictors: Mapping[str, LatencyPredictor], tracks: dict[str, _Track]
) -> None:
    instance = run.instances[run.instance[j]]
    ctx = _context(run, j)
    ttft = float(run.ttft_s[j])
    e2e = float(run.finished_at[j] - run.arrival_at[j])
    out = int(run.output_tokens[j])
    for name, predictor in predictors.items():
        predictor.observe(instance, ctx, ttft, e2e, out)
        est = tracks[name].estimates[j]
        if est is not None:
            tracks[name].error.observe(est.ttft_s, ttft)
            tracks[name].error.observe(est.e2e_s, e2e)


@dataclass(frozen=True)
class LatencyScores:
    """One latency predictor's errors on the scored requests."""

    name: str
    num_scored: int
    ttft_mae_s: float
    ttft_mape: float  # a fraction (0.25 = 25 %)
    tpot_mae_s: float
    tpot_mape: float
    ttft_coverage: float  # share of TTFTs inside the predicted 10-90 % interval
    slo_brier: float | None  # None without tiers


def met_tier(run: Served, tiers: Mapping[str, Tier]) -> npt.NDArray[np.bool_]:
    """Whether each served request met every target of its tier (unknown tiers: met)."""
    e2e = run.finished_at - run.arrival_at
    met = np.ones(len(run), dtype=np.bool_)
    for name, tier in tiers.items():
        sel = np.array([t == name for t in run.tier], dtype=np.bool_)
        if tier.ttft_s is not None:
            met[sel] &= run.ttft_s[sel] <= tier.ttft_s
        if tier.ttlt_s is not None:
            met[sel] &= e2e[sel] <= tier.ttlt_s
        if tier.tbt_s is not None:
            met[sel] &= run.tpot_s[sel] <= tier.tbt_s
    return met


def score_latency(
    replays: Sequence[tuple[Served, Mapping[str, _Track]]],
    warmup: float = 0.1,
    tiers: Mapping[str, Tier] | None = None,
) -> list[LatencyScores]:
    """Scores over every run's requests that all tracks predicted, after each run's ``warmup``."""
    names = list(replays[0][1]) if replays else []
    pooled: dict[str, list[list[FloatArray]]] = {name: [[] for _ in range(8)] for name in names}
    for run, tracks in replays:
        scored = np.arange(len(run)) >= int(len(run) * warmup)
        for track in tracks.values():
            scored &= np.isfinite(track.ttft)
        multi = (run.output_tokens > 1) & (run.tpot_s > 0)
        met = np.zeros(len(run)) if tiers is None else met_tier(run, tiers).astype(np.float64)
        for name in names:
            tr = tracks[name]
            inside = (run.ttft_s >= tr.low) & (run.ttft_s <= tr.high)
            columns = (tr.ttft, run.ttft_s, tr.tpot, run.tpot_s, inside, tr.slo, met, multi)
            for k, column in enumerate(columns):
                pooled[name][k].append(np.asarray(column[scored], dtype=np.float64))
    return [
        _scores(name, [np.concatenate(c) for c in cols], tiers is not None)
        for name, cols in pooled.items()
    ]


def _scores(name: str, cols: list[FloatArray], with_tiers: bool) -> LatencyScores:
    ttft, ttft_true, tpot, tpot_true, inside, slo, met, multi = cols
    m = multi > 0
    return LatencyScores(
        name=name,
        num_scored=len(ttft),
        ttft_mae_s=_mae(ttft, ttft_true),
        ttft_mape=_mape(ttft, ttft_true),
        tpot_mae_s=_mae(tpot[m], tpot_true[m]),
        tpot_mape=_mape(tpot[m], tpot_true[m]),
        ttft_coverage=float(inside.mean()) if len(inside) else math.nan,
        slo_brier=float(np.mean((slo - met) ** 2)) if with_tiers and len(slo) else None,
    )


def evaluate_latency(
    predictors: Mapping[str, Callable[[], LatencyPredictor]],
    runs: Sequence[Served],
    tiers: Mapping[str, Tier] | None = None,
    warmup: float = 0.1,
) -> list[LatencyScores]:
    """Replay every run with fresh predictors from ``predictors`` and score them together."""
    replays = []
    for run in runs:
        fresh = {name: make() for name, make in predictors.items()}
        replays.append((run, replay_latency(run, fresh, tiers)))
    return score_latency(replays, warmup, tiers)


def _mae(pred: FloatArray, actual: FloatArray) -> float:
    return float(np.mean(np.abs(pred - actual))) if len(actual) else math.nan


def _mape(pred: FloatArray, actual: FloatArray) -> float:
    ok = actual > 0
    return float(np.mean(np.abs(pred[ok] - actual[ok]) / actual[ok])) if ok.any() else math.nan


@dataclass(frozen=True)
class LengthScores:
    """One output-length predictor's errors on the held-out rows."""

    name: str
    num_scored: int
    mae_tokens: float
    mape: float  # a fraction
    coverage: float | None  # share inside the predicted 10-90 % interval; None: no quantiles


def requests_of(data: Lengths) -> list[Request]:
    """The rows as requests (arrival 0; the true length is carried but predictors ignore it)."""
    tiers: dict[str, Tier] = {}
    return [
        Request(
            id=k,
            arrival_at=0.0,
            model=data.model[k],
            prompt_tokens=int(data.prompt_tokens[k]),
            output_tokens=int(data.output_tokens[k]),
            prompt=data.prompt[k],
            tier=tiers.setdefault(data.tier[k], Tier(data.tier[k])),
        )
        for k in range(len(data))
    ]


def score_online_length(
    name: str, predictor: OutputLengthPredictor, train: Lengths, test: Lengths
) -> LengthScores:
    """An online baseline: observe ``train``, then predict-then-observe each ``test`` row."""
    for req in requests_of(train):
        predictor.observe(req, req.output_tokens)
    pred = np.empty(len(test))
    for k, req in enumerate(requests_of(test)):
        pred[k] = predictor.predict(req)
        predictor.observe(req, req.output_tokens)
    y = test.output_tokens.astype(np.float64)
    return LengthScores(name, len(test), _mae(pred, y), _mape(pred, y), None)


def score_quantile_length(
    name: str, point: FloatArray, quantiles: FloatArray, test: Lengths
) -> LengthScores:
    """A distribution predictor: its point predictions and (rows x 5) quantiles on ``test``."""
    y = test.output_tokens.astype(np.float64)
    inside = (y >= quantiles[:, 0]) & (y <= quantiles[:, -1])
    return LengthScores(name, len(test), _mae(point, y), _mape(point, y), float(inside.mean()))


def bucket_quantiles(
    train: Lengths, test: Lengths, levels: Sequence[float], edges: Sequence[int]
) -> FloatArray:
    """Empirical quantiles of the training rows' lengths per (model, prompt bucket).

    A bucket with fewer than 8 rows falls back to the model's rows, then to all rows.
    The offline, distribution-giving form of the prompt-bucket baseline.
    """
    if len(train) == 0:
        raise ConfigError("the baselines need training rows", allowed="warmup > 0")
    y = train.output_tokens.astype(np.float64)
    b_train = np.searchsorted(np.asarray(edges), train.prompt_tokens, side="right")
    b_test = np.searchsorted(np.asarray(edges), test.prompt_tokens, side="right")
    groups: dict[tuple[str, int], list[int]] = {}
    for k, (m, b) in enumerate(zip(train.model, b_train.tolist(), strict=True)):
        groups.setdefault((m, b), []).append(k)
        groups.setdefault((m, -1), []).append(k)
    overall = np.quantile(y, levels)
    out = np.empty((len(test), len(levels)))
    cache: dict[tuple[str, int], FloatArray] = {}
    for k, (m, b) in enumerate(zip(test.model, b_test.tolist(), strict=True)):
        key = (m, b) if len(groups.get((m, b), ())) >= 8 else (m, -1)
        if key not in cache:
            rows = groups.get(key, [])
            cache[key] = np.quantile(y[rows], levels) if len(rows) >= 8 else overall
        out[k] = cache[key]
    return out


def evaluate_length(model: QuantileLength, train: Lengths, test: Lengths) -> list[LengthScores]:
    """``model`` against the history-mean, prompt-bucket and bucket-quantile baselines.

    The online baselines learn from ``train`` and then from each ``test`` row after
    predicting it; the bucket quantiles come from ``train``.
    """
    q = np.exp(model.log_quantiles(test))
    buckets = bucket_quantiles(train, test, LEVELS, DEFAULT_BUCKET_EDGES)
    return [
        score_online_length("history-mean", HistoryMean(), train, test),
        score_online_length("prompt-bucket", PromptBucket(), train, test),
        score_quantile_length("bucket quantiles", buckets.mean(axis=1), buckets, test),
        score_quantile_length("quantile model", q.mean(axis=1), q, test),
    ]
