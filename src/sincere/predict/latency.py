"""Per-instance latency predictors: TTFT and end-to-end latency of a request.

Two sources of a prediction, as in the reference router's serving phase:

* :func:`step_model_latency` -- analytic, from the instance's queue state and its
  step-time model (:class:`~sincere.perf.base.StepTimeModel`): the queued prompts and
  ours are prefilled in one iteration beside the running decodes (TTFT), then the
  expected output tokens are decoded at the batch size the instance will run
  (E2E). When the batch is full the request first waits for the running sequences'
  mean remaining decode. Optimistic under chunked prefill of long queues; exact for
  an idle instance.
* learned from finished requests, per instance, when no step model is known:
  :class:`RecentWindow` (EWMA of TTFT and time per output token, scaled by the
  current load relative to the load those samples saw) and :class:`LinearLatency`
  (least squares on a sliding window: TTFT on prompt tokens and queue, time per
  output token on outstanding requests) -- a cheap stand-in for the reference's
  gradient-boosted baseline.

The reference's LSTM over the recent request history is ``lstm``: a trained model
file (:class:`~sincere.predict.lstm.LstmLatency`, served in NumPy). Any class with
``predict(instance, ctx)`` and ``observe(instance, ctx, ...)`` registered in
:data:`LATENCY_PREDICTORS` works.
All predictors are clock-free: times come in :class:`RouteContext`.
"""

from __future__ import annotations

import math
import operator
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple, Protocol, runtime_checkable

import numpy as np
from pydantic import Field

from sincere.core.params import Params, params_from
from sincere.core.registry import Registry
from sincere.core.types import InstanceId, Seconds
from sincere.perf.base import StepTimeModel


class RouteContext(NamedTuple):
    """A request's size and one instance's load at routing time (the features).

    A NamedTuple rather than a frozen dataclass: routers build one per instance per
    request, and tuples are several times cheaper to create.
    """

    prompt_tokens: int  # tokens of the request's prompt
    expected_output_tokens: float  # from an output-length predictor
    num_running: int = 0  # sequences in the instance's running batch
    num_waiting: int = 0  # requests queued at the instance
    num_outstanding: int = 0  # routed and not finished
    waiting_prefill_tokens: int = 0  # prompt tokens queued at the instance
    running_remaining_tokens: int = 0  # decode tokens due for running sequences
    running_ctx_tokens: int = 0  # context of running sequences, summed
    max_num_seqs: int = 256  # the instance's batch limit
    routed_at: Seconds = 0.0  # when the decision was made


class LatencyEstimate(NamedTuple):
    """Predicted latencies of one request on one instance, seconds from routing."""

    ttft_s: Seconds  # time to first token
    e2e_s: Seconds  # time to last token
    output_tokens: float  # output tokens the prediction assumed

    @property
    def tpot_s(self) -> Seconds:
        """Predicted time per output token after the first."""
        steps = self.output_tokens - 1.0
        return (self.e2e_s - self.ttft_s) / steps if steps > 0 else 0.0


@runtime_checkable
class LatencyPredictor(Protocol):
    """Learns per-instance latencies from finished requests."""

    def predict(self, instance: InstanceId, ctx: RouteContext) -> LatencyEstimate | None:
        """Prediction for a request on ``instance``; ``None`` while it has too little data."""
        ...

    def observe(
        self,
        instance: InstanceId,
        ctx: RouteContext,
        ttft_s: Seconds,
        e2e_s: Seconds,
        output_tokens: int,
    ) -> None:
        """Learn from a request routed with ``ctx`` that finished with these latencies."""
        ...


def time_per_output_token(ttft_s: Seconds, e2e_s: Seconds, output_tokens: int) -> Seconds:
    """TPOT of a finished request: (E2E - TTFT) / (output tokens - 1); 0 for one token."""
    return (e2e_s - ttft_s) / (output_tokens - 1) if output_tokens > 1 else 0.0


def _slot_wait_s(model: StepTimeModel, ctx: RouteContext, num_ahead: int, total_ctx: int) -> float:
    """Time until a batch slot frees when ``num_ahead`` sequences fill the batch."""
    excess = num_ahead + 1 - ctx.max_num_seqs
    if excess <= 0:
        return 0.0
    rounds = math.ceil(excess / ctx.max_num_seqs)
    per_seq = ctx.running_remaining_tokens / ctx.num_running if ctx.num_running else 1.0
    steps = max(1, round(per_seq))
    return rounds * model.decode_steps_s(ctx.max_num_seqs, total_ctx, steps)


