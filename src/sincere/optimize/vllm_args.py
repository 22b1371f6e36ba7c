"""A deployment's engine settings as arguments of vLLM's OpenAI server.

Two settings the simulator models reach the real engine's command line:

* **speculation** (the ``engine.speculation`` block a plan was priced with) becomes
  ``--speculative-config`` JSON in vLLM's keys (docs.vllm.ai/en/latest/features/
  speculative_decoding/ and its eagle/, mtp/, n_gram/ pages; the key list is
  docs.vllm.ai/en/latest/api/vllm/config/speculative/): ``method`` (``eagle`` or
  ``eagle3``, ``mtp``, ``draft_model``, ``ngram``), ``num_speculative_tokens`` (k),
  ``model`` (the EAGLE head or the draft model vLLM loads; none for mtp and ngram) and,
  for sincere's ``max_batch`` (speculate only up to that many requests),
  ``num_speculative_tokens_per_batch_size``: vLLM's batch-size schedule of drafted tokens,
  ``[[1, max_batch, k], [max_batch + 1, max_batch + 1, 0]]`` (inclusive ranges; vLLM
  carries the last range's 0 on to its largest batch). vLLM 0.32.0's ``SpeculativeConfig``
  forbids unknown keys and has no ``disable_by_batch_size`` (older releases' key). An
  n-gram drafter keeps vLLM's default look-up window.
* a **CPU KV tier** (the ``engine.kv_offload`` block) becomes ``--kv-offloading-size``
  (GiB for the whole instance, summed over its tensor-parallel ranks, as ``cpu_gib``)
  and ``--kv-offloading-backend`` (``native``: vLLM's OffloadingConnector, or ``lmcache``;
  always written, as some vLLM versions have no default backend) -- vLLM's
  ``CacheConfig.kv_offloading_size`` / ``kv_offloading_backend``
  (docs.vllm.ai/en/latest/api/vllm/config/cache/; the connector behind ``native``:
  docs.vllm.ai/en/stable/features/kv_offloading_usage/). The keys and method names are
  those vLLM 0.32.0's ``SpeculativeConfig`` accepts (``vllm/config/speculative.py``).

Not carried, because vLLM has no such setting: the acceptance rates (vLLM measures them:
``vllm:spec_decode_*``), an EAGLE head's ``draft_layers`` (the head's own architecture) and
``overlap`` (vLLM's offload transfers are always asynchronous). Refused with an error, as
they need hand-written engine config: a tree draft (``verify_tokens``: vLLM's
``speculative_token_tree`` is a tree shape sincere does not hold) and a disk tier
(``disk_gib``: vLLM's multi-tier spec or LMCache's own config).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from sincere.core.errors import ConfigError
from sincere.engine.kv_offload import KvOffloadConfig
from sincere.engine.speculation import SpeculationConfig
from sincere.optimize.engine_args import drafter, engine_method

VLLM_METHODS: dict[str, tuple[str, ...]] = {
    "eagle": ("eagle", "eagle3"),
    "mtp": ("mtp",),
    "draft-model": ("draft_model",),
    "ngram": ("ngram",),
}
"""sincere's drafting method -> vLLM's ``method`` values for it (the first is the default)."""

OFFLOADING_BACKENDS = ("native", "lmcache")
"""vLLM's ``--kv-offloading-backend`` values."""


def speculative_config(
    spec: SpeculationConfig,
    model_ids: Mapping[str, str],
    speculative_model: str | None = None,
    speculative_method: str | None = None,
) -> dict[str, Any]:
    """vLLM's ``--speculative-config`` for ``spec`` (module docstring). ``speculative_model``
    is the repository of the EAGLE head or draft model (a draft-model's default:
    ``model_ids``' entry of its catalog name, else that name); ``speculative_method``
    picks among :data:`VLLM_METHODS`' values. Raises :class:`ConfigError` for a tree
    draft, an EAGLE head without a repository, or a method vLLM does not pair with
    ``spec``'s."""
    method = engine_method("vLLM", "method", VLLM_METHODS, spec, speculative_method)
    if spec.verify_tokens is not None:
        raise ConfigError(
            "a tree draft (speculation.verify_tokens) has no vLLM argument sincere can write: "
            "give vLLM's speculative_token_tree by hand, or plan a chain draft",
            value=spec.verify_tokens,
        )
    out: dict[str, Any] = {"method": method}
    model = drafter(
        spec, model_ids, speculative_model, engine="vLLM", setting="speculative_model",
        example="yuhuili/EAGLE-LLaMA3.1-Instruct-8B",
    )  # fmt: skip
    if model is not None:
        out["model"] = model
    k = out["num_speculative_tokens"] = spec.params().num_draft_tokens
    if spec.max_batch is not None:  # k drafted up to max_batch requests, none above
        most = spec.max_batch
        out["num_speculative_tokens_per_batch_size"] = [[1, most, k], [most + 1, most + 1, 0]]
    return out


def kv_offloading_args(offload: KvOffloadConfig, backend: str = "native") -> list[str]:
    """vLLM's CPU offloading arguments for ``offload`` (module docstring); a disk tier or an
    unknown backend is a :class:`ConfigError`."""
    if backend not in OFFLOADING_BACKENDS:
        raise ConfigError(
            "unknown kv_offloading_backend", value=backend, allowed=OFFLOADING_BACKENDS
        )
    if offload.disk_gib > 0:
        raise ConfigError(
            "vLLM's --kv-offloading-size sizes a CPU tier only: a disk tier needs vLLM's "
            "TieringOffloadingSpec or LMCache's config, written by hand",
            value=offload.disk_gib,
            allowed="kv_offload.disk_gib: 0",
        )
    return ["--kv-offloading-size", f"{offload.cpu_gib:g}", "--kv-offloading-backend", backend]


def speculative_args(config: Mapping[str, Any]) -> list[str]:
    """``--speculative-config`` and its JSON (compact, keys in the order given)."""
    return ["--speculative-config", json.dumps(dict(config), separators=(",", ":"))]
