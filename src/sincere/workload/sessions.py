"""Workloads whose prompts share content: system prompts, multi-turn sessions, agent loops.

One generator covers the three shapes prefix caches feed on (the ``sessions:`` section of a
workload config, docs/workload.md):

* **shared system prompts / few-shot templates** -- every session opens with one of
  ``num_system_prompts`` prompts of ``system_prompt_tokens`` tokens, picked by a Zipf law
  of exponent ``popularity_s`` (prompt ``k`` has weight ``1 / k**s``); ``turns: 1`` gives
  single requests behind shared templates;
* **multi-turn sessions** -- a session has ``min_turns..max_turns`` turns (uniform); turn
  ``k``'s prompt is the conversation so far (system prompt, every earlier user message and
  answer) plus a new user message; the next turn arrives an exponential think time of mean
  ``think_s`` after this one (open loop: not after its answer, which the workload cannot
  know); user message and answer lengths come from the workload's ``lengths`` (prompt and
  output columns);
* **agent loops** -- one long tool prompt (``num_system_prompts: 1``, a large
  ``system_prompt_tokens``), many turns, short think times: the history grows by each tool
  call and result.

Sessions start at the workload's arrival times. Block ids (blocks of ``block_tokens``):
a block wholly inside the system prompt is named by the system prompt and its position;
any other *full* block by its session and position (conversation content never changes
once written, so a later turn repeats the earlier turns' blocks); a prompt's partial last
block by its session, position and length (its content is unique to that prompt).
Deterministic: everything is drawn from the generators passed in.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from sincere.core.errors import check_in_range
from sincere.core.prefix import mix_array

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]

_SYSTEM_TAG = 0x5157_0001
_SESSION_TAG = 0x5E55_0002
_PARTIAL_TAG = 0x9A27_0003


@dataclass(frozen=True, slots=True)
class SessionShape:
    """How sessions look (see the module docstring for each field's role)."""

    min_turns: int = 1
    max_turns: int = 1
    think_s: float = 10.0
    system_prompt_tokens: int = 0
    num_system_prompts: int = 1
    popularity_s: float = 1.0
    block_tokens: int = 16

    def __post_init__(self) -> None:
        checks = {
            "min_turns": self.min_turns >= 1,
            "max_turns": self.max_turns >= self.min_turns,
            "think_s": self.think_s >= 0,
            "system_prompt_tokens": self.system_prompt_tokens >= 0,
            "num_system_prompts": self.num_system_prompts >= 1,
            "popularity_s": self.popularity_s >= 0,
            "block_tokens": self.block_tokens >= 1,
        }
        check_in_range(
            self,
            checks,
            "sessions.",
            "turns >= 1 (max >= min), think_s >= 0, tokens >= 0, "
            "num_system_prompts >= 1, popularity_s >= 0, block_tokens >= 1",
        )


@dataclass(frozen=True, slots=True)
class SessionRequests:
    """The turns of every session, in arrival order."""

    arrival_at: FloatArray
    prompt_tokens: IntArray
    output_tokens: IntArray
    block_ids: tuple[IntArray, ...]
    sessions: tuple[str, ...]


def block_ids_of(
    prompt_tokens: int, system_tokens: int, system: int, session: int, block: int
) -> IntArray:
    """Block ids of one prompt (module docstring): system, session or partial blocks."""

    def one(value: int) -> IntArray:
        return np.array([value], dtype=np.int64)

    return block_ids_many(one(prompt_tokens), system_tokens, one(system), one(session), block)[0]


_CHUNK_BLOCKS = 1 << 17
"""Blocks named per pass of :func:`block_ids_many`: its temporaries stay a few MiB."""


def block_ids_many(
    prompt_tokens: IntArray, system_tokens: int, systems: IntArray, sessions: IntArray, block: int
) -> list[IntArray]:
    """:func:`block_ids_of` of many prompts, all blocks at once: block ``b`` is ``mix(parent,
    b)`` with its system prompt's or its session's key as parent (``mix_array`` is ``mix``
    over arrays); a partial last block is named by its session, position and length.

    Taken in passes of about ``_CHUNK_BLOCKS`` blocks (whole prompts): every id depends on
    its own prompt alone, and a long multi-turn workload names millions of blocks, whose
    whole-set temporaries would each be tens of MiB of freshly faulted memory."""
    counts = -(-prompt_tokens // block)
    ends = np.cumsum(counts)
    out: list[IntArray] = []
    lo = 0
    while lo < len(counts):
        hi = int(np.searchsorted(ends, ends[lo] - counts[lo] + _CHUNK_BLOCKS, side="right"))
        hi = max(hi, lo + 1)
        out += _block_ids_pass(
            prompt_tokens[lo:hi],
            counts[lo:hi],
            system_tokens,
            systems[lo:hi],
            sessions[lo:hi],
            block,
        )
        lo = hi
    return out


def _block_ids_pass(
    prompt_tokens: IntArray,
    counts: IntArray,
    system_tokens: int,
    systems: IntArray,
    sessions: IntArray,
    block: int,
) -> list[IntArray]:
    """One pass of :func:`block_ids_many` (``counts``: each prompt's blocks)."""
    u64 = np.uint64
    sys_keys = mix_array(np.full(len(systems), _SYSTEM_TAG, u64), systems.astype(u64))
    ses_keys = mix_array(np.full(len(sessions), _SESSION_TAG, u64), sessions.astype(u64))
    owner = np.repeat(np.arange(len(counts)), counts)
    starts = np.cumsum(counts) - counts
    b = np.arange(int(counts.sum()), dtype=np.int64) - np.repeat(starts, counts)
    in_system = (b + 1) * block <= system_tokens
    parents = np.where(in_system, sys_keys[owner], ses_keys[owner])
    ids = mix_array(parents, b.astype(u64))
    partial = np.flatnonzero(counts * block > prompt_tokens)
    if len(partial):
        tags = mix_array(np.full(len(partial), _PARTIAL_TAG, u64), ses_keys[partial])
        where = (counts[partial] - 1) * (1 << 24) + prompt_tokens[partial]
        ids[starts[partial] + counts[partial] - 1] = mix_array(tags, where.astype(u64))
    return np.split(ids.astype(np.int64), np.cumsum(counts)[:-1].tolist())


def zipf_choice(rng: np.random.Generator, num: int, s: float, n: int) -> IntArray:
    """``n`` draws of ``0..num-1`` with weight ``1 / (k + 1)**s``."""
    weights = 1.0 / np.arange(1, num + 1, dtype=np.float64) ** s
    return rng.choice(num, size=n, p=weights / weights.sum()).astype(np.int64)


def build_sessions(
    starts: FloatArray,
    shape: SessionShape,
    user_tokens: IntArray,
    answer_tokens: IntArray,
    rng: np.random.Generator,
    keep: int | None = None,
) -> SessionRequests:
    """Sessions starting at ``starts``; turn lengths taken in order from the two columns.

    ``user_tokens`` / ``answer_tokens`` must hold at least ``len(starts) * max_turns``
    values (the caller draws them from the workload's length source). With ``keep``, only
    the first ``keep`` turns in arrival order are returned, and only theirs get block ids
    (a turn's ids depend on that turn alone, so they are the same as in the whole set).
    """
    num = len(starts)
    turns = rng.integers(shape.min_turns, shape.max_turns + 1, size=num)
    systems = zipf_choice(rng, shape.num_system_prompts, shape.popularity_s, num)
    total = int(turns.sum())
    gaps = rng.exponential(shape.think_s, size=total) if shape.think_s else None
    # Turn ``t`` of session ``s`` is entry ``first[s] + t`` (sessions in order, each one's
    # turns in order), filled one turn position at a time across every session that has
    # it: each value takes the same operations, in the same order, as a walk turn by turn.
    first = np.cumsum(turns) - turns
    times = np.empty(total, dtype=np.float64)
    prompts = np.empty(total, dtype=np.int64)
    owners = np.repeat(np.arange(num, dtype=np.int64), turns)
    outputs = np.asarray(answer_tokens[:total], dtype=np.int64)
    user = np.asarray(user_tokens[:total], dtype=np.int64)
    at = np.asarray(starts, dtype=np.float64).copy()
    history = np.full(num, shape.system_prompt_tokens, dtype=np.int64)
    live = np.arange(num)
    for t in range(int(turns.max(initial=0))):
        live = live[turns[live] > t]
        k = first[live] + t
        if t and gaps is not None:
            at[live] += gaps[k]
        prompt = history[live] + user[k]
        times[k] = at[live]
        prompts[k] = prompt
        history[live] = prompt + outputs[k]
    order = np.argsort(times, kind="stable")[:keep]
    session = owners[order]
    kept_prompts = prompts[order]
    ids = block_ids_many(
        kept_prompts, shape.system_prompt_tokens, systems[session], session, shape.block_tokens
    )
    return SessionRequests(
        arrival_at=times[order],
        prompt_tokens=kept_prompts,
        output_tokens=outputs[order],
        block_ids=tuple(ids),
        sessions=tuple(f"s{s}" for s in session.tolist()),
    )
