"""KV offload tiers below the prefix cache: LRU capacity, disk overflow, exact load-back time."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from tests.engine.test_engine_continuous import Affine, drive
from tests.engine.test_prefix_cache import _check_cache, _requests

from sincere.catalog import get_model
from sincere.core.errors import ConfigError
from sincere.core.records import RecordArrays
from sincere.core.request import RequestArrays
from sincere.engine.build import build_engine
from sincere.engine.continuous import ContinuousEngine, EngineLimits
from sincere.engine.instance import InstanceInfo
from sincere.engine.kv_tiers import KvTiers, Name, TierLimits
from sincere.engine.spec import DeploymentSpec
from sincere.engine.summary import summarize
from sincere.policy.schedulers import make_scheduler

MB = 1e6  # bytes of one engine block in the engine tests
FIRST = 0.005 + 1e-4 * 16  # Affine's iteration prefilling the one uncached block of a hit


def _names(*ks: int) -> list[Name]:
    return [(1, k, 0) for k in ks]


def test_the_cpu_tier_keeps_the_most_recently_evicted_blocks_up_to_its_capacity() -> None:
    """Five blocks into a 3-block CPU tier: the first two are dropped; storing a held block
    again refreshes it instead of writing it twice."""
    tiers = KvTiers(TierLimits(MB, cpu_blocks=3, cpu_link_gbps=1.0), block_tokens=16)
    tiers.offload(_names(1, 2, 3, 4, 5))
    assert list(tiers.cpu) == _names(3, 4, 5)
    tiers.offload(_names(3, 6))  # 3 refreshed (no bytes), 6 written, 4 falls off
    assert list(tiers.cpu) == _names(5, 3, 6)
    stats = tiers.stats()
    assert stats.gpu_to_cpu_bytes == 6 * MB
    assert stats.num_dropped_blocks == 3


def test_a_full_cpu_tier_spills_its_oldest_blocks_to_disk_which_drops_its_own_oldest() -> None:
    """CPU 2 blocks, disk 2: of five blocks, the newest two stay in CPU memory, the next two
    go to disk, the oldest is dropped."""
    limits = TierLimits(MB, cpu_blocks=2, cpu_link_gbps=1.0, disk_blocks=2, disk_gbps=0.5)
    tiers = KvTiers(limits, block_tokens=16)
    tiers.offload(_names(1, 2, 3, 4, 5))
    assert list(tiers.cpu) == _names(4, 5)
    assert list(tiers.disk) == _names(2, 3)
    stats = tiers.stats()
    assert stats.cpu_to_disk_bytes == 3 * MB and stats.num_dropped_blocks == 1


def test_a_load_moves_blocks_up_and_takes_their_bytes_over_each_tier_link() -> None:
    """Loading 2 CPU blocks (1 GB/s) and 2 disk blocks (0.5 GB/s) of 1 MB: 2 ms + 4 ms; the
    blocks leave their tiers; the run of hits stops at the first block held nowhere."""
    limits = TierLimits(MB, cpu_blocks=2, cpu_link_gbps=1.0, disk_blocks=2, disk_gbps=0.5)
    tiers = KvTiers(limits, block_tokens=16)
    tiers.offload(_names(2, 3, 4, 5))
    assert tiers.count(_names(2, 3, 4, 5, 1, 6)) == 4
    assert tiers.count(_names(1, 2)) == 0
    tiers.load(_names(2, 3, 4, 5))
    assert not tiers.cpu and not tiers.disk
    stats = tiers.stats()
    assert stats.cpu_to_gpu_bytes == 2 * MB and stats.disk_to_gpu_bytes == 2 * MB
    assert stats.cpu_hit_tokens == 32 and stats.disk_hit_tokens == 32
    assert stats.load_s == pytest.approx(2 * MB / 1e9 + 2 * MB / 0.5e9)
    assert tiers.take_delay_s(0.001) == pytest.approx(0.006)  # not overlapped: all of it
    assert tiers.take_delay_s(0.001) == 0.0  # taken once


def test_overlapped_loads_delay_an_iteration_only_by_what_outlasts_its_compute() -> None:
    """overlap: a 6 ms load beside 4 ms of compute adds 2 ms; beside 10 ms, nothing."""
    limits = TierLimits(MB, cpu_blocks=8, cpu_link_gbps=1.0, overlap=True)
    tiers = KvTiers(limits, block_tokens=16)
    tiers.offload(_names(1, 2, 3, 4, 5, 6))
    tiers.load(_names(1, 2, 3, 4, 5, 6))
    assert tiers.take_delay_s(0.004) == pytest.approx(0.002)
    tiers.offload(_names(1, 2, 3, 4, 5, 6))
    tiers.load(_names(1, 2, 3, 4, 5, 6))
    assert tiers.take_delay_s(0.010) == 0.0


# ------------------------------------------------------------------------- in the engine

IDS = [[1, 2, 3, 4], [5, 6, 7, 8], [1, 2, 3, 4]]  # 64-token content blocks, 4 engine blocks each


def _engine(req: RequestArrays, tiers: TierLimits | None, **lim: int) -> ContinuousEngine:
    limits = EngineLimits(**{"num_kv_blocks": 20, "watermark": 0, **lim}, kv_tiers=tiers)
    records = RecordArrays.empty(len(req), ["e0"])
    sched = make_scheduler("fcfs", {}, predictor=Affine())
    return ContinuousEngine("e0", req, records, 0, Affine(), sched, limits)


def _repeat() -> RequestArrays:
    """Three 256-token prompts (16 engine blocks), the third the first's again, 1 s apart."""
    return _requests([256, 256, 256], IDS, [2, 2, 2], 1.0)


