"""The ``profiled`` step model: iterations composed from operator tables, no fitting."""

from __future__ import annotations

from pathlib import Path

import pytest

from sincere.catalog import get_accelerator, get_model
from sincere.core.errors import ConfigError
from sincere.perf import Batch, Deployment, make_step_model
from sincere.perf.operators import read_operator_profiles
from sincere.perf.profiled import ProfiledStep

H100 = get_accelerator("H100-SXM")


def deployment(model: str = "llama-3-8b", tp: int = 1, pp: int = 1) -> Deployment:
    """A deployment on the H100 the synthetic profiles describe."""
    return Deployment(get_model(model), H100, tp=tp, pp=pp)


def test_iteration_is_the_composed_kernel_sum(synthetic_profiles: Path) -> None:
    """Layers × (linear at the rounded tokens + attention per chunk and for the decodes
    + two all-reduces), plus the CPU step from the engine-steps table. At TP2 the
    attention table (TP1's shape) is scaled: half the heads, half the time above the floor."""
    profiles = read_operator_profiles(synthetic_profiles)
    model = ProfiledStep(profiles, deployment(tp=2), scale_attention=True)
    batch = Batch.of(prefill=[(300, 100)], decode=[1000] * 4)
    lin = profiles.linear_table("llama-3-8b", 2).layer_ms(304)
    attn = profiles.attention[0]
    pre_floor = min(float(r.ys.min()) for r in attn.prefill.rows)
    dec_floor = min(float(r.ys.min()) for r in attn.decode.rows)
    attn_ms = pre_floor + 0.5 * (attn.prefill_ms(300, 100) - pre_floor)
    attn_ms += dec_floor + 0.5 * (attn.decode_ms(4, 1024) - dec_floor)
    comm = 2 * profiles.topology().time_ms(304 * 4096 * 2, 2)
    cpu = profiles.engine_steps[0].step_ms(5)
    parts = model.parts(batch)
    assert parts.linear_s == pytest.approx(32 * lin * 1e-3)
    assert parts.attention_s == pytest.approx(32 * attn_ms * 1e-3)
    assert parts.communication_s == pytest.approx(32 * comm * 1e-3)
    assert parts.overhead_s == pytest.approx(cpu * 1e-3) and parts.lm_head_s == 0.0
    assert model.iteration_s(batch) == pytest.approx(1e-3 * (32 * (lin + attn_ms + comm) + cpu))


def test_factory_builds_it_from_a_folder(synthetic_profiles: Path) -> None:
    """``kind: profiled`` with ``profiles`` (the folder above the accelerator's) works."""
    model = make_step_model(
        "profiled", deployment(), {"profiles": str(synthetic_profiles.parent), "cpu": False}
    )
    batch = Batch(num_decode_seqs=8, decode_ctx_tokens=8 * 512)
    assert model.iteration_s(batch) > 0
    assert model.parts(batch).overhead_s == 0.0  # type: ignore[attr-defined]
    with pytest.raises(ConfigError, match=r"'profiled' needs parameter profiles.*\n.*got 'folder'"):
        make_step_model("profiled", deployment(), {"folder": "x"})


def test_decode_runs_are_summed_step_by_step(synthetic_profiles: Path) -> None:
    """``decode_steps_s`` is the sum of the iterations, context growing each step."""
    model = ProfiledStep(read_operator_profiles(synthetic_profiles), deployment())
    steps = [
        model.iteration_s(Batch(num_decode_seqs=3, decode_ctx_tokens=3 * 700 + 3 * k))
        for k in range(5)
    ]
    assert model.decode_steps_s(3, 3 * 700, 5) == pytest.approx(sum(steps))


def test_other_attention_shapes_need_consent(synthetic_profiles: Path) -> None:
    """A deployment whose per-GPU attention shape was not profiled is refused, unless
    scaling is asked for: then attention above the floor scales with the heads."""
    profiles = read_operator_profiles(synthetic_profiles)
    with pytest.raises(ConfigError, match=r"per-GPU shape.*scale_attention.*16 q / 4 kv heads"):
        ProfiledStep(profiles, deployment(tp=2))
    same = ProfiledStep(profiles, deployment())
    assert same.attention_scale == (1.0, 1.0)
    # Llama-3-8B at TP2 has 16 query and 4 KV heads per GPU: half the table's.
    half = ProfiledStep(profiles, deployment(tp=2), scale_attention=True)
    assert half.attention_scale == (0.5, 0.5)
    batch = Batch(num_decode_seqs=64, decode_ctx_tokens=64 * 4000)
    assert half.parts(batch).attention_s < 0.6 * same.parts(batch).attention_s


def test_pipeline_parallelism_is_refused(synthetic_profiles: Path) -> None:
    """The layout holds no pipeline sends, so PP > 1 is an error, not a guess."""
    with pytest.raises(ConfigError, match="pipeline parallelism is not profiled"):
        ProfiledStep(read_operator_profiles(synthetic_profiles), deployment(pp=2))


def test_published_a100_llama2_70b_tp2(shared_data: Path) -> None:
    """On the published A100 tables, a 512-token prefill of Llama-2-70B at TP2 takes
    about 0.19 s of layer kernels (80 layers of ~2.4 ms)."""
    model = make_step_model(
        "profiled",
        Deployment(get_model("llama-2-70b"), get_accelerator("A100-80GB"), tp=2),
        {"profiles": str(shared_data / "gpu-profiles")},
    )
    kernels = model.parts(Batch.of(prefill=[(512, 0)])).kernels_s  # type: ignore[attr-defined]
    assert kernels == pytest.approx(0.19, rel=0.05)
