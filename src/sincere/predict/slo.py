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
"""

from __future__ import annotations

import math

from sincere.core.errors import ConfigError
from sincere.core.request import Tier
from sincere.core.types import Seconds
from sincere.predict.latency import LatencyEstimate


def normal_cdf(z: float) -> float:
    """Standard normal distribution function."""
    return 0.5 * (1.0 + math.erf(z / math.sqrt(2.0)))


class LognormalError:
    """Multiplicative error of a latency predictor, learned online (see module docstring)."""

    def __init__(self, rel_std: float = 0.3, alpha: float = 0.05, learn: bool = True) -> None:
        if not (rel_std > 0 and math.isfinite(rel_std)):
            raise ConfigError("rel_std must be > 0", value=rel_std, allowed="a finite float > 0")
        if not 0.0 < alpha <= 1.0:
            raise ConfigError("alpha must be in (0, 1]", value=alpha, allowed="0 < alpha <= 1")
        self.alpha = alpha
        self.learn = learn
        self.bias = 0.0
        self.variance = rel_std * rel_std
        self.num_observed = 0

    @property
    def sigma(self) -> float:
        """Current standard deviation of the log error."""
        return math.sqrt(self.variance)

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
