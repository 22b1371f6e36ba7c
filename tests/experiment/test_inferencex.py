"""InferenceX points in the simulator: the row -> simulation mapping, the skip reasons, the
closed-loop config, the errors per group, and a few real rows end to end."""

from __future__ import annotations

import csv
import dataclasses
import math
from pathlib import Path
from typing import Any

import pytest

import sincere.experiment.inferencex as inferencex_module
from sincere.core.errors import ConfigError
from sincere.experiment.inferencex import (
    SGLANG_RECIPES,
    SKIP_REASONS,
    PointResult,
    PointSpec,
    Skip,
    batch_wait,
    benchmark_prompts,
    engine_preset,
    fp8_kv,
    in_lockstep,
    mtp_drafts,
    point_config,
    point_spec,
    score_points,
    sglang_recipe,
    simulate_point,
    token_budget,
    vllm_release,
)
from sincere.experiment.inferencex_report import (
    group_errors,
    natural_key,
    repeats,
    write_inferencex_report,
)
from sincere.sim import simulate
from sincere.workload.inferencex import OperatingPoint, read_operating_points

POINT = OperatingPoint(
    id="dsr1", line=2, backend="sglang", backend_version="0.5.9",
    model="deepseek-ai/DeepSeek-R1", system="b200_sxm", precision="fp8", gemm_quant="fp8",
    moe_quant="fp8_block", mode="agg", isl=1024, osl=1024, batch_size=64, tp=8, pp=1,
    attention_dp=1, moe_tp=1, moe_ep=8, prefill=None, decode=None, source_concurrency=64,
    ttft_ms=250.0, tpot_ms=20.0,
)  # fmt: skip
"""DeepSeek-R1 in fp8 on 8 B200s, experts spread over the 8, 64 clients, 1k in / 1k out."""
FILE = "serving-runs/inferencex/blackwell_operating_points.csv"


def test_a_representable_point_maps_to_its_deployment() -> None:
    """Catalog model, GPU, precision, TP, EP = moe_ep, clients, the benchmark's 10 C prompts."""
    spec = point_spec(POINT)
    assert isinstance(spec, PointSpec)
    assert (spec.catalog_model, spec.accelerator, spec.precision) == ("deepseek-r1", "B200", "fp8")
    assert (spec.tp, spec.pp, spec.ep, spec.clients) == (8, 1, 8, 64)
    assert spec.num_requests == 640  # InferenceX's client sends 10 C prompts
    assert spec.engine_preset == "sglang"


@pytest.mark.parametrize(
    ("change", "attrs"),
    [
        ({"model": "openai/gpt-oss-120b", "precision": "fp4", "moe_tp": 8, "moe_ep": 1},
         ("gpt-oss-120b", "mxfp4", 1)),
        ({"model": "meta-llama/Llama-3.1-70B", "moe_tp": 8, "moe_ep": 1},
         ("llama-3.1-70b", "fp8", 1)),
        ({"model": "MiniMaxAI/MiniMax-M2.5", "moe_tp": 8, "moe_ep": 1, "system": "b300_sxm"},
         ("minimax-m2.5", "fp8", 1)),
        ({"model": "nvidia/DeepSeek-V3.1-NVFP4", "precision": "fp8"}, ("deepseek-v3", "fp8", 8)),
        ({"moe_tp": None, "moe_ep": None}, ("deepseek-r1", "fp8", 1)),
        ({"precision": "fp4", "gemm_quant": "nvfp4", "moe_quant": "nvfp4"},
         ("deepseek-r1", "nvfp4", 8)),
        ({"model": "meta-llama/Llama-3.1-70B", "precision": "fp4", "moe_tp": 8, "moe_ep": 1},
         ("llama-3.1-70b", "nvfp4", 1)),
    ],
)  # fmt: skip
def test_models_precisions_and_experts_map(
    change: dict[str, object], attrs: tuple[object, ...]
) -> None:
    """GPT-OSS's fp4 is its MXFP4 checkpoint, any other model's fp4 NVFP4; a dense model
    takes EP 1; unstated MoE split: EP 1."""
    spec = point_spec(dataclasses.replace(POINT, **change))  # type: ignore[arg-type]
    assert isinstance(spec, PointSpec)
    assert (spec.catalog_model, spec.precision, spec.ep) == attrs


