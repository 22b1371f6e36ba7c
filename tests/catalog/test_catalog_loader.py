"""Loading, merging and validating catalog files (shipped, user, environment)."""

from __future__ import annotations

import json
import os
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from sincere.catalog import (
    PRECISION_BYTES,
    CatalogEntryError,
    accuracy_key,
    default_catalog,
    get_accelerator,
    get_model,
    load_catalog,
    split_accuracy_key,
)
from sincere.catalog.schema import validate_model
from sincere.core.errors import ConfigError, DataError

NEW_ACCELERATOR: dict[str, Any] = {
    "vendor": "Acme",
    "memory_gb": 32,
    "hbm_bandwidth_gbps": 1000,
    "bf16_tflops": 200,
    "interconnect_gbps": 64,
    "host_link_gbps": 32,
    "price_per_hour_usd": 1.5,
    "power_w": 300,
    "cc_supported": False,
}
NEW_MODEL: dict[str, Any] = {
    "family": "toy",
    "num_params_b": 0.5,
    "num_layers": 4,
    "hidden_size": 1024,
    "intermediate_size": 4096,
    "num_heads": 16,
    "num_kv_heads": 4,
    "vocab_size": 32000,
    "max_context": 4096,
}


def write(tmp_path: Path, content: Any, name: str = "user.yaml") -> Path:
    path = tmp_path / name
    text = json.dumps(content) if name.endswith(".json") else yaml.safe_dump(content)
    path.write_text(text)
    return path


def test_shipped_files_are_package_resources() -> None:
    """The YAML files are read through importlib.resources from the installed package."""
    data = resources.files("sincere") / "data"
    for fname in ("accelerators.yaml", "models.yaml"):
        assert (data / fname).is_file()
    assert "H100-SXM" in yaml.safe_load((data / "accelerators.yaml").read_text())["accelerators"]


def test_user_override_changes_only_the_fields_it_sets(tmp_path: Path) -> None:
    """A user entry named like a shipped one (any case) overrides its fields, keeps the rest."""
    path = write(tmp_path, {"accelerators": {"h100-sxm": {"price_per_hour_usd": 9.5}}})
    cat = load_catalog([path], use_env=False)
    acc = cat.accelerator("H100-SXM")
    assert acc.price_per_hour_usd == 9.5
    assert acc.memory_gb == 80
    assert acc.sources["price_per_hour_usd"] == str(path)
    assert "NVIDIA" in acc.sources["memory_gb"]
    assert cat.origin("accelerator", "H100-SXM") == str(path)


def test_user_file_adds_entries_with_aliases_json(tmp_path: Path) -> None:
    """A JSON user file adds an accelerator and a model reachable by their aliases."""
    content = {
        "accelerators": {"Acme-1": {**NEW_ACCELERATOR, "aliases": ["acme"]}},
        "models": {"toy-0.5b": {**NEW_MODEL, "aliases": ["toy"], "source": "mine"}},
    }
    cat = load_catalog([write(tmp_path, content, "user.json")], use_env=False)
    assert cat.accelerator("ACME").name == "Acme-1"
    assert cat.accelerator("acme").fp8_tflops is None
    model = cat.model("toy")
    assert model.kv_bytes_per_token() == 2 * 4 * 4 * 64 * 2
    assert len(cat.models()) == len(load_catalog(use_env=False).models()) + 1


def test_model_override_records_its_origin(tmp_path: Path) -> None:
    """Overriding a model's field keeps its other figures and notes the file in source."""
    path = write(tmp_path, {"models": {"llama-3-8b": {"max_context": 16384}}})
    model = load_catalog([path], use_env=False).model("llama3-8b")
    assert model.max_context == 16384
    assert model.num_kv_heads == 8
    assert str(path) in model.source and "Meta-Llama-3-8B" in model.source


