"""The acceptance rate that matches a measured accepted length
(sincere.perf.measured_acceptance), and the per-output-token decode the gateway's estimates
price speculation with (sincere.perf.speculation.PerTokenDecode), by hand on a linear
step model."""

from __future__ import annotations

import pytest
from tests.perf.test_perf_speculation import Linear

from sincere.core.errors import ConfigError
from sincere.perf.measured_acceptance import measured_params, uniform_rate
from sincere.perf.speculation import PerTokenDecode, SpeculationParams, SpeculativeDecode


def _model(rate: float, max_batch: int | None = None) -> PerTokenDecode:
    """n-gram drafts (free) of k = 3 at ``rate`` on the linear model of 4 layers."""
    params = SpeculationParams("ngram", 3, (rate,), max_batch=max_batch)
    return PerTokenDecode(SpeculativeDecode(Linear(), params, 4))


def test_one_token_of_one_sequence_costs_its_verify_pass_at_zero_acceptance() -> None:
    """p = 0: a step yields one token and costs the verify of 4 positions after 1000 tokens:
    4 tokens (4e-4) + 4 * 1000 + 10 pairs (4.01e-4) + 4 sampled heads (8e-5) + 1e-3 fixed."""
    assert _model(0.0).decode_steps_s(1, 1000, 1) == pytest.approx(1.881e-3)


def test_decode_time_falls_by_the_tokens_per_step() -> None:
    """The step's price does not depend on acceptance, so k = 3 at 0.5 (1.875 tokens a step)
    takes 1 / 1.875 of the time of p = 0 for the same tokens."""
    slow, fast = _model(0.0), _model(0.5)
    for seqs, ctx, steps in ((1, 1000, 1), (4, 8000, 100), (16, 64000, 37)):
        ratio = fast.decode_steps_s(seqs, ctx, steps) / slow.decode_steps_s(seqs, ctx, steps)
        assert ratio == pytest.approx(1 / 1.875)


def test_above_max_batch_decode_is_the_targets() -> None:
    """Speculation off above max_batch: the target's own plain decode steps."""
    model = _model(0.5, max_batch=2)
    assert model.decode_steps_s(3, 3000, 50) == Linear().decode_steps_s(3, 3000, 50)
    assert model.decode_steps_s(2, 2000, 50) < Linear().decode_steps_s(2, 2000, 50)


def test_uniform_rate_inverts_the_chain_sum() -> None:
    """p + p^2 + p^3 = 0.875 at p = 0.5; 0 and k are the ends; outside [0, k] is an error."""
    assert uniform_rate(3, 0.875) == pytest.approx(0.5, abs=1e-9)
    assert uniform_rate(1, 0.7) == pytest.approx(0.7, abs=1e-9)
    assert uniform_rate(3, 0.0) == pytest.approx(0.0, abs=1e-9)
    assert uniform_rate(3, 3.0) == pytest.approx(1.0, abs=1e-9)
    with pytest.raises(ConfigError, match="accepted tokens per draft"):
        uniform_rate(3, 3.5)


def test_measured_params_give_the_measured_tokens_per_step() -> None:
    """700 accepted tokens in 800 drafts of 3: 1.875 tokens a step, at p = 0.5."""
    declared = SpeculationParams("eagle", 3, (0.8,), max_batch=8)
    measured = measured_params(declared, 800, 700)
    assert measured.tokens_per_step() == pytest.approx(1.875)
    assert measured.acceptance[0] == pytest.approx(0.5, abs=1e-9)
    assert (measured.method, measured.max_batch, measured.num_draft_tokens) == ("eagle", 8, 3)
    assert "700 accepted tokens in 800 drafts" in measured.source
    with pytest.raises(ConfigError, match="at least one draft"):
        measured_params(declared, 0, 0)
