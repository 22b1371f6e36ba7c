"""``sincere step --speculation``: the iteration with and without speculative decoding."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

import sincere.cli.step  # noqa: F401  (registers the command)
from sincere.catalog import get_accelerator, get_model
from sincere.cli.app import app
from sincere.perf import Batch, Deployment
from sincere.perf.execution import execution_params, with_execution
from sincere.perf.factory import StepModelConfig
from sincere.perf.speculation import SpeculativeDecode, SpeculativeStepModel, speculation_params

runner = CliRunner()
BASE = ["step", "llama-3-8b", "--accelerator", "A100", "--decode", "8@2048", "--json"]


def _run(*extra: str) -> dict[str, object]:
    result = runner.invoke(app, [*BASE, *extra])
    assert result.exit_code == 0, result.output
    out: dict[str, object] = json.loads(result.output)
    return out


def test_ngram_draft_gains_its_expected_tokens_and_prices_the_verify() -> None:
    """k = 3 at 0.7: 1 + 0.7 + 0.49 + 0.343 tokens a step; the speculative iteration is the
    speculating step model's (today's engine, vllm-v1 with the A100's 256 sequences), the
    plain one the command's own without speculation."""
    plain = _run()
    out = _run("--speculation", "ngram", "--draft-tokens", "3", "--acceptance", "0.7")
    spec = out["speculation"]
    assert isinstance(spec, dict)
    assert out["iteration_s"] == plain["iteration_s"]  # the plain report is unchanged
    assert spec["plain"]["iteration_s"] == plain["iteration_s"]
    tokens = 1 + 0.7 + 0.49 + 0.343
    assert spec["speculative"]["tokens_per_step"] == pytest.approx(tokens)
    dep = Deployment(get_model("llama-3-8b"), get_accelerator("A100"))
    target = with_execution(StepModelConfig().build(dep), execution_params("vllm-v1", {}), 256)
    params = speculation_params("ngram", num_draft_tokens=3, acceptance=[0.7])
    model = SpeculativeStepModel(SpeculativeDecode(target, params, dep.model.num_layers))
    want = model.iteration_s(Batch(num_decode_seqs=8, decode_ctx_tokens=8 * 2048))
    assert spec["speculative"]["iteration_s"] == pytest.approx(want)
    assert spec["speculative"]["per_token_s"] == pytest.approx(want / tokens)
    assert spec["speedup"] == pytest.approx(plain["iteration_s"] / (want / tokens))


def test_above_the_spec_max_batch_the_step_is_plain() -> None:
    """8 sequences over --spec-max-batch 4: one token a step, the plain iteration."""
    out = _run("--speculation", "eagle", "--acceptance", "0.8", "--spec-max-batch", "4")
    spec = out["speculation"]
    assert isinstance(spec, dict)
    assert spec["speculates"] is False
    assert spec["speculative"]["tokens_per_step"] == 1.0
    assert spec["speculative"]["iteration_s"] == spec["plain"]["iteration_s"]


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        (["--acceptance", "0.7"], "give its method too"),
        (["--speculation", "eagle"], "needs an acceptance rate"),
        (["--speculation", "draft-model", "--acceptance", "0.7"], "--draft-model is needed"),
    ],
)
def test_bad_speculation_options_are_refused(extra: list[str], words: str) -> None:
    result = runner.invoke(app, [*BASE, *extra])
    assert result.exit_code != 0
    assert words in str(result.exception) + result.output


def test_speculation_needs_decodes() -> None:
    args = ["step", "llama-3-8b", "--accelerator", "A100", "--prefill", "64"]
    result = runner.invoke(app, [*args, "--speculation", "ngram", "--acceptance", "0.5"])
    assert result.exit_code != 0
    assert "give --decode" in str(result.exception) + result.output
