"""Any parameter mapping is either accepted and builds, or refused with a ConfigError naming it."""

from __future__ import annotations

import contextlib
import typing
from typing import Any, Literal

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from sincere.catalog import get_accelerator, get_model
from sincere.core.errors import ConfigError
from sincere.core.params import ParamsError
from sincere.perf.base import Deployment, StepTimeBase
from sincere.policy.batching import ComposedParams, make_strategy, valid_strategy_names
from sincere.policy.specs import REGISTRIES

WORDS = ["", "x", "e2e", "ttft", "tokens", "outstanding", "hybrid", "edf", "balance", "cost"]
WORDS += ["sla-slack", "swap-and-batch", "largest-queue", "max-tokens", "linear", "llama-3-8b"]
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 5000),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(WORDS),
)
PLAUSIBLE = st.one_of(
    st.integers(1, 600),
    st.floats(0.01, 1.0),
    st.floats(1.0, 100.0),
    st.lists(st.integers(1, 600), min_size=1, max_size=4, unique=True).map(sorted),
)
JUNK = st.one_of(
    SCALARS,
    st.lists(st.one_of(st.integers(-2, 600), st.floats(-1, 600)), max_size=4),
    st.lists(st.lists(st.floats(0, 1), min_size=1, max_size=6), max_size=3),
    st.dictionaries(st.sampled_from(["llama-3-8b", "a", "name", "params"]), SCALARS, max_size=3),
)


def _choices(annotation: Any) -> list[Any]:
    """The values of the Literal types inside ``annotation``."""
    if typing.get_origin(annotation) is Literal:
        return list(typing.get_args(annotation))
    return [c for arg in typing.get_args(annotation) for c in _choices(arg)]


def params_for(model: type[BaseModel]) -> st.SearchStrategy[dict[str, Any]]:
    """Mappings over the model's fields -- mostly its default or a plausible value, sometimes
    junk -- and, in half the draws, keys it does not have."""
    required: dict[str, st.SearchStrategy[Any]] = {}
    optional: dict[str, st.SearchStrategy[Any]] = {}
    for name, field in model.model_fields.items():
        likely = [PLAUSIBLE, *([st.sampled_from(c)] if (c := _choices(field.annotation)) else [])]
        if field.is_required():
            required[name] = st.one_of(*likely, *likely, JUNK)
        else:
            likely.append(st.just(field.get_default(call_default_factory=True)))
            optional[name] = st.one_of(*likely, *likely, JUNK)
    known = st.fixed_dictionaries(required, optional=optional)
    return st.one_of(known, st.fixed_dictionaries(required, optional={**optional, "bogus": JUNK}))


class Flat(StepTimeBase):
    """A batch-time predictor for Niyama."""

    def iteration_s(self, batch: Any) -> float:
        return 0.01


COLLABORATORS: dict[str, dict[str, Any]] = {
    "router": {"rng": np.random.default_rng(0)},
    "scheduler": {},
    "step-model": {"deployment": Deployment(get_model("llama-3-8b"), get_accelerator("A100"))},
    "length-predictor": {},
    "latency-predictor": {},
}
ENTRIES = [(kind, name) for kind, reg in REGISTRIES.items() for name in reg.names()]


def names_a_parameter(error: ConfigError, params: dict[str, Any], fields: list[str]) -> bool:
    """Whether every line of the error names a given key or a field of the model."""
    problems = error.problems if isinstance(error, ParamsError) else ()
    known = [*params, *fields]
    return bool(problems) and all(any(k in p.line() for k in known) for p in problems)


def _build(kind: str, name: str, params: dict[str, Any]) -> object:
    registry = REGISTRIES[kind]
    extra = {"predictor": Flat()} if name == "niyama" else {}
    if params.get("max_blocks_per_instance") is None:
        return registry.build(name, params, **COLLABORATORS[kind], **extra)
    with pytest.warns(FutureWarning, match="max_blocks_per_instance is deprecated"):
        return registry.build(name, params, **COLLABORATORS[kind], **extra)


@pytest.mark.parametrize(("kind", "name"), ENTRIES)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_random_params_are_accepted_or_refused_by_name(kind: str, name: str, data: Any) -> None:
    """A random mapping either validates and builds, or raises a ConfigError whose every
    problem names a given key or a parameter of the policy -- never another exception."""
    fields = REGISTRIES[kind].param_names(name)
    params = data.draw(params_for(REGISTRIES[kind].params_model(name)))
    try:
        REGISTRIES[kind].validate(name, params)
    except ConfigError as exc:
        assert names_a_parameter(exc, params, fields), str(exc)
        return
    with contextlib.suppress(ConfigError):  # a missing file, a shape the class checks
        _build(kind, name, params)


STRATEGY_FIELDS = list(ComposedParams.model_fields)


@settings(max_examples=150, deadline=None)
@given(name=st.sampled_from(valid_strategy_names()), params=params_for(ComposedParams))
def test_random_strategy_params_are_accepted_or_refused_by_name(
    name: str, params: dict[str, Any]
) -> None:
    """make_strategy builds or raises a ConfigError naming each bad parameter."""
    params.setdefault("sla_s", 60.0)
    try:
        make_strategy(name, **params)
    except ConfigError as exc:
        assert names_a_parameter(exc, params, STRATEGY_FIELDS), str(exc)
