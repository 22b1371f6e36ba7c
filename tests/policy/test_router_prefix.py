"""Prefix-aware, session-affinity and weighted-score routers on hand-made views."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sincere.core import Request
from sincere.core.errors import ConfigError
from sincere.policy.router_base import InstanceView, RouteDecision, Router
from sincere.policy.routers import make_router
from sincere.policy.routers._prefix_index import PrefixIndex, prompt_keys

_ids = iter(range(1_000_000))


def req(blocks: tuple[int, ...] = (), *, tokens: int | None = None, session: str | None = None,
        block_tokens: int = 16) -> Request:  # fmt: skip
    """A request whose prompt is ``blocks`` full blocks of ``block_tokens`` (or ``tokens``)."""
    prompt = tokens if tokens is not None else max(1, len(blocks) * block_tokens)
    return Request(next(_ids), 0.0, "m", prompt, 8, block_ids=blocks,
                   block_tokens=block_tokens if blocks else 0, session=session)  # fmt: skip


def view(name: str, outstanding: int = 0, **kw: object) -> InstanceView:
    """An instance view with ``outstanding`` requests and the given load fields."""
    return InstanceView(name, "m", "H100", num_outstanding=outstanding, **kw)  # type: ignore[arg-type]


def router(name: str, **params: object) -> Router:
    return make_router(name, np.random.default_rng(0), **params)


# ------------------------------------------------------------------ the index


def test_index_matches_leading_keys_only() -> None:
    """A prompt matches the leading blocks an instance was sent, stopping at the first miss."""
    index = PrefixIndex(100 * 16)
    index.add("a", prompt_keys(req((1, 2, 3))), 16)
    assert index.matched_blocks("a", prompt_keys(req((1, 2, 3, 4)))) == 3
    assert index.matched_blocks("a", prompt_keys(req((1, 9, 3)))) == 1
    assert index.matched_blocks("a", prompt_keys(req((2, 3)))) == 0  # keys are chained
    assert index.matched_blocks("b", prompt_keys(req((1, 2)))) == 0


def test_index_is_bounded_and_evicts_tails_first() -> None:
    """Past its capacity the index drops the tails of the oldest prompts, not their heads."""
    index = PrefixIndex(4 * 16)
    index.add("a", prompt_keys(req((1, 2, 3))), 16)
    index.add("a", prompt_keys(req((7, 8))), 16)
    assert index.size("a") == 4
    assert index.matched_blocks("a", prompt_keys(req((1, 2, 3)))) == 2
    assert index.matched_blocks("a", prompt_keys(req((7, 8)))) == 2


def test_index_capacity_is_in_tokens_whatever_the_block_size() -> None:
    """One capacity, 4,096 tokens: eight 512-token keys (a Mooncake trace) or 256 16-token
    keys (the gateway's text blocks) -- the same prompt tokens, not 32 times fewer."""
    index = PrefixIndex(4096)
    index.add("sim", tuple(range(100)), 512)
    index.add("live", tuple(range(1000)), 16)
    assert index.size("sim") == 8 and index.held_tokens("sim") == 4096
    assert index.size("live") == 256 and index.held_tokens("live") == 4096


@pytest.mark.parametrize("name", ["prefix-aware", "weighted-score"])
def test_routers_state_the_index_in_tokens_and_the_old_name_still_works(name: str) -> None:
    """max_tokens_per_instance sizes the index in tokens; max_blocks_per_instance still
    counts keys, with a FutureWarning that says why and what to give instead."""
    r = router(name, max_tokens_per_instance=2048)
    assert r.index.in_tokens and r.index.capacity == 2048  # type: ignore[attr-defined]
    with pytest.warns(FutureWarning, match="max_tokens_per_instance"):
        old = router(name, max_blocks_per_instance=4)
    assert not old.index.in_tokens and old.index.capacity == 4  # type: ignore[attr-defined]


def test_partial_last_block_is_not_keyed() -> None:
    """Only full blocks get keys: a prompt ending inside its last block keys one block less."""
    assert len(prompt_keys(req((1, 2, 3), tokens=40))) == 2
    assert len(prompt_keys(req((1, 2, 3), tokens=48))) == 3
    assert len(prompt_keys(req((1, 2, 3)), max_blocks=2)) == 2
    assert prompt_keys(req()) == ()


# ------------------------------------------------------------------ prefix-aware


def test_prefix_aware_follows_the_longest_prefix() -> None:
    """A request goes where the longest prefix of its prompt went, even if busier (in the gap)."""
    r = router("prefix-aware")
    views = [view("a"), view("b"), view("c")]
    assert r.route(req((1, 2)), views, 0.0).instance == "a"
    assert r.route(req((5, 6, 7)), [view("a", 1), view("b"), view("c")], 0.0).instance == "b"
    got = r.route(req((5, 6, 7, 8)), [view("a", 1), view("b", 3), view("c")], 0.0)
    assert got.instance == "b"
    assert dict(got.estimates) == {"a": 0.0, "b": 48.0, "c": 0.0}
    assert got.reason.startswith("prefix 48/64 tokens")


def test_prefix_aware_yields_to_load_beyond_the_gap() -> None:
    """An instance loaded more than max_load_gap above the least loaded loses its prefix."""
    r = router("prefix-aware", max_load_gap=2.0)
    r.route(req((1, 2)), [view("a"), view("b")], 0.0)
    got = r.route(req((1, 2, 3)), [view("a", 3), view("b", 0)], 0.0)
    assert got.instance == "b"
    assert "over the load gap" in got.reason
    fresh = router("prefix-aware", max_load_gap=2.0)
    fresh.route(req((1, 2)), [view("a"), view("b")], 0.0)
    assert fresh.route(req((1, 2, 3)), [view("a", 2), view("b", 0)], 0.0).instance == "a"


def test_prefix_aware_without_blocks_is_least_loaded() -> None:
    """No block ids, or a match below min_match_tokens: least loaded, first on ties."""
    r = router("prefix-aware", min_match_tokens=64)
    assert r.route(req(), [view("a", 2), view("b", 1), view("c", 1)], 0.0).instance == "b"
    r.route(req((1, 2)), [view("a"), view("b")], 0.0)
    assert r.route(req((1, 2, 3)), [view("a", 1), view("b", 0)], 0.0).instance == "b"


def test_prefix_aware_tokens_metric_falls_back_when_unknown() -> None:
    """With the tokens metric unknown on a candidate the reason says which measure was used."""
    r = router("prefix-aware", metric="tokens")
    got = r.route(req((1,)), [view("a", waiting_prefill_tokens=None), view("b")], 0.0)
    assert "tokens unknown on a" in got.reason
    assert r.reads.tokens


# ------------------------------------------------------------------ session-affinity


def test_session_sticks_to_its_instance() -> None:
    """Later turns of a session follow the first, whatever the load difference."""
    r = router("session-affinity")
    assert r.route(req(session="s"), [view("a", 1), view("b", 0)], 0.0).instance == "b"
    got = r.route(req(session="s"), [view("a", 0), view("b", 5)], 0.0)
    assert got.instance == "b" and "sticks" in got.reason
    assert r.route(req(session="t"), [view("a", 0), view("b", 5)], 0.0).instance == "a"
    assert r.route(req(), [view("a", 3), view("b", 2)], 0.0).instance == "b"


def test_session_moves_when_saturated_or_gone() -> None:
    """A saturated, over-the-gap or missing instance sends the session to the least loaded."""
    r = router("session-affinity", saturation=0.8, max_load_gap=4.0)
    r.route(req(session="s"), [view("a"), view("b", 1)], 0.0)
    got = r.route(req(session="s"), [view("a", kv_usage=0.9), view("b", 1)], 0.0)
    assert got.instance == "b" and "saturated" in got.reason
    assert r.route(req(session="s"), [view("a"), view("b", 1)], 0.0).instance == "b"  # rebound
    got = r.route(req(session="s"), [view("a"), view("b", 5)], 0.0)
    assert got.instance == "a" and "load gap" in got.reason
    got = r.route(req(session="s"), [view("b"), view("c", 1)], 0.0)
    assert got.instance == "b" and "not a candidate" in got.reason


def test_session_bindings_are_bounded() -> None:
    """Only the max_sessions most recent sessions keep their binding."""
    r = router("session-affinity", max_sessions=1)
    r.route(req(session="s"), [view("a"), view("b", 1)], 0.0)
    r.route(req(session="t"), [view("a", 1), view("b")], 0.0)
    got = r.route(req(session="s"), [view("a", 1), view("b")], 0.0)
    assert got.instance == "b" and "new session" in got.reason


# ------------------------------------------------------------------ weighted-score


def test_weighted_score_shows_every_scorer() -> None:
    """The reason lists each candidate's scorer values and total; estimates hold the totals."""
    r = router("weighted-score", w_prefix=2.0, w_queue=1.0, w_kv=1.0, w_running=1.0)
    views = [view("a", num_waiting=4, num_running=2, kv_usage=0.5),
             view("b", num_waiting=0, num_running=6, kv_usage=0.1)]  # fmt: skip
    got = r.route(req((1, 2)), views, 0.0)
    assert got.reason == (
        "a[prefix=0 queue=0 kv=0.5 running=1 score=1.5]; "
        "b[prefix=0 queue=1 kv=0.9 running=0 score=1.9]"
    )
    assert got.instance == "b" and dict(got.estimates) == pytest.approx({"a": 1.5, "b": 1.9})
    got = r.route(req((1, 2, 3, 4)), views, 0.0)  # half its blocks on b now: +1
    assert dict(got.estimates)["b"] == pytest.approx(2.9)


def test_weighted_score_prefix_weight_can_outweigh_load() -> None:
    """With a heavy prefix weight the busier instance holding the prefix wins; without, not."""
    heavy = router("weighted-score", w_prefix=5.0)
    light = router("weighted-score", w_prefix=0.1)
    for r in (heavy, light):
        r.route(req((1, 2)), [view("a"), view("b", 1)], 0.0)
    busy = [view("a", num_waiting=3, kv_usage=0.6), view("b", num_waiting=0, kv_usage=0.1)]
    assert heavy.route(req((1, 2, 3)), busy, 0.0).instance == "a"
    assert light.route(req((1, 2, 3)), busy, 0.0).instance == "b"


def test_weighted_score_unknown_fields_fall_back() -> None:
    """Unknown queue or KV usage: every candidate scored by outstanding / slot occupancy."""
    r = router("weighted-score")
    got = r.route(req(), [view("a", 3, num_waiting=None, kv_usage=None), view("b", 1)], 0.0)
    assert got.instance == "b"
    assert "num_waiting unknown on a" in got.reason and "kv_usage unknown on a" in got.reason


def test_weighted_score_refuses_all_zero_weights() -> None:
    """All weights zero is a configuration error naming the weights."""
    with pytest.raises(ConfigError, match="every weight is zero"):
        router("weighted-score", w_prefix=0.0, w_queue=0.0, w_kv=0.0, w_running=0.0)


def test_weighted_score_ties_go_to_the_least_outstanding() -> None:
    """Equal totals: fewest outstanding requests, then the earlier candidate."""
    r = router("weighted-score")
    assert r.route(req(), [view("a", 2), view("b", 1), view("c", 1)], 0.0).instance == "b"


# ------------------------------------------------------------------ determinism


@st.composite
def traffic(draw: st.DrawFn) -> list[tuple[Request, list[InstanceView]]]:
    """A run of requests sharing prefixes and sessions, with arbitrary loads."""
    out = []
    for _ in range(draw(st.integers(1, 30))):
        blocks = tuple(draw(st.lists(st.integers(0, 3), max_size=6)))
        session = draw(st.one_of(st.none(), st.sampled_from(["s", "t", "u"])))
        views = [
            view(
                f"i{k}",
                draw(st.integers(0, 9)),
                num_waiting=draw(st.integers(0, 5)),
                kv_usage=draw(st.floats(0.0, 1.0)),
            )
            for k in range(3)
        ]
        out.append((req(blocks, session=session), views))
    return out


@settings(max_examples=40, deadline=None)
@given(run=traffic(), seed=st.integers(0, 2**16))
def test_prefix_routers_are_deterministic(
    run: list[tuple[Request, list[InstanceView]]], seed: int
) -> None:
    """Two routers built alike decide a run identically, request by request."""
    for name in ("prefix-aware", "session-affinity", "weighted-score"):
        a = make_router(name, np.random.default_rng(seed))
        b = make_router(name, np.random.default_rng(seed))
        got: list[RouteDecision] = [a.route(r, v, 0.0) for r, v in run]
        assert got == [b.route(r, v, 0.0) for r, v in run], name


def test_decision_log_keeps_block_ids_and_session() -> None:
    """A logged request keeps its block ids and session (replays see them); without, no keys."""
    from sincere.policy.decision_log import request_of, request_record

    with_content = req((4, 5), session="s")
    record = request_record(with_content)
    assert record["block_ids"] == [4, 5] and record["session"] == "s"
    back = request_of(record)
    assert (back.block_ids, back.block_tokens, back.session) == ((4, 5), 16, "s")
    assert not {"block_ids", "block_tokens", "session"} & set(request_record(req()))
