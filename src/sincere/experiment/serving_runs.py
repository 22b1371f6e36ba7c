"""Replay real vLLM serving runs through the simulator and score it per request.

For each run (layout: :mod:`sincere.workload.serving_runs`) the replay builds the
simulator config that matches the real deployment and replays the run's own requests:

* **model**: the catalog entry the engine's model name maps to (by name or alias; a few
  releases that share a catalog entry's architecture are mapped in
  :data:`SAME_ARCHITECTURE` and the report says so); a missing one stops the command;
* **accelerator**: the hardware file's GPU, by catalog name or alias;
* **parallelism**: ``tp`` GPUs per engine; ``data_parallel_size`` engines behind a
  ``least-outstanding`` router: vLLM's own data-parallel balancer sends a request to the
  engine with the lowest ``4 x waiting + running`` count, and the fewest outstanding
  requests (waiting + running) is the simulator's closest router. With expert parallelism
  and ``tp > 1`` the experts are spread over the TP group (``ep = tp``); spread over DP
  replicas, the replicas are the attention ranks of one group (``attention_dp = dp``, its
  experts over all ``tp x dp`` GPUs: ``ep``) simulated as one instance whose ranks step
  together (``engine.dp_ranks: lockstep``: :mod:`sincere.engine.lockstep`, which spreads
  requests by vLLM's own score), and the report says so;
* **engine**: vLLM V1's as the run was started: FCFS continuous batching with chunked
  prefill, the run's ``max_num_seqs`` and ``max_num_batched_tokens``, its KV block size
  and pool (``num_gpu_blocks`` when recorded, else the memory plan at its
  ``gpu_memory_utilization``), prefix caching on, no admission watermark (V1 keeps none),
  and the ``vllm-v1`` execution model (:mod:`sincere.perf.execution`: CUDA graphs,
  asynchronous scheduling) unless another preset is asked for (``eager`` when a step model
  is given: its times are taken as whole iterations), with the front end the runs had:
  vLLM driven in-process with token ids (``AsyncLLM.generate``: no HTTP server, no
  tokenisation; :data:`~sincere.perf.execution_settings.VLLM_IN_PROCESS_FRONTEND`), not
  the HTTP server the preset's default front end is;
* **requests**: arrival times on the engine clock (``arrival_ts``), prompt and output
  lengths, and the prompt's token ids hashed into 16-token block ids, so prefix reuse
  between prompts is the real one.

Every real metric is taken on the engine clock from the request's arrival (the clock
relation is in :mod:`sincere.workload.serving_runs`), so the real TTFT includes the
front-end time (tokenisation, the hop to the engine core); the simulated one includes the
preset's front end (``eager`` has none).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from sincere.catalog.loader import default_catalog
from sincere.core.config import read_yaml
from sincere.core.errors import ConfigError
from sincere.core.prefix import token_block_ids
from sincere.core.request import DEFAULT_TIER, RequestArrays
from sincere.engine.defaults import default_limits
from sincere.perf.calibration import roofline_defaults
from sincere.perf.execution import execution_params
from sincere.perf.execution_settings import VLLM_IN_PROCESS_FRONTEND
from sincere.perf.factory import STEP_MODELS
from sincere.sim.api import simulate
from sincere.sim.config import SimulationConfig, load_config
from sincere.workload.serving_runs import ServingRun

FloatArray = npt.NDArray[np.float64]

SAME_ARCHITECTURE = {
    "qwen/qwen3-30b-a3b-instruct-2507": "qwen3-30b-a3b",
    "qwen/qwen3-30b-a3b-thinking-2507": "qwen3-30b-a3b",
    "qwen/qwen3-coder-30b-a3b-instruct": "qwen3-30b-a3b",
    "qwen/qwen3-235b-a22b-instruct-2507": "qwen3-235b-a22b",
    "qwen/qwen3-235b-a22b-thinking-2507": "qwen3-235b-a22b",
    "qwen/qwen3-4b-instruct-2507": "qwen3-4b",
    "qwen/qwen3-4b-thinking-2507": "qwen3-4b",
}
"""Engine model names whose architecture is a catalog entry's under another release name
(Qwen3's 2507 releases and Qwen3-Coder-30B-A3B retrain Qwen3's weights; layers, experts and
heads are the same, only the context length grew)."""
ROUTER = "least-outstanding"
RUN_PRESET = "vllm-v1"
"""The execution model of the runs' engine (vLLM V1); under it the replay also takes the
scheduling and CUDA-graph settings a run recorded (:class:`RunExecution`)."""
WEIGHT_QUANTISATIONS = {
    "fp8": "fp8", "fbgemm_fp8": "fp8", "awq": "int4", "awq_marlin": "int4",
    "gptq": "int4-gptq", "gptq_marlin": "int4-gptq", "mxfp4": "mxfp4", "modelopt_fp4": "nvfp4",
}  # fmt: skip
"""vLLM's ``quantization`` methods -> the weight precision that prices them (the others, e.g.
``compressed-tensors``, do not say which format they hold: the weights stay 16-bit and the
report says so)."""
METRICS = ("ttft_s", "tpot_s", "e2e_s", "queue_s")
"""Per-request metrics compared: TTFT, TPOT (= the mean inter-token latency of the
request: the runs hold no per-token times), end to end, and queueing (first scheduled)."""


@dataclass(frozen=True)
class ReplaySetup:
    """What the replay of one run was built with, for the report."""

    catalog_model: str
    model_note: str  # how the engine's model name was mapped
    accelerator: str  # catalog name
    tp: int
    instances: int  # data-parallel engines
    ep: int  # expert-parallel degree per engine as simulated
    attention_dp: int  # data-parallel attention ranks sharing one MoE group (1: none)
    router: str
    step_model: str  # the step-time model and where its constants come from
    preset: str  # the engine's execution model (sincere.perf.execution.PRESETS)
    notes: tuple[str, ...]  # what the replay does not model of this run
    precision: str = "bf16"  # the weights' (sincere.catalog.specs.PRECISION_BYTES)
    kv_precision: str = "fp16"  # the KV cache's
    max_num_seqs: int = 256  # the run's, else vLLM's default for the GPU
    max_num_batched_tokens: int = 8192  # likewise
    limits_note: str = ""  # where the limits come from when the run does not record them
    taken: str = ""  # the run's own execution settings taken into the preset ("": none)


@dataclass(frozen=True)
class RunComparison:
    """One run replayed: per-request real and simulated metrics (seconds)."""

    run: ServingRun
    setup: ReplaySetup
    real: dict[str, FloatArray]  # METRICS -> per request
    sim: dict[str, FloatArray]
    sim_cached_tokens: npt.NDArray[np.int64]  # prompt tokens the simulator found cached
    sim_preemptions: int  # preemptions (recomputes) in the simulated run
    frontend_s: FloatArray  # real: queued - arrival on the engine clock


def catalog_model(name: str) -> tuple[str, str]:
    """The catalog model for an engine's model name, and a note on how it was found."""
    catalog = default_catalog()
    if catalog.has_model(name):
        return catalog.model(name).name, f"{name} is the catalog's {catalog.model(name).name}"
    same = SAME_ARCHITECTURE.get(name.strip().lower())
    if same is not None:
        return same, f"{name} mapped to {same} (same architecture, another release)"
    raise ConfigError(
        "the run's model is not in the model catalog; add it by file (docs/catalog.md)",
        value=name,
        allowed=[m.name for m in catalog.models()],
    )


