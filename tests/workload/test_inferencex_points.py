"""InferenceX's operating-points CSV: good rows read field by field, every kind of bad value
refused naming the file, line, column, value and what is allowed, filters."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest

from sincere.core.errors import ConfigError, DataError
from sincere.workload.inferencex import (
    REQUIRED_COLUMNS,
    parse_filter,
    read_operating_points,
    select_points,
)

AGG = {
    "id": "dsr1_fp8_c64", "silicon_data_source": "db; silicon_concurrency=64; vllm",
    "backend": "sglang", "backend_version": "0.5.9", "model_path": "deepseek-ai/DeepSeek-R1",
    "system": "b200_sxm", "precision": "fp8", "mode": "agg", "isl": "1024", "osl": "1024",
    "gemm_quant_mode": "fp8", "moe_quant_mode": "fp8_block", "batch_size": "64",
    "tp_size": "8", "pp_size": "1", "attention_dp_size": "1", "moe_tp_size": "1",
    "moe_ep_size": "8", "silicon_ttft_ms": "250.5", "silicon_tpot_ms": "20.25",
}  # fmt: skip
"""An aggregated DeepSeek-R1 point: 64 clients on 8 B200s, experts over the 8."""
DISAGG = {
    "id": "dsr1_disagg", "silicon_data_source": "db; silicon_concurrency=512",
    "backend": "trtllm", "backend_version": "", "model_path": "deepseek-ai/DeepSeek-R1",
    "system": "gb200", "precision": "fp4", "mode": "disagg", "isl": "8192", "osl": "1024",
    "gemm_quant_mode": "nvfp4", "moe_quant_mode": "nvfp4", "batch_size": "",
    "prefill_batch_size": "1", "prefill_num_workers": "2", "prefill_tp_size": "4",
    "prefill_pp_size": "1", "prefill_attention_dp_size": "4", "prefill_moe_tp_size": "1",
    "prefill_moe_ep_size": "4", "decode_num_workers": "1", "decode_tp_size": "32",
    "decode_pp_size": "1", "decode_attention_dp_size": "32", "decode_moe_tp_size": "1",
    "decode_moe_ep_size": "32", "silicon_ttft_ms": "900", "silicon_tpot_ms": "30",
}  # fmt: skip
"""A disaggregated point: 2 prefill workers of 4 GPUs, one decode worker of 32."""


def write_points(
    path: Path, *rows: dict[str, str], columns: tuple[str, ...] = REQUIRED_COLUMNS
) -> Path:
    """``rows`` as a CSV in the file's column order (columns a row lacks left empty)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(columns), extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    path.write_text(buf.getvalue(), encoding="utf-8")
    return path


def test_an_agg_row_reads_field_by_field(tmp_path: Path) -> None:
    """Every column lands in its field; the clients are batch_size x attention DP."""
    (point,) = read_operating_points(write_points(tmp_path / "p.csv", AGG))
    assert (point.id, point.line, point.backend, point.backend_version) == (
        "dsr1_fp8_c64",
        2,
        "sglang",
        "0.5.9",
    )
    assert (point.model, point.system, point.precision, point.mode) == (
        "deepseek-ai/DeepSeek-R1",
        "b200_sxm",
        "fp8",
        "agg",
    )
    assert (point.isl, point.osl, point.batch_size, point.clients) == (1024, 1024, 64, 64)
    assert (point.tp, point.pp, point.attention_dp, point.moe_tp, point.moe_ep) == (8, 1, 1, 1, 8)
    assert (point.gemm_quant, point.moe_quant) == ("fp8", "fp8_block")
    assert point.source_concurrency == 64
    assert (point.ttft_ms, point.tpot_ms) == (250.5, 20.25)
    assert point.prefill is None and point.decode is None


def test_a_disagg_row_keeps_both_sides(tmp_path: Path) -> None:
    """The prefill_* and decode_* columns become the two worker groups; agg columns empty."""
    (point,) = read_operating_points(write_points(tmp_path / "p.csv", DISAGG))
    assert point.mode == "disagg" and point.batch_size == 0 and point.tp is None
    assert point.prefill is not None and point.decode is not None
    assert (point.prefill.num_workers, point.prefill.tp, point.prefill.moe_ep) == (2, 4, 4)
    assert (point.decode.num_workers, point.decode.tp, point.decode.batch_size) == (1, 32, None)
    assert point.source_concurrency == 512 and point.backend_version == ""


def test_rows_of_any_system_are_read(tmp_path: Path) -> None:
    """An H200 row and a system no replay knows are read as they are (the replay places or
    skips them: tests/experiment/test_inferencex.py)."""
    rows = [AGG | {"system": "h200_sxm"}, AGG | {"id": "x2", "system": "mi355x"}]
    points = read_operating_points(write_points(tmp_path / "p.csv", *rows))
    assert [p.system for p in points] == ["h200_sxm", "mi355x"]


def test_attention_dp_multiplies_the_clients(tmp_path: Path) -> None:
    """batch_size is per attention-DP rank: 16 per rank x 4 ranks = 64 clients."""
    row = AGG | {"batch_size": "16", "attention_dp_size": "4", "tp_size": "2"}
    (point,) = read_operating_points(write_points(tmp_path / "p.csv", row))
    assert point.clients == 64