def test_later_files_win(tmp_path: Path) -> None:
    """With two user files the later one's figure is used."""
    first = write(tmp_path, {"accelerators": {"L4": {"power_w": 80}}}, "a.yaml")
    second = write(tmp_path, {"accelerators": {"L4": {"power_w": 90}}}, "b.yaml")
    assert load_catalog([first, second], use_env=False).accelerator("L4").power_w == 90


def test_env_var_adds_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """SINCERE_CATALOG lists files (os.pathsep-separated) that apply before extra_paths."""
    a = write(tmp_path, {"accelerators": {"Acme-1": NEW_ACCELERATOR}}, "a.yaml")
    b = write(tmp_path, {"models": {"toy": NEW_MODEL}}, "b.yaml")
    monkeypatch.setenv("SINCERE_CATALOG", f"{a}{os.pathsep}{b}")
    cat = load_catalog()
    assert cat.has_accelerator("acme-1") and cat.has_model("toy")
    assert not load_catalog(use_env=False).has_model("toy")
    default_catalog.cache_clear()
    try:
        assert get_model("toy").num_layers == 4
        assert get_accelerator("Acme-1").vendor == "Acme"
    finally:
        monkeypatch.delenv("SINCERE_CATALOG")
        default_catalog.cache_clear()


def test_unknown_names_list_the_known_ones() -> None:
    """An unknown name raises ConfigError listing known names and a close match."""
    cat = load_catalog(use_env=False)
    with pytest.raises(ConfigError, match=r"unknown model \(did you mean 'llama-3-8b'\?\).*"
                       r"got 'llama-3-8c'.*allowed: .*gemma-7b"):  # fmt: skip
        cat.model("llama-3-8c")
    with pytest.raises(ConfigError, match=r"unknown accelerator.*got 'TPUv5'.*H100-SXM"):
        cat.accelerator("TPUv5")


@pytest.mark.parametrize(
    ("entry", "pattern"),
    [
        ({**NEW_ACCELERATOR, "memory_gb": -80},
         r"accelerator 'Acme-1', field 'memory_gb': Input should be greater than 0.*-80"),
        ({**NEW_ACCELERATOR, "memory_gbs": 80},
         r"field 'memory_gbs': unknown field; allowed: .*memory_gb"),
        ({k: v for k, v in NEW_ACCELERATOR.items() if k != "power_w"},
         r"field 'power_w': missing required field"),
        ({**NEW_ACCELERATOR, "bf16_tflops": "fast"},
         r"field 'bf16_tflops': Input should be a valid number.*'fast'"),
        ({**NEW_ACCELERATOR, "cc_supported": "maybe"},
         r"field 'cc_supported': Input should be a valid boolean.*'maybe'"),
        ({**NEW_ACCELERATOR, "sources": {"colour": "x"}},
         r"field 'sources': bad source entry.*allowed: .*memory_gb"),
        ("H100", r"accelerator 'Acme-1': an entry must be a mapping"),
    ],
)  # fmt: skip
def test_malformed_accelerator_names_file_entry_field_value(
    tmp_path: Path, entry: Any, pattern: str
) -> None:
    """A bad accelerator entry raises CatalogEntryError with file, entry, field and value."""
    path = write(tmp_path, {"accelerators": {"Acme-1": entry}})
    with pytest.raises(CatalogEntryError, match=pattern) as info:
        load_catalog([path], use_env=False)
    assert str(info.value).startswith(str(path))
    assert info.value.entry == "Acme-1"


