"""Placing one model replica's pipeline stages on a pool of partly used GPUs (MaverIQ).

A replica with tensor-parallel degree ``tp`` and ``pp`` pipeline stages needs ``tp * pp``
GPUs: each stage is ``tp`` GPUs holding some of the model's hidden layers. Every GPU of a
replica carries a fixed share of memory (embeddings, runtime, buffers) plus
``layer_gb`` per layer it holds (its 1/tp of the layer). Which GPUs are taken depends on
the strategy:

* ``llf`` (least-loaded first): the GPUs with the most free memory, spreading load;
* ``packing``: the fullest GPUs that still take a share, keeping others empty (best fit);
* ``hybrid``: packing, but only onto GPUs that stay at or below 70 % utilisation after
  the placement; least-loaded first when that is not possible.

Layers are split evenly across stages when every stage can hold its share; on a
fragmented pool a stage with little free memory gets fewer layers and the others more
(each stage at least one), so the split still sums to the model's layer count and no
GPU goes over its free memory. :func:`place` returns ``None`` when the replica does not
fit. Strategies are registered in :data:`PLACEMENT_STRATEGIES`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sincere.core.errors import ConfigError
from sincere.core.registry import Registry

HYBRID_MAX_UTILIZATION = 0.7  # MaverIQ's hybrid strategy packs up to this share of memory


@dataclass(frozen=True, slots=True)
class GpuState:
    """One GPU of the pool."""

    index: int  # position in the pool
    accelerator: str  # catalog name, e.g. "A6000"
    memory_gb: float  # device memory, GB
    used_gb: float = 0.0  # memory already taken by other replicas, GB

    def __post_init__(self) -> None:
        if not 0.0 <= self.used_gb <= self.memory_gb:
            raise ConfigError(
                f"GPU {self.index}: used memory must be within [0, memory_gb={self.memory_gb}]",
                value=self.used_gb,
            )

    @property
    def free_gb(self) -> float:
        """Memory still free, GB."""
        return self.memory_gb - self.used_gb

    @property
    def utilization(self) -> float:
        """Share of memory in use (0..1)."""
        return self.used_gb / self.memory_gb


@dataclass(frozen=True, slots=True)
class ReplicaShape:
    """What a replica needs from the pool."""

    tp: int  # GPUs per stage
    pp: int  # stages
    num_layers: int  # hidden layers to split over the stages
    fixed_gb: float  # memory every GPU of the replica needs besides its layers, GB
    layer_gb: float  # memory one layer needs on one GPU of its stage, GB

    @property
    def num_gpus(self) -> int:
        """GPUs the replica takes."""
        return self.tp * self.pp

    def even_gb(self) -> float:
        """Per-GPU memory with an even split (the largest stage's share)."""
        return self.fixed_gb + math.ceil(self.num_layers / self.pp) * self.layer_gb


@dataclass(frozen=True, slots=True)
class Stage:
    """One pipeline stage of a placement."""

    gpus: tuple[int, ...]  # pool indices of the stage's tp GPUs
    num_layers: int  # hidden layers the stage holds
    memory_gb: float  # memory each of its GPUs takes, GB


@dataclass(frozen=True, slots=True)
class Placement:
    """Where a replica goes: its stages in pipeline order."""

    stages: tuple[Stage, ...]
    strategy: str  # the strategy that chose the GPUs

    @property
    def gpus(self) -> tuple[int, ...]:
        """All pool indices used."""
        return tuple(g for s in self.stages for g in s.gpus)

    @property
    def layer_split(self) -> tuple[int, ...]:
        """Layers per stage (MaverIQ's ``PP_Map``)."""
        return tuple(s.num_layers for s in self.stages)


Order = Callable[[Sequence[GpuState], ReplicaShape], list[GpuState]]
PLACEMENT_STRATEGIES: Registry[Order] = Registry("placement strategy")


@PLACEMENT_STRATEGIES.register("llf")
def least_loaded_first(pool: Sequence[GpuState], shape: ReplicaShape) -> list[GpuState]:
    """Most free memory first (ties: lower index)."""
    return sorted(pool, key=lambda g: (-g.free_gb, g.index))


@PLACEMENT_STRATEGIES.register("packing")
def packing(pool: Sequence[GpuState], shape: ReplicaShape) -> list[GpuState]:
    """Least free memory first among GPUs that take at least one layer."""
    usable = [g for g in pool if g.free_gb >= shape.fixed_gb + shape.layer_gb]
    return sorted(usable, key=lambda g: (g.free_gb, g.index))


@PLACEMENT_STRATEGIES.register("hybrid")
def hybrid(pool: Sequence[GpuState], shape: ReplicaShape) -> list[GpuState]:
    """Packing onto GPUs staying <= 70 % used with an even share; else least-loaded first."""
    need = shape.even_gb()
    ok = [g for g in pool if g.used_gb + need <= HYBRID_MAX_UTILIZATION * g.memory_gb]
    if len(ok) >= shape.num_gpus:
        return sorted(ok, key=lambda g: (g.free_gb, g.index))
    return least_loaded_first(pool, shape)


def split_layers(num_layers: int, capacities: Sequence[int]) -> tuple[int, ...] | None:
    """Layers per stage: even where capacities allow, the rest moved to roomier stages.

    ``capacities[i]`` is the most layers stage ``i`` can hold. Every stage gets at least
    one layer and at most its capacity; ``None`` when that cannot sum to ``num_layers``.
    """
    num_stages = len(capacities)
    if num_stages == 0 or min(capacities) < 1 or sum(capacities) < num_layers:
        return None
    if num_layers < num_stages:
        return None
    base, extra = divmod(num_layers, num_stages)
    split = [min(base + (1 if i < extra else 0), c) for i, c in enumerate(capacities)]
    left = num_layers - sum(split)
    for i in sorted(range(num_stages), key=lambda i: -(capacities[i] - split[i])):
        take = min(left, capacities[i] - split[i])
        split[i] += take
        left -= take
    return tuple(split)


def _stages(chosen: Sequence[GpuState], shape: ReplicaShape) -> tuple[Stage, ...] | None:
    groups = [chosen[i * shape.tp : (i + 1) * shape.tp] for i in range(shape.pp)]
    caps = []
    for group in groups:
        room = min(g.free_gb for g in group) - shape.fixed_gb
        caps.append(math.floor(room / shape.layer_gb + 1e-9) if shape.layer_gb > 0 else 10**9)
    split = split_layers(shape.num_layers, caps)
    if split is None:
        return None
    return tuple(
        Stage(tuple(g.index for g in group), n, shape.fixed_gb + n * shape.layer_gb)
        for group, n in zip(groups, split, strict=True)
    )


def place(pool: Sequence[GpuState], shape: ReplicaShape, strategy: str = "llf") -> Placement | None:
    """Place ``shape`` on ``pool`` with ``strategy`` (module docstring); ``None``: no fit."""
    order = PLACEMENT_STRATEGIES.get(strategy)
    if shape.tp < 1 or shape.pp < 1 or shape.layer_gb < 0 or shape.fixed_gb < 0:
        raise ConfigError("bad replica shape", value=shape)
    candidates = order(pool, shape)
    if len(candidates) < shape.num_gpus:
        return None
    stages = _stages(candidates[: shape.num_gpus], shape)
    if stages is None and strategy != "llf":
        stages = _stages(least_loaded_first(pool, shape)[: shape.num_gpus], shape)
    return None if stages is None else Placement(stages, strategy)
