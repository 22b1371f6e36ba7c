"""Prompt content as block identities, and the chained keys prefix caches use.

A request's prompt is described by **block ids**: one integer per consecutive block of
``block_tokens`` prompt tokens (the last block may be partial), equal ids meaning equal
content. They come from a trace (Mooncake's ``hash_ids``, 512-token blocks), from a
generator of sessions or shared templates, or from live text (:func:`text_block_ids`, the
same function on the gateway, the emulator and the load generator, so all three see the
same structure).

Caches and routers never compare block ids directly: a block is only reusable when
everything before it matches too. So they use **chained keys**, as vLLM's prefix cache
does: the key of block ``i`` mixes the key of block ``i - 1`` with the id of block ``i``
(:func:`chain_keys`). An engine whose KV blocks hold ``engine_block_tokens`` tokens asks
:func:`engine_block_keys` for the keys of the *full* engine blocks the ids cover; tokens
past the last id are new content and get no key.

Keys are non-negative 63-bit integers (they fit ``int64`` columns) from a fixed mixing
function: the same ids give the same keys in every process and on every run.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from sincere.core.errors import ConfigError

_MASK63 = (1 << 63) - 1
_MASK64 = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15  # the mixing function's constants (splitmix64's)
_OFFSET = 0x632BE59BD9B4E019
_MUL1 = 0xBF58476D1CE4E5B9
_MUL2 = 0x94D049BB133111EB
ROOT_KEY = 0x5C3E_7A11_0B5E_D00D
"""The parent key of a prompt's first block."""

CHARS_PER_PSEUDO_TOKEN = 4
"""Characters per token when live text has no tokenizer at hand (the usual ~4 for English)."""

U64Array = npt.NDArray[np.uint64]


def mix(parent: int, value: int) -> int:
    """A 63-bit key from a parent key and a value (splitmix64's finaliser on their sum)."""
    z = (parent * _GOLDEN + value + _OFFSET) & _MASK64
    z = ((z ^ (z >> 30)) * _MUL1) & _MASK64
    z = ((z ^ (z >> 27)) * _MUL2) & _MASK64
    return (z ^ (z >> 31)) & _MASK63


def mix_array(parents: U64Array, values: U64Array) -> U64Array:
    """:func:`mix` of each (parent, value) pair at once (numpy's wrapping ``uint64``
    arithmetic is the function's ``mod 2**64``)."""
    with np.errstate(over="ignore"):
        z = parents * np.uint64(_GOLDEN) + values + np.uint64(_OFFSET)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(_MUL1)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(_MUL2)
        out: U64Array = (z ^ (z >> np.uint64(31))) & np.uint64(_MASK63)
    return out


def chain_keys(block_ids: Sequence[int] | npt.NDArray[np.int64]) -> tuple[int, ...]:
    """The chained key of every block: key ``i`` identifies blocks ``0..i`` together."""
    keys: list[int] = []
    parent = ROOT_KEY
    for block_id in block_ids:
        parent = mix(parent, int(block_id))
        keys.append(parent)
    return tuple(keys)


def engine_block_keys(
    block_ids: Sequence[int] | npt.NDArray[np.int64],
    *,
    block_tokens: int,
    engine_block_tokens: int,
    prompt_tokens: int,
) -> tuple[int, ...]:
    """Keys of the full ``engine_block_tokens``-token blocks of a prompt described by ids.

    ``block_ids`` describe the prompt in blocks of ``block_tokens`` tokens. An engine
    block spanning one or more whole id blocks gets the key of the last one it ends in
    (which already identifies everything before); an engine block inside one id block gets
    the key of that id block's chain mixed with the tokens up to its end in it. Only engine
    blocks that end within both the prompt and the tokens the ids cover get a key. (The
    engine's prefix cache computes these for every admitted prompt: vectorised.)
    """
    check_block_sizes(block_tokens, engine_block_tokens)
    covered = min(prompt_tokens, len(block_ids) * block_tokens)
    if covered // engine_block_tokens == 0:
        return ()
    return engine_keys_of_chain(
        chain_keys(block_ids),
        block_tokens=block_tokens,
        engine_block_tokens=engine_block_tokens,
        prompt_tokens=prompt_tokens,
    )


