"""Dotted config paths and ${name} placeholders."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sincere.core.errors import ConfigError
from sincere.experiment.paths import get_path, placeholders, set_path, substitute

BASE = {"workload": {"arrival": {"kind": "gamma", "rate": 4}}, "instances": [{"cc": False}]}


def test_set_path_replaces_one_field_without_touching_the_original() -> None:
    """set_path returns a changed copy; list items are addressed by position."""
    out = set_path(BASE, "instances.0.cc", True)
    assert out["instances"][0]["cc"] is True
    assert BASE["instances"][0]["cc"] is False
    assert get_path(out, "workload.arrival.rate") == 4


def test_set_path_may_add_a_last_key_but_not_a_missing_parent() -> None:
    """A new leaf is fine (a default left out); a missing parent names what exists."""
    assert set_path(BASE, "workload.arrival.cv", 2.0)["workload"]["arrival"]["cv"] == 2.0
    with pytest.raises(ConfigError, match=r"workload\.arival\.rate: no field 'arival'.*allowed"):
        set_path(BASE, "workload.arival.rate", 1)
    with pytest.raises(ConfigError, match="list index 3 out of range"):
        set_path(BASE, "instances.3.cc", True)
    with pytest.raises(ConfigError, match="empty part"):
        set_path(BASE, "workload..rate", 1)


def test_substitute_keeps_types_for_whole_placeholders_and_formats_inside_text() -> None:
    """Whole "${x}" becomes the value itself; "a-${x}" becomes text with 40.0 written as 40."""
    node = {"rate": "${rate}", "tiers": {"preset": "sincere-${sla}"}, "ok": ["${flag}"]}
    out = substitute(node, {"rate": 8, "sla": 40.0, "flag": True})
    assert out == {"rate": 8, "tiers": {"preset": "sincere-40"}, "ok": [True]}
    assert placeholders(node) == {"rate", "sla", "flag"}


def test_substitute_rejects_an_unknown_placeholder_naming_the_field() -> None:
    """An unknown ${name} raises with its location and the known names."""
    with pytest.raises(ConfigError, match=r"a\.b: unknown placeholder \$\{nope\}.*allowed: x"):
        substitute({"a": {"b": "${nope}"}}, {"x": 1})


@given(st.dictionaries(st.text("abc", min_size=1, max_size=3), st.integers(), min_size=1))
def test_set_then_get_round_trips(values: dict[str, int]) -> None:
    """For any flat mapping, setting a key then reading it gives the value back."""
    config = {"root": dict(values)}
    for k in values:
        assert get_path(set_path(config, f"root.{k}", -1), f"root.{k}") == -1
