"""A plan as Kubernetes manifests (sincere.optimize.manifests): the objects and their numbers
by hand, the published schemas they are checked against, errors, and ``plan --k8s``."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

import sincere.cli.plan  # noqa: F401  (registers the command)
from sincere.cli.app import app
from sincere.core.errors import ConfigError
from sincere.optimize.data import Problem, load_problem
from sincere.optimize.loadtrace import read_load_trace, replan
from sincere.optimize.manifests import (
    ManifestOptions,
    manifests,
    options_from,
    pools,
    validate_manifests,
    write_manifests,
)
from sincere.optimize.plan import Solution, solve

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "plan"


def _plan() -> tuple[Problem, Solution]:
    problem = load_problem(EXAMPLES / "unlimited")
    return problem, solve(problem)


def test_every_allocated_server_becomes_a_pool_with_the_plans_numbers() -> None:
    """Replicas, batch, GPUs per replica (the accelerator's units x the model's count) and
    bounds from the plan (x2 at most without a trace)."""
    problem, solution = _plan()
    options = ManifestOptions()
    got = pools(problem, solution, options)
    allocated = [a for a in solution.allocations if a.num_replicas > 0]
    assert len(got) == len(allocated)
    for pool, alloc in zip(got, allocated, strict=True):
        acc = problem.accelerators[alloc.accelerator]
        server = next(s for s in problem.servers if s.name == alloc.server)
        perf = problem.models[(server.model, alloc.accelerator)]
        assert pool.gpus == acc.multiplicity * perf.acc_count
        assert (pool.replicas, pool.max_batch) == (alloc.num_replicas, alloc.max_batch)
        assert (pool.min_replicas, pool.max_replicas) == (
            alloc.num_replicas, math.ceil(2.0 * alloc.num_replicas))  # fmt: skip
        assert pool.name == pool.name.lower() and len(pool.name) <= 63


def test_the_objects_carry_the_plan_and_pass_the_published_schemas() -> None:
    """Deployment (replicas, TP = GPUs, max-num-seqs = batch, GPU limit, node selector),
    Service, HPA on running requests per pod = the batch; all valid in strict mode."""
    problem, solution = _plan()
    options = ManifestOptions(model_ids={"granite_13b": "ibm-granite/granite-13b-instruct-v2"})
    pool = next(p for p in pools(problem, solution, options) if p.model == "granite_13b")
    deployment, service, hpa = manifests(pool, options)
    spec = deployment["spec"]
    container = spec["template"]["spec"]["containers"][0]
    assert spec["replicas"] == pool.replicas
    args = container["args"]
    assert args[args.index("--model") + 1] == "ibm-granite/granite-13b-instruct-v2"
    assert args[args.index("--tensor-parallel-size") + 1] == str(pool.gpus)
    assert args[args.index("--max-num-seqs") + 1] == str(pool.max_batch)
    assert container["resources"]["limits"] == {options.gpu_resource(pool.gpu_type): pool.gpus}
    assert spec["template"]["spec"]["nodeSelector"] == {"sincere.io/accelerator": pool.gpu_type}
    assert service["spec"]["selector"] == spec["selector"]["matchLabels"]
    target = hpa["spec"]["metrics"][0]["pods"]
    assert target["metric"]["name"] == "vllm:num_requests_running"
    assert target["target"]["averageValue"] == str(pool.max_batch)
    checked = validate_manifests([deployment, service, hpa])
    assert [c.error for c in checked] == [None, None, None]
    assert {c.against for c in checked} == {"Kubernetes 1.30.0 schema (strict)"}


def test_a_wrong_manifest_is_caught_with_where_it_is_wrong() -> None:
    """A string where the schema wants an integer, an unknown field (strict mode)."""
    problem, solution = _plan()
    pool = pools(problem, solution, ManifestOptions())[0]
    deployment = manifests(pool, ManifestOptions())[0]
    deployment["spec"]["replicas"] = "3"
    (checked,) = validate_manifests([deployment])
    assert checked.error is not None and checked.error.startswith("spec.replicas:")
    deployment["spec"]["replicas"] = 3
    deployment["spec"]["replica"] = 3
    (checked,) = validate_manifests([deployment])
    assert checked.error is not None and "replica" in checked.error


def test_keda_is_checked_for_its_required_fields_only_and_says_so() -> None:
    problem, solution = _plan()
    options = ManifestOptions(autoscaler="keda")
    pool = pools(problem, solution, options)[0]
    scaled = manifests(pool, options)[2]
    assert scaled["kind"] == "ScaledObject"
    trigger = scaled["spec"]["triggers"][0]
    assert trigger["metadata"]["threshold"] == str(pool.max_batch)
    assert f'pod=~"{pool.name}-.*"' in trigger["metadata"]["query"]
    (checked,) = validate_manifests([scaled])
    assert checked.error is None and checked.against.startswith("required fields only")
    del scaled["spec"]["triggers"]
    assert validate_manifests([scaled])[0].error == "missing spec fields ['triggers']"
    assert len(manifests(pool, ManifestOptions(autoscaler="none"))) == 2


def test_a_load_trace_sets_the_autoscalers_bounds() -> None:
    """Fewest and most replicas of each server over the trace's plans."""
    problem = load_problem(EXAMPLES / "unlimited-load-change")
    steps = replan(problem, read_load_trace(EXAMPLES / "unlimited-load-change" / "trace.csv"))
    history = [s for _, s in steps]
    final = history[-1]
    for pool in pools(problem, final, ManifestOptions(), history):
        counts = [a.num_replicas for s in history for a in s.allocations
                  if a.server == pool.server and a.accelerator == pool.accelerator]  # fmt: skip
        assert pool.min_replicas == max(1, min(counts))
        assert pool.max_replicas == max(counts)


