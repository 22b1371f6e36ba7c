"""A group of attention ranks stepping together as one simulated instance
(``engine.dp_ranks: lockstep``), beside the symmetric one-rank model, and the deployments
such a group refuses."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from sincere.core.errors import ConfigError
from sincere.core.records import RecordArrays
from sincere.core.request import RequestArrays
from sincere.engine.build import build_streaming_engine
from sincere.engine.spec import DeploymentSpec
from sincere.sim.api import simulate
from sincere.sim.config import load_config

MOE = {"model": "qwen3-30b-a3b", "accelerator": "H100-SXM", "ep": 2, "attention_dp": 2}


def _config(dp_ranks: str, count: int, **extra: Any) -> Any:
    return load_config({
        "seed": 1,
        "workload": {
            "num_requests": 300,
            "arrival": {"kind": "poisson", "rate": 20.0},
            "lengths": {"prompt": {"kind": "fixed", "tokens": 1500},
                        "output": {"kind": "fixed", "tokens": 100}},
            "models": {"qwen3-30b-a3b": 1.0},
        },
        "instances": [{"name": "g", **MOE, "count": count, "engine": {"dp_ranks": dp_ranks},
                       **extra}],
    })  # fmt: skip


def test_a_lockstep_group_is_one_instance_of_every_ranks_gpus() -> None:
    """The group of two ranks serves every request as one instance (two GPUs' cost); two
    symmetric ranks are two instances. Each of the group's prefills holds the other rank's
    decodes, so its decode is slower than the symmetric ranks' (which price a prefill's
    experts twice but never wait for each other)."""
    group = simulate(_config("lockstep", 1))
    apart = simulate(_config("symmetric", 2))
    assert group.summary["num_completed"] == apart.summary["num_completed"] == 300
    assert set(group.summary["instances"]) == {"g"}
    assert set(apart.summary["instances"]) == {"g-0", "g-1"}
    assert np.all(group.records.instance == 0)
    steps = group.summary["instances"]["g"]["num_steps"]
    assert steps < sum(s["num_steps"] for s in apart.summary["instances"].values())
    assert group.summary["tpot_s"]["mean"] > apart.summary["tpot_s"]["mean"]
    # the group is paid for two H100s over the run, as each symmetric rank for one
    hours = group.summary["duration_s"] / 3600
    per_gpu = group.summary["instances"]["g"]["cost_usd"] / hours / 2
    rank = apart.summary["instances"]["g-0"]["cost_usd"] / (apart.summary["duration_s"] / 3600)
    assert per_gpu == pytest.approx(rank)


def test_a_group_without_ep_splits_its_experts_over_every_gpu() -> None:
    """Two ranks whose experts are split by TP over both GPUs (ep 1, SGLang's DP attention
    without EP) step together and serve every request as one instance, decoding within a
    few per cent of the same group with EP 2: the same expert bytes read per GPU, another
    exchange (two all-reduces of the group's tokens a layer, not the all-to-all)."""
    tp_experts = simulate(_config("lockstep", 1, ep=1))
    with_ep = simulate(_config("lockstep", 1))
    assert tp_experts.summary["num_completed"] == 300
    assert set(tp_experts.summary["instances"]) == {"g"}
    ours, theirs = tp_experts.summary["tpot_s"]["mean"], with_ep.summary["tpot_s"]["mean"]
    assert ours != theirs and ours == pytest.approx(theirs, rel=0.05)


def test_the_same_seed_gives_the_same_run() -> None:
    a, b = simulate(_config("lockstep", 1)), simulate(_config("lockstep", 1))
    np.testing.assert_array_equal(a.records.finished_at, b.records.finished_at)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"attention_dp": 1, "ep": 2}, "needs attention_dp > 1"),
        ({"role": "prefill"}, "serve whole requests"),
    ],
)
def test_refused_deployments(fields: dict[str, Any], message: str) -> None:
    instance = {"name": "g", **MOE, "engine": {"dp_ranks": "lockstep"}, **fields}
    with pytest.raises(ConfigError, match=message):
        load_config({
            "workload": {"num_requests": 5, "models": {"qwen3-30b-a3b": 1.0}},
            "instances": [instance],
        })  # fmt: skip


def test_kv_tiers_and_an_unknown_mode_are_refused() -> None:
    tiers = {"cpu_gib": 16}
    with pytest.raises(ValueError, match="drop kv_offload"):
        DeploymentSpec(**MOE, engine={"dp_ranks": "lockstep", "kv_offload": tiers})
    with pytest.raises(ValueError, match="symmetric"):
        DeploymentSpec(**MOE, engine={"dp_ranks": "together"})


SPECULATION = {"method": "eagle", "num_draft_tokens": 2, "acceptance": 0.7}


def test_speculating_ranks_step_together() -> None:
    """A group whose ranks speculate: every request served, the same run for the same
    seed, the ranks' drafts counted together, and fewer group iterations than the plain
    group's for the same tokens (accepted drafts add tokens per iteration)."""
    spec = _config("lockstep", 1, engine={"dp_ranks": "lockstep", "speculation": SPECULATION})
    a, b = simulate(spec), simulate(spec)
    plain = simulate(_config("lockstep", 1))
    assert a.summary["num_completed"] == 300
    np.testing.assert_array_equal(a.records.finished_at, b.records.finished_at)
    g = a.summary["instances"]["g"]
    assert g["num_steps"] < plain.summary["instances"]["g"]["num_steps"]
    drafts = a.summary["spec_decode"]
    assert (
        drafts["num_drafts"] > 0 and 0 < drafts["num_accepted_tokens"] < drafts["num_draft_tokens"]
    )


def test_an_emulated_engine_is_one_rank() -> None:
    spec = DeploymentSpec(**MOE, engine={"dp_ranks": "lockstep"})
    req = RequestArrays.build([0.0], [10], [2])
    with pytest.raises(ConfigError, match="simulator only") as err:
        build_streaming_engine(spec, "e", req, RecordArrays.empty(1, ["e"]), "emulator")
    assert err.value.where == "emulator.engine.dp_ranks"
