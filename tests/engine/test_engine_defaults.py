"""A deployment's engine block, where it leaves fields out, is today's engine on its GPU."""

from __future__ import annotations

import pytest

from sincere.catalog import get_accelerator
from sincere.engine.defaults import LEGACY, default_limits, default_preset
from sincere.engine.spec import ContinuousConfig, DeploymentSpec
from sincere.sim.config import load_config


def _engine(**fields: object) -> ContinuousConfig:
    spec = DeploymentSpec.model_validate({"model": "llama-3.1-8b", **fields})
    assert isinstance(spec.engine, ContinuousConfig)
    return spec.engine


@pytest.mark.parametrize(
    ("accelerator", "seqs", "tokens"),
    [
        ("H100-SXM", 1024, 8192),  # 80 GB: >= 70 GiB, not an A100
        ("H200", 1024, 8192),  # 141 GB: under 160 GiB
        ("B200", 1024, 16384),  # 180 GB: >= 160 GiB
        ("A100-80GB", 256, 2048),  # an A100 keeps the smaller defaults
        ("L40S", 256, 2048),  # 48 GB
        ("RTX-PRO-6000", 1024, 8192),  # 96 GB
    ],
)
def test_vllm_v1s_server_defaults_by_device_memory(
    accelerator: str, seqs: int, tokens: int
) -> None:
    """vLLM's server defaults: 1,024 / 16,384 from 160 GiB, 1,024 / 8,192 from 70 GiB (not
    an A100), else 256 / 2,048; no watermark."""
    engine = _engine(accelerator=accelerator)
    assert engine.preset == "vllm-v1"
    assert (engine.max_num_seqs, engine.max_num_batched_tokens, engine.watermark) == (
        seqs,
        tokens,
        0.0,
    )


def test_what_the_block_gives_is_kept() -> None:
    """Given limits, preset and watermark stand; only the missing ones are filled in."""
    engine = _engine(accelerator="H100-SXM", engine={"max_num_seqs": 64, "watermark": 0.05})
    assert (engine.preset, engine.max_num_seqs, engine.max_num_batched_tokens) == (
        "vllm-v1",
        64,
        8192,
    )
    assert engine.watermark == 0.05
    eager = _engine(accelerator="H100-SXM", engine={"preset": "eager"})
    assert (eager.max_num_seqs, eager.max_num_batched_tokens, eager.watermark) == (
        LEGACY.max_num_seqs,
        LEGACY.max_num_batched_tokens,
        LEGACY.watermark,
    )
    other = _engine(accelerator="B200", engine={"preset": "sglang"})
    assert (other.max_num_seqs, other.max_num_batched_tokens) == (256, 8192)


def test_tensorrt_llm_sizes_its_kv_pool_from_the_free_memory() -> None:
    """The ``trtllm`` preset's utilisation is a share of the memory free after loading
    (TensorRT-LLM's ``free_gpu_memory_fraction``), the others' of the device's; a block
    that says which keeps it."""
    assert _engine(accelerator="B200").memory_share_of == "total"
    assert _engine(accelerator="B200", engine={"preset": "sglang"}).memory_share_of == "total"
    assert _engine(accelerator="B200", engine={"preset": "trtllm"}).memory_share_of == "free"
    given = _engine(accelerator="B200", engine={"preset": "trtllm", "memory_share_of": "total"})
    assert given.memory_share_of == "total"


@pytest.mark.parametrize(
    ("fields", "preset"),
    [
        ({}, "vllm-v1"),
        ({"step_model": {"kind": "roofline", "params": {"vllm_version": "0.19.0"}}}, "vllm-v1"),
        ({"cc": True}, "eager"),  # the CC wrapper prices whole iterations
        ({"step_model": {"kind": "roofline", "cc": True}}, "eager"),
        ({"step_model": {"kind": "inferno", "params": {"alpha": 10, "beta": 0.1}}}, "eager"),
        ({"accelerator": "cpu"}, "eager"),  # vLLM captures no CUDA graphs on the CPU
        ({"time_scale": 0.125}, "vllm-v1"),  # a compressed clock runs the same engine
    ],
)
def test_the_preset_follows_the_step_model(fields: dict[str, object], preset: str) -> None:
    """vllm-v1 over the roofline; eager where the step model times whole iterations."""
    assert _engine(**fields).preset == preset


def test_a_request_level_engine_is_left_alone() -> None:
    """SINCERE's request-level engine has no preset or limits to fill in."""
    spec = DeploymentSpec.model_validate(
        {"models": ["llama-3-8b"], "engine": {"kind": "request-level"}}
    )
    assert spec.engine.kind == "request-level"


def test_a_config_round_trips_with_what_was_filled_in() -> None:
    """config.yaml holds the filled-in fields; reading it back gives the same engine."""
    raw = {
        "workload": {
            "num_requests": 5,
            "arrival": {"kind": "poisson", "rate": 1.0},
            "lengths": {
                "prompt": {"kind": "fixed", "tokens": 100},
                "output": {"kind": "fixed", "tokens": 10},
            },
            "models": {"llama-3.1-8b": 1.0},
        },
        "instances": [{"model": "llama-3.1-8b", "accelerator": "B200"}],
    }
    config = load_config(raw)
    engine = config.instances[0].engine
    assert isinstance(engine, ContinuousConfig)
    assert (engine.preset, engine.max_num_batched_tokens) == ("vllm-v1", 16384)
    again = load_config(config.model_dump(mode="json", exclude_none=True))
    assert again.instances[0].engine == engine


def test_an_unknown_accelerator_keeps_the_legacy_limits_until_the_build_refuses_it() -> None:
    """The defaults need the catalog's memory; an unknown GPU is refused when built."""
    assert default_limits("vllm-v1", None) == LEGACY
    assert default_preset("roofline", False, get_accelerator("H100")) == "vllm-v1"
    engine = _engine(accelerator="no-such-gpu")
    assert (engine.max_num_seqs, engine.max_num_batched_tokens) == (256, 8192)