def test_a_tier_hit_loads_back_exactly_its_blocks_bytes_over_the_link() -> None:
    """A 20-block pool keeps 4 of the first prompt's blocks (its tail went first); with a
    CPU tier its repeat also finds blocks 4-14 there (15 = all but the last token): 11
    blocks of 1 MB at 1 GB/s, 11 ms, added to the one iteration that prefills the rest."""
    req = _repeat()
    gpu_only = _engine(req, None)
    drive(gpu_only)
    assert gpu_only.records.cached_tokens.tolist() == [0, 0, 64]
    engine = _engine(req, TierLimits(MB, cpu_blocks=100, cpu_link_gbps=1.0))
    drive(engine)
    rec = engine.records
    assert rec.cached_tokens.tolist() == [0, 0, 240]
    stats = engine.stats()
    tiers = stats.kv_tiers
    assert tiers is not None
    assert stats.prefix_cache_hits == 64  # vLLM's counter: the GPU's own hits
    assert tiers.cpu_hit_tokens == 11 * 16 and tiers.external_hit_tokens == 176
    assert tiers.cpu_to_gpu_bytes == 11 * MB
    assert tiers.load_s == pytest.approx(11 * MB / 1e9)
    assert tiers.external_query_tokens == 256 + 256 + (256 - 64)
    assert rec.first_token_at[2] - req.arrival_at[2] == pytest.approx(FIRST + 0.011)
    assert engine.state.cache is not None
    assert len(engine.state.cache.cached()) >= 15  # the loaded blocks are cached on the GPU


def test_overlapped_load_lasts_as_long_as_the_longer_of_load_and_compute() -> None:
    """overlap: the repeat's first token comes after max(6.6 ms compute, 11 ms load)."""
    req = _repeat()
    engine = _engine(req, TierLimits(MB, cpu_blocks=100, cpu_link_gbps=1.0, overlap=True))
    drive(engine)
    assert engine.records.first_token_at[2] - req.arrival_at[2] == pytest.approx(0.011)
    tiers = engine.stats().kv_tiers
    assert tiers is not None and tiers.delay_s == pytest.approx(0.011 - FIRST)


def test_a_small_cpu_tier_keeps_the_head_side_blocks_evicted_last() -> None:
    """The first prompt's blocks 15 down to 4 are evicted tail first, so a 5-block CPU tier
    keeps blocks 4-8 (later evictions of the second prompt drop nothing it needs before the
    repeat is matched): the repeat hits 4 GPU + 5 CPU blocks."""
    req = _repeat()
    engine = _engine(req, TierLimits(MB, cpu_blocks=5, cpu_link_gbps=1.0))
    drive(engine)
    assert engine.records.cached_tokens.tolist() == [0, 0, 9 * 16]
    tiers = engine.stats().kv_tiers
    assert tiers is not None and tiers.cpu_to_gpu_bytes == 5 * MB


