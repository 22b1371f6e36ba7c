"""What a continuous engine block leaves out: the engine a deployment runs today.

A serving engine of 2026 is vLLM V1 (or SGLang, TensorRT-LLM), not the eager engine of 2024,
so a deployment whose engine block names no ``preset`` gets one by what its step model can
carry (:func:`default_preset`):

* ``vllm-v1`` (CUDA graphs, asynchronous scheduling, the API server's intake:
  :mod:`sincere.perf.execution`) over the roofline and its kernel fits, whose CPU part is
  priced apart and can overlap the GPU;
* ``eager`` over every other step model: tables, profiles and fitted forms time whole
  iterations as some engine ran them (its CPU, its graphs, in series or not) and take no
  execution model; in confidential-computing mode, whose wrapper adds to whole iterations;
  and on the host CPU (the catalog's ``cpu``), where vLLM captures no CUDA graphs.

The engine's limits then follow that engine's own defaults (:func:`default_limits`):
``vllm serve`` sizes ``max_num_seqs`` and ``max_num_batched_tokens`` by the GPU's memory
(vLLM 0.32.0's ``EngineArgs.get_batch_defaults`` for the OpenAI server: at least 160 GiB,
1,024 sequences and 16,384 tokens; at least 70 GiB and not an A100, 1,024 and 8,192;
otherwise 256 and 2,048: the device's memory as its runtime reports it,
:attr:`~sincere.catalog.specs.Accelerator.device_memory_bytes`), and V1
admits without vLLM V0's watermark of free KV blocks (0). The other presets and ``eager``
keep the limits the simulator has always used (256 sequences, 8,192 tokens, a 1 % watermark).

A field the config gives is never changed; what was filled in is in the run's
``config.yaml``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sincere.catalog.specs import GIB, Accelerator

MODERN_PRESET = "vllm-v1"
"""The preset a deployment runs when its step model takes one (module docstring)."""


@dataclass(frozen=True)
class EngineDefaults:
    """The limits an engine of one preset starts with on one accelerator."""

    max_num_seqs: int
    max_num_batched_tokens: int
    watermark: float  # share of KV blocks admissions leave free
    source: str  # where the figures come from


MEMORY_SHARE_OF = {"trtllm": "free"}
"""What a preset's ``gpu_memory_utilization`` is a share of, where not the device's whole
memory: TensorRT-LLM gives its KV cache ``free_gpu_memory_fraction`` (0.9 by default) of
the memory free once the model is loaded (nvidia.github.io/TensorRT-LLM, "How to Change
KV Cache Behavior"); vLLM and SGLang a share of the device's total, less the weights."""

LEGACY = EngineDefaults(256, 8192, 0.01, "the simulator's long-standing defaults")
"""``eager``'s and the presets' without a rule of their own."""


def default_preset(step_kind: str, cc: bool, accelerator: Accelerator | None) -> str:
    """The preset of an engine block that names none (module docstring)."""
    on_cpu = accelerator is not None and accelerator.name == "cpu"
    if step_kind == "roofline" and not cc and not on_cpu:
        return MODERN_PRESET
    return "eager"


def default_limits(preset: str, accelerator: Accelerator | None) -> EngineDefaults:
    """``preset``'s limits on ``accelerator`` (module docstring); an accelerator unknown
    (None) or a preset without a rule of its own keeps :data:`LEGACY`."""
    if preset != MODERN_PRESET or accelerator is None:
        return LEGACY
    memory = accelerator.device_memory_bytes
    names = " ".join((accelerator.name, *accelerator.aliases)).lower()
    source = "vLLM's server defaults for the device's memory (EngineArgs.get_batch_defaults)"
    if memory >= 160 * GIB:
        return EngineDefaults(1024, 16384, 0.0, source)
    if memory >= 70 * GIB and "a100" not in names:
        return EngineDefaults(1024, 8192, 0.0, source)
    return EngineDefaults(256, 2048, 0.0, source)


def fill_engine(
    engine: Mapping[str, Any],
    accelerator: Accelerator | None,
    step_kind: str,
    cc: bool,
) -> dict[str, Any]:
    """A continuous engine block with what it leaves out filled in (module docstring)."""
    filled = dict(engine)
    preset = filled.get("preset")
    if preset is None:
        preset = filled["preset"] = default_preset(step_kind, cc, accelerator)
    limits = default_limits(str(preset), accelerator)
    filled.setdefault("memory_share_of", MEMORY_SHARE_OF.get(str(preset), "total"))
    filled.setdefault("max_num_seqs", limits.max_num_seqs)
    filled.setdefault("max_num_batched_tokens", limits.max_num_batched_tokens)
    filled.setdefault("watermark", limits.watermark)
    return filled
