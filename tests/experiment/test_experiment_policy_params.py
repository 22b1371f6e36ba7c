"""Policy parameters belong to their policy; sweeps and capacity searches check every
config before running any, and a capacity search needs SLO targets."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from sincere.cli.app import main
from sincere.core.errors import ConfigError
from sincere.experiment.capacity import check_all, left_out_params, policy_label, with_policy
from sincere.experiment.grid import expand
from sincere.experiment.paths import set_fields
from sincere.experiment.spec import load_spec

ROOT = Path(__file__).resolve().parents[2]
PATHS = ["instances.0.engine.scheduler"]
PATHS_VALUES = ["fcfs", "sarathi", "niyama"]


def _niyama() -> dict[str, Any]:
    data = yaml.safe_load((ROOT / "examples" / "niyama.yaml").read_text())
    data["workload"]["num_requests"] = 200
    return dict(data)


def test_swapping_the_scheduler_leaves_the_old_ones_parameters_behind() -> None:
    """fcfs over a Niyama config gets no Niyama parameters; niyama keeps them."""
    base = _niyama()
    fcfs = with_policy(base, "fcfs", PATHS)
    assert "scheduler_params" not in fcfs["instances"][0]["engine"]
    same = with_policy(base, "niyama", PATHS)
    assert same["instances"][0]["engine"] == base["instances"][0]["engine"]
    assert left_out_params(base, "fcfs", PATHS) == ["h_s_per_token", "order", "slack_factor"]
    assert left_out_params(base, "niyama", PATHS) == []


def test_parameters_set_with_the_policy_are_kept() -> None:
    """When the same settings give the new policy's parameters, they are used."""
    base = _niyama()
    settings = [
        ("instances.0.engine.scheduler", "sarathi"),
        ("instances.0.engine.scheduler_params", {"chunk_size": 256}),
    ]
    out = set_fields(base, settings)
    assert out["instances"][0]["engine"]["scheduler_params"] == {"chunk_size": 256}


def test_a_placeholder_policy_keeps_its_parameters() -> None:
    """Parameters beside ``scheduler: ${s}`` were written for every value: they stay."""
    base = _niyama()
    base["instances"][0]["engine"]["scheduler"] = "${s}"
    out = set_fields(base, [("instances.0.engine.scheduler", "niyama")])
    assert "scheduler_params" in out["instances"][0]["engine"]


def test_a_scheduler_sweep_over_a_config_with_parameters_is_valid() -> None:
    """Sweeping fcfs / sarathi / niyama over W1 (sarathi with chunk_size) gives 3 valid
    cells: sarathi keeps its chunk, the others run their defaults."""
    spec = load_spec(
        {
            "base": str(ROOT / "examples" / "w1.yaml"),
            "axes": {"s": {"path": "instances.0.engine.scheduler", "values": PATHS_VALUES}},
        }
    )
    cells = {c.coords["s"]: c.config["instances"][0]["engine"] for c in expand(spec)}
    assert cells["sarathi"]["scheduler_params"] == {"chunk_size": 512}
    assert "scheduler_params" not in cells["fcfs"] and "scheduler_params" not in cells["niyama"]


def test_every_policy_is_checked_before_any_search_and_all_problems_are_named() -> None:
    """Two bad policy names: one error naming both, before anything runs."""
    base = _niyama()
    with pytest.raises(ConfigError) as raised:
        check_all(base, ["fcfs", "fcfz", "edff"], PATHS)
    message = str(raised.value)
    assert message.startswith("cannot search the capacity of 3 policies; nothing was run:")
    assert "instances[0].engine.scheduler: unknown engine scheduler; got 'fcfz'" in message
    assert "(policy fcfz)" in message
    assert "unknown engine scheduler; got 'edff'" in message and "(policy edff)" in message


def test_a_config_without_slo_targets_cannot_be_searched() -> None:
    """No tier has a target: every rate would pass, so the search refuses."""
    base = _niyama()
    del base["workload"]["tiers"]
    with pytest.raises(ConfigError, match=r"capacity needs SLO targets"):
        check_all(base, [None], PATHS)


def test_the_config_own_policy_is_named() -> None:
    """A search of the config's own policy is labelled with it, not None."""
    assert policy_label(_niyama(), PATHS) == "niyama"
    w1 = yaml.safe_load((ROOT / "examples" / "w1.yaml").read_text())
    assert policy_label(w1, PATHS) == "sarathi"
    no_engine = copy.deepcopy(w1)
    del no_engine["instances"][0]["engine"]
    assert policy_label(no_engine, PATHS) == "fcfs"


def test_capacity_cli_refuses_a_config_without_slo_targets(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`sincere capacity examples/w1.yaml` exits 2 with one reason instead of '> 8e3 req/s'."""
    monkeypatch.setattr("sys.argv", ["sincere", "capacity", str(ROOT / "examples" / "w1.yaml")])
    with pytest.raises(SystemExit) as exited:
        main()
    err = " ".join(capsys.readouterr().err.split())
    assert exited.value.code == 2
    assert "capacity needs SLO targets" in err and "Traceback" not in err
