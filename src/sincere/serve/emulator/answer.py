"""The emulator's response bodies, shaped as vLLM 0.32.0's OpenAI server writes them.

Non-streamed: ``id`` (``cmpl-`` / ``chatcmpl-`` then the client's ``X-Request-Id`` or 16
random hex digits, as vLLM), ``created`` (Unix seconds when the request was taken, as
vLLM), ``system_fingerprint``, per choice ``finish_reason`` and ``stop_reason`` (the stop
string that ended the text, else ``null``), ``logprobs`` in the completions shape
(``text_offset`` / ``token_logprobs`` / ``tokens`` / ``top_logprobs``) or the chat shape
(``content: [{token, logprob, bytes, top_logprobs}]``), and ``usage``.

Streamed: one chunk per token; the last token's chunk carries ``finish_reason``; with
``stream_options.continuous_usage_stats`` every chunk carries the usage so far; with
``include_usage`` a last chunk has no choices, the usage and the fingerprint (else the
fingerprint rides on the finishing chunk). A chat stream opens with a chunk holding the
assistant role and empty content. ``echo`` puts the prompt before the first token's text
(token-id prompts echo one filler token per id: there is no tokenizer to decode them).

Ids are random (``uuid4``), as vLLM's, not drawn from the seed: they name an answer and
never change its timing, and must differ across instances and runs.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass
from typing import Any

from sincere.serve.emulator.live import Finish
from sincere.serve.emulator.metrics import VLLM_VERSION
from sincere.serve.emulator.text import TOKEN_LOGPROB, TextPlan, split_text, top_alternatives
from sincere.serve.emulator.vllm_api import Shaping
from sincere.serve.protocol import Kind, ProtocolError

SSE_HEADERS = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
REJECT_STATUS = {"prompt_too_long": 400, "over_context": 400, "kv_capacity": 400}
"""The status of an engine's rejection (others: 503)."""

_OBJECT = {"completion": "text_completion", "chat": "chat.completion"}
_CHUNK = {"completion": "text_completion", "chat": "chat.completion.chunk"}


def random_request_id() -> str:
    """16 random hex digits (vLLM's ``random_uuid``)."""
    return f"{uuid.uuid4().int & (2**64 - 1):016x}"


def response_id(kind: Kind, request_id: str) -> str:
    """``cmpl-<request id>`` or ``chatcmpl-<request id>``, as vLLM names its answers."""
    return f"{'chatcmpl' if kind == 'chat' else 'cmpl'}-{request_id}"


def fingerprint(config: Any) -> str:
    """``sincere-emulator-vllm-<version>[-tpN][-ppN]-<hash8>``: the hash of the config,
    so answers of differently configured emulators say so (vLLM hashes its config too)."""
    text = json.dumps(config.model_dump(mode="json"), sort_keys=True, default=str)
    parts = [f"sincere-emulator-vllm-{VLLM_VERSION}"]
    parts += [f"{k}{v}" for k, v in (("tp", config.tp), ("pp", config.pp)) if v > 1]
    parts.append(hashlib.sha256(text.encode()).hexdigest()[:8])
    return "-".join(parts)


