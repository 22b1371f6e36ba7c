"""MaverIQ's deployment choice: enumeration, filters, rankings and the SLO fallback."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sincere.catalog import get_model
from sincere.cli.app import _register, app
from sincere.core.errors import ConfigError
from sincere.estimate import ConfigKey, Estimate
from sincere.optimize.deploy import (
    DeployRequest,
    RooflineCosts,
    choose_deployment,
    enumerate_configs,
    parse_pool,
)

SPEED = {"fp16": 1.0, "int8": 0.7, "int4": 0.5, "int4-gptq": 0.55}
BYTES = {"fp16": 2.0, "int8": 1.0, "int4": 0.5, "int4-gptq": 0.5}


@dataclass(frozen=True)
class ToyCosts:
    """Latency falls with TP (sublinearly) and precision; memory is weights plus per-GPU."""

    def estimate(self, key: ConfigKey, output_tokens: int) -> Estimate | None:
        tpot = 0.02 * SPEED[key.precision] * (key.tp**-0.6) * (1 + 0.02 * (key.pp - 1))
        mem = 13.0 * BYTES[key.precision] + 1.0 * key.tp * key.pp
        if key.kv_precision == "int8":
            mem -= 0.5
        return Estimate(key, output_tokens, 0.1, tpot, mem, "toy")


def _choose(pool: str = "8xA6000", **kw: object) -> object:
    req = DeployRequest(str(kw.pop("model", "llama-2-13b")), 100, **kw)  # type: ignore[arg-type]
    return choose_deployment(req, parse_pool(pool), ToyCosts())


def test_enumeration_respects_heads_and_pool_size() -> None:
    """falcon-7b (71 heads) gets TP 1 only; TP*PP never exceeds the pool."""
    falcon = enumerate_configs(get_model("falcon-7b"), DeployRequest("falcon-7b", 10), 8)
    assert {k.tp for k, _ in falcon} == {1}
    llama = enumerate_configs(get_model("llama-2-13b"), DeployRequest("llama-2-13b", 10), 4)
    assert max(k.tp * k.pp for k, _ in llama) == 4
    assert {k.kv_precision for k, _ in llama} == {"fp16", "int8"}


def test_accuracy_floor_filters_precisions() -> None:
    """A 99 % floor leaves fp16 and int8 for llama-2-13b (int4 is 95.7 %, gptq 92.2 %)."""
    d = _choose(min_accuracy=99.0, cost_type="min_mem")
    assert d.chosen.estimate.key.precision == "int8"  # type: ignore[attr-defined]
    everything = [d.chosen, *d.runners_up]  # type: ignore[attr-defined]
    assert all(c.accuracy >= 99.0 for c in everything)
    assert d.dropped["accuracy"] > 0  # type: ignore[attr-defined]


def test_fp16_only() -> None:
    """--fp16-only keeps fp16 weights and KV cache only."""
    d = _choose(fp16_only=True, cost_type="min_mem", num_runners_up=50)
    keys = [c.estimate.key for c in (d.chosen, *d.runners_up)]  # type: ignore[attr-defined]
    assert {(k.precision, k.kv_precision) for k in keys} == {("fp16", "fp16")}


@pytest.mark.parametrize(
    ("cost_type", "score"),
    [
        ("min_lat", lambda e: e.latency_s),
        ("min_mem", lambda e: e.memory_gb),
        ("min_cost", lambda e: e.latency_s * e.memory_gb),
        ("min_gpu_cost", lambda e: e.latency_s * e.num_gpus),
    ],
)
def test_each_cost_type_ranks_by_its_score(cost_type: str, score: object) -> None:
    """The choice and runners-up are in increasing order of the cost type's score."""
    d = _choose(cost_type=cost_type, num_runners_up=10)
    ranked = [d.chosen, *d.runners_up]  # type: ignore[attr-defined]
    scores = [score(c.estimate) for c in ranked]  # type: ignore[operator]
    assert scores == sorted(scores)
    assert scores[0] == pytest.approx(ranked[0].score)


