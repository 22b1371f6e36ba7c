"""Request bodies for an OpenAI-compatible endpoint: prompt text of a given token length.

A synthetic prompt is a run of common three-letter English words separated by spaces,
so each word is one token in the BPE tokenizers of today's models and a prompt of
``n`` tokens is about ``4 n`` characters (the usual rule of thumb of ~4 characters per
token). Each request's text starts at a different place in a fixed pool, so prompts
differ and prefix caches do not merge them. A trace's own prompt text is sent as is.

A request with block ids (``RequestArrays.block_ids``, e.g. a Mooncake trace's
``hash_ids``) gets text that reproduces their structure instead (:func:`block_prompt`):
each block id becomes ``block_tokens`` words drawn from a generator seeded by the id, so
equal ids give equal text and different ids different text, every word four bytes
("xyz "). Four bytes is the pseudo-token of :func:`sincere.core.prefix.text_block_ids`, so
that mapping at any block size dividing ``block_tokens`` (the gateway's 16 under
Mooncake's 512) sees prompts sharing exactly the trace's leading blocks, and a real
tokenizer sees about one token per word, so the server's prefix cache does too. A prompt's
last block may be partial (a prefix of its block's text); tokens past the ids' blocks are
the request's own synthetic text (new content).

Bodies carry ``max_tokens`` = the request's output tokens and, unless disabled, the
sincere extension ``"sincere": {"output_tokens": n, "prompt_tokens": p}``, which makes
sincere's emulated engines generate exactly ``n`` tokens; other servers ignore it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np

from sincere.core.errors import ConfigError
from sincere.core.request import RequestArrays

Api = Literal["completions", "chat"]

_WORD_TEXT = (
    "the and for are but not you all any can had her was one our out day get has him his how "
    "man new now old see two way who boy did its let put say she too use cat dog sun run big "
    "red box car cup far few fun hat hot job key law low map net oil pen pig raw sea sky tea top"
)
_WORDS = tuple(_WORD_TEXT.split(" "))
_POOL_WORDS = 1 << 16  # words in the shared pool (prompts are slices of it)
_CHARS_PER_TOKEN = 4


def _pool() -> str:
    rng = np.random.default_rng(0x51CE7E)  # fixed: the pool is part of the format
    picks = rng.integers(0, len(_WORDS), size=_POOL_WORDS)
    return " ".join(np.asarray(_WORDS)[picks].tolist()) + " "


_POOL = _pool()


def synthetic_prompt(num_tokens: int, index: int = 0) -> str:
    """About ``num_tokens`` tokens of text (~4 characters each), varied by ``index``."""
    if num_tokens < 1:
        raise ConfigError("prompt length must be >= 1 token", value=num_tokens)
    span = _POOL_WORDS - 1
    parts: list[str] = []
    left = num_tokens
    start = (index * 7919) % span
    while left > 0:
        take = min(left, span - start)
        parts.append(_POOL[start * _CHARS_PER_TOKEN : (start + take) * _CHARS_PER_TOKEN])
        left -= take
        start = 0
    return "".join(parts).rstrip()


_BLOCK_SALT = 0xB10C_7E47


class BlockTexts:
    """Text per block id, ``block_tokens`` four-byte words each (cached: ids repeat)."""

    def __init__(self, block_tokens: int) -> None:
        if block_tokens < 1:
            raise ConfigError("block_tokens must be >= 1", value=block_tokens, allowed=">= 1")
        self.block_tokens = block_tokens
        self._words = np.asarray([w + " " for w in _WORDS])
        self._cache: dict[int, str] = {}

    def text(self, block_id: int) -> str:
        """The block's text: the same for the same id in every run and process."""
        got = self._cache.get(block_id)
        if got is None:
            rng = np.random.default_rng([int(block_id) & ((1 << 64) - 1), _BLOCK_SALT])
            picks = rng.integers(0, len(self._words), size=self.block_tokens)
            got = self._cache[block_id] = "".join(self._words[picks].tolist())
        return got


def block_prompt(
    block_ids: Sequence[int], prompt_tokens: int, texts: BlockTexts, index: int = 0
) -> str:
    """A prompt of ``prompt_tokens`` words whose blocks reproduce ``block_ids``' structure."""
    b = texts.block_tokens
    covered = min(prompt_tokens, len(block_ids) * b)
    parts = [texts.text(int(block_id)) for block_id in block_ids[: covered // b]]
    if covered % b:
        parts.append(texts.text(int(block_ids[covered // b]))[: (covered % b) * _CHARS_PER_TOKEN])
    if prompt_tokens > covered:  # new content: this request's own words, 4 bytes each
        parts.append(synthetic_prompt(prompt_tokens - covered, index) + " ")
    return "".join(parts)


def prompt_texts(requests: RequestArrays) -> list[str]:
    """Each request's prompt: the trace's text where it has one, else text reproducing its
    block ids where it has them, else synthetic text."""
    given = requests.prompts or (None,) * len(requests)
    lengths = requests.prompt_tokens.tolist()
    texts = BlockTexts(requests.block_tokens) if requests.block_ids else None
    out = []
    for i, (text, n) in enumerate(zip(given, lengths, strict=True)):
        if text is None and texts is not None and len(requests.block_ids[i]):
            text = block_prompt(requests.block_ids[i].tolist(), int(n), texts, i)
        out.append(text if text is not None else synthetic_prompt(int(n), i))
    return out


def request_body(
    *,
    api: Api,
    model: str,
    prompt: str,
    prompt_tokens: int,
    output_tokens: int,
    stream: bool,
    sincere_extension: bool = True,
    ignore_eos: bool = False,
) -> dict[str, Any]:
    """The JSON body of one completions or chat-completions call; ``ignore_eos`` adds
    vLLM's ``ignore_eos`` and ``min_tokens`` so a real engine makes exactly
    ``output_tokens`` tokens (as benchmark clients ask)."""
    body: dict[str, Any] = {"model": model, "max_tokens": output_tokens, "stream": stream}
    if api == "chat":
        body["messages"] = [{"role": "user", "content": prompt}]
    else:
        body["prompt"] = prompt
    if stream:
        body["stream_options"] = {"include_usage": True}
    if sincere_extension:
        body["sincere"] = {"output_tokens": output_tokens, "prompt_tokens": prompt_tokens}
    if ignore_eos:
        body.update(ignore_eos=True, min_tokens=output_tokens)
    return body


def endpoint_url(url: str, api: Api) -> str:
    """The full endpoint: ``url`` as is when it names one, else ``/v1/<api path>`` added."""
    if api not in ("completions", "chat"):
        raise ConfigError("unknown API", value=api, allowed=("chat", "completions"))
    if not url.startswith(("http://", "https://")):
        raise ConfigError("the URL must start with http:// or https://", value=url)
    base = url.rstrip("/")
    if base.endswith("/completions"):
        return base
    path = "chat/completions" if api == "chat" else "completions"
    return f"{base}/{path}" if base.endswith("/v1") else f"{base}/v1/{path}"