@dataclass(frozen=True, slots=True)
class Reply:
    """Everything an answer's bodies need but the tokens' count."""

    kind: Kind
    request_id: str  # the client's X-Request-Id, else a random one
    id: str  # the answer's id: cmpl-<request id> or chatcmpl-<request id>
    created: int  # Unix seconds the request was taken
    model: str  # the model name as the client wrote it
    fingerprint: str
    shaping: Shaping
    plan: TextPlan
    prompt_tokens: int
    prompt_text: str  # what echo puts first
    include_usage: bool  # stream_options.include_usage
    max_tokens: int  # the cap the engine runs it under
    index: int = 0  # the choice's index: prompt's position * n + the choice's

    @property
    def finish_reason(self) -> str:
        """How the planned answer ends: ``"length"`` at the cap, else ``"stop"``."""
        at_cap = self.plan.num_tokens >= self.max_tokens and self.plan.stop_reason is None
        return "length" if at_cap else "stop"

    def usage(self, completion_tokens: int, cached: int | None = None) -> dict[str, Any]:
        """vLLM's ``usage`` (``prompt_tokens_details`` when prefix caching reports)."""
        return {
            "prompt_tokens": self.prompt_tokens,
            "total_tokens": self.prompt_tokens + completion_tokens,
            "completion_tokens": completion_tokens,
            "prompt_tokens_details": None if cached is None else {"cached_tokens": cached},
        }

    def full(self, num_tokens: int, finish_reason: str, cached: int | None) -> dict[str, Any]:
        """The non-streamed body of an answer of ``num_tokens`` tokens."""
        text = self.plan.text(num_tokens)
        stop_reason = self.plan.stop_reason if finish_reason == "stop" else None
        choice = self._choice(text, self._logprobs(0, num_tokens, self.shaping.echo))
        choice.update(finish_reason=finish_reason, stop_reason=stop_reason)
        return {
            "id": self.id,
            "object": _OBJECT[self.kind],
            "created": self.created,
            "model": self.model,
            "choices": [choice],
            "service_tier": None,
            "system_fingerprint": self.fingerprint,
            "usage": self.usage(num_tokens, cached),
        }  # kv_transfer_params only on a prefill's answer (vLLM writes null elsewhere)

    def _choice(self, text: str, logprobs: dict[str, Any] | None) -> dict[str, Any]:
        if self.kind == "completion":
            prompt = self.prompt_text if self.shaping.echo else ""
            return {"index": self.index, "text": prompt + text, "logprobs": logprobs}
        message = {"role": "assistant", "content": text, "refusal": None, "annotations": None,
                   "audio": None, "function_call": None, "reasoning": None}  # fmt: skip
        return {"index": self.index, "message": message, "logprobs": logprobs}

    def role_chunk(self) -> dict[str, Any]:
        """A chat stream's opening chunk: the assistant role, empty content."""
        delta = {"role": "assistant", "content": ""}
        chunk = self._chunk(
            {"index": self.index, "delta": delta, "logprobs": None, "finish_reason": None}
        )
        if self.shaping.continuous_usage:
            chunk["usage"] = self.usage(0)
        return chunk

    def token_chunk(self, k: int, finish_reason: str | None) -> dict[str, Any]:
        """The chunk of token ``k`` (0-based); the last one carries ``finish_reason``."""
        piece = self.plan.pieces[k]
        echo = self.shaping.echo and k == 0
        logprobs = self._logprobs(k, k + 1, echo)
        if self.kind == "completion":
            text = (self.prompt_text if echo else "") + piece
            choice: dict[str, Any] = {"index": self.index, "text": text, "logprobs": logprobs}
        else:
            choice = {"index": self.index, "delta": {"content": piece}, "logprobs": logprobs}
        stop = self.plan.stop_reason if finish_reason == "stop" else None
        choice.update(finish_reason=finish_reason, stop_reason=stop)
        chunk = self._chunk(choice)
        if self.shaping.continuous_usage:
            chunk["usage"] = self.usage(k + 1)
        if finish_reason is not None and not self.include_usage:
            chunk["system_fingerprint"] = self.fingerprint
        return chunk

    def end_chunk(self, num_tokens: int, finish_reason: str) -> dict[str, Any]:
        """A finishing chunk without text (an answer that ended before its last token)."""
        if self.kind == "completion":
            choice: dict[str, Any] = {"index": self.index, "text": "", "logprobs": None}
        else:
            choice = {"index": self.index, "delta": {"content": ""}, "logprobs": None}
        choice.update(finish_reason=finish_reason, stop_reason=None)
        chunk = self._chunk(choice)
        if self.shaping.continuous_usage:
            chunk["usage"] = self.usage(num_tokens)
        return chunk

    def usage_chunk(self, num_tokens: int, cached: int | None) -> dict[str, Any]:
        """The last chunk of a stream with ``include_usage``."""
        usage = self.usage(num_tokens, cached)
        if cached is None:
            del usage["prompt_tokens_details"]  # vLLM leaves out what is null here
        chunk = self._chunk(None)
        chunk.update(usage=usage, system_fingerprint=self.fingerprint)
        return chunk

    def _chunk(self, choice: dict[str, Any] | None) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": _CHUNK[self.kind],
            "created": self.created,
            "model": self.model,
            "choices": [] if choice is None else [choice],
        }

    # ---------------------------------------------------------------- logprobs

    def _logprobs(self, start: int, end: int, echo: bool) -> dict[str, Any] | None:
        """Emulated logprobs of generated tokens ``start:end`` (with the prompt's first
        when ``echo``), in the request kind's shape; ``None`` when none were asked."""
        count = self.shaping.logprobs
        if count is None:
            return None
        pieces = list(self.plan.pieces[start:end])
        if self.kind == "chat":
            return {"content": [_chat_entry(p, count) for p in pieces]}
        return self._completion_logprobs(pieces, count, echo, start)

    def _completion_logprobs(
        self, pieces: list[str], count: int, echo: bool, start: int
    ) -> dict[str, Any]:
        alternatives = top_alternatives(max(count, 1))
        prompt = list(split_text(self.prompt_text, self.prompt_tokens)) if echo else []
        offset = 0
        if not echo:  # a later streamed token: after the echoed prompt and earlier tokens
            offset = len(self.prompt_text) if self.shaping.echo else 0
            offset += sum(len(p) for p in self.plan.pieces[:start])
        tokens = prompt + pieces
        offsets = []
        for token in tokens:
            offsets.append(offset)
            offset += len(token)
        given: list[float | None] = [TOKEN_LOGPROB] * len(tokens)
        tops: list[dict[str, float] | None] = [
            {t: TOKEN_LOGPROB, **dict(alternatives)} for t in tokens
        ]
        if prompt:  # the first prompt token has no logprob
            given[0], tops[0] = None, None
        return {"text_offset": offsets, "token_logprobs": given, "tokens": tokens,
                "top_logprobs": tops}  # fmt: skip


def _chat_entry(token: str, count: int) -> dict[str, Any]:
    """One generated token's chat logprobs entry with ``count`` top alternatives."""
    tops = [(token, TOKEN_LOGPROB), *top_alternatives(count)][:count]
    return {
        "token": token,
        "logprob": TOKEN_LOGPROB,
        "bytes": list(token.encode()),
        "top_logprobs": [{"token": t, "logprob": lp, "bytes": list(t.encode())} for t, lp in tops],
    }


def raise_rejected(outcome: Finish) -> None:
    """Turn an engine rejection into the error an engine would answer."""
    reason = outcome.reject_reason
    if reason is None:
        return
    status = REJECT_STATUS.get(reason, 503)
    why = outcome.reject_detail or reason
    raise ProtocolError(
        status, f"the engine rejected the request: {why}", code=reason, param="prompt"
    )