@pytest.mark.parametrize(
    ("change", "reason", "detail"),
    [
        ({"mode": "disagg"}, "pd-workers", "prefill: workers, tp or batch_size not stated"),
        ({"model": "meta-llama/Llama-3.1-70B", "attention_dp": 2, "batch_size": 32, "tp": 4,
          "moe_tp": None, "moe_ep": None}, "attention-dp", "attention_dp_size 2 on a dense model"),
        ({"source_concurrency": 128}, "concurrency", "batch_size 64 vs silicon_concurrency 128"),
        ({"model": "zhipuai/GLM-5"}, "model", "zhipuai/GLM-5"),
        ({"precision": ""}, "precision-unstated", "gemm_quant_mode 'fp8'"),
        ({"model": "openai/gpt-oss-120b", "precision": "fp8"}, "precision-missing",
         "fp8 not in ('bf16', 'mxfp4')"),
        ({"moe_tp": 2, "moe_ep": 2}, "moe-split", "moe_tp 2 x moe_ep 2 vs tp 8"),
        ({"tp": 16, "moe_ep": 16}, "multi-node", "16 GPUs > 8 per node"),
        ({"tp": 1, "attention_dp": 16, "batch_size": 4, "source_concurrency": 64},
         "multi-node", "16 GPUs > 8 per node"),
    ],
)  # fmt: skip
def test_unrepresentable_points_are_skipped_with_their_reason(
    change: dict[str, object], reason: str, detail: str
) -> None:
    """Each shape the simulator lacks is a Skip naming its reason and the row's values."""
    skip = point_spec(dataclasses.replace(POINT, **change))  # type: ignore[arg-type]
    assert isinstance(skip, Skip)
    assert (skip.reason, skip.detail) == (reason, detail)
    assert reason in SKIP_REASONS


def test_attention_dp_points_simulate_the_whole_group_in_lockstep() -> None:
    """tp 1 x attention DP 8, experts over EP 8: eight ranks of 1 GPU stepping together as
    one instance (``dp_ranks: lockstep``), all 64 clients and 10 x 64 requests, each rank
    running as many sequences as the scripts allow (the clients); it runs. A speculating
    point's (an MTP run's) group steps together too, its ranks speculating."""
    point = dataclasses.replace(POINT, tp=1, attention_dp=8, batch_size=8, source_concurrency=64)
    spec = point_spec(point)
    assert isinstance(spec, PointSpec) and in_lockstep(spec)
    assert (spec.tp, spec.attention_dp, spec.ep, spec.clients) == (1, 8, 8, 64)
    assert spec.num_requests == 640
    config = point_config(spec)
    (instance,) = config.instances
    assert (instance.tp, instance.attention_dp, instance.ep) == (1, 8, 8)
    assert instance.lockstep_ranks == 8
    assert instance.engine.max_num_seqs == 64
    assert config.workload.arrival.params == {"concurrency": 64}
    result = simulate_point(dataclasses.replace(spec, num_requests=16))
    assert isinstance(result, PointResult) and result.sim_tpot_ms > 0
    mtp = point_spec(dataclasses.replace(point, backend="trtllm", backend_version="1.2.0rc6.post3"))
    assert isinstance(mtp, PointSpec) and in_lockstep(mtp)
    assert mtp.num_requests == 640
    (group,) = point_config(mtp).instances
    assert group.lockstep_ranks == 8 and group.engine.max_num_seqs == 64
    assert group.engine.speculation is not None and group.engine.speculation.method == "mtp"
    assert point_config(mtp).workload.arrival.params == {"concurrency": 64}
    result = simulate_point(dataclasses.replace(mtp, num_requests=16))
    assert isinstance(result, PointResult) and result.sim_tpot_ms > 0


@pytest.mark.parametrize(
    ("change", "balance"),
    [({"backend": "trtllm", "backend_version": "1.2.0rc6.post2"}, (60, 0)),
     ({"backend": "trtllm", "backend_version": "1.2.0rc2", "model": "openai/gpt-oss-120b",
       "precision": "fp4", "moe_quant": "mxfp4"}, (50, 10)),
     ({"backend": "trtllm", "backend_version": "1.2.0rc6.post3"}, (60, 0)),
     ({"backend": "sglang"}, (0, 0))],
)  # fmt: skip
def test_tensorrt_llm_groups_balance_their_ranks_as_the_scripts_set(
    change: dict[str, Any], balance: tuple[int, int]
) -> None:
    """TensorRT-LLM's attention-DP groups run the scripts' attention_dp_config balance:
    DeepSeek-R1's timeout 60 without batching wait (its MTP runs' too), GPT-OSS's
    defaults 50 and 10; other backends have none."""
    point = dataclasses.replace(
        POINT, tp=1, attention_dp=8, batch_size=8, source_concurrency=64, **change
    )
    spec = point_spec(point)
    assert isinstance(spec, PointSpec)
    (instance,) = point_config(spec).instances
    params = instance.engine.execution_params()
    assert (params.balance_timeout_iters, params.balance_batching_iters) == balance


def test_a_deployment_the_simulator_refuses_is_a_skip() -> None:
    """DeepSeek-R1 in fp8 on 2 B200s cannot hold its weights: skipped as no-fit, with why."""
    spec = point_spec(dataclasses.replace(POINT, tp=2, moe_ep=2))
    assert isinstance(spec, PointSpec)
    skip = simulate_point(spec)
    assert isinstance(skip, Skip) and skip.reason == "no-fit"
    assert "does not fit on B200 (tp=2, fp8)" in skip.detail


def test_engine_presets_by_backend() -> None:
    """vLLM (every V1 release), SGLang and TensorRT-LLM; an unknown backend is refused."""
    assert engine_preset("vllm", "0.19.0") == engine_preset("vllm", "") == "vllm-v1"
    assert engine_preset("sglang", "0.5.9") == "sglang"
    assert engine_preset("trtllm", "1.2.0rc6") == "trtllm"
    with pytest.raises(ConfigError, match=r"unknown backend.*allowed: sglang, trtllm, vllm"):
        engine_preset("tgi", "3")


