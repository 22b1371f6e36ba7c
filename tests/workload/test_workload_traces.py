"""Trace readers and writers: published formats, precise errors, our own round trip."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from sincere.core.errors import ConfigError, DataError
from sincere.core.request import RequestArrays, Tier
from sincere.workload.arrivals import Constant
from sincere.workload.config import WorkloadConfig, generate
from sincere.workload.traces import detect_format, read_lengths, read_trace, write_trace


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("service", "count", "rate", "prompt_mean", "output_mean"),
    # The files hold 19,366 and 8,819 data rows (shared/data/README says 19,365 / 8,818).
    [("conv", 19_366, 5.53, 1155, 211), ("code", 8_819, 2.57, 2048, 28)],
)
def test_azure_2023_traces(
    shared_data: Path, service: str, count: int, rate: float, prompt_mean: int, output_mean: int
) -> None:
    """Both Azure 2023 traces read with every row, about an hour long, with sane lengths
    (read speed: benchmarks/workload_speed.py)."""
    path = shared_data / "traces" / f"AzureLLMInferenceTrace_{service}.csv"
    assert detect_format(path) == "azure"
    req = read_trace(path)
    assert len(req) == count
    assert req.arrival_at[0] == 0.0 and 3400 < req.arrival_at[-1] < 3600
    assert (len(req) - 1) / req.arrival_at[-1] == pytest.approx(rate, rel=0.01)
    assert req.prompt_tokens.mean() == pytest.approx(prompt_mean, rel=0.01)
    assert req.output_tokens.mean() == pytest.approx(output_mean, rel=0.02)


def test_azure_2024_layout_with_zones(tmp_path: Path) -> None:
    """Timestamps with a zone offset and other precisions (2024 layout) parse to seconds."""
    path = _write(
        tmp_path / "azure24.csv",
        "TIMESTAMP,ContextTokens,GeneratedTokens\n"
        "2024-05-10 00:00:01.500000+00:00,100,20\n"
        "2024-05-10 02:00:00+02:00,200,30\n"
        "2024-05-10T00:00:03Z,300,40\n",
    )
    req = read_trace(path)
    np.testing.assert_allclose(req.arrival_at, [0.0, 1.5, 3.0])
    assert req.prompt_tokens.tolist() == [200, 100, 300]  # sorted by time


@pytest.mark.parametrize(
    ("body", "match"),
    [
        (
            "2023-11-16 18:15:46.68,12,3\n2023-11-16 18:15:47.00,abc,4\n",
            r":3 column 'ContextTokens': not a number \(value 'abc'\)",
        ),
        (
            "2023-11-16 18:15:46.68,12,3\n2023-11-16 18:15:47.00,5,0\n",
            r":3 column 'GeneratedTokens': expected an integer >= 1 \(value '0'\)",
        ),
        (
            "2023-11-16 18:15:46.68,12,3\nyesterday,5,6\n",
            r":3 column 'TIMESTAMP': timestamp in a different form",
        ),
        (
            "2023-11-16 18:15:46.68,12,3\n2023-11-16 18:15:47.00,5\n",
            r":3: expected 3 fields, found 2",
        ),
        ("2023-11-16 18:15:46.68,12.5,3\n", r":2 column 'ContextTokens': expected an integer"),
    ],
)
def test_malformed_azure_rows(tmp_path: Path, body: str, match: str) -> None:
    """A malformed row names file, line, column and value."""
    path = _write(tmp_path / "bad.csv", "TIMESTAMP,ContextTokens,GeneratedTokens\n" + body)
    with pytest.raises(DataError, match=match):
        read_trace(path)


def test_burstgpt(tmp_path: Path) -> None:
    """BurstGPT keeps models by first appearance and drops failed rows with a warning."""
    path = _write(
        tmp_path / "burst.csv",
        "Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type\n"
        "5,ChatGPT,472,18,490,Conversation log\n"
        "45,GPT-4,1087,0,1087,Conversation log\n"
        "118,GPT-4,417,505,922,API log\n",
    )
    assert detect_format(path) == "burstgpt"
    with pytest.warns(UserWarning, match="dropped 1 failed"):
        req = read_trace(path)
    assert req.models == ("ChatGPT", "GPT-4")
    assert req.arrival_at.tolist() == [0.0, 113.0]
    assert req.output_tokens.tolist() == [18, 505]
    with pytest.raises(DataError, match=r":3 column 'Response tokens'"):
        read_trace(path, drop_failed=False)


def test_sharegpt(tmp_path: Path) -> None:
    """ShareGPT takes the first exchange, counts tokens, and gets arrivals from a process."""
    records = [
        {
            "id": "a",
            "conversations": [
                {"from": "human", "value": "x" * 40},
                {"from": "gpt", "value": "y" * 400},
            ],
        },
        {"id": "b", "conversations": [{"from": "human", "value": "hi"}]},
        {
            "id": "c",
            "conversations": [
                {"from": "human", "value": "q" * 8},
                {"from": "gpt", "value": "r" * 9},
            ],
        },
    ]
    path = _write(tmp_path / "sg.json", json.dumps(records))
    assert detect_format(path) == "sharegpt"
    with pytest.warns(UserWarning, match="skipped 1 conversations"):
        req = read_trace(path, arrival=Constant(2.0))
    assert len(req) == 2 and req.prompts[0] == "x" * 40
    assert req.prompt_tokens[0] >= 8 and req.output_tokens[0] > req.prompt_tokens[0]
    np.testing.assert_allclose(req.arrival_at, [0.0, 0.5])
    bad = _write(tmp_path / "sg2.json", json.dumps([{"conversations": [{"from": "human"}, 3]}]))
    with pytest.raises(DataError, match=r"column 'conversations\[0\]'"):
        read_trace(bad, format="sharegpt")


def test_vidur_processed_trace_with_arrival_times(tmp_path: Path) -> None:
    """Vidur's processed traces (arrived_at, num_prefill_tokens, num_decode_tokens) read
    as they are, by header."""
    path = _write(
        tmp_path / "splitwise_conv.csv",
        "arrived_at,num_prefill_tokens,num_decode_tokens\n"
        "0.0,374,44\n4.314579,396,109\n4.541877,879,55\n",
    )
    assert detect_format(path) == "vidur"
    req = read_trace(path)
    np.testing.assert_allclose(req.arrival_at, [0.0, 4.314579, 4.541877])
    assert req.prompt_tokens.tolist() == [374, 396, 879]
    assert req.output_tokens.tolist() == [44, 109, 55]


def test_vidur_length_only_trace_takes_its_arrivals_from_a_process(tmp_path: Path) -> None:
    """A length-only Vidur trace (no arrived_at, extra columns) gets the given arrivals;
    without a process it is refused (no invented rate); read for lengths it reads."""
    path = _write(
        tmp_path / "arxiv.csv",
        "num_prefill_tokens,num_decode_tokens,num_total_tokens,pd_ratio\n"
        "3772,54,3826,69.85\n2015,156,2171,12.91\n1,2048,2049,0.0005\n",
    )
    req = read_trace(path, arrival=Constant(rate=2.0))
    np.testing.assert_allclose(req.arrival_at, [0.0, 0.5, 1.0])
    assert req.prompt_tokens.tolist() == [3772, 2015, 1]
    with pytest.raises(ConfigError, match=r"arxiv\.csv: this trace has no arrival times"):
        read_trace(path)
    assert read_lengths(path).prompt_tokens.tolist() == [3772, 2015, 1]


def test_a_length_only_trace_as_arrivals_is_refused_and_as_lengths_is_read(
    tmp_path: Path,
) -> None:
    """In a workload, a length-only Vidur file gives lengths beside an arrival process, and
    as the arrival trace it is refused naming the file and the way out."""
    path = _write(tmp_path / "v.csv", "num_prefill_tokens,num_decode_tokens\n30,4\n50,6\n")
    lengths = {"source": str(path)}
    good = {"num_requests": 4, "arrival": {"kind": "poisson", "rate": 3.0}, "lengths": lengths}
    req = generate(WorkloadConfig.model_validate(good), seed=0)
    assert set(req.prompt_tokens.tolist()) <= {30, 50}
    bad = {**good, "arrival": {"kind": "trace", "path": str(path)}}
    with pytest.raises(ConfigError, match=r"v\.csv: this trace has no arrival times.*lengths: "):
        generate(WorkloadConfig.model_validate(bad), seed=0)


def test_vidur_rows_with_zero_tokens_are_named(tmp_path: Path) -> None:
    """A row with 0 decode tokens is an error naming file, line, column and value."""
    path = _write(tmp_path / "v.csv", "num_prefill_tokens,num_decode_tokens\n5,5\n7,0\n")
    want = r"v.csv:3 column 'num_decode_tokens': expected an integer >= 1 \(value '0'\)"
    with pytest.raises(DataError, match=want):
        read_trace(path)


def test_mooncake(tmp_path: Path) -> None:
    """Mooncake JSONL: ms timestamps become seconds; a bad line is reported by number."""
    lines = [
        {"timestamp": 0, "input_length": 6955, "output_length": 52, "hash_ids": [0, 1]},
        {"timestamp": 1500, "input_length": 120, "output_length": 9, "hash_ids": [2]},
    ]
    path = _write(tmp_path / "mc.jsonl", "\n".join(json.dumps(x) for x in lines) + "\n")
    assert detect_format(path) == "mooncake"
    req = read_trace(path)
    assert req.arrival_at.tolist() == [0.0, 1.5] and req.prompt_tokens.tolist() == [6955, 120]
    bad = _write(
        tmp_path / "bad.jsonl", json.dumps(lines[0]) + '\n{"timestamp": 3, "input_length": "x"}\n'
    )
    with pytest.raises(DataError, match=r":2 column 'input_length': expected int"):
        read_trace(bad, format="mooncake")
    broken = _write(tmp_path / "broken.jsonl", json.dumps(lines[0]) + "\n{oops\n")
    with pytest.raises(DataError, match=r":2: invalid JSON"):
        read_trace(broken, format="mooncake")


def test_mooncake_hash_ids_become_block_ids(tmp_path: Path) -> None:
    """hash_ids are kept as 512-token block ids, in arrival order, and written back."""
    lines = [
        {"timestamp": 900, "input_length": 1100, "output_length": 5, "hash_ids": [0, 1, 2]},
        {"timestamp": 0, "input_length": 600, "output_length": 9, "hash_ids": [0, 7]},
    ]
    path = _write(tmp_path / "mc.jsonl", "\n".join(json.dumps(x) for x in lines) + "\n")
    req = read_trace(path)
    assert req.block_tokens == 512
    assert [b.tolist() for b in req.block_ids] == [[0, 7], [0, 1, 2]]
    write_trace(req, tmp_path / "back.jsonl", "mooncake")
    back = read_trace(tmp_path / "back.jsonl")
    assert [b.tolist() for b in back.block_ids] == [[0, 7], [0, 1, 2]]


@pytest.mark.parametrize(
    ("hash_ids", "message"),
    [
        ("[0, 1]", "expected a list of integers"),
        ([0, "x"], "expected a list of integers"),
        ([0, True], "expected a list of integers"),
        ([0, -3], "expected a list of integers"),
        ([0, 2**63], "expected a list of integers"),
        ([0, 1, 2], r"3 blocks of 512 tokens is more than the 600-token prompt has \(at most 2\)"),
    ],
)
def test_mooncake_malformed_hash_ids_are_refused(
    tmp_path: Path, hash_ids: object, message: str
) -> None:
    """Malformed hash_ids (not integers, more blocks than the prompt) name file, line, value."""
    good = {"timestamp": 0, "input_length": 600, "output_length": 9, "hash_ids": [0]}
    bad = {"timestamp": 5, "input_length": 600, "output_length": 9, "hash_ids": hash_ids}
    path = _write(tmp_path / "mc.jsonl", json.dumps(good) + "\n" + json.dumps(bad) + "\n")
    with pytest.raises(DataError, match=r"mc.jsonl:2 column 'hash_ids': " + message) as err:
        read_trace(path)
    assert "value" in str(err.value)


def test_sincere_prompts(shared_data: Path, tmp_path: Path) -> None:
    """SINCERE's 2,172 prompts read with their aliases and a 50-token output cap."""
    req = read_trace(shared_data / "sincere" / "prompts.jsonl", arrival=Constant(rate=1.0))
    assert len(req) == 2172 and len(req.prompts) == 2172
    assert set(req.output_tokens.tolist()) == {50} and set(req.max_tokens.tolist()) == {50}
    assert req.prompt_tokens.min() >= 1 and len(req.models) >= 1
    small = _write(tmp_path / "p.json", json.dumps([{"prompt": "abcd" * 10, "model_alias": "m"}]))
    one = read_trace(small, max_new_tokens=7, arrival=Constant(rate=1.0))
    assert one.output_tokens.tolist() == [7] and one.prompt_tokens.tolist() == [10]


