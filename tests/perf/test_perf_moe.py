"""Formulas of mixture-of-experts layers, MLA and sliding windows on hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from sincere.core.errors import ConfigError
from sincere.perf.moe import (
    all_to_all_bytes,
    all_to_all_s,
    busiest_rank_load,
    expected_distinct_experts,
    expected_max_of_normals,
    expert_work,
    fused_moe_s,
    grouped_gemm_efficiency,
    grouped_gemm_rows,
    mla_decode_flops_per_pair,
    mla_kv_bytes_per_token_layer,
    mla_prefill_flops_per_pair,
    permutation_bytes,
    windowed_context,
    windowed_pairs,
)


def test_distinct_experts_hand_cases() -> None:
    """One token activates exactly k experts; two tokens top-2 of 8: 8 (1 - (3/4)^2) = 3.5."""
    assert expected_distinct_experts(1, 128, 8) == pytest.approx(8.0)
    assert expected_distinct_experts(2, 8, 2) == pytest.approx(3.5)
    assert expected_distinct_experts(0, 8, 2) == 0.0
    # 64 tokens top-8 of 128: 128 (1 - (15/16)^64) = 125.94
    assert expected_distinct_experts(64, 128, 8) == pytest.approx(125.94, abs=0.01)


@given(
    tokens=st.integers(1, 5000),
    experts=st.integers(1, 256),
    data=st.data(),
    skew=st.floats(0.0, 2.0),
)
def test_distinct_experts_bounds(
    tokens: int, experts: int, data: st.DataObject, skew: float
) -> None:
    """The count lies between k and min(E, T k) and grows with the tokens."""
    k = data.draw(st.integers(1, experts))
    d = expected_distinct_experts(tokens, experts, k, skew)
    assert d <= min(experts, tokens * k) + 1e-9
    assert d >= min(k, experts) * (1 - 1e-9) or skew > 0
    assert expected_distinct_experts(tokens + 1, experts, k, skew) >= d - 1e-9


def test_skew_activates_fewer_experts() -> None:
    """Skewed routing concentrates tokens on popular experts: fewer distinct ones."""
    uniform = expected_distinct_experts(16, 128, 8)
    skewed = expected_distinct_experts(16, 128, 8, skew=1.0)
    assert skewed < uniform
    assert expected_distinct_experts(16, 128, 8, skew=0.0) == uniform


def test_routing_input_is_checked() -> None:
    """Top-k above the experts and a negative skew are refused naming the value."""
    with pytest.raises(ConfigError, match="experts_per_token"):
        expected_distinct_experts(4, 8, 9)
    with pytest.raises(ConfigError, match="skew"):
        expected_distinct_experts(4, 8, 2, skew=-1.0)


def test_grouped_gemm_pads_each_expert_to_the_tile() -> None:
    """3 tokens an expert in 16-row tiles use 3/16 of the rows; 20 tokens take two tiles."""
    assert grouped_gemm_efficiency(3, 16) == pytest.approx(3 / 16)
    assert grouped_gemm_rows(20, 4, 16) == 4 * 32
    assert grouped_gemm_rows(16, 1, 16) == 16
    assert grouped_gemm_efficiency(64, 16) == pytest.approx(1.0)


def test_permutation_and_all_to_all_bytes() -> None:
    """Permutation moves 2 T h (1 + k) elements; an EP4 exchange of 64 tokens top-8 at
    hidden 2048 in bf16 sends 64/4 * 8 * 2048 * 2 * 3/4 = 393,216 bytes from a GPU."""
    assert permutation_bytes(10, 8, 2048, 2.0) == 2 * 10 * 2048 * 9 * 2.0
    assert all_to_all_bytes(64, 8, 2048, 4, 2.0) == pytest.approx(393_216)
    assert all_to_all_bytes(64, 8, 2048, 1, 2.0) == 0.0
    # latency + imbalance x bytes / bandwidth
    assert all_to_all_s(393_216, 300e9, 25e-6, 1.5) == pytest.approx(25e-6 + 1.5 * 393_216 / 300e9)
    assert all_to_all_s(0.0, 300e9, 25e-6) == 0.0
    with pytest.raises(ConfigError, match="imbalance"):
        all_to_all_s(1.0, 1.0, 0.0, 0.5)


def test_mla_formulas() -> None:
    """DeepSeek-V3: latent 512 + rope 64 = 576 elements a token and layer (1,152 bytes in bf16);
    absorbed decode 2 * 128 * (2 * 512 + 64) FLOPs a pair; expanded 2 * 128 * (192 + 128)."""
    assert mla_kv_bytes_per_token_layer(512, 64, 2.0) == 1152
    assert mla_decode_flops_per_pair(128, 512, 64) == 2 * 128 * 1088
    assert mla_prefill_flops_per_pair(128, 128, 64) == 2 * 128 * 320


def test_window_caps_reads() -> None:
    """Four sequences of 1,000 tokens read 4 * 128 tokens in a 128-window layer; short ones all."""
    assert windowed_context(4000, 4, 128) == 512
    assert windowed_context(300, 4, 128) == 300
    assert windowed_pairs(1e6, 2048, 128) == 2048 * 128
    assert math.isclose(windowed_pairs(100.0, 2048, 128), 100.0)


def test_fused_moe_pays_its_fixed_cost_per_active_expert_by_hand() -> None:
    """64 tokens, top-4 of 128 experts, uniform: 128 (1 - (1 - 1/32)^64) = 111.2 experts
    active; at 0.3 us each the memory side gains 33.4 us, and with no compute (the p-norm
    of 0 and the memory side is the memory side) the kernel takes its fixed cost, its bytes
    over HBM and 0.3 us x 111.2."""
    work = expert_work(64, 2880, 2880, (128, 4, 0.0, 16), 2.0)
    active = 128 * (1 - (1 - 4 / 128) ** 64)
    assert work[4] == pytest.approx(active) and active == pytest.approx(111.2, abs=0.05)
    weights, acts, experts = (np.array([v]) for v in work[2:])
    zero = np.zeros(1)
    hbm = 8e12
    for expert_s in (0.0, 0.3e-6):
        t = fused_moe_s(
            (zero, zero, weights, acts, experts), (1e15, hbm), 0.5, 2e-5, 0.1, 2.5, expert_s
        )
        memory = (float(weights[0]) * 0.5 + float(acts[0])) / hbm + expert_s * active
        assert float(t[0]) == pytest.approx(2e-5 + memory)
    halved = expert_work(64, 2880, 2880, (128, 4, 0.0, 16), 2.0, ep=2)
    assert halved[4] == pytest.approx(active / 2)  # expert parallelism: half on each GPU


def _drawn_busiest_rank(
    tokens: int, experts: int, top_k: int, ep: int, skew: float, draws: int = 300
) -> tuple[float, float]:
    """The busiest rank's distinct experts and routed copies over seeded draws of real
    routings: each token picks ``top_k`` distinct experts (by popularity ``i^-skew``)."""
    rng = np.random.default_rng(7)
    per_rank = experts // ep
    weights = np.arange(1, experts + 1, dtype=float) ** -skew
    p = weights / weights.sum()
    distinct = routed = 0.0
    for _ in range(draws):
        if skew == 0.0:
            picks = np.argpartition(rng.random((tokens, experts)), top_k, axis=1)[:, :top_k]
        else:
            picks = np.array([rng.choice(experts, top_k, replace=False, p=p)
                              for _ in range(tokens)])  # fmt: skip
        rank = picks // per_rank
        routed += np.bincount(rank.ravel(), minlength=ep).max()
        distinct += max(len(np.unique(picks[rank == r])) for r in range(ep))
    return distinct / draws, routed / draws


@pytest.mark.parametrize(
    ("tokens", "experts", "top_k", "ep", "skew", "tolerance"),
    [
        (4, 512, 10, 4, 0.0, 0.05),
        (16, 512, 10, 4, 0.0, 0.03),
        (128, 512, 10, 4, 0.0, 0.03),
        (8, 256, 8, 8, 0.0, 0.04),
        (64, 256, 8, 8, 0.0, 0.03),
        (4, 128, 8, 2, 0.0, 0.04),
        (1, 256, 8, 8, 0.0, 0.12),
        (32, 128, 8, 4, 0.6, 0.05),
    ],
)
def test_busiest_rank_load_matches_drawn_routings(
    tokens: int, experts: int, top_k: int, ep: int, skew: float, tolerance: float
) -> None:
    """The closed form of the busiest expert-parallel rank against seeded draws: within a
    few percent from 4 tokens on (a single token's counts are too coarse for the normal
    approximation: ~6-9 % under), with and without skewed popularity; above the mean rank."""
    distinct, routed = busiest_rank_load(tokens, experts, top_k, skew, ep)
    drawn_distinct, drawn_routed = _drawn_busiest_rank(tokens, experts, top_k, ep, skew)
    assert distinct == pytest.approx(drawn_distinct, rel=tolerance)
    assert routed == pytest.approx(drawn_routed, rel=tolerance)
    assert distinct > expected_distinct_experts(tokens, experts, top_k, skew) / ep
    assert routed > tokens * top_k / ep


def test_busiest_rank_load_edges() -> None:
    """One rank is the whole batch; no tokens load nothing; every expert active caps the
    count at the rank's experts; a degree that does not divide the experts is refused."""
    assert busiest_rank_load(16, 64, 4, 0.0, 1) == (expected_distinct_experts(16, 64, 4), 64.0)
    assert busiest_rank_load(0, 64, 4, 0.0, 8) == (0.0, 0.0)
    assert busiest_rank_load(4096, 64, 4, 0.0, 8)[0] == pytest.approx(8.0)
    assert expected_max_of_normals(1) == pytest.approx(0.0, abs=1e-9)
    assert expected_max_of_normals(2) == pytest.approx(1 / math.sqrt(math.pi), rel=1e-4)
    with pytest.raises(ConfigError, match="ep must divide"):
        busiest_rank_load(4, 60, 4, 0.0, 8)
