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
from sincere.serve.protocol import CompletionRequest


def _token_ids(body: Mapping[str, Any]) -> list[int] | None:
    """A completions body's prompt as token ids, when it is given as ids."""
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], list):
        prompt = prompt[0]
    if isinstance(prompt, list) and prompt and all(isinstance(t, int) for t in prompt):
        return [int(t) for t in prompt]
    return None


def prompt_block_ids(
    creq: CompletionRequest, block_tokens: int, prompt_tokens: int | None = None
) -> tuple[int, ...]:
    """Block ids of ``creq``'s prompt (text or token ids); () when it has neither.

    Cut to the blocks ``prompt_tokens`` (default ``creq.prompt_tokens``) can fill, so a
    counted length below the text's pseudo-token length never describes more blocks than
    the prompt has.
    """
    if creq.prompt is not None:
        ids = text_block_ids(creq.prompt, block_tokens) if creq.prompt else ()
    else:
        tokens = _token_ids(creq.body) if creq.kind == "completion" else None
        ids = text_block_ids("", block_tokens, token_ids=tokens) if tokens else ()
    count = creq.prompt_tokens if prompt_tokens is None else prompt_tokens
    return ids[: -(-max(1, count) // block_tokens)]
