"""Several choices, and batched prompts, answered as vLLM 0.32.0 answers them.

vLLM fans a request out: each prompt of a batched ``/v1/completions`` is its own request,
and each of a prompt's ``n`` choices is its own engine request (a child of the prompt's
parent request), so ``n`` choices take ``n`` batch slots, ``n`` sequences' KV and their
own time. They share the prompt, so after the first the prefix cache holds it: the
emulator gives every choice of a prompt the same block ids, and its engine's prefix cache
does the same. The answer carries every choice, numbered ``prompt's position * n +
choice``; ``usage`` counts each prompt's tokens once and every choice's generated tokens;
a stream interleaves the choices' chunks as their tokens come out, each naming its
``index``.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, replace
from typing import Any

from aiohttp import web

from sincere.serve.content import prompt_block_ids
from sincere.serve.emulator.answer import SSE_HEADERS, Reply, raise_rejected
from sincere.serve.emulator.live import Finish, LiveEngine, LiveRequest
from sincere.serve.protocol import (
    SSE_DONE,
    CompletionRequest,
    ProtocolError,
    count_prompt_tokens,
    dumps,
    sse_event,
)


@dataclass(frozen=True, slots=True)
class Prompt:
    """One prompt of a request, as its engine requests see it."""

    text: str | None  # its text (a chat's rendered messages); None for token ids
    num_tokens: int  # its tokens
    block_ids: tuple[int, ...]  # its content in blocks, for the prefix cache


def prompts_of(req: CompletionRequest, block_tokens: int) -> list[Prompt]:
    """The prompts of ``req``: one, or each of a batched completion's, in order."""
    batch = req.body.get("prompt")
    if req.num_prompts == 1 or not isinstance(batch, list):
        ids = prompt_block_ids(req.prompt, req.body, req.prompt_tokens, block_tokens)
        return [Prompt(req.prompt, req.prompt_tokens, ids)]
    prompts = []
    for one in batch:
        text = one if isinstance(one, str) else None
        tokens = (
            (count_prompt_tokens(one, req.model) if one else 1) if text is not None else len(one)
        )
        ids = prompt_block_ids(text, {"prompt": one}, tokens, block_tokens)
        prompts.append(Prompt(text, tokens, ids))
    return prompts


def check_room(num_requests: int, most: int, live: LiveEngine | None) -> None:
    """400 when an answer needs more engine requests than the emulator ever holds at once
    (``most``); 503 when they do not all fit its free slots now (then none is started)."""
    if num_requests > most:
        raise ProtocolError(
            400,
            f"n x prompts: got {num_requests} sequences; allowed: at most {most} (the "
            "emulator's max_num_requests)",
            param="n",
        )
    if live is not None and not live.can_take(num_requests):
        raise ProtocolError(
            503,
            f"emulator at capacity: {live.num_in_flight} requests in flight, {num_requests} "
            "more asked; retry later",
        )


@dataclass(frozen=True, slots=True)
class Answer:
    """The answer of several choices, each an engine request already submitted."""

    replies: list[Reply]  # every choice's, in index order
    slots: list[LiveRequest]  # its engine request, in the same order
    prompt_tokens: int  # every prompt's tokens, each counted once
    prefix_caching: bool  # usage reports cached tokens
    live: LiveEngine

    def _cached(self, outcome: Finish) -> int | None:
        return outcome.cached_tokens if self.prefix_caching else None

    async def full(self) -> web.Response:
        """Every choice's answer in one body, once all have finished (``cached_tokens``:
        the last one's, as vLLM reports its last result's)."""
        outcomes = await asyncio.shield(asyncio.gather(*(slot.done for slot in self.slots)))
        for outcome in outcomes:
            raise_rejected(outcome)
        ends = [(o.num_tokens, o.finish_reason or "stop") for o in outcomes]
        cached = self._cached(outcomes[-1])
        body = full_body(self.replies, ends, self.prompt_tokens, cached)
        return web.Response(body=dumps(body), content_type="application/json")

    async def stream(self, request: web.Request) -> web.StreamResponse:
        """Every choice's chunks, as each choice's tokens come out (``cached_tokens``: the
        first one's, as vLLM reports its first result's)."""
        replies, slots = self.replies, self.slots
        merged: asyncio.Queue[tuple[int, int]] = asyncio.Queue()
        pumps = [asyncio.ensure_future(pump(j, slot.queue, merged))
                 for j, slot in enumerate(slots) if slot.queue is not None]  # fmt: skip
        try:
            item = await merged.get()
            if item[1] == 0:  # a choice ended before any token: an ordinary error answer
                raise_rejected(slots[item[0]].done.result())
            response = web.StreamResponse(headers=SSE_HEADERS)
            response.headers["X-Request-Id"] = replies[0].request_id
            await response.prepare(request)
            if replies[0].kind == "chat":
                await response.write(b"".join(sse_event(r.role_chunk()) for r in replies))
            written = await write_choices(response, replies, merged, item)
            ends = [slot.done.result() for slot in slots]
            reasons = [o.finish_reason for o in ends]
            cached = self._cached(ends[0])
            await response.write(stream_end(replies, written, reasons, self.prompt_tokens, cached))
            await response.write_eof()
        except ConnectionResetError:  # the client went away: free the slots, no traceback
            for slot in slots:
                self.live.abort(slot)
        finally:
            for task in pumps:
                task.cancel()
        return response


