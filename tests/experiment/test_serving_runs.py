"""``sincere validate runs``: the serving-run reader, the replay, its errors and the CLI."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from sincere.cli.app import _register, app, main
from sincere.core.errors import ConfigError, DataError
from sincere.experiment.serving_runs import (
    catalog_model,
    compare_run,
    replay_config,
    replay_setup,
)
from sincere.experiment.serving_runs_report import error_stats, write_runs_report
from sincere.workload.serving_runs import read_serving_run, read_serving_runs

LINEAR = {"kind": "inferno", "params": {"alpha_ms": 10, "beta_ms": 0, "gamma_ms": 20,
                                        "delta_ms": 0.1}}  # fmt: skip
"""Decode step 10 ms; a prefill of n tokens 20 + 0.1·n ms."""
WALL, ENGINE = 1.7e9, 5000.0  # the two clocks' origins in the hand-made run
SERVING_RUNS = "serving-runs/llmservingsim-vllm"


def _request(rid: str, at: float, prompt: int, out: int, prefill_ms: float) -> dict[str, Any]:
    """A request served alone under LINEAR: queued and scheduled on arrival."""
    first = at + prefill_ms / 1e3
    return {
        "request_id": rid, "input_toks": prompt, "output_toks": out, "arrival_time": WALL + at,
        "queued_ts": ENGINE + at, "scheduled_ts": ENGINE + at, "first_token_ts": ENGINE + first,
        "last_token_ts": ENGINE + first + (out - 1) * 0.010,
    }  # fmt: skip


def write_tiny_run(folder: Path) -> Path:
    """Two requests 1 s apart; the second shares its first 64 prompt tokens with the first.

    Under LINEAR the first prefills 100 tokens (30 ms) and decodes 2 steps; the second
    finds 64 tokens cached, prefills 36 (23.6 ms) and decodes 1 step.
    """
    folder.mkdir(parents=True)
    meta = {
        "model": "meta-llama/Llama-3.1-8B", "vllm_version": "0.19.0",
        "engine_kwargs": {"tensor_parallel_size": 1, "data_parallel_size": 1,
                          "enable_expert_parallel": False, "max_num_seqs": 8,
                          "max_num_batched_tokens": 2048, "max_model_len": None,
                          "dtype": "bfloat16"},
        "dataset_path": "workloads/tiny.jsonl",
        "kv_cache": {"num_gpu_blocks": 1000, "block_size": 16},
    }  # fmt: skip
    (folder / "meta.json").write_text(json.dumps(meta))
    hardware = {"nodes": [{"instances": [{"hardware": "RTX4090", "tp_size": 1}]}]}
    (folder / "config.json").write_text(json.dumps(hardware))
    rows = [_request("a", 0.0, 100, 3, 30.0), _request("b", 1.0, 100, 2, 23.6)]
    (folder / "requests.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    first = list(range(1, 101))
    second = first[:64] + list(range(1001, 1037))
    inputs = [{"input_toks": 100, "output_toks": o, "input_tok_ids": ids}
              for o, ids in ((3, first), (2, second))]  # fmt: skip
    (folder.parent / "tiny.jsonl").write_text("".join(json.dumps(r) + "\n" for r in inputs))
    return folder


def test_the_reader_takes_the_setting_the_clocks_and_the_token_ids(tmp_path: Path) -> None:
    """meta, hardware, per-request timestamps and the inputs found beside the run."""
    run = read_serving_run(write_tiny_run(tmp_path / "runs" / "tiny"))
    assert (run.model, run.accelerator, len(run)) == ("meta-llama/Llama-3.1-8B", "RTX4090", 2)
    assert run.engine.num_gpu_blocks == 1000 and run.engine.enable_prefix_caching
    assert run.clock_offset_s == pytest.approx(ENGINE - WALL)
    assert run.arrival_ts == pytest.approx([ENGINE, ENGINE + 1.0])
    assert [len(t) for t in run.prompt_token_ids] == [100, 100]
    assert run.dataset == tmp_path / "runs" / "tiny.jsonl"


def test_the_engine_clock_is_set_by_the_fastest_request(tmp_path: Path) -> None:
    """A request that took 5 ms more to reach the queue shows 5 ms of front-end time."""
    folder = write_tiny_run(tmp_path / "runs" / "tiny")
    rows = [json.loads(line) for line in (folder / "requests.jsonl").read_text().splitlines()]
    rows[1]["queued_ts"] += 0.005
    rows[1]["scheduled_ts"] += 0.005
    (folder / "requests.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    run = read_serving_run(folder)
    assert run.queued_ts - run.arrival_ts == pytest.approx([0.0, 0.005], abs=1e-6)


def test_a_run_with_a_known_answer_replays_with_zero_error(tmp_path: Path) -> None:
    """Timestamps made by LINEAR, prefix reuse included: every error is 0."""
    run = read_serving_run(write_tiny_run(tmp_path / "runs" / "tiny"))
    result = compare_run(run, LINEAR)
    assert list(result.sim_cached_tokens) == [0, 64] and result.sim_preemptions == 0
    assert result.sim["ttft_s"] == pytest.approx([0.030, 0.0236], abs=1e-6)
    stats = {s.metric: s for s in error_stats([result])}
    for metric in ("ttft_s", "tpot_s", "e2e_s"):
        assert stats[metric].num_requests == 2
        assert stats[metric].median_ape == pytest.approx(0.0, abs=1e-4)
        assert stats[metric].mean_ape == pytest.approx(0.0, abs=1e-4)
    assert stats["queue_s"].num_requests == 0  # no request waited 0.1 s


def test_without_prefix_content_the_second_prompt_is_computed_whole(tmp_path: Path) -> None:
    """No inputs file: no hits, so the second TTFT is 30 ms (the recorded 23.6 is 27 % less)."""
    folder = write_tiny_run(tmp_path / "runs" / "tiny")
    (tmp_path / "runs" / "tiny.jsonl").unlink()
    result = compare_run(read_serving_run(folder), LINEAR)
    assert result.sim["ttft_s"] == pytest.approx([0.030, 0.030], abs=1e-6)
    assert any("no prefix reuse" in n for n in result.setup.notes)
    ttft = next(s for s in error_stats([result]) if s.metric == "ttft_s")
    assert ttft.mean_ape == pytest.approx((0.030 / 0.0236 - 1) / 2, rel=1e-3)


def test_models_map_to_the_catalog_or_stop_with_the_name() -> None:
    """Hugging Face names and the 2507 release map; an unknown model is named."""
    assert catalog_model("Qwen/Qwen3-32B")[0] == "qwen3-32b"
    name, note = catalog_model("Qwen/Qwen3-30B-A3B-Instruct-2507")
    assert name == "qwen3-30b-a3b" and "same architecture" in note
    assert catalog_model("Qwen/Qwen3-Coder-30B-A3B-Instruct")[0] == "qwen3-30b-a3b"
    assert catalog_model("Qwen/Qwen3-235B-A22B-Thinking-2507")[0] == "qwen3-235b-a22b"
    assert catalog_model("deepseek-ai/DeepSeek-R1-Distill-Llama-8B")[0] == "llama-3.1-8b"
    with pytest.raises(ConfigError, match=r"not in the model catalog.*'acme/Giant-1T'"):
        catalog_model("acme/Giant-1T")


def test_malformed_files_are_named_with_line_and_field(tmp_path: Path) -> None:
    """A timestamp out of order and a missing meta.json name the file, line and field."""
    folder = write_tiny_run(tmp_path / "runs" / "tiny")
    rows = [json.loads(line) for line in (folder / "requests.jsonl").read_text().splitlines()]
    rows[1]["first_token_ts"] = rows[1]["scheduled_ts"] - 1
    (folder / "requests.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(DataError, match=r"requests.jsonl:2 column 'first_token_ts'.*before"):
        read_serving_run(folder)
    (folder / "meta.json").unlink()
    with pytest.raises(DataError, match="no serving run here"):
        read_serving_runs(tmp_path / "runs")


def test_the_report_files_are_written(tmp_path: Path) -> None:
    """CSV per request, scoreboard, summary, Markdown with the setting, one CDF figure a run."""
    run = read_serving_run(write_tiny_run(tmp_path / "runs" / "tiny"))
    files = write_runs_report([compare_run(run, LINEAR)], tmp_path / "out", source="tiny")
    assert len(files.requests_csv.read_text().splitlines()) == 3
    assert len(files.scoreboard_csv.read_text().splitlines()) == 5  # header + 4 metrics
    text = files.markdown.read_text()
    assert "inferno with the parameters given" in text and "0 preemptions" in text
    assert "![tiny](figures/tiny.png)" in text
    assert files.figures[0].stat().st_size > 0
    assert json.loads(files.summary.read_text())["runs"][0]["catalog_model"] == "llama-3.1-8b"


def test_the_cli_writes_its_outputs(tmp_path: Path) -> None:
    """`sincere validate runs DIR --out OUT --step-model FILE` prints the table and writes."""
    _register()
    write_tiny_run(tmp_path / "runs" / "tiny")
    step = tmp_path / "linear.yaml"
    step.write_text(yaml.safe_dump(LINEAR))
    out = tmp_path / "out"
    args = [
        "validate",
        "runs",
        str(tmp_path / "runs"),
        "--out",
        str(out),
        "--step-model",
        str(step),
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "1 runs: median APE" in result.output and "tiny" in result.output
    assert (out / "report.md").exists() and (out / "figures" / "tiny.png").exists()


def test_the_cli_stops_on_a_folder_without_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Exit 2 with one line naming the folder; nothing written."""
    (tmp_path / "empty").mkdir()
    out = tmp_path / "out"
    monkeypatch.setattr(sys, "argv", ["sincere", "validate", "runs", str(tmp_path / "empty"),
                                      "--out", str(out)])  # fmt: skip
    with pytest.raises(SystemExit) as stop:
        main()
    assert stop.value.code == 2
    message = " ".join(capsys.readouterr().err.split())
    assert "empty: no serving run here" in message and not out.exists()