BAD = [
    ("backend", "tensorrt", "allowed: vllm, sglang, trtllm"),
    ("system", "", "missing; allowed: a non-empty value"),
    ("precision", "nvfp4", "allowed: fp8, fp4, bf16, int4 (or empty)"),
    ("mode", "split", "allowed: agg, disagg"),
    ("isl", "0", "expected an integer >= 1"),
    ("osl", "1e3.5", "expected an integer >= 1"),
    ("batch_size", "", "missing; allowed: an integer >= 1"),
    ("batch_size", "2.5", "expected an integer >= 1"),
    ("tp_size", "", "missing on an agg row; allowed: an integer >= 1"),
    ("moe_ep_size", "-1", "expected an integer >= 0"),
    ("silicon_ttft_ms", "-3", "expected a finite number > 0"),
    ("silicon_tpot_ms", "nan", "expected a finite number > 0"),
    ("model_path", "", "missing; allowed: a non-empty value"),
    ("id", "", "missing; allowed: a non-empty identifier"),
]  # fmt: skip


@pytest.mark.parametrize(("column", "value", "allowed"), BAD)
def test_a_bad_value_names_file_line_column_value_and_what_is_allowed(
    tmp_path: Path, column: str, value: str, allowed: str
) -> None:
    """The second data row (line 3) is bad: the error points at it and says what would do."""
    path = write_points(tmp_path / "p.csv", AGG, AGG | {"id": "second", column: value})
    with pytest.raises(DataError) as err:
        read_operating_points(path)
    message = str(err.value)
    assert f"p.csv:3 column {column!r}" in message
    assert allowed in message and f"(value {value!r})" in message


def test_a_duplicate_id_names_both_lines(tmp_path: Path) -> None:
    """Ids identify points in every output: a second use is refused."""
    path = write_points(tmp_path / "p.csv", AGG, DISAGG, AGG)
    with pytest.raises(DataError, match=r"p.csv:4 column 'id': duplicate id \(first on line 2\)"):
        read_operating_points(path)


def test_missing_columns_are_listed(tmp_path: Path) -> None:
    """A file without the measured columns is refused before any row is read."""
    columns = tuple(c for c in REQUIRED_COLUMNS if not c.startswith("silicon_t"))
    path = write_points(tmp_path / "p.csv", AGG, columns=columns)
    with pytest.raises(DataError, match="missing columns silicon_ttft_ms, silicon_tpot_ms"):
        read_operating_points(path)


def test_an_empty_file_a_blank_line_and_no_file_are_refused(tmp_path: Path) -> None:
    """Header only, a blank line between rows, a path that is not there."""
    with pytest.raises(DataError, match="no operating points"):
        read_operating_points(write_points(tmp_path / "empty.csv"))
    path = write_points(tmp_path / "blank.csv", AGG, DISAGG)
    lines = path.read_text().splitlines()
    path.write_text("\n".join([lines[0], lines[1], "", lines[2]]) + "\n")
    with pytest.raises(DataError, match=r"blank\.csv:3"):
        read_operating_points(path)
    with pytest.raises(DataError, match="no such file"):
        read_operating_points(tmp_path / "absent.csv")


def test_filters_keep_alternatives_of_a_key_and_all_keys(tmp_path: Path) -> None:
    """backend=sglang,backend=trtllm keeps both; adding mode=agg keeps only the agg one."""
    points = read_operating_points(write_points(tmp_path / "p.csv", AGG, DISAGG))
    both = parse_filter("backend=sglang, backend=trtllm")
    assert both == {"backend": {"sglang", "trtllm"}}
    assert [p.id for p in select_points(points, both)] == ["dsr1_fp8_c64", "dsr1_disagg"]
    agg = parse_filter("backend=sglang,backend=trtllm,mode=agg")
    assert [p.id for p in select_points(points, agg)] == ["dsr1_fp8_c64"]
    by_model = parse_filter("model=deepseek-ai/DeepSeek-R1,system=gb200")
    assert [p.id for p in select_points(points, by_model)] == ["dsr1_disagg"]
    assert parse_filter("") == {}


@pytest.mark.parametrize(
    ("text", "match"),
    [("backend", "a filter term is key=value"), ("gpu=b200", "unknown filter key.*'gpu'.*"
                                                  "allowed: backend, backend_version, mode")],
)  # fmt: skip
def test_a_bad_filter_is_refused(text: str, match: str) -> None:
    """A term without '=' or an unknown key names itself and the allowed keys."""
    with pytest.raises(ConfigError, match=match):
        parse_filter(text)


def test_the_published_file_reads_whole(shared_data: Path) -> None:
    """All 3,337 rows: both modes, the four systems, the measured means positive."""
    path = shared_data / "serving-runs" / "inferencex" / "blackwell_operating_points.csv"
    points = read_operating_points(path)
    assert len(points) == 3337
    assert {p.mode for p in points} == {"agg", "disagg"}
    assert {p.system for p in points} == {"b200_sxm", "b300_sxm", "gb200", "gb300"}
    assert all(p.ttft_ms > 0 and p.tpot_ms > 0 for p in points)
