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
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Protocol, runtime_checkable

from pydantic import Field, field_validator

from sincere.core.params import Params, params_from
from sincere.core.registry import Needs, Registry
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


class MaxTokensParams(Params):
    """Parameters of ``max-tokens``."""

    default_tokens: int = Field(
        256, ge=1, description="tokens predicted for a request without max_tokens"
    )


class MaxTokens:
    """The request's ``max_tokens``; ``default_tokens`` when it has none."""

    def __init__(self, params: MaxTokensParams | None = None, **values: Any) -> None:
        p = params_from(MaxTokensParams, params, values, "output-length predictor 'max-tokens'")
        self.default_tokens = p.default_tokens

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


class _MeanOrPrior:
    """Running means of output tokens by a key of the request (:meth:`key`); a key's mean
    answers once it has ``min_samples`` observations, ``prior`` until then."""

    min_samples: int
    prior: OutputLengthPredictor
    _means: dict[Any, _RunningMean]

    def key(self, request: Request) -> Any:
        """The key whose mean predicts ``request``."""
        raise NotImplementedError

    def predict(self, request: Request) -> float:
        """The key's mean output length (the prior's before it has enough), capped by
        ``max_tokens``."""
        stat = self._means.get(self.key(request))
        if stat is None or stat.count < self.min_samples:
            return _cap(request, self.prior.predict(request))
        return _cap(request, stat.mean)

    def observe(self, request: Request, output_tokens: int) -> None:
        """Add one observation to its key's mean (and to the prior)."""
        self._means.setdefault(self.key(request), _RunningMean()).add(float(output_tokens))
        self.prior.observe(request, output_tokens)


class HistoryMeanParams(Params):
    """Parameters of ``history-mean``."""

    min_samples: int = Field(
        8, ge=1, description="finished requests of a model before its mean is used"
    )


class HistoryMean(_MeanOrPrior):
    """Running mean of observed output tokens per model; ``prior`` until enough samples."""

    def __init__(
        self,
        params: HistoryMeanParams | None = None,
        *,
        prior: OutputLengthPredictor | None = None,
        **values: Any,
    ) -> None:
        label = "output-length predictor 'history-mean'"
        self.min_samples = params_from(HistoryMeanParams, params, values, label).min_samples
        self.prior = prior or MaxTokens()
        self._means = {}

    def key(self, request: Request) -> ModelName:
        """The request's model."""
        return request.model


DEFAULT_BUCKET_EDGES: tuple[int, ...] = (64, 128, 256, 512, 1024, 2048, 4096, 8192)
"""Prompt-token bucket edges (a prompt of p tokens falls in bucket bisect_right(edges, p))."""


class PromptBucketParams(Params):
    """Parameters of ``prompt-bucket``."""

    edges: tuple[Annotated[int, Field(ge=1)], ...] = Field(
        DEFAULT_BUCKET_EDGES,
        min_length=1,
        strict=False,
        description="increasing prompt-token bucket edges (a prompt of p tokens falls in "
        "bucket bisect_right(edges, p))",
    )
    min_samples: int = Field(
        8, ge=1, description="finished requests of a bucket before its mean is used"
    )

    @field_validator("edges")
    @classmethod
    def _increasing(cls, edges: tuple[int, ...]) -> tuple[int, ...]:
        if any(b <= a for a, b in itertools.pairwise(edges)):
            raise ValueError("must increase")
        return edges


class PromptBucket(_MeanOrPrior):
    """Running mean of output tokens per (model, prompt-length bucket).

    A bucket with fewer than ``min_samples`` observations falls back to ``prior``
    (by default the model's :class:`HistoryMean` with the same ``min_samples``).
    """

    def __init__(
        self,
        params: PromptBucketParams | None = None,
        *,
        prior: OutputLengthPredictor | None = None,
        **values: Any,
    ) -> None:
        label = "output-length predictor 'prompt-bucket'"
        p = params_from(PromptBucketParams, params, values, label)
        self.edges = list(p.edges)
        self.min_samples = p.min_samples
        self.prior = prior or HistoryMean(HistoryMeanParams(min_samples=p.min_samples))
        self._means = {}

    def bucket(self, prompt_tokens: int) -> int:
        """Index of the bucket holding a prompt of ``prompt_tokens`` tokens."""
        return bisect.bisect_right(self.edges, prompt_tokens)

    def key(self, request: Request) -> tuple[ModelName, int]:
        """The request's model and prompt bucket."""
        return request.model, self.bucket(request.prompt_tokens)


PRIOR = Needs(
    "prior",
    OutputLengthPredictor,
    "an output-length predictor used until enough requests finished",
    optional=True,
)
"""Optional collaborator of the averaging predictors: their fallback."""

LENGTH_PREDICTORS: Registry[Callable[..., OutputLengthPredictor]] = Registry(
    "output-length predictor"
)
LENGTH_PREDICTORS.register("max-tokens", params=MaxTokensParams)(MaxTokens)
LENGTH_PREDICTORS.register("history-mean", params=HistoryMeanParams, needs=(PRIOR,))(HistoryMean)
LENGTH_PREDICTORS.register("prompt-bucket", params=PromptBucketParams, needs=(PRIOR,))(PromptBucket)


class TrainedModelParams(Params):
    """Parameters of a predictor trained offline and saved to a file."""

    path: Path = Field(
        strict=False, description="model file written by `sincere predict train length`"
    )


@LENGTH_PREDICTORS.register("quantile", params=TrainedModelParams)
def trained_quantile(params: TrainedModelParams) -> OutputLengthPredictor:
    """A trained quantile length model file (:class:`.quantile_length.QuantileLength`).

    Its module is imported only here, so routers that do not use it do not load it.
    """
    from sincere.predict.quantile_length import QuantileLength

    return QuantileLength.load(params.path)


def make_length_predictor(name: str, **params: Any) -> OutputLengthPredictor:
    """The registered predictor ``name`` built with ``params`` (and a ``prior`` object)."""
    values, collaborators = LENGTH_PREDICTORS.split(name, params)
    return LENGTH_PREDICTORS.build(name, values, **collaborators)


def default_length_predictor() -> OutputLengthPredictor:
    """Per-model history mean, falling back to ``max_tokens`` until 8 requests finished."""
    return HistoryMean(HistoryMeanParams(min_samples=8), prior=MaxTokens())
