"""Planning deployments that speculate: decode steps become times per output token."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from sincere.cli.app import app
from sincere.core.errors import ConfigError
from sincere.engine.speculation import SpeculationConfig
from sincere.experiment.grid import check_config
from sincere.optimize.pd_check import colocated_sim_config, pd_sim_config
from sincere.optimize.pd_input import compare, load_plan_input
from sincere.optimize.pd_plan import Candidate, PDLoad, deployment, phase_times
from sincere.optimize.speculation import PerTokenDecode, planned_memory, planned_step
from sincere.perf.base import Batch
from sincere.perf.factory import StepModelConfig
from sincere.sim.config import KvLinkConfig

NGRAM = SpeculationConfig(method="ngram", num_draft_tokens=3, acceptance=0.8, max_batch=16)
TOKENS = 1 + 0.8 + 0.64 + 0.512  # tokens a sequence gains per step, k = 3 at 0.8
BASE: dict[str, Any] = {
    "model": "llama-3.1-8b",
    "load": {"rate_per_s": 2.0, "prompt_tokens": 3000, "output_tokens": 150},
    "slo": {"ttft_ms": 800, "tpot_ms": 25},
    "candidates": [{"accelerator": "H100-SXM"}],
    "disaggregation": {"kv_link": {"kind": "rdma"}},
}


def _dep() -> Any:
    return deployment("llama-3.1-8b", Candidate("H100-SXM", 1))


def test_a_decode_batch_is_the_speculative_step_over_its_tokens() -> None:
    """Within max_batch: (draft + verify) / tokens per step; above it the plain step; a
    prefill iteration is the target's own."""
    dep = _dep()
    plain = StepModelConfig().build(dep)
    step = planned_step(StepModelConfig(), dep, NGRAM)
    assert isinstance(step, PerTokenDecode)
    small = Batch(num_decode_seqs=8, decode_ctx_tokens=8 * 2000)
    verify = step.spec.verify_s(8, 8 * 2000)  # n-gram drafts cost nothing
    assert step.iteration_s(small) == pytest.approx(verify / TOKENS)
    assert step.iteration_s(small) < plain.iteration_s(small)
    big = Batch(num_decode_seqs=32, decode_ctx_tokens=32 * 2000)
    assert step.iteration_s(big) == plain.iteration_s(big)
    prefill = Batch.of(prefill=[(3000, 0)])
    assert step.iteration_s(prefill) == plain.iteration_s(prefill)


def test_without_speculation_the_planned_step_is_the_step_model() -> None:
    dep = _dep()
    assert planned_step(StepModelConfig(), dep, None).iteration_s(Batch.of(decode=[100])) == (
        StepModelConfig().build(dep).iteration_s(Batch.of(decode=[100]))
    )


def test_phase_times_decode_steps_per_token_prefill_unchanged() -> None:
    dep, load, link = _dep(), PDLoad(2.0, 3000, 150), KvLinkConfig(kind="rdma")
    plain = phase_times(dep, StepModelConfig().build(dep), load, link)
    fast = phase_times(dep, planned_step(StepModelConfig(), dep, NGRAM), load, link)
    assert plain is not None and fast is not None
    assert fast.prefill_s == plain.prefill_s
    assert all(
        f < p for f, p in zip(fast.decode_step_s[:16], plain.decode_step_s[:16], strict=True)
    )
    assert fast.decode_step_s[16:] == plain.decode_step_s[16:]