@pytest.mark.parametrize(
    ("data", "words"),
    [
        ({"autoscaler": "vpa"}, "unknown autoscaler"),
        ({"port": 0}, "port must be"),
        ({"namespace": "Prod_1"}, "DNS-1123"),
        ({"replicas": 3}, "unknown manifest option"),
        ({"model_ids": ["a"]}, "model_ids must map"),
        ({"max_replicas_factor": 0.5}, "max_replicas_factor"),
    ],
)
def test_bad_options_are_refused_by_name(data: dict[str, object], words: str) -> None:
    with pytest.raises(ConfigError, match=words):
        options_from(data)


def test_amd_instinct_types_ask_for_amd_gpus() -> None:
    options = ManifestOptions(gpu_resources={"G2": "example.com/gpu"})
    assert options.gpu_resource("MI300X") == "amd.com/gpu"
    assert options.gpu_resource("A100") == "nvidia.com/gpu"
    assert options.gpu_resource("G2") == "example.com/gpu"


def test_plan_k8s_writes_one_file_per_server(tmp_path: Path) -> None:
    """`plan --k8s DIR --k8s-config FILE`: one YAML per allocated server, every object
    parsed back, the namespace from the config."""
    config = tmp_path / "k8s.yaml"
    config.write_text("namespace: serving\nautoscaler: hpa\n")
    out = tmp_path / "manifests"
    res = CliRunner().invoke(app, ["plan", str(EXAMPLES / "unlimited"), "--out",
                                   str(tmp_path / "s.json"), "--no-verify", "--k8s", str(out),
                                   "--k8s-config", str(config)])  # fmt: skip
    assert res.exit_code == 0, res.output
    solution = json.loads((tmp_path / "s.json").read_text())
    allocated = [k for k, v in solution.items() if v["numReplicas"] > 0]
    files = sorted(out.glob("*.yaml"))
    assert len(files) == len(allocated)
    docs = [d for f in files for d in yaml.safe_load_all(f.read_text())]
    assert {d["kind"] for d in docs} == {"Deployment", "Service", "HorizontalPodAutoscaler"}
    assert {d["metadata"]["namespace"] for d in docs} == {"serving"}
    assert "checked against Kubernetes 1.30.0 schema (strict)" in " ".join(res.output.split())


def test_nothing_is_written_when_a_manifest_is_invalid(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One object failing its schema stops the whole folder, naming it and why."""
    import sincere.optimize.manifests as module

    problem, solution = _plan()
    broken = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "x"},
              "spec": {"replicas": "3"}}  # fmt: skip
    monkeypatch.setattr(module, "manifests", lambda pool, options: [broken])
    with pytest.raises(ConfigError, match="fail their schema; first: Deployment x"):
        write_manifests(tmp_path / "m", pools(problem, solution, ManifestOptions()),
                        ManifestOptions())  # fmt: skip
    assert not (tmp_path / "m").exists()
