"""The link a prompt's KV cache crosses from a prefill instance to a decode instance.

One model for every path that disaggregates: the simulator's P/D loop
(:mod:`sincere.sim.disagg`) and the emulated decode engines of the live path
(:mod:`sincere.serve.emulator`) time their transfers here.

* :class:`KvLinkConfig`: ``nvlink`` (within a node: the prefill accelerator's NVLink
  figure one way, catalog ``interconnect_gbps / 2``, times its GPUs, each sending its
  shard of the KV) or ``rdma`` (between nodes: :data:`RDMA_DEFAULT_GBPS`, one 400 Gb/s
  NIC); ``bandwidth_gbps`` / ``latency_s`` given override both.
* :func:`link_figures`: (GB/s, latency s) of a link from a sender's accelerator.
* :class:`KvLink`: a link shared by the transfers in flight on it (processor sharing:
  ``n`` transfers each move at ``bandwidth / n``); a transfer's last byte lands
  ``latency_s`` after it leaves, so one alone takes ``latency_s + bytes / bandwidth``.
* :func:`kv_bytes`: the bytes of a prompt's KV (``prompt_tokens x`` the model's KV bytes
  per token at the sender's KV precision; the first token's KV is computed by its first
  decode step).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from sincere.core.types import Seconds
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


WIRE_BYTES_TOL = 1.0
"""Bytes left below which a transfer counts as sent (float rounding of the shares)."""


@dataclass(eq=False)
class KvLink:
    """A link shared by the transfers on it (processor sharing).

    ``n`` transfers in flight each move at ``bandwidth_gbps / n``; at every start and
    end the bytes left are brought up to date and the next end recomputed. The loop
    calls :meth:`start` and, at :attr:`next_at`, :meth:`finish`.
    """

    bandwidth_gbps: float  # GB/s (1e9 bytes) one way
    latency_s: Seconds  # added to every transfer
    index: int = 0  # the loop's number for this link (its events' payload)
    active: dict[int, float] = field(default_factory=dict)  # request -> bytes left
    updated_at: Seconds = 0.0  # when ``active`` was last brought up to date
    next_at: Seconds | None = None  # when the next transfer in flight sends its last byte
    num_transfers: int = 0
    num_bytes: float = 0.0
    busy_s: Seconds = 0.0  # time with at least one transfer in flight

    def _catch_up(self, at: Seconds) -> None:
        """Move every transfer in flight on to ``at`` at its share of the bandwidth."""
        active = self.active
        if active and at > self.updated_at:
            span = at - self.updated_at
            sent = span * self.bandwidth_gbps * 1e9 / len(active)
            for i in active:
                active[i] -= sent
            self.busy_s += span
        self.updated_at = at

    def _plan(self) -> Seconds | None:
        """Recompute when the transfer with the fewest bytes left ends."""
        active = self.active
        if not active:
            self.next_at = None
        else:
            left = max(min(active.values()), 0.0)
            self.next_at = self.updated_at + left * len(active) / (self.bandwidth_gbps * 1e9)
        return self.next_at

    def start(self, i: int, at: Seconds, num_bytes: float) -> Seconds | None:
        """Request ``i``'s ``num_bytes`` start at ``at``; the link's next end."""
        self._catch_up(at)
        self.active[i] = float(num_bytes)
        self.num_transfers += 1
        self.num_bytes += num_bytes
        return self._plan()

    def cancel(self, i: int, at: Seconds) -> Seconds | None:
        """Request ``i``'s transfer stops at ``at`` (its receiver left); the link's next end."""
        self._catch_up(at)
        if self.active.pop(i, None) is not None:
            self._plan()
        return self.next_at

    def finish(self, at: Seconds) -> list[int]:
        """At :attr:`next_at`: the requests whose last byte left (the next end replanned)."""
        self._catch_up(at)
        active = self.active
        least = min(active.values())
        done = [i for i, left in active.items() if left <= max(least, 0.0) + WIRE_BYTES_TOL]
        for i in done:
            del active[i]
        self._plan()
        return done


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
    """Bytes of the KV of ``prompt_tokens`` prompt tokens computed by ``deployment``, and of
    the sequence's recurrent state where the model has linear-attention layers (its fixed
    size goes with every transfer)."""
    model = deployment.model
    per_token = model.kv_bytes_per_token(deployment.kv_precision)
    return prompt_tokens * per_token + model.linear_state_bytes_per_seq(deployment.state_precision)