def _sample_requests() -> RequestArrays:
    tiers = (Tier("gold", ttft_s=1.0, tbt_s=0.08, priority=1), Tier("batch", ttlt_s=600.0))
    return RequestArrays.build(
        [0.0, 0.25, 1.5],
        [10, 200, 3000],
        [5, 60, 700],
        models=("llama-3-8b", "gemma-7b"),
        model=[0, 1, 0],
        tiers=tiers,
        tier=[1, 0, 1],
        max_tokens=[16, 64, 1024],
        priority=[2, 1, 2],
        budget_usd=[float("nan"), 0.01, 0.5],
        prompts=['a, "quoted" prompt', None, "x\ny"],
    )


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_own_format_round_trip(tmp_path: Path, suffix: str) -> None:
    """Our own CSV / Parquet table round-trips every column, tiers and prompts included."""
    req = _sample_requests()
    path = tmp_path / f"requests{suffix}"
    write_trace(req, path)
    back = read_trace(path)
    for name in ("arrival_at", "prompt_tokens", "output_tokens", "max_tokens", "priority"):
        np.testing.assert_array_equal(getattr(back, name), getattr(req, name))
    np.testing.assert_array_equal(back.budget_usd, req.budget_usd)
    # indices may be renumbered (by first appearance); what each request refers to may not
    assert [back.models[i] for i in back.model] == [req.models[i] for i in req.model]
    assert [back.tiers[i] for i in back.tier] == [req.tiers[i] for i in req.tier]
    assert back.prompts[0] == req.prompts[0] and back.prompts[2] == "x\ny"