@pytest.mark.parametrize(
    ("change", "field", "pattern"),
    [
        ({"num_kv_heads": 3}, None, r"num_heads 16 is not divisible by num_kv_heads 3"),
        ({"precisions": ["fp16", "fp12"]}, "precisions",
         r"unknown precision 'fp12'; allowed: fp32, fp16"),
        ({"relative_accuracy": {"int8+kv-int9": 99}}, "relative_accuracy",
         r"bad precision key 'int8\+kv-int9'"),
        ({"relative_accuracy": {"fp16": 250}}, "relative_accuracy", r"out of range"),
        ({"relative_accuracy": {"fp8": 99}}, None, r"precisions \['fp8'\] that are not in"),
        ({"num_layers": 2.5}, "num_layers", r"valid integer.*2.5"),
        ({"hidden_size": 1000}, None, r"hidden_size 1000 is not divisible by num_heads 16"),
    ],
)  # fmt: skip
def test_malformed_model_names_the_problem(
    tmp_path: Path, change: dict[str, Any], field: str | None, pattern: str
) -> None:
    """A bad model entry raises CatalogEntryError naming the model, the field and the rule."""
    path = write(tmp_path, {"models": {"toy": {**NEW_MODEL, **change}}})
    with pytest.raises(CatalogEntryError, match=r"model 'toy'.*" + pattern) as info:
        load_catalog([path], use_env=False)
    assert info.value.field == field
    assert info.value.path == str(path)


@pytest.mark.parametrize(
    ("text", "name", "pattern"),
    [
        ("accelerators:\n  A: {x: 1}\n  B: x: y\n", "bad.yaml", r"bad.yaml:3: invalid YAML"),
        ('{"models": ', "bad.json", r"bad.json:1: invalid JSON"),
        ("- a\n- b\n", "list.yaml", r"must be a mapping.*'list'"),
        ("accelerator: {}\n", "typo.yaml", r"unknown top-level key 'accelerator'; allowed"),
        ("models: [a]\n", "seq.yaml", r"'models' must map entry names"),
    ],
)
def test_malformed_files_raise_data_error(
    tmp_path: Path, text: str, name: str, pattern: str
) -> None:
    """Syntax and layout mistakes raise DataError naming the file (and line)."""
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(DataError, match=pattern):
        load_catalog([path], use_env=False)


def test_alias_clash_is_an_error(tmp_path: Path) -> None:
    """A user alias that another entry already uses is rejected, naming both."""
    path = write(tmp_path, {"models": {"toy": {**NEW_MODEL, "aliases": ["llama3-8b"]}}})
    with pytest.raises(CatalogEntryError, match=r"'aliases'.*taken by model 'llama-3-8b'"):
        load_catalog([path], use_env=False)


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    """A catalog path that does not exist raises ConfigError with the path."""
    with pytest.raises(ConfigError, match=r"catalog file not found.*nope.yaml"):
        load_catalog([tmp_path / "nope.yaml"], use_env=False)


@settings(max_examples=40, deadline=None)
@given(
    precision=st.sampled_from(sorted(PRECISION_BYTES)),
    kv=st.sampled_from(sorted(PRECISION_BYTES)),
)
def test_accuracy_key_round_trips(precision: str, kv: str) -> None:
    """accuracy_key and split_accuracy_key invert each other (unquantized KV adds nothing)."""
    weight, kv_part = split_accuracy_key(accuracy_key(precision, kv))
    assert weight == precision
    assert kv_part == (None if kv in ("fp16", "bf16", "fp32") else kv)


@settings(max_examples=60, deadline=None)
@given(
    layers=st.integers(1, 128),
    kv_heads=st.sampled_from([1, 2, 4, 8]),
    group=st.integers(1, 8),
    head=st.sampled_from([32, 64, 128, 256]),
)
def test_valid_shapes_load_and_kv_bytes_scale(
    layers: int, kv_heads: int, group: int, head: int
) -> None:
    """Any consistent shape validates, and KV bytes are 2 x layers x kv heads x head x bytes."""
    heads = kv_heads * group
    raw = {**NEW_MODEL, "num_layers": layers, "num_heads": heads, "num_kv_heads": kv_heads,
           "hidden_size": heads * head}  # fmt: skip
    model = validate_model("m", raw, "<test>")
    assert model.head_size == head
    assert model.kv_bytes_per_token("fp8") == 2 * layers * kv_heads * head
    assert model.kv_bytes_per_token("fp16") == 2 * model.kv_bytes_per_token("fp8")
