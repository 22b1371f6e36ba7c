"""Whether one iteration of a deployment can run at all: its precision and its memory.

A step-time model answers for any batch, even one whose weights could never be loaded.
:func:`check_step_fits` refuses such questions first: the weight precision must be one
the catalog lists for the model, and the memory plan (:func:`~sincere.perf.memory.
plan_memory`, vLLM's accounting at ``gpu_memory_utilization``) must leave room, on each
GPU, for the KV cache of every token the batch holds (cached context, prefill chunks
and decode context). When it does not, the error gives the figures and, for each of the
model's precisions, the smallest TP degree (of those that split its heads, up to
:data:`MAX_TP`) at which the same batch would fit.
"""

from __future__ import annotations

from sincere.core.errors import ConfigError
from sincere.engine.build import valid_tp
from sincere.perf.base import Batch, Deployment
from sincere.perf.memory import MemoryPlan, plan_memory

MAX_TP = 64  # largest TP degree suggested
GPU_MEMORY_UTILIZATION = 0.9  # vLLM's default share of each GPU's memory


def check_precision(deployment: Deployment) -> None:
    """Raise :class:`ConfigError` unless the catalog lists the weight precision for the model."""
    model = deployment.model
    if deployment.precision not in model.precisions:
        raise ConfigError(
            f"{model.name} has no {deployment.precision} weights in the catalog",
            value=deployment.precision,
            allowed=", ".join(model.precisions),
        )


def kv_tokens(batch: Batch) -> int:
    """Tokens whose KV the batch holds while it runs: cached, computed and decode context."""
    return batch.prefill_ctx_tokens + batch.prefill_tokens + batch.decode_ctx_tokens


def plan_for(deployment: Deployment, batch: Batch) -> MemoryPlan:
    """The memory plan of ``deployment`` running ``batch`` (its KV as the room asked for)."""
    return plan_memory(
        deployment,
        gpu_memory_utilization=GPU_MEMORY_UTILIZATION,
        max_num_seqs=max(batch.num_seqs, 1),
        max_num_batched_tokens=max(batch.num_tokens, 1),
        min_kv_tokens=kv_tokens(batch),
    )


def fitting_layouts(deployment: Deployment, batch: Batch) -> list[str]:
    """``"fp8 at tp 16"``: per catalog precision, the smallest TP at which ``batch`` fits."""
    out = []
    for precision in deployment.model.precisions:
        for tp in valid_tp(deployment.model, MAX_TP):
            trial = Deployment(
                deployment.model, deployment.accelerator, precision,
                deployment.kv_precision, tp, deployment.pp, min(deployment.ep, tp),
                state_precision=deployment.state_precision,
            )  # fmt: skip
            try:
                fits = plan_for(trial, batch).fits
            except ConfigError:  # a precision this accelerator cannot run at all
                break
            if fits:
                out.append(f"{precision} at tp {tp}")
                break
    return out


def check_step_fits(deployment: Deployment, batch: Batch) -> None:
    """Raise :class:`ConfigError` when the precision is not the model's or ``batch`` cannot
    fit in memory (module docstring); the error names the figures and what would fit."""
    check_precision(deployment)
    plan = plan_for(deployment, batch)
    if plan.fits:
        return
    acc, gb = deployment.accelerator, 1e-9
    kv = kv_tokens(batch) * plan.kv_bytes_per_token_per_gpu
    layouts = fitting_layouts(deployment, batch)
    raise ConfigError(
        f"{deployment.model.name} ({deployment.precision}, tp {deployment.tp}) does not fit "
        f"on {acc.name}: per GPU, weights {gb * plan.weight_bytes_per_gpu:.1f} GB + "
        f"activations and overhead {gb * (plan.activation_bytes + plan.overhead_bytes):.1f} GB"
        f" + this batch's KV cache {gb * kv:.1f} GB vs {gb * plan.budget_bytes:.1f} GB usable "
        f"({100 * GPU_MEMORY_UTILIZATION:.0f} % of the {gb * acc.device_memory_bytes:.1f} GB "
        f"the device reports, nominally {acc.memory_gb:g} GB); it would fit as "
        + (", ".join(layouts) if layouts else f"nothing up to tp {MAX_TP} on {acc.name}")
        + " (or on a larger accelerator)",
    )
