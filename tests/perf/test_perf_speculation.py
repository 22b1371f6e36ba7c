"""Speculative decoding's pricing (sincere.perf.speculation), by hand on a linear step model,
then on the roofline and through ``sincere speculate``."""

from __future__ import annotations

import json
import sys

import pytest
from typer.testing import CliRunner

from sincere.catalog.loader import default_catalog
from sincere.cli.app import _register, app, main
from sincere.core.errors import ConfigError
from sincere.perf.base import Batch, Deployment, StepParts, StepTimeBase
from sincere.perf.factory import StepModelConfig
from sincere.perf.speculation import (
    MTP_DEEPSEEK_ACCEPTANCE,
    SpeculationParams,
    SpeculativeDecode,
    SpeculativeStepModel,
    speculation_params,
)

TOKEN_S, PAIR_S, CTX_S, HEAD_S, FIXED_S = 1e-4, 1e-7, 1e-6, 2e-5, 1e-3


class Linear(StepTimeBase):
    """An iteration: FIXED (CPU) + TOKEN per token + PAIR per prefill pair + CTX per decode
    context token, + HEAD per sampled sequence; ``parts`` splits it the same way."""

    def parts(self, batch: Batch) -> StepParts:
        return StepParts(
            linear_s=TOKEN_S * batch.num_tokens,
            attention_s=PAIR_S * batch.prefill_attn_pairs + CTX_S * batch.decode_ctx_tokens,
            lm_head_s=HEAD_S * batch.num_seqs,
            overhead_s=FIXED_S,
        )

    def iteration_s(self, batch: Batch) -> float:
        return self.parts(batch).total_s


def test_tokens_per_step_by_hand() -> None:
    """k = 2 at 0.5: 1 + 0.5 + 0.25; one rate p for k: (1 - p^(k+1)) / (1 - p); a profile."""
    assert SpeculationParams("ngram", 2, (0.5,)).tokens_per_step() == pytest.approx(1.75)
    p, k = 0.7, 4
    closed = (1 - p ** (k + 1)) / (1 - p)
    assert SpeculationParams("eagle", k, (p,)).tokens_per_step() == pytest.approx(closed)
    profile = SpeculationParams("eagle", 3, (0.9, 0.5))  # p3 repeats 0.5
    assert profile.rates() == [0.9, 0.5, 0.5]
    assert profile.tokens_per_step() == pytest.approx(1 + 0.9 + 0.45 + 0.225)
    assert SpeculationParams("eagle", 3, (0.0,)).tokens_per_step() == 1.0
    assert SpeculationParams("eagle", 3, (1.0,)).tokens_per_step() == 4.0


def test_verify_and_draft_by_hand() -> None:
    """B = 4 sequences of 100 tokens, k = 2: verify = FIXED + 12 tokens + pairs (3 x 100 +
    6 per sequence) + 12 sampled positions; an EAGLE head of one of 8 layers costs 1/8 of a
    decode step's layer work plus the LM head, twice."""
    spec = SpeculativeDecode(Linear(), SpeculationParams("eagle", 2, (0.5,)), num_layers=8)
    b, ctx = 4, 400
    pairs = 3 * ctx + b * 6
    verify = FIXED_S + TOKEN_S * 12 + PAIR_S * pairs + HEAD_S * 12
    assert spec.verify_s(b, ctx) == pytest.approx(verify)
    layers = TOKEN_S * b + CTX_S * ctx  # a decode step's layer work
    draft = 2 * (layers / 8 + HEAD_S * b)
    assert spec.draft_s(b, ctx) == pytest.approx(draft)
    assert spec.step_s(b, ctx) == pytest.approx(verify + draft)
    plain = FIXED_S + layers + HEAD_S * b
    assert spec.decode_s(b, ctx) == pytest.approx(plain)
    assert spec.speedup(b, ctx) == pytest.approx(plain / ((verify + draft) / 1.75))


