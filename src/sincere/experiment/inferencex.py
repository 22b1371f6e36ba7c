"""Simulate InferenceX's closed-loop operating points and compare with the measured means.

Each point (:mod:`sincere.workload.inferencex`) becomes one closed-loop simulation:

* **model**: the catalog entry its Hugging Face id maps to (:data:`MODEL_NAMES`, then the
  catalog's own names and aliases);
* **accelerator**: the system's GPU (:data:`SYSTEM_ACCELERATORS`), one instance of ``tp``
  of them (``pp`` as given);
* **precision**: ``fp8`` / ``bf16`` / ``int4`` as stated when the catalog entry has it;
  ``fp4`` is MXFP4 for a model whose published checkpoint is MXFP4 (GPT-OSS: the row's
  checkpoint is that one) and NVFP4 for any other (the rows' GEMM and MoE quantisation
  say ``nvfp4``: NVIDIA's ModelOpt checkpoints), when the catalog entry lists it;
* **experts**: ``ep = moe_ep_size`` over the MoE group when ``moe_tp x moe_ep`` covers it;
* **attention data parallelism**: ``attention_dp_size`` ranks of ``tp_size`` GPUs sharing
  one MoE group: a colocated point's ranks step together as one instance with every client
  and request (:func:`in_lockstep`; an MTP run's ranks speculating); a disaggregated
  point's side is one rank with its share, the others taken to load the experts alike
  (the MoE step model's ``attention_dp``);
* **engine**: continuous batching (FCFS, chunked prefill, 8,192 tokens per iteration or
  the multiple of the input length the scripts set (:data:`PROMPT_TOKEN_BUDGETS`), no
  prefix caching) with ``max_num_seqs`` = the clients, under the backend's execution-model
  preset (:func:`engine_preset`: CUDA graphs, asynchronous scheduling, the front end's
  time; SGLang polls its queue as InferenceX's scripts set it:
  :data:`SGLANG_RECV_INTERVALS`); fp8 and NVFP4 weights run an fp8 KV cache (the
  serving recipes' setting and NVIDIA's NVFP4 checkpoints'; the rows do not state it), and
  so do GPT-OSS's MXFP4 weights, whose scripts set one (:data:`FP8_KV_SCRIPTS`);
  MXFP4 experts multiply MXFP8 activations under vLLM and TensorRT-LLM
  (:data:`MXFP8_EXPERT_BACKENDS`); DeepSeek-R1's TensorRT-LLM runs of InferenceX's MTP
  scripts speculate with its multi-token-prediction module (:data:`MTP_RUNS`);
* **workload**: as InferenceX's client ran it (vLLM's ``benchmark_serving``): ``C =
  batch_size x attention_dp`` clients with no think time, :func:`benchmark_prompts`
  requests, each with input and output lengths drawn uniformly in ``[0.8 L, L]`` (its
  ``random_range_ratio`` 0.8) and exactly that output (``ignore_eos``); no warm-up left out
  (the benchmark's means hold every request); seed fixed.

A disaggregated point (``mode`` ``disagg``) is the same closed loop over a simulated
prefill / decode fleet of the row's workers (:mod:`sincere.experiment.inferencex_pd`: one
slice of the fleet's ranks, the KV over NVLink or RDMA).

A point the simulator cannot represent is a :class:`Skip` with its reason (one of
:data:`SKIP_REASONS`), never dropped: disaggregated points whose workers or batches are not
stated, attention data parallelism on a dense model, models outside the catalog, engines (or
P/D workers) over more GPUs than one NVLink domain
(:data:`NVLINK_DOMAIN`), and deployments the simulator refuses at build (too little memory
for weights and KV, a TP degree that does not split the heads).

Compared: the simulated mean TTFT and TPOT of the run's requests at the client (the engine's
time plus its preset's front end) against the row's means (measured by the benchmark client).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from sincere.catalog.loader import default_catalog
from sincere.core.errors import ConfigError
from sincere.experiment.inferencex_pd import PDSpec, pd_instances, pd_spec
from sincere.perf.speculation import speculation_params
from sincere.sim.api import simulate
from sincere.sim.config import SimulationConfig, load_config
from sincere.workload.inferencex import OperatingPoint

SYSTEM_ACCELERATORS = {
    "b200_sxm": "B200", "b300_sxm": "B300", "gb200": "GB200", "gb300": "GB300",
    "h100_sxm": "H100-SXM", "h200_sxm": "H200", "a100_sxm": "A100-80GB", "l40s": "L40S",
    "rtx_pro_6000_server": "RTX-PRO-6000",
}  # fmt: skip
"""InferenceX system (AIConfigurator's system names) -> catalog accelerator (one GPU of
the system). A row of another system is skipped with its name (``system``)."""
NVLINK_DOMAIN = {
    "b200_sxm": 8, "b300_sxm": 8, "gb200": 72, "gb300": 72,
    "h100_sxm": 8, "h200_sxm": 8, "a100_sxm": 8, "l40s": 8, "rtx_pro_6000_server": 8,
}  # fmt: skip
"""GPUs one node's fast links join: an HGX board's 8 (H100, H200, A100 over NVLink, B200
and B300 too), a GB200 / GB300 NVL72 rack's 72, an 8-GPU PCIe server's 8 (L40S, RTX PRO
6000: the catalog's interconnect is their PCIe). An engine over more GPUs crosses the
scale-out network between nodes, which the simulator does not model."""
BLACKWELL_SYSTEMS = frozenset({"b200_sxm", "b300_sxm", "gb200", "gb300"})
"""Systems of Blackwell GPUs (SM100): the only ones with MXFP8 / FP4 tensor cores, and the
systems whose serving scripts the Blackwell-only facts below were read from."""
MODEL_NAMES = {
    "deepseek-ai/DeepSeek-R1": "deepseek-r1",
    "deepseek-ai/DeepSeek-V3": "deepseek-v3",
    "nvidia/DeepSeek-R1-NVFP4": "deepseek-r1",
    "nvidia/DeepSeek-V3.1-NVFP4": "deepseek-v3",
    "meta-llama/Llama-3.1-70B": "llama-3.1-70b",
    "openai/gpt-oss-120b": "gpt-oss-120b",
    "Qwen/Qwen3-32B": "qwen3-32b",
    "nvidia/Qwen3-32B-NVFP4": "qwen3-32b",
    "MiniMaxAI/MiniMax-M2.5": "minimax-m2.5",
}
"""Hugging Face ids of the file -> catalog models. NVIDIA's NVFP4 re-quantisations keep
their base model's architecture; DeepSeek-V3.1 keeps DeepSeek-V3's. Ids not here are looked
up among the catalog's names and aliases."""
ENGINE_PRESETS = {"vllm": "vllm-v1", "sglang": "sglang", "trtllm": "trtllm"}
"""Backend -> engine execution-model preset. Every vLLM release of the file (0.15 on, and
nightlies) runs the V1 engine, so versions do not change the preset."""
SKIP_REASONS = {
    "pd-workers": "prefill/decode split: workers or their batch not stated",
    "model": "model not in the catalog",
    "precision-unstated": "precision not stated",
    "precision-missing": "precision not in the model's catalog entry",
    "attention-dp": "attention data parallelism on a dense model: nothing to share",
    "moe-split": "MoE TP x EP does not cover the attention TP group",
    "concurrency": "clients unclear: batch_size x attention DP differs from the source's",
    "no-fit": "does not fit: too little memory for the weights and KV cache",
    "refused": "deployment refused by the simulator",
    "multi-node": "the engine's GPUs span nodes: links between nodes are not modelled",
    "refused-pd": "prefill/decode split the simulator cannot express",
    "system": "system not in the simulator's systems (SYSTEM_ACCELERATORS)",
}
"""Why a point is not simulated: key -> the words the report prints."""
FP8_KV_WEIGHTS = frozenset({"fp8", "nvfp4"})
"""Weight precisions whose points run an fp8 KV cache (module docstring)."""
FP8_KV_SCRIPTS = frozenset({("vllm", "gptoss"), ("trtllm", "gptoss")})
"""(backend, scripts) whose servers run an fp8 KV cache whatever the weights: InferenceX's
GPT-OSS scripts on B200 set it for MXFP4 weights (vLLM's ``gptoss_fp4_b200.sh`` writes
``kv-cache-dtype: fp8`` into its config, TensorRT-LLM's ``gptoss_fp4_b200_trt.sh``
``kv_cache_config: dtype: fp8``; every version of both read). Applied on Blackwell systems
only: the Hopper GPT-OSS scripts (``gptoss_fp4_h100.sh``, ``gptoss_fp4_h200.sh``) set no KV
dtype and run the MXFP4 experts on Marlin (``VLLM_MXFP4_USE_MARLIN=1``: bf16 activations)."""
SGLANG_RECV_INTERVALS = ((16, 30), (1, 10))
"""InferenceX's SGLang serving scripts (``benchmarks/single_node/dsr1_fp8_b200.sh``,
``dsr1_fp4_b200.sh``) launch the server with ``--scheduler-recv-interval 30`` when the
run has 16 clients or more and ``10`` below: ``(least clients, interval)``, first match.
The simulated SGLang engine polls its queue as seldom (the execution model's
``recv_interval``; the fp8 script's TP-4 branch keeps 10 at any load: :data:`SGLANG_RECIPES`).
Applied on Blackwell systems only: the H200 script (``dsr1_fp8_h200.sh``) sets no interval
(every iteration polls)."""


@dataclass(frozen=True)
class SglangRecipe:
    """What an InferenceX SGLang script passes its server beyond the clients' own settings:
    ``--mem-fraction-static`` (the KV pool is that share of the device less the weights,
    as vLLM's ``gpu_memory_utilization``), ``--chunked-prefill-size`` (tokens a prefill
    iteration takes: the engine's ``max_num_batched_tokens``) and, where it fixes one,
    ``--scheduler-recv-interval`` (None: by the clients, :data:`SGLANG_RECV_INTERVALS`)."""

    memory_fraction: float
    chunk_tokens: int
    recv_interval: int | None = None


SGLANG_RECIPES: dict[tuple[str, str, int], SglangRecipe] = {
    ("dsr1", "fp8", 8): SglangRecipe(0.82, 32768),
    ("dsr1", "fp8", 4): SglangRecipe(0.95, 8192, recv_interval=10),
    ("dsr1", "nvfp4", 0): SglangRecipe(0.85, 16384),
    ("qwen3.5", "fp8", 0): SglangRecipe(0.82, 32768),
    ("qwen3.5", "bf16", 0): SglangRecipe(0.82, 32768),
    ("qwen3.5", "nvfp4", 0): SglangRecipe(0.85, 32768, recv_interval=30),
}
"""(scripts, weight precision, TP; 0: any) -> the recipe of InferenceX's SGLang scripts on
B200 (:data:`SGLANG_RECIPE_SYSTEMS`): ``dsr1_fp8_b200.sh`` branches on TP (8: 0.82 of the
memory, 32,768-token chunks; 4, which it runs for 8k-in / 1k-out only: 0.95, 8,192, and
``--scheduler-recv-interval 10`` at any load, at most 32 sequences), ``dsr1_fp4_b200.sh``
passes 0.85 and 16,384, the Qwen3.5 ones 0.82 (``qwen3.5_fp8_b200.sh``,
``qwen3.5_bf16_b200.sh``) or 0.85 (``qwen3.5_fp4_b200.sh``, polling every 30 iterations
at any load) and 32,768. Points of other scripts keep the preset's 0.9 and
:data:`TOKEN_BUDGET`. The running-request caps these scripts pass (128 at DeepSeek-R1's TP 8
and for Qwen3.5) are not applied: the points of 256 and 512 clients decode far slower per
token than those of 128 (DeepSeek-R1 fp8 TP 8, 1k / 1k: 42.6 and 68.8 ms against 28.7), so
their batches grew past them (:data:`SCRIPT_SEQ_LIMITS`)."""
SGLANG_RECIPE_SYSTEMS = {
    "dsr1": frozenset({"b200_sxm", "b300_sxm"}),
    "qwen3.5": frozenset({"b200_sxm"}),
}
"""The systems each scripts' recipe covers: DeepSeek-R1's B300 scripts (``dsr1_fp8_b300.sh``,
``dsr1_fp4_b300.sh``) reuse the B200 recipe as-is (their own note says so); the Qwen3.5
B300 script read is a later recipe than the file's B300 points (:data:`SCRIPT_SEQ_LIMITS`),
so its points keep the preset's."""
SCRIPT_MODELS = {
    "deepseek-r1": "dsr1",
    "deepseek-v3": "dsr1",
    "gpt-oss-120b": "gptoss",
    "minimax-m2.5": "minimaxm2.5",
    "kimi-k2.5": "kimik2.5",
    "llama-3.1-70b": "70b",
    "qwen3.5-397b-a17b": "qwen3.5",
}
"""Catalog model -> the InferenceX serving scripts that ran its points. The file's
DeepSeek-V3 points are runs of the DeepSeek-R1 scripts (their ids begin ``dsr1_``: same
architecture, same recipes)."""
STREAM_INTERVALS = {
    ("sglang", "dsr1", "fp8", "b200_sxm"): 30,
    ("sglang", "dsr1", "nvfp4", "b200_sxm"): 10,
    ("sglang", "dsr1", "fp8", "b300_sxm"): 30,
    ("sglang", "dsr1", "nvfp4", "b300_sxm"): 10,
    ("trtllm", "dsr1", "fp8", "b200_sxm"): 10,
    ("trtllm", "dsr1", "nvfp4", "b200_sxm"): 10,
    ("sglang", "dsr1", "fp8", "h200_sxm"): 10,
    ("trtllm", "dsr1", "fp8", "h200_sxm"): 10,
    ("sglang", "qwen3.5", "fp8", "b200_sxm"): 30,
    ("sglang", "qwen3.5", "bf16", "b200_sxm"): 30,
    ("sglang", "qwen3.5", "nvfp4", "b200_sxm"): 30,
}
"""The stream interval of InferenceX's DeepSeek-R1 serving scripts (:data:`SCRIPT_MODELS`)
on B200 and B300, by (backend, scripts, weight precision, system): SGLang's
``--stream-interval`` (``benchmarks/single_node/fixed_seq_len/dsr1_fp8_b200.sh`` 30,
``dsr1_fp4_b200.sh`` 10; ``dsr1_fp8_b300.sh`` and ``dsr1_fp4_b300.sh`` reuse the B200
recipes, 30 and 10) and TensorRT-LLM's ``stream_interval`` (``dsr1_fp8_b200_trt.sh``,
``dsr1_fp4_b200_trt.sh``: 10). Both servers, in the releases measured, stream a request's
tokens when their count reaches the interval, the first chunk included, so the client's
first token is the engine's 30th (10th): the front end's ``first_chunk_tokens``. Points of
other scripts and systems stream every token. On H200 the DeepSeek-R1 fp8 scripts
(``dsr1_fp8_h200.sh``, SGLang; ``dsr1_fp8_h200_trt.sh``, TensorRT-LLM) set 10 as well.
(TensorRT-LLM's GPT-OSS script on B200,
``gptoss_fp4_b200_trt.sh``, sets ``stream_interval: 20``, but its points miss a median 7.5
of their own TPOT (quartiles 4.4 and 9.7) where a 20th-token first chunk would take 19:
not applied.) Qwen3.5-397B-A17B's SGLang scripts on B200 (``qwen3.5_fp8_b200.sh``,
``qwen3.5_bf16_b200.sh``, ``qwen3.5_fp4_b200.sh``) set 30; the B300 script read
(``qwen3.5_fp8_b300.sh``: 50, with one prompt a client) is a later recipe than the B300
points, whose TTFT a first token streamed at once already meets (SGLang 0.5.10; the B200
points ran 0.5.9 and nightly builds): not applied there."""
BATCH_WAITS = (
    # (backend, scripts, weight precisions, in, out, below this TP, from these clients, iters,
    #  the systems whose scripts say so)
    ("trtllm", "70b", ("fp8", "nvfp4"), 1024, 1024, 8, 1, 20, (*BLACKWELL_SYSTEMS, "h200_sxm")),
)
"""The colocated points whose TensorRT-LLM server waits to batch new prompts
(``batch_wait_timeout_iters``, the execution model's ``batch_wait_iters``), as the scripts
set it: Llama-3.1-70B's (``70b_fp8_b200_trt_slurm.sh``, ``70b_fp4_b200_trt_slurm.sh``) 20
iterations for 1k-in / 1k-out runs below TP 8; their other stop,
``batch_wait_max_tokens_ratio`` 0.9 of the token budget, is not modelled. DeepSeek-R1's fp8
script (``dsr1_fp8_b200_trt.sh``) sets 40 (ratio 0.8) for 1k / 1k runs of 64 clients or
more, but those points miss a median 13 of their own TPOT, not 40: not applied
(``benchmarks/README.md``, "TensorRT-LLM's batch waiting"). Applied on the systems whose
scripts were read: Blackwell's, and H200's, whose Llama-3.1-70B script
(``70b_fp8_h200_trt_slurm.sh``) sets the same 20 iterations for the same runs."""
TOKEN_BUDGET = 8192
"""Tokens per iteration (``max_num_batched_tokens``) of a point whose scripts set no other
(:data:`PROMPT_TOKEN_BUDGETS`): InferenceX's vLLM GPT-OSS and Llama-3.1-70B scripts pass
``max-num-batched-tokens: 8192``."""
PROMPT_TOKEN_BUDGETS = {
    ("vllm", "minimaxm2.5", "fp8"): 2,
    ("vllm", "minimaxm2.5", "nvfp4"): 2,
    ("vllm", "kimik2.5", "nvfp4"): 2,
}
"""(backend, scripts, weight precision) whose servers take ``k`` times the point's input
length as their tokens per iteration: InferenceX's MiniMax-M2.5 vLLM scripts
(``minimaxm2.5_fp8_b200.sh``, ``minimaxm2.5_fp4_b200.sh``) and its Kimi-K2.5 NVFP4 one
(``kimik2.5_fp4_b200.sh``; not the INT4 one) pass ``--max-num-batched-tokens $((ISL * 2))``
(2,048 for 1k prompts, 16,384 for 8k). Earlier versions of those scripts left vLLM's
default; the rows' dates do not say which ran which, and the points side with the newer
ones (1k-prompt TTFT, ``benchmarks/README.md``, "MiniMax-M2.5's token budget"). Applied on
Blackwell systems only: the Hopper MiniMax-M2.5 scripts (``minimaxm2.5_fp8_h100.sh``,
``minimaxm2.5_fp8_h200.sh``) leave vLLM's default, 8,192 on those GPUs."""
MXFP8_EXPERT_BACKENDS = frozenset({"vllm", "trtllm"})
"""Backends whose Blackwell servers multiply MXFP4 experts with MXFP8 activations (the
step model's ``mxfp4_activations: mxfp8``): InferenceX's vLLM GPT-OSS scripts
(``benchmarks/single_node/fixed_seq_len/gptoss_fp4_b200.sh``) export
``VLLM_USE_FLASHINFER_MOE_MXFP4_MXFP8=1``, and TensorRT-LLM picks ``W4A8_MXFP4_MXFP8`` on
SM100 unless overridden (its model config's MXFP4 rule). SGLang's choice is not known here:
its points keep bf16 activations, vLLM's default; so do all points of Hopper systems, which
have no MXFP8 tensor cores (:data:`BLACKWELL_SYSTEMS`)."""
MTP_RUNS = frozenset({("trtllm", "dsr1", "1.2.0rc6.post3")})
"""(backend, scripts, release) whose points are runs of InferenceX's multi-token-prediction
scripts, which the file does not mark: DeepSeek-R1's TensorRT-LLM MTP configurations on
B200 (``dsr1_fp8_b200_trt_mtp.sh``, ``dsr1_fp4_b200_trt_mtp.sh``) ran on release
1.2.0rc6.post3 while the plain ones ran on 1.2.0rc6.post2 (InferenceX's image tags, "STP"
and "MTP" on different ``.postN`` until both moved to 1.3.0rc5). The rows agree: the
1.2.0rc6.post3 points cover the MTP scripts' search space (fp8: TP 8 at 4-256 clients,
attention DP 8 at the largest), and each measures 0.52-0.76x the TPOT of the same
configuration under 1.2.0rc6.post2 (fp8 1k/1k TP 8: 5.38 against 10.30 ms at 4 clients,
14.2 against 21.5 at 64).
(``benchmarks/README.md``, "DeepSeek-R1's MTP runs")."""
MTP_DRAFTS = (3, 1)
"""Tokens the MTP scripts draft per step: ``num_nextn_predict_layers`` 3, or 1 with
attention data parallelism (``dsr1_fp8_b200_trt_mtp.sh``: ``MTP=1`` when
``DP_ATTENTION`` is true). Each draft is accepted at the engine's MTP default, 0.85
(DeepSeek-V3's report), the last rate repeating for the later positions."""
SCRIPT_SEQ_LIMITS = {
    ("vllm", "minimaxm2.5", "h100_sxm"): 256,
    ("vllm", "minimaxm2.5", "h200_sxm"): 1024,
    ("sglang", "qwen3.5", "h200_sxm"): 128,
}
"""(backend, scripts, system) whose servers run at most so many sequences whatever the
clients: InferenceX's MiniMax-M2.5 vLLM script on H100 (``minimaxm2.5_fp8_h100.sh``) passes
``--max-num-seqs 256``, the H200 one (``minimaxm2.5_fp8_h200.sh``) none, so vLLM's default
for the GPU, 1,024. Qwen3.5's SGLang scripts on H200 (``qwen3.5_fp8_h200.sh``,
``qwen3.5_bf16_h200.sh``) pass ``--max-running-requests 128`` (they set no queue-poll
interval and ``--stream-interval 50`` with the recipe whose B300 points stream their first
token at once, so neither is applied; their bf16 state: :data:`BF16_STATE_SCRIPTS`). The
B200 scripts read pass 128 as well (fp8 and bf16; the fp4 one ``max(CONC, 128)``), but the
B200 points did not run under it: the fp8 runs at 256 clients decode a token in 37-91 ms
against 27 ms at 128 clients (1k / 1k), so their batches grew past 128, and capped the
simulated first token waited a whole request (26-179 s against 2.2-7.6 s measured). The
other scripts read pass the clients (``--max-num-seqs $CONC``)."""
BF16_STATE_SCRIPTS = frozenset({("sglang", "qwen3.5", "h200_sxm")})
"""(backend, scripts, system) whose servers keep linear-attention state in bf16:
Qwen3.5's SGLang scripts on H200 (``qwen3.5_fp8_h200.sh``, ``qwen3.5_bf16_h200.sh``) pass
``--mamba-ssm-dtype bfloat16``; its B200 ones leave SGLang's fp32 (the B300 one read sets
bf16 too, but is a later recipe than the file's B300 points: not applied)."""
ADP_BALANCE = {("trtllm", "dsr1"): (60, 0), ("trtllm", "gptoss"): (50, 10)}
"""(backend, scripts) -> the attention-DP balance their servers run with attention DP,
``(timeout_iters, batching_wait_iters)`` of TensorRT-LLM's ``attention_dp_config`` with
``enable_balance: true``: InferenceX's DeepSeek-R1 scripts (``dsr1_fp8_b200_trt.sh``,
``dsr1_fp4_b200_trt.sh``) set ``timeout_iters: 60, batching_wait_iters: 0``, its GPT-OSS
script (``gptoss_fp4_b200_trt.sh``) ``enable_balance`` alone, so TensorRT-LLM's defaults
(50 and 10, ``AttentionDpConfig``). Applied to the ranks of a lockstep group
(:func:`in_lockstep`), the MTP runs' (:data:`MTP_RUNS`) included: their scripts
(``dsr1_fp*_b200_trt_mtp.sh``) were not read; they are the same family's, and without the
balance their 8k / 1k fp4 point at 256 clients decodes at 76 ms a token against 29.7
measured (33.3 with it)."""
SCRIPT_GRAPH_MODES = {("vllm", "minimaxm2.5", "h100_sxm"): "piecewise"}
"""(backend, scripts, system) whose servers run another CUDA-graph mode than the preset's:
the same H100 script sets ``cudagraph_mode: PIECEWISE`` (no full decode graphs)."""
PROMPTS_PER_CLIENT = 10
RANGE_RATIO = 0.8


def engine_preset(backend: str, version: str) -> str:
    """The engine execution-model preset of ``backend`` (``version`` is recorded, not used:
    :data:`ENGINE_PRESETS`). Raises :class:`ConfigError` on an unknown backend."""
    del version  # every release in the data maps to its backend's one preset
    preset = ENGINE_PRESETS.get(backend)
    if preset is None:
        raise ConfigError("unknown backend", value=backend, allowed=ENGINE_PRESETS)
    return preset


def sglang_recv_interval(clients: int) -> int:
    """The ``--scheduler-recv-interval`` of InferenceX's SGLang server for ``clients``
    (:data:`SGLANG_RECV_INTERVALS`)."""
    return next(n for least, n in SGLANG_RECV_INTERVALS if clients >= least)


def vllm_release(backend: str, version: str) -> str | None:
    """The vLLM release whose kernels price a point (the roofline's ``vllm_version``): a
    vLLM point's numbered release; None (the newest kernels) for a nightly build, whose
    release is not named, and for the other backends."""
    if backend != "vllm" or not version[:1].isdigit():
        return None
    return version


def _step_model(spec: PointSpec) -> dict[str, Any] | None:
    """The step model's settings beyond its defaults: the kernels of a vLLM point's own
    release (:func:`vllm_release`), the measured kernel database when given
    (``spec.kernel_tables``: :mod:`sincere.perf.measured_moe`), and MXFP4 experts against
    MXFP8 activations where the backend runs them so (:data:`MXFP8_EXPERT_BACKENDS`)."""
    params: dict[str, Any] = {}
    release = vllm_release(spec.point.backend, spec.point.backend_version)
    if release is not None:
        params["vllm_version"] = release
    if spec.kernel_tables is not None:
        params["kernel_tables"] = spec.kernel_tables
    if (
        spec.precision == "mxfp4"
        and spec.point.backend in MXFP8_EXPERT_BACKENDS
        and spec.point.system in BLACKWELL_SYSTEMS
    ):
        params["mxfp4_activations"] = "mxfp8"
    return {"kind": "roofline", "params": params} if params else None


def _execution(spec: PointSpec) -> dict[str, Any]:
    """The engine's execution settings beyond its preset: InferenceX's SGLang servers poll
    their queue every :func:`sglang_recv_interval` decode iterations (of the point's
    clients), servers stream by their scripts' interval where known
    (:data:`STREAM_INTERVALS`), TensorRT-LLM servers wait to batch new prompts as their
    scripts set (:func:`batch_wait`) and balance their attention-DP ranks
    (:data:`ADP_BALANCE`)."""
    out: dict[str, Any] = {}
    script = scripts_of(spec)
    if spec.engine_preset == "sglang" and spec.point.system in BLACKWELL_SYSTEMS:
        recipe = sglang_recipe(spec)
        fixed = None if recipe is None else recipe.recv_interval
        out["recv_interval"] = fixed or sglang_recv_interval(spec.clients)
    key = (spec.point.backend, script, spec.precision, spec.point.system)
    if (interval := STREAM_INTERVALS.get(key)) is not None:
        out["frontend"] = {"first_chunk_tokens": first_chunk_tokens(spec, interval)}
    if wait := batch_wait(spec):
        out["batch_wait_iters"] = wait
    balance = ADP_BALANCE.get((spec.point.backend, script))
    if balance is not None and in_lockstep(spec):
        out["balance_timeout_iters"], out["balance_batching_iters"] = balance
    if (
        graphs := SCRIPT_GRAPH_MODES.get((spec.point.backend, script, spec.point.system))
    ) is not None:
        out["graph_mode"] = graphs
    if spec.frontend:
        out["frontend"] = {**out.get("frontend", {}), **dict(spec.frontend)}
    return out


def scripts_of(spec: PointSpec) -> str:
    """The InferenceX scripts that ran ``spec``'s point (:data:`SCRIPT_MODELS`; a model not
    listed names its own)."""
    return SCRIPT_MODELS.get(spec.catalog_model, spec.catalog_model)


def first_chunk_tokens(spec: PointSpec, interval: int) -> int:
    """Tokens in the first streamed chunk of ``spec``'s server at its scripts' stream
    ``interval``: SGLang's interval counts tokens; TensorRT-LLM's counts iterations, so a
    server speculating (:func:`mtp_drafts`) hands over ``interval`` steps' tokens, at the
    expected tokens a speculative step keeps (the engine's MTP acceptance)."""
    drafts = mtp_drafts(spec)
    if spec.point.backend != "trtllm" or not drafts:
        return interval
    per_step = speculation_params("mtp", num_draft_tokens=drafts).tokens_per_step()
    return round(interval * per_step)


def mtp_drafts(spec: PointSpec) -> int:
    """Tokens ``spec``'s server drafts per step with DeepSeek's multi-token-prediction module
    (:data:`MTP_RUNS`, :data:`MTP_DRAFTS`; 0: it does not speculate)."""
    p = spec.point
    if (p.backend, scripts_of(spec), p.backend_version) not in MTP_RUNS:
        return 0
    plain, with_dp = MTP_DRAFTS
    return with_dp if spec.attention_dp > 1 else plain


def batch_wait(spec: PointSpec) -> int:
    """Iterations ``spec``'s server holds new prompts to batch them (:data:`BATCH_WAITS`;
    0: none)."""
    p = spec.point
    script = scripts_of(spec)
    for backend, scripts, precisions, isl, osl, below_tp, clients, iters, systems in BATCH_WAITS:
        if (p.backend, script, p.isl, p.osl) != (backend, scripts, isl, osl):
            continue
        if p.system not in systems:
            continue
        if spec.precision in precisions and spec.tp < below_tp and spec.clients >= clients:
            return iters
    return 0


def max_num_seqs(spec: PointSpec) -> int:
    """The most sequences ``spec``'s colocated server runs: its scripts' limit
    (:data:`SCRIPT_SEQ_LIMITS`), else as many as its clients."""
    key = (spec.point.backend, scripts_of(spec), spec.point.system)
    return SCRIPT_SEQ_LIMITS.get(key, spec.clients)


def sglang_recipe(spec: PointSpec) -> SglangRecipe | None:
    """The recipe of ``spec``'s SGLang scripts (:data:`SGLANG_RECIPES`); None for other
    backends, scripts or systems."""
    script = scripts_of(spec)
    if spec.point.backend != "sglang" or spec.point.system not in SGLANG_RECIPE_SYSTEMS.get(
        script, ()
    ):
        return None
    by_tp = SGLANG_RECIPES.get((script, spec.precision, spec.tp))
    return by_tp or SGLANG_RECIPES.get((script, spec.precision, 0))


def token_budget(spec: PointSpec) -> int:
    """Tokens per iteration of ``spec``'s colocated servers (:data:`TOKEN_BUDGET`, the
    multiple of the input length its scripts set: :data:`PROMPT_TOKEN_BUDGETS`, or an
    SGLang recipe's chunk: :data:`SGLANG_RECIPES`)."""
    if (recipe := sglang_recipe(spec)) is not None:
        return recipe.chunk_tokens
    script = scripts_of(spec)
    times = PROMPT_TOKEN_BUDGETS.get((spec.point.backend, script, spec.precision))
    if times is None or spec.point.system not in BLACKWELL_SYSTEMS:
        return TOKEN_BUDGET  # the Hopper scripts read leave vLLM's default: 8,192 there
    return times * spec.point.isl


def fp8_kv(spec: PointSpec) -> bool:
    """Whether ``spec``'s servers run an fp8 KV cache: its weights' precision
    (:data:`FP8_KV_WEIGHTS`) or its scripts (:data:`FP8_KV_SCRIPTS`)."""
    script = scripts_of(spec)
    if spec.precision in FP8_KV_WEIGHTS:
        return True
    return (spec.point.backend, script) in FP8_KV_SCRIPTS and spec.point.system in BLACKWELL_SYSTEMS


def bf16_state(spec: PointSpec) -> bool:
    """Whether ``spec``'s servers keep linear-attention state in bf16
    (:data:`BF16_STATE_SCRIPTS`), as :func:`fp8_kv` says of the KV cache."""
    return (spec.point.backend, scripts_of(spec), spec.point.system) in BF16_STATE_SCRIPTS


def benchmark_prompts(clients: int) -> int:
    """Requests of a point's run: InferenceX's ``10 C`` prompts (its scripts' ``--num-prompts
    $((CONC * 10))``), at any concurrency."""
    return PROMPTS_PER_CLIENT * clients


@dataclass(frozen=True)
class PointSpec:
    """How one point is simulated (module docstring)."""

    point: OperatingPoint
    catalog_model: str
    accelerator: str
    precision: str  # the deployment's weight precision
    tp: int
    pp: int
    ep: int
    attention_dp: int  # attention ranks sharing the MoE group (all simulated colocated)
    clients: int  # closed-loop concurrency (of all the ranks)
    num_requests: int  # the run's requests, every one measured (the benchmark's means)
    engine_preset: str  # the backend's execution model
    # a disaggregated point's fleet (None: colocated); tp, ep and attention_dp are then
    # its decode ranks', and num_requests those of its simulated slice
    pd: PDSpec | None = None
    # measured kernels' folder (AIConfigurator's layout): MoE layers priced from their rows
    kernel_tables: str | None = None
    # front-end settings over the preset's and the scripts' (a study's: benchmarks/
    # frontend_fit.py; empty: none)
    frontend: tuple[tuple[str, float], ...] = ()


@dataclass(frozen=True)
class Skip:
    """A point not simulated, and why."""

    point: OperatingPoint
    reason: str  # a key of SKIP_REASONS
    detail: str  # the row's own value(s) behind the reason


@dataclass(frozen=True)
class PointResult:
    """A simulated point: the measured and simulated means."""

    spec: PointSpec
    sim_ttft_ms: float
    sim_tpot_ms: float
    num_measured: int  # requests the simulated means cover
    wall_s: float  # time the simulation took


def catalog_model_name(model: str) -> str | None:
    """The catalog model of a Hugging Face id (:data:`MODEL_NAMES`, then the catalog)."""
    if model in MODEL_NAMES:
        return MODEL_NAMES[model]
    catalog = default_catalog()
    return catalog.model(model).name if catalog.has_model(model) else None


def deployment_precision(point: OperatingPoint, model: str) -> str | Skip:
    """The weight precision of ``point`` on catalog ``model``, or why there is none."""
    arch = default_catalog().model(model)
    if not point.precision:
        return Skip(point, "precision-unstated", f"gemm_quant_mode {point.gemm_quant!r}")
    precision = point.precision
    if precision == "fp4":
        precision = "mxfp4" if arch.native_precision == "mxfp4" else "nvfp4"
    if precision not in arch.precisions:
        return Skip(point, "precision-missing", f"{precision} not in {arch.precisions}")
    return precision


def _expert_parallel(point: OperatingPoint, model: str, tp: int) -> int | Skip:
    """EP over the TP group: ``moe_ep`` when ``moe_tp x moe_ep`` is the group (MoE only)."""
    if not default_catalog().model(model).is_moe:
        return 1
    moe_tp, moe_ep = point.moe_tp or 0, point.moe_ep or 0
    if not moe_tp and not moe_ep:
        return 1  # not stated: experts split by TP
    if max(moe_tp, 1) * max(moe_ep, 1) != tp:
        return Skip(point, "moe-split", f"moe_tp {moe_tp} x moe_ep {moe_ep} vs tp {tp}")
    return max(moe_ep, 1)


def _representable(point: OperatingPoint) -> Skip | None:
    """The first reason ``point``'s shape is beyond the simulator, if any."""
    if point.system not in SYSTEM_ACCELERATORS:
        return Skip(point, "system", point.system)
    if point.mode != "agg":
        return None  # its sides are checked with its fleet (_disaggregated)
    gpus = (point.tp or 1) * max(point.attention_dp or 1, 1) * (point.pp or 1)
    if gpus > NVLINK_DOMAIN[point.system]:
        return Skip(point, "multi-node", f"{gpus} GPUs > {NVLINK_DOMAIN[point.system]} per node")
    if point.source_concurrency is not None and point.source_concurrency != point.clients:
        return Skip(
            point,
            "concurrency",
            f"batch_size {point.batch_size} vs silicon_concurrency {point.source_concurrency}",
        )
    return None


def point_spec(point: OperatingPoint) -> PointSpec | Skip:
    """How ``point`` is simulated, or why it is not (module docstring)."""
    skip = _representable(point)
    if skip is not None:
        return skip
    model = catalog_model_name(point.model)
    if model is None:
        return Skip(point, "model", point.model)
    precision = deployment_precision(point, model)
    if isinstance(precision, Skip):
        return precision
    if point.mode != "agg":
        return _disaggregated(point, model, precision)
    tp = point.tp or 1
    dp = max(point.attention_dp or 1, 1)
    if dp > 1 and not default_catalog().model(model).is_moe:
        return Skip(point, "attention-dp", f"attention_dp_size {dp} on a dense model")
    ep = _expert_parallel(point, model, tp * dp)
    if isinstance(ep, Skip):
        return ep
    clients = point.clients
    return PointSpec(
        point=point,
        catalog_model=model,
        accelerator=SYSTEM_ACCELERATORS[point.system],
        precision=precision,
        tp=tp,
        pp=point.pp or 1,
        ep=ep,
        attention_dp=dp,
        clients=clients,
        num_requests=benchmark_prompts(clients),  # an attention-DP group's too: in lockstep
        engine_preset=engine_preset(point.backend, point.backend_version),
    )


def in_lockstep(spec: PointSpec) -> bool:
    """Whether ``spec``'s attention-DP ranks are simulated together, as one group stepping
    in lockstep (``engine.dp_ranks: lockstep``, every client and prompt of the point; the
    MTP runs' ranks speculating, each its own drafts and verify)."""
    return spec.attention_dp > 1 and spec.pd is None


def _disaggregated(point: OperatingPoint, model: str, precision: str) -> PointSpec | Skip:
    """How disaggregated ``point`` is simulated, or why it is not (module docstring)."""
    is_moe = default_catalog().model(model).is_moe
    pd = pd_spec(point, is_moe, NVLINK_DOMAIN[point.system])
    if isinstance(pd, tuple):
        return Skip(point, *pd)
    d = pd.decode
    return PointSpec(
        point=point,
        catalog_model=model,
        accelerator=SYSTEM_ACCELERATORS[point.system],
        precision=precision,
        tp=d.tp,
        pp=1,
        ep=d.ep,
        attention_dp=d.attention_dp,
        clients=pd.clients,
        num_requests=benchmark_prompts(pd.clients // pd.slices),
        engine_preset=engine_preset(point.backend, point.backend_version),
        pd=pd,
    )


def point_config(spec: PointSpec, seed: int = 0) -> SimulationConfig:
    """The closed-loop simulator config of ``spec`` (module docstring)."""
    if spec.pd is not None:
        return _pd_config(spec, spec.pd, seed)
    p = spec.point
    drafts = mtp_drafts(spec)
    together = in_lockstep(spec)  # the whole group, its ranks in lockstep
    engine: dict[str, Any] = {
        "kind": "continuous",
        "preset": spec.engine_preset,
        # a rank of a group takes the scripts' limit (vLLM's --max-num-seqs is each data-
        # parallel engine's); one engine sees no more sequences than the clients
        "max_num_seqs": max_num_seqs(spec) if together else min(spec.clients, max_num_seqs(spec)),
        "max_num_batched_tokens": token_budget(spec),
        "enable_prefix_caching": False,
    }
    if (recipe := sglang_recipe(spec)) is not None:
        engine["gpu_memory_utilization"] = recipe.memory_fraction
    if together:
        engine["dp_ranks"] = "lockstep"
    execution = _execution(spec)
    if execution:
        engine["execution"] = execution
    if drafts:
        engine["speculation"] = {"method": "mtp", "num_draft_tokens": drafts}
    workload = {
        "num_requests": spec.num_requests,
        "arrival": {"kind": "closed", "concurrency": spec.clients},
        "lengths": {"prompt": _benchmark_length(p.isl), "output": _benchmark_length(p.osl)},
        "models": {spec.catalog_model: 1.0},
    }
    instance = {
        "name": "engine",
        "model": spec.catalog_model,
        "accelerator": spec.accelerator,
        "precision": spec.precision,
        "tp": spec.tp,
        "pp": spec.pp,
        "ep": spec.ep,
        "attention_dp": spec.attention_dp,
        "engine": engine,
    }
    if fp8_kv(spec):
        instance["kv_precision"] = "fp8"
    if bf16_state(spec):
        instance["state_precision"] = "bf16"
    if (step_model := _step_model(spec)) is not None:
        instance["step_model"] = step_model
    return load_config({"seed": seed, "workload": workload, "instances": [instance]})


def _pd_config(spec: PointSpec, pd: PDSpec, seed: int) -> SimulationConfig:
    """The closed loop of a disaggregated point: its slice of the fleet, its share of the
    clients (:mod:`sincere.experiment.inferencex_pd`)."""
    p = spec.point
    clients = spec.clients // pd.slices
    engine = {"kind": "continuous", "preset": spec.engine_preset,
              "max_num_batched_tokens": 8192, "enable_prefix_caching": False}  # fmt: skip
    base: dict[str, Any] = {
        "model": spec.catalog_model, "accelerator": spec.accelerator,
        "precision": spec.precision,
    }  # fmt: skip
    if fp8_kv(spec):
        base["kv_precision"] = "fp8"
    if bf16_state(spec):
        base["state_precision"] = "bf16"
    if (step_model := _step_model(spec)) is not None:
        base["step_model"] = step_model
    workload = {
        "num_requests": spec.num_requests,
        "arrival": {"kind": "closed", "concurrency": clients},
        "lengths": {"prompt": _benchmark_length(p.isl), "output": _benchmark_length(p.osl)},
        "models": {spec.catalog_model: 1.0},
    }
    return load_config({
        "seed": seed, "workload": workload, "instances": pd_instances(pd, base, engine),
        "disaggregation": {"kv_link": pd.kv_link},
    })  # fmt: skip


def _benchmark_length(tokens: int) -> dict[str, Any]:
    """Lengths uniform in ``[RANGE_RATIO * tokens, tokens]`` (a point of 1 token: fixed)."""
    low = max(1, int(RANGE_RATIO * tokens))
    if low >= tokens:
        return {"kind": "fixed", "tokens": tokens}
    return {"kind": "uniform", "low": low, "high": tokens}


def _refusal(spec: PointSpec, exc: ConfigError) -> Skip:
    reason = "no-fit" if "does not fit" in str(exc) else "refused"
    return Skip(spec.point, reason, str(exc))


def _mean_ms(summary: dict[str, Any], metric: str) -> float:
    """The summary's mean of ``metric`` in ms; NaN when no measured request completed."""
    mean = (summary.get(metric) or {}).get("mean")
    return math.nan if mean is None else 1e3 * float(mean)


def simulate_point(spec: PointSpec, seed: int = 0) -> PointResult | Skip:
    """Run ``spec``'s closed loop; a deployment the simulator refuses is a :class:`Skip`."""
    started = time.perf_counter()
    try:
        result = simulate(point_config(spec, seed))
    except ConfigError as exc:
        return _refusal(spec, exc)
    summary = result.summary
    return PointResult(
        spec=spec,
        sim_ttft_ms=_mean_ms(summary, "ttft_s"),
        sim_tpot_ms=_mean_ms(summary, "tpot_s"),
        num_measured=int(summary["num_completed"]),
        wall_s=time.perf_counter() - started,
    )


@dataclass(frozen=True)
class Scoreboard:
    """Every point of a run: the simulated ones, and the skipped ones with their reasons."""

    results: list[PointResult]  # in file order
    skips: list[Skip]  # in file order
    num_points: int  # points considered (after the filter)
    num_sampled: int | None  # representable points drawn by --sample (None: all)


OnPoint = Callable[[int, int, str], None]
"""Progress callback: (points done, points to simulate, the last point's id)."""


def sample_specs(specs: Sequence[PointSpec], sample: int | None, seed: int) -> list[PointSpec]:
    """``sample`` of ``specs`` drawn with ``seed`` (all when None or more), in file order."""
    if sample is None or sample >= len(specs):
        return list(specs)
    keep = np.random.default_rng(seed).choice(len(specs), size=sample, replace=False)
    return [specs[i] for i in sorted(keep)]


def score_points(
    points: Sequence[OperatingPoint],
    *,
    sample: int | None = None,
    seed: int = 0,
    jobs: int = 1,
    on_point: OnPoint | None = None,
    kernel_tables: str | None = None,
    frontend: Mapping[str, float] | None = None,
) -> Scoreboard:
    """Map every point, simulate the representable ones (or ``sample`` of them) in ``jobs``
    processes, and return them with every skip; ``kernel_tables``: the measured kernels'
    folder their MoE layers are priced from where it holds them (``PointSpec``);
    ``frontend``: front-end settings every point's engine takes over its preset's."""
    mapped = [point_spec(p) for p in points]
    skips = [m for m in mapped if isinstance(m, Skip)]
    specs = sample_specs([m for m in mapped if isinstance(m, PointSpec)], sample, seed)
    if kernel_tables is not None:
        specs = [replace(spec, kernel_tables=kernel_tables) for spec in specs]
    if frontend:
        specs = [replace(spec, frontend=tuple(sorted(frontend.items()))) for spec in specs]
    outcomes = _run(specs, seed, max(1, min(jobs, len(specs))), on_point)
    order = {p.id: i for i, p in enumerate(points)}
    skips += [o for o in outcomes if isinstance(o, Skip)]
    skips.sort(key=lambda s: order[s.point.id])
    results = sorted(
        (o for o in outcomes if isinstance(o, PointResult)), key=lambda r: order[r.spec.point.id]
    )
    drawn = None if sample is None else len(specs)
    return Scoreboard(results=results, skips=skips, num_points=len(points), num_sampled=drawn)


def _run(
    specs: Sequence[PointSpec], seed: int, jobs: int, on_point: OnPoint | None
) -> list[PointResult | Skip]:
    if jobs == 1:
        out: list[PointResult | Skip] = []
        for k, spec in enumerate(specs, start=1):
            out.append(simulate_point(spec, seed))
            if on_point is not None:
                on_point(k, len(specs), spec.point.id)
        return out
    done: list[PointResult | Skip] = []
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        pending: set[Future[PointResult | Skip]] = {
            pool.submit(simulate_point, spec, seed) for spec in specs
        }
        while pending:
            finished, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in finished:
                outcome = future.result()
                done.append(outcome)
                if on_point is not None:
                    name = outcome.point.id if isinstance(outcome, Skip) else outcome.spec.point.id
                    on_point(len(done), len(specs), name)
    return done