def catalog_accelerator(name: str) -> str:
    """The catalog accelerator for the hardware file's GPU name."""
    catalog = default_catalog()
    if not catalog.has_accelerator(name):
        raise ConfigError(
            "the run's GPU is not in the accelerator catalog; add it by file (docs/catalog.md)",
            value=name,
            allowed=[a.name for a in catalog.accelerators()],
        )
    return catalog.accelerator(name).name


def _parallelism(run: ServingRun, model: str) -> tuple[int, int, list[str]]:
    """The EP degree and attention ranks per engine, and notes on what is left out."""
    args = run.engine
    moe = default_catalog().model(model).num_experts > 0
    if not (args.expert_parallel and moe):
        return 1, 1, []
    if args.dp > 1:
        note = (
            f"expert parallelism over the {args.dp} data-parallel replicas: one group of "
            f"{args.dp} attention ranks stepping together (engine.dp_ranks: lockstep), the "
            f"experts spread over the {args.tp * args.dp} GPUs, requests spread by vLLM's "
            "4 x waiting + running"
        )
        return args.tp * args.dp, args.dp, [note]
    return args.tp, 1, []


def _step_model_label(
    accelerator: str, step_model: Mapping[str, Any] | None, vllm_version: str | None = None
) -> str:
    if step_model is not None:
        return f"{step_model.get('kind', 'roofline')} with the parameters given (no defaults)"
    acc = default_catalog().accelerator(accelerator)
    return f"roofline; constants {roofline_defaults(acc, vllm_version).origin}"


def _version(run: ServingRun) -> str | None:
    version = run.engine.vllm_version
    return None if version == "unknown" else version


def default_preset(step_model: Mapping[str, Any] | None) -> str:
    """``vllm-v1`` (as the runs were started) over the default step model; ``eager`` over a
    step model given by hand, whose times are taken as whole iterations."""
    return RUN_PRESET if step_model is None else "eager"


