"""The link a prompt's KV cache crosses from a prefill instance to a decode instance.

One model for every path that disaggregates: the simulator's P/D loop
(:mod:`sincere.sim.disagg`) and the emulated decode engines of the live path
(:mod:`sincere.serve.emulator`) time their transfers here.

* :class:`KvLinkConfig`: ``nvlink`` (within a node: the prefill accelerator's NVLink
  figure one way, catalog ``interconnect_gbps / 2``, times its GPUs, each sending its
  shard of the KV) or ``rdma`` (between nodes: :data:`RDMA_DEFAULT_GBPS`, one 400 Gb/s
  NIC); ``bandwidth_gbps`` / ``latency_s`` given override both.
* :func:`link_figures`: (GB/s, latency s) of a link from a sender's accelerator.
* :class:`KvLink`: a FIFO link -- a transfer starts when the link is free, occupies it for
  ``bytes / bandwidth`` and lands ``latency_s`` later (transfers of concurrent requests
  share it one after another).
* :func:`kv_bytes`: the bytes of a prompt's KV (``prompt_tokens x`` the model's KV bytes
  per token at the sender's KV precision; the first token's KV is computed by its first
  decode step).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from sincere.perf.base import Deployment

RDMA_DEFAULT_GBPS = 50.0
"""RDMA bandwidth when none is given: one 400 Gb/s NIC (NDR InfiniBand, ConnectX-7), GB/s."""
NVLINK_DEFAULT_LATENCY_S = 5e-6
"""Per-transfer latency assumed over NVLink when none is given (a few microseconds)."""
RDMA_DEFAULT_LATENCY_S = 20e-6
"""Per-transfer latency assumed over RDMA when none is given (setup plus one round trip)."""


class KvLinkConfig(BaseModel):
    """The link KV caches cross from a prefill instance to a decode instance.

    ``nvlink``: within a node; bandwidth by default the prefill accelerator's NVLink
    figure one way (catalog ``interconnect_gbps`` / 2) times its GPUs (each sends its
    shard of the KV). ``rdma``: between nodes; bandwidth by default
    :data:`RDMA_DEFAULT_GBPS`. ``bandwidth_gbps`` / ``latency_s`` given override both.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")
    kind: Literal["nvlink", "rdma"] = "nvlink"
    bandwidth_gbps: float | None = Field(None, gt=0, allow_inf_nan=False)  # GB/s one way
    latency_s: float | None = Field(None, ge=0, allow_inf_nan=False)  # per transfer


@dataclass(eq=False)
class KvLink:
    """A FIFO link: transfers cross one after another at ``bandwidth_gbps``."""

    bandwidth_gbps: float  # GB/s (1e9 bytes) one way
    latency_s: float  # added to every transfer
    free_at: float = 0.0  # when the transfer on the link ends its last byte
    num_transfers: int = 0
    num_bytes: float = 0.0
    busy_s: float = 0.0

    def send(self, ready_at: float, num_bytes: float) -> float:
        """When ``num_bytes`` ready at ``ready_at`` have arrived."""
        start = max(ready_at, self.free_at)
        wire = num_bytes / (self.bandwidth_gbps * 1e9)
        self.free_at = start + wire
        self.num_transfers += 1
        self.num_bytes += num_bytes
        self.busy_s += wire
        return self.free_at + self.latency_s


def link_figures(cfg: KvLinkConfig, interconnect_gbps: float, num_gpus: int) -> tuple[float, float]:
    """(bandwidth GB/s, latency s) of a link from a prefill instance whose accelerator
    quotes ``interconnect_gbps`` (both directions) on each of its ``num_gpus`` GPUs."""
    if cfg.kind == "nvlink":
        bandwidth = interconnect_gbps / 2.0 * num_gpus
        latency = NVLINK_DEFAULT_LATENCY_S
    else:
        bandwidth, latency = RDMA_DEFAULT_GBPS, RDMA_DEFAULT_LATENCY_S
    if cfg.bandwidth_gbps is not None:
        bandwidth = cfg.bandwidth_gbps
    if cfg.latency_s is not None:
        latency = cfg.latency_s
    return bandwidth, latency


def sender_figures(cfg: KvLinkConfig, deployment: Deployment) -> tuple[float, float]:
    """(bandwidth GB/s, latency s) of the link out of a prefill ``deployment``."""
    return link_figures(cfg, deployment.accelerator.interconnect_gbps, deployment.num_gpus)


def kv_bytes(deployment: Deployment, prompt_tokens: int) -> float:
    """Bytes of the KV of ``prompt_tokens`` prompt tokens computed by ``deployment``."""
    return prompt_tokens * deployment.model.kv_bytes_per_token(deployment.kv_precision)
