"""Prefix caching in the continuous engine: hits, eviction, refcounts, KV conservation."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.engine.test_engine_continuous import Affine, drive

from sincere.core.prefix import engine_block_keys
from sincere.core.records import RecordArrays
from sincere.core.request import RequestArrays
from sincere.engine.continuous import ContinuousEngine, EngineLimits
from sincere.engine.prefix_cache import block_keys
from sincere.policy.schedulers import make_scheduler


def _requests(
    prompts: Sequence[int], ids: Sequence[Sequence[int]], outputs: Sequence[int], gap_s: float
) -> RequestArrays:
    n = len(prompts)
    return RequestArrays.build(
        arrival_at=[gap_s * k for k in range(n)],
        prompt_tokens=list(prompts),
        output_tokens=list(outputs),
        models=["m"],
        block_ids=[list(b) for b in ids],
        block_tokens=64,
    )


def _engine(req: RequestArrays, caching: bool = True, **lim: int) -> ContinuousEngine:
    limits = EngineLimits(**{"num_kv_blocks": 1 << 20, **lim}, enable_prefix_caching=caching)
    records = RecordArrays.empty(len(req), ["e0"])
    sched = make_scheduler("fcfs", {}, predictor=Affine())
    return ContinuousEngine("e0", req, records, 0, Affine(), sched, limits)


def test_vectorised_keys_equal_the_shared_definition() -> None:
    """block_keys gives exactly core.prefix.engine_block_keys for smaller and larger blocks."""
    ids = [5, 9, 9, 1, 77]
    for engine_block in (16, 32, 64, 128):
        for prompt in (1, 63, 64, 200, 320, 400):
            want = engine_block_keys(
                ids, block_tokens=64, engine_block_tokens=engine_block, prompt_tokens=prompt
            )
            assert tuple(block_keys(ids, 64, engine_block, prompt)) == want


def test_second_request_with_the_same_prefix_hits_and_starts_sooner() -> None:
    """A later prompt sharing 3 of its 4 blocks finds 192 tokens cached and gets a faster TTFT."""
    req = _requests([256, 256, 256], [[1, 2, 3, 4], [1, 2, 3, 9], [7, 8, 9, 10]], [4, 4, 4], 1.0)
    engine = _engine(req)
    drive(engine)
    rec = engine.records
    assert rec.cached_tokens.tolist() == [0, 192, 0]
    ttft = rec.first_token_at - req.arrival_at
    assert ttft[1] < ttft[0] and ttft[1] < ttft[2]
    stats = engine.stats()
    assert stats.prefix_cache_hits == 192 and stats.prefix_cache_queries == 768
    load = engine.load()
    assert load.prefix_cache_hits == 192 and load.prefix_cache_queries == 768


def test_a_whole_repeated_prompt_still_computes_its_last_token() -> None:
    """An identical prompt hits all but its last block (one token must be computed)."""
    req = _requests([256, 256], [[1, 2, 3, 4], [1, 2, 3, 4]], [2, 2], 1.0)
    engine = _engine(req)
    drive(engine)
    assert engine.records.cached_tokens.tolist() == [0, 240]


def test_caching_off_never_hits() -> None:
    """enable_prefix_caching false: no cached tokens and no counters on the load record."""
    req = _requests([256, 256], [[1, 2, 3, 4], [1, 2, 3, 4]], [2, 2], 1.0)
    engine = _engine(req, caching=False)
    drive(engine)
    assert engine.records.cached_tokens.tolist() == [0, 0]
    assert engine.load().prefix_cache_hits is None


def test_a_small_pool_evicts_the_oldest_free_blocks() -> None:
    """A 20-block pool: the second prompt evicts the first one's tail first, so the first
    prompt's repeat finds only its 4 head blocks; a roomy pool keeps all of them."""
    ids = [[1, 2, 3, 4], [5, 6, 7, 8], [1, 2, 3, 4]]
    req = _requests([256, 256, 256], ids, [2, 2, 2], 1.0)
    engine = _engine(req, num_kv_blocks=20, watermark=0)
    drive(engine)
    assert engine.records.cached_tokens.tolist() == [0, 0, 64]
    assert engine.stats().prefix_cache_evictions > 0
    roomy = _engine(req, num_kv_blocks=64, watermark=0)
    drive(roomy)
    assert roomy.records.cached_tokens.tolist() == [0, 0, 240]


def _check_cache(engine: ContinuousEngine) -> None:
    """Refcounts, free list, sharing and the pool agree with each other."""
    st_ = engine.state
    cache = st_.cache
    assert cache is not None
    assert all(r >= 0 for r in cache.ref.values())
    assert all(cache.ref[k] == 0 for k in cache.free)
    assert all(k in cache.free for k, r in cache.ref.items() if r == 0)
    holders: dict[int, int] = {}
    for i, keys in cache.held.items():
        assert i in st_.pre or i in st_.offset  # only running sequences hold blocks
        for k in keys:
            assert cache.ref.get(k, 0) > 0  # a block in use is never evicted
            holders[k] = holders.get(k, 0) + 1
    assert holders == {k: r for k, r in cache.ref.items() if r > 0}
    assert cache.shared == sum(r - 1 for r in holders.values())
    used = st_.used_blocks
    assert 0 <= used <= st_.num_blocks
    distinct = sum(-(-st_.prefill_len[i] // st_.block) for i in st_.pre) + st_.dec.total(st_.step)
    assert used == distinct - cache.shared  # KV conservation


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=st.lists(
        st.tuples(
            st.integers(1, 600),
            st.lists(st.integers(0, 3), min_size=0, max_size=10),
            st.integers(1, 40),
        ),
        min_size=1,
        max_size=25,
    ),
    blocks=st.integers(40, 400),
    gap=st.sampled_from([0.0, 0.01, 0.2]),
)
def test_cache_invariants_hold_under_pressure(
    data: list[tuple[int, list[int], int]], blocks: int, gap: float
) -> None:
    """Refcounts never negative, used blocks never evicted, KV conserved, cached + computed
    = prompt for every request prefilled once, and the same inputs give the same records."""
    prompts = [p for p, _, _ in data]
    ids = [tuple(b[: -(-p // 64)]) for p, b, _ in data]
    outs = [o for _, _, o in data]
    req = _requests(prompts, ids, outs, gap)
    engine = _engine(req, num_kv_blocks=blocks, block_size=16, max_num_batched_tokens=256)
    computed: dict[int, int] = {}
    prefilled = engine.state.prefilled

    def counting(chunks: Sequence[tuple[int, int]], end: float) -> None:
        for i, c in chunks:
            if engine.records.num_preemptions[i] == 0:
                computed[i] = computed.get(i, 0) + c
        prefilled(chunks, end)

    engine.state.prefilled = counting  # type: ignore[method-assign]
    drive(engine, lambda: _check_cache(engine))
    rec = engine.records
    cache = engine.state.cache
    assert cache is not None and cache.shared == 0 and not cache.held
    assert all(r == 0 for r in cache.ref.values())
    for i in range(len(req)):
        if rec.rejected[i] or rec.num_preemptions[i]:
            continue
        assert rec.cached_tokens[i] + computed[i] == prompts[i]
    again = _engine(req, num_kv_blocks=blocks, block_size=16, max_num_batched_tokens=256)
    drive(again)
    assert np.array_equal(again.records.finished_at, rec.finished_at, equal_nan=True)
    assert np.array_equal(again.records.cached_tokens, rec.cached_tokens)