def _precisions(run: ServingRun, notes: list[str]) -> tuple[str, str]:
    """The weights' and the KV cache's precisions of ``run`` (notes on what is guessed)."""
    args = run.engine
    weights = "fp16" if args.dtype.lower() in ("float16", "half", "fp16") else "bf16"
    if args.quantization is not None:
        known = WEIGHT_QUANTISATIONS.get(args.quantization.lower())
        if known is None:
            notes.append(f"weights quantised by {args.quantization!r}: priced as {weights}")
        else:
            weights = known
    kv = args.kv_cache_dtype.lower()
    if kv.startswith("fp8"):
        return weights, "fp8"
    if kv not in ("auto", "bfloat16", "float16", "half", "bf16", "fp16"):
        notes.append(f"KV cache dtype {args.kv_cache_dtype!r}: priced as 16-bit")
    return weights, "fp16"


def replay_setup(
    run: ServingRun, step_model: Mapping[str, Any] | None = None, preset: str | None = None
) -> ReplaySetup:
    """How ``run`` is replayed (module docstring)."""
    model, model_note = catalog_model(run.model)
    accelerator = catalog_accelerator(run.accelerator)
    ep, attention_dp, notes = _parallelism(run, model)
    if not run.prompt_token_ids:
        notes.append("the replayed inputs were not found: no prefix reuse is simulated")
    preset = default_preset(step_model) if preset is None else preset
    front = execution_params(preset, {}).frontend
    if front.is_zero:
        notes.append("no front end (HTTP, tokenisation, detokenisation) in the simulated times")
    taken = ""
    if preset == RUN_PRESET and run.engine.execution.overrides():
        taken = ", ".join(f"{k} {v}" for k, v in _shown(run.engine.execution.overrides()))
    precision, kv_precision = _precisions(run, notes)
    args = run.engine
    # the run's engine is vLLM's, whatever the replay's execution model
    limits = default_limits(RUN_PRESET, default_catalog().accelerator(accelerator))
    unrecorded = [k for k in ("max_num_seqs", "max_num_batched_tokens") if getattr(args, k) is None]
    return ReplaySetup(
        catalog_model=model,
        model_note=model_note,
        accelerator=accelerator,
        tp=run.engine.tp,
        instances=run.engine.dp,
        ep=ep,
        attention_dp=attention_dp,
        router=ROUTER,
        step_model=_step_model_label(accelerator, step_model, _version(run)),
        preset=preset,
        notes=tuple(notes),
        precision=precision,
        kv_precision=kv_precision,
        max_num_seqs=args.max_num_seqs or limits.max_num_seqs,
        max_num_batched_tokens=args.max_num_batched_tokens or limits.max_num_batched_tokens,
        limits_note=f"{' and '.join(unrecorded)} not recorded: {limits.source}"
        if unrecorded
        else "",
        taken=taken,
    )