def test_the_published_runs_read_whole(shared_data: Path) -> None:
    """Four runs of 300 requests, their settings, every prompt's token ids."""
    runs = {r.name: r for r in read_serving_runs(shared_data / SERVING_RUNS)}
    assert len(runs) == 4 and all(len(r) == 300 and r.prompt_token_ids for r in runs.values())
    moe = runs["RTXPRO6000_Qwen3-30B-A3B-Instruct-2507"]
    assert (moe.engine.dp, moe.engine.expert_parallel, moe.accelerator) == (2, True, "RTXPRO6000")
    assert runs["RTXPRO6000_Qwen3-32B"].engine.tp == 2
    assert runs["RTX4090_Llama-3.1-8B"].engine.num_gpu_blocks == 2588
    for run in runs.values():
        frontend = run.queued_ts - run.arrival_ts
        assert frontend.min() == pytest.approx(0.0, abs=1e-6) and frontend.max() < 0.5
    setup = replay_setup(moe)
    assert (setup.instances, setup.ep, setup.attention_dp) == (2, 2, 2)  # one EP group of 2
    assert setup.accelerator == "RTX-PRO-6000"
    assert any("expert parallelism" in n for n in setup.notes)
    # the RTX PRO 6000's GEMM, attention and MoE constants come from its measured kernels,
    # those of the vLLM release the run served with (0.19.0)
    assert moe.engine.vllm_version == "0.19.0"
    assert setup.step_model.startswith("roofline; constants fitted: measured vLLM 0.19.0")
    assert "kernels/by-version/RTX-PRO-6000-vllm-0.19.0.yaml" in setup.step_model
    block = replay_config(moe, setup).instances[0].step_model
    assert block.kind == "roofline" and block.params == {"vllm_version": "0.19.0"}


