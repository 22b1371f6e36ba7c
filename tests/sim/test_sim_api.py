"""The simulate() API, the YAML config's validation, determinism and the CLI."""

from __future__ import annotations

import gc
import json
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
import yaml
from typer.testing import CliRunner

from sincere import native
from sincere.cli.app import _register, app
from sincere.core.errors import ConfigError
from sincere.sim import SimulationConfig, api, load_config, simulate


def small_config(**instance: Any) -> dict[str, Any]:
    """A quick config: 400 Poisson requests, uniform lengths, Niyama's tiers."""
    return {
        "seed": 3,
        "workload": {
            "num_requests": 400,
            "arrival": {"kind": "poisson", "rate": 4.0},
            "lengths": {
                "prompt": {"kind": "uniform", "low": 10, "high": 1500},
                "output": {"kind": "uniform", "low": 1, "high": 300},
            },
            "models": {"llama-3-8b": 1.0},
            "tiers": {"preset": "niyama"},
        },
        "instances": [
            {
                "model": "llama-3-8b",
                "accelerator": "A100-80GB",
                "engine": {
                    "scheduler": "sarathi",
                    "scheduler_params": {"chunk_size": 512},
                    "max_num_seqs": 64,
                },
                **instance,
            }
        ],
    }


SUMMARY_KEYS = {
    "num_requests", "num_completed", "num_rejected", "duration_s", "throughput_rps",
    "output_tokens_per_s", "ttft_s", "tpot_s", "itl_s", "e2e_s", "queue_s",
    "slo_attainment", "goodput_rps", "utilization", "cost_usd", "tiers",
}  # fmt: skip
REQUEST_COLUMNS = {
    "request_id", "model", "tier", "instance", "arrival_at", "first_scheduled_at",
    "first_token_at", "finished_at", "prompt_tokens", "output_tokens", "ttft_s", "tpot_s",
    "e2e_s", "queue_s", "slo_met", "rejected",
}  # fmt: skip


def test_simulate_returns_table_and_summary_with_the_documented_fields() -> None:
    """The result carries one row per request and every summary metric, per tier too."""
    result = simulate(small_config())
    assert set(result.requests.column_names) >= REQUEST_COLUMNS
    assert result.requests.num_rows == 400
    assert set(result.summary) >= SUMMARY_KEYS
    assert set(result.summary["tiers"]) == {t.name for t in result.requests_in.tiers}
    for key in ("ttft_s", "tpot_s", "itl_s", "e2e_s", "queue_s"):
        assert set(result.summary[key]) == {"mean", "p50", "p90", "p99"}
    done = result.summary["num_completed"] + result.summary["num_rejected"]
    assert done == 400
    tier_total = sum(t["num_requests"] for t in result.summary["tiers"].values())
    assert tier_total == 400


def test_written_files_are_the_same_data_as_the_result(tmp_path: Path) -> None:
    """requests.parquet and summary.json hold exactly the API's table and summary."""
    result = simulate(small_config())
    result.write(tmp_path)
    assert pq.read_table(tmp_path / "requests.parquet").equals(result.requests)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["ttft_s"] == result.summary["ttft_s"]
    assert summary["num_completed"] == result.summary["num_completed"]


def test_same_seed_gives_identical_files_and_config_repeats_the_run(tmp_path: Path) -> None:
    """Same config and seed: byte-identical outputs; config.yaml reproduces the run."""
    for name in ("a", "b"):
        simulate(small_config(), seed=5).write(tmp_path / name)
    simulate(tmp_path / "a" / "config.yaml").write(tmp_path / "c")
    for fname in ("requests.parquet", "summary.json", "config.yaml"):
        first = (tmp_path / "a" / fname).read_bytes()
        assert first == (tmp_path / "b" / fname).read_bytes()
    assert (tmp_path / "a" / "requests.parquet").read_bytes() == (
        tmp_path / "c" / "requests.parquet"
    ).read_bytes()
    other = simulate(small_config(), seed=6).requests
    assert not other.equals(pq.read_table(tmp_path / "a" / "requests.parquet"))


