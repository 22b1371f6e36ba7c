"""``sincere catalog accelerators|models``: tables, JSON and user files."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

import sincere.cli.catalog  # noqa: F401  (registers the sub-app)
from sincere.catalog.schema import CatalogEntryError
from sincere.cli.app import app

runner = CliRunner()


def test_accelerators_table_lists_every_entry() -> None:
    """The table has a row per shipped accelerator."""
    result = runner.invoke(app, ["catalog", "accelerators"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    for name in ("H100-SXM", "MI300X", "cpu"):
        assert name in result.output


def test_models_json_carries_full_records() -> None:
    """--json prints every model with its fields, sources and accuracy figures."""
    result = runner.invoke(app, ["catalog", "models", "--json"])
    assert result.exit_code == 0, result.output
    records = {r["name"]: r for r in json.loads(result.output)}
    assert records["llama-2-70b"]["relative_accuracy"]["int4-gptq"] == 55.7
    assert records["gemma-7b"]["head_dim"] == 256
    assert "config.json" in records["mistral-7b"]["source"]


def test_file_option_includes_a_user_file(tmp_path: Path) -> None:
    """--file adds the user's entries to the listing."""
    path = tmp_path / "mine.yaml"
    path.write_text("accelerators:\n  H100-SXM:\n    price_per_hour_usd: 7.25\n")
    result = runner.invoke(app, ["catalog", "accelerators", "--json", "--file", str(path)])
    assert result.exit_code == 0, result.output
    h100 = next(r for r in json.loads(result.output) if r["name"] == "H100-SXM")
    assert h100["price_per_hour_usd"] == 7.25


def test_bad_file_surfaces_the_catalog_error(tmp_path: Path) -> None:
    """A malformed --file ends the command with the catalog's error (main prints one line)."""
    path = tmp_path / "bad.yaml"
    path.write_text("models:\n  toy: {num_layers: 0}\n")
    result = runner.invoke(app, ["catalog", "models", "--file", str(path)])
    assert result.exit_code != 0
    assert isinstance(result.exception, CatalogEntryError)
    assert "model 'toy'" in str(result.exception)


def test_models_json_fills_head_dim_for_every_model() -> None:
    """No model's JSON says head_dim 0: left out of the catalog it is hidden / heads."""
    result = runner.invoke(app, ["catalog", "models", "--json"])
    records = {r["name"]: r for r in json.loads(result.output)}
    assert all(r["head_dim"] > 0 for r in records.values())
    llama = records["llama-3-8b"]
    assert llama["head_dim"] == llama["hidden_size"] // llama["num_heads"] == 128


def test_models_table_shows_experts_and_active_parameters() -> None:
    """The table has experts and active-parameter columns: a mixture of experts shows its
    routed experts, picks per token and shared ones, a dense model a dash and all its
    parameters active; --json carries active_params_b."""
    result = runner.invoke(app, ["catalog", "models"], env={"COLUMNS": "300"})
    assert result.exit_code == 0, result.output
    header = result.output.splitlines()[1].split()
    assert "active" in header and "experts" in header
    rows = {line.split()[0]: line for line in result.output.splitlines()[3:] if line.strip()}
    assert "256 (8/token) +1 shared" in rows["deepseek-v3"]
    assert rows["deepseek-v3"].split()[1:3] == ["671", "37.6"]
    assert rows["llama-3-8b"].split()[1:4] == ["8.03", "8.03", "-"]
    records = {
        r["name"]: r for r in json.loads(runner.invoke(app, ["catalog", "models", "--json"]).output)
    }
    assert records["qwen3-30b-a3b"]["active_params_b"] < records["qwen3-30b-a3b"]["num_params_b"]
