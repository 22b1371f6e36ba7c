"""Inferno's queueing analyzer of one inference replica (state-dependent M/M/1/K).

A replica runs at most ``N`` requests together (the max batch) and queues up to
``K - N`` more, ``K = N + q·N`` with ``q = 10`` in Inferno. With ``n`` requests in
service, a request takes ``T(n) = t0 + t1·n`` ms in total, so the service rate is
``μ(n) = n / T(n)`` for ``n ≤ N`` and ``μ(N)`` above. Both of Inferno's model
forms reduce to that affine form (docs/planning.md names the versions):

* the older form, separate prefill / decode parameters (``decodeParms``,
  ``prefillParms``): ``prefill(n) = γ + δ·in·n``, ``decode(n) = α + β·n``,
  ``T(n) = prefill(n) + (out − 1)·decode(n)``; metrics at the effective concurrency
  ``n* = (S − t0)/t1`` clipped to ``[0, N]``: ``TTFT = W + prefill(n*)``,
  ``ITL = decode(n*)``;
* the current form, one parameter set (``perfParms``: α, β, γ): an iteration with
  ``n`` requests takes ``it(n) = α + n·(β·c + γ·m)`` with ``c = (in + out)/(out + 1)``
  tokens computed and ``m = in + out/2`` tokens of context per request on average;
  ``prefill(n) = it(n) + (β + γ)·in``, ``decode(n) = it(n) + β + γ·m``,
  ``T(n) = prefill(n) + out·decode(n)``; metrics at the mean number in service ``L_s``:
  ``ITL = (S − prefill(L_s))/out`` and ``TTFT = W + prefill(L_s) + ITL``.

The balance equations ``p(n+1) = p(n)·λ/μ(n)`` are solved in log space: the states
up to ``N`` explicitly, the geometric tail above ``N`` in closed form, so one
evaluation costs O(N) whatever ``K`` is, and :class:`ReplicaBank` evaluates many
replicas (padded to a common ``N``) at once. From ``p``: throughput
``X = λ(1 − p_K)``, response time ``R = L/X``, service time ``S = L_s/X``,
wait ``W = R − S``. Times are ms, rates requests per ms.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from sincere.core.errors import ConfigError

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

DEFAULT_QUEUE_FACTOR = 10
"""Inferno's queue limit: ``K = N + 10·N``."""

_SMALL_R = 1e-7  # |log ρ| below which the geometric tail uses its series form


@dataclass(frozen=True, slots=True)
class DecodePrefillParams:
    """Inferno's first model variant: separate decode and prefill parameters (ms)."""

    alpha: float  # decode time per token at batch 0, ms
    beta: float  # extra decode time per token per request in the batch, ms
    gamma: float  # prefill time at batch 0, ms
    delta: float  # extra prefill time per prompt token per request in the batch, ms


@dataclass(frozen=True, slots=True)
class PerfParams:
    """Inferno's current form (``perfParms``): one iteration-time parameter set.

    An iteration takes ``α + β·(tokens computed) + γ·(tokens of context read)`` ms
    summed over the requests in it (the ``inferno-chunked`` step model's form).
    """

    alpha: float  # fixed time of one iteration, ms
    beta: float  # time per token computed, ms
    gamma: float  # time per token of context read (per request in the batch), ms


ModelParams = DecodePrefillParams | PerfParams


@dataclass(frozen=True, slots=True)
class AffineReplica:
    """One replica reduced to affine forms in the number of requests in service ``n``.

    ``T(n) = t0 + t1·n`` is a request's total service time, ``prefill(n) = p0 + p1·n``
    its time to first token once started, ``decode(n) = d0 + d1·n`` the gap between
    its tokens; all ms.
    """

    t0: float
    t1: float
    p0: float
    p1: float
    d0: float
    d1: float
    max_batch: int  # N, most requests served together
    queue_factor: int = DEFAULT_QUEUE_FACTOR  # K = N + queue_factor·N
    decodes: float = 0.0  # 0: the older form's metrics at n*; > 0: the current form's, out

    def __post_init__(self) -> None:
        if self.max_batch < 1:
            raise ConfigError("max batch must be >= 1", value=self.max_batch)
        if self.decodes < 0:
            raise ConfigError("decodes must be >= 0", value=self.decodes)
        if self.queue_factor < 0:
            raise ConfigError("queue factor must be >= 0", value=self.queue_factor)
        if self.t1 <= 0.0 or self.t0 < 0.0:
            raise ConfigError(
                "service time T(n) = t0 + t1·n needs t0 >= 0, t1 > 0", value=(self.t0, self.t1)
            )

    @property
    def max_rate(self) -> float:
        """``μ(N)``: the most requests per ms the replica completes."""
        return self.max_batch / (self.t0 + self.t1 * self.max_batch)


