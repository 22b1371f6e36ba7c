"""A speculating engine's drafter takes its weights and KV per token from the target's GPUs
(sincere.engine.draft_memory), by hand on Llama-3.1 shapes."""

from __future__ import annotations

import math

import pytest

from sincere.core.errors import ConfigError
from sincere.engine.build import deployment_of, limits_of
from sincere.engine.draft_memory import draft_memory
from sincere.engine.spec import ContinuousConfig, DeploymentSpec
from sincere.engine.speculation import SpeculationConfig
from sincere.perf.memory import plan_memory

EAGLE = {"method": "eagle", "num_draft_tokens": 3, "acceptance": 0.7}
# Llama-3.1-8B: 8.03 B parameters, 32 layers, an untied 128,256 x 4,096 embedding and head
LAYER_BYTES = (8.03e9 - 2 * 128256 * 4096) * 2 / 32  # 436,207,928 bf16 bytes a layer
LAYER_KV = 2 * 8 * 128 * 2  # K and V, 8 heads of 128, bf16: 4,096 bytes a token


def _blocks(model: str, tp: int, engine: dict[str, object]) -> tuple[int, int]:
    """KV blocks of the plain engine and of ``engine`` (same GPUs), from the memory plan."""
    spec = DeploymentSpec(model=model, accelerator="H100-SXM", tp=tp, engine=engine)
    deployment = deployment_of(spec, model, "test")
    eng = spec.engine
    assert isinstance(eng, ContinuousConfig)
    plain = eng.model_copy(update={"speculation": None})
    return (limits_of(plain, deployment, "t").num_kv_blocks,
            limits_of(eng, deployment, "t").num_kv_blocks)  # fmt: skip


def _free_bytes(model: str, tp: int) -> tuple[float, float]:
    """(bytes left for KV, target KV bytes a token) per GPU of the plain plan."""
    spec = DeploymentSpec(model=model, accelerator="H100-SXM", tp=tp)
    eng = spec.engine
    assert isinstance(eng, ContinuousConfig)
    plan = plan_memory(
        deployment_of(spec, model, "test"),
        max_num_seqs=eng.max_num_seqs,
        max_num_batched_tokens=eng.max_num_batched_tokens,
    )
    free = plan.budget_bytes - plan.weight_bytes_per_gpu - plan.activation_bytes
    return free - plan.overhead_bytes, plan.kv_bytes_per_token_per_gpu


def test_an_eagle_head_takes_one_target_layer() -> None:
    """One layer's weights (436.2 MB) and KV (4,096 of the target's 131,072 bytes a token):
    the pool is what is left over 135,168 bytes a token, in blocks of 16."""
    memory = draft_memory(
        SpeculationConfig(**EAGLE),
        deployment_of(
            DeploymentSpec(model="llama-3.1-8b", accelerator="H100-SXM"), "llama-3.1-8b", "t"
        ),
        256,
    )
    assert memory.weight_bytes == pytest.approx(LAYER_BYTES)
    assert memory.kv_bytes_per_token == LAYER_KV
    plain, speculating = _blocks("llama-3.1-8b", 1, {"speculation": EAGLE})
    free, per_token = _free_bytes("llama-3.1-8b", 1)
    assert per_token == 32 * LAYER_KV
    assert plain == math.floor(free / (32 * LAYER_KV * 16))
    assert speculating == math.floor((free - LAYER_BYTES) / (33 * LAYER_KV * 16))
    two = _blocks("llama-3.1-8b", 1, {"speculation": {**EAGLE, "draft_layers": 2}})[1]
    assert two == math.floor((free - 2 * LAYER_BYTES) / (34 * LAYER_KV * 16))


def test_a_draft_model_takes_its_own_weights_and_kv_at_the_targets_tp() -> None:
    """Llama-3.1-8B drafting for Llama-3.1-70B at TP 4: a quarter of its 16.06 GB of weights
    and of its 131,072 KV bytes a token (2 of its 8 KV heads) on each GPU."""
    drafting = {"method": "draft-model", "draft_model": "llama-3.1-8b", "num_draft_tokens": 4,
                "acceptance": 0.6}  # fmt: skip
    plain, speculating = _blocks("llama-3.1-70b", 4, {"speculation": drafting})
    free, per_token = _free_bytes("llama-3.1-70b", 4)
    assert speculating == math.floor((free - 4.015e9) / ((per_token + 32768) * 16))
    assert plain == math.floor(free / (per_token * 16)) and speculating < plain


def test_ngram_and_given_blocks_are_unchanged() -> None:
    """An n-gram drafter holds nothing on the GPU; num_kv_blocks given is kept as given."""
    ngram = {"method": "ngram", "num_draft_tokens": 3, "acceptance": 0.5}
    plain, speculating = _blocks("llama-3.1-8b", 1, {"speculation": ngram})
    assert speculating == plain
    given = _blocks("llama-3.1-8b", 1, {"speculation": EAGLE, "num_kv_blocks": 500})
    assert given == (500, 500)


def test_an_unknown_draft_model_names_where() -> None:
    """The drafter's catalog name is checked where the pool is sized, with the field."""
    bad = {"method": "draft-model", "draft_model": "no-such-model", "acceptance": 0.6}
    with pytest.raises(ConfigError, match=r"engine\.speculation.*unknown model|unknown model"):
        _blocks("llama-3.1-8b", 1, {"speculation": bad})
