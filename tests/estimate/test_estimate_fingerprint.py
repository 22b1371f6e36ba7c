"""Fingerprint formulas, the batch law and reading MaverIQ's CSVs."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sincere.core.errors import ConfigError, DataError
from sincere.estimate import ConfigKey, batch_law, layer_terms, read_fingerprints

from .conftest import HEADER, TERMS, fingerprint_rows, write_csv


def _lat(n: int, o: int, terms: tuple[float, float, float, float]) -> float:
    ttl, tto, tpl, tpo = terms
    return tto + n * ttl + o * (tpo + n * tpl)


def test_layer_terms_recover_hand_made_terms_with_one_and_two_layers() -> None:
    """MaverIQ's four formulas (n = 1, 2; o = 10, 20) return the terms that made l(n, o)."""
    lat = {(1, 10): 0.05, (1, 20): 0.085, (2, 10): 0.08, (2, 20): 0.13}
    got = layer_terms(lat)
    tpot_layer = ((0.13 - 0.085) - (0.08 - 0.05)) / 10
    tpot_other = (0.085 - 0.05) / 10 - tpot_layer
    ttft_layer = (0.08 - 0.05) - 10 * tpot_layer
    ttft_other = 0.05 - ttft_layer - 10 * (tpot_layer + tpot_other)
    assert got.tpot_layer_s == pytest.approx(tpot_layer, abs=1e-15)
    assert got.tpot_other_s == pytest.approx(tpot_other, abs=1e-15)
    assert got.ttft_layer_s == pytest.approx(ttft_layer, abs=1e-15)
    assert got.ttft_other_s == pytest.approx(ttft_other, abs=1e-15)


@given(
    st.tuples(*(st.floats(1e-4, 0.05) for _ in range(4))),
    st.integers(1, 7),
    st.sampled_from([32, 40, 80]),
    st.integers(1, 500),
)
def test_full_depth_latency_is_exact_for_bilinear_latencies(
    terms: tuple[float, float, float, float], n1: int, depth: int, out: int
) -> None:
    """For any layer counts (n1, n1+1) the full model's latency(out) is TTFT + out*TPOT exactly."""
    lat = {(n, o): _lat(n, o, terms) for n in (n1, n1 + 1) for o in (10, 20)}
    fd = layer_terms(lat).at_depth(depth)
    assert fd.latency_s(out) == pytest.approx(_lat(depth, out, terms), rel=1e-7, abs=1e-9)


def test_layer_terms_rejects_wrong_shape() -> None:
    """Three points cannot be solved and say what is needed."""
    with pytest.raises(ConfigError, match="2 layer counts x 2 output lengths"):
        layer_terms({(1, 10): 1.0, (1, 20): 2.0, (2, 10): 1.5})


def test_memory_is_linear_in_layers() -> None:
    """Memory extrapolates along the line through the two fingerprints."""
    lat = {(n, o): _lat(n, o, (0.003, 0.002, 0.0007, 0.0008)) for n in (1, 2) for o in (10, 20)}
    fd = layer_terms(lat, {1: 2.0, 2: 2.6}).at_depth(32)
    assert fd.memory_gb == pytest.approx(2.0 + 31 * 0.6)


def test_batch_law() -> None:
    """L(bs) = L(1) + (bs-1) * max(0, L(2) - L(1)); a faster batch 2 adds nothing."""
    assert batch_law(1.0, 1.25, 5) == pytest.approx(2.0)
    assert batch_law(1.0, 0.9, 8) == 1.0
    with pytest.raises(ConfigError, match="batch size must be >= 1"):
        batch_law(1.0, 1.2, 0)


def test_read_fingerprints_groups_configurations(synthetic_csv: Callable[..., Path]) -> None:
    """Each (TP, PP, batch) becomes one fingerprint; gptj-6b resolves to the catalog name."""
    fps = read_fingerprints(synthetic_csv("gptj-6b"))
    assert len(fps) == len(TERMS)
    key = ConfigKey("gpt-j-6b", "fp16", "fp16", 1, 2, 1)
    assert fps[key].layer_counts == (2, 3)


def test_duplicates_first_file_wins_or_mean(tmp_path: Path) -> None:
    """Across files the first one wins by default; 'mean' averages them."""
    a = write_csv(tmp_path / "a.csv", fingerprint_rows("llama-2-7b", {(1, 1, 1): TERMS[1, 1, 1]}))
    slow = tuple(2 * v for v in TERMS[1, 1, 1])
    b = write_csv(tmp_path / "b.csv", fingerprint_rows("llama-2-7b", {(1, 1, 1): slow}))
    key = ConfigKey("llama-2-7b", "fp16", "fp16", 1, 1, 1)
    first = read_fingerprints([a, b])[key].latency_s[1, 10]
    mean = read_fingerprints([a, b], duplicates="mean")[key].latency_s[1, 10]
    assert mean == pytest.approx(1.5 * first)
    with pytest.raises(ConfigError, match="duplicates"):
        read_fingerprints([a], duplicates="last")


@pytest.mark.parametrize(
    ("column", "bad", "message"),
    [
        ("Latency", "fast", "not a number"),
        ("TP", "0", "whole number"),
        ("DTYPE", "fp7", "unknown DTYPE"),
        ("PP_Map", "1 1", "PP_Map must list 1 stage"),
        ("INT8_KV_Cache", "maybe", "True or False"),
    ],
)
def test_bad_rows_name_file_line_and_column(
    tmp_path: Path, column: str, bad: str, message: str
) -> None:
    """A malformed cell raises DataError with the file, the line and the column."""
    rows = fingerprint_rows("llama-2-7b", {(1, 1, 1): TERMS[1, 1, 1]})
    rows[2][HEADER.index(column)] = bad
    path = write_csv(tmp_path / "bad.csv", rows)
    with pytest.raises(DataError, match=rf"bad\.csv:4 column '{column}': .*{message}"):
        read_fingerprints(path)


def test_missing_column_is_reported(tmp_path: Path) -> None:
    """A file without Latency names the missing column."""
    path = tmp_path / "x.csv"
    path.write_text("Model,TP\nllama-2-7b,1\n")
    with pytest.raises(DataError, match="missing column"):
        read_fingerprints(path)


def test_an_unknown_dtype_lists_each_allowed_spelling_once() -> None:
    """`--dtype int3`'s error names every accepted spelling once (int4, int8 were listed twice)."""
    from sincere.estimate.fingerprint import parse_precision

    with pytest.raises(ConfigError, match="unknown DTYPE") as info:
        parse_precision("int3")
    allowed = str(info.value).split("allowed: ")[1].split(", ")
    assert len(allowed) == len(set(allowed)) and {"int4", "int8", "bfloat16"} <= set(allowed)
