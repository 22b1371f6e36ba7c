"""KV offload tiers below an engine's GPU prefix cache: CPU memory and, optionally, disk.

Model. A cached engine block the GPU prefix cache evicts (:meth:`.PrefixCache.evict`) is
written to the CPU tier instead of being lost (write-back on eviction, SGLang HiCache's
``write_back`` policy); the CPU tier keeps ``cpu_blocks`` blocks in least-recently-used
order and, when full, moves its oldest block to the disk tier (``disk_blocks``; none: the
block is dropped), whose oldest block is dropped in turn. The tiers are exclusive: a block
a prefix match finds in a lower tier is loaded back to the GPU and leaves that tier (a later
GPU eviction writes it again). A block computed again on the GPU while a copy waits below
keeps that copy; its next eviction refreshes it rather than writing a second one.

A request's prefix hit runs on from its GPU hit through the blocks found in the tiers
(still at most all but its last prompt token). Loading ``n`` blocks takes ``n`` block
bytes over the tier's link: ``n * block_bytes / (link GB/s * 1e9)`` seconds, CPU and disk
blocks one after the other. The iteration that starts the request's prefill waits for the
loads of every request it admits (``overlap: false``), or runs them alongside its compute,
layer by layer, and lasts the longer of the two (``overlap: true``, as LMCache's
layer-wise retrieval). Stores are asynchronous and cost no iteration time.

``block_bytes`` is one block's KV on one GPU (what one GPU's link moves; every GPU of a
tensor- or pipeline-parallel group moves its own share over its own link at the same
time); the tiers' capacities are for the whole instance, all its GPUs' shares together
(vLLM's ``kv_offloading_size``).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from sincere.core.errors import check_in_range

Name = tuple[int, int, int]
"""A cached engine block: (content group size, group key, block within the group)."""

GB = 1e9  # a link's GB/s, as the catalog's host_link_gbps


@dataclass(frozen=True, slots=True)
class TierLimits:
    """Capacities and links of an engine's KV tiers (built from ``engine.kv_offload``)."""

    block_bytes: float  # KV bytes of one engine block on one GPU (what one link moves)
    cpu_blocks: int  # engine blocks the CPU tier holds
    cpu_link_gbps: float  # host-to-device bandwidth, GB/s, one direction
    disk_blocks: int = 0  # engine blocks the disk tier holds (0: no disk tier)
    disk_gbps: float | None = None  # disk-to-GPU read bandwidth, GB/s
    overlap: bool = False  # loads run alongside the iteration's compute

    def __post_init__(self) -> None:
        checks = {
            "block_bytes": self.block_bytes > 0,
            "cpu_blocks": self.cpu_blocks >= 1,
            "cpu_link_gbps": self.cpu_link_gbps > 0,
            "disk_blocks": self.disk_blocks >= 0,
            "disk_gbps": (self.disk_gbps or 0) > 0 or not self.disk_blocks,
        }
        check_in_range(
            self,
            checks,
            "KV tier limit ",
            "block_bytes, cpu_link_gbps > 0; cpu_blocks >= 1; disk_blocks "
            ">= 0; disk_gbps > 0 when disk_blocks > 0",
        )

    def load_s(self, num_cpu: int, num_disk: int) -> float:
        """Seconds to load ``num_cpu`` blocks from CPU memory and ``num_disk`` from disk."""
        seconds = num_cpu * self.block_bytes / (self.cpu_link_gbps * GB)
        if num_disk:
            assert self.disk_gbps is not None  # a disk tier holds blocks only with a link
            seconds += num_disk * self.block_bytes / (self.disk_gbps * GB)
        return seconds


@dataclass(frozen=True, slots=True)
class KvTierStats:
    """An engine's KV tier counters (vLLM's and LMCache's quantities, sincere's names)."""

    external_query_tokens: int  # prompt tokens looked up past the GPU hit (vLLM's
    # external_prefix_cache_queries)
    cpu_hit_tokens: int  # of those, found in the CPU tier (loaded back)
    disk_hit_tokens: int  # found on disk (loaded back)
    gpu_to_cpu_bytes: float  # offloaded on GPU eviction (vLLM's kv_offload_total_bytes)
    cpu_to_disk_bytes: float  # moved down from a full CPU tier
    cpu_to_gpu_bytes: float  # loaded back from CPU memory
    disk_to_gpu_bytes: float  # loaded back from disk
    load_s: float  # link time of all loads (vLLM's kv_offload_total_time)
    delay_s: float  # iteration time the loads added (less than load_s when overlapped)
    num_dropped_blocks: int  # blocks that fell off the last tier

    @property
    def external_hit_tokens(self) -> int:
        """Tokens served from a lower tier (vLLM's external_prefix_cache_hits)."""
        return self.cpu_hit_tokens + self.disk_hit_tokens


def kv_tiers_summary(stats: Sequence[KvTierStats | None]) -> dict[str, Any] | None:
    """The summary's ``kv_tiers`` block: every engine's tier counters summed (None: no
    engine has tiers)."""
    present = [s for s in stats if s is not None]
    if not present:
        return None
    out: dict[str, Any] = {}
    for s in present:
        for name, value in asdict(s).items():
            out[name] = out.get(name, 0) + value
    out["external_hit_tokens"] = sum(s.external_hit_tokens for s in present)
    return out


