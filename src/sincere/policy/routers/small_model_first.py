"""Small-model-first routing: the "LLM router + round-robin" baseline.

A cascade-style router as used as a baseline by the reference router: send every
request to the instances of the smallest (cheapest) model unless the request looks
hard, and then to the largest model's instances; round-robin within the chosen
group. A request is hard when its prompt is longer than ``hard_prompt_tokens``
(default 512), or, when a ``difficulty`` predictor (a callable ``Request -> float``,
e.g. a trained classifier) is given, when its score is at least ``hard_threshold``.

Model size: ``model_sizes`` maps model name to a size (e.g. parameters in billions,
from the catalog's ``ModelArch.num_params_b``); without it a model's size is the mean
price per token of its instances (``price_in + price_out``), then its quality.
:func:`catalog_sizes` builds ``model_sizes`` from the catalog. The
smallest and largest model are chosen among the healthy instances, so when only one
model is up every request goes there.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Annotated, Any

import numpy as np
from pydantic import Field

from sincere.catalog import get_model
from sincere.core.errors import ConfigError
from sincere.core.params import Params, params_from
from sincere.core.registry import Needs
from sincere.core.request import Request
from sincere.core.types import ModelName, Seconds
from sincere.policy.router_base import (
    ROUTERS,
    InstanceView,
    RouteDecision,
    Router,
)


def catalog_sizes(models: Iterable[ModelName]) -> dict[ModelName, float]:
    """``model_sizes`` from the catalog: parameters (billions) of each named model."""
    return {name: get_model(name).num_params_b for name in models}


def group_by_model(views: Sequence[InstanceView]) -> dict[ModelName, list[InstanceView]]:
    """Instances per model, in first-seen order."""
    groups: dict[ModelName, list[InstanceView]] = {}
    for view in views:
        groups.setdefault(view.model, []).append(view)
    return groups


def price_size(group: Sequence[InstanceView]) -> tuple[float, float]:
    """Size proxy of a model: mean price per token of its instances, then mean quality."""
    price = sum(v.price_in_per_token_usd + v.price_out_per_token_usd for v in group)
    quality = sum(v.quality for v in group)
    return price / len(group), quality / len(group)


class SmallModelFirstParams(Params):
    """Parameters of ``small-model-first``."""

    hard_prompt_tokens: int = Field(
        512, ge=1, description="a prompt longer than this many tokens is hard (no difficulty)"
    )
    model_sizes: dict[str, Annotated[float, Field(ge=0)]] | None = Field(
        None,
        description="model name -> size (e.g. parameters, billions); null: mean price per "
        "token of a model's instances, then quality",
    )
    hard_threshold: float = Field(
        0.5, description="a difficulty score at least this is hard (with a difficulty)"
    )


DIFFICULTY = Needs(
    "difficulty",
    Callable,  # type: ignore[arg-type]
    "a difficulty predictor (a callable Request -> float)",
    optional=True,
)
"""Optional collaborator: scores a request's difficulty (e.g. a trained classifier)."""


@ROUTERS.register("small-model-first", params=SmallModelFirstParams, needs=(DIFFICULTY,))
class SmallModelFirstRouter(Router):
    """Smallest model unless the request is hard; round-robin within a model's instances."""

    reads_exact_tokens = False  # engine load as reported; no exact token counts

    def __init__(
        self,
        rng: np.random.Generator,
        params: SmallModelFirstParams | None = None,
        *,
        difficulty: Callable[[Request], float] | None = None,
        **values: Any,
    ) -> None:
        super().__init__(rng)
        p = params_from(SmallModelFirstParams, params, values, "router 'small-model-first'")
        self.hard_prompt_tokens = p.hard_prompt_tokens
        self.model_sizes: dict[ModelName, float] = dict(p.model_sizes or {})
        self.hard_threshold = p.hard_threshold
        self.difficulty = difficulty
        self._turn: dict[ModelName, int] = {}

    def is_hard(self, request: Request) -> bool:
        """Whether ``request`` goes to the largest model."""
        if self.difficulty is not None:
            return self.difficulty(request) >= self.hard_threshold
        return request.prompt_tokens > self.hard_prompt_tokens

    def _size(self, model: ModelName, group: Sequence[InstanceView]) -> tuple[float, float]:
        if not self.model_sizes:
            return price_size(group)
        if model not in self.model_sizes:
            raise ConfigError(
                "small-model-first: model_sizes lacks a served model",
                value=model,
                allowed=sorted(self.model_sizes),
            )
        return self.model_sizes[model], price_size(group)[1]

    def choose(
        self, request: Request, candidates: Sequence[InstanceView], now: Seconds
    ) -> RouteDecision:
        """Next instance, round-robin, of the smallest or (hard request) largest model."""
        groups = group_by_model(candidates)
        hard = self.is_hard(request)
        pick = max if hard else min
        model = pick(groups, key=lambda m: self._size(m, groups[m]))
        group = groups[model]
        turn = self._turn.get(model, 0) % len(group)
        self._turn[model] = turn + 1
        label = "hard" if hard else "easy"
        return RouteDecision(group[turn].id, reason=f"{label} -> {model}")
