"""Prefix caching in the continuous engine: hits, eviction, refcounts, KV conservation."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.engine.test_engine_continuous import Affine, drive

from sincere.core.prefix import chain_keys
from sincere.core.records import RecordArrays
from sincere.core.request import RequestArrays
from sincere.engine.continuous import ContinuousEngine, EngineLimits
from sincere.engine.prefix_cache import PrefixCache
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
    ref = cache.cached()
    free = cache.free_order()
    assert all(r >= 0 for r in ref.values())
    assert len(free) == len(set(free)) == cache.num_free
    assert all(ref[k] == 0 for k in free)
    assert all(k in set(free) for k, r in ref.items() if r == 0)
    holders: dict[tuple[int, int, int], int] = {}
    for i, keys in cache.holdings().items():
        assert i in st_.pre or i in st_.offset  # only running sequences hold blocks
        for k in keys:
            assert ref.get(k, 0) > 0  # a block in use is never evicted
            holders[k] = holders.get(k, 0) + 1
    assert holders == {k: r for k, r in ref.items() if r > 0}
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
    arrivals, nxt = req.arrival_at, 0
    while True:  # drive(), counting the prompt tokens of every piece of work that completes
        at = engine.next_event_at()
        if nxt < len(arrivals) and (at is None or arrivals[nxt] <= at):
            engine.add(nxt, float(arrivals[nxt]))
            nxt += 1
        elif at is not None:
            run = engine._run
            if run is not None and run.end_at <= at:
                for i, c in run.chunks:
                    if engine.records.num_preemptions[i] == 0:
                        computed[i] = computed.get(i, 0) + c
            engine.advance(at)
        else:
            break
        _check_cache(engine)
    rec = engine.records
    cache = engine.state.cache
    assert cache is not None and cache.shared == 0 and not cache.held
    assert all(r == 0 for r in cache.cached().values())
    for i in range(len(req)):
        if rec.rejected[i] or rec.num_preemptions[i]:
            continue
        assert rec.cached_tokens[i] + computed[i] == prompts[i]
    again = _engine(req, num_kv_blocks=blocks, block_size=16, max_num_batched_tokens=256)
    drive(again)
    assert np.array_equal(again.records.finished_at, rec.finished_at, equal_nan=True)
    assert np.array_equal(again.records.cached_tokens, rec.cached_tokens)


class _PerBlock:
    """Reference model: one dict entry per engine block, named (group size, key, block)."""

    def __init__(self, block: int) -> None:
        self.block = block
        self.ref: dict[tuple[int, int, int], int] = {}
        self.free: dict[tuple[int, int, int], None] = {}  # insertion order = LRU order
        self.held: dict[int, list[tuple[int, int, int]]] = {}
        self.keys: dict[int, list[tuple[int, int, int]]] = {}
        self.progress: dict[int, int] = {}
        self.shared = self.evictions = 0

    def add(self, i: int, cache: PrefixCache) -> None:
        p = cache.prompts[i]
        g = p.group
        self.keys[i] = [(g, p.keys[b // g], b % g) for b in range(p.num_blocks)]

    def match(self, i: int, prefill_len: int) -> tuple[int, int]:
        hit = shared = 0
        for key in self.keys.get(i, []):
            if hit >= (prefill_len - 1) // self.block or key not in self.ref:
                break
            hit += 1
            shared += self.ref[key] > 0
        return hit, shared

    def acquire(self, i: int, hit: int) -> int:
        if i not in self.keys:
            return 0
        self.held[i] = self.keys[i][:hit]
        self.progress[i] = hit
        new = 0
        for key in self.held[i]:
            if self.ref[key] == 0:
                del self.free[key]
            else:
                new += 1
            self.ref[key] += 1
        self.shared += new
        return new

    def register(self, i: int, computed: int) -> None:
        if i not in self.keys:
            return
        upto = min(computed // self.block, len(self.keys[i]))
        for key in self.keys[i][self.progress[i] : upto]:
            if key not in self.ref:
                self.ref[key] = 1
                self.held[i].append(key)
        self.progress[i] = max(self.progress[i], upto)

    def release(self, i: int) -> int:
        unshared = 0
        for key in reversed(self.held.pop(i, [])):
            self.ref[key] -= 1
            if self.ref[key] == 0:
                self.free[key] = None
            else:
                unshared += 1
        self.progress.pop(i, None)
        self.shared -= unshared
        return unshared

    def evict(self, room: int) -> None:
        while len(self.free) > max(room, 0):
            key = next(iter(self.free))
            del self.free[key], self.ref[key]
            self.evictions += 1


@settings(max_examples=60, deadline=None)
@given(
    prompts=st.lists(
        st.tuples(st.lists(st.integers(0, 2), min_size=1, max_size=5), st.integers(1, 320)),
        min_size=2,
        max_size=6,
    ),
    seed=st.integers(0, 2**32 - 1),
    block_tokens=st.sampled_from([16, 64, 32]),
)
def test_grouped_cache_matches_a_per_block_model(
    prompts: list[tuple[list[int], int]], seed: int, block_tokens: int
) -> None:
    """The grouped, run-based cache answers exactly as one dict entry per engine block would:
    the same hits, shared blocks, refcounts, holdings, evictions and LRU free order."""
    _agrees_with_per_block_model(prompts, seed, block_tokens, num_ops=300)


def _agrees_with_per_block_model(
    prompts: list[tuple[list[int], int]], seed: int, block_tokens: int, num_ops: int
) -> None:
    """Random admissions, registrations, releases and evictions of ``prompts`` (ids,
    length) give the same answers from the cache and from :class:`_PerBlock`."""
    rng = np.random.default_rng(seed)
    ops = [
        ("arfe"[rng.integers(4)], int(rng.integers(len(prompts))), int(rng.integers(321)))
        for _ in range(num_ops)
    ]
    cache, model = PrefixCache(16), _PerBlock(16)
    for i, (ids, length) in enumerate(prompts):
        cache.add(i, list(chain_keys(ids)), block_tokens, length)
        model.add(i, cache)
    running: set[int] = set()
    for op, i, n in ops:
        length = prompts[i][1]
        if op == "a" and i not in running:  # admit: hit its cached prefix
            hit, shared = cache.match(i, length)
            assert (hit, shared) == model.match(i, length)
            assert cache.acquire(i, hit, length) == model.acquire(i, hit)
            running.add(i)
        elif op == "r" and i in running:  # a prefill chunk completed
            cache.register(i, min(n, length))
            model.register(i, min(n, length))
        elif op == "f" and i in running:  # finished or preempted
            assert cache.release(i) == model.release(i)
            running.discard(i)
        elif op == "e":
            cache.evict(n % 12)
            model.evict(n % 12)
        assert cache.cached() == model.ref
        assert cache.free_order() == list(model.free)
        assert cache.holdings() == {k: v for k, v in model.held.items()}
        assert cache.shared == model.shared and cache.num_evictions == model.evictions


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_conversation_turns_match_a_per_block_model(seed: int) -> None:
    """Sessions as the prefix-heavy workloads have them: shared system prompts, each turn
    the previous turn's prompt and more, 16-token blocks (one-block groups, whose slots a
    match reads run by run), under eviction pressure: the same answers as one dict entry
    per engine block."""
    rng = np.random.default_rng(seed)
    prompts: list[tuple[list[int], int]] = []
    for session in range(8):
        ids = [int(rng.integers(3)) for _ in range(int(rng.integers(1, 4)))]  # system prompt
        for _ in range(int(rng.integers(1, 5))):  # turns
            ids = ids + [100 * session + len(ids) for _ in range(int(rng.integers(1, 4)))]
            prompts.append((ids, len(ids) * 16 - int(rng.integers(0, 16))))
    _agrees_with_per_block_model(prompts, seed, 16, num_ops=1500)