def test_blocks_past_the_cpu_tier_come_back_from_disk_over_its_own_link() -> None:
    """CPU 5 blocks, disk 100 at 0.5 GB/s: the repeat finds blocks 4-8 in CPU memory and
    9-14 on disk: 5 MB at 1 GB/s + 6 MB at 0.5 GB/s = 17 ms before its first token."""
    req = _repeat()
    limits = TierLimits(MB, cpu_blocks=5, cpu_link_gbps=1.0, disk_blocks=100, disk_gbps=0.5)
    engine = _engine(req, limits)
    drive(engine)
    assert engine.records.cached_tokens.tolist() == [0, 0, 240]
    tiers = engine.stats().kv_tiers
    assert tiers is not None
    assert tiers.cpu_hit_tokens == 5 * 16 and tiers.disk_hit_tokens == 6 * 16
    assert tiers.load_s == pytest.approx(5 * MB / 1e9 + 6 * MB / 0.5e9)
    ttft = engine.records.first_token_at[2] - req.arrival_at[2]
    assert ttft == pytest.approx(FIRST + 0.017)


def test_each_request_reports_the_tokens_its_admission_loaded_from_each_tier() -> None:
    """The repeat of the disk test: 5 blocks (80 tokens) from CPU memory, 6 (96) from disk,
    taken once; the others loaded nothing. A live driver's engine keeps them until taken
    (``track_first_loads``); a simulator's keeps none."""
    limits = TierLimits(MB, cpu_blocks=5, cpu_link_gbps=1.0, disk_blocks=100, disk_gbps=0.5)
    engine = _engine(_repeat(), limits)
    cache = engine.state.cache
    assert cache is not None and cache.tiers is not None
    cache.tiers.track_first_loads()
    drive(engine)
    assert [engine.take_tier_loaded_tokens(i) for i in range(3)] == [(0, 0), (0, 0), (80, 96)]
    assert engine.take_tier_loaded_tokens(2) == (0, 0)
    dropped = _engine(_repeat(), limits)
    drive(dropped)
    assert dropped.take_tier_loaded_tokens(2) == (0, 0)
    assert _engine(_repeat(), None).take_tier_loaded_tokens(2) == (0, 0)


def test_tiers_that_never_receive_a_block_change_nothing() -> None:
    """A roomy pool evicts nothing: with tiers the records are those without, bit for bit,
    and a summary gains a kv_tiers block only when an engine has tiers."""
    req = _repeat()
    plain = _engine(req, None, num_kv_blocks=1 << 20)
    tiered = _engine(req, TierLimits(MB, cpu_blocks=10, cpu_link_gbps=1.0), num_kv_blocks=1 << 20)
    drive(plain)
    drive(tiered)
    for name in ("first_token_at", "finished_at", "cached_tokens"):
        assert np.array_equal(getattr(plain.records, name), getattr(tiered.records, name))
    end = float(np.nanmax(plain.records.finished_at))
    gaps = plain.state.gaps
    info = [InstanceInfo("e0", ("m",), "unknown")]
    without = summarize(req, plain.records, end, info, [plain.stats()], gaps)
    with_tiers = summarize(req, tiered.records, end, info, [tiered.stats()], gaps)
    assert "kv_tiers" not in without
    assert with_tiers["kv_tiers"]["gpu_to_cpu_bytes"] == 0.0