def test_own_csv_errors(tmp_path: Path) -> None:
    """Our CSV reader names the bad line and column."""
    path = _write(
        tmp_path / "r.csv", "arrival_at,model,prompt_tokens,output_tokens\n0.5,m,10,3\n0.1,m,10,3\n"
    )
    with pytest.raises(DataError, match=r":3 column 'arrival_at': arrival_at must not decrease"):
        read_trace(path)


@pytest.mark.parametrize("fmt", ["azure", "mooncake", "burstgpt", "vidur"])
def test_third_party_writers(tmp_path: Path, fmt: str) -> None:
    """Writing a third-party layout and reading it back keeps times and lengths."""
    req = _sample_requests()
    ext = ".jsonl" if fmt == "mooncake" else ".csv"
    path = tmp_path / f"out{ext}"
    write_trace(req, path, fmt)
    back = read_trace(path)
    np.testing.assert_allclose(back.arrival_at, req.arrival_at, atol=1e-3)
    np.testing.assert_array_equal(back.prompt_tokens, req.prompt_tokens)
    np.testing.assert_array_equal(back.output_tokens, req.output_tokens)


def test_detection_failures(tmp_path: Path) -> None:
    """Unknown extensions and headers are reported, listing what is known."""
    with pytest.raises(DataError, match=r"unknown trace extension '.txt'.*azure"):
        read_trace(_write(tmp_path / "t.txt", "hello"))
    with pytest.raises(DataError, match="matches no known trace format"):
        read_trace(_write(tmp_path / "t.csv", "a,b\n1,2\n"))
    with pytest.raises(DataError, match="no such trace file"):
        read_trace(tmp_path / "missing.csv")


def test_writers_and_plots_create_missing_folders(tmp_path: Path) -> None:
    """`trace convert IN out/new/x.csv` and `--plot out/new/x.png` make the folders."""
    from sincere.workload.stats import plot_trace

    req = _sample_requests()
    write_trace(req, tmp_path / "a" / "b" / "t.csv", "vidur")
    assert len(read_trace(tmp_path / "a" / "b" / "t.csv")) == len(req)
    plot_trace(req, tmp_path / "c" / "d" / "t.png")
    assert (tmp_path / "c" / "d" / "t.png").stat().st_size > 1000
