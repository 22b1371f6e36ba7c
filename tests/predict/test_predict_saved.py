"""Model files: round trip, byte-stable output, and clear errors on any mismatch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sincere.core.errors import ConfigError, DataError
from sincere.predict.saved import ModelHeader, load_model, read_model, save_model

SCHEMA = {"features": ["a", "b"], "hash_bits": 10}


def _save(path: Path, **header: object) -> Path:
    fields = {"kind": "length-quantile", "schema": SCHEMA, **header}
    return save_model(path, ModelHeader(**fields), {"w": np.arange(6.0).reshape(2, 3)})  # type: ignore[arg-type]


def test_round_trip_keeps_arrays_and_header(tmp_path: Path) -> None:
    """What was saved is what loads: arrays, kind, schema, params and provenance."""
    path = _save(tmp_path / "m.npz", params={"epochs": 3}, provenance={"seed": 1})
    header, arrays = load_model(path, "length-quantile", SCHEMA, ("w",))
    np.testing.assert_array_equal(arrays["w"], np.arange(6.0).reshape(2, 3))
    assert (header.params, header.provenance) == ({"epochs": 3}, {"seed": 1})


def test_same_model_gives_same_bytes(tmp_path: Path) -> None:
    """The file has no timestamps: saving twice gives identical bytes."""
    assert _save(tmp_path / "a.npz").read_bytes() == _save(tmp_path / "b.npz").read_bytes()


def test_kind_mismatch_names_both_kinds(tmp_path: Path) -> None:
    """Loading a length model as a latency model says which is which."""
    path = _save(tmp_path / "m.npz")
    with pytest.raises(ConfigError, match="holds a 'length-quantile' model, not a 'latency-lstm'"):
        load_model(path, "latency-lstm", SCHEMA, ("w",))


def test_schema_mismatch_names_the_entry(tmp_path: Path) -> None:
    """A different feature list is reported with the file's and the expected value."""
    path = _save(tmp_path / "m.npz")
    other = {**SCHEMA, "features": ["a", "c"]}
    with pytest.raises(ConfigError, match=r"differs at 'features'.*\['a', 'b'\].*\['a', 'c'\]"):
        load_model(path, "length-quantile", other, ("w",))


def test_version_mismatch_says_retrain(tmp_path: Path) -> None:
    """A file of another format version is refused with both versions."""
    path = _save(tmp_path / "m.npz", format_version=99)
    with pytest.raises(ConfigError, match="format version 99; this sincere reads version 1"):
        load_model(path, "length-quantile", SCHEMA, ("w",))


def test_missing_array_is_named(tmp_path: Path) -> None:
    """A file without an array the model needs names it."""
    path = _save(tmp_path / "m.npz")
    with pytest.raises(DataError, match=r"lacks arrays \['bias'\]"):
        load_model(path, "length-quantile", SCHEMA, ("w", "bias"))


def test_missing_or_foreign_files_are_clear_errors(tmp_path: Path) -> None:
    """No file, a non-zip file and a NumPy file without a header each say so."""
    with pytest.raises(ConfigError, match="no such model file"):
        read_model(tmp_path / "none.npz")
    (tmp_path / "text.npz").write_text("hello")
    with pytest.raises(DataError, match="not a sincere model file"):
        read_model(tmp_path / "text.npz")
    np.savez(tmp_path / "plain.npz", w=np.zeros(2))
    with pytest.raises(DataError, match="no header entry"):
        read_model(tmp_path / "plain.npz")


def test_unknown_kind_is_not_written(tmp_path: Path) -> None:
    """save_model refuses a kind it does not know, listing the known ones."""
    with pytest.raises(ConfigError, match=r"unknown model kind.*latency-lstm"):
        _save(tmp_path / "m.npz", kind="forest")


def test_a_yaml_file_given_as_model_says_so_without_numpys_pickle_advice(tmp_path: Path) -> None:
    """A config YAML passed as the model (`predict eval examples/w1.yaml ...`) is refused as
    not a model archive; numpy's advice to load pickled data never shows."""
    config = tmp_path / "w1.yaml"
    config.write_text("seed: 0\nworkload: {num_requests: 10}\n")
    with pytest.raises(DataError) as caught:
        read_model(config)
    assert "not a sincere model file: not a zip archive of arrays" in str(caught.value)
    assert "pickle" not in str(caught.value)
    np.savez(tmp_path / "objects.npz", header=np.array([{"a": 1}], dtype=object))
    with pytest.raises(DataError, match="an entry is not a plain array") as caught:
        read_model(tmp_path / "objects.npz")
    assert "pickle" not in str(caught.value)
