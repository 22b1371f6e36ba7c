"""The quantile output-length model: learns from prompt text and size, serves in NumPy."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from sincere.core.errors import ConfigError
from sincere.core.request import Request, Tier
from sincere.policy.routers import make_router
from sincere.predict.evaluate import evaluate_length
from sincere.predict.length import make_length_predictor
from sincere.predict.quantile_length import (
    LEVELS,
    LengthParams,
    QuantileLength,
    hashed_features,
)
from sincere.predict.records import Lengths


def synthetic(n: int, seed: int) -> Lengths:
    """Prompts asking for a 'summary' get ~20 tokens, for an 'essay' ~400; noise lognormal."""
    rng = np.random.default_rng(seed)
    essay = rng.random(n) < 0.5
    words = np.where(essay, "write an essay about", "give a short summary of")
    prompts = tuple(f"{w} topic {k}" for k, w in enumerate(words))
    out = np.where(essay, 400.0, 20.0) * np.exp(rng.normal(0.0, 0.3, n))
    return Lengths(
        prompt_tokens=rng.integers(5, 50, n),
        output_tokens=np.maximum(out.round(), 1).astype(np.int64),
        model=("m",) * n,
        tier=("default",) * n,
        prompt=prompts,
    )


@pytest.fixture(scope="module")
def trained() -> QuantileLength:
    return QuantileLength.train(synthetic(3000, 0), LengthParams(hash_bits=10, epochs=15))[0]


def test_text_features_beat_the_baselines(trained: QuantileLength) -> None:
    """With the answer length in the words, the model's error is far below history-mean's."""
    scores = {s.name: s for s in evaluate_length(trained, synthetic(3000, 0), synthetic(500, 1))}
    model, mean = scores["quantile model"], scores["history-mean"]
    assert model.mae_tokens < 0.4 * mean.mae_tokens
    assert model.coverage is not None and 0.7 < model.coverage < 0.9
    assert scores["bucket quantiles"].coverage is not None


def test_quantiles_are_sorted_and_predict_respects_max_tokens(trained: QuantileLength) -> None:
    """Quantiles never cross; the point prediction is their mean, capped by max_tokens."""
    req = Request(0, 0.0, "m", 20, 1, prompt="write an essay about topic 9")
    q = trained.quantiles(req)
    assert len(q) == len(LEVELS) and list(q) == sorted(q)
    assert 200 < q[2] < 800
    assert trained.predict(req) == pytest.approx(sum(q) / len(q))
    capped = Request(0, 0.0, "m", 20, 1, max_tokens=50, prompt="write an essay about topic 9")
    assert trained.predict(capped) == 50.0


def test_serving_one_request_equals_the_batch_path(trained: QuantileLength) -> None:
    """quantiles(request) gives log_quantiles() of the same row."""
    data = synthetic(20, 5)
    batch = np.exp(trained.log_quantiles(data))
    for k in range(len(data)):
        req = Request(k, 0.0, "m", int(data.prompt_tokens[k]), 1, prompt=data.prompt[k])
        np.testing.assert_allclose(trained.quantiles(req), batch[k], rtol=1e-12)


def test_saved_model_loads_by_path_and_by_registry(trained: QuantileLength, tmp_path: Path) -> None:
    """A saved file predicts the same after loading: directly, as a registered predictor, and
    as the predictor a router's config names."""
    path = trained.save(tmp_path / "len.npz", {}, {})
    req = Request(0, 0.0, "m", 20, 1, tier=Tier("t"), prompt="give a short summary of x")
    assert QuantileLength.load(path).predict(req) == trained.predict(req)
    assert make_length_predictor("quantile", path=path).predict(req) == trained.predict(req)
    router = make_router(
        "price-optimal",
        np.random.default_rng(0),
        length_predictor={"name": "quantile", "params": {"path": str(path)}},
    )
    assert router.length.predict(req) == trained.predict(req)  # type: ignore[attr-defined]


def test_hashing_is_the_same_in_every_process() -> None:
    """Feature slots come from CRC-32, not Python's salted hash: a new process agrees."""
    here = hashed_features(100, "m", "t", "hello world", 14)
    code = (
        "from sincere.predict.quantile_length import hashed_features as h;"
        "print(sorted(h(100, 'm', 't', 'hello world', 14).items()))"
    )
    there = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert there.strip() == str(sorted(here.items()))


def test_training_is_deterministic() -> None:
    """Same data and seed, same weights; another seed, other weights."""
    data = synthetic(400, 2)
    a = QuantileLength.train(data, LengthParams(hash_bits=8, epochs=2))[0].weights
    b = QuantileLength.train(data, LengthParams(hash_bits=8, epochs=2))[0].weights
    c = QuantileLength.train(data, LengthParams(hash_bits=8, epochs=2, seed=1))[0].weights
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_bad_parameters_are_rejected() -> None:
    """hash_bits out of range names its bounds."""
    with pytest.raises(ConfigError, match=r"hash_bits must be in \[8, 22\]"):
        LengthParams(hash_bits=30)