def _shown(overrides: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """Execution overrides as the report lists them (a capture list by its range)."""
    out = []
    for key, value in overrides.items():
        if key == "graph_sizes" and value:
            value = f"{len(value)} sizes, {value[0]}-{value[-1]}"
        elif key == "graph_max_share_of_seqs":
            continue
        out.append((key, value))
    return out


def replay_config(
    run: ServingRun, setup: ReplaySetup, step_model: Mapping[str, Any] | None = None, seed: int = 0
) -> SimulationConfig:
    """The simulator config of ``run``'s deployment (its workload is handed in apart)."""
    args = run.engine
    engine: dict[str, Any] = {
        "kind": "continuous",
        "scheduler": "fcfs",
        "block_size": args.block_size,
        "gpu_memory_utilization": args.gpu_memory_utilization,
        "num_kv_blocks": args.num_gpu_blocks,
        "watermark": 0.0,
        "max_model_len": args.max_model_len,
        "enable_prefix_caching": args.enable_prefix_caching,
        "preset": setup.preset,
        "dp_ranks": "lockstep" if setup.attention_dp > 1 else "symmetric",
        "max_num_seqs": setup.max_num_seqs,
        "max_num_batched_tokens": setup.max_num_batched_tokens,
    }
    execution: dict[str, Any] = dict(args.execution.overrides()) if setup.taken else {}
    if setup.preset != "eager":  # the runs drove vLLM in-process, with token ids
        execution["frontend"] = dataclasses.asdict(VLLM_IN_PROCESS_FRONTEND)
    if execution:  # what the run's engine resolved, and the front end it had
        engine["execution"] = execution
    instance: dict[str, Any] = {
        "name": run.name,
        "model": setup.catalog_model,
        "accelerator": setup.accelerator,
        "count": setup.instances // setup.attention_dp,
        "tp": setup.tp,
        "precision": setup.precision,
        "kv_precision": setup.kv_precision,
        "ep": setup.ep,
        "attention_dp": setup.attention_dp,
        "engine": engine,
    }
    if step_model is not None:
        instance["step_model"] = dict(step_model)
    elif _version(run) is not None:  # priced by the kernels of the release the run served with
        instance["step_model"] = {"kind": "roofline", "params": {"vllm_version": _version(run)}}
    n = len(run)
    placeholder = {  # the requests are handed to simulate(); this section is not used
        "num_requests": n,
        "arrival": {"kind": "poisson", "rate": 1.0},
        "lengths": {"prompt": {"kind": "fixed", "tokens": 1}, "output": {"kind": "fixed",
                                                                          "tokens": 1}},
        "models": {setup.catalog_model: 1.0},
    }  # fmt: skip
    return load_config({"seed": seed, "workload": placeholder, "router": {"name": ROUTER},
                        "instances": [instance]})  # fmt: skip


def replay_requests(run: ServingRun, setup: ReplaySetup) -> RequestArrays:
    """``run``'s requests: engine-clock arrivals from the first, lengths, prompt blocks."""
    n = len(run)
    arrival = run.arrival_ts
    block = run.engine.block_size
    ids = tuple(
        np.asarray(token_block_ids(t.tolist(), block), dtype=np.int64) for t in run.prompt_token_ids
    )
    return RequestArrays(
        arrival_at=arrival - arrival[0],
        prompt_tokens=run.input_tokens.copy(),
        output_tokens=run.output_tokens.copy(),
        max_tokens=run.output_tokens.copy(),
        model=np.zeros(n, dtype=np.int64),
        tier=np.zeros(n, dtype=np.int64),
        priority=np.zeros(n, dtype=np.int64),
        budget_usd=np.full(n, np.nan),
        models=(setup.catalog_model,),
        tiers=(DEFAULT_TIER,),
        block_ids=ids,
        block_tokens=block if ids else 0,
    )


def tpot(first: FloatArray, last: FloatArray, output_tokens: npt.NDArray[np.int64]) -> FloatArray:
    """(last − first token) / (output tokens − 1); NaN for one-token outputs."""
    steps = (output_tokens - 1).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(steps > 0, (last - first) / np.maximum(steps, 1.0), np.nan)


def real_metrics(run: ServingRun) -> dict[str, FloatArray]:
    """The real per-request metrics, on the engine clock from each arrival."""
    arrival = run.arrival_ts
    return {
        "ttft_s": run.first_token_ts - arrival,
        "tpot_s": tpot(run.first_token_ts, run.last_token_ts, run.output_tokens),
        "e2e_s": run.last_token_ts - arrival,
        "queue_s": run.scheduled_ts - arrival,
    }


def load_step_model(path: str | Path) -> dict[str, Any]:
    """A step-model block (``{kind, params}``) from a YAML or JSON file."""
    block = read_yaml(path, "step model")
    if not isinstance(block, dict) or "kind" not in block:
        raise ConfigError("expected a step-model block with a kind (and params)", where=path,
                          value=block, allowed=sorted(STEP_MODELS.names()))  # fmt: skip
    return block  # its kind and params are checked with the config


def compare_run(
    run: ServingRun,
    step_model: Mapping[str, Any] | None = None,
    seed: int = 0,
    preset: str | None = None,
) -> RunComparison:
    """Replay ``run`` in the simulator (engine ``preset``); both sides' per-request metrics."""
    setup = replay_setup(run, step_model, preset)
    requests = replay_requests(run, setup)
    result = simulate(replay_config(run, setup, step_model, seed), requests=requests)
    rec = result.records
    unfinished = np.flatnonzero(~np.isfinite(rec.finished_at))
    if len(unfinished):
        first = int(unfinished[0])
        raise ConfigError(
            f"the simulator did not finish {len(unfinished)} of the run's requests "
            f"({'; '.join(result.warnings) or 'no reason given'})",
            where=run.folder,
            value=run.request_id[first],
        )
    arrival = requests.arrival_at
    sim = {
        "ttft_s": rec.first_token_at - arrival,
        "tpot_s": tpot(rec.first_token_at, rec.finished_at, run.output_tokens),
        "e2e_s": rec.finished_at - arrival,
        "queue_s": rec.first_scheduled_at - arrival,
    }
    return RunComparison(
        run=run,
        setup=setup,
        real=real_metrics(run),
        sim=sim,
        sim_cached_tokens=rec.cached_tokens.copy(),
        sim_preemptions=int(rec.num_preemptions.sum()),
        frontend_s=run.queued_ts - run.arrival_ts,
    )
