"""A parsed request's prompt content as block ids: what prefix caches and routers compare.

The gateway (for its routers) and the emulator (for its engine's prefix cache) describe a
prompt the same way, with :func:`sincere.core.prefix.text_block_ids`: the prompt text (a
chat's messages rendered as ``role: content`` lines, as the token count reads them), or
the token ids of a completion given as ids, hashed in blocks of ``block_tokens``. A
batched completion (several prompts) is described by its first prompt.

Images. A chat message's ``image_url`` part is rendered into that text as
``<image:HASH>`` (:func:`image_placeholder`: the first 16 hex digits of the SHA-256 of
its URL, a ``data:`` URL's bytes included), so two prompts that differ only in an image
share no block from the image on. Each image counts a fixed number of prompt tokens
(:data:`DEFAULT_IMAGE_TOKENS` unless the caller's rule says otherwise, see
:func:`image_tokens_rule`): a LLaVA-1.5-style encoder turns every image into 576 tokens
(a 336-pixel image in 14-pixel patches, 24 x 24), whatever its size.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from typing import Any

from sincere.core.prefix import text_block_ids

DEFAULT_IMAGE_TOKENS = 576
"""Prompt tokens one image counts when no rule for its model is given (LLaVA-1.5: 24 x 24)."""

ImageTokens = Callable[[str], int]
"""Prompt tokens one image counts for a model (the model's name in, tokens out)."""


def image_tokens_rule(
    by_model: Mapping[str, int] | None = None, default: int = DEFAULT_IMAGE_TOKENS
) -> ImageTokens:
    """The rule that counts ``by_model[model]`` tokens per image, else ``default``."""
    table = dict(by_model or {})
    return lambda model: table.get(model, default)


def image_placeholder(url: str) -> str:
    """What an image stands as in a prompt's text: ``<image:HASH>`` (SHA-256 of its URL)."""
    return f"<image:{hashlib.sha256(url.encode('utf-8', 'replace')).hexdigest()[:16]}>"


def _token_ids(body: Mapping[str, Any]) -> list[int] | None:
    """A completions body's prompt as token ids, when it is given as ids (a batch: its first)."""
    prompt = body.get("prompt")
    if isinstance(prompt, list) and prompt and isinstance(prompt[0], list):
        prompt = prompt[0]
    if isinstance(prompt, list) and prompt and all(isinstance(t, int) for t in prompt):
        return [int(t) for t in prompt]
    return None


def prompt_block_ids(
    prompt: str | None, body: Mapping[str, Any], prompt_tokens: int, block_tokens: int
) -> tuple[int, ...]:
    """Block ids of a parsed request's prompt; () when it has neither text nor token ids.

    ``prompt``: its text (a chat's rendered messages), ``None`` when the body gives token
    ids (read from ``body``). Cut to the blocks ``prompt_tokens`` (the counted length) can
    fill, so a count below the text's pseudo-token length never describes more blocks
    than the prompt has.
    """
    if prompt is not None:
        ids = text_block_ids(prompt, block_tokens) if prompt else ()
    else:
        tokens = _token_ids(body)
        ids = text_block_ids("", block_tokens, token_ids=tokens) if tokens else ()
    return ids[: -(-max(1, prompt_tokens) // block_tokens)]
