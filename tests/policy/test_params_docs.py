"""The docs' parameter tables are the ones generated from the parameter models."""

from __future__ import annotations

from pathlib import Path

import pytest

from sincere.core.params import NoParams
from sincere.policy.params_docs import TABLES, documented, with_table
from sincere.policy.specs import REGISTRIES

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("key", sorted(TABLES))
def test_docs_hold_the_generated_table(key: str) -> None:
    """Each docs table equals what the models generate (regenerate with
    ``python -m sincere.policy.params_docs``)."""
    name, make = TABLES[key]
    text = (ROOT / name).read_text(encoding="utf-8")
    assert documented(text, key) == make(), f"{name}: run python -m sincere.policy.params_docs"


def test_every_registered_parameter_is_documented_with_a_meaning() -> None:
    """Every parameter of every registered entry has a description and a row in the docs."""
    docs = "".join((ROOT / name).read_text(encoding="utf-8") for name, _ in TABLES.values())
    missing = []
    for registry in REGISTRIES.values():
        for entry in registry.names():
            for param, _, _, meaning in registry.param_rows(entry):
                if not meaning or f"| `{entry}` | `{param}` |" not in docs:
                    missing.append(f"{registry.kind} {entry}.{param}")
    assert missing == []


def test_every_default_is_a_valid_value() -> None:
    """Defaults are not validated by pydantic; each one must pass its own model."""
    for registry in REGISTRIES.values():
        for entry in registry.names():
            model = registry.params_model(entry)
            if model is NoParams or any(f.is_required() for f in model.model_fields.values()):
                continue
            assert model.model_validate(model().model_dump()) == model()


def test_a_table_is_replaced_between_its_markers_only() -> None:
    """Rewriting keeps the text around the markers."""
    text = "a\n<!-- params:k -->\nold\n<!-- /params:k -->\nb\n"
    assert with_table(text, "k", "new") == "a\n<!-- params:k -->\nnew\n<!-- /params:k -->\nb\n"
    assert documented(text, "other") is None
