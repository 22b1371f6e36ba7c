"""The workload config: validation messages, generation, determinism and speed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from sincere.core.errors import ConfigError
from sincere.core.request import RequestArrays
from sincere.workload.config import WorkloadConfig, generate, load_workload_config
from sincere.workload.traces import write_trace

W1 = {
    "num_requests": 2000,
    "arrival": {"kind": "poisson", "rate": 6.45},
    "lengths": {
        "kind": "trace",
        "source": "azure-conv-2023",
        "max_prompt_tokens": 4096,
        "max_output_tokens": 4096,
    },
    "models": {"llama-3-8b": 1.0},
    "tiers": {"preset": "niyama"},
}


def _same(a: RequestArrays, b: RequestArrays) -> bool:
    names = ("arrival_at", "prompt_tokens", "output_tokens", "max_tokens", "model", "tier")
    return all(np.array_equal(getattr(a, n), getattr(b, n)) for n in names)


def test_yaml_file_generates_w1(tmp_path: Path) -> None:
    """A YAML workload loads from file and generates capped Azure-conv lengths, Niyama tiers."""
    path = tmp_path / "w.yaml"
    path.write_text(yaml.safe_dump(W1), encoding="utf-8")
    req = generate(load_workload_config(path), seed=7)
    assert len(req) == 2000 and req.prompt_tokens.max() <= 4096
    assert req.models == ("llama-3-8b",) and req.tiers[0].name == "tier-0"
    np.testing.assert_array_equal(req.priority, np.array([0, 1, 2])[req.tier])


def test_generate_takes_a_mapping_a_file_or_a_simulation_config(tmp_path: Path) -> None:
    """generate() accepts what simulate() accepts: a dict, a workload YAML or a whole config."""
    expected = generate(load_workload_config(W1), seed=5)
    assert _same(generate(W1, seed=5), expected)
    assert _same(generate({"workload": W1, "instances": []}, seed=5), expected)
    path = tmp_path / "sim.yaml"
    path.write_text(yaml.safe_dump({"seed": 1, "workload": W1}), encoding="utf-8")
    assert _same(generate(path, seed=5), expected)
    assert _same(generate(str(path), seed=5), expected)
    with pytest.raises(ConfigError, match=r"workload.arrival: poisson: rate must be a finite"):
        generate({**W1, "arrival": {"kind": "poisson", "rate": -1}})
    with pytest.raises(ConfigError, match="workload file not found"):
        generate(tmp_path / "missing.yaml")


def test_relative_trace_paths_resolve_beside_the_workload_file(tmp_path: Path) -> None:
    """A trace named relative to a workload file is found from any working directory."""
    trace = RequestArrays.build([0.0, 1.0, 2.0], [10, 20, 30], [3, 4, 5])
    write_trace(trace, tmp_path / "t.csv")
    path = tmp_path / "w.yaml"
    lengths = {"source": "t.csv", "replay": True}
    path.write_text(yaml.safe_dump({**W1, "num_requests": 3, "lengths": lengths}))
    assert generate(path).prompt_tokens.tolist() == [10, 20, 30]


def test_same_seed_same_arrays_other_seed_differs() -> None:
    """The same config and seed give identical arrays; another seed does not."""
    cfg = load_workload_config({**W1, "models": "sincere"})
    assert _same(generate(cfg, 3), generate(cfg, 3))
    assert not _same(generate(cfg, 3), generate(cfg, 4))


def test_generates_a_million() -> None:
    """One million requests, every one with lengths and an arrival (the speed target, under
    2 s, is measured by benchmarks/workload_speed.py)."""
    cfg = load_workload_config({**W1, "num_requests": 1_000_000, "models": "sincere"})
    req = generate(cfg, 1)
    assert len(req) == 1_000_000
    assert (req.prompt_tokens > 0).all() and (req.output_tokens > 0).all()
    assert (np.diff(req.arrival_at) >= 0).all()


def test_independent_lengths_and_client_cap() -> None:
    """Separate prompt/output distributions apply; max_tokens caps generation."""
    cfg = load_workload_config(
        {
            "duration_s": 100.0,
            "arrival": {"kind": "sincere-bursty", "mean": 8},
            "lengths": {
                "prompt": {"kind": "lognormal", "median": 800, "sigma": 1.0},
                "output": {"kind": "uniform", "low": 10, "high": 500},
                "max_prompt_tokens": 2048,
            },
            "max_tokens": 128,
            "tiers": [
                {"name": "fast", "ttft_s": 1.0, "weight": 3},
                {"name": "slow", "ttlt_s": 60.0, "priority": 5, "weight": 1},
            ],
        }
    )
    req = generate(cfg, 1)
    assert req.arrival_at.max() < 100.0 and len(req) > 100
    assert req.prompt_tokens.max() <= 2048
    assert req.output_tokens.max() <= 128 and set(req.max_tokens.tolist()) == {128}
    assert (req.tier == 0).mean() > 0.6
    assert set(req.priority[req.tier == 1].tolist()) <= {5}


def test_trace_arrivals_and_replayed_lengths(tmp_path: Path) -> None:
    """A trace file drives arrivals (rescaled) and lengths (replayed in order)."""
    src = RequestArrays.build([0.0, 1.0, 2.0, 4.0], [11, 22, 33, 44], [5, 6, 7, 8])
    write_trace(src, tmp_path / "t.csv")
    cfg = load_workload_config(
        {
            "num_requests": 4,
            "arrival": {"kind": "trace", "path": "t.csv", "time_scale": 0.5},
            "lengths": {"source": "t.csv", "replay": True},
        }
    )
    req = generate(cfg, 0, base_dir=tmp_path)
    np.testing.assert_allclose(req.arrival_at, [0.0, 0.5, 1.0, 2.0])
    assert req.prompt_tokens.tolist() == [11, 22, 33, 44]


def test_errors_name_path_value_and_allowed() -> None:
    """Validation errors give one line per problem with field path, value and allowed values."""
    bad = {
        "num_requests": -5,
        "arrival": {"kind": "gamma", "rate": 2.0, "cv": -1},
        "lengths": {"source": "azure-conv-2023", "max_prompt_tokens": 0},
        "tiers": {"preset": "gold"},
        "colour": "blue",
    }
    with pytest.raises(ConfigError) as info:
        load_workload_config(bad, "sim.yaml")
    text = str(info.value)
    assert text.startswith("sim.yaml: invalid workload config (5 problems)")
    assert "workload.num_requests: Input should be greater than 0; got -5" in text
    assert "workload.arrival: gamma: cv must be a finite number > 0; got -1" in text
    assert "workload.lengths.max_prompt_tokens: Input should be greater than 0; got 0" in text
    assert "workload.tiers: unknown tier preset; got 'gold'; allowed: default, inferno" in text
    assert "workload.colour: Extra inputs are not permitted; got 'blue'; allowed: arrival" in text


@pytest.mark.parametrize(
    ("patch", "match"),
    [
        ({"arrival": {"kind": "poison"}}, r"unknown arrival kind 'poison'; allowed: .*'gamma'"),
        ({"arrival": {"kind": "poisson", "rat": 1}}, r"unknown parameter\(s\) \['rat'\]"),
        ({"arrival": {"kind": "poisson", "rate": "fast"}}, r"poisson.rate: expected float"),
        ({"arrival": {"kind": "trace"}}, r"'path' \(a trace file\) is required"),
        ({"models": {"a": 0.5, "b": 0.4}}, r"sum to 1; got 0.9"),
        ({"models": "mystery"}, r"unknown model mix preset 'mystery'; allowed: sincere"),
        ({"lengths": {"prompt": {"kind": "fixed", "tokens": 3}}}, r"give 'source'"),
        ({"lengths": {"source": "azure-conv-2023", "replay": True}}, r"replay needs a trace"),
        ({"num_requests": None}, r"give num_requests, duration_s or both"),
    ],
)
def test_specific_errors(patch: dict[str, object], match: str) -> None:
    """Each kind of mistake gets a message saying what is allowed."""
    with pytest.raises(ConfigError, match=match):
        load_workload_config({**W1, **patch})


def test_config_is_frozen() -> None:
    """A validated config cannot be changed afterwards."""
    cfg = WorkloadConfig.model_validate(W1)
    with pytest.raises(ValueError, match="frozen"):
        cfg.num_requests = 5  # type: ignore[misc]


def test_an_unknown_length_source_lists_the_built_in_tables(tmp_path: Path) -> None:
    """`lengths: {source: azure-conv-2024x}` (no such table, no such file) names the built-in
    tables and the closest one, at generation and in the file check."""
    from sincere.workload.config import LengthsConfig, WorkloadConfig

    lengths = LengthsConfig(source="azure-conv-2024x")
    with pytest.raises(ConfigError, match=r"did you mean 'azure-conv-2023'.*built-in tables: "
                       r"azure-code-2023, azure-conv-2023"):  # fmt: skip
        lengths.build(tmp_path)
    workload = WorkloadConfig.model_validate(
        {"num_requests": 5, "arrival": {"kind": "poisson", "rate": 1.0},
         "lengths": {"source": "azure-conv-2024x"}}
    )  # fmt: skip
    (problem,) = workload.missing_files(tmp_path)
    assert problem.startswith("workload.lengths.source: 'azure-conv-2024x' is neither")
    assert "built-in tables: azure-code-2023, azure-conv-2023" in problem