def test_a_tree_verifies_its_width_and_accepts_at_most_k() -> None:
    """verify_tokens = 6 with k = 2: 24 tokens and 24 sampled positions verified for B = 4,
    still 1.75 tokens per step; fewer than k + 1 is refused."""
    tree = SpeculationParams("eagle", 2, (0.5,), verify_tokens=6)
    spec = SpeculativeDecode(Linear(), tree, num_layers=8)
    pairs = 6 * 400 + 4 * 21
    verify = FIXED_S + TOKEN_S * 24 + PAIR_S * pairs + HEAD_S * 24
    assert spec.verify_s(4, 400) == pytest.approx(verify)
    assert spec.tokens_per_step(4) == pytest.approx(1.75)
    with pytest.raises(ConfigError, match="verify_tokens must be at least"):
        SpeculationParams("eagle", 2, (0.5,), verify_tokens=2)


def test_ngram_drafts_free_and_a_draft_model_steps_k_times() -> None:
    """n-gram: no draft time; a draft model: its own k decode steps, context growing."""
    ngram = SpeculativeDecode(Linear(), SpeculationParams("ngram", 3, (0.5,)), num_layers=8)
    assert ngram.draft_s(4, 400) == 0.0
    draft = Linear()
    two = SpeculativeDecode(Linear(), SpeculationParams("draft-model", 2, (0.5,)), 8, draft)
    steps = draft.decode_steps_s(4, 400, 2)
    assert two.draft_s(4, 400) == pytest.approx(steps)
    by_hand = sum(draft.iteration_s(Batch(num_decode_seqs=4, decode_ctx_tokens=400 + 4 * i))
                  for i in range(2))  # fmt: skip
    assert steps == pytest.approx(by_hand)


def test_the_drafter_passes_over_prefill_chunks_by_hand() -> None:
    """A 300-token prompt: an EAGLE head of one of 4 layers does a quarter of its layer work
    (300 tokens, 45,150 pairs; no LM head, no fixed cost): 0.00862875 s; a draft model
    its own iteration over the chunk; n-gram nothing. A prefill-only iteration of a
    speculating engine is the target's plus that, as is one whose decodes are over
    max_batch; one beside speculating decodes adds it to the draft and the verify."""
    prefill = Batch.of(prefill=[(300, 0)])
    drafter = (TOKEN_S * 300 + PAIR_S * 45150) / 4
    eagle = SpeculativeDecode(Linear(), SpeculationParams("eagle", 2, (0.5,), max_batch=4), 4)
    assert eagle.draft_prefill_s(prefill) == pytest.approx(drafter)
    assert eagle.draft_prefill_s(Batch()) == 0.0
    ngram = SpeculativeDecode(Linear(), SpeculationParams("ngram", 2, (0.5,)), 4)
    assert ngram.draft_prefill_s(prefill) == 0.0
    draft = SpeculativeDecode(Linear(), SpeculationParams("draft-model", 2, (0.5,)), 4, Linear())
    assert draft.draft_prefill_s(prefill) == Linear().iteration_s(prefill)
    step = SpeculativeStepModel(eagle)
    assert step.iteration_s(prefill) == pytest.approx(Linear().iteration_s(prefill) + drafter)
    over = Batch(1, 300, 0, 45150.0, 5, 5000)  # five decodes: over max_batch 4
    assert step.iteration_s(over) == pytest.approx(Linear().iteration_s(over) + drafter)
    mixed = Batch(1, 300, 0, 45150.0, 4, 4000)
    want = drafter + eagle.draft_s(4, 4000) + eagle.verify_with_s(4, 4000, prefill)
    assert step.iteration_s(mixed) == pytest.approx(want)
    decode_only = Batch(num_decode_seqs=4, decode_ctx_tokens=4000)
    assert step.iteration_s(decode_only) == eagle.step_s(4, 4000)


