"""Request bodies for an OpenAI-compatible endpoint: prompt text of a given token length.

A synthetic prompt is a run of common three-letter English words separated by spaces,
so each word is one token in the BPE tokenizers of today's models and a prompt of
``n`` tokens is about ``4 n`` characters (the usual rule of thumb of ~4 characters per
token). Each request's text starts at a different place in a fixed pool, so prompts
differ and prefix caches do not merge them. A trace's own prompt text is sent as is.

Bodies carry ``max_tokens`` = the request's output tokens and, unless disabled, the
sincere extension ``"sincere": {"output_tokens": n, "prompt_tokens": p}``, which makes
sincere's emulated engines generate exactly ``n`` tokens; other servers ignore it.
"""

from __future__ import annotations

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


def prompt_texts(requests: RequestArrays) -> list[str]:
    """Each request's prompt: the trace's text where it has one, else synthetic text."""
    given = requests.prompts or (None,) * len(requests)
    lengths = requests.prompt_tokens.tolist()
    return [
        text if text is not None else synthetic_prompt(int(n), i)
        for i, (text, n) in enumerate(zip(given, lengths, strict=True))
    ]


def request_body(
    *,
    api: Api,
    model: str,
    prompt: str,
    prompt_tokens: int,
    output_tokens: int,
    stream: bool,
    sincere_extension: bool = True,
) -> dict[str, Any]:
    """The JSON body of one completions or chat-completions call."""
    body: dict[str, Any] = {"model": model, "max_tokens": output_tokens, "stream": stream}
    if api == "chat":
        body["messages"] = [{"role": "user", "content": prompt}]
    else:
        body["prompt"] = prompt
    if stream:
        body["stream_options"] = {"include_usage": True}
    if sincere_extension:
        body["sincere"] = {"output_tokens": output_tokens, "prompt_tokens": prompt_tokens}
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
