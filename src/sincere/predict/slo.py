"""The probability that a request meets its tier's SLO, given a latency prediction.

The cost-optimal router of the reference's successor keeps only instances whose
probability of meeting the SLO is at least 0.7. A prediction is a point estimate,
so we put a multiplicative (lognormal) error model around it:

    actual = predicted * exp(e),   e ~ Normal(bias, sigma^2)

``sigma`` is the relative spread of the predictor (0.3 ~ 30 %), ``bias`` its
systematic log error; both start at a prior and are learned online as an EWMA of
observed ``ln(actual / predicted)``. Then

    P(actual <= budget) = Phi((ln budget - ln predicted - bias) / sigma).

Lognormal keeps latencies positive and makes the error relative, which matches how
both the analytic and learned predictors err (a fixed fraction of the prediction).
For a tier, the targets it sets (TTFT, TTLT, TBT) are treated as independent and the
probabilities multiply; time already spent since arrival is taken off the TTFT and
TTLT budgets.

A learned predictor that gives a distribution per request (:class:`LatencyDistribution`:
lognormal TTFT and TPOT with their own spread) is turned into the same probability by
:func:`distribution_slo_probability`, with E2E's distribution matched by moments.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

from pydantic import Field

from sincere.core.params import Params, params_from
from sincere.core.request import Tier
from sincere.core.types import Seconds
from sincere.predict.latency import LatencyEstimate


def normal_cdf(z: float) -> float:
    """Standard normal distribution function."""
    return 0.5 * (1.0 + math.erf(z / math.sqrt(2.0)))


class LognormalErrorParams(Params):
    """Parameters of the lognormal error model."""

    rel_std: float = Field(0.3, gt=0, description="prior relative spread (sigma of the log error)")
    alpha: float = Field(0.05, gt=0, le=1, description="EWMA weight of the newest log error")
    learn: bool = Field(True, description="learn bias and spread from outcomes")


class LognormalError:
    """Multiplicative error of a latency predictor, learned online (see module docstring)."""

    def __init__(self, params: LognormalErrorParams | None = None, **values: Any) -> None:
        p = params_from(LognormalErrorParams, params, values, "lognormal error model")
        self.alpha = p.alpha
        self.learn = p.learn
        self.bias = 0.0
        self.variance = p.rel_std * p.rel_std
        self.sigma = p.rel_std  # current standard deviation of the log error
        self.num_observed = 0

    def prob_within(self, predicted_s: Seconds, budget_s: Seconds) -> float:
        """P(actual <= budget_s) when the prediction is ``predicted_s``."""
        if budget_s <= 0.0:
            return 0.0
        if predicted_s <= 0.0:
            return 1.0
        z = (math.log(budget_s) - math.log(predicted_s) - self.bias) / self.sigma
        return normal_cdf(z)

    def observe(self, predicted_s: Seconds, actual_s: Seconds) -> None:
        """Fold one (prediction, outcome) pair into bias and variance."""
        if not self.learn or predicted_s <= 0.0 or actual_s <= 0.0:
            return
        r = math.log(actual_s / predicted_s)
        self.num_observed += 1
        self.variance += self.alpha * ((r - self.bias) ** 2 - self.variance)
        self.variance = max(self.variance, 1e-6)
        self.sigma = math.sqrt(self.variance)
        self.bias += self.alpha * (r - self.bias)


def slo_probability(
    tier: Tier, estimate: LatencyEstimate, error: LognormalError, elapsed_s: Seconds = 0.0
) -> float:
    """Probability of meeting every target of ``tier`` (1.0 when it sets none)."""
    prob = 1.0
    if tier.ttft_s is not None:
        prob *= error.prob_within(estimate.ttft_s, tier.ttft_s - elapsed_s)
    if tier.ttlt_s is not None:
        prob *= error.prob_within(estimate.e2e_s, tier.ttlt_s - elapsed_s)
    if tier.tbt_s is not None and estimate.output_tokens > 1.0:
        prob *= error.prob_within(estimate.tpot_s, tier.tbt_s)
    return prob


class LatencyDistribution(NamedTuple):
    """Predicted lognormal TTFT and time per output token of one request on one instance.

    ``ln(TTFT / 1 s) ~ Normal(ttft_mu, ttft_sigma^2)``, likewise TPOT; a learned
    predictor gives each request its own spread (:class:`~sincere.predict.lstm.LstmLatency`),
    where :class:`LognormalError` keeps one spread per predictor.
    """

    ttft_mu: float
    ttft_sigma: float
    tpot_mu: float
    tpot_sigma: float

    def ttft_quantile(self, q: float) -> Seconds:
        """TTFT not exceeded with probability ``q``."""
        return math.exp(self.ttft_mu + self.ttft_sigma * normal_quantile(q))

    def estimate(self, output_tokens: float) -> LatencyEstimate:
        """Medians as a point estimate: E2E = TTFT + (output - 1) * TPOT."""
        out = max(output_tokens, 1.0)
        ttft = math.exp(self.ttft_mu)
        return LatencyEstimate(ttft, ttft + (out - 1.0) * math.exp(self.tpot_mu), out)

    def e2e_lognormal(self, output_tokens: float) -> tuple[float, float]:
        """``(mu, sigma)`` of a lognormal matching E2E's mean and variance.

        E2E = TTFT + (output - 1) * TPOT with the two independent; the sum of
        lognormals is approximated by one with the same first two moments
        (Fenton-Wilkinson).
        """
        k = max(output_tokens - 1.0, 0.0)
        terms = [(self.ttft_mu, self.ttft_sigma, 1.0), (self.tpot_mu, self.tpot_sigma, k)]
        mean = sum(w * math.exp(mu + s * s / 2) for mu, s, w in terms)
        var = sum(w * w * math.expm1(s * s) * math.exp(2 * mu + s * s) for mu, s, w in terms)
        sigma2 = math.log1p(var / (mean * mean))
        return math.log(mean) - sigma2 / 2, math.sqrt(sigma2)


def normal_quantile(q: float) -> float:
    """The standard normal's ``q``-quantile (``statistics`` is imported on first use)."""
    from statistics import NormalDist

    return NormalDist().inv_cdf(q)


def lognormal_within(mu: float, sigma: float, budget_s: Seconds) -> float:
    """P(X <= budget_s) for ``ln X ~ Normal(mu, sigma^2)``."""
    if budget_s <= 0.0:
        return 0.0
    return normal_cdf((math.log(budget_s) - mu) / max(sigma, 1e-9))


def distribution_slo_probability(
    tier: Tier, dist: LatencyDistribution, output_tokens: float, elapsed_s: Seconds = 0.0
) -> float:
    """Probability of meeting every target of ``tier`` under ``dist`` (1.0 when it sets none).

    As :func:`slo_probability` (targets independent, time since arrival taken off the
    TTFT and TTLT budgets), with the predictor's own spread per request; the successor
    router keeps instances where this is at least 0.7.
    """
    prob = 1.0
    if tier.ttft_s is not None:
        prob *= lognormal_within(dist.ttft_mu, dist.ttft_sigma, tier.ttft_s - elapsed_s)
    if tier.ttlt_s is not None:
        mu, sigma = dist.e2e_lognormal(output_tokens)
        prob *= lognormal_within(mu, sigma, tier.ttlt_s - elapsed_s)
    if tier.tbt_s is not None and output_tokens > 1.0:
        prob *= lognormal_within(dist.tpot_mu, dist.tpot_sigma, tier.tbt_s)
    return prob