def test_cost_types_pick_different_configurations() -> None:
    """Fastest uses many GPUs; least memory uses one int4 GPU."""
    fast = _choose(cost_type="min_lat").chosen.estimate.key  # type: ignore[attr-defined]
    small = _choose(cost_type="min_mem").chosen.estimate.key  # type: ignore[attr-defined]
    assert fast.tp == 8 and small.tp * small.pp == 1 and small.precision == "int4"


def test_memory_fit_on_a_full_pool() -> None:
    """With 40 of 48 GB used everywhere, fp16 13B (26 GB) needs several GPUs or quantization."""
    d = _choose(pool="4xA6000:40,40,40,40", fp16_only=True, cost_type="min_gpu_cost")
    assert d.chosen.estimate.num_gpus >= 4  # type: ignore[attr-defined]
    assert d.dropped["memory"] > 0  # type: ignore[attr-defined]
    none = _choose(pool="2xA6000:47,47", fp16_only=True)
    assert none.chosen is None  # type: ignore[attr-defined]


def test_slo_filters_and_falls_back_to_lowest_latency() -> None:
    """A loose SLO filters slow configs; an impossible one falls back to min latency."""
    loose = _choose(cost_type="min_mem", slo_s=1.0, num_runners_up=50)
    assert not loose.slo_fallback  # type: ignore[attr-defined]
    assert all(c.estimate.latency_s <= 1.0 for c in (loose.chosen, *loose.runners_up))  # type: ignore[attr-defined]
    tight = _choose(cost_type="min_mem", slo_s=0.01)
    fastest = _choose(cost_type="min_lat").chosen  # type: ignore[attr-defined]
    assert tight.slo_fallback  # type: ignore[attr-defined]
    assert not tight.chosen.meets_slo  # type: ignore[attr-defined]
    assert tight.chosen.estimate.latency_s == pytest.approx(fastest.estimate.latency_s)  # type: ignore[attr-defined]


def test_request_validation() -> None:
    """Unknown cost types and strategies are rejected with the valid names."""
    with pytest.raises(ConfigError, match="min_gpu_cost"):
        DeployRequest("llama-2-7b", 10, cost_type="cheapest")
    with pytest.raises(ConfigError, match="hybrid"):
        DeployRequest("llama-2-7b", 10, strategy="random")


def test_pool_parsing(tmp_path: Path) -> None:
    """Shorthand, used-memory lists and YAML files give the same GPU states."""
    pool = parse_pool("3xA6000:10,0,5.5")
    assert [g.used_gb for g in pool] == [10, 0, 5.5] and pool[0].memory_gb == 48
    path = tmp_path / "pool.yaml"
    path.write_text("accelerator: A6000\ngpus: [{used_gb: 10}, {used_gb: 0}, {used_gb: 5.5}]\n")
    assert parse_pool(str(path)) == pool
    with pytest.raises(ConfigError, match="2 used figures for 3 GPUs"):
        parse_pool("3xA6000:1,2")
    with pytest.raises(ConfigError, match="neither a shorthand nor a file"):
        parse_pool("lots of gpus")


def test_roofline_costs_choose_for_any_catalog_model() -> None:
    """Without fingerprints the roofline still yields a placed choice."""
    d = choose_deployment(
        DeployRequest("llama-3-8b", 100, "min_lat"), parse_pool("2xA6000"), RooflineCosts()
    )
    assert d.chosen is not None and d.chosen.estimate.source == "roofline"


def test_deploy_cli_json() -> None:
    """`sincere deploy` prints the choice, its placement and runners-up."""
    _register()
    res = CliRunner().invoke(
        app,
        [
            "deploy",
            "llama-2-13b",
            "--output-len",
            "100",
            "--cost-type",
            "min_mem",
            "--gpus",
            "4xA6000:40,0,0,0",
            "--json",
        ],
    )
    assert res.exit_code == 0, res.output
    import json

    out = json.loads(res.output)
    assert sum(out["chosen"]["layer_split"]) == 40
    assert 0 not in out["chosen"]["gpus"]  # the nearly full GPU is not needed