def step_model_latency(model: StepTimeModel, ctx: RouteContext) -> LatencyEstimate:
    """Analytic TTFT and E2E of a request on an instance (see the module docstring)."""
    p, w, n_wait = ctx.prompt_tokens, ctx.waiting_prefill_tokens, ctx.num_waiting
    mean_w = w / n_wait if n_wait else 0.0
    pairs = n_wait * mean_w * (mean_w + 1) / 2 + p * (p + 1) / 2
    prefill_s = model.iteration_s_fast(
        n_wait + 1, w + p, 0, pairs, ctx.num_running, ctx.running_ctx_tokens
    )
    num_ahead = ctx.num_running + n_wait
    total_ctx = ctx.running_ctx_tokens + w + p
    ttft = _slot_wait_s(model, ctx, num_ahead, total_ctx) + prefill_s
    num_seqs = min(num_ahead + 1, ctx.max_num_seqs)
    decode_ctx = round(total_ctx * num_seqs / (num_ahead + 1)) + num_seqs
    steps = max(0, round(ctx.expected_output_tokens) - 1)
    e2e = ttft + model.decode_steps_s(num_seqs, decode_ctx, steps)
    return LatencyEstimate(ttft, e2e, max(ctx.expected_output_tokens, 1.0))


def _warm(predictor: LatencyPredictor, records: Path | None) -> None:
    """Learn from ``records`` (:func:`~sincere.predict.evaluate.warm_start`) if given."""
    if records is not None:
        from sincere.predict.evaluate import warm_start

        warm_start(predictor, records)


class _Ewma:
    """Exponentially weighted means of TTFT, time per output token and load."""

    __slots__ = ("count", "load", "tpot_s", "ttft_s")

    def __init__(self) -> None:
        self.count = 0
        self.ttft_s = 0.0
        self.tpot_s = 0.0
        self.load = 0.0

    def add(self, alpha: float, ttft_s: float, tpot_s: float, load: float) -> None:
        a = 1.0 if self.count == 0 else alpha
        self.count += 1
        self.ttft_s += a * (ttft_s - self.ttft_s)
        self.tpot_s += a * (tpot_s - self.tpot_s)
        self.load += a * (load - self.load)


class RecentWindowParams(Params):
    """Parameters of ``recent-window``."""

    alpha: float = Field(0.2, gt=0, le=1, description="EWMA weight of the newest outcome")
    min_samples: int = Field(1, ge=1, description="outcomes of an instance before predicting")
    load_scaling: bool = Field(
        True, description="scale by (1 + outstanding now) / (1 + mean outstanding seen)"
    )
    warm_start: Path | None = Field(
        None,
        strict=False,
        description="records of an earlier run (requests.parquet or decision log) "
        "learned from when built; null: start empty",
    )


class RecentWindow:
    """EWMA of TTFT and time per output token per instance, load-scaled.

    A prediction scales the averages by ``(1 + outstanding now) / (1 + mean outstanding
    seen by the samples)`` when ``load_scaling`` is on, so a busier instance is
    predicted slower before its own outcomes say so.
    """

    def __init__(self, params: RecentWindowParams | None = None, **values: Any) -> None:
        p = params_from(RecentWindowParams, params, values, "latency predictor 'recent-window'")
        self.alpha = p.alpha
        self.min_samples = p.min_samples
        self.load_scaling = p.load_scaling
        self._stats: dict[InstanceId, _Ewma] = {}
        _warm(self, p.warm_start)

    def predict(self, instance: InstanceId, ctx: RouteContext) -> LatencyEstimate | None:
        """Scaled averages, or ``None`` before ``min_samples`` outcomes."""
        stat = self._stats.get(instance)
        if stat is None or stat.count < self.min_samples:
            return None
        scale = (1.0 + ctx.num_outstanding) / (1.0 + stat.load) if self.load_scaling else 1.0
        out = max(ctx.expected_output_tokens, 1.0)
        ttft = stat.ttft_s * scale
        return LatencyEstimate(ttft, ttft + (out - 1.0) * stat.tpot_s * scale, out)

    def observe(
        self,
        instance: InstanceId,
        ctx: RouteContext,
        ttft_s: Seconds,
        e2e_s: Seconds,
        output_tokens: int,
    ) -> None:
        """Fold one outcome into the instance's averages."""
        tpot = time_per_output_token(ttft_s, e2e_s, output_tokens)
        stat = self._stats.setdefault(instance, _Ewma())
        stat.add(self.alpha, ttft_s, tpot, float(ctx.num_outstanding))


def _ttft_features(ctx: RouteContext) -> list[float]:
    queue = float(ctx.waiting_prefill_tokens)
    return [1.0, float(ctx.prompt_tokens), float(ctx.num_waiting), queue]


def _tpot_features(ctx: RouteContext) -> list[float]:
    return [1.0, float(ctx.num_outstanding), float(ctx.num_running)]


class _Window:
    """A sliding window of (features, target) rows and the least-squares fit on it."""

    def __init__(self, size: int) -> None:
        self.rows: deque[tuple[list[float], float]] = deque(maxlen=size)
        self.coef: list[float] | None = None  # plain floats: a prediction is a short sum

    def fit(self, ridge: float) -> None:
        x = np.array([r[0] for r in self.rows])
        y = np.array([r[1] for r in self.rows])
        gram = x.T @ x + ridge * np.eye(x.shape[1])
        self.coef = [float(c) for c in np.linalg.solve(gram, x.T @ y)]

    def value(self, features: list[float]) -> float:
        assert self.coef is not None  # callers check fitted first
        return max(0.0, float(sum(map(operator.mul, self.coef, features))))