def test_benchmark_prompts_are_ten_per_client() -> None:
    """10 C at every concurrency, as the benchmark scripts send (no cap for large C)."""
    assert [benchmark_prompts(c) for c in (1, 64, 409, 1024, 4096)] == [10, 640, 4090, 10240, 40960]


def test_the_config_is_the_benchmark_as_run() -> None:
    """C clients, no think time, no warm-up left out, lengths in [0.8 L, L], the backend's
    preset, max_num_seqs = C, 8192 batched tokens, no prefix caching, fp8 KV for fp8."""
    spec = point_spec(dataclasses.replace(POINT, batch_size=6, source_concurrency=6))
    assert isinstance(spec, PointSpec)
    config = point_config(spec)
    arrival = config.workload.arrival
    assert (arrival.kind, arrival.params) == ("closed", {"concurrency": 6})  # no warm-up share
    assert config.workload.lengths.prompt == {"kind": "uniform", "low": 819, "high": 1024}
    (instance,) = config.instances
    assert (instance.model, instance.accelerator, instance.tp, instance.ep) == (
        "deepseek-r1",
        "B200",
        8,
        8,
    )
    assert instance.kv_precision == "fp8"
    engine = instance.engine
    assert (engine.preset, engine.max_num_seqs, engine.max_num_batched_tokens) == (
        "sglang",
        6,
        32768,  # the script's --chunked-prefill-size at TP 8
    )
    assert engine.gpu_memory_utilization == 0.82  # its --mem-fraction-static
    assert engine.enable_prefix_caching is False
    assert engine.execution_params().recv_interval == 10  # the SGLang script below 16 clients
    summary = simulate(config).summary
    assert summary["num_requests"] == spec.num_requests == 60
    assert summary["closed_loop"]["num_warmup"] == 0


@pytest.mark.parametrize(
    ("change", "memory", "chunk", "recv"),
    [({}, 0.82, 32768, 30),
     ({"tp": 4, "moe_tp": 4, "moe_ep": 1, "isl": 8192}, 0.95, 8192, 10),
     ({"precision": "fp4", "gemm_quant": "nvfp4", "moe_quant": "nvfp4"}, 0.85, 16384, 30),
     ({"system": "b300_sxm"}, 0.82, 32768, 30),
     ({"model": "Qwen/Qwen3.5-397B-A17B", "moe_tp": 8, "moe_ep": 1}, 0.82, 32768, 30),
     ({"model": "Qwen/Qwen3.5-397B-A17B", "moe_tp": 8, "moe_ep": 1, "system": "b300_sxm"},
      0.9, 8192, 30),
     ({"backend": "vllm", "backend_version": "0.19.0"}, 0.9, 8192, 1)],
)  # fmt: skip
def test_sglang_points_size_memory_and_chunks_as_their_scripts(
    change: dict[str, Any], memory: float, chunk: int, recv: int
) -> None:
    """InferenceX's SGLang scripts on B200 pass --mem-fraction-static and
    --chunked-prefill-size (DeepSeek-R1 fp8 by TP: 0.82 / 32,768 at 8; 0.95 / 8,192 at 4,
    polling every 10 iterations at any load; NVFP4 0.85 / 16,384; Qwen3.5 0.82 / 32,768);
    DeepSeek-R1's B300 scripts reuse the B200 recipe, Qwen3.5's B300 points and other
    backends keep the preset's 0.9 and 8,192 tokens."""
    point = dataclasses.replace(POINT, batch_size=32, source_concurrency=32, **change)
    spec = point_spec(point)
    assert isinstance(spec, PointSpec)
    (instance,) = point_config(spec).instances
    engine = instance.engine
    assert (engine.gpu_memory_utilization, engine.max_num_batched_tokens) == (memory, chunk)
    assert engine.execution_params().recv_interval == recv


def test_deepseek_r1_fp8_on_four_b200s_holds_its_8k_prompts_under_sglang() -> None:
    """At the preset's 0.9 of the memory DeepSeek-R1's fp8 weights leave four B200s almost
    no KV pool and its 8k-in runs preempt without end; the script's 0.95 holds them: every
    request ends without a preemption and the first token comes within a few prefills."""
    point = dataclasses.replace(
        POINT, tp=4, moe_tp=4, moe_ep=1, isl=8192, batch_size=8, source_concurrency=8
    )
    spec = point_spec(point)
    assert isinstance(spec, PointSpec) and sglang_recipe(spec) == SGLANG_RECIPES[("dsr1", "fp8", 4)]
    spec = dataclasses.replace(spec, num_requests=24)
    summary = simulate(point_config(spec)).summary
    assert summary["num_completed"] == 24
    assert summary["num_preemptions"] == 0
    assert summary["ttft_s"]["mean"] < 2.0  # 0.78 s measured at 8 clients


