"""Length distributions, the shipped Azure tables and the joint samplers; mixes and tiers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy.stats import spearmanr

from sincere.core.errors import ConfigError
from sincere.workload.lengths import (
    CopulaLengths,
    Empirical,
    Fixed,
    LogNormal,
    PairedLengths,
    Uniform,
    length_sources,
    load_length_table,
    make_lengths,
)
from sincere.workload.mixes import ModelMix, TierMix, inferno_classes, niyama_tiers, tier_preset
from sincere.workload.traces import read_trace

RNG = np.random.default_rng


def test_fixed_and_uniform() -> None:
    """Fixed repeats its value; uniform stays within its inclusive bounds and reaches both."""
    assert set(Fixed(7).sample(RNG(0), 100)) == {7}
    x = Uniform(3, 6).sample(RNG(0), 5000)
    assert set(x) == {3, 4, 5, 6}
    with pytest.raises(ConfigError, match="low <= high"):
        Uniform(5, 2)


def test_lognormal_by_median_and_by_mean() -> None:
    """Log-normal by (median, sigma) has that median; by (mean, std) that mean and std."""
    x = LogNormal(median=500, sigma=0.8).sample(RNG(1), 200_000)
    assert np.median(x) == pytest.approx(500, rel=0.02)
    y = LogNormal(mean=300, std=150).sample(RNG(2), 200_000)
    assert y.mean() == pytest.approx(300, rel=0.02)
    assert y.std() == pytest.approx(150, rel=0.04)
    with pytest.raises(ConfigError, match="either median and sigma, or mean and std"):
        LogNormal(median=5.0, std=1.0)


def test_caps_and_floor() -> None:
    """max_tokens clips draws and every draw is at least 1."""
    x = LogNormal(median=2000, sigma=2.0, max_tokens=4096).sample(RNG(3), 50_000)
    assert x.max() == 4096 and x.min() >= 1
    assert (x == 4096).mean() > 0.1


def test_empirical_from_samples_and_quantiles() -> None:
    """Empirical resamples only observed values, or inverts a quantile table."""
    x = Empirical(samples=(10, 20, 30)).sample(RNG(4), 1000)
    assert set(x) == {10, 20, 30}
    q = Empirical(quantiles=(0.0, 100.0, 1000.0)).sample(RNG(5), 100_000)
    assert np.median(q) == pytest.approx(100, rel=0.03)
    assert q.max() <= 1000
    with pytest.raises(ConfigError, match="exactly one of samples, quantiles, source"):
        Empirical(samples=(1,), quantiles=(1.0, 2.0))
    with pytest.raises(ConfigError, match="non-decreasing"):
        Empirical(quantiles=(5.0, 1.0))


def test_shipped_tables_are_listed_and_attributed() -> None:
    """Both Azure 2023 tables ship with 1001 quantiles and their CC-BY attribution."""
    assert {"azure-conv-2023", "azure-code-2023"} <= set(length_sources())
    table = load_length_table("azure-conv-2023")
    assert len(table.prompt) == 1001 and len(table.output) == 1001
    assert "CC-BY 4.0" in table.attribution and "Splitwise" in table.attribution
    with pytest.raises(ConfigError, match=r"unknown length source.*azure-code-2023"):
        load_length_table("azure-conv-2099")
    e = make_lengths("empirical", source="azure-code-2023", column="output", max_tokens=100)
    assert e.sample(RNG(0), 1000).max() <= 100


@pytest.mark.parametrize("service", ["conv", "code"])
def test_copula_table_matches_the_trace(shared_data: Path, service: str) -> None:
    """The shipped copula reproduces the trace's marginal percentiles and rank correlation."""
    trace = read_trace(shared_data / "traces" / f"AzureLLMInferenceTrace_{service}.csv")
    p, o = load_length_table(f"azure-{service}-2023").joint().sample(RNG(6), 100_000)
    for got, want in ((p, trace.prompt_tokens), (o, trace.output_tokens)):
        np.testing.assert_allclose(
            np.percentile(got, [10, 50, 90, 99]), np.percentile(want, [10, 50, 90, 99]), rtol=0.06
        )
    rho_trace = spearmanr(trace.prompt_tokens, trace.output_tokens)[0]
    rho = spearmanr(p[:30_000], o[:30_000])[0]
    assert rho == pytest.approx(rho_trace, abs=0.03)


