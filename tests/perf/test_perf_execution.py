"""The engine execution model: CUDA-graph padding, asynchronous scheduling, presets."""

from __future__ import annotations

import dataclasses

import pytest

from sincere.core.errors import ConfigError
from sincere.perf.base import Batch, Deployment, StepTimeBase
from sincere.perf.execution import (
    PRESETS,
    ExecutedStepModel,
    ExecutionParams,
    FrontEnd,
    execution_params,
    with_execution,
)
from sincere.perf.roofline import Roofline

GPU_FIXED, GPU_TOKEN, GPU_CTX = 0.004, 1e-5, 1e-7
CPU_FIXED, CPU_SEQ = 0.002, 1e-4


class Affine(StepTimeBase):
    """GPU ``4 ms + 10 µs/token + 0.1 µs/context token``; CPU ``2 ms + 100 µs/sequence``."""

    def iteration_s(self, batch: Batch) -> float:
        gpu = GPU_FIXED + GPU_TOKEN * batch.num_tokens + GPU_CTX * batch.decode_ctx_tokens
        return gpu + self.cpu_step_s(batch.num_seqs)

    def cpu_step_s(self, num_seqs: int) -> float:
        return CPU_FIXED + CPU_SEQ * num_seqs


class NoCpu(StepTimeBase):
    def iteration_s(self, batch: Batch) -> float:
        return 0.01


def _params(**kw: object) -> ExecutionParams:
    base = {"graph_mode": "full_and_piecewise", "graph_sizes": (1, 2, 4, 8)}
    return ExecutionParams(**{**base, **kw})  # type: ignore[arg-type]


def test_without_a_preset_the_step_model_is_the_same_object() -> None:
    inner = Affine()
    assert with_execution(inner, execution_params(None, {}), 256) is inner
    assert with_execution(inner, PRESETS["eager"], 256) is inner


def test_a_decode_batch_pays_its_padded_captured_size_and_the_cpu_in_series() -> None:
    model = ExecutedStepModel(Affine(), _params(async_scheduling=False))
    # 5 sequences run the graph of 8: three padded tokens of GPU work (and, as in vLLM, the
    # CPU prepares only the 5 real ones)
    gpu = GPU_FIXED + GPU_TOKEN * 8 + GPU_CTX * 500
    expected = gpu + CPU_FIXED + CPU_SEQ * 5
    assert model.decode_step_s(5, 500) == pytest.approx(expected, rel=1e-12)
    # a captured size pays nothing extra; above the largest the batch runs eager, unpadded
    assert model.decode_step_s(4, 500) == pytest.approx(Affine().decode_step_s(4, 500))
    assert model.decode_step_s(9, 500) == pytest.approx(Affine().decode_step_s(9, 500))


def test_mixed_batches_pad_only_with_piecewise_graphs() -> None:
    mixed = Batch.of(prefill=[(3, 0)], decode=[100, 100])  # 5 tokens
    piecewise = ExecutedStepModel(Affine(), _params())
    decode_only = ExecutedStepModel(Affine(), _params(graph_mode="full_decode_only"))
    base = Affine().iteration_s(mixed)
    assert piecewise.iteration_s(mixed) == pytest.approx(base + 3 * GPU_TOKEN, rel=1e-12)
    assert decode_only.iteration_s(mixed) == pytest.approx(base, rel=1e-12)


def test_async_scheduling_exposes_only_the_cpu_the_gpu_does_not_cover() -> None:
    params = _params(graph_mode="none", graph_sizes=(), async_scheduling=True, serial_s=0.0005)
    model = ExecutedStepModel(Affine(), params)
    # 8 sequences: GPU 4.08 ms + context; CPU 2.8 ms: hidden
    gpu = GPU_FIXED + GPU_TOKEN * 8 + GPU_CTX * 1000
    assert model.decode_step_s(8, 1000) == pytest.approx(gpu + 0.0005, rel=1e-12)
    # 40 sequences: CPU 6 ms is longer than the GPU's 4.4 ms: the CPU sets the pace
    assert model.decode_step_s(40, 1000) == pytest.approx(0.006 + 0.0005, rel=1e-12)


def test_the_cpu_hides_under_its_share_of_the_gpu_time() -> None:
    """``cpu_overlap`` 0.5: the CPU hides under half the GPU time, the rest is exposed."""
    params = _params(graph_mode="none", graph_sizes=(), async_scheduling=True, cpu_overlap=0.5)
    model = ExecutedStepModel(Affine(), params)
    gpu = GPU_FIXED + GPU_TOKEN * 8 + GPU_CTX * 1000  # 4.18 ms; CPU 2.8 ms, above half of it
    assert model.decode_step_s(8, 1000) == pytest.approx(gpu + 0.0028 - 0.5 * gpu, rel=1e-12)
    # 1 sequence: GPU 4.011 ms, CPU 2.1 ms: 0.0945 ms above half the GPU; all hidden at 1.0
    one = GPU_FIXED + GPU_TOKEN + GPU_CTX * 10
    assert model.decode_step_s(1, 10) == pytest.approx(one + 0.0021 - 0.5 * one, rel=1e-12)
    full = ExecutedStepModel(Affine(), dataclasses.replace(params, cpu_overlap=1.0))
    assert full.decode_step_s(1, 10) == pytest.approx(one, rel=1e-12)
    for bad in (0.0, 1.5):
        with pytest.raises(ConfigError, match="cpu_overlap"):
            _params(async_scheduling=True, cpu_overlap=bad)


