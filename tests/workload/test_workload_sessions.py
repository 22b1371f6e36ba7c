"""Generated sessions: shared system prompts, growing multi-turn prompts, deterministic ids."""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import pytest

from sincere.core.errors import ConfigError
from sincere.core.prefix import mix
from sincere.workload import sessions as sessions_module
from sincere.workload.config import generate, load_workload_config
from sincere.workload.sessions import (
    _PARTIAL_TAG,
    _SESSION_TAG,
    _SYSTEM_TAG,
    SessionShape,
    block_ids_many,
    block_ids_of,
    build_sessions,
)
from sincere.workload.stats import prefix_reuse


def _config(**sessions: Any) -> dict[str, Any]:
    return {
        "num_requests": 300,
        "arrival": {"kind": "poisson", "rate": 2.0},
        "lengths": {
            "prompt": {"kind": "uniform", "low": 20, "high": 200},
            "output": {"kind": "uniform", "low": 10, "high": 100},
        },
        "sessions": sessions,
    }


def test_multi_turn_prompts_hold_the_conversation_so_far() -> None:
    """Each later turn's prompt = the previous prompt + its answer + a new message, and
    repeats the previous prompt's full blocks; ids cover exactly the prompt."""
    req = generate(_config(min_turns=3, max_turns=5, think_s=4.0, block_tokens=16), seed=1)
    assert len(req) == 300 and req.block_tokens == 16
    by_session: dict[str, list[int]] = {}
    for i, name in enumerate(req.sessions):
        assert name is not None
        by_session.setdefault(name, []).append(i)
    assert max(len(v) for v in by_session.values()) > 1
    for turns in by_session.values():
        for a, b in itertools.pairwise(turns):
            prev, cur = int(req.prompt_tokens[a]), int(req.prompt_tokens[b])
            assert cur > prev + int(req.output_tokens[a])
            full = prev // 16
            assert np.array_equal(req.block_ids[a][:full], req.block_ids[b][:full])
    for i in range(len(req)):
        assert len(req.block_ids[i]) == -(-int(req.prompt_tokens[i]) // 16)


def test_shared_system_prompts_are_reused_by_popularity() -> None:
    """Single-turn requests behind 3 shared 512-token templates reuse most of them."""
    req = generate(
        _config(system_prompt_tokens=512, num_system_prompts=3, popularity_s=1.2), seed=2
    )
    assert np.all(req.prompt_tokens >= 512 + 20)
    firsts = {tuple(ids[:32].tolist()) for ids in req.block_ids}
    assert len(firsts) == 3
    assert prefix_reuse(req) > 0.6


def test_same_seed_same_sessions_and_bad_shapes_are_refused() -> None:
    """The same seed gives identical ids; max_turns below min_turns is a ConfigError."""
    config = _config(min_turns=2, max_turns=4, system_prompt_tokens=100)
    a, b = generate(config, seed=5), generate(config, seed=5)
    assert all(np.array_equal(x, y) for x, y in zip(a.block_ids, b.block_ids, strict=True))
    assert np.array_equal(a.arrival_at, b.arrival_at)
    with pytest.raises(ConfigError, match="max_turns"):
        load_workload_config(_config(min_turns=3, max_turns=2))


def _ids_block_by_block(
    prompt_tokens: int, system_tokens: int, system: int, session: int, block: int
) -> list[int]:
    """The naming rule of the module docstring, one block at a time."""
    sys_key, ses_key = mix(_SYSTEM_TAG, system), mix(_SESSION_TAG, session)
    ids = []
    for b in range(-(-prompt_tokens // block)):
        end = (b + 1) * block
        if end > prompt_tokens:
            ids.append(mix(mix(_PARTIAL_TAG, ses_key), b * (1 << 24) + prompt_tokens))
        elif end <= system_tokens:
            ids.append(mix(sys_key, b))
        else:
            ids.append(mix(ses_key, b))
    return ids


def test_block_ids_at_once_equal_the_rule_block_by_block(monkeypatch: pytest.MonkeyPatch) -> None:
    """The vectorised ids equal the per-block naming rule: system, session and partial
    blocks, any block size, system prompts shorter, equal to or longer than the prompt,
    one prompt at a time and many at once."""
    rng = np.random.default_rng(5)
    for block in (1, 7, 16, 64, 512):
        system = int(rng.choice([0, 1000, int(rng.integers(0, 4000))]))
        prompts = rng.integers(1, 3000, size=60)
        prompts[:3] = [system or 1, block, 1]
        systems, sessions = rng.integers(0, 50, size=60), rng.integers(0, 10**6, size=60)
        many = block_ids_many(prompts, system, systems, sessions, block)
        for chunk in (1, 50, 333):  # taken in passes of whole prompts: the same ids
            monkeypatch.setattr(sessions_module, "_CHUNK_BLOCKS", chunk)
            passes = block_ids_many(prompts, system, systems, sessions, block)
            assert [a.tolist() for a in passes] == [a.tolist() for a in many], chunk
        monkeypatch.undo()
        for k in range(60):
            args = (int(prompts[k]), system, int(systems[k]), int(sessions[k]), block)
            want = _ids_block_by_block(*args)
            assert many[k].dtype == np.int64 and many[k].tolist() == want, args
            assert block_ids_of(*args).tolist() == want, args


@pytest.mark.parametrize("keep", [0, 1, 37, 120, 10_000])
def test_kept_turns_are_the_first_of_the_whole_set(keep: int) -> None:
    """Keeping only the first turns by arrival (the workload's size) gives exactly the
    first turns of the whole set: times, lengths, sessions and every block id."""
    shape = SessionShape(min_turns=1, max_turns=5, think_s=3.0, system_prompt_tokens=100,
                         num_system_prompts=4, block_tokens=16)  # fmt: skip
    starts = np.cumsum(np.random.default_rng(1).exponential(1.0, size=60))
    lengths = np.random.default_rng(2).integers(5, 90, size=(2, 60 * 5))

    def build(keep: int | None) -> Any:
        return build_sessions(starts, shape, *lengths, np.random.default_rng(3), keep=keep)

    whole, kept = build(None), build(keep)
    n = min(keep, len(whole.arrival_at))
    assert len(kept.arrival_at) == n and len(kept.block_ids) == n
    for name in ("arrival_at", "prompt_tokens", "output_tokens"):
        assert np.array_equal(getattr(kept, name), getattr(whole, name)[:n])
    assert kept.sessions == whole.sessions[:n]
    pairs = zip(kept.block_ids, whole.block_ids[:n], strict=True)
    assert all(np.array_equal(a, b) for a, b in pairs)


def _turn_by_turn(
    starts: Any, shape: SessionShape, user: Any, answer: Any, rng: np.random.Generator
) -> tuple[list[float], list[int], list[int], list[int]]:
    """Times, prompts, answers and owners of every turn, session after session, walked one
    turn at a time (the rule the module docstring states)."""
    turns = rng.integers(shape.min_turns, shape.max_turns + 1, size=len(starts))
    # the system prompts' draws come next in build_sessions: take them to stay in step
    sessions_module.zipf_choice(rng, shape.num_system_prompts, shape.popularity_s, len(starts))
    gaps = rng.exponential(shape.think_s, size=int(turns.sum())) if shape.think_s else None
    times, prompts, answers, owners = [], [], [], []
    k = 0
    for s, first_at in enumerate(starts.tolist()):
        at, history = first_at, shape.system_prompt_tokens
        for t in range(int(turns[s])):
            if t and gaps is not None:
                at += float(gaps[k])
            prompt = history + int(user[k])
            times.append(at)
            prompts.append(prompt)
            answers.append(int(answer[k]))
            owners.append(s)
            history = prompt + int(answer[k])
            k += 1
    return times, prompts, answers, owners


@pytest.mark.parametrize("think_s", [0.0, 2.5])
def test_turns_filled_across_sessions_equal_a_walk_turn_by_turn(think_s: float) -> None:
    """build_sessions fills one turn position across every session at a time; each turn's
    time (the same float additions in the same order), prompt and answer equal a plain walk
    turn by turn, session after session."""
    shape = SessionShape(min_turns=1, max_turns=6, think_s=think_s, system_prompt_tokens=250,
                         num_system_prompts=3, block_tokens=16)  # fmt: skip
    starts = np.cumsum(np.random.default_rng(7).exponential(0.3, size=400))
    user, answer = np.random.default_rng(8).integers(1, 500, size=(2, 400 * 6))
    got = build_sessions(starts, shape, user, answer, np.random.default_rng(9))
    times, prompts, answers, owners = _turn_by_turn(
        starts, shape, user, answer, np.random.default_rng(9)
    )
    order = np.argsort(np.asarray(times), kind="stable")
    assert got.arrival_at.tolist() == np.asarray(times)[order].tolist()
    assert got.prompt_tokens.tolist() == np.asarray(prompts)[order].tolist()
    assert got.output_tokens.tolist() == np.asarray(answers)[order].tolist()
    assert got.sessions == tuple(f"s{owners[i]}" for i in order.tolist())
