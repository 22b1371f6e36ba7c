"""Which requests an engine can ever serve: vLLM's context rule and the KV cache's size.

A request of ``prompt`` tokens that is to make ``target`` output tokens and asked for
``asked`` (its ``max_tokens``, checked against the context even when the engine makes
fewer: a prefill instance makes one token but refuses what its decode could not hold) is
refused at once when

* ``prompt >= max_model_len`` -- no room for even one output token (``prompt_too_long``);
* ``prompt + asked > max_model_len`` -- vLLM's rule (``over_context``);
* the longest prefill it may need, a recompute of its prompt and all but one output
  token, needs more KV blocks than the cache has above its watermark (``kv_capacity``).

An engine without ``max_model_len`` has no context limit.
"""

from __future__ import annotations

from sincere.engine.kv import blocks_for
from sincere.engine.state import EngineLimits


class RequestFit:
    """The static limits a request is checked against when it reaches an engine."""

    def __init__(self, limits: EngineLimits) -> None:
        self.limits = limits
        # longest prompt + max_tokens; the limit's or, when it has none, no limit at all
        self.max_model_len = (1 << 62) if limits.max_model_len is None else limits.max_model_len
        # prompt + output tokens that always fit (blocks_for(prompt + target - 1) <= most)
        self.fits_tokens = (limits.num_kv_blocks - limits.watermark_blocks) * limits.block_size

    def reject_reason(self, prompt: int, target: int, asked: int) -> str | None:
        """Why the request can never be served here (module docstring); ``None`` when it
        can."""
        lim = self.limits
        if prompt >= self.max_model_len:
            return "prompt_too_long"
        if prompt + asked > self.max_model_len:
            return "over_context"
        most = lim.num_kv_blocks - lim.watermark_blocks
        if blocks_for(prompt + target - 1, lim.block_size) > most:
            return "kv_capacity"
        return None