@pytest.mark.parametrize(
    ("backend", "clients", "interval"),
    [("sglang", 4, 10), ("sglang", 15, 10), ("sglang", 16, 30), ("sglang", 512, 30),
     ("vllm", 64, 1), ("trtllm", 64, 1)],
)  # fmt: skip
def test_sglang_points_poll_their_queue_as_the_benchmark_scripts_set(
    backend: str, clients: int, interval: int
) -> None:
    """InferenceX's SGLang servers run --scheduler-recv-interval 30 from 16 clients on, 10
    below; the other backends poll every iteration (their presets)."""
    point = dataclasses.replace(
        POINT, backend=backend, batch_size=clients, source_concurrency=clients
    )
    spec = point_spec(point)
    assert isinstance(spec, PointSpec)
    (instance,) = point_config(spec).instances
    assert instance.engine.execution_params().recv_interval == interval


@pytest.mark.parametrize(
    ("change", "tokens"),
    [({}, 30),
     ({"precision": "fp4", "gemm_quant": "nvfp4", "moe_quant": "nvfp4"}, 10),
     ({"model": "deepseek-ai/DeepSeek-V3"}, 30),
     ({"system": "b300_sxm"}, 30),
     ({"system": "gb200"}, 1),
     ({"model": "meta-llama/Llama-3.1-70B"}, 1),
     ({"backend": "vllm", "backend_version": "0.19.0"}, 1),
     ({"backend": "trtllm", "backend_version": "1.2.0rc6.post2"}, 10),
     ({"backend": "trtllm", "model": "deepseek-ai/DeepSeek-V3"}, 10),
     ({"backend": "trtllm", "system": "b300_sxm"}, 1)],
)  # fmt: skip
def test_deepseek_r1_streams_its_first_chunk_as_its_script_sets(
    change: dict[str, Any], tokens: int
) -> None:
    """InferenceX's DeepSeek-R1 scripts stream every 30 (SGLang fp8) or 10 tokens (SGLang
    fp4, TensorRT-LLM) on B200, and SGLang's B300 scripts reuse the B200 recipes: the
    client's first token is the engine's 30th / 10th. The file's DeepSeek-V3 points ran the
    same scripts. Other models and systems (scripts not read) and vLLM (first token at once)
    stream every token."""
    spec = point_spec(dataclasses.replace(POINT, **change))
    assert isinstance(spec, PointSpec)
    (instance,) = point_config(spec).instances
    assert instance.engine.execution_params().frontend.first_chunk_tokens == tokens


@pytest.mark.parametrize(
    ("change", "drafts", "first_chunk"),
    [({"backend_version": "1.2.0rc6.post3"}, 3, 32),
     ({"backend_version": "1.2.0rc6.post3", "tp": 1, "attention_dp": 8, "batch_size": 8,
       "source_concurrency": 64}, 1, 18),
     ({"backend_version": "1.2.0rc6.post2"}, 0, 10),
     ({"backend_version": "1.2.0rc6.post3", "model": "meta-llama/Llama-3.1-70B", "moe_tp": 8,
       "moe_ep": 1}, 0, 1)],
)  # fmt: skip
def test_deepseek_r1s_mtp_runs_speculate(
    change: dict[str, Any], drafts: int, first_chunk: int
) -> None:
    """InferenceX's TensorRT-LLM DeepSeek-R1 points of release 1.2.0rc6.post3 are its MTP
    scripts' runs: the engine drafts 3 tokens a step with DeepSeek's MTP module (1 with
    attention DP) at the module's published acceptance, and the script's stream interval
    (10 iterations) hands over ten speculative steps' tokens: 10 x (1 + .85 + .85^2 +
    .85^3) = 32, 10 x 1.85 = 18. The plain release's points and other models do not
    speculate."""
    point = dataclasses.replace(POINT, backend="trtllm", **change)
    spec = point_spec(point)
    assert isinstance(spec, PointSpec)
    assert mtp_drafts(spec) == drafts
    (instance,) = point_config(spec).instances
    speculation = instance.engine.speculation
    if drafts:
        assert speculation is not None and speculation.method == "mtp"
        assert speculation.num_draft_tokens == drafts and speculation.acceptance is None
    else:
        assert speculation is None
    assert instance.engine.execution_params().frontend.first_chunk_tokens == first_chunk


def test_an_nvfp4_point_runs_nvfp4_weights_with_an_fp8_kv_cache() -> None:
    """An fp4 row of Llama-3.1-70B (NVIDIA's NVFP4 checkpoint) runs NVFP4 weights and an fp8
    KV cache on its 8 B200s, and its closed loop completes every request."""
    point = dataclasses.replace(
        POINT, model="meta-llama/Llama-3.1-70B", precision="fp4", gemm_quant="nvfp4",
        moe_quant="nvfp4", moe_tp=8, moe_ep=1, batch_size=2, source_concurrency=2,
        isl=128, osl=16,
    )  # fmt: skip
    spec = point_spec(point)
    assert isinstance(spec, PointSpec)
    (instance,) = point_config(spec).instances
    assert (instance.precision, instance.kv_precision) == ("nvfp4", "fp8")
    result = simulate_point(spec)
    assert isinstance(result, PointResult) and result.num_measured == spec.num_requests == 20
    assert result.sim_tpot_ms > 0