def test_above_max_batch_the_engine_decodes_plainly() -> None:
    """Off above max_batch: the plain step, one token per step, speed-up exactly 1."""
    spec = SpeculativeDecode(Linear(), SpeculationParams("ngram", 3, (0.9,), max_batch=8), 8)
    assert spec.tokens_per_step(8) > 1.0 and spec.tokens_per_step(9) == 1.0
    assert spec.step_s(9, 900) == spec.decode_s(9, 900)
    assert spec.speedup(16, 1600) == 1.0
    assert spec.break_even_batch(100, largest=64) == 12  # 8 pays, the next grid size does not


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"method": "medusa", "num_draft_tokens": 2, "acceptance": (0.5,)}, "unknown"),
        ({"method": "eagle", "num_draft_tokens": 0, "acceptance": (0.5,)}, "num_draft_tokens"),
        ({"method": "eagle", "num_draft_tokens": 2, "acceptance": (1.5,)}, "[0, 1]"),
        ({"method": "eagle", "num_draft_tokens": 2, "acceptance": ()}, "[0, 1]"),
        ({"method": "eagle", "num_draft_tokens": 1, "acceptance": (0.5, 0.4)}, "at most one"),
        ({"method": "eagle", "num_draft_tokens": 1, "acceptance": (0.5,), "max_batch": 0},
         "max_batch"),
    ],
)  # fmt: skip
def test_bad_settings_are_refused_by_name(kwargs: dict[str, object], words: str) -> None:
    with pytest.raises(ConfigError, match=words.replace("[", r"\[").replace("]", r"\]")):
        SpeculationParams(**kwargs)  # type: ignore[arg-type]


def test_only_mtp_has_a_default_acceptance() -> None:
    """MTP: one drafted token at DeepSeek-V3's published lower bound; others must say."""
    mtp = speculation_params("mtp")
    assert (mtp.num_draft_tokens, mtp.acceptance) == (1, (MTP_DEEPSEEK_ACCEPTANCE,))
    assert "DeepSeek-V3" in mtp.source
    with pytest.raises(ConfigError, match="needs an acceptance rate"):
        speculation_params("eagle")
    assert speculation_params("eagle", acceptance=[0.8, 0.6]).num_draft_tokens == 2


def test_a_draft_model_is_needed_exactly_for_its_method() -> None:
    with pytest.raises(ConfigError, match="draft-model"):
        SpeculativeDecode(Linear(), SpeculationParams("draft-model", 2, (0.5,)), 8)
    with pytest.raises(ConfigError, match="draft-model"):
        SpeculativeDecode(Linear(), SpeculationParams("eagle", 2, (0.5,)), 8, Linear())


def _roofline(model: str, accelerator: str, tp: int, precision: str) -> SpeculativeDecode:
    catalog = default_catalog()
    dep = Deployment(catalog.model(model), catalog.accelerator(accelerator), precision=precision,
                     tp=tp)  # fmt: skip
    target = StepModelConfig(kind="roofline").build(dep)
    return SpeculativeDecode(target, speculation_params("mtp"), dep.model.num_layers)


def test_deepseek_mtp_speeds_small_batches_up_as_published_in_direction() -> None:
    """DeepSeek-V3 reports 1.8x tokens per second with MTP at 85-90 % acceptance; the
    roofline on 8 H200s in fp8 gives 1.5-1.9x at one sequence (direction and rough size)."""
    spec = _roofline("deepseek-v3", "H200", 8, "fp8")
    assert 1.5 < spec.speedup(1, 2048) < 1.9
    assert spec.verify_s(1, 2048) > spec.decode_s(1, 2048)  # two positions cost more than one


def test_cli_prints_the_rows() -> None:
    _register()
    out = CliRunner().invoke(app, ["speculate", "llama-3.1-8b", "--accelerator", "H100-SXM",
                                   "--method", "ngram", "--acceptance", "0.6",
                                   "--draft-tokens", "3", "--json"])  # fmt: skip
    assert out.exit_code == 0, out.output
    data = json.loads(out.output)
    assert data["tokens_per_step"] == pytest.approx(1 + 0.6 + 0.36 + 0.216)
    assert [r["batch"] for r in data["rows"]][:3] == [1, 2, 4]
    assert all(r["speedup"] > 1.0 for r in data["rows"][:3])  # n-gram drafts cost nothing


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        (["--method", "eagle"], "needs an acceptance rate"),
        (["--acceptance", "high"], "--acceptance must be rates"),
        (["--method", "eagle", "--acceptance", "0.7", "--draft-model", "llama-3.1-8b"],
         "--draft-model is needed with --method draft-model"),
    ],
)  # fmt: skip
def test_cli_bad_input_ends_with_one_line(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    extra: list[str],
    words: str,
) -> None:
    argv = ["sincere", "speculate", "llama-3.1-8b", "--accelerator", "H100-SXM"]
    monkeypatch.setattr(sys, "argv", argv + extra)
    with pytest.raises(SystemExit) as stop:
        main()
    assert stop.value.code == 2
    assert words in " ".join(capsys.readouterr().err.split())
