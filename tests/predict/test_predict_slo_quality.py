"""SLO probability under a lognormal error model, and quality from relative accuracy."""

from __future__ import annotations

import pytest

from sincere.catalog.specs import ModelArch
from sincere.core import ConfigError, Tier
from sincere.predict.latency import LatencyEstimate
from sincere.predict.quality import model_quality, relative_accuracy
from sincere.predict.slo import LognormalError, normal_cdf, slo_probability


def test_prob_within_is_half_at_the_prediction_and_monotone() -> None:
    """P(actual <= budget) is 0.5 when budget = prediction and grows with the budget."""
    err = LognormalError(rel_std=0.3)
    assert err.prob_within(2.0, 2.0) == pytest.approx(0.5)
    assert err.prob_within(2.0, 3.0) > err.prob_within(2.0, 2.5) > 0.5
    assert err.prob_within(2.0, 0.0) == 0.0
    # ln(1.5)/0.3 standard deviations above the prediction
    assert err.prob_within(2.0, 3.0) == pytest.approx(normal_cdf(0.4054651 / 0.3), rel=1e-6)


def test_learning_a_slow_bias_lowers_the_probability() -> None:
    """After outcomes twice the prediction, meeting a budget near the prediction is unlikely."""
    err = LognormalError(rel_std=0.3, alpha=0.2)
    before = err.prob_within(1.0, 1.5)
    for _ in range(50):
        err.observe(1.0, 2.0)
    assert err.bias == pytest.approx(0.6931, rel=1e-2)
    assert err.prob_within(1.0, 1.5) < before / 2


def test_slo_probability_multiplies_targets_and_spends_elapsed_time() -> None:
    """A tier's targets multiply; time since arrival comes off the TTFT and TTLT budgets."""
    err = LognormalError(rel_std=0.3)
    est = LatencyEstimate(ttft_s=1.0, e2e_s=10.0, output_tokens=10.0)
    both = Tier("t", ttft_s=1.0, ttlt_s=10.0)
    assert slo_probability(both, est, err) == pytest.approx(0.25)
    assert slo_probability(Tier("none"), est, err) == 1.0
    later = slo_probability(Tier("t", ttlt_s=12.0), est, err, elapsed_s=2.0)
    assert later == pytest.approx(0.5)


def test_rel_std_must_be_positive() -> None:
    """A non-positive relative spread is refused, naming rel_std."""
    with pytest.raises(ConfigError, match="rel_std"):
        LognormalError(rel_std=0.0)


def arch(accuracy: dict[str, float]) -> ModelArch:
    return ModelArch(
        "toy", "toy", 7.0, 32, 4096, 11008, 32, 32, 32000, 4096, relative_accuracy=accuracy
    )


def test_quality_scales_base_score_by_relative_accuracy() -> None:
    """model_quality = base score x relative accuracy / 100 of the catalog's setting key."""
    model = arch({"fp16": 100.0, "int8": 99.0, "int4": 87.1, "int4+kv-int8": 85.0})
    assert model_quality(model, "int4", base_score=0.8) == pytest.approx(0.8 * 0.871)
    assert relative_accuracy(model, "int4", kv_precision="int8") == pytest.approx(0.85)
    assert relative_accuracy(model, "bf16") == 1.0  # unmeasured 16-bit: the reference


def test_missing_setting_lists_the_measured_ones() -> None:
    """A quantised setting absent from the table raises, naming its key and the known ones."""
    with pytest.raises(ConfigError, match=r"int4.*allowed: fp16, int8"):
        relative_accuracy(arch({"fp16": 100.0, "int8": 99.0}), "int4")


def test_shipped_catalog_model_has_quantised_quality() -> None:
    """A shipped catalog model with MaverIQ's figures gets a quality below 1 in int4."""
    from sincere.catalog import default_catalog

    models = [m for m in default_catalog().models() if "int4" in m.relative_accuracy]
    assert models, "the shipped catalog should carry MaverIQ's int4 figures"
    assert 0.5 < model_quality(models[0], "int4") < 1.0
    assert model_quality(models[0], "bf16") == 1.0


def test_distribution_quantiles_and_point_estimate() -> None:
    """Medians are exp(mu); the 90 % quantile is 1.2816 sigma above in log space."""
    from sincere.predict.slo import LatencyDistribution

    dist = LatencyDistribution(ttft_mu=-2.0, ttft_sigma=0.5, tpot_mu=-4.0, tpot_sigma=0.2)
    assert dist.ttft_quantile(0.5) == pytest.approx(0.1353352832)
    assert dist.ttft_quantile(0.9) == pytest.approx(0.1353352832 * 1.8979527, rel=1e-6)
    est = dist.estimate(11.0)
    assert est.e2e_s == pytest.approx(est.ttft_s + 10 * 0.0183156389)


def test_distribution_slo_probability_matches_sampling() -> None:
    """P(meet TTFT and TTLT and TBT) agrees with a Monte Carlo draw of the same model."""
    import numpy as np

    from sincere.predict.slo import LatencyDistribution, distribution_slo_probability

    dist = LatencyDistribution(ttft_mu=-1.5, ttft_sigma=0.6, tpot_mu=-3.5, tpot_sigma=0.3)
    tier = Tier("t", ttft_s=0.3, ttlt_s=4.0, tbt_s=0.04)
    rng = np.random.default_rng(0)
    ttft = np.exp(rng.normal(dist.ttft_mu, dist.ttft_sigma, 400_000))
    tpot = np.exp(rng.normal(dist.tpot_mu, dist.tpot_sigma, 400_000))
    e2e = ttft + 99 * tpot
    sampled = np.mean((ttft <= 0.3) & (tpot <= 0.04)) * np.mean(e2e <= 4.0)
    assert distribution_slo_probability(tier, dist, 100.0) == pytest.approx(sampled, abs=0.02)
    assert distribution_slo_probability(Tier("none"), dist, 100.0) == 1.0
    late = distribution_slo_probability(tier, dist, 100.0, elapsed_s=0.3)
    assert late == 0.0  # the TTFT budget is spent