def test_copula_keeps_strong_dependence() -> None:
    """A fitted copula keeps a strong positive dependence that independent draws would lose."""
    rng = RNG(7)
    a = rng.integers(1, 5000, 20_000)
    b = a // 4 + rng.integers(1, 50, 20_000)
    p, o = CopulaLengths.fit(a, b).sample(RNG(8), 20_000)
    assert spearmanr(p, o)[0] > 0.9
    capped = CopulaLengths.fit(a, b).sample(RNG(8), 10)
    assert capped[0].dtype == np.int64


def test_paired_lengths_keep_pairs_and_replay() -> None:
    """Paired resampling returns only real pairs; replay takes them in order, capped."""
    pl = PairedLengths(np.array([100, 2000, 30]), np.array([5, 60, 700]))
    p, o = pl.sample(RNG(9), 500)
    assert set(zip(p.tolist(), o.tolist(), strict=True)) <= {(100, 5), (2000, 60), (30, 700)}
    rp = PairedLengths(np.array([100, 2000, 30]), np.array([5, 60, 700]), 1024, 64, replay=True)
    p, o = rp.sample(RNG(0), 4)
    assert p.tolist() == [100, 1024, 30, 100] and o.tolist() == [5, 60, 64, 5]


def test_model_mix_validation_and_frequencies() -> None:
    """A model mix must sum to 1 and draws models in proportion."""
    mix = ModelMix({"granite-7b": 0.1, "gemma-7b": 0.3, "llama3-8b": 0.6})
    counts = np.bincount(mix.sample(RNG(10), 100_000), minlength=3) / 100_000
    np.testing.assert_allclose(counts, [0.1, 0.3, 0.6], atol=0.01)
    with pytest.raises(ConfigError, match=r"sum to 1; got 0.9"):
        ModelMix({"a": 0.5, "b": 0.4})
    with pytest.raises(ConfigError, match=">= 0"):
        ModelMix({"a": 1.5, "b": -0.5})


def test_tier_presets() -> None:
    """Niyama, Inferno and SINCERE presets carry the published targets."""
    n = niyama_tiers()
    assert [t.ttft_s for t in n] == [6.0, None, None]
    assert [t.ttlt_s for t in n] == [None, 600.0, 1800.0]
    assert [t.tbt_s for t in n] == [0.1, 0.4, 0.4]
    premium, bronze, free = inferno_classes()
    assert (premium.ttft_s, premium.tbt_s, premium.priority) == (1.0, 0.08, 1)
    assert (bronze.ttft_s, free.tbt_s) == (2.0, 0.32)
    assert tier_preset("sincere-60").tiers[0].ttlt_s == 60.0
    with pytest.raises(ConfigError, match=r"unknown tier preset.*niyama"):
        tier_preset("platinum")


def test_tier_mix_weights() -> None:
    """Tier draws are uniform by default and follow weights when given."""
    uniform = np.bincount(tier_preset("niyama").sample(RNG(11), 60_000)) / 60_000
    np.testing.assert_allclose(uniform, [1 / 3] * 3, atol=0.01)
    mix = TierMix(inferno_classes(), (2.0, 1.0, 1.0))
    got = np.bincount(mix.sample(RNG(12), 60_000)) / 60_000
    np.testing.assert_allclose(got, [0.5, 0.25, 0.25], atol=0.01)
    with pytest.raises(ConfigError, match="expected 3 values"):
        TierMix(inferno_classes(), (1.0, 1.0))
