"""Reading SINCERE's runs layout: cells, per-cell logs, errors with file/line/column/value."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sincere.core.errors import ConfigError, DataError
from sincere.workload.sincere_runs import (
    read_cell,
    read_cells,
    read_sincere_runs,
    select_cells,
    write_runs,
)
from sincere.workload.traces import detect_format, read_trace

CELLS = (
    "cell,env,strategy,traffic,mean_rate,sla_s,duration_s,received,processed,batches,"
    "model_switches,total_time_s,total_inference_time_s\n"
    "a,non-cc,BestBatch,gamma,4,60,20,4,2,1,1,19.5,\n"
    "b,cc,BestBatch+Timer,bursty,8,40,20,1,0,0,0,,\n"
)
REQUESTS_A = (
    "request_id,model,arrival_s,finished_s,batch_size\n"
    "r1,gemma-7b,0.5,12.0,2\n"
    "r0,llama3-8b,0.0,,\n"
    "r2,gemma-7b,1.0,12.0,2\n"
    "r3,granite-7b,3.0,,\n"
)
BATCHES_A = "model,start_s,end_s,size,processing_s\ngemma-7b,10.0,12.0,2,2.0\n"
LOADS_A = "model,start_s,end_s\ngemma-7b,1.0,10.0\n"


def make_runs(root: Path, **replace: str) -> Path:
    """A two-cell runs folder; ``replace`` overrides a file by name (e.g. ``a_requests``)."""
    files = {
        "cells": CELLS,
        "a_requests": REQUESTS_A,
        "a_batches": BATCHES_A,
        "a_loads": LOADS_A,
        "b_requests": "request_id,model,arrival_s,finished_s,batch_size\nx,llama3-8b,0,,\n",
        "b_batches": "model,start_s,end_s,size,processing_s\n",
        "b_loads": "model,start_s,end_s\n",
        **replace,
    }
    root.mkdir(parents=True, exist_ok=True)
    (root / "cells.csv").write_text(files["cells"])
    for cell in ("a", "b"):
        (root / cell).mkdir(exist_ok=True)
        for name in ("requests", "batches", "loads"):
            (root / cell / f"{name}.csv").write_text(files[f"{cell}_{name}"])
    return root


def test_cells_csv_is_read_with_its_settings_and_totals(tmp_path: Path) -> None:
    """Each cells.csv row becomes a RunCell; an empty total is None."""
    a, b = read_cells(make_runs(tmp_path))
    assert (a.name, a.env, a.strategy, a.traffic) == ("a", "non-cc", "BestBatch", "gamma")
    assert (a.mean_rate, a.sla_s, a.duration_s, a.received, a.processed) == (4, 60, 20, 4, 2)
    assert a.total_time_s == 19.5 and a.total_inference_time_s is None and not a.cc
    assert b.cc and b.total_time_s is None


def test_a_cell_log_is_sorted_by_time_with_nan_for_unserved(tmp_path: Path) -> None:
    """Requests sort by arrival; models index by first appearance; unserved are NaN."""
    root = make_runs(tmp_path)
    log = read_cell(root, read_cells(root)[0])
    assert log.models == ("llama3-8b", "gemma-7b", "granite-7b")
    assert log.arrival_s.tolist() == [0.0, 0.5, 1.0, 3.0]
    assert [log.models[m] for m in log.request_model] == [
        "llama3-8b", "gemma-7b", "gemma-7b", "granite-7b",
    ]  # fmt: skip
    assert np.isnan(log.finished_s[[0, 3]]).all() and log.finished_s[1] == 12.0
    assert log.batch_size.tolist() == [2] and log.num_loads == 1
    assert log.end_s == 20.0  # the nominal duration, later than any logged time


def test_to_requests_replays_arrivals_and_models_with_the_cell_sla(tmp_path: Path) -> None:
    """The workload of a cell: its arrivals and models, 50 new tokens, its SLA as the tier."""
    root = make_runs(tmp_path)
    reqs = read_cell(root, read_cells(root)[0]).to_requests()
    assert reqs.arrival_at.tolist() == [0.0, 0.5, 1.0, 3.0]
    assert reqs.output_tokens.tolist() == [50] * 4 and reqs.tiers[0].ttlt_s == 60.0


@pytest.mark.parametrize(
    ("replace", "match"),
    [
        (
            {"a_requests": REQUESTS_A.replace("0.5,12.0", "soon,12.0")},
            r"a/requests.csv:2 column 'arrival_s'.*not a number.*'soon'",
        ),
        (
            {"a_requests": REQUESTS_A.replace("1.0,12.0", "1.0,0.2")},
            r"a/requests.csv:4 column 'finished_s'.*finished before it arrived.*'0.2'",
        ),
        (
            {"a_batches": BATCHES_A.replace(",2,2.0", ",0,2.0")},
            r"a/batches.csv:2 column 'size'.*>= 1.*'0'",
        ),
        (
            {"a_loads": "model,start_s,end_s\ngemma-7b,5.0,1.0\n"},
            r"a/loads.csv:2 column 'end_s'.*ends before it starts.*'1.0'",
        ),
        (
            {"a_requests": "request_id,model,arrival_s\nr,gemma-7b,0\n"},
            r"a/requests.csv:1.*missing column",
        ),
        (
            {"a_requests": REQUESTS_A.replace("r3,granite-7b", "r3,")},
            r"a/requests.csv:5 column 'model'.*empty value",
        ),
    ],
)
def test_a_malformed_cell_file_names_file_line_column_and_value(
    tmp_path: Path, replace: dict[str, str], match: str
) -> None:
    """Every malformed value of a cell's files raises a DataError locating it."""
    root = make_runs(tmp_path, **replace)
    with pytest.raises(DataError, match=match):
        read_cell(root, read_cells(root)[0])


