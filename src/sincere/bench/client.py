"""One HTTP call to an OpenAI-compatible endpoint, timed token by token.

Streaming calls read the server-sent events (``data: {...}`` lines ending with
``data: [DONE]``) and time every chunk that carries text: the first is the first
token, the gaps between them are the inter-token latencies (vLLM's ITL). A chunk
is counted as one token unless the server reports ``usage.completion_tokens``
(sent when ``stream_options.include_usage`` is honoured), which then wins.
Non-streaming calls only see the whole answer: no first-token time, no gaps.

A server that reports ``usage.prompt_tokens_details.cached_tokens`` (OpenAI's field; vLLM
with prefix caching on) has it kept: the prompt tokens it served from its prefix cache.

A server may report its own queueing delay and the instance that served the call
in a ``sincere`` object of the body or last chunk (``{"queue_s": .., "instance":
..}``) or in the ``x-sincere-instance`` header; both are optional.

A disaggregating gateway (:mod:`sincere.serve.gateway.pd_relay`) names the prefill
instance and its time in headers (``x-sincere-prefill-instance``, ``x-sincere-prefill-s``:
its arrival to the prefill's answer, the end of the prefill as the simulator takes it),
and relays the decode instance's ``x-sincere-kv-transfer-s`` / ``x-sincere-kv-wait-s``;
they are kept.

Times come from one monotonic clock (``time.perf_counter``), relative to ``t0``.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp

INSTANCE_HEADER = "x-sincere-instance"
PHASE_HEADERS = {
    "x-sincere-prefill-s": "prefill_s",
    "x-sincere-kv-transfer-s": "kv_transfer_s",
    "x-sincere-kv-wait-s": "kv_wait_s",
}
"""Headers of a disaggregated answer, by the :class:`CallTiming` field they fill."""
PREFILL_CACHED_HEADER = "x-sincere-prefill-cached-tokens"
"""A disaggregated answer's prefill instance's ``cached_tokens`` (its prompt's hits)."""


@dataclass(eq=False)
class CallTiming:
    """What one call measured (seconds since the run's start; NaN = did not happen)."""

    sent_at: float = float("nan")
    first_token_at: float = float("nan")
    finished_at: float = float("nan")
    chunk_at: list[float] = field(default_factory=list)  # arrival of each text chunk
    usage_tokens: int | None = None  # usage.completion_tokens, when reported
    cached_tokens: int | None = None  # usage.prompt_tokens_details.cached_tokens, when reported
    queue_s: float | None = None  # server-reported queueing delay
    instance: str | None = None  # server-reported instance
    error: str | None = None  # reject reason: http_<status>, connection_error, bad_response
    # disaggregated serving (None: not reported): the prefill instance, the gateway's
    # arrival-to-prefill-answer, the KV transfer (link queueing included), decode admission
    prefill_instance: str | None = None
    prefill_s: float | None = None
    # the prefill instance's cached prompt tokens (the decode side computes no prompt)
    prefill_cached_tokens: int | None = None
    kv_transfer_s: float | None = None
    kv_wait_s: float | None = None

    @property
    def output_tokens(self) -> int:
        """Tokens generated: the server's usage count, else the text chunks seen."""
        return self.usage_tokens if self.usage_tokens is not None else len(self.chunk_at)

    @property
    def coalesced(self) -> bool:
        """A stream whose server reported more tokens than it sent text chunks.

        Some chunk then carried several tokens (a server that batches its writes when
        it falls behind), so the first-token time and the gaps seen here are later and
        fewer than the engine's.
        """
        return bool(self.chunk_at) and (self.usage_tokens or 0) > len(self.chunk_at)


def _phases(timing: CallTiming, headers: Any) -> None:
    """The phase headers of a disaggregated answer (unreadable numbers are ignored)."""
    timing.prefill_instance = headers.get("x-sincere-prefill-instance")
    cached = headers.get(PREFILL_CACHED_HEADER)
    if cached is not None and cached.isdigit():
        timing.prefill_cached_tokens = int(cached)
    for name, attr in PHASE_HEADERS.items():
        value = headers.get(name)
        if value is None:
            continue
        try:
            setattr(timing, attr, float(value))
        except ValueError:
            continue


def _text_of(choice: dict[str, Any]) -> str:
    delta = choice.get("delta")
    if isinstance(delta, dict):
        return str(delta.get("content") or "")
    message = choice.get("message")
    if isinstance(message, dict):
        return str(message.get("content") or "")
    return str(choice.get("text") or "")


def _absorb(timing: CallTiming, payload: dict[str, Any]) -> bool:
    """Take usage and sincere fields from one JSON payload; whether it carried text."""
    usage = payload.get("usage")
    if isinstance(usage, dict) and isinstance(usage.get("completion_tokens"), int):
        timing.usage_tokens = usage["completion_tokens"]
    details = usage.get("prompt_tokens_details") if isinstance(usage, dict) else None
    if isinstance(details, dict) and isinstance(details.get("cached_tokens"), int):
        timing.cached_tokens = details["cached_tokens"]
    ext = payload.get("sincere")
    if isinstance(ext, dict):
        if isinstance(ext.get("queue_s"), int | float):
            timing.queue_s = float(ext["queue_s"])
        if isinstance(ext.get("instance"), str):
            timing.instance = ext["instance"]
    choices = payload.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        return False
    return bool(_text_of(choices[0]))


async def _read_stream(resp: aiohttp.ClientResponse, timing: CallTiming, t0: float) -> None:
    async for raw in resp.content:
        line = raw.strip()
        if not line.startswith(b"data:"):
            continue
        data = line[5:].strip()
        if data == b"[DONE]":
            break
        now = time.perf_counter() - t0
        try:
            payload = json.loads(data)
        except ValueError:
            timing.error = "bad_response"
            return
        if isinstance(payload, dict) and _absorb(timing, payload):
            timing.chunk_at.append(now)


def _read_whole(payload: Any, timing: CallTiming) -> None:
    """A non-streamed answer; without usage, tokens are estimated at ~4 characters each."""
    if not isinstance(payload, dict) or not isinstance(payload.get("choices"), list):
        timing.error = "bad_response"
        return
    _absorb(timing, payload)
    if timing.usage_tokens is None and payload["choices"]:
        text = _text_of(payload["choices"][0]) if isinstance(payload["choices"][0], dict) else ""
        timing.usage_tokens = max(1, round(len(text) / 4)) if text else 0


async def call(
    session: aiohttp.ClientSession,
    url: str,
    body: dict[str, Any],
    timing: CallTiming,
    t0: float,
    request_id: str | None = None,
) -> None:
    """POST ``body`` to ``url`` and fill ``timing``; HTTP and connection errors go to ``error``.

    ``request_id`` goes out as ``x-request-id`` (a gateway's decision log names it).
    Cancellation (a timeout around this call) propagates; ``timing`` keeps what was seen.
    """
    timing.sent_at = time.perf_counter() - t0
    headers = None if request_id is None else {"x-request-id": request_id}
    try:
        async with session.post(url, json=body, headers=headers) as resp:
            timing.instance = resp.headers.get(INSTANCE_HEADER)
            _phases(timing, resp.headers)
            if resp.status != 200:
                await resp.read()
                timing.error = f"http_{resp.status}"
                return
            if body.get("stream"):
                await _read_stream(resp, timing, t0)
            else:
                _read_whole(await resp.json(content_type=None), timing)
    except (aiohttp.ClientError, ValueError):
        timing.error = "connection_error"
        return
    if timing.error is None:
        timing.finished_at = time.perf_counter() - t0
        if timing.chunk_at:
            timing.first_token_at = timing.chunk_at[0]
