"""The built-in prefix-study: its grid, its quick variant and the hit-rate column."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sincere.catalog import get_accelerator, get_model
from sincere.core.errors import ConfigError
from sincere.engine.spec import ContinuousConfig
from sincere.experiment import apply_quick, builtin_names, expand, resolve_spec
from sincere.experiment.metrics import flatten_summary
from sincere.experiment.report import build_blocks, to_markdown
from sincere.experiment.results import Results
from sincere.experiment.spec import load_spec
from sincere.perf.base import Deployment
from sincere.sim.config import load_config


def test_prefix_study_grid() -> None:
    """4 routers x 3 workloads x 4 KV set-ups (caching off, on, on with a 64 or 512 GiB CPU
    tier) x 3 instance counts; quick keeps 24 cells at 4 instances."""
    assert "prefix-study" in builtin_names()
    spec = resolve_spec("prefix-study")
    cells = expand(spec)
    assert len(cells) == 144
    quick = expand(apply_quick(spec))
    assert len(quick) == 24 and {c.coords["instances"] for c in quick} == {4}
    assert {c.coords["cache"] for c in quick} == {"off", "on", "on+cpu64GiB", "on+cpu512GiB"}
    routers = {c.coords["router"] for c in cells}
    assert routers == {"least-outstanding", "prefix-aware", "weighted-score", "session-affinity"}


def test_prefix_study_cells_are_valid_configs() -> None:
    """Mooncake cells replay the trace; session cells generate sessions; Azure cells neither."""
    by_workload = {c.coords["workload"]: c for c in expand(resolve_spec("prefix-study"))}
    azure = load_config(by_workload["azure-conv"].config)
    assert azure.workload.trace is None and azure.workload.lengths is not None
    mooncake = by_workload["mooncake-conv"].config["workload"]
    assert mooncake["trace"]["path"].endswith("mooncake_conversation_trace.jsonl")
    sessions = load_config(by_workload["sessions"].config)
    assert sessions.workload.sessions is not None and sessions.workload.trace is None


def test_results_rows_carry_the_prefix_hit_rate() -> None:
    """A summary's prefix_cache block gives the prefix_cache.hit_rate column."""
    row = flatten_summary({"ttft_s": {"p50": 1.0}, "prefix_cache": {"hit_rate": 0.25}})
    assert row["prefix_cache.hit_rate"] == 0.25 and row["ttft_s.p50"] == 1.0
    assert "prefix_cache.hit_rate" not in flatten_summary({"ttft_s": {"p50": 1.0}})


def test_prefix_study_serves_a_model_whose_context_holds_the_whole_trace(
    shared_data: Path,
) -> None:
    """Every Mooncake request's prompt + output fits the study's model: nothing is refused."""
    cell = next(
        c for c in expand(resolve_spec("prefix-study")) if c.coords["workload"] == "mooncake-conv"
    )
    model = get_model(cell.config["instances"][0]["model"])
    trace = shared_data / "traces" / "mooncake_conversation_trace.jsonl"
    longest = max(
        row["input_length"] + row["output_length"]
        for row in map(json.loads, trace.read_text().splitlines())
    )
    assert longest > 100_000 and model.max_context >= longest


def test_a_report_warns_with_counts_when_cells_refused_over_context_requests() -> None:
    """Cells with context refusals: a warning section right after the answer, per cell."""
    row = flatten_summary(
        {"num_requests": 600, "rejected_over_context": {"prompt_too_long": 300, "over_context": 27}}
    )
    assert row["num_rejected_over_context"] == 327
    rows = [{"status": "ok", "seed": 1, "cell_id": c, **r} for c, r in (("c1", row), ("c2", {}))]
    blocks, _ = build_blocks(Results(Path("."), rows, {}, {}, "t", ""), [])
    text = to_markdown(blocks, Path("."))
    assert "## Warning: 327 requests over the model's context" in text
    assert "| c1 | 327 | 54.5% |" in text and "c2 |" not in text


def test_prefix_study_cpu_tiers_hold_the_configured_bytes_of_kv() -> None:
    """A 64 GiB tier of Llama-3.1-8B's fp16 KV (32 layers x 8 KV heads x 128 x 2 x 2 bytes =
    128 KiB a token, 2 MiB a 16-token block) holds 32,768 blocks; 512 GiB 262,144. Caching
    off and on have no tier."""
    by_cache = {c.coords["cache"]: c for c in expand(resolve_spec("prefix-study"))}
    for label, blocks in (("on+cpu64GiB", 32_768), ("on+cpu512GiB", 262_144)):
        config = load_config(by_cache[label].config)
        inst = config.instances[0]
        dep = Deployment(get_model(inst.model), get_accelerator(inst.accelerator))
        engine = inst.engine
        assert isinstance(engine, ContinuousConfig) and engine.kv_offload is not None
        assert engine.enable_prefix_caching
        assert engine.kv_offload.limits(dep, engine.block_size, "x").cpu_blocks == blocks
    for label in ("off", "on"):
        engine = load_config(by_cache[label].config).instances[0].engine
        assert isinstance(engine, ContinuousConfig) and engine.kv_offload is None


def test_a_cpu_tier_without_prefix_caching_is_refused_with_the_reason() -> None:
    """Crossed as two axes, the cells with a tier and caching off are refused (nothing
    runs): a tier keeps what the prefix cache evicts."""
    data = resolve_spec("prefix-study").model_dump()
    data["axes"]["cache"] = {"path": "instances.0.engine.enable_prefix_caching",
                             "values": {"off": False, "on": True}}  # fmt: skip
    data["axes"]["cpu"] = {"path": "instances.0.engine.kv_offload",
                           "values": {"none": None, "64GiB": {"cpu_gib": 64}}}  # fmt: skip
    with pytest.raises(ConfigError, match="enable_prefix_caching is false"):
        expand(load_spec(data))
