"""A parsed request's prompt content as block ids: what prefix caches and routers compare.

The gateway (for its routers) and the emulator (for its engine's prefix cache) describe a
prompt the same way, with :func:`sincere.core.prefix.text_block_ids`: the prompt text (a
chat's messages rendered as ``role: content`` lines, as the token count reads them), or
the token ids of a completion given as ids, hashed in blocks of ``block_tokens``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sincere.core.prefix import text_block_ids


def _token_ids(body: Mapping[str, Any]) -> list[int] | None:
    """A completions body's prompt as token ids, when it is given as ids."""
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], list):
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