def engine_keys_of_chain(
    chained: Sequence[int],
    *,
    block_tokens: int,
    engine_block_tokens: int,
    prompt_tokens: int,
) -> tuple[int, ...]:
    """:func:`engine_block_keys` from the prompt's chained keys (:func:`chain_keys` of all
    its ids), when they are known already; the block sizes must have been checked."""
    covered = min(prompt_tokens, len(chained) * block_tokens)
    num_full = covered // engine_block_tokens
    if num_full == 0:
        return ()
    if engine_block_tokens == block_tokens:  # one key per id block, as chained
        return tuple(chained[:num_full])
    keys = np.array(chained, dtype=np.uint64)
    ends = np.arange(1, num_full + 1, dtype=np.int64) * engine_block_tokens
    source = (ends - 1) // block_tokens
    if engine_block_tokens >= block_tokens:  # each ends where an id block ends
        return tuple(keys[source].tolist())
    offsets = (ends - source * block_tokens).astype(np.uint64)
    return tuple(mix_array(keys[source], offsets).tolist())


def chain_keys_many(block_ids: Sequence[npt.NDArray[np.int64]]) -> list[U64Array]:
    """:func:`chain_keys` of many prompts at once (one array of keys each): the chain is
    sequential along a prompt, so it advances one position of every prompt long enough
    per step, in one :func:`mix_array` (the same function, bit for bit)."""
    lengths = np.fromiter((len(b) for b in block_ids), dtype=np.int64, count=len(block_ids))
    total = int(lengths.sum())
    if total == 0:
        return [np.empty(0, dtype=np.uint64) for _ in block_ids]
    ids = np.concatenate([np.asarray(b, dtype=np.int64) for b in block_ids]).view(np.uint64)
    starts = np.zeros(len(block_ids), dtype=np.int64)
    np.cumsum(lengths[:-1], out=starts[1:])
    order = np.argsort(-lengths, kind="stable")  # longest first: step p takes a leading run
    alive = np.searchsorted(-lengths[order], -np.arange(int(lengths.max())), side="left")
    keys = np.empty(total, dtype=np.uint64)
    parents = np.full(int(alive[0]), ROOT_KEY, dtype=np.uint64)
    at = starts[order]
    for count in alive.tolist():
        at = at[:count]
        parents = mix_array(parents[:count], ids[at])
        keys[at] = parents
        at = at + 1
    return np.split(keys, starts[1:].tolist())


class ChainedKeys:
    """Every prompt's :func:`chain_keys`, computed :func:`chain_keys_many` ``batch``
    prompts at a time when first asked for (the last ``kept`` batches are kept).

    A prompt whose id array is not the one its batch was computed from (the emulator
    replaces a slot's ids for each request, and adds slots) is chained on its own. The
    last prompt's list is kept for the next ask of the same prompt (a prefix router and
    then the engine, at the request's arrival): callers read it and never change it.
    """

    def __init__(self, batch: int = 4096, kept: int = 4) -> None:
        self.batch = batch
        self.kept = kept
        self._done: dict[int, tuple[list[npt.NDArray[np.int64]], list[U64Array]]] = {}
        self._last: tuple[int, npt.NDArray[np.int64] | None, list[int]] = (-1, None, [])

    def of(self, block_ids: Sequence[npt.NDArray[np.int64]], i: int) -> list[int]:
        """Chained keys of prompt ``i`` of ``block_ids`` (as plain ints; not to be changed)."""
        last_i, last_ids, last = self._last
        if i == last_i and block_ids[i] is last_ids:
            return last
        out = self._of(block_ids, i)
        self._last = (i, block_ids[i], out)
        return out

    def _of(self, block_ids: Sequence[npt.NDArray[np.int64]], i: int) -> list[int]:
        b, at = divmod(i, self.batch)
        done = self._done.get(b)
        if done is None:
            sources = list(block_ids[b * self.batch : (b + 1) * self.batch])
            done = self._done[b] = (sources, chain_keys_many(sources))
            if len(self._done) > self.kept:
                del self._done[next(iter(self._done))]
        sources, keys = done
        if at >= len(sources) or sources[at] is not block_ids[i]:  # added or replaced since
            return list(chain_keys(block_ids[i]))
        out: list[int] = keys[at].tolist()
        return out


