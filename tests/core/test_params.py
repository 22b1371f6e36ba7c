"""Parameter models: strict checking, problems with paths, and what a field allows in words."""

from __future__ import annotations

from typing import Annotated, Literal

import pytest
from pydantic import Field

from sincere.core.errors import ConfigError
from sincere.core.params import (
    Params,
    ParamsError,
    Problem,
    check_params,
    describe,
    param_rows,
    params_from,
)


class Demo(Params):
    """A model with one field of each kind the policies use."""

    rate: float = Field(0.5, gt=0, le=1, description="a share")
    count: int = Field(2, ge=1, description="how many")
    mode: Literal["fast", "slow"] = Field("fast", description="which")
    sizes: tuple[Annotated[int, Field(ge=1)], ...] = Field(
        (1, 2), min_length=1, strict=False, description="sizes"
    )
    limit: int | None = Field(None, ge=0, description="optional")


def test_strict_types_refuse_strings_bools_and_floats_for_integers() -> None:
    """A number given as a string or a bool, or an integer as a float, is a problem."""
    for bad in ({"rate": "0.5"}, {"rate": True}, {"count": 2.0}, {"count": False}):
        model, problems = check_params(Demo, bad, "demo 'x'")
        assert model is None and len(problems) == 1


def test_lists_are_accepted_for_tuples_and_ints_for_floats() -> None:
    """YAML lists fill tuple fields and an integer fills a float field."""
    model, problems = check_params(Demo, {"sizes": [3, 4], "rate": 1}, "demo 'x'")
    assert problems == [] and model is not None
    assert model.sizes == (3, 4) and model.rate == 1.0


def test_every_problem_is_found_with_its_path_value_and_allowed_values() -> None:
    """Four bad entries give four problems naming the parameter, the value and what is allowed."""
    data = {"rate": 2.0, "count": 0, "mode": "medium", "colour": "red"}
    _, problems = check_params(Demo, data, "demo 'x'", "policies[0].params")
    lines = sorted(p.line() for p in problems)
    assert lines == [
        "policies[0].params.count: demo 'x' parameter count should be >= 1; got 0; "
        "allowed: an integer >= 1",
        "policies[0].params.mode: demo 'x' parameter mode should be 'fast' or 'slow'; "
        "got 'medium'; allowed: fast, slow",
        "policies[0].params.rate: demo 'x' parameter rate should be <= 1; got 2.0; "
        "allowed: a number > 0 and <= 1",
        "policies[0].params: unknown parameter for demo 'x'; got 'colour'; "
        "allowed: rate, count, mode, sizes, limit",
    ]


def test_list_items_and_non_mappings_are_located() -> None:
    """A bad list item is reported at its index; parameters that are not a mapping are refused."""
    _, problems = check_params(Demo, {"sizes": [1, 0]}, "demo 'x'", "p")
    assert problems[0].where == "p.sizes[1]"
    _, problems = check_params(Demo, [1, 2], "demo 'x'", "p")
    assert problems[0].line().startswith("p: parameters of demo 'x' must be a mapping; got [1, 2]")


def test_one_problem_reads_as_one_line_and_many_as_a_list() -> None:
    """ParamsError is a ConfigError: one line for one problem, a titled list for several."""
    one = ParamsError([Problem("a.b", "bad", 3, "an integer")])
    assert str(one) == "a.b: bad; got 3; allowed: an integer"
    assert isinstance(one, ConfigError) and one.where == "a.b" and one.value == 3
    many = ParamsError([Problem("a", "bad"), Problem("", "worse", None)], "invalid x", "f.yaml")
    assert str(many) == "f.yaml: invalid x (2 problems)\n  a: bad\n  worse; got None"


def test_params_from_takes_a_model_or_keywords_but_not_both() -> None:
    """Constructors accept their model or its fields as keywords; keywords are checked too."""
    assert params_from(Demo, None, {"count": 3}, "demo").count == 3
    given = Demo(count=4)
    assert params_from(Demo, given, {}, "demo") is given
    with pytest.raises(ConfigError, match="demo: give parameters as Demo or as keywords"):
        params_from(Demo, given, {"count": 3}, "demo")
    with pytest.raises(ConfigError, match="demo parameter count should be >= 1; got 0"):
        params_from(Demo, None, {"count": 0}, "demo")


def test_fields_are_described_in_words_for_errors_and_docs() -> None:
    """Types, ranges, choices and optional values read as short phrases."""
    assert describe(tuple[Annotated[float, Field(ge=0)], ...]) == "a list of numbers >= 0"
    assert describe(dict[str, int]) == "a mapping of names to integers"
    assert describe(tuple[tuple[float, ...], ...]) == "a list of lists of numbers"
    rows = {row[0]: row[1:] for row in param_rows(Demo)}
    assert rows["rate"] == ("a number > 0 and <= 1", "0.5", "a share")
    assert rows["sizes"] == ("a non-empty list of integers >= 1", "1, 2", "sizes")
    assert rows["limit"] == ("an integer >= 0, or null", "null", "optional")
