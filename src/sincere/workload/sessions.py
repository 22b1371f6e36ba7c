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
from sincere.core.prefix import mix

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
    num = -(-prompt_tokens // block)
    ids = np.empty(num, dtype=np.int64)
    sys_key, ses_key = mix(_SYSTEM_TAG, system), mix(_SESSION_TAG, session)
    for b in range(num):
        end = (b + 1) * block
        if end > prompt_tokens:
            ids[b] = mix(mix(_PARTIAL_TAG, ses_key), b * (1 << 24) + prompt_tokens)
        elif end <= system_tokens:
            ids[b] = mix(sys_key, b)
        else:
            ids[b] = mix(ses_key, b)
    return ids


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
) -> SessionRequests:
    """Sessions starting at ``starts``; turn lengths taken in order from the two columns.

    ``user_tokens`` / ``answer_tokens`` must hold at least ``len(starts) * max_turns``
    values (the caller draws them from the workload's length source).
    """
    num = len(starts)
    turns = rng.integers(shape.min_turns, shape.max_turns + 1, size=num)
    systems = zipf_choice(rng, shape.num_system_prompts, shape.popularity_s, num)
    gaps = rng.exponential(shape.think_s, size=int(turns.sum())) if shape.think_s else None
    times: list[float] = []
    prompts: list[int] = []
    outputs: list[int] = []
    ids: list[IntArray] = []
    names: list[str] = []
    k = 0
    for s in range(num):
        at = float(starts[s])
        history = shape.system_prompt_tokens
        for t in range(int(turns[s])):
            if t and gaps is not None:
                at += float(gaps[k])
            prompt = history + int(user_tokens[k])
            answer = int(answer_tokens[k])
            times.append(at)
            prompts.append(prompt)
            outputs.append(answer)
            ids.append(
                block_ids_of(
                    prompt, shape.system_prompt_tokens, int(systems[s]), s, shape.block_tokens
                )
            )
            names.append(f"s{s}")
            history = prompt + answer
            k += 1
    order = np.argsort(np.asarray(times), kind="stable")
    return SessionRequests(
        arrival_at=np.asarray(times, dtype=np.float64)[order],
        prompt_tokens=np.asarray(prompts, dtype=np.int64)[order],
        output_tokens=np.asarray(outputs, dtype=np.int64)[order],
        block_ids=tuple(ids[i] for i in order),
        sessions=tuple(names[i] for i in order),
    )
