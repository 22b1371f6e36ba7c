"""Placement strategies on fragmented pools, with uneven layer splits."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sincere.core.errors import ConfigError
from sincere.optimize.placement import GpuState, ReplicaShape, place, split_layers


def _pool(used: list[float], memory: float = 48.0) -> list[GpuState]:
    return [GpuState(i, "A6000", memory, u) for i, u in enumerate(used)]


SHAPE = ReplicaShape(tp=1, pp=2, num_layers=40, fixed_gb=1.0, layer_gb=0.6)  # 13B fp16 in 2


def test_llf_takes_the_emptiest_gpus() -> None:
    """Least-loaded first uses the GPUs with the most free memory."""
    p = place(_pool([30, 0, 20, 5]), SHAPE, "llf")
    assert p is not None and sorted(p.gpus) == [1, 3]


def test_packing_takes_the_fullest_gpus_that_fit() -> None:
    """Packing fills partly used GPUs first, leaving empty ones free."""
    p = place(_pool([30, 0, 20, 5]), SHAPE, "packing")
    assert p is not None and sorted(p.gpus) == [0, 2]
    assert sum(p.layer_split) == 40


def test_hybrid_packs_below_seventy_percent() -> None:
    """Hybrid packs only onto GPUs that stay <= 70 % used (13 GB share: used <= 20.6 GB)."""
    p = place(_pool([30, 0, 20, 5]), SHAPE, "hybrid")
    assert p is not None and sorted(p.gpus) == [2, 3]


def test_uneven_split_on_a_fragmented_pool() -> None:
    """A stage with little room takes fewer layers; the other takes the rest."""
    pool = _pool([40, 28])  # free 8 and 20 GB: 11 and 31 layers at most
    p = place(pool, SHAPE, "llf")
    assert p is not None
    assert sorted(p.layer_split) == [11, 29]
    for stage in p.stages:
        for g in stage.gpus:
            assert stage.memory_gb <= pool[g].free_gb + 1e-9


def test_no_fit_returns_none_and_bad_shape_raises() -> None:
    """Too little free memory gives None; a bad strategy name lists the valid ones."""
    assert place(_pool([45, 45]), SHAPE, "llf") is None
    assert place(_pool([0]), SHAPE, "llf") is None  # needs 2 GPUs
    with pytest.raises(ConfigError, match="llf"):
        place(_pool([0, 0]), SHAPE, "round-robin")


def test_split_layers() -> None:
    """Even when possible; impossible capacities give None."""
    assert split_layers(40, [100, 100]) == (20, 20)
    assert split_layers(41, [100, 100, 100]) == (14, 14, 13)
    assert split_layers(40, [5, 100]) == (5, 35)
    assert split_layers(40, [10, 10]) is None
    assert split_layers(2, [5, 5, 5]) is None


@settings(max_examples=60, deadline=None)
@given(
    used=st.lists(st.floats(0, 47), min_size=1, max_size=8),
    tp=st.sampled_from([1, 2, 4]),
    pp=st.integers(1, 4),
    layers=st.integers(8, 80),
    layer_gb=st.floats(0.05, 2.0),
    strategy=st.sampled_from(["llf", "packing", "hybrid"]),
)
def test_placements_sum_to_the_layers_and_never_overfill(
    used: list[float], tp: int, pp: int, layers: int, layer_gb: float, strategy: str
) -> None:
    """Any placement found uses tp*pp distinct GPUs, all layers, and fits every GPU."""
    pool = _pool(used)
    shape = ReplicaShape(tp, pp, layers, 0.5, layer_gb)
    p = place(pool, shape, strategy)
    if p is None:
        return
    assert sum(p.layer_split) == layers and min(p.layer_split) >= 1
    assert len(set(p.gpus)) == tp * pp
    for stage in p.stages:
        assert len(stage.gpus) == tp
        for g in stage.gpus:
            assert stage.memory_gb <= pool[g].free_gb + 1e-9
