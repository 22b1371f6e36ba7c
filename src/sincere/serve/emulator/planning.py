"""What an emulated engine answers, decided before the engine sees a request.

The :class:`RequestPlanner` reads a request as vLLM 0.32.0 reads it (body limit, the
shared parser, a 422 turned into vLLM's 400), resolves its tier, and plans every choice of
every prompt: its cap, its ground-truth length (``sincere.output_tokens``, else a draw
from ``output_lengths``, else the cap) and its text (:mod:`.text`). It also draws the
injected errors (``failures.error_rate``). Its random draws come from the generators it is
given (seeded by the server from ``seed``).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from aiohttp import web

from sincere.catalog.specs import ModelArch
from sincere.core.errors import ConfigError
from sincere.serve.emulator import choices
from sincere.serve.emulator.answer import Reply, response_id
from sincere.serve.emulator.choices import Prompt, prompts_of
from sincere.serve.emulator.config import EmulatorConfig
from sincere.serve.emulator.live import LiveEngine
from sincere.serve.emulator.metrics import EmulatorMetrics
from sincere.serve.emulator.text import plan_text
from sincere.serve.emulator.vllm_api import Shaping, num_choices
from sincere.serve.protocol import CompletionRequest, Kind, ProtocolError
from sincere.serve.protocol import parse_request as parse_openai


class RequestPlanner:
    """Parses requests and plans their answers for one emulated engine."""

    def __init__(
        self,
        config: EmulatorConfig,
        arch: ModelArch,
        model_name: str,
        metrics: EmulatorMetrics,
        fingerprint: str,
        length_rng: np.random.Generator,
        error_rng: np.random.Generator,
    ) -> None:
        self.config = config
        # names a request may use: the served name, the catalog name and its aliases
        self.accepted_models = frozenset({model_name, arch.name, *arch.aliases})
        self.max_context = config.engine.max_model_len or arch.max_context
        self.tier_index = {t.name: k for k, t in enumerate(config.tiers)}
        self.metrics = metrics  # counts the injected errors
        self.fingerprint = fingerprint
        self._length_rng = length_rng
        self._error_rng = error_rng
        self._lengths = _length_sampler(config)

    async def parse(self, request: web.Request, kind: Kind) -> CompletionRequest:
        """The request's body read (within the body limit) and parsed as vLLM parses it."""
        limit = self.config.max_body_bytes
        if request.content_length is not None and request.content_length > limit:
            raise ProtocolError(
                413,
                f"request body: got {request.content_length} bytes; allowed: at most {limit}",
                code="body_too_large",
            )
        try:
            raw = await request.read()
        except web.HTTPRequestEntityTooLarge:
            raise ProtocolError(
                413, f"request body is over the limit; allowed: at most {limit} bytes"
            ) from None
        try:
            return parse_openai(
                raw,
                kind,
                headers=request.headers,
                models=self.accepted_models,
                max_context=self.max_context,
                max_body_bytes=limit,
                multi=True,
            )
        except ProtocolError as exc:
            if exc.status != 422:
                raise
            raise ProtocolError(400, exc.message, param=exc.param) from None  # vLLM: 400

    def replies(
        self, req: CompletionRequest, request_id: str, shaping: Shaping, live: LiveEngine | None
    ) -> tuple[list[Prompt], list[Reply]]:
        """The prompts and every choice's identity and text, planned before they reach the
        engine (an unknown tier is refused before a length is drawn; ``live``: the engine
        whose room is checked, None before it started); choice ``c`` of
        prompt ``p`` is answer ``p * n + c``, as vLLM numbers them."""
        self.tier_of(req)
        prompts = prompts_of(req, self.config.prefix_block_tokens)
        n = num_choices(req.body)
        choices.check_room(len(prompts) * n, self.config.max_num_requests, live)
        filler, stamp = self.config.token_text, self.fingerprint
        replies = [_new_reply(req, prompt, p * n + c, request_id, shaping,
                              self.lengths_of(req, prompt.num_tokens), filler, stamp)
                   for p, prompt in enumerate(prompts) for c in range(n)]  # fmt: skip
        return prompts, replies

    def inject_error(self) -> None:
        """Raise the injected 500 with probability ``failures.error_rate`` (counted)."""
        rate = self.config.failures.error_rate
        if rate > 0 and self._error_rng.random() < rate:
            self.metrics.injected_errors.inc()
            raise ProtocolError(500, "injected failure (emulator error_rate)", code="injected")

    def lengths_of(self, req: CompletionRequest, prompt_tokens: int) -> tuple[int, int]:
        """(max_tokens, ground-truth output tokens) of one choice of a prompt."""
        cap = req.max_tokens
        if cap is None:
            cap = max(1, min(self.config.default_max_tokens, self.max_context - prompt_tokens))
        out = req.sincere.output_tokens
        if out is None and self._lengths is not None:
            out = int(self._lengths.sample(self._length_rng, 1)[0])
        return cap, min(out or cap, cap)

    def tier_of(self, req: CompletionRequest) -> int:
        """The index of the request's ``sincere.tier`` (0: none asked or none configured)."""
        name = req.sincere.tier
        if name is None or not self.tier_index:
            return 0
        if name not in self.tier_index:
            raise ProtocolError(
                400,
                f"sincere.tier: got {name!r}; allowed: {', '.join(sorted(self.tier_index))}",
                param="sincere.tier",
            )
        return self.tier_index[name]


def _new_reply(
    req: CompletionRequest,
    prompt: Prompt,
    index: int,
    request_id: str,
    shaping: Shaping,
    lengths: tuple[int, int],
    token_text: str,
    fingerprint: str,
) -> Reply:
    """Choice ``index`` of ``req``'s answer to ``prompt``: ``lengths`` (its cap, its
    ground-truth length) and the text."""
    cap, out = lengths
    plan = plan_text(shaping, token_text, out, at_cap=out >= cap)
    echo = prompt.text if prompt.text is not None else token_text * prompt.num_tokens
    return Reply(
        kind=req.kind, request_id=request_id, id=response_id(req.kind, request_id),
        created=int(time.time()),
        model=req.model, fingerprint=fingerprint, shaping=shaping, plan=plan,
        prompt_tokens=prompt.num_tokens, prompt_text=echo, include_usage=req.include_usage,
        max_tokens=cap, index=index,
    )  # fmt: skip


def _length_sampler(config: EmulatorConfig) -> Any:
    if config.output_lengths is None:
        return None
    from sincere.workload.lengths import make_lengths

    params = dict(config.output_lengths)
    kind = params.pop("kind", None)
    if not isinstance(kind, str):
        raise ConfigError(
            "output_lengths needs a kind", value=kind, allowed="fixed, uniform, lognormal, ..."
        )
    return make_lengths(kind, **params)