def _gpt_oss_spec(backend: str) -> PointSpec:
    """A GPT-OSS-120B point (MXFP4 weights, TP 1, 4 clients) of ``backend``."""
    point = dataclasses.replace(
        POINT, backend=backend, model="openai/gpt-oss-120b", precision="fp4",
        gemm_quant="mxfp4", moe_quant="mxfp4", tp=1, moe_tp=1, moe_ep=1, batch_size=4,
        source_concurrency=4,
    )  # fmt: skip
    spec = point_spec(point)
    assert isinstance(spec, PointSpec) and spec.precision == "mxfp4"
    return spec


@pytest.mark.parametrize(
    ("backend", "activations"), [("vllm", "mxfp8"), ("trtllm", "mxfp8"), ("sglang", None)]
)
def test_gpt_oss_experts_run_as_each_backend_runs_them(
    backend: str, activations: str | None
) -> None:
    """GPT-OSS's MXFP4 experts multiply MXFP8 activations under vLLM (the benchmark script's
    VLLM_USE_FLASHINFER_MOE_MXFP4_MXFP8=1) and TensorRT-LLM (its SM100 default); SGLang keeps
    the step model's default (bf16); a model in another precision is untouched."""
    spec = _gpt_oss_spec(backend)
    (instance,) = point_config(spec).instances
    assert instance.step_model.params.get("mxfp4_activations") == activations
    other = point_spec(dataclasses.replace(POINT, backend=backend))
    assert isinstance(other, PointSpec)
    assert "mxfp4_activations" not in point_config(other).instances[0].step_model.params


@pytest.mark.parametrize(
    ("backend", "model", "isl", "budget"),
    [
        ("vllm", "MiniMaxAI/MiniMax-M2.5", 1024, 2048),
        ("vllm", "MiniMaxAI/MiniMax-M2.5", 8192, 16384),
        ("vllm", "meta-llama/Llama-3.1-70B", 1024, 8192),
        ("vllm", "moonshotai/Kimi-K2.5", 1024, 2048),
        ("sglang", "deepseek-ai/DeepSeek-R1", 1024, 8192),
    ],
)
def test_a_point_takes_its_scripts_token_budget(
    backend: str, model: str, isl: int, budget: int
) -> None:
    """MiniMax-M2.5's vLLM scripts and Kimi-K2.5's NVFP4 one pass ``--max-num-batched-tokens
    $((ISL * 2))``; points of other scripts (Kimi-K2.5's INT4 one included) take 8,192
    tokens per iteration."""
    precision = "fp4" if "Kimi" in model else POINT.precision
    point = dataclasses.replace(
        POINT, backend=backend, model=model, isl=isl, backend_version="0.19.0", tp=2,
        moe_tp=0, moe_ep=0, batch_size=4, source_concurrency=4, precision=precision,
    )  # fmt: skip
    spec = point_spec(point)
    assert isinstance(spec, PointSpec)
    assert token_budget(spec) == budget
    (instance,) = point_config(spec).instances
    assert instance.engine.max_num_batched_tokens == budget
    if "Kimi" in model:  # the INT4 weights' script sets no budget
        int4 = point_spec(dataclasses.replace(point, precision="int4"))
        assert isinstance(int4, PointSpec) and token_budget(int4) == 8192


@pytest.mark.parametrize(
    ("model", "precision", "osl", "tp", "clients", "system", "wait"),
    [
        ("meta-llama/Llama-3.1-70B", "fp8", 1024, 2, 4, "b200_sxm", 20),
        ("meta-llama/Llama-3.1-70B", "fp4", 1024, 4, 64, "b200_sxm", 20),
        ("meta-llama/Llama-3.1-70B", "fp8", 1024, 2, 4, "h200_sxm", 20),  # same script fact
        ("meta-llama/Llama-3.1-70B", "fp8", 1024, 2, 4, "h100_sxm", 0),  # script not read
        ("meta-llama/Llama-3.1-70B", "fp8", 1024, 8, 4, "b200_sxm", 0),  # TP 8: no wait
        ("meta-llama/Llama-3.1-70B", "fp8", 8192, 2, 4, "b200_sxm", 0),  # 1k / 8k: no wait
        ("deepseek-ai/DeepSeek-R1", "fp8", 1024, 8, 64, "b200_sxm", 0),  # read, not applied
    ],
)  # fmt: skip
def test_tensorrt_llm_points_wait_to_batch_as_their_scripts_say(
    model: str, precision: str, osl: int, tp: int, clients: int, system: str, wait: int
) -> None:
    """Llama-3.1-70B's TensorRT-LLM scripts on B200 and H200 hold new prompts 20 iterations
    for 1k / 1k runs below TP 8 (batch_wait_timeout_iters); the engine's execution model
    says so."""
    point = dataclasses.replace(
        POINT, backend="trtllm", backend_version="", model=model, precision=precision,
        gemm_quant=precision, moe_quant=precision, isl=1024, osl=osl, tp=tp, moe_tp=0,
        moe_ep=0, batch_size=clients, source_concurrency=clients, system=system,
    )  # fmt: skip
    spec = point_spec(point)
    assert isinstance(spec, PointSpec)
    assert batch_wait(spec) == wait
    (instance,) = point_config(spec).instances
    assert instance.engine.execution_params().batch_wait_iters == wait