def test_a_run_with_tiers_is_deterministic() -> None:
    """The same requests and tiers give the same records and counters."""
    req = _requests([300, 500, 300, 700, 500], [[1, 2, 3], [4, 5], [1, 2], [4, 5, 6], [9]],
                    [5, 3, 8, 2, 4], 0.01)  # fmt: skip
    limits = TierLimits(MB, cpu_blocks=6, cpu_link_gbps=2.0, disk_blocks=4, disk_gbps=0.5)
    runs = []
    for _ in range(2):
        engine = _engine(req, limits, num_kv_blocks=60)
        drive(engine)
        runs.append(engine)
    a, b = runs
    assert np.array_equal(a.records.first_token_at, b.records.first_token_at)
    assert np.array_equal(a.records.cached_tokens, b.records.cached_tokens)
    assert a.stats() == b.stats()


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=st.lists(
        st.tuples(
            st.integers(1, 600),
            st.lists(st.integers(0, 3), min_size=0, max_size=10),
            st.integers(1, 40),
        ),
        min_size=1,
        max_size=20,
    ),
    blocks=st.integers(40, 200),
    cpu=st.integers(1, 30),
    disk=st.integers(0, 30),
)
def test_cache_invariants_hold_with_tiers(
    data: list[tuple[int, list[int], int]], blocks: int, cpu: int, disk: int
) -> None:
    """With tiers under pressure: refcounts, free list and KV conservation still hold, the
    tiers never hold more than their capacity, and no request is lost."""
    req = _requests([p for p, _, _ in data], [tuple(b[: -(-p // 64)]) for p, b, _ in data],
                    [o for _, _, o in data], 0.01)  # fmt: skip
    limits = TierLimits(MB, cpu_blocks=cpu, cpu_link_gbps=1.0, disk_blocks=disk, disk_gbps=0.5)
    engine = _engine(req, limits, num_kv_blocks=blocks, max_num_batched_tokens=256)
    cache = engine.state.cache
    assert cache is not None and cache.tiers is not None
    tiers = cache.tiers

    def check() -> None:
        _check_cache(engine)
        assert len(tiers.cpu) <= cpu and len(tiers.disk) <= disk

    drive(engine, check)
    rec = engine.records
    assert all(rec.rejected[i] or not np.isnan(rec.finished_at[i]) for i in range(len(req)))


# ------------------------------------------------------------------------- configuration


def _arrays() -> tuple[RequestArrays, RecordArrays]:
    req = RequestArrays.build([0.0], [100], [8], models=("llama-3.1-8b",))
    return req, RecordArrays.empty(1, ["e0"])


def test_kv_offload_sizes_the_tiers_in_blocks_of_the_models_kv() -> None:
    """Llama-3.1-8B keeps 128 KiB of KV per token: a 16-token block is 2 MiB, so 1 GiB holds
    512 blocks; the CPU link defaults to the accelerator's host link (H100: 64 GB/s)."""
    per_token = get_model("llama-3.1-8b").kv_bytes_per_token("fp16")
    assert per_token == 128 * 1024
    engine = {"kv_offload": {"cpu_gib": 4, "disk_gib": 2, "disk_gbps": 6}}
    spec = DeploymentSpec(model="llama-3.1-8b", accelerator="H100-SXM", engine=engine)
    built = build_engine(spec, "e0", *_arrays(), 0).engine
    assert isinstance(built, ContinuousEngine)
    limits = built.limits.kv_tiers
    assert limits == TierLimits(16 * per_token, 4 * 512, 64.0, 2 * 512, 6.0, False)
    assert limits.load_s(512, 0) == pytest.approx(2**30 / 64e9)


def test_offload_is_off_by_default() -> None:
    """No kv_offload block: no tiers."""
    spec = DeploymentSpec(model="llama-3.1-8b")
    built = build_engine(spec, "e0", *_arrays(), 0).engine
    assert isinstance(built, ContinuousEngine) and built.limits.kv_tiers is None
    assert built.stats().kv_tiers is None


@pytest.mark.parametrize(
    ("engine", "message"),
    [
        ({"kv_offload": {"cpu_gib": 0}}, "greater than 0"),
        ({"kv_offload": {"cpu_gib": 8, "cpu_link_gbps": -1}}, "greater than 0"),
        ({"kv_offload": {"cpu_gib": 8, "disk_gib": 100}}, "disk_gib is 100.0 but disk_gbps"),
        ({"kv_offload": {"cpu_gib": 8}, "enable_prefix_caching": False}, "caching on"),
        ({"kv_offload": {"cpu_gib": 8, "gpu_gib": 1}}, "Extra inputs"),
    ],
)
def test_bad_offload_settings_are_refused_with_the_value(
    engine: dict[str, object], message: str
) -> None:
    """Each wrong setting is refused naming what is wrong."""
    with pytest.raises(ValidationError, match=message):
        DeploymentSpec(model="llama-3.1-8b", engine=engine)


def test_a_cpu_tier_too_small_for_one_block_names_the_smallest_size() -> None:
    """1 MiB cannot hold one 2 MiB block: the error says where, the value and the minimum."""
    spec = DeploymentSpec(model="llama-3.1-8b", engine={"kv_offload": {"cpu_gib": 2**-10}})
    with pytest.raises(ConfigError, match=r"inst.engine.kv_offload: kv_offload.cpu_gib holds no"):
        build_engine(spec, "e0", *_arrays(), 0, where="inst")
    with pytest.raises(ConfigError, match=r"allowed: >= 0.001953 GiB"):
        build_engine(spec, "e0", *_arrays(), 0, where="inst")