def total(replies: list[Reply], prompt_tokens: int) -> Reply:
    """A reply that speaks for the whole answer: its usage counts ``prompt_tokens`` (every
    prompt once) and is given the choices' generated tokens summed."""
    return replace(replies[0], prompt_tokens=prompt_tokens)


def full_body(
    replies: list[Reply], outcomes: list[tuple[int, str]], prompt_tokens: int, cached: int | None
) -> dict[str, Any]:
    """The non-streamed body of every choice: ``outcomes`` are each choice's (tokens,
    finish reason), in the replies' order."""
    pairs = zip(replies, outcomes, strict=True)
    choices = [r.full(n, reason, None)["choices"][0] for r, (n, reason) in pairs]
    num_tokens = sum(n for n, _ in outcomes)
    body = total(replies, prompt_tokens).full(0, outcomes[0][1], cached)
    body["choices"] = choices
    body["usage"] = total(replies, prompt_tokens).usage(num_tokens, cached)
    return body


async def pump(j: int, queue: asyncio.Queue[int], merged: asyncio.Queue[tuple[int, int]]) -> None:
    """Forward choice ``j``'s token marks (1 a token, 0 the end) to the merged queue."""
    while True:
        item = await queue.get()
        merged.put_nowait((j, item))
        if item == 0:
            return


async def write_choices(
    response: web.StreamResponse,
    replies: list[Reply],
    merged: asyncio.Queue[tuple[int, int]],
    item: tuple[int, int],
) -> list[int]:
    """Write each choice's token chunks as its tokens come out (its planned last token's
    chunk carries its finish reason) until every choice has ended; returns the tokens
    written per choice."""
    counts = [0] * len(replies)
    num_open = len(replies)
    while True:
        parts = []
        got: tuple[int, int] | None = item
        while got is not None:
            j, mark = got
            if mark == 0:
                num_open -= 1
            else:
                reply, k = replies[j], counts[j]
                last = reply.plan.num_tokens - 1
                if k <= last:
                    reason = reply.finish_reason if k == last else None
                    parts.append(sse_event(reply.token_chunk(k, reason)))
                counts[j] += 1
            got = merged.get_nowait() if not merged.empty() else None
        await response.write(b"".join(parts))
        if num_open == 0:
            return [min(n, r.plan.num_tokens) for n, r in zip(counts, replies, strict=True)]
        item = await merged.get()


def stream_end(
    replies: list[Reply],
    written: list[int],
    reasons: list[str | None],
    prompt_tokens: int,
    cached: int | None,
) -> bytes:
    """The finishing chunks of choices that ended early (aborted), the usage, ``[DONE]``."""
    end = b""
    for reply, num_tokens, reason in zip(replies, written, reasons, strict=True):
        if num_tokens < reply.plan.num_tokens:
            end += sse_event(reply.end_chunk(num_tokens, reason or "abort"))
    if replies[0].include_usage:
        end += sse_event(total(replies, prompt_tokens).usage_chunk(sum(written), cached))
    return end + SSE_DONE