@pytest.mark.parametrize(
    ("backend", "kv"), [("vllm", "fp8"), ("trtllm", "fp8"), ("sglang", "fp16")]
)
def test_gpt_oss_scripts_run_an_fp8_kv_cache(backend: str, kv: str) -> None:
    """InferenceX's vLLM and TensorRT-LLM GPT-OSS scripts set an fp8 KV cache for the MXFP4
    weights; a backend whose GPT-OSS script was not read keeps the default (16-bit) cache,
    and the KV of a point in another weight precision follows that precision."""
    spec = _gpt_oss_spec(backend)
    assert fp8_kv(spec) is (kv == "fp8")
    (instance,) = point_config(spec).instances
    assert instance.kv_precision == kv
    int4 = point_spec(
        dataclasses.replace(
            POINT, backend=backend, model="moonshotai/Kimi-K2.5", precision="int4",
            gemm_quant="int4_wo", moe_quant="int4_wo", moe_tp=8, moe_ep=1,
        )
    )  # fmt: skip
    assert isinstance(int4, PointSpec) and not fp8_kv(int4)


def test_hopper_points_run_as_their_scripts_do() -> None:
    """H100 / H200 rows map to those GPUs; their servers run what the Hopper scripts set
    and not the Blackwell facts: SGLang polls every iteration and DeepSeek-R1 streams every
    10 tokens on H200; GPT-OSS's MXFP4 experts multiply bf16 activations (Marlin) with a
    16-bit KV cache; MiniMax-M2.5's H100 server runs at most 256 sequences, piecewise
    graphs, vLLM's default 8,192 tokens an iteration."""
    h200 = point_spec(dataclasses.replace(POINT, system="h200_sxm"))
    assert isinstance(h200, PointSpec) and h200.accelerator == "H200"
    params = point_config(h200).instances[0].engine.execution_params()
    assert (params.recv_interval, params.frontend.first_chunk_tokens) == (1, 10)
    oss = dataclasses.replace(_gpt_oss_spec("vllm").point, system="h100_sxm")
    oss_spec = point_spec(oss)
    assert isinstance(oss_spec, PointSpec) and oss_spec.accelerator == "H100-SXM"
    (instance,) = point_config(oss_spec).instances
    assert "mxfp4_activations" not in instance.step_model.params
    assert instance.kv_precision == "fp16"
    minimax = point_spec(
        dataclasses.replace(
            POINT, backend="vllm", backend_version="0.19.0", system="h100_sxm",
            model="MiniMaxAI/MiniMax-M2.5", moe_tp=8, moe_ep=1, batch_size=512,
            source_concurrency=512,
        )
    )  # fmt: skip
    assert isinstance(minimax, PointSpec)
    engine = point_config(minimax).instances[0].engine
    assert (engine.max_num_seqs, engine.max_num_batched_tokens) == (256, 8192)  # type: ignore[union-attr]
    assert engine.execution_params().graph_mode == "piecewise"  # type: ignore[union-attr]


def test_a_system_the_simulator_cannot_place_is_a_skip() -> None:
    """A row of another system (an AMD one here) is skipped with its name, not an error."""
    skip = point_spec(dataclasses.replace(POINT, system="mi355x"))
    assert isinstance(skip, Skip) and (skip.reason, skip.detail) == ("system", "mi355x")
    assert "system" in SKIP_REASONS


@pytest.mark.parametrize(
    ("backend", "version", "release"),
    [
        ("vllm", "0.19.0", "0.19.0"),
        ("vllm", "0.15.1", "0.15.1"),
        ("vllm", "nightly-5b8c30d62b754b57", None),
        ("vllm", "", None),
        ("sglang", "0.5.9", None),
        ("trtllm", "1.2.0rc6.post2", None),
    ],
)
def test_a_vllm_point_is_priced_with_its_own_release(
    backend: str, version: str, release: str | None
) -> None:
    """A vLLM point's numbered release reaches the roofline as ``vllm_version`` (its own
    kernels' fit, as `validate runs` prices a run); a nightly, an unrecorded release and the
    other backends keep the newest kernels."""
    assert vllm_release(backend, version) == release
    spec = point_spec(dataclasses.replace(POINT, backend=backend, backend_version=version))
    assert isinstance(spec, PointSpec)
    params = point_config(spec).instances[0].step_model.params
    assert params.get("vllm_version") == release
    assert "kernel_tables" not in params


