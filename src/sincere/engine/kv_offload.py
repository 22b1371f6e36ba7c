"""The ``engine.kv_offload`` block: KV offload tiers of a continuous engine, as configured.

``cpu_gib`` of host memory (and ``disk_gib`` of disk) hold KV blocks the GPU prefix cache
evicted (:mod:`.kv_tiers`). Capacities are for the whole instance, all its GPUs' shares
together (vLLM's ``kv_offloading_size``); the links are per GPU, GB/s one direction, as
the catalog's ``host_link_gbps``. Off (``kv_offload`` absent) by default.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator

from sincere.catalog.specs import GIB
from sincere.core.errors import ConfigError
from sincere.engine.kv_tiers import TierLimits
from sincere.perf.base import Deployment
from sincere.perf.memory import kv_bytes_per_token_per_gpu


class KvOffloadConfig(BaseModel):
    """CPU (and disk) tiers below the GPU prefix cache (docs/prefix_caching.md)."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    cpu_gib: float = Field(gt=0)  # host memory for offloaded KV, GiB, the whole instance
    # host-to-device link per GPU, GB/s one direction; None: the accelerator's
    # host_link_gbps (catalog: PCIe Gen5 x16, 64 GB/s, on H100 and H200)
    cpu_link_gbps: float | None = Field(None, gt=0)
    disk_gib: float = Field(0.0, ge=0)  # disk for KV the CPU tier overflows, GiB; 0: none
    disk_gbps: float | None = Field(None, gt=0)  # disk-to-GPU read bandwidth, GB/s
    overlap: bool = False  # loads run alongside the iteration's compute (layer by layer)

    @model_validator(mode="after")
    def _disk_has_a_link(self) -> KvOffloadConfig:
        if self.disk_gib > 0 and self.disk_gbps is None:
            raise ValueError(
                f"kv_offload.disk_gib is {self.disk_gib} but disk_gbps is not set; give the "
                "drive's read bandwidth in GB/s (a PCIe Gen4 NVMe drive reads up to ~7)"
            )
        return self

    def limits(self, deployment: Deployment, block_size: int, where: str) -> TierLimits:
        """The tiers' capacities in engine blocks and their links, for ``deployment``."""
        per_gpu = kv_bytes_per_token_per_gpu(deployment) * block_size
        instance = per_gpu * deployment.tp * deployment.pp  # every GPU's share of a block
        cpu_blocks = int(self.cpu_gib * GIB // instance)
        disk_blocks = int(self.disk_gib * GIB // instance)
        for name, gib, blocks in (("cpu_gib", self.cpu_gib, cpu_blocks),
                                  ("disk_gib", self.disk_gib, disk_blocks)):  # fmt: skip
            if gib > 0 and blocks < 1:
                raise ConfigError(
                    f"kv_offload.{name} holds no KV block of {deployment.model.name} "
                    f"({instance:,.0f} bytes per {block_size}-token block)",
                    where=where,
                    value=gib,
                    allowed=f">= {instance / GIB:.6f} GiB",
                )
        link = self.cpu_link_gbps or deployment.accelerator.host_link_gbps
        return TierLimits(per_gpu, cpu_blocks, link, disk_blocks, self.disk_gbps, self.overlap)