class LinearLatencyParams(Params):
    """Parameters of ``linear``."""

    window: int = Field(256, ge=1, description="outcomes per instance the fit uses (newest)")
    min_samples: int = Field(16, ge=1, description="outcomes of an instance before predicting")
    refit_every: int = Field(8, ge=1, description="outcomes between refits")
    ridge: float = Field(1e-6, ge=0, description="ridge penalty of the least squares")
    warm_start: Path | None = Field(
        None,
        strict=False,
        description="records of an earlier run (requests.parquet or decision log) "
        "learned from when built; null: start empty",
    )


class LinearLatency:
    """Ridge regression per instance on its last ``window`` outcomes, refit every ``refit_every``.

    TTFT ~ prompt tokens, queued requests and queued prompt tokens; time per output
    token ~ outstanding and running requests. E2E = TTFT + (out - 1) * TPOT.
    """

    def __init__(self, params: LinearLatencyParams | None = None, **values: Any) -> None:
        p = params_from(LinearLatencyParams, params, values, "latency predictor 'linear'")
        self.window, self.min_samples = p.window, p.min_samples
        self.refit_every, self.ridge = p.refit_every, p.ridge
        self._ttft: dict[InstanceId, _Window] = {}
        self._tpot: dict[InstanceId, _Window] = {}
        self._seen: dict[InstanceId, int] = {}
        _warm(self, p.warm_start)

    def predict(self, instance: InstanceId, ctx: RouteContext) -> LatencyEstimate | None:
        """The fitted prediction, or ``None`` before ``min_samples`` outcomes."""
        ttft_w, tpot_w = self._ttft.get(instance), self._tpot.get(instance)
        if ttft_w is None or ttft_w.coef is None:
            return None
        out = max(ctx.expected_output_tokens, 1.0)
        ttft = ttft_w.value(_ttft_features(ctx))
        tpot = tpot_w.value(_tpot_features(ctx)) if tpot_w and tpot_w.coef is not None else 0.0
        return LatencyEstimate(ttft, ttft + (out - 1.0) * tpot, out)

    def observe(
        self,
        instance: InstanceId,
        ctx: RouteContext,
        ttft_s: Seconds,
        e2e_s: Seconds,
        output_tokens: int,
    ) -> None:
        """Add one row; refit when due."""
        ttft_w = self._ttft.setdefault(instance, _Window(self.window))
        tpot_w = self._tpot.setdefault(instance, _Window(self.window))
        ttft_w.rows.append((_ttft_features(ctx), ttft_s))
        if output_tokens > 1:
            tpot = time_per_output_token(ttft_s, e2e_s, output_tokens)
            tpot_w.rows.append((_tpot_features(ctx), tpot))
        seen = self._seen[instance] = self._seen.get(instance, 0) + 1
        if seen >= self.min_samples and (seen - self.min_samples) % self.refit_every == 0:
            ttft_w.fit(self.ridge)
            if tpot_w.rows:
                tpot_w.fit(self.ridge)


LATENCY_PREDICTORS: Registry[Callable[..., LatencyPredictor]] = Registry("latency predictor")
LATENCY_PREDICTORS.register("recent-window", params=RecentWindowParams)(RecentWindow)
LATENCY_PREDICTORS.register("linear", params=LinearLatencyParams)(LinearLatency)


class LstmFileParams(Params):
    """Parameters of ``lstm``."""

    path: Path = Field(
        strict=False, description="model file written by `sincere predict train latency`"
    )
    min_history: int = Field(
        1, ge=0, description="finished requests of an instance before predicting"
    )
    refresh_on_observe: bool = Field(
        False,
        description="run the LSTM over an instance's window when its outcome arrives "
        "(decisions never run it); else batched at the next decision",
    )


@LATENCY_PREDICTORS.register("lstm", params=LstmFileParams)
def trained_lstm(params: LstmFileParams) -> LatencyPredictor:
    """A trained LSTM model file (:class:`~sincere.predict.lstm.LstmLatency`).

    Its module is imported only here, so routers that do not use it do not load it.
    """
    from sincere.predict.lstm import LstmLatency

    return LstmLatency.load(params.path, params.min_history, params.refresh_on_observe)


def make_latency_predictor(name: str, **params: Any) -> LatencyPredictor:
    """The registered latency predictor ``name`` built with ``params``."""
    return LATENCY_PREDICTORS.build(name, params)


def default_latency_predictor() -> LatencyPredictor:
    """Load-scaled EWMA over each instance's recent outcomes."""
    return RecentWindow()
