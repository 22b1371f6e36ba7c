"""Engine schedulers: FCFS, priority, EDF, SRPF and Sarathi plans on hand-made states."""

from __future__ import annotations

import pytest

from sincere.core.errors import ConfigError
from sincere.core.request import RequestArrays, Tier
from sincere.policy.schedulers import SCHEDULERS, StaticView, make_scheduler
from sincere.policy.schedulers.orders import Sarathi, SarathiParams

TIERS = (Tier("fast", ttft_s=2.0), Tier("slow", ttlt_s=100.0, tbt_s=0.5))


def _requests() -> RequestArrays:
    # arrivals 0..4; prompts vary; tier 1 (TTLT) for some; priorities reversed
    return RequestArrays.build(
        [0.0, 1.0, 2.0, 3.0, 4.0],
        [400, 100, 300, 50, 200],
        [10, 10, 10, 10, 10],
        tiers=TIERS,
        tier=[1, 0, 1, 0, 0],
        priority=[4, 3, 2, 1, 0],
        max_tokens=[101, 11, 21, 11, 11],
    )


def _admitted(name: str, **params: object) -> tuple[int, ...]:
    req = _requests()
    sched = make_scheduler(name, dict(params))
    view = StaticView(req, sched, waiting_ix=[4, 2, 0, 3, 1], max_num_batched_tokens=10_000)
    return sched.plan(view, now=5.0).admit


def test_fcfs_admits_in_arrival_order() -> None:
    """FCFS admits waiting requests by arrival time."""
    assert _admitted("fcfs") == (0, 1, 2, 3, 4)


def test_priority_admits_smaller_priority_first() -> None:
    """The priority policy orders by the request's priority value, smaller first."""
    assert _admitted("priority") == (4, 3, 2, 1, 0)


def test_srpf_admits_shortest_prompt_first() -> None:
    """SRPF orders by remaining prefill tokens."""
    assert _admitted("srpf") == (3, 1, 4, 2, 0)


def test_edf_orders_by_converted_ttft_deadline() -> None:
    """EDF uses TTFT deadlines, TTLT tiers converted with max_tokens-1 decode tokens."""
    # deadlines: r0 = 0 + 100 - 100*0.5 = 50; r1 = 3; r2 = 2 + 100 - 20*0.5 = 92;
    # r3 = 5; r4 = 6
    assert _admitted("edf") == (1, 3, 4, 0, 2)


def test_edf_fixed_prediction_changes_the_conversion() -> None:
    """A fixed predicted output length replaces max_tokens in the TTLT conversion."""
    # with 181 predicted tokens: r0 = 100 - 90 = 10, r2 = 2 + 10 = 12
    assert _admitted("edf", predicted_output_tokens=181) == (1, 3, 4, 0, 2)
    # with 200: r0 = 0.5, r2 = 2.5, ahead of r1 (3)
    assert _admitted("edf", predicted_output_tokens=200) == (0, 2, 1, 3, 4)


def test_head_of_line_blocking_stops_admission() -> None:
    """The first request whose blocks do not fit stops admission (no skipping)."""
    req = _requests()
    sched = make_scheduler("fcfs")
    # blocks: r0 needs 25, r1 7; only 20 free -> nothing admitted although r1 would fit
    view = StaticView(req, sched, waiting_ix=[0, 1], free_blocks=20)
    plan = sched.plan(view, now=5.0)
    assert plan.admit == () and plan.chunks == ()


def test_watermark_is_kept_free() -> None:
    """Admissions leave the watermark's blocks free."""
    req = _requests()
    sched = make_scheduler("fcfs")
    view = StaticView(req, sched, waiting_ix=[1], free_blocks=10, watermark_blocks=4)
    assert sched.plan(view, now=5.0).admit == ()
    view = StaticView(req, sched, waiting_ix=[1], free_blocks=11, watermark_blocks=4)
    assert sched.plan(view, now=5.0).admit == (1,)


def test_sarathi_budget_counts_decodes_and_chunks_prefill() -> None:
    """Sarathi's chunk includes the decode tokens; continuing prefills come first."""
    req = _requests()
    sched = make_scheduler("sarathi", {"chunk_size": 512})
    view = StaticView(
        req,
        sched,
        waiting_ix=[3, 4],
        prefilling_ix=[0],
        decoding_ix=list(range(100, 112)),
        remaining={0: 300},
    )
    plan = sched.plan(view, now=5.0)
    # 512 - 12 decodes = 500: 300 for r0, then 50 for r3, then 150 of r4's 200
    assert plan.chunks == ((0, 300), (3, 50), (4, 150))
    assert plan.admit == (3, 4)
    assert plan.token_budget == 512


def test_max_num_seqs_limits_admissions() -> None:
    """No admission beyond max_num_seqs running sequences."""
    req = _requests()
    sched = make_scheduler("fcfs")
    view = StaticView(req, sched, waiting_ix=[0, 1, 2], decoding_ix=[3], max_num_seqs=3)
    assert sched.plan(view, now=5.0).admit == (0, 1)


def test_unknown_scheduler_and_parameter_are_named() -> None:
    """Unknown names and parameters raise ConfigError listing what is allowed."""
    with pytest.raises(ConfigError, match=r"unknown engine scheduler.*allowed: edf, fcfs"):
        make_scheduler("lifo")
    with pytest.raises(ConfigError, match=r"'chunk'.*allowed: chunk_size"):
        make_scheduler("sarathi", {"chunk": 3})
    with pytest.raises(ConfigError, match=r"'sarathi' parameter chunk_size should be >= 1; got 0"):
        make_scheduler("sarathi", {"chunk_size": 0})


def test_registry_holds_every_policy() -> None:
    """All six engine schedulers are registered by name."""
    assert SCHEDULERS.names() == ["edf", "fcfs", "niyama", "priority", "sarathi", "srpf"]


def test_constructors_take_their_model_or_its_fields_as_keywords() -> None:
    """Sarathi(chunk_size=...) equals Sarathi(SarathiParams(...)); keywords are checked too."""
    assert Sarathi(chunk_size=256).chunk_size == Sarathi(SarathiParams(chunk_size=256)).chunk_size
    with pytest.raises(ConfigError, match="'sarathi' parameter chunk_size should be >= 1; got 0"):
        Sarathi(chunk_size=0)
    with pytest.raises(ConfigError, match="as SarathiParams or as keywords, not both"):
        Sarathi(SarathiParams(), chunk_size=3)
