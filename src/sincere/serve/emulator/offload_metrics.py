"""Prometheus counters of an emulated engine's KV offload tiers, under vLLM's names.

vLLM's offloading connector exports ``vllm:kv_offload_total_bytes{transfer_type}``
(``GPU_to_CPU``, ``CPU_to_GPU``); sincere adds ``CPU_to_DISK`` and ``DISK_to_GPU`` for its
disk tier, and ``sincere:kv_tier_hit_tokens{tier}`` (``cpu``, ``disk``). Tier hits also
move vLLM's ``vllm:external_prefix_cache_queries`` / ``_hits`` (tokens looked up past the
local hit / loaded from the connector), and a prompt's tokens loaded back from a tier count
as ``vllm:prompt_tokens_by_source{source="external_kv_transfer"}`` and
``vllm:prompt_tokens_cached_by_source{source="host"}`` (or ``"disk"``), not as local cache
hits, as in vLLM. The counters exist only on an engine
with tiers, so the page of one without them is unchanged.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter

from sincere.engine.kv_tiers import KvTierStats

TRANSFERS = {
    "GPU_to_CPU": "gpu_to_cpu_bytes",
    "CPU_to_GPU": "cpu_to_gpu_bytes",
    "CPU_to_DISK": "cpu_to_disk_bytes",
    "DISK_to_GPU": "disk_to_gpu_bytes",
}
"""``transfer_type`` label -> the :class:`KvTierStats` field it counts."""

TIER_HITS = {"cpu": "cpu_hit_tokens", "disk": "disk_hit_tokens"}


class OffloadMetrics:
    """The tier counters of one engine, moved on to its cumulative totals at each render."""

    def __init__(
        self,
        registry: CollectorRegistry,
        labels: tuple[str, str],
        external: tuple[Counter, Counter],
    ) -> None:
        names = ["model_name", "engine"]
        moved = Counter(
            "vllm:kv_offload_total_bytes", "KV bytes moved between tiers.",
            [*names, "transfer_type"], registry=registry,
        )  # fmt: skip
        hits = Counter(
            "sincere:kv_tier_hit_tokens", "Prompt tokens found in a lower KV tier.",
            [*names, "tier"], registry=registry,
        )  # fmt: skip
        self._counters = {
            **{field: moved.labels(*labels, kind) for kind, field in TRANSFERS.items()},
            **{field: hits.labels(*labels, tier) for tier, field in TIER_HITS.items()},
            "external_query_tokens": external[0],
            "external_hit_tokens": external[1],
        }
        self._seen = dict.fromkeys(self._counters, 0.0)

    def update(self, stats: KvTierStats) -> None:
        """Move every counter on to ``stats``' totals."""
        for field, counter in self._counters.items():
            total = float(getattr(stats, field))
            if total > self._seen[field]:
                counter.inc(total - self._seen[field])
                self._seen[field] = total
