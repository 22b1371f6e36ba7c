"""benchmarks/kv_offload_published.py: the published setups' workloads are built as their
sources describe, and a CPU tier moves TTFT in the published direction."""

from __future__ import annotations

from types import ModuleType

from tests.conftest import benchmark_script


def _script() -> ModuleType:
    return benchmark_script("kv_offload_published")


def test_multi_round_qa_users_take_turns_and_extend_their_own_context() -> None:
    """User i mod N, round i // N: each round's blocks start with the user's previous
    round's; the system prompt's whole blocks are every user's, the rest their own."""
    s = _script()
    req = s.multi_round_qa(users=3, rounds=2, qps=1.0, seed=0)
    ids = [list(b) for b in req.block_ids]
    assert list(req.prompt_tokens) == [21100] * 3 + [21300] * 3
    assert all(ids[i + 3][: len(ids[i])] == ids[i] for i in range(3))
    shared = s.SYSTEM // s.CHUNK  # 3 whole 256-token blocks
    assert ids[0][:shared] == ids[1][:shared] == ids[2][:shared]
    assert not set(ids[0][shared:]) & set(ids[1][shared:])
    assert list(req.output_tokens) == [s.ANSWER] * 6


def test_a_repeat_after_eviction_loads_from_the_cpu_tier_and_starts_sooner() -> None:
    """The repeated 8k prompt: recomputed without a tier, loaded from CPU with one (all but
    its last block), its first token several times sooner."""
    s = _script()
    requests = s.repeat_after_eviction(8000, num_fillers=6, gap_s=60.0)
    plain, plain_summary = s.ttfts(requests, 0)
    tiered, summary = s.ttfts(requests, 512.0)
    assert (plain_summary.get("kv_tiers") or {}).get("cpu_hit_tokens", 0) == 0
    assert summary["kv_tiers"]["cpu_hit_tokens"] >= 8000 - s.CHUNK
    assert plain[-1] > 3 * tiered[-1]
    assert plain[0] == tiered[0]  # the first, cold request is the same either way


def test_multi_round_qa_beyond_the_gpu_pool_gains_from_a_cpu_tier() -> None:
    """40 users' 21k-token contexts overflow the H100's KV pool: the tier finds most of the
    second round cached, GPU alone almost nothing, and mean TTFT falls."""
    s = _script()
    requests = s.multi_round_qa(users=40, rounds=2, qps=0.5, seed=1)
    plain, plain_summary = s.ttfts(requests, 0)
    tiered, summary = s.ttfts(requests, 160.0)
    assert plain_summary["prefix_cache"]["hit_rate"] < 0.1
    assert summary["prefix_cache"]["hit_rate"] > 0.4
    assert tiered.mean() < plain.mean() / 1.5
