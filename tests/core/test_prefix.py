"""Block ids, chained keys and engine block keys (sincere.core.prefix)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from sincere.core.errors import ConfigError
from sincere.core.prefix import (
    ChainedKeys,
    chain_keys,
    chain_keys_many,
    engine_block_keys,
    mix,
    mix_array,
    text_block_ids,
    token_block_ids,
)
from sincere.core.request import Request, RequestArrays


def test_mix_is_fixed_and_63_bit() -> None:
    """The mixing function is a fixed function of its inputs, with non-negative int64 keys."""
    assert mix(1, 2) == mix(1, 2)
    assert mix(1, 2) != mix(2, 1)
    assert 0 <= mix(2**62, 2**62) < 2**63


@given(st.lists(st.tuples(st.integers(0, 2**64 - 1), st.integers(0, 2**64 - 1)), max_size=20))
def test_mix_array_is_mix_pair_by_pair(pairs: list[tuple[int, int]]) -> None:
    """The vectorised mixer gives exactly the scalar one's keys (one definition, two speeds)."""
    parents = np.array([p for p, _ in pairs], dtype=np.uint64)
    values = np.array([v for _, v in pairs], dtype=np.uint64)
    assert mix_array(parents, values).tolist() == [mix(p, v) for p, v in pairs]


