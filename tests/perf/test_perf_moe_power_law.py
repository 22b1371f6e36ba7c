"""The database collector's power-law routing (:func:`sincere.perf.moe.collector_power_law_load`)
and the readings it must leave as they were."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sincere.core.errors import ConfigError
from sincere.fit.kernels import COLUMNS, moe_rows
from sincere.perf.kernel_tables import read_table
from sincere.perf.moe import (
    busiest_group,
    cap_loads,
    collector_expert_work,
    collector_group_load,
    collector_power_law_draw,
    collector_power_law_load,
    expert_work,
    round_robin_load,
    routing_load,
    settle_total,
)


@pytest.mark.parametrize(
    ("tokens", "experts", "top_k", "alpha"),
    [
        (1, 128, 8, 1.2),
        (7, 64, 6, 1.01),
        (64, 128, 8, 1.2),
        (4096, 128, 8, 1.01),
        (300, 512, 22, 1.2),
    ],
)
def test_one_draw_routes_every_slot(tokens: int, experts: int, top_k: int, alpha: float) -> None:
    rng = np.random.default_rng(3)
    for _ in range(8):
        loads = collector_power_law_draw(tokens, experts, top_k, alpha, rng)
        assert loads.shape == (experts,)
        assert int(loads.sum()) == tokens * top_k
        assert (loads >= 0).all()
        capped = cap_loads(loads, tokens)
        assert int(capped.sum()) == tokens * top_k
        assert int(capped.max()) <= tokens


def test_settle_total_gives_to_largest_and_takes_from_smallest() -> None:
    counts = np.array([5, 0, 3, 1], dtype=np.int64)
    values = counts.astype(np.float64)
    assert settle_total(counts, values, 11).tolist() == [6, 0, 4, 1]
    assert settle_total(counts, values, 8).tolist() == [4, 0, 3, 1]  # smallest empty: largest
    assert settle_total(counts, values, 7).tolist() == [4, 0, 3, 0]  # then the next smallest


def test_settle_total_ranks_ties_by_value_not_position() -> None:
    counts = np.zeros(6, dtype=np.int64)
    values = np.array([0.1, 0.5, 0.2, 0.9, 0.3, 0.4])
    assert settle_total(counts, values, 2).tolist() == [0, 1, 0, 1, 0, 0]


def test_cap_gives_the_excess_to_the_next_largest() -> None:
    loads = np.array([1, 9, 4, 2], dtype=np.int64)
    assert cap_loads(loads, 5).tolist() == [1, 5, 5, 5]
    assert cap_loads(loads, 9).tolist() == loads.tolist()


def test_busiest_group_is_the_heaviest_contiguous_block() -> None:
    loads = np.array([1, 1, 9, 0, 3, 3], dtype=np.int64)
    assert busiest_group(loads, 3).tolist() == [9, 0]
    assert busiest_group(loads, 1).tolist() == loads.tolist()
    with pytest.raises(ConfigError):
        busiest_group(loads, 4)


def test_deterministic_for_a_seed() -> None:
    args = (64, 128, 8, 1.2, 16)
    first = collector_power_law_load(*args, draws=16, seed=5)
    collector_group_load.cache_clear()  # memoised: draw again rather than recall
    assert collector_power_law_load(*args, draws=16, seed=5) == first
    assert collector_power_law_load(*args, draws=16, seed=6) != first


@pytest.mark.parametrize(
    ("tokens", "experts", "top_k", "alpha", "ep"),
    [(1, 128, 8, 1.2, 1), (16, 128, 8, 1.01, 1), (256, 256, 8, 1.2, 4), (2048, 64, 6, 1.2, 2)],
)
def test_figures_stay_within_their_bounds(
    tokens: int, experts: int, top_k: int, alpha: float, ep: int
) -> None:
    distinct, rows, busiest = collector_power_law_load(tokens, experts, top_k, alpha, 16, ep)
    assert 0 < distinct <= experts / ep
    assert busiest <= tokens
    assert rows >= 16 * distinct - 1e-9  # each active expert pads to at least one tile


def test_large_batches_activate_nearly_every_expert() -> None:
    distinct, rows, busiest = collector_power_law_load(4096, 128, 8, 1.2, 16)
    assert distinct > 0.97 * 128
    assert rows >= 4096 * 8
    assert 256 < busiest <= 4096  # skewed: well above the even share, capped at T


def test_few_slots_leave_most_experts_idle() -> None:
    distinct, _, busiest = collector_power_law_load(4, 128, 8, 1.2, 16)  # T k = 32 < E
    assert distinct <= 32
    assert distinct < 0.5 * 128
    assert busiest <= 4


def test_the_busiest_group_holds_at_least_its_share() -> None:
    one = collector_power_law_load(64, 128, 8, 1.2, 16)
    four = collector_power_law_load(64, 128, 8, 1.2, 16, ep=4)
    assert four[0] <= 128 / 4
    assert four[0] >= one[0] / 4 - 1e-9  # the heaviest group is at least as busy as the mean


def test_expert_work_reads_the_collector_only_when_asked() -> None:
    routing = (128, 8, 1.2, 16)
    today = expert_work(64, 2048, 768, routing, 2.0)
    assert expert_work(64, 2048, 768, routing, 2.0, collector=False) == today
    drawn = expert_work(64, 2048, 768, routing, 2.0, collector=True)
    assert drawn == collector_expert_work(64, 2048, 768, routing, 2.0)
    assert drawn != today
    dealt = expert_work(64, 2048, 768, routing, 2.0, dealt=True)
    assert expert_work(64, 2048, 768, routing, 2.0, dealt=True, collector=True) == dealt
    distinct = collector_power_law_load(64, 128, 8, 1.2, 16)[0]
    assert drawn[4] == distinct


def test_existing_readings_unchanged() -> None:
    """Values computed before the collector's reading was added (bit for bit)."""
    assert routing_load(1, 128, 8, 0.0, 16) == (8.0, 128.0, 0.0625)
    assert routing_load(64, 128, 8, 0.0, 16) == (125.94234926707806, 2015.077588273249, 4.0)
    assert routing_load(37, 64, 6, 1.01, 16) == (49.44635753962055, 839.1417206339287, 37.0)
    assert routing_load(512, 256, 8, 1.2, 16) == (235.44931809675273, 6247.18908736267, 512.0)
    assert round_robin_load(1, 128, 8, 16) == (8, 128, 1.0)
    assert round_robin_load(100, 256, 8, 16) == (256.0, 4096.0, 4.0)
    assert round_robin_load(3, 64, 6, 32) == (18, 576, 1.0)
    assert expert_work(64, 2880, 2880, (128, 4, 1.2, 16), 2.0, ep=4) == (
        13063694577.193565, 3185049600.0, 377136455.53928435, 2764800.0, 15.156268307102156,
    )  # fmt: skip
    assert expert_work(64, 2880, 2880, (128, 4, 1.2, 16), 2.0, ep=4, dealt=True) == (
        25480396800.0, 99532800.0, 796262400.0, 2764800.0, 32.0,
    )  # fmt: skip


DATABASE = Path(__file__).resolve().parents[3] / "shared" / "data" / "kernels" / "aiconfigurator"


@pytest.mark.skipif(not (DATABASE / "h100_sxm").is_dir(), reason="the kernel database is not here")
def test_the_fit_takes_every_routing_only_when_asked() -> None:
    """``moe_rows``: the balanced rows by default (what the shipped fits use); every routing
    with ``all_routings``, the power-law rows' L2 window judged in the collector's reading."""
    table = read_table(DATABASE / "h100_sxm", "moe", COLUMNS["moe"])
    assert table is not None
    shipped = moe_rows(table)
    assert set(shipped.columns["distribution"].astype(str)) == {"balanced"}
    every = moe_rows(table, all_routings=True)
    assert {"balanced", "power_law_1.01", "power_law_1.2"} <= set(
        every.columns["distribution"].astype(str)
    )
    assert every.num_rows > shipped.num_rows
