"""The registry: names, parameter models, collaborators, nested specs and build()."""

from __future__ import annotations

from typing import Annotated, Any

import pytest
from pydantic import Field

from sincere.core.errors import ConfigError
from sincere.core.params import Params, Spec, Uses
from sincere.core.registry import Needs, Registry, build_spec


class Clock:
    """A collaborator kind."""


class Inner:
    """A registered entry with one parameter."""

    def __init__(self, params: InnerParams) -> None:
        self.size = params.size


class InnerParams(Params):
    """Parameters of ``inner``."""

    size: int = Field(1, ge=1, description="size")


INNERS: Registry[type[Inner]] = Registry("inner thing")
INNERS.register("inner", params=InnerParams)(Inner)


class OuterParams(Params):
    """Parameters of ``outer``: a number and the inner thing to build."""

    gain: float = Field(1.0, ge=0, description="gain")
    inner: Annotated[Spec, Uses(INNERS)] = Field(Spec(name="inner"), description="which inner")


class Outer:
    """An entry handed a clock (required) and an inner thing (built from its params)."""

    def __init__(self, params: OuterParams, *, clock: Clock, inner: Inner) -> None:
        self.gain, self.clock, self.inner = params.gain, clock, inner


OUTERS: Registry[type[Outer]] = Registry("outer thing", needs=(Needs("clock", Clock, "a clock"),))
INNER = Needs("inner", Inner, "an inner thing", default=lambda p: build_spec(INNERS, p.inner))
OUTERS.register("outer", params=OuterParams, needs=(INNER,))(Outer)


class Bare:
    """An entry without parameters."""


BARES: Registry[Any] = Registry("bare thing")
BARES.register("bare")(Bare)


def test_duplicate_and_unknown_names_raise_listing_the_valid_ones() -> None:
    """A taken name and an unknown name both raise ConfigError naming what exists."""
    with pytest.raises(ConfigError, match="inner thing 'inner' is already registered"):
        INNERS.register("inner")(Inner)
    with pytest.raises(ConfigError, match=r"unknown outer thing; got 'other'; allowed: outer"):
        OUTERS.build("other", clock=Clock())
    assert OUTERS.problems("other", name_at="x.name")[0].line() == (
        "x.name: unknown outer thing; got 'other'; allowed: outer"
    )


def test_build_checks_params_and_hands_in_collaborators() -> None:
    """build() validates, passes the checked model and builds defaults from the params."""
    clock = Clock()
    outer = OUTERS.build(
        "outer", {"gain": 2, "inner": {"name": "inner", "params": {"size": 5}}}, clock=clock
    )
    assert (outer.gain, outer.clock, outer.inner.size) == (2.0, clock, 5)
    mine = Inner(InnerParams(size=9))
    assert OUTERS.build("outer", None, clock=clock, inner=mine).inner is mine
    assert isinstance(BARES.build("bare"), Bare)


def test_every_problem_is_reported_at_once_with_nested_paths() -> None:
    """Problems of the entry's params and of the spec it names come in one error."""
    params = {"gain": -1, "inner": {"name": "inner", "params": {"size": 0, "x": 1}}, "y": 2}
    with pytest.raises(ConfigError) as caught:
        OUTERS.build("outer", params, "outers[3].params", clock=Clock())
    lines = str(caught.value).splitlines()
    assert lines[0] == "invalid outer thing 'outer' parameters (4 problems)"
    assert sorted(line.strip().split(":")[0] for line in lines[1:]) == [
        "outers[3].params",
        "outers[3].params.gain",
        "outers[3].params.inner.params",
        "outers[3].params.inner.params.size",
    ]
    bad_name = OUTERS.problems("outer", {"inner": "nothing"}, params_at="p")
    assert bad_name[0].line() == "p.inner: unknown inner thing; got 'nothing'; allowed: inner"


def test_collaborators_missing_unknown_wrong_or_doubled_raise() -> None:
    """A required collaborator left out, an unknown one, one of the wrong kind, or one given
    both as an object and as a parameter naming one, each raise ConfigError saying so."""
    with pytest.raises(ConfigError, match="outer thing 'outer' needs a clock as 'clock'"):
        OUTERS.build("outer")
    with pytest.raises(ConfigError, match=r"takes no collaborator; got \['sun'\]; allowed: clock"):
        OUTERS.build("outer", clock=Clock(), sun=1)
    with pytest.raises(ConfigError, match="collaborator 'clock' must be a clock; got 'int'"):
        OUTERS.build("outer", clock=3)
    with pytest.raises(ConfigError, match="'inner' given both as an object and as a parameter"):
        OUTERS.build("outer", {"inner": "inner"}, clock=Clock(), inner=Inner(InnerParams()))


def test_split_sorts_objects_from_parameters() -> None:
    """A keyword naming a collaborator and holding one is a collaborator; else a parameter."""
    inner = Inner(InnerParams())
    params, objects = OUTERS.split("outer", {"gain": 1.0, "inner": inner, "clock": "noon"})
    assert params == {"gain": 1.0, "clock": "noon"} and objects == {"inner": inner}


def test_param_names_and_rows_come_from_the_model() -> None:
    """The docs rows list each parameter's allowed values, default and meaning."""
    assert OUTERS.param_names("outer") == ["gain", "inner"]
    assert BARES.param_names("bare") == []
    assert OUTERS.param_rows("outer")[1] == (
        "inner",
        "inner thing inner (a name, or {name, params})",
        "inner",
        "which inner",
    )
