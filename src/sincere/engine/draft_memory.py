"""The memory a speculative drafter takes on its target's GPUs: weights and KV per token.

A drafter runs on the target's GPUs and keeps its own KV cache for every sequence, in the
same pool of blocks (vLLM sizes one KV cache over the target's and the drafter's layers),
so a speculating engine holds fewer tokens than a plain one on the same GPUs:

* ``eagle`` / ``mtp``: a head of ``draft_layers`` decoder layers shaped as the target's (one
  for an EAGLE head and for DeepSeek's MTP module). Its KV per token is ``draft_layers``
  target layers' (K and V heads, or MLA's latent), split over tensor parallelism as the
  target's; its weights are ``draft_layers`` times the target's mean decoder layer (weights
  less embeddings and LM head, over the layers), split over the tensor-parallel GPUs. The
  head shares the target's embedding and LM head (EAGLE-3's own reduced-vocabulary head
  and DeepSeek's MTP projection are left out: well under a layer's bytes).
* ``draft-model``: the draft model's own weights and KV per token at the target's
  precision and tensor parallelism (its sliding-window layers' full windows for
  ``max_num_seqs`` sequences taken as weights are: a fixed amount);
* ``ngram``: nothing (its look-up runs on the CPU).

The pipeline-parallel case keeps the head on one stage: its bytes are not split over the
stages (the stage that holds it has the fewest blocks, which is what the engine may use).
"""

from __future__ import annotations

from dataclasses import dataclass

from sincere.catalog import ModelArch, get_model
from sincere.catalog.specs import PRECISION_BYTES
from sincere.engine.speculation import SpeculationConfig
from sincere.perf.base import Deployment
from sincere.perf.memory import (
    kv_bytes_per_token_per_gpu,
    kv_share,
    window_kv_bytes_per_gpu,
)


@dataclass(frozen=True, slots=True)
class DraftMemory:
    """What a drafter adds to each of its target's GPUs."""

    weight_bytes: float  # its weights (and fixed KV) on this GPU
    kv_bytes_per_token: float  # KV bytes one token of a sequence takes on this GPU


def layer_weight_bytes(model: ModelArch, precision: str) -> float:
    """The mean decoder layer's weight bytes: all weights less embeddings and LM head."""
    size = PRECISION_BYTES[precision]
    embedding = model.param_groups()[2] * (max(size, 2.0) if model.uses_layer_groups else size)
    return (model.weight_bytes(precision) - embedding) / model.num_layers


def draft_memory(spec: SpeculationConfig, deployment: Deployment, max_num_seqs: int) -> DraftMemory:
    """What ``spec``'s drafter takes on each GPU of ``deployment`` (module docstring)."""
    if spec.method == "ngram":
        return DraftMemory(0.0, 0.0)
    if spec.draft_model is not None:
        arch, dep = get_model(spec.draft_model), deployment
        draft = Deployment(arch, dep.accelerator, dep.precision, dep.kv_precision, dep.tp)
        fixed = draft.weight_bytes_per_gpu
        if draft.model.num_sliding_layers:
            fixed += window_kv_bytes_per_gpu(draft, max_num_seqs)
        return DraftMemory(fixed, kv_bytes_per_token_per_gpu(draft))
    model, layers = deployment.model, spec.draft_layers
    per_layer_kv = model.kv_elements_per_token_layer() * PRECISION_BYTES[deployment.kv_precision]
    return DraftMemory(
        weight_bytes=layers * layer_weight_bytes(model, deployment.precision) / deployment.tp,
        kv_bytes_per_token=layers * per_layer_kv * kv_share(deployment),
    )