def test_the_replay_runs_vllm_v1_unless_told_otherwise(shared_data: Path) -> None:
    """The default replay takes vLLM V1's execution model and its intake in TTFT."""
    run = read_serving_run(shared_data / SERVING_RUNS / "RTXPRO6000_Llama-3.1-8B").subset(3)
    v1, eager = compare_run(run), compare_run(run, preset="eager")
    assert v1.setup.preset == "vllm-v1" and eager.setup.preset == "eager"
    assert any("no front end" in n for n in eager.setup.notes)
    assert not any("no front end" in n for n in v1.setup.notes)
    # the first request meets an idle engine: its TTFT differs by the intake, less the CPU
    # the eager engine adds in series and the CUDA-graph padding
    assert v1.sim["ttft_s"][0] != eager.sim["ttft_s"][0]
    assert v1.sim["tpot_s"][0] < eager.sim["tpot_s"][0]  # CPU hidden under the GPU


def test_a_published_run_replays_in_part(shared_data: Path) -> None:
    """The first 40 requests of the RTX PRO 6000 Llama run replay; errors are finite."""
    run = read_serving_run(shared_data / SERVING_RUNS / "RTXPRO6000_Llama-3.1-8B").subset(40)
    result = compare_run(run)
    for metric in ("ttft_s", "tpot_s", "e2e_s"):
        assert np.isfinite(result.sim[metric]).all()
    tpot = next(s for s in error_stats([result]) if s.metric == "tpot_s")
    assert tpot.num_requests == 40 and tpot.median_ape is not None and tpot.median_ape < 1.0