def _reference_engine_keys(ids: list[int], block: int, engine: int, prompt: int) -> tuple[int, ...]:
    """The definition, one engine block at a time: the chain of the id block a block ends
    in, mixed with the tokens up to its end when engine blocks are the smaller."""
    chained = chain_keys(ids)
    keys = []
    for b in range(min(prompt, len(ids) * block) // engine):
        end = (b + 1) * engine
        source = (end - 1) // block
        inside = end - source * block
        keys.append(chained[source] if engine >= block else mix(chained[source], inside))
    return tuple(keys)


def test_engine_block_keys_follow_their_definition() -> None:
    """For smaller, equal and larger engine blocks, and prompts ending anywhere, the
    vectorised keys equal the block-by-block definition."""
    ids = [5, 9, 9, 1, 77]
    for engine_block in (16, 32, 64, 128):
        for prompt in (1, 63, 64, 200, 320, 400):
            got = engine_block_keys(
                ids, block_tokens=64, engine_block_tokens=engine_block, prompt_tokens=prompt
            )
            assert got == _reference_engine_keys(ids, 64, engine_block, prompt)


@given(st.lists(st.integers(0, 2**40), min_size=1, max_size=20), st.integers(0, 19))
def test_chain_keys_identify_whole_prefixes(ids: list[int], cut: int) -> None:
    """Two prompts share key i exactly when their first i + 1 ids agree."""
    cut = min(cut, len(ids) - 1)
    other = [*ids[:cut], ids[cut] + 1, *ids[cut + 1 :]]
    a, b = chain_keys(ids), chain_keys(other)
    assert a[:cut] == b[:cut]
    assert all(x != y for x, y in zip(a[cut:], b[cut:], strict=True))


def test_engine_keys_of_512_token_blocks_on_16_token_engine_blocks() -> None:
    """A 512-token id block maps onto 32 engine blocks; a partial tail gets only full blocks."""
    keys = engine_block_keys([7, 8], block_tokens=512, engine_block_tokens=16, prompt_tokens=1000)
    assert len(keys) == 1000 // 16
    same_first = engine_block_keys(
        [7, 9], block_tokens=512, engine_block_tokens=16, prompt_tokens=1000
    )
    assert keys[:32] == same_first[:32]
    assert not set(keys[32:]) & set(same_first[32:])
    assert len(set(keys)) == len(keys)


def test_engine_blocks_larger_than_id_blocks_take_the_chain_of_their_last_id() -> None:
    """With 16-token ids on 32-token engine blocks, block b's key is the chain of id 2b + 1."""
    ids = [1, 2, 3, 4, 5]
    keys = engine_block_keys(ids, block_tokens=16, engine_block_tokens=32, prompt_tokens=80)
    assert keys == (chain_keys(ids)[1], chain_keys(ids)[3])


def test_tokens_beyond_the_ids_get_no_key() -> None:
    """Prompt tokens past the blocks the ids cover are new content: no engine key."""
    keys = engine_block_keys([1], block_tokens=16, engine_block_tokens=16, prompt_tokens=100)
    assert len(keys) == 1


def test_incompatible_block_sizes_are_refused() -> None:
    """Neither size dividing the other is refused with both named."""
    with pytest.raises(ConfigError, match="512 tokens cannot be mapped onto engine blocks of 24"):
        engine_block_keys([1], block_tokens=512, engine_block_tokens=24, prompt_tokens=600)


def test_text_block_ids_share_leading_blocks_of_a_shared_prefix() -> None:
    """Texts with a common start share the ids of the blocks inside it, and differ after."""
    system = "You are a careful assistant. " * 20
    a = text_block_ids(system + "What is the capital of France?", 16)
    b = text_block_ids(system + "Write a haiku about autumn leaves.", 16)
    shared = len(system.encode()) // (16 * 4)
    assert a[:shared] == b[:shared]
    assert a[-1] != b[-1]


def test_token_block_ids_use_token_ids_when_known() -> None:
    """Known token ids are hashed per block; the last block may be partial."""
    ids = token_block_ids(list(range(40)), 16)
    assert len(ids) == 3
    assert text_block_ids("ignored", 16, token_ids=list(range(40))) == ids


def test_request_refuses_more_blocks_than_its_prompt() -> None:
    """A request whose ids describe more blocks than its prompt has names the counts."""
    with pytest.raises(ConfigError, match="3 block ids of 512 tokens describe more than its 600"):
        Request(
            id=0,
            arrival_at=0.0,
            model="m",
            prompt_tokens=600,
            output_tokens=1,
            block_ids=(1, 2, 3),
            block_tokens=512,
        )


def test_request_arrays_round_trip_block_ids_and_sessions() -> None:
    """Block ids and sessions survive arrays -> requests -> arrays."""
    arrays = RequestArrays.build(
        [0.0, 1.0],
        [600, 20],
        [5, 5],
        block_ids=[[1, 2], []],
        block_tokens=512,
        sessions=["s1", None],
    )
    back = RequestArrays.from_requests(arrays.to_requests())
    assert [list(b) for b in back.block_ids] == [[1, 2], []]
    assert back.block_tokens == 512
    assert back.sessions == ("s1", None)
    assert arrays.request(0).block_ids == (1, 2)


def test_request_arrays_refuse_too_many_blocks() -> None:
    """The arrays' own check names the first request whose ids overrun its prompt."""
    with pytest.raises(ConfigError, match="request 1: 2 block ids"):
        RequestArrays.build(
            [0.0, 1.0], [600, 20], [5, 5], block_ids=[[1, 2], [3, 4]], block_tokens=512
        )


def test_head_cuts_every_per_request_column() -> None:
    """head(n) keeps the first n requests with their block ids and sessions."""
    arrays = RequestArrays.build(
        [0.0, 1.0, 2.0],
        [600, 20, 30],
        [5, 5, 5],
        block_ids=[[1, 2], [], [3]],
        block_tokens=512,
        sessions=["a", "b", None],
    )
    first = arrays.head(2)
    assert len(first) == 2
    assert [list(b) for b in first.block_ids] == [[1, 2], []]
    assert first.sessions == ("a", "b")
    assert first.block_tokens == 512


def test_chain_keys_many_is_chain_keys_of_each() -> None:
    """Chaining many prompts at once (any lengths, empty ones, any int64 ids) gives each
    prompt's chain_keys exactly."""
    rng = np.random.default_rng(2)
    prompts = [
        rng.integers(-(2**63), 2**63 - 1, size=int(rng.integers(0, 40)), dtype=np.int64)
        for _ in range(300)
    ]
    got = chain_keys_many(prompts)
    assert len(got) == len(prompts) and chain_keys_many([]) == []
    for ids, keys in zip(prompts, got, strict=True):
        assert tuple(keys.tolist()) == chain_keys(ids)


def test_chained_keys_follow_replaced_ids_and_requests_carry_them() -> None:
    """Keys computed a batch at a time stay right when a prompt's ids are replaced or
    added after its batch was chained, and a request made from arrays carries its chain."""
    rng = np.random.default_rng(3)
    ids = [rng.integers(0, 1 << 40, size=int(rng.integers(1, 30))) for _ in range(50)]
    chains = ChainedKeys(batch=8, kept=2)
    for i in (3, 20, 45, 4):
        assert chains.of(ids, i) == list(chain_keys(ids[i]))
    ids[5] = rng.integers(0, 1 << 40, size=7)
    assert chains.of(ids, 5) == list(chain_keys(ids[5]))
    first = chains.of(ids, 6)
    assert chains.of(ids, 6) is first  # asked again at once: the same list, kept
    ids[6] = rng.integers(0, 1 << 40, size=3)  # replaced in between: chained afresh
    assert chains.of(ids, 6) == list(chain_keys(ids[6])) != first
    short = ids[:2]
    assert ChainedKeys().of(short, 1) == list(chain_keys(ids[1]))
    grown = [*short, rng.integers(0, 1 << 40, size=4)]
    chains = ChainedKeys()
    assert chains.of(short, 0) == list(chain_keys(ids[0]))
    assert chains.of(grown, 2) == list(chain_keys(grown[2]))  # added after its batch
    req = RequestArrays.build(
        [0.0, 1.0], [100, 40], [5, 5], block_ids=[[1, 2, 3], [1, 9]], block_tokens=32
    )
    assert req.request(1).block_keys == chain_keys([1, 9])
    assert req.block_keys(0) == list(chain_keys([1, 2, 3]))
    assert req.request(1) == Request(1, 1.0, "default", 40, 5, max_tokens=5,
                                     block_ids=(1, 9), block_tokens=32)  # fmt: skip
