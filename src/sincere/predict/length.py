"""Output-length predictors: how many tokens a request is expected to generate.

Routers and schedulers may not read a request's true ``output_tokens`` (a simulator
knows it, a live gateway does not), so they ask an :class:`OutputLengthPredictor`.
The reference router trains a length predictor on prompts; here are the cheap,
dependency-free baselines it is compared with:

* :class:`MaxTokens` -- the client's ``max_tokens`` (an upper bound, pessimistic);
* :class:`HistoryMean` -- the running mean of observed output lengths per model;
* :class:`PromptBucket` -- the running mean per (model, prompt-length bucket), since
  output length correlates with prompt length in chat and code traces.

Every prediction is a float of tokens, at least 1 and at most ``max_tokens`` when the
request sets one. Predictors learn online through ``observe`` and read no clock.
A text-based predictor (embedding + regression) plugs in by implementing the same
two methods and registering in :data:`LENGTH_PREDICTORS`.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Callable, Sequence
from typing import Any, Protocol, runtime_checkable

from sincere.core.errors import ConfigError
from sincere.core.registry import Registry
from sincere.core.request import Request
from sincere.core.types import ModelName


@runtime_checkable
class OutputLengthPredictor(Protocol):
    """Predicts a request's output tokens and learns from finished requests."""

    def predict(self, request: Request) -> float:
        """Expected output tokens of ``request`` (>= 1, <= its max_tokens if set)."""
        ...

    def observe(self, request: Request, output_tokens: int) -> None:
        """Learn that ``request`` generated ``output_tokens`` tokens."""
        ...


def _cap(request: Request, tokens: float) -> float:
    """Clamp a prediction to [1, max_tokens]."""
    if request.max_tokens is not None:
        tokens = min(tokens, float(request.max_tokens))
    return max(tokens, 1.0)


def _check_min_samples(min_samples: int) -> None:
    if min_samples < 1:
        raise ConfigError("min_samples must be >= 1", value=min_samples, allowed="an int >= 1")


class MaxTokens:
    """The request's ``max_tokens``; ``default_tokens`` when it has none."""

    def __init__(self, default_tokens: int = 256) -> None:
        if default_tokens < 1:
            raise ConfigError(
                "default_tokens must be >= 1", value=default_tokens, allowed="an int >= 1"
            )
        self.default_tokens = default_tokens

    def predict(self, request: Request) -> float:
        """``max_tokens`` or the default."""
        return float(request.max_tokens or self.default_tokens)

    def observe(self, request: Request, output_tokens: int) -> None:
        """Nothing to learn."""


class _RunningMean:
    """Count and mean, updated in O(1)."""

    __slots__ = ("count", "mean")

    def __init__(self) -> None:
        self.count = 0
        self.mean = 0.0

    def add(self, value: float) -> None:
        self.count += 1
        self.mean += (value - self.mean) / self.count


class HistoryMean:
    """Running mean of observed output tokens per model; ``prior`` until enough samples."""

    def __init__(self, min_samples: int = 8, prior: OutputLengthPredictor | None = None) -> None:
        _check_min_samples(min_samples)
        self.min_samples = min_samples
        self.prior: OutputLengthPredictor = prior or MaxTokens()
        self._means: dict[ModelName, _RunningMean] = {}

    def predict(self, request: Request) -> float:
        """The model's mean output length, capped by ``max_tokens``."""
        stat = self._means.get(request.model)
        if stat is None or stat.count < self.min_samples:
            return _cap(request, self.prior.predict(request))
        return _cap(request, stat.mean)

    def observe(self, request: Request, output_tokens: int) -> None:
        """Add one observation to the model's mean (and to the prior)."""
        self._means.setdefault(request.model, _RunningMean()).add(float(output_tokens))
        self.prior.observe(request, output_tokens)


DEFAULT_BUCKET_EDGES: tuple[int, ...] = (64, 128, 256, 512, 1024, 2048, 4096, 8192)
"""Prompt-token bucket edges (a prompt of p tokens falls in bucket bisect_right(edges, p))."""


class PromptBucket:
    """Running mean of output tokens per (model, prompt-length bucket).

    A bucket with fewer than ``min_samples`` observations falls back to ``prior``
    (by default the model's :class:`HistoryMean`).
    """

    def __init__(
        self,
        edges: Sequence[int] = DEFAULT_BUCKET_EDGES,
        min_samples: int = 8,
        prior: OutputLengthPredictor | None = None,
    ) -> None:
        _check_min_samples(min_samples)
        edge_list = [int(e) for e in edges]
        if not edge_list or any(b <= a for a, b in itertools.pairwise(edge_list)):
            raise ConfigError(
                "bucket edges must be a non-empty increasing list of prompt tokens",
                value=edge_list,
            )
        self.edges = edge_list
        self.min_samples = min_samples
        self.prior: OutputLengthPredictor = prior or HistoryMean(min_samples)
        self._means: dict[tuple[ModelName, int], _RunningMean] = {}

    def bucket(self, prompt_tokens: int) -> int:
        """Index of the bucket holding a prompt of ``prompt_tokens`` tokens."""
        return bisect.bisect_right(self.edges, prompt_tokens)

    def predict(self, request: Request) -> float:
        """The bucket's mean output length, capped by ``max_tokens``."""
        stat = self._means.get((request.model, self.bucket(request.prompt_tokens)))
        if stat is None or stat.count < self.min_samples:
            return _cap(request, self.prior.predict(request))
        return _cap(request, stat.mean)

    def observe(self, request: Request, output_tokens: int) -> None:
        """Add one observation to its bucket (and to the prior)."""
        key = (request.model, self.bucket(request.prompt_tokens))
        self._means.setdefault(key, _RunningMean()).add(float(output_tokens))
        self.prior.observe(request, output_tokens)


LENGTH_PREDICTORS: Registry[Callable[..., OutputLengthPredictor]] = Registry(
    "output-length predictor"
)
LENGTH_PREDICTORS.register("max-tokens")(MaxTokens)
LENGTH_PREDICTORS.register("history-mean")(HistoryMean)
LENGTH_PREDICTORS.register("prompt-bucket")(PromptBucket)


@LENGTH_PREDICTORS.register("quantile")
def trained_quantile(path: str) -> OutputLengthPredictor:
    """A trained quantile length model file (:class:`.quantile_length.QuantileLength`), by path.

    Its module is imported only here, so routers that do not use it do not load it.
    """
    from sincere.predict.quantile_length import QuantileLength

    return QuantileLength.load(path)


def make_length_predictor(name: str, **params: Any) -> OutputLengthPredictor:
    """Build the registered predictor ``name`` with ``params``."""
    factory = LENGTH_PREDICTORS.get(name)
    try:
        return factory(**params)
    except TypeError as exc:
        raise ConfigError(f"output-length predictor {name!r}: {exc}", value=params) from None


def default_length_predictor() -> OutputLengthPredictor:
    """Per-model history mean, falling back to ``max_tokens`` until 8 requests finished."""
    return HistoryMean(min_samples=8, prior=MaxTokens())
