"""Generated sessions: shared system prompts, growing multi-turn prompts, deterministic ids."""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import pytest

from sincere.core.errors import ConfigError
from sincere.workload.config import generate, load_workload_config
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