@pytest.mark.parametrize(
    ("cells", "match"),
    [
        (CELLS.replace("a,non-cc", "a,tdx"), r"cells.csv:2 column 'env'.*one of.*'tdx'"),
        (CELLS.replace("b,cc", "a,cc"), r"cells.csv:3 column 'cell'.*duplicate.*'a'"),
        (CELLS.replace(",60,20,", ",60,0,"), r"cells.csv:2 column 'duration_s'.*> 0.*'0'"),
        (CELLS.replace(",4,2,1,1,", ",4,2.5,1,1,"), r"cells.csv:2 column 'processed'.*integer"),
    ],
)
def test_a_malformed_cells_csv_names_line_column_and_value(
    tmp_path: Path, cells: str, match: str
) -> None:
    """cells.csv is checked row by row too."""
    with pytest.raises(DataError, match=match):
        read_cells(make_runs(tmp_path, cells=cells))


def test_missing_folders_and_files_are_named(tmp_path: Path) -> None:
    """A runs folder without cells.csv, a cell without a folder or a file: clear errors."""
    with pytest.raises(DataError, match=r"no cells\.csv"):
        read_cells(tmp_path)
    root = make_runs(tmp_path)
    (root / "a" / "loads.csv").unlink()
    with pytest.raises(DataError, match=r"a/loads.csv.*missing file"):
        read_cell(root, read_cells(root)[0])
    cell_b = read_cells(root)[1]
    for f in (root / "b").iterdir():
        f.unlink()
    (root / "b").rmdir()
    with pytest.raises(DataError, match="without a folder"):
        read_cell(root, cell_b)


def test_select_cells_takes_comma_separated_globs_and_rejects_no_match(tmp_path: Path) -> None:
    """Patterns are shell globs over names; a pattern matching nothing is an error."""
    cells = read_cells(make_runs(tmp_path))
    assert [c.name for c in select_cells(cells, "b,zz*")] == ["b"]
    assert len(select_cells(cells, None)) == 2
    with pytest.raises(ConfigError, match="no cell matches"):
        select_cells(cells, "nothing*")


def test_a_cell_is_a_trace_for_the_trace_readers(tmp_path: Path) -> None:
    """read_trace takes a cell folder or its requests.csv: arrivals from 0, models, SLA tier."""
    root = make_runs(tmp_path)
    by_folder = read_trace(root / "a")
    assert detect_format(root / "a" / "requests.csv") == "sincere-runs"
    by_file = read_trace(root / "a" / "requests.csv")
    assert by_folder.arrival_at.tolist() == by_file.arrival_at.tolist() == [0.0, 0.5, 1.0, 3.0]
    assert by_folder.models == ("llama3-8b", "gemma-7b", "granite-7b")
    assert by_folder.tiers[0].ttlt_s == 60.0
    assert read_sincere_runs(root / "a", prompt_tokens=7).prompt_tokens.tolist() == [7] * 4


def test_written_runs_read_back_the_same(tmp_path: Path) -> None:
    """write_runs is the reader's inverse (millisecond times)."""
    root = make_runs(tmp_path / "in")
    cells = read_cells(root)
    logs = [read_cell(root, c) for c in cells]
    out = write_runs(tmp_path / "out", logs)
    again = read_cells(out)
    assert again == cells
    for old, new in zip(logs, (read_cell(out, c) for c in again), strict=True):
        assert old.models == new.models
        np.testing.assert_allclose(old.finished_s, new.finished_s)
        np.testing.assert_allclose(old.load_end_s, new.load_end_s)


def test_the_published_runs_read_and_agree_with_their_totals(shared_data: Path) -> None:
    """Each published cell's files agree with cells.csv: received, processed, loads."""
    root = shared_data / "sincere-runs"
    cells = read_cells(root)
    assert len(cells) == 144
    for cell in cells[::12]:
        log = read_cell(root, cell)
        assert len(log.arrival_s) == cell.received
        assert int(np.isfinite(log.finished_s).sum()) == cell.processed
        assert log.num_loads == cell.model_switches
        assert int(log.batch_size.sum()) == cell.processed


def test_a_workload_can_replay_a_cells_arrivals(tmp_path: Path) -> None:
    """arrival: {kind: trace, path: <cell folder>} replays the cell's arrival times."""
    from sincere.workload import generate, load_workload_config

    root = make_runs(tmp_path)
    config = load_workload_config(
        {
            "arrival": {"kind": "trace", "path": str(root / "a")},
            "num_requests": 4,
            "lengths": {
                "prompt": {"kind": "fixed", "tokens": 8},
                "output": {"kind": "fixed", "tokens": 4},
            },
        }
    )
    assert generate(config, seed=0).arrival_at.tolist() == [0.0, 0.5, 1.0, 3.0]


def test_trace_stats_reads_a_cell_folder(tmp_path: Path) -> None:
    """`sincere trace stats <cell folder> --json` counts its requests per model."""
    import json

    from typer.testing import CliRunner

    from sincere.cli.app import _register, app

    _register()
    root = make_runs(tmp_path)
    result = CliRunner().invoke(app, ["trace", "stats", str(root / "a"), "--json"])
    assert result.exit_code == 0, result.output
    stats = json.loads(result.output)
    assert stats["num_requests"] == 4 and stats["num_per_model"]["gemma-7b"] == 2
