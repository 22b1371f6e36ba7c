"""InferenceX's disaggregated points as simulated prefill / decode fleets.

A ``disagg`` row (:mod:`sincere.workload.inferencex`) gives, per side, the workers
(``num_workers`` engines), each worker's parallelism (``tp_size`` GPUs per attention rank,
``attention_dp_size`` ranks, ``moe_tp_size x moe_ep_size`` over the worker's GPUs) and its
batch per rank (``batch_size``); the clients are ``decode batch_size x decode workers x
decode attention DP``. It becomes a closed loop over a simulated P/D fleet
(docs/disaggregation.md):

* **ranks**: every attention rank of a worker is one simulated instance of ``tp`` GPUs with
  ``attention_dp`` set to the worker's ranks (its experts see every rank's tokens, as for
  colocated attention-DP points) and ``ep = moe_ep`` when ``moe_tp x moe_ep`` is the
  worker's GPUs; a prefill instance runs at most ``prefill batch_size`` requests at once,
  a decode instance ``decode batch_size``;
* **slice**: the fleet's prefill ranks and decode ranks have a greatest common divisor
  ``g``; one ``1/g`` slice is simulated (its share of the ranks and of the clients), the
  other slices taken to run alike, as one rank of a colocated attention-DP point is;
* **KV link**: NVLink (the simulator's default figures) when the whole fleet fits one
  NVLink domain of the system, else RDMA at :data:`RDMA_GBPS_PER_GPU` per GPU of the
  prefill rank (one 400 Gb/s NIC per GPU, as HGX B200 / B300 boards and GB200 / GB300
  compute trays have), the simulator's RDMA latency;
* **routing**: the simulator's P/D defaults (every request disaggregated; the prefill and
  decode routers balance the ranks).

What a row cannot give is a refusal ``(reason, detail)``: worker counts or batches not
stated (``pd-workers``), a worker wider than one NVLink domain (``multi-node``), clients
that do not match the source's concurrency (``concurrency``), an MoE split that does not
cover the worker (``moe-split``), attention DP on a dense model (``attention-dp``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from sincere.perf.kv_link import RDMA_DEFAULT_GBPS
from sincere.workload.inferencex import OperatingPoint, WorkerGroup

RDMA_GBPS_PER_GPU = RDMA_DEFAULT_GBPS
"""GB/s one way of one GPU's NIC between nodes (one 400 Gb/s ConnectX-7 port)."""
SIDES = ("prefill", "decode")


@dataclass(frozen=True)
class PoolSpec:
    """One side of a P/D point as simulated."""

    workers: int  # the row's engines on this side
    tp: int  # GPUs per attention rank
    ep: int  # expert parallelism over the worker's GPUs
    attention_dp: int  # attention ranks per worker
    max_num_seqs: int  # the row's batch per rank
    ranks: int  # instances of this side in the simulated slice

    @property
    def worker_gpus(self) -> int:
        """GPUs of one worker."""
        return self.tp * self.attention_dp


@dataclass(frozen=True)
class PDSpec:
    """How a disaggregated point is simulated (module docstring)."""

    prefill: PoolSpec
    decode: PoolSpec
    slices: int  # the fleet is simulated as one 1/slices of itself
    fleet_gpus: int  # GPUs of the whole fleet
    kv_link: dict[str, Any]  # the simulator's disaggregation.kv_link

    @property
    def clients(self) -> int:
        """Clients of the whole fleet: each decode rank's batch, over every decode rank."""
        d = self.decode
        return d.max_num_seqs * d.workers * d.attention_dp

    def label(self) -> str:
        """``xPyD`` with each side's shape, e.g. ``1P(tp1 adp8 ep8) 2D(tp1 adp8 ep8) /8``."""
        p, d = self.prefill, self.decode
        return f"{p.workers}P({_shape(p)}) {d.workers}D({_shape(d)}) /{self.slices}"


Refusal = tuple[str, str]
"""Why a disaggregated point is not simulated: a skip reason's key and the row's values."""


def _shape(pool: PoolSpec) -> str:
    return f"tp{pool.tp} adp{pool.attention_dp} ep{pool.ep}"


def _stated(group: WorkerGroup | None) -> tuple[int, int, int, int] | None:
    """``(workers, tp, attention DP, batch)`` of a side, or None when one is not stated."""
    if group is None or not group.num_workers or not group.tp or not group.batch_size:
        return None
    return group.num_workers, group.tp, max(group.attention_dp or 1, 1), group.batch_size