def test_the_runs_gpus_are_catalog_entries_with_datasheet_figures() -> None:
    """RTX 4090 and RTX PRO 6000 under the names the runs' hardware files use, with sources."""
    from sincere.catalog.loader import default_catalog

    catalog = default_catalog()
    rtx = catalog.accelerator("RTX4090")
    pro = catalog.accelerator("RTXPRO6000")
    assert (rtx.name, rtx.memory_gb, rtx.hbm_bandwidth_gbps, rtx.bf16_tflops) == (
        "RTX-4090",
        24,
        1008,
        165.2,
    )
    assert (pro.name, pro.memory_gb, pro.hbm_bandwidth_gbps, pro.bf16_tflops) == (
        "RTX-PRO-6000",
        96,
        1792,
        467.8,  # the Server Edition's dense bf16 rate (the kernel database's hardware file)
    )
    assert "whitepaper" in rtx.sources["memory_gb"] and "datasheet" in pro.sources["memory_gb"]


def test_a_subset_keeps_the_whole_runs_clock(tmp_path: Path) -> None:
    """The first request alone keeps the offset the fastest of all requests set."""
    folder = write_tiny_run(tmp_path / "runs" / "tiny")
    rows = [json.loads(line) for line in (folder / "requests.jsonl").read_text().splitlines()]
    for key in ("queued_ts", "scheduled_ts", "first_token_ts", "last_token_ts"):
        rows[0][key] += 0.005  # the first request reached the engine 5 ms late
    (folder / "requests.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    first = read_serving_run(folder).subset(1)
    assert first.queued_ts - first.arrival_ts == pytest.approx([0.005], abs=1e-6)


def _rewrite_meta(folder: Path, change: dict[str, Any], drop: tuple[str, ...] = ()) -> None:
    """``folder``'s meta.json with top-level keys changed and engine_kwargs keys dropped."""
    meta = json.loads((folder / "meta.json").read_text())
    meta.update(change)
    for key in drop:
        meta["engine_kwargs"].pop(key)
    (folder / "meta.json").write_text(json.dumps(meta))


def test_the_engine_settings_a_run_resolved_are_replayed(tmp_path: Path) -> None:
    """resolved_config's async scheduling, CUDA-graph mode and sizes go into the replay's
    vllm-v1 engine; its fp8 KV cache and fp8 weights into the deployment."""
    folder = write_tiny_run(tmp_path / "runs" / "tiny")
    resolved = {
        "scheduler_config": {"async_scheduling": False},
        "compilation_config": {"cudagraph_mode": [2, 0], "cudagraph_capture_sizes": "[1, 2, 4, 8]"},
        "model_config": {"quantization": "fp8", "enforce_eager": False},
        "cache_config": {"cache_dtype": "fp8_e4m3"},
    }
    _rewrite_meta(folder, {"resolved_config": resolved})
    run = read_serving_run(folder)
    assert run.engine.execution.overrides() == {
        "async_scheduling": False, "graph_mode": "full_decode_only",
        "graph_sizes": [1, 2, 4, 8], "graph_max_share_of_seqs": 0.0,
    }  # fmt: skip
    setup = replay_setup(run)
    assert (setup.precision, setup.kv_precision) == ("fp8", "fp8")
    assert "async_scheduling False" in setup.taken and "4 sizes, 1-8" in setup.taken
    inst = replay_config(run, setup).instances[0]
    assert (inst.precision, inst.kv_precision) == ("fp8", "fp8")
    params = inst.engine.execution_params()  # type: ignore[union-attr]
    assert (params.async_scheduling, params.graph_mode, params.graph_sizes) == (
        False, "full_decode_only", (1, 2, 4, 8),
    )  # fmt: skip
    eager = replay_setup(run, preset="eager")  # another preset is replayed as asked
    assert eager.taken == ""
    assert replay_config(run, eager).instances[0].engine.execution == {}  # type: ignore[union-attr]


def test_enforce_eager_runs_no_graphs_and_unrecorded_limits_are_vllms(tmp_path: Path) -> None:
    """enforce_eager: no CUDA graphs; limits left out everywhere: vLLM's server defaults for
    the GPU (the RTX 4090: 256 sequences, 2,048 tokens), and the report says so."""
    folder = write_tiny_run(tmp_path / "runs" / "tiny")
    kwargs = json.loads((folder / "meta.json").read_text())["engine_kwargs"]
    kwargs.update({"enforce_eager": True, "kv_cache_dtype": "auto"})
    del kwargs["max_num_seqs"], kwargs["max_num_batched_tokens"]
    _rewrite_meta(folder, {"engine_kwargs": kwargs})
    run = read_serving_run(folder)
    assert run.engine.max_num_seqs is None and run.engine.max_num_batched_tokens is None
    assert run.engine.execution.overrides() == {"graph_mode": "none", "graph_sizes": []}
    setup = replay_setup(run)
    assert (setup.max_num_seqs, setup.max_num_batched_tokens) == (256, 2048)
    assert "not recorded" in setup.limits_note
    engine = replay_config(run, setup).instances[0].engine
    assert engine.execution_params().graph_mode == "none"  # type: ignore[union-attr]
    assert (engine.max_num_seqs, engine.max_num_batched_tokens) == (256, 2048)  # type: ignore[union-attr]
    eager = replay_setup(run, preset="eager")  # the limits are still the run's vLLM's
    assert (eager.max_num_seqs, eager.max_num_batched_tokens) == (256, 2048)


def test_a_compilation_config_given_to_the_engine_is_taken_first(tmp_path: Path) -> None:
    """``--compilation-config '{"cudagraph_mode": "PIECEWISE"}'`` in engine_kwargs (as JSON
    text) wins over what resolved_config says; bad JSON there is named."""
    folder = write_tiny_run(tmp_path / "runs" / "tiny")
    kwargs = json.loads((folder / "meta.json").read_text())["engine_kwargs"]
    kwargs["compilation_config"] = '{"cudagraph_mode": "PIECEWISE"}'
    resolved = {"compilation_config": {"cudagraph_mode": [2, 1]}}
    _rewrite_meta(folder, {"engine_kwargs": kwargs, "resolved_config": resolved})
    assert read_serving_run(folder).engine.execution.graph_mode == "piecewise"
    kwargs["compilation_config"] = "{cudagraph_mode"
    _rewrite_meta(folder, {"engine_kwargs": kwargs})
    with pytest.raises(DataError, match="compilation_config"):
        read_serving_run(folder)


def test_unknown_recorded_settings_are_named(tmp_path: Path) -> None:
    """A CUDA-graph mode the simulator has no name for, and a flag that is no boolean:
    DataError naming the field and value; an unknown quantisation is priced 16-bit, said."""
    folder = write_tiny_run(tmp_path / "runs" / "tiny")
    _rewrite_meta(folder, {"resolved_config": {"compilation_config": {"cudagraph_mode": 7}}})
    with pytest.raises(DataError, match=r"cudagraph_mode.*7"):
        read_serving_run(folder)
    _rewrite_meta(folder, {"resolved_config": {"scheduler_config": {"async_scheduling": "yes"}}})
    with pytest.raises(DataError, match=r"async_scheduling.*yes"):
        read_serving_run(folder)
    _rewrite_meta(folder, {"resolved_config": {"model_config": {"quantization": "bitsandbytes"}}})
    setup = replay_setup(read_serving_run(folder))
    assert setup.precision == "bf16"
    assert any("bitsandbytes" in note for note in setup.notes)