def affine_replica(
    params: ModelParams,
    in_tokens: float,
    out_tokens: float,
    max_batch: int,
    queue_factor: int = DEFAULT_QUEUE_FACTOR,
) -> AffineReplica:
    """Reduce either model variant, for requests of the given mean lengths, to affine forms."""
    if in_tokens < 0 or out_tokens < 1:
        raise ConfigError("need in_tokens >= 0 and out_tokens >= 1", value=(in_tokens, out_tokens))
    if isinstance(params, DecodePrefillParams):
        a, b, g, d = params.alpha, params.beta, params.gamma, params.delta
        steps = out_tokens - 1.0
        return AffineReplica(
            g + a * steps,
            d * in_tokens + b * steps,
            g,
            d * in_tokens,
            a,
            b,
            max_batch,
            queue_factor,
        )
    return _current_form(params, in_tokens, out_tokens, max_batch, queue_factor)


def _current_form(
    params: PerfParams, in_tokens: float, out_tokens: float, max_batch: int, queue_factor: int
) -> AffineReplica:
    """Inferno's ``perfParms`` form in affine terms (module docstring)."""
    a, b, g = params.alpha, params.beta, params.gamma
    computed = (in_tokens + out_tokens) / (out_tokens + 1.0)
    context = in_tokens + out_tokens / 2.0
    slope = b * computed + g * context  # it(n) = α + slope·n
    p0 = a + (b + g) * in_tokens if in_tokens > 0 else 0.0
    p1 = slope if in_tokens > 0 else 0.0
    d0 = a + b + g * context
    return AffineReplica(
        p0 + out_tokens * d0,
        p1 + out_tokens * slope,
        p0,
        p1,
        d0,
        slope,
        max_batch,
        queue_factor,
        out_tokens,
    )


@dataclass(frozen=True, slots=True)
class QueueMetrics:
    """The analyzer's answer for one replica at one arrival rate (ms, requests/ms)."""

    arrival_rate: float  # λ offered, requests per ms
    throughput: float  # X = λ(1 − p_K), requests per ms
    mean_in_system: float  # L, requests queued or in service
    mean_in_service: float  # E[min(n, N)]
    response_ms: float  # R = L / X
    service_ms: float  # S = E[in service] / X
    wait_ms: float  # W = R − S
    concurrency: float  # n* (older form) or L_s (current form): where metrics are read
    ttft_ms: float  # W + prefill(n*), or W + prefill(L_s) + ITL
    itl_ms: float  # decode(n*), or (S − prefill(L_s)) / out
    block_prob: float  # p_K, share of arrivals turned away
    utilization: float  # 1 − p_0


class ReplicaBank:
    """Many replicas, padded to a common max batch, evaluated together with numpy."""

    def __init__(self, replicas: Sequence[AffineReplica]) -> None:
        if not replicas:
            raise ConfigError("a replica bank needs at least one replica")
        col = np.array(
            [
                [r.t0, r.t1, r.p0, r.p1, r.d0, r.d1, r.max_batch, r.queue_factor, r.decodes]
                for r in replicas
            ],
            dtype=np.float64,
        )
        self.t0, self.t1, self.p0, self.p1, self.d0, self.d1 = (col[:, i] for i in range(6))
        self.decodes: FloatArray = col[:, 8]
        self.max_batch: IntArray = col[:, 6].astype(np.int64)
        self.tail_len: FloatArray = col[:, 7] * col[:, 6]  # K − N
        n_max = int(self.max_batch.max())
        k = np.arange(1, n_max + 1, dtype=np.float64)
        # log of 1/μ(k) = log(T(k)/k), zero beyond each replica's N
        log_inv_mu = np.log((self.t0[:, None] + self.t1[:, None] * k) / k)
        self._valid = np.arange(n_max + 1)[None, :] <= self.max_batch[:, None]
        log_inv_mu = np.where(self._valid[:, 1:], log_inv_mu, 0.0)
        self._cum = np.concatenate(
            [np.zeros((len(replicas), 1)), np.cumsum(log_inv_mu, axis=1)], axis=1
        )
        self._n = np.arange(n_max + 1, dtype=np.float64)
        n_f = self.max_batch.astype(np.float64)
        self.max_rate: FloatArray = n_f / (self.t0 + self.t1 * n_f)

    def __len__(self) -> int:
        return len(self.t0)

    def evaluate(self, rates: FloatArray) -> dict[str, FloatArray]:
        """Every metric of :class:`QueueMetrics` for replica ``i`` at ``rates[i]`` (req/ms)."""
        lam = np.maximum(np.asarray(rates, dtype=np.float64), 1e-12)
        log_lam = np.log(lam)
        lw = self._n[None, :] * log_lam[:, None] + self._cum
        lw = np.where(self._valid, lw, -np.inf)
        n_f = self.max_batch.astype(np.float64)
        lw_n = lw[np.arange(len(lam)), self.max_batch]
        r = np.clip(log_lam - np.log(self.max_rate), -700.0, 700.0)  # log ρ of the tail
        m = self.tail_len
        log_tail = np.where(m > 0, lw_n + _log_geom_sum(r, m), -np.inf)
        top = np.maximum(lw.max(axis=1), log_tail)
        head = np.exp(lw - top[:, None])
        tail = np.exp(log_tail - top)
        z = head.sum(axis=1) + tail
        p_head = head / z[:, None]
        p_tail = tail / z
        p_k = np.exp(lw_n + m * r - top) / z  # state K = N + m
        busy_head = (p_head * self._n[None, :]).sum(axis=1)
        in_system = busy_head + p_tail * (n_f + _geom_mean_index(r, m))
        in_service = busy_head + p_tail * n_f
        return _derive(self, lam, in_system, in_service, p_k, p_head[:, 0])