def block_names(keys: tuple[int, ...], group: int, start: int, stop: int) -> Iterator[Name]:
    """Names of a prompt's engine blocks ``start`` to ``stop - 1`` (groups of ``group``)."""
    for p in range(start, stop):
        yield (group, keys[p // group], p % group)


class KvTiers:
    """The CPU and disk tiers of one engine, each an LRU of block names, with counters."""

    def __init__(self, limits: TierLimits, block_tokens: int) -> None:
        self.limits = limits
        self.block_tokens = block_tokens  # tokens per engine block
        self.cpu: OrderedDict[Name, None] = OrderedDict()  # least recently stored first
        self.disk: OrderedDict[Name, None] = OrderedDict()
        self.pending_load_s = 0.0  # loads of admissions the next iteration has not taken
        # request -> blocks of its first load (CPU, disk) until taken; None: not tracked
        self.first_loads: dict[int, tuple[int, int]] | None = None
        self._blocks = {"gpu_to_cpu": 0, "cpu_to_disk": 0, "cpu_hits": 0, "disk_hits": 0}
        self._external_queries = 0
        self._load_s = 0.0
        self._delay_s = 0.0
        self._dropped = 0

    def offload(self, names: Iterable[Name]) -> None:
        """The GPU cache evicted ``names`` (least recently used first): store them."""
        cpu, disk = self.cpu, self.disk
        written = 0
        for name in names:
            if name in cpu:
                cpu.move_to_end(name)
                continue
            disk.pop(name, None)  # a fresher copy replaces the one on disk
            cpu[name] = None
            written += 1
        self._blocks["gpu_to_cpu"] += written
        over = len(cpu) - self.limits.cpu_blocks
        if over > 0:
            self._spill(over)

    def _spill(self, over: int) -> None:
        """Move the ``over`` oldest CPU blocks to disk (or drop them), dropping disk's oldest."""
        cpu, disk = self.cpu, self.disk
        room = self.limits.disk_blocks
        for _ in range(over):
            name = cpu.popitem(last=False)[0]
            if room:
                disk[name] = None
        if room:
            self._blocks["cpu_to_disk"] += over
            extra = len(disk) - room
            for _ in range(max(extra, 0)):
                disk.popitem(last=False)
            self._dropped += max(extra, 0)
        else:
            self._dropped += over

    def count(self, names: Iterable[Name]) -> int:
        """How many of ``names``, from the first, a lower tier holds without a gap."""
        cpu, disk = self.cpu, self.disk
        n = 0
        for name in names:
            if name not in cpu and name not in disk:
                break
            n += 1
        return n

    def load(self, names: Iterable[Name], request: int | None = None) -> tuple[int, int]:
        """Load ``names`` (all held below) back to the GPU for ``request``; they leave their
        tier. Returns how many came from CPU memory and how many from disk."""
        cpu, disk = self.cpu, self.disk
        num_cpu = num_disk = 0
        for name in names:
            if name in cpu:
                del cpu[name]
                num_cpu += 1
            else:
                del disk[name]
                num_disk += 1
        self._blocks["cpu_hits"] += num_cpu
        self._blocks["disk_hits"] += num_disk
        seconds = self.limits.load_s(num_cpu, num_disk)
        self._load_s += seconds
        self.pending_load_s += seconds
        if self.first_loads is not None and request is not None:
            self.first_loads.setdefault(request, (num_cpu, num_disk))
        return (num_cpu, num_disk)

    def track_first_loads(self) -> None:
        """Keep each request's first load (:meth:`take_first_load`): a live driver counts a
        prompt's tokens by source as vLLM does, tier loads apart from GPU cache hits."""
        if self.first_loads is None:
            self.first_loads = {}

    def take_first_load(self, request: int) -> tuple[int, int]:
        """Tokens ``request``'s first load brought from CPU memory and from disk, taken (a
        second call, an untracked engine or a request that loaded nothing: ``(0, 0)``)."""
        if self.first_loads is None:
            return (0, 0)
        cpu, disk = self.first_loads.pop(request, (0, 0))
        return (cpu * self.block_tokens, disk * self.block_tokens)

    def queried(self, tokens: int) -> None:
        """An admission looked up ``tokens`` prompt tokens past its GPU hit."""
        self._external_queries += tokens

    def take_delay_s(self, compute_s: float) -> float:
        """What the pending loads add to an iteration computing for ``compute_s``; they
        are then taken."""
        load_s, self.pending_load_s = self.pending_load_s, 0.0
        delay = max(load_s - compute_s, 0.0) if self.limits.overlap else load_s
        self._delay_s += delay
        return delay

    def stats(self) -> KvTierStats:
        """The counters so far."""
        b = self._blocks
        size, tokens = self.limits.block_bytes, self.block_tokens
        return KvTierStats(
            external_query_tokens=self._external_queries,
            cpu_hit_tokens=b["cpu_hits"] * tokens,
            disk_hit_tokens=b["disk_hits"] * tokens,
            gpu_to_cpu_bytes=b["gpu_to_cpu"] * size,
            cpu_to_disk_bytes=b["cpu_to_disk"] * size,
            cpu_to_gpu_bytes=b["cpu_hits"] * size,
            disk_to_gpu_bytes=b["disk_hits"] * size,
            load_s=self._load_s,
            delay_s=self._delay_s,
            num_dropped_blocks=self._dropped,
        )
