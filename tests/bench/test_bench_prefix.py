"""Replaying block ids as text, and the cached prompt tokens servers report."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from sincere.bench.client import CallTiming, _absorb
from sincere.bench.prompts import BlockTexts, block_prompt, prompt_texts
from sincere.bench.results import prefix_cache_section, reported_cached_tokens, with_cached_tokens
from sincere.core.prefix import pseudo_tokens, text_block_ids
from sincere.core.request import RequestArrays


def test_block_text_reproduces_the_identity_structure() -> None:
    """At any block size dividing the trace's, text blocks are equal exactly where ids are."""
    texts = BlockTexts(64)
    a = block_prompt([1, 2, 3], 192, texts)
    b = block_prompt([1, 2, 4], 192, texts)
    c = block_prompt([5, 2, 3], 192, texts)
    assert len(pseudo_tokens(a)) == 192 and len(a) == 4 * 192
    for size in (16, 32, 64):
        ia, ib, ic = (text_block_ids(t, size) for t in (a, b, c))
        per = 64 // size
        assert ia[: 2 * per] == ib[: 2 * per] and ia[2 * per] != ib[2 * per]
        assert not set(ia) & set(ic[:per])  # a different first block shares nothing
        assert len(ia) == 192 // size


def test_partial_last_block_and_new_tail() -> None:
    """A partial last block is its block's text cut short; tokens past the ids are new text."""
    texts = BlockTexts(16)
    short = block_prompt([7, 8], 20, texts)
    assert short == texts.text(7) + texts.text(8)[: 4 * 4]
    longer = block_prompt([7], 40, texts, index=3)
    assert longer.startswith(texts.text(7)) and len(pseudo_tokens(longer)) == 40
    assert block_prompt([7], 40, texts, index=3) == longer  # deterministic


def test_prompt_texts_uses_block_ids() -> None:
    """A workload with block ids is sent as text reproducing them; equal ids, equal text."""
    reqs = RequestArrays.build(
        arrival_at=[0.0, 1.0],
        prompt_tokens=[32, 48],
        output_tokens=[4, 4],
        block_ids=[[9, 10], [9, 10, 11]],
        block_tokens=16,
    )
    first, second = prompt_texts(reqs)
    assert second.startswith(first) and len(pseudo_tokens(second)) == 48


def test_cached_tokens_reported_by_servers_are_kept() -> None:
    """usage.prompt_tokens_details.cached_tokens lands in the records and the summary section."""
    timing = CallTiming()
    _absorb(timing, {"usage": {"completion_tokens": 3,
                               "prompt_tokens_details": {"cached_tokens": 96}}})  # fmt: skip
    assert timing.cached_tokens == 96
    silent = CallTiming()
    assert len(reported_cached_tokens([silent, silent])) == 0
    cached = reported_cached_tokens([timing, silent])
    reqs = RequestArrays.build(arrival_at=[0.0, 1.0], prompt_tokens=[128, 64], output_tokens=[1, 1])
    section = prefix_cache_section(reqs, cached)
    assert section == {"num_reported": 1, "cached_tokens": 96.0, "prompt_tokens": 128.0,
                       "hit_rate": 0.75}  # fmt: skip
    table = with_cached_tokens(pa.table({"x": [1, 2]}), cached)
    got = table.column("cached_tokens").to_numpy()
    assert got[0] == 96 and np.isnan(got[1])