def test_kernel_tables_reach_every_simulated_point(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``score_points(kernel_tables=…)`` hands the folder to each point's roofline; without
    it no point is given one."""
    spec = point_spec(POINT)
    assert isinstance(spec, PointSpec) and spec.kernel_tables is None
    given = dataclasses.replace(spec, kernel_tables=str(tmp_path))
    assert point_config(given).instances[0].step_model.params["kernel_tables"] == str(tmp_path)
    seen: list[str | None] = []

    def run(specs: list[PointSpec], *_: object) -> list[PointResult]:
        seen.extend(s.kernel_tables for s in specs)
        return []

    monkeypatch.setattr(inferencex_module, "_run", run)
    other = dataclasses.replace(POINT, id="dsr1-b", batch_size=8, source_concurrency=8)
    score_points([POINT, other], kernel_tables=str(tmp_path))
    score_points([POINT])
    assert seen == [str(tmp_path), str(tmp_path), None]


def _result(backend: str, ttft: float, tpot: float) -> PointResult:
    """A simulated point whose real means are POINT's 250 ms and 20 ms."""
    spec = point_spec(dataclasses.replace(POINT, backend=backend))
    assert isinstance(spec, PointSpec)
    return PointResult(spec=spec, sim_ttft_ms=ttft, sim_tpot_ms=tpot, num_measured=200, wall_s=0.1)


def test_group_errors_by_hand() -> None:
    """Three points: TTFT errors +20 %, −40 %, +100 %; TPOT +10 %, +10 %, −50 %."""
    results = [_result("vllm", 300, 22), _result("vllm", 150, 22), _result("trtllm", 500, 10)]
    errors = {(e.group, e.value, e.metric): e for e in group_errors(results)}
    ttft = errors["all", "all", "ttft"]
    assert ttft.num_points == 3
    assert ttft.median_ape == pytest.approx(0.4) and ttft.mean_ape == pytest.approx(1.6 / 3)
    assert ttft.bias == pytest.approx(0.2)
    tpot = errors["all", "all", "tpot"]
    assert tpot.median_ape == pytest.approx(0.1) and tpot.bias == pytest.approx(0.1)
    vllm = errors["backend", "vllm", "ttft"]
    assert vllm.num_points == 2 and vllm.median_ape == pytest.approx(0.3)
    assert errors["backend", "trtllm", "tpot"].bias == pytest.approx(-0.5)
    assert errors["model", "deepseek-r1", "ttft"].num_points == 3
    tp = results[0].spec.tp
    assert errors["backend_tp", f"vllm TP {tp}", "ttft"].num_points == 2
    assert errors["backend_tp", f"trtllm TP {tp}", "tpot"].bias == pytest.approx(-0.5)


def test_groups_list_their_values_with_numbers_in_order() -> None:
    """TP 2 before TP 16: the scoreboard reads the numbers in a value as numbers."""
    values = ["trtllm TP 16", "trtllm TP 2", "sglang TP 8", "trtllm TP 8"]
    assert sorted(values, key=natural_key) == [
        "sglang TP 8",
        "trtllm TP 2",
        "trtllm TP 8",
        "trtllm TP 16",
    ]


def test_a_measurement_published_twice_is_scored_once() -> None:
    """The same setting measured once, published again under a new id with its means
    rounded to 0.01 ms and a shorter release label: ``distinct`` counts it once and the
    copy names the row it repeats; a third row of the same setting whose TPOT differs by
    0.02 ms is a measurement of its own, as is the same means on another backend; the
    same means under another model's label (the file's DeepSeek-R1 rows relabelled
    DeepSeek-V3) are a copy too."""
    first = dataclasses.replace(POINT, ttft_ms=250.004, tpot_ms=20.0049)
    copy = dataclasses.replace(
        POINT, id="again", line=9, backend_version="0.5", ttft_ms=250.0, tpot_ms=20.0
    )
    other = dataclasses.replace(POINT, id="rerun", line=5, tpot_ms=20.025)
    elsewhere = dataclasses.replace(POINT, id="trt", line=7, backend="trtllm")
    relabelled = dataclasses.replace(
        POINT, id="dsr1", line=11, model="deepseek-ai/DeepSeek-V3", ttft_ms=250.0, tpot_ms=20.0
    )
    assert relabelled.model != POINT.model
    results = []
    cases = ((first, 300), (copy, 300), (other, 200), (elsewhere, 500), (relabelled, 300))
    for point, ttft in cases:
        spec = point_spec(point)
        assert isinstance(spec, PointSpec)
        results.append(PointResult(spec, ttft, 22.0, num_measured=200, wall_s=0.1))
    assert repeats(results) == {9: 2, 11: 2}
    errors = {(e.group, e.value, e.metric): e for e in group_errors(results)}
    assert errors["all", "all", "ttft"].num_points == 5
    distinct = errors["distinct", "all", "ttft"]
    assert distinct.num_points == 3  # +20 %, -20 %, +100 %
    assert distinct.median_ape == pytest.approx(0.2, abs=1e-4)
    assert distinct.bias == pytest.approx(0.2, abs=1e-4)


REAL_ROWS = (
    "2026_03_25_gpt_oss_120b_b200_sxm_vllm_fp4_agg_1024x1024_c4_tp2_0_ep1_0_621",  # vLLM, TP 2
    "2026_04_06_llama_3_1_70b_b200_sxm_trtllm_fp8_agg_1024x1024_c4_tp2_ep1_615",  # TRT-LLM, TP 2
    "dsr1_b200_sglang_fp8_disagg_8192x1024_c4_cfg455",  # disaggregated: 1P1D of TP 8
    "2026_04_06_deepseek_r1_gb300_trtllm_fp8_disagg_8192x1024_c666_tp4_ep4_1672",  # no workers
)


def _real_points(shared_data: Path) -> list[OperatingPoint]:
    wanted = set(REAL_ROWS)
    points = [p for p in read_operating_points(shared_data / FILE) if p.id in wanted]
    if len(points) != len(REAL_ROWS):
        pytest.skip(f"rows {sorted(wanted - {p.id for p in points})} not in the file")
    return points


def test_real_rows_end_to_end(shared_data: Path, tmp_path: Path) -> None:
    """Three rows simulated (finite means, every request measured; one over a P/D fleet),
    one skipped; the files hold both, the engine preset per point; the same seed gives the
    same figures."""
    points = _real_points(shared_data)
    board = score_points(points, seed=0)
    assert [s.reason for s in board.skips] == ["pd-workers"]
    assert len(board.results) == 3
    for r in board.results:
        assert math.isfinite(r.sim_ttft_ms) and r.sim_ttft_ms > 0 and r.sim_tpot_ms > 0
        assert r.num_measured == benchmark_prompts(r.spec.clients)
    again = score_points(points, seed=0)
    assert [(r.sim_ttft_ms, r.sim_tpot_ms) for r in again.results] == [
        (r.sim_ttft_ms, r.sim_tpot_ms) for r in board.results
    ]
    files = write_inferencex_report(board, tmp_path / "out", source="three rows")
    with files.points_csv.open() as f:
        rows = list(csv.DictReader(f))
    assert {r["engine_preset"] for r in rows} == {"vllm-v1", "trtllm", "sglang"}
    fleets = {r["id"]: r["fleet"] for r in rows}
    assert fleets[REAL_ROWS[2]] == "1P(tp8 adp1 ep8) 1D(tp8 adp1 ep8) /1"
    assert fleets[REAL_ROWS[0]] == fleets[REAL_ROWS[1]] == ""  # colocated
    assert float(rows[0]["ttft_ape"]) == pytest.approx(abs(float(rows[0]["ttft_error"])))
    assert [r["repeat_of"] for r in rows] == ["", "", ""]  # three settings
    assert "pd-workers" in files.skipped_csv.read_text()
    assert all(f.exists() for f in files.figures) and len(files.figures) == 3
    assert "prefill/decode split" in files.markdown.read_text()


def test_sampling_draws_from_the_representable_points(shared_data: Path) -> None:
    """--sample 1 simulates one point; every skip of the selection is still counted."""
    points = _real_points(shared_data)
    board = score_points(points, sample=1, seed=3)
    assert len(board.results) == 1 and board.num_sampled == 1
    assert len(board.skips) == 1 and board.num_points == 4


@pytest.mark.parametrize(
    ("change", "first_chunk", "recv", "seqs"),
    [({}, 30, 10, 8),
     ({"batch_size": 256, "source_concurrency": 256}, 30, 30, 256),
     ({"precision": "bf16", "gemm_quant": "bf16", "moe_quant": "bf16"}, 30, 10, 8),
     ({"precision": "fp4", "gemm_quant": "nvfp4", "moe_quant": "nvfp4"}, 30, 30, 8),
     ({"system": "b300_sxm"}, 1, 10, 8),
     ({"system": "h200_sxm", "batch_size": 256, "source_concurrency": 256}, 1, 1, 128)],
)  # fmt: skip
def test_qwen35_runs_as_its_sglang_scripts_set(
    change: dict[str, Any], first_chunk: int, recv: int, seqs: int
) -> None:
    """Qwen3.5-397B-A17B's points (a hybrid Gated DeltaNet model) run as InferenceX's SGLang
    scripts on B200 set them: the first streamed chunk at the 30th token, the queue polled
    every 10 / 30 iterations (30 at every load for fp4), as many requests running as
    clients (the scripts read cap them at 128, but the 256-client points' decode shows
    bigger batches). The B300 points, whose TTFT a first token at once meets, stream every
    token; on H200 (scripts of the B300 recipe's era: no poll interval, 128 requests) so do
    they."""
    point = dataclasses.replace(
        POINT, backend="sglang", backend_version="0.5.9", model="Qwen/Qwen3.5-397B-A17B",
        tp=8, moe_tp=8, moe_ep=1, batch_size=8, source_concurrency=8,
    )  # fmt: skip
    spec = point_spec(dataclasses.replace(point, **change))
    assert isinstance(spec, PointSpec)
    assert spec.catalog_model == "qwen3.5-397b-a17b"
    (instance,) = point_config(spec).instances
    execution = instance.engine.execution_params()
    assert execution.frontend.first_chunk_tokens == first_chunk
    assert execution.recv_interval == recv
    assert instance.engine.max_num_seqs == seqs
    # the H200 scripts keep the recurrent state in bf16, the B200 ones in SGLang's fp32
    assert instance.state_precision == ("bf16" if change.get("system") == "h200_sxm" else "fp32")