def _derive(
    bank: ReplicaBank,
    lam: FloatArray,
    in_system: FloatArray,
    in_service: FloatArray,
    p_k: FloatArray,
    p_0: FloatArray,
) -> dict[str, FloatArray]:
    """The response, service and wait times, n*, TTFT and ITL from the state averages."""
    x = lam * (1.0 - p_k)
    x_safe = np.maximum(x, 1e-300)
    resp = in_system / x_safe
    serv = in_service / x_safe
    wait = np.maximum(resp - serv, 0.0)
    n_star = np.clip((serv - bank.t0) / bank.t1, 0.0, bank.max_batch.astype(np.float64))
    current = bank.decodes > 0
    # the current form reads the metrics at the mean number in service, the older at n*
    conc = np.where(current, in_service, n_star)
    prefill = bank.p0 + bank.p1 * conc
    itl = np.where(
        current, (serv - prefill) / np.where(current, bank.decodes, 1.0), bank.d0 + bank.d1 * conc
    )
    ttft = wait + prefill + np.where(current, itl, 0.0)
    return {
        "arrival_rate": lam,
        "throughput": x,
        "mean_in_system": in_system,
        "mean_in_service": in_service,
        "response_ms": resp,
        "service_ms": serv,
        "wait_ms": wait,
        "concurrency": conc,
        "ttft_ms": ttft,
        "itl_ms": itl,
        "block_prob": p_k,
        "utilization": 1.0 - p_0,
    }


def _log_geom_sum(r: FloatArray, m: FloatArray) -> FloatArray:
    """``log Σ_{j=1..m} e^{j·r}``, stable for any sign of ``r`` and large ``m``."""
    small = np.abs(r) < _SMALL_R
    rs = np.where(small, 1.0, r)  # placeholder avoids 0/0 in the unused branch
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        neg = rs + np.log(-np.expm1(m * rs)) - np.log(-np.expm1(rs))
        pos = rs + m * rs + np.log(-np.expm1(-m * rs)) - np.log(np.expm1(rs))
    exact = np.where(rs < 0, neg, pos)
    series = np.log(np.maximum(m, 1.0)) + r * (m + 1.0) / 2.0
    return np.where(small, series, exact)


def _geom_mean_index(r: FloatArray, m: FloatArray) -> FloatArray:
    """Mean of ``j`` on ``1..m`` with weights ``e^{j·r}`` (the truncated geometric)."""
    small = np.abs(r) < _SMALL_R
    rs = np.where(small, 1.0, r)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        exact = -1.0 / np.expm1(rs) - m / np.expm1(-m * rs)
    series = (m + 1.0) / 2.0 + r * (m * m - 1.0) / 12.0
    return np.where(m > 0, np.where(small, series, exact), 0.0)


def analyze(replica: AffineReplica, rate_per_ms: float) -> QueueMetrics:
    """The analyzer for one replica at arrival rate ``rate_per_ms`` (requests per ms)."""
    if not rate_per_ms >= 0.0 or not math.isfinite(rate_per_ms):
        raise ConfigError("arrival rate must be a finite number >= 0", value=rate_per_ms)
    out = ReplicaBank([replica]).evaluate(np.array([rate_per_ms]))
    return QueueMetrics(**{k: float(v[0]) for k, v in out.items()})