def test_collections_less_often_during_a_run_leave_results_and_the_collector_as_found(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A run collects young garbage every YOUNG_COLLECTION_EVERY allocations, not 700, and
    puts the collector's thresholds back after (also when the run fails); results are the
    same with the collector's own threshold."""
    before = gc.get_threshold()
    seen: list[tuple[int, int, int]] = []
    run_events = api.run_events

    def watched(*args: Any, **kwargs: Any) -> Any:
        seen.append(gc.get_threshold())
        return run_events(*args, **kwargs)

    monkeypatch.setattr(api, "run_events", watched)
    fewer = simulate(small_config())
    assert seen == [(api.YOUNG_COLLECTION_EVERY, *before[1:])]
    assert gc.get_threshold() == before
    monkeypatch.setattr(api, "YOUNG_COLLECTION_EVERY", before[0])
    usual = simulate(small_config())
    assert fewer.requests.equals(usual.requests) and fewer.summary == usual.summary
    with pytest.raises(RuntimeError), api.young_collections_every(5_000):
        assert gc.get_threshold()[0] == 5_000
        raise RuntimeError("a failed run")
    assert gc.get_threshold() == before


def test_config_errors_name_field_value_and_allowed() -> None:
    """Bad fields produce one line each with the path, the value and the allowed set."""
    bad = small_config()
    bad["instances"][0]["engine"]["scheduler"] = "lifo"
    bad["instances"][0]["tp"] = 0
    bad["instances"][0]["colour"] = "red"
    with pytest.raises(ConfigError) as err:
        load_config(bad)
    text = str(err.value)
    assert "instances[0].engine" in text and "lifo" in text and "allowed" in text
    assert "instances[0].tp" in text
    assert "instances[0].colour" in text
    assert text.count("\n") >= 3


def test_unknown_engine_kind_and_missing_model_are_named() -> None:
    """An unknown engine kind and an instance without a model are explained."""
    bad = small_config(engine={"kind": "magic"})
    with pytest.raises(ConfigError, match="magic"):
        load_config(bad)
    bad = small_config()
    del bad["instances"][0]["model"]
    with pytest.raises(ConfigError, match="exactly one of model"):
        load_config(bad)


def test_unknown_scheduler_parameter_is_named_at_build() -> None:
    """A scheduler parameter the policy does not take is named with the allowed ones."""
    cfg = small_config()
    cfg["instances"][0]["engine"]["scheduler_params"] = {"chunk": 5}
    with pytest.raises(ConfigError, match=r"instances\[0\].engine.*'chunk'.*chunk_size"):
        simulate(cfg)


def test_requests_for_a_model_nobody_serves_are_rejected() -> None:
    """A request whose model has no instance is rejected with reason no_instance."""
    cfg = small_config()
    cfg["workload"]["models"] = {"llama-3-8b": 0.5, "mistral-7b": 0.5}
    table = simulate(cfg).requests.to_pydict()
    reasons = {
        r for r, m in zip(table["reject_reason"], table["model"], strict=True) if m != "llama-3-8b"
    }
    assert reasons == {"no_instance"}


def test_router_spreads_requests_over_replicas() -> None:
    """With several replicas the configured router distributes the requests."""
    cfg = small_config(count=3, name="rep")
    cfg["router"] = {"name": "round-robin"}
    table = simulate(cfg).requests.to_pydict()
    counts = {i: table["instance"].count(i) for i in set(table["instance"])}
    assert set(counts) == {"rep-0", "rep-1", "rep-2"}
    assert max(counts.values()) - min(counts.values()) <= 1


def test_cc_mode_is_slower() -> None:
    """Confidential-computing mode lengthens latencies through the step-time model."""
    plain = simulate(small_config()).summary["e2e_s"]["mean"]
    cc = simulate(small_config(cc=True)).summary["e2e_s"]["mean"]
    assert cc > plain


def test_cli_writes_outputs_and_reports_bad_input(tmp_path: Path) -> None:
    """`sincere simulate` writes the three files; a bad config exits non-zero."""
    _register()
    cfg_path = tmp_path / "sim.yaml"
    cfg_path.write_text(yaml.safe_dump(small_config()))
    runner = CliRunner()
    out = tmp_path / "out"
    res = runner.invoke(app, ["simulate", str(cfg_path), "--out", str(out), "--seed", "2"])
    assert res.exit_code == 0, res.output
    assert {p.name for p in out.iterdir()} == {"requests.parquet", "summary.json", "config.yaml"}
    assert "TTFT" in res.output
    said = " ".join(res.output.split())  # rich wraps long lines
    state = native.status().state
    assert ("compiled modules);" if state == "active" else f"compiled modules {state})") in said
    assert yaml.safe_load((out / "config.yaml").read_text())["seed"] == 2
    bad = tmp_path / "bad.yaml"
    bad.write_text("instances: []\n")
    res = runner.invoke(app, ["simulate", str(bad), "--out", str(out)])
    assert res.exit_code != 0


def test_config_round_trips_through_yaml() -> None:
    """to_yaml() of a config loads back to an equal config."""
    cfg = load_config(small_config())
    again = SimulationConfig.model_validate(yaml.safe_load(cfg.to_yaml()))
    assert again == cfg


def test_requests_table_converts_to_pandas_for_notebooks() -> None:
    """The documented notebook use: result.requests.to_pandas() (the ``pandas`` extra)."""
    pd = pytest.importorskip("pandas")
    frame = simulate(small_config()).requests.to_pandas()
    assert isinstance(frame, pd.DataFrame) and len(frame) == 400
    assert set(frame.columns) >= REQUEST_COLUMNS
