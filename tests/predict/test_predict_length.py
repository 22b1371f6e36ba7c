"""Output-length predictors: MaxTokens, HistoryMean, PromptBucket and their registry."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sincere.core import ConfigError, Request
from sincere.predict.length import (
    LENGTH_PREDICTORS,
    HistoryMean,
    HistoryMeanParams,
    MaxTokens,
    MaxTokensParams,
    PromptBucket,
    PromptBucketParams,
    default_length_predictor,
    make_length_predictor,
)


def req(prompt: int = 100, max_tokens: int | None = 500, model: str = "m") -> Request:
    return Request(0, 0.0, model, prompt, 10, max_tokens=max_tokens)


def test_max_tokens_uses_cap_or_default() -> None:
    """MaxTokens predicts the request's max_tokens, or its default when there is none."""
    pred = MaxTokens(MaxTokensParams(default_tokens=77))
    assert pred.predict(req(max_tokens=300)) == 300.0
    assert pred.predict(req(max_tokens=None)) == 77.0


def test_history_mean_learns_per_model_after_min_samples() -> None:
    """HistoryMean uses its prior until min_samples outcomes, then the model's own mean."""
    pred = HistoryMean(HistoryMeanParams(min_samples=3), prior=MaxTokens())
    for n in (10, 20):
        pred.observe(req(), n)
    assert pred.predict(req()) == 500.0  # still the prior
    pred.observe(req(), 30)
    assert pred.predict(req()) == pytest.approx(20.0)
    assert pred.predict(req(model="other")) == 500.0  # other model has no history


def test_history_mean_is_capped_by_max_tokens() -> None:
    """A learned mean above the request's max_tokens is cut to max_tokens."""
    pred = HistoryMean(HistoryMeanParams(min_samples=1))
    pred.observe(req(), 400)
    assert pred.predict(req(max_tokens=50)) == 50.0


def test_prompt_bucket_separates_prompt_lengths() -> None:
    """PromptBucket learns a different mean for short and long prompts of one model."""
    pred = PromptBucket(PromptBucketParams(edges=(100, 1000), min_samples=2))
    for _ in range(2):
        pred.observe(req(prompt=50), 20)
        pred.observe(req(prompt=2000), 300)
    assert pred.predict(req(prompt=60)) == pytest.approx(20.0)
    assert pred.predict(req(prompt=5000)) == pytest.approx(300.0)
    # the middle bucket has no data: falls back to the model's mean over all prompts
    assert pred.predict(req(prompt=500)) == pytest.approx(160.0)


@pytest.mark.parametrize(
    ("name", "params", "match"),
    [
        ("history-mean", {"min_samples": 0}, "parameter min_samples should be >= 1; got 0"),
        ("prompt-bucket", {"edges": [10, 10]}, r"parameter edges must increase; got \[10, 10\]"),
        ("max-tokens", {"default_tokens": 0}, "default_tokens should be >= 1"),
        ("max-tokens", {"default_tokens": 2.5}, "default_tokens should be a valid integer"),
    ],
)
def test_invalid_params_raise(name: str, params: dict[str, object], match: str) -> None:
    """Bad predictor parameters raise ConfigError naming the parameter and the value."""
    with pytest.raises(ConfigError, match=match):
        make_length_predictor(name, **params)


def test_registry_builds_by_name_and_lists_names_on_error() -> None:
    """make_length_predictor builds registered predictors and lists them for an unknown name."""
    assert isinstance(make_length_predictor("prompt-bucket", min_samples=4), PromptBucket)
    assert {"max-tokens", "history-mean", "prompt-bucket"} <= set(LENGTH_PREDICTORS.names())
    with pytest.raises(ConfigError, match="history-mean"):
        make_length_predictor("lstm")
    with pytest.raises(ConfigError, match="bogus"):
        make_length_predictor("max-tokens", bogus=1)


@given(
    outs=st.lists(st.integers(1, 5000), max_size=30),
    prompt=st.integers(1, 20000),
    cap=st.one_of(st.none(), st.integers(1, 4096)),
)
def test_predictions_stay_within_one_and_cap(outs: list[int], prompt: int, cap: int | None) -> None:
    """Every predictor's output lies in [1, max_tokens] whatever it has observed."""
    bucket = PromptBucket(PromptBucketParams(min_samples=1))
    for pred in (default_length_predictor(), bucket, MaxTokens()):
        for n in outs:
            pred.observe(req(prompt=prompt, max_tokens=cap), n)
        value = pred.predict(req(prompt=prompt, max_tokens=cap))
        assert value >= 1.0
        if cap is not None:
            assert value <= cap