def check_block_sizes(block_tokens: int, engine_block_tokens: int) -> None:
    """Refuse block sizes where neither divides the other (keys would straddle blocks)."""
    if block_tokens < 1 or engine_block_tokens < 1:
        raise ConfigError(
            "block sizes must be positive token counts",
            value=(block_tokens, engine_block_tokens),
            allowed="integers >= 1",
        )
    if block_tokens % engine_block_tokens and engine_block_tokens % block_tokens:
        raise ConfigError(
            f"content blocks of {block_tokens} tokens cannot be mapped onto engine blocks of "
            f"{engine_block_tokens} tokens",
            value=engine_block_tokens,
            allowed="an engine block size that divides the content block size or is a multiple",
        )


def token_block_ids(token_ids: Sequence[int], block_tokens: int) -> tuple[int, ...]:
    """Block ids of a tokenised prompt: one content hash per block (the last may be partial)."""
    if block_tokens < 1:
        raise ConfigError("block_tokens must be >= 1", value=block_tokens, allowed=">= 1")
    ids: list[int] = []
    for start in range(0, len(token_ids), block_tokens):
        block = token_ids[start : start + block_tokens]
        digest = hashlib.blake2b(
            b"".join(int(t).to_bytes(8, "little", signed=True) for t in block), digest_size=8
        ).digest()
        ids.append(int.from_bytes(digest, "little") & _MASK63)
    return tuple(ids)


def pseudo_tokens(text: str) -> list[int]:
    """Text as tokens when no tokenizer is at hand: one per ``CHARS_PER_PSEUDO_TOKEN`` chars."""
    data = text.encode("utf-8")
    step = CHARS_PER_PSEUDO_TOKEN
    return [int.from_bytes(data[i : i + step], "little") for i in range(0, len(data), step)]


def text_block_ids(
    text: str, block_tokens: int, token_ids: Sequence[int] | None = None
) -> tuple[int, ...]:
    """Block ids of live prompt text: from its token ids when known, else from its UTF-8
    bytes in blocks of ``block_tokens`` pseudo-tokens (one hash per block: this runs on the
    gateway's and the emulator's request path, so it must cost microseconds, not a loop
    over every token)."""
    if token_ids is not None:
        return token_block_ids(token_ids, block_tokens)
    if block_tokens < 1:
        raise ConfigError("block_tokens must be >= 1", value=block_tokens, allowed=">= 1")
    data = text.encode("utf-8")
    step = block_tokens * CHARS_PER_PSEUDO_TOKEN
    blake2b = hashlib.blake2b
    return tuple(
        int.from_bytes(blake2b(data[i : i + step], digest_size=8).digest(), "little") & _MASK63
        for i in range(0, len(data), step)
    )


__all__ = [
    "CHARS_PER_PSEUDO_TOKEN",
    "ROOT_KEY",
    "ChainedKeys",
    "chain_keys",
    "chain_keys_many",
    "check_block_sizes",
    "engine_block_keys",
    "engine_keys_of_chain",
    "mix",
    "mix_array",
    "pseudo_tokens",
    "text_block_ids",
    "token_block_ids",
]