def _expert_parallel(group: WorkerGroup, gpus: int, is_moe: bool) -> int | Refusal:
    """EP of a side's worker: ``moe_ep`` when ``moe_tp x moe_ep`` is its GPUs (MoE only)."""
    if not is_moe:
        return 1
    moe_tp, moe_ep = group.moe_tp or 0, group.moe_ep or 0
    if not moe_tp and not moe_ep:
        return 1
    if max(moe_tp, 1) * max(moe_ep, 1) != gpus:
        return "moe-split", f"moe_tp {moe_tp} x moe_ep {moe_ep} vs {gpus} GPUs per worker"
    return max(moe_ep, 1)


def _pool(group: WorkerGroup, side: str, is_moe: bool, domain: int) -> PoolSpec | Refusal:
    """One side's shape (``ranks`` 0: set once the slice is known), or why it has none."""
    stated = _stated(group)
    assert stated is not None, "checked by the caller"
    workers, tp, dp, batch = stated
    if (group.pp or 1) > 1:
        return "refused-pd", f"{side} pp_size {group.pp}: pipeline-parallel workers"
    if dp > 1 and not is_moe:
        return "attention-dp", f"{side} attention_dp_size {dp} on a dense model"
    if tp * dp > domain:
        return "multi-node", f"{side} worker of {tp * dp} GPUs > {domain} per node"
    ep = _expert_parallel(group, tp * dp, is_moe)
    if isinstance(ep, tuple):
        return ep
    return PoolSpec(workers, tp, ep, dp, batch, 0)


def pd_spec(point: OperatingPoint, is_moe: bool, domain: int) -> PDSpec | Refusal:
    """The simulated fleet of ``point`` (module docstring), or why there is none;
    ``is_moe``: whether its catalog model is a mixture of experts; ``domain``: GPUs of one
    NVLink domain of its system."""
    groups = {"prefill": point.prefill, "decode": point.decode}
    for side, group in groups.items():
        if _stated(group) is None:
            return "pd-workers", f"{side}: workers, tp or batch_size not stated"
    pools: list[PoolSpec] = []
    for side, group in groups.items():
        assert group is not None
        pool = _pool(group, side, is_moe, domain)
        if isinstance(pool, tuple):
            return pool
        pools.append(pool)
    prefill, decode = pools
    clients = decode.max_num_seqs * decode.workers * decode.attention_dp  # PDSpec.clients
    if point.source_concurrency is not None and point.source_concurrency != clients:
        return "concurrency", (
            f"decode batch_size {decode.max_num_seqs} x workers {decode.workers} x "
            f"attention DP {decode.attention_dp} vs silicon_concurrency "
            f"{point.source_concurrency}"
        )
    p_ranks = prefill.workers * prefill.attention_dp
    d_ranks = decode.workers * decode.attention_dp
    g = math.gcd(p_ranks, d_ranks)
    gpus = prefill.workers * prefill.worker_gpus + decode.workers * decode.worker_gpus
    link: dict[str, Any] = {"kind": "nvlink"}
    if gpus > domain:
        link = {"kind": "rdma", "bandwidth_gbps": RDMA_GBPS_PER_GPU * prefill.tp}
    return PDSpec(
        prefill=_with_ranks(prefill, p_ranks // g),
        decode=_with_ranks(decode, d_ranks // g),
        slices=g,
        fleet_gpus=gpus,
        kv_link=link,
    )


def _with_ranks(pool: PoolSpec, ranks: int) -> PoolSpec:
    return PoolSpec(pool.workers, pool.tp, pool.ep, pool.attention_dp, pool.max_num_seqs, ranks)


def pd_instances(spec: PDSpec, base: dict[str, Any], engine: dict[str, Any]) -> list[Any]:
    """The simulator's instance groups of ``spec``'s slice: ``base`` (model, accelerator,
    precisions) and ``engine`` (everything but ``max_num_seqs``) shared by both sides."""
    out = []
    for side, pool in zip(SIDES, (spec.prefill, spec.decode), strict=True):
        out.append({
            **base, "name": side, "role": side, "count": pool.ranks,
            "tp": pool.tp, "pp": 1, "ep": pool.ep, "attention_dp": pool.attention_dp,
            "engine": {**engine, "max_num_seqs": pool.max_num_seqs},
        })  # fmt: skip
    return out