@pytest.mark.parametrize("overlap", [1.0, 0.4])
@pytest.mark.parametrize("num_seqs", [3, 20, 37, 64])
def test_a_decode_run_sums_its_iterations_exactly(num_seqs: int, overlap: float) -> None:
    # the CPU (2 ms + 0.1 ms/seq) crosses the growing GPU time (or its hidden share) inside
    # the run for some of these
    sizes = (1, 2, 4, 8, 16, 24, 32, 40, 48)
    model = ExecutedStepModel(
        Affine(), _params(graph_sizes=sizes, async_scheduling=True, cpu_overlap=overlap)
    )
    ctx, steps = 200, 400
    total = sum(model.decode_step_s(num_seqs, ctx + k * num_seqs) for k in range(steps))
    assert model.decode_steps_s(num_seqs, ctx, steps) == pytest.approx(total, rel=1e-9)


@pytest.mark.parametrize("model_name", ["llama-3-8b", "mixtral-8x7b"])
def test_the_roofline_under_vllm_v1_keeps_its_decode_runs_exact(
    model_name: str, make_deployment: object
) -> None:
    dep: Deployment = make_deployment(model_name, "H100-SXM", tp=2)  # type: ignore[operator]
    model = with_execution(Roofline(dep), PRESETS["vllm-v1"], 256)
    assert isinstance(model, ExecutedStepModel)
    for n, ctx in ((1, 100), (13, 4000), (200, 150_000), (700, 10_000)):
        total = sum(model.decode_step_s(n, ctx + k * n) for k in range(50))
        assert model.decode_steps_s(n, ctx, 50) == pytest.approx(total, rel=1e-9)


def test_the_breakdown_sums_to_the_iteration(make_deployment: object) -> None:
    dep: Deployment = make_deployment("llama-3-8b", "H100-SXM")  # type: ignore[operator]
    model = with_execution(Roofline(dep), PRESETS["vllm-v1"], 256)
    assert isinstance(model, ExecutedStepModel)
    for batch in (Batch.of(decode=[900] * 5), Batch.of(prefill=[(700, 0)], decode=[50] * 3)):
        parts = model.parts(batch)
        assert parts.total_s == pytest.approx(model.iteration_s(batch), rel=1e-12)
        assert parts.overhead_s < Roofline(dep).parts(batch).overhead_s


def test_vllm_keeps_graphs_up_to_twice_its_sequences() -> None:
    params = PRESETS["vllm-v1"].for_engine(max_num_seqs=64)
    assert params.graph_sizes[-1] == 128
    assert PRESETS["vllm-v1"].for_engine(max_num_seqs=1024).graph_sizes[-1] == 512


def test_overrides_replace_fields_and_say_so() -> None:
    params = execution_params("vllm-v1", {"async_scheduling": False,
                                          "frontend": {"output_s": 0.002}})  # fmt: skip
    assert params.async_scheduling is False
    assert params.frontend == dataclasses.replace(PRESETS["vllm-v1"].frontend, output_s=0.002)
    assert "overridden: async_scheduling, frontend" in params.source


@pytest.mark.parametrize(
    ("preset", "overrides", "message"),
    [
        ("vllm-v2", {}, "unknown engine preset"),
        ("vllm-v1", {"graph_sizs": [1]}, "unknown engine execution setting"),
        ("vllm-v1", {"graph_sizes": [4, 2]}, "increasing positive"),
        ("vllm-v1", {"graph_mode": "full"}, "unknown CUDA-graph mode"),
        ("vllm-v1", {"frontend": {"request_s": -1}}, "non-negative"),
        ("vllm-v1", {"frontend": {"latency": 1}}, "unknown front-end setting"),
        ("eager", {"graph_mode": "piecewise"}, "needs graph_sizes"),
        ("trtllm", {"allreduce_latency_share": 1.2}, "share of vLLM's custom all-reduce"),
    ],
)
def test_bad_settings_say_what_is_allowed(preset: str, overrides: dict[str, object],
                                          message: str) -> None:  # fmt: skip
    with pytest.raises(ConfigError, match=message):
        execution_params(preset, overrides)


def test_a_model_that_times_whole_iterations_is_refused_with_the_reason() -> None:
    with pytest.raises(ConfigError, match="prices its CPU part"):
        with_execution(NoCpu(), PRESETS["vllm-v1"], 256)


def test_the_front_end_intake_grows_with_the_prompt() -> None:
    front = FrontEnd(request_s=0.01, prompt_token_s=1e-6, output_s=0.002)
    assert front.intake_s(1000) == pytest.approx(0.011)
    assert FrontEnd().is_zero and not front.is_zero


def test_each_server_front_end_is_its_own_and_says_where_it_comes_from() -> None:
    """vLLM's HTTP server queues its intake in one process; TensorRT-LLM's takes every
    request's at once, a constant a request (its long prefills are quicker than vLLM's
    kernels price them, so no slope in the prompt); SGLang's is not measured and keeps
    vLLM's in-process intake."""
    vllm, trt, sglang = (PRESETS[n].frontend for n in ("vllm-v1", "trtllm", "sglang"))
    assert vllm.intake_servers == 1 and vllm.prompt_token_s > 0.0
    assert trt.intake_servers == 0 and trt.prompt_token_s == 0.0
    assert trt.intake_s(8192) == trt.intake_s(1) > sglang.intake_s(1)
    assert "trtllm-serve" in PRESETS["trtllm"].source
    assert "not measured" in PRESETS["sglang"].source
