"""The built-in prefix-study: its grid, its quick variant and the hit-rate column."""

from __future__ import annotations

from sincere.experiment import apply_quick, builtin_names, expand, resolve_spec
from sincere.experiment.metrics import flatten_summary
from sincere.sim.config import load_config


def test_prefix_study_grid() -> None:
    """4 routers x 3 workloads x cache on/off x 3 instance counts; quick keeps 12 cells at 4."""
    assert "prefix-study" in builtin_names()
    spec = resolve_spec("prefix-study")
    cells = expand(spec)
    assert len(cells) == 72
    quick = expand(apply_quick(spec))
    assert len(quick) == 12 and {c.coords["instances"] for c in quick} == {4}
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
