"""Spec validation, grid expansion, --quick and the built-in specs."""

from __future__ import annotations

from typing import Any

import pytest

from sincere.core.errors import ConfigError
from sincere.experiment import apply_quick, builtin_names, expand, load_spec, resolve_spec
from sincere.experiment.grid import reference_config


def test_expand_crosses_axes_and_seeds_with_readable_ids(tiny_spec: dict[str, Any]) -> None:
    """2 rates x 2 strategies x 2 envs x 2 seeds = 16 cells, each config resolved."""
    cells = expand(load_spec(tiny_spec))
    assert len(cells) == 16
    assert len({c.id for c in cells}) == 16
    first = cells[0]
    assert first.id == "rate=2,strategy=FCFS,env=non-cc,seed=1"
    assert first.config["workload"]["arrival"]["rate"] == 2
    last = cells[-1]
    assert last.config["instances"][0]["engine"]["strategy"] == "best-batch+timer"
    assert last.config["instances"][0]["cc"] is True and last.config["seed"] == 2


def test_zipped_axis_sets_several_fields_together(tiny_spec: dict[str, Any]) -> None:
    """An axis with paths sets each of its fields from one value list."""
    tiny_spec["axes"] = {
        "sla": {
            "paths": ["instances.0.engine.sla_s", "workload.tiers"],
            "values": {40: [40, {"preset": "sincere-40"}], 80: [80, {"preset": "sincere-80"}]},
        }
    }
    tiny_spec["base"]["workload"]["arrival"]["rate"] = 3
    cells = expand(load_spec(tiny_spec))
    assert [(c.coords["sla"], c.config["instances"][0]["engine"]["sla_s"]) for c in cells] == [
        (40, 40),
        (40, 40),
        (80, 80),
        (80, 80),
    ]
    assert cells[-1].config["workload"]["tiers"] == {"preset": "sincere-80"}


def test_zipped_axis_with_a_wrong_length_is_rejected(tiny_spec: dict[str, Any]) -> None:
    """Each zipped value must have one entry per path."""
    tiny_spec["axes"]["sla"] = {"paths": ["a.b", "c.d"], "values": {"x": [1]}}
    with pytest.raises(ConfigError, match=r"axes\.sla.*needs a list of 2 values"):
        load_spec(tiny_spec)


def test_a_bad_value_names_the_cell_the_field_and_what_is_allowed(
    tiny_spec: dict[str, Any],
) -> None:
    """An unknown strategy fails at load, naming the field, the allowed names and the cells."""
    tiny_spec["axes"]["strategy"]["values"] = ["fcfs", "best-bench"]
    with pytest.raises(
        ConfigError,
        match=r"(?s)4 of 8 cells are invalid.*strategy.*got 'best-bench'; allowed: best-batch"
        r".*\(cell rate=2,strategy=best-bench,env=non-cc; .* and 1 more\)",
    ):
        expand(load_spec(tiny_spec))


def test_a_placeholder_without_an_axis_is_rejected(tiny_spec: dict[str, Any]) -> None:
    """${qps} in the base with no qps axis raises, listing the axes."""
    tiny_spec["base"]["workload"]["arrival"]["rate"] = "${qps}"
    with pytest.raises(ConfigError, match=r"\$\{qps\} names no axis.*allowed: env, rate"):
        expand(load_spec(tiny_spec))


def test_a_missing_base_field_is_reported_with_its_path(tiny_spec: dict[str, Any]) -> None:
    """An axis path through a field the base lacks names that path."""
    tiny_spec["axes"]["env"]["path"] = "instances.0.engin.cc"
    with pytest.raises(ConfigError, match=r"instances\.0\.engin\.cc: no field 'engin'"):
        expand(load_spec(tiny_spec))


def test_quick_keeps_only_the_named_labels_and_seeds(tiny_spec: dict[str, Any]) -> None:
    """quick.only / seeds / set reduce the grid and edit the base."""
    tiny_spec["quick"] = {"seeds": [7], "only": {"rate": [6]}, "set": {"workload.num_requests": 9}}
    cells = expand(apply_quick(load_spec(tiny_spec)))
    assert len(cells) == 4
    assert {c.seed for c in cells} == {7}
    assert {c.config["workload"]["num_requests"] for c in cells} == {9}
    tiny_spec["quick"]["only"] = {"rate": [5]}
    with pytest.raises(ConfigError, match=r"quick\.only\.rate: quick\.only: unknown label"):
        apply_quick(load_spec(tiny_spec))


def test_builtin_specs_expand_and_cover_the_studies() -> None:
    """sincere-study: 5 strategies x 3 traffic x 3 rates x 3 SLAs x 2 envs x 3 seeds."""
    assert {"sincere-study", "niyama-study"} <= set(builtin_names())
    study = resolve_spec("sincere-study")
    assert len(expand(study)) == 5 * 3 * 3 * 3 * 2 * 3
    niyama = resolve_spec("niyama-study")
    schedulers = {c.config["instances"][0]["engine"]["scheduler"] for c in expand(niyama)}
    assert schedulers == {"fcfs", "edf", "sarathi", "niyama"}
    assert len(expand(apply_quick(study))) < len(expand(study))


def test_unknown_spec_lists_the_builtins() -> None:
    """A name that is neither a file nor a built-in lists the choices."""
    with pytest.raises(ConfigError, match=r"allowed:.*sincere-study"):
        resolve_spec("no-such-study")


def test_reference_config_uses_the_reference_labels() -> None:
    """The capacity base config takes the spec's reference rate and SLA."""
    config = reference_config(resolve_spec("sincere-study"))
    assert config["workload"]["arrival"] == {"kind": "gamma", "cv": 1.0, "rate": 8}
    assert config["workload"]["tiers"] == {"preset": "sincere-60"}