def test_a_drafter_takes_its_share_of_the_planned_kv() -> None:
    """An EAGLE head on Llama-3.1-8B: one layer's weights ((8.03e9 - 2 x 128,256 x 4,096) x 2
    / 32 bytes) and KV (4,096 of 135,168 bytes a token) leave the pool; a decode instance
    then holds blocks // 197 sequences of 3,150 tokens (blocks of 16)."""
    dep, load, link = _dep(), PDLoad(2.0, 3000, 150), KvLinkConfig(kind="rdma")
    eagle = SpeculationConfig(method="eagle", num_draft_tokens=3, acceptance=0.7)
    plain = planned_memory(dep, None, max_num_seqs=256, max_num_batched_tokens=3000)
    free = (plain.budget_bytes - plain.weight_bytes_per_gpu - plain.activation_bytes
            - plain.overhead_bytes)  # fmt: skip
    layer = (8.03e9 - 2 * 128256 * 4096) * 2 / 32
    blocks = math.floor((free - layer) / (33 * 4096 * 16))
    drafted = planned_memory(dep, eagle, max_num_seqs=256, max_num_batched_tokens=3000)
    assert drafted.num_kv_blocks == blocks < plain.num_kv_blocks
    step = planned_step(StepModelConfig(), dep, eagle)
    times = phase_times(dep, step, load, link, speculation=eagle)
    before = phase_times(dep, StepModelConfig().build(dep), load, link)
    assert times is not None and before is not None
    assert times.kv_batch == min(256, blocks // 197) < before.kv_batch


def test_a_speculating_plan_predicts_a_shorter_tpot_for_both_plans() -> None:
    plain = compare(load_plan_input(BASE))
    fast = compare(load_plan_input({**BASE, "speculation": NGRAM.model_dump()}))
    assert plain.colocated and fast.colocated and plain.disaggregated and fast.disaggregated
    assert fast.colocated.tpot_ms < plain.colocated.tpot_ms
    assert fast.disaggregated.tpot_ms < plain.disaggregated.tpot_ms


def test_a_step_model_without_parts_cannot_speculate() -> None:
    inferno = StepModelConfig(
        kind="inferno", params={"alpha_ms": 10.0, "beta_ms": 0.1, "gamma_ms": 0.0, "delta_ms": 0.1}
    )
    with pytest.raises(ConfigError, match="splits its iterations"):
        planned_step(inferno, _dep(), NGRAM)


def test_the_verify_simulation_speculates_as_planned() -> None:
    inp = load_plan_input({**BASE, "speculation": NGRAM.model_dump()})
    cmp = compare(inp)
    assert cmp.colocated and cmp.disaggregated
    colo = colocated_sim_config(inp, cmp.colocated)["instances"][0]["engine"]
    assert colo["speculation"]["method"] == "ngram"
    prefill, decode = pd_sim_config(inp, cmp.disaggregated)["instances"]
    assert (
        "speculation" not in prefill["engine"]
        and decode["engine"]["speculation"]["max_batch"] == 16
    )
    check_config(colocated_sim_config(inp, cmp.colocated))  # the engines build, speculating
    check_config(pd_sim_config(inp, cmp.disaggregated))


def test_plan_cli_takes_the_speculation_options(tmp_path: Path) -> None:
    src = tmp_path / "plan.yaml"
    src.write_text(yaml.safe_dump(BASE))
    outs = []
    for extra in ([], ["--speculation", "ngram", "--draft-tokens", "3", "--acceptance", "0.8"]):
        out = tmp_path / "out.json"
        res = CliRunner().invoke(app, ["plan", str(src), "--out", str(out), "--no-verify", *extra])
        assert res.exit_code == 0, res.output
        outs.append(json.loads(out.read_text()))
    assert outs[1]["colocated"]["tpot_ms"] < outs[0]["colocated"]["tpot_ms"]


@pytest.mark.parametrize(
    ("extra", "words"),
    [(["--acceptance", "0.7"], "give its method too"), (["--speculation", "ngram"], "acceptance")],
)
def test_plan_cli_refuses_incomplete_speculation(
    tmp_path: Path, extra: list[str], words: str
) -> None:
    src = tmp_path / "plan.yaml"
    src.write_text(yaml.safe_dump(BASE))
    res = CliRunner().invoke(app, ["plan", str(src), "--no-verify", *extra])
    assert res.exit_code != 0
    assert words in str(res.exception) + res.output


def test_plan_cli_refuses_speculation_for_an_inferno_directory(tmp_path: Path) -> None:
    res = CliRunner().invoke(app, ["plan", str(tmp_path), "--speculation", "mtp"])
    assert res.exit_code != 0
    assert "YAML plan input" in str(res.exception) + res.output


def test_simulated_sizing_of_a_speculating_plan_is_refused() -> None:
    """The capacity search's engines do not speculate: it would size the wrong deployment."""
    inp = load_plan_input({**BASE, "speculation": NGRAM.model_dump()})
    with pytest.raises(ConfigError, match="do not speculate"):
        compare(inp, sizing="simulate")
