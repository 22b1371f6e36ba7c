"""A scriptable upstream for testing and benchmarking the gateway (not an engine model).

:class:`FakeUpstream` answers OpenAI's ``/v1/completions`` and
``/v1/chat/completions`` (JSON or SSE) and Ollama's ``/api/generate`` and
``/api/chat`` (NDJSON) at once, with a fixed number of filler tokens, optional
delays, ``n`` choices for each prompt of a batch (as vLLM answers them), vLLM's
``/tokenize`` and ``/detokenize``, and injected faults: a status answered at once
(``fail_status``), a connection cut after ``die_after_tokens`` streamed tokens,
requests held until an event is set (``hold``). It records every body it receives.
It exists to pin the gateway's fault handling in tests and to measure the gateway's
own overhead against the cheapest possible upstream; for realistic timing use
:mod:`sincere.serve.emulator.server`.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiohttp import web

from sincere.serve.binding import Served, bound_port


class FakeUpstream(Served):
    """An in-process HTTP server speaking OpenAI's and Ollama's APIs, with fault injection."""

    def __init__(
        self,
        *,
        num_tokens: int = 3,
        ttft_s: float = 0.0,
        token_delay_s: float = 0.0,
        models: tuple[str, ...] = ("m",),
        metrics_text: str = "",
        finish_chunk: bool = False,
        ttft_per_prompt_char_s: float = 0.0,
    ) -> None:
        self.num_tokens = num_tokens  # tokens per answer (capped by max_tokens/num_predict)
        self.ttft_s = ttft_s  # delay before the first token, seconds
        self.ttft_per_prompt_char_s = ttft_per_prompt_char_s  # more per prompt character
        self.token_delay_s = token_delay_s  # delay between tokens, seconds
        self.models = models
        self.metrics_text = metrics_text  # body of GET /metrics
        self.finish_chunk = finish_chunk  # end streams with an empty-text finish_reason chunk
        self.fail_status: int | None = None  # answer every request with this status
        self.die_after_tokens: int | None = None  # cut streams after this many tokens
        self.hold: asyncio.Event | None = None  # requests wait until it is set
        self.bodies: list[dict[str, Any]] = []  # every JSON body received
        self.num_active = 0  # requests being answered now
        self.port = 0
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        """Base URL once started."""
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        """Listen on an OS-chosen port of 127.0.0.1."""
        app = web.Application()
        for path in ("/v1/completions", "/v1/chat/completions"):
            app.router.add_post(path, self._openai)
        for path in ("/api/generate", "/api/chat"):
            app.router.add_post(path, self._ollama)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_post("/tokenize", self._tokenize)
        app.router.add_post("/detokenize", self._detokenize)
        # a closing fake cuts what is still open after a short grace (a dying server)
        self._runner = web.AppRunner(
            app, access_log=None, handler_cancellation=True, shutdown_timeout=1.0
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = bound_port(self._runner)

    async def stop(self) -> None:
        """Stop listening and cut open connections."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _begin(self, request: web.Request) -> dict[str, Any]:
        body: dict[str, Any] = json.loads(await request.read())  # whatever the content type
        self.bodies.append(body)
        if self.hold is not None:
            await self.hold.wait()
        prompt = body.get("prompt")
        chars = len(prompt) if isinstance(prompt, str) else 0
        delay_s = self.ttft_s + self.ttft_per_prompt_char_s * chars
        if delay_s:
            await asyncio.sleep(delay_s)
        return body

    def _count(self, cap: object) -> int:
        return min(self.num_tokens, cap) if isinstance(cap, int) else self.num_tokens

    async def _openai(self, request: web.Request) -> web.StreamResponse:
        self.num_active += 1
        try:
            body = await self._begin(request)
            if self.fail_status is not None:
                return web.json_response(
                    {"error": {"message": "injected"}}, status=self.fail_status
                )
            n = self._count(body.get("max_tokens"))
            chat = request.path.endswith("chat/completions")
            if body.get("stream"):
                return await self._openai_stream(request, body, n, chat)
            text = " tok" * n
            choices = []
            for index in range(num_choices(body)):
                choice: dict[str, Any] = (
                    {"index": index, "message": {"role": "assistant", "content": text}}
                    if chat
                    else {"index": index, "text": text}
                )
                choice["finish_reason"] = "length"
                choices.append(choice)
            out = n * len(choices)
            usage = {"prompt_tokens": 1, "completion_tokens": out, "total_tokens": out + 1}
            return web.json_response(
                {
                    "id": "x",
                    "object": "chat.completion" if chat else "text_completion",
                    "created": 0,
                    "model": body.get("model"),
                    "choices": choices,
                    "usage": usage,
                }
            )
        finally:
            self.num_active -= 1

    async def _openai_stream(
        self, request: web.Request, body: dict[str, Any], n: int, chat: bool
    ) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        kind = "chat.completion.chunk" if chat else "text_completion"
        head = {"id": "x", "object": kind, "created": 0, "model": body.get("model")}
        indexes = range(num_choices(body))
        for k in range(n):
            if self.die_after_tokens is not None and k >= self.die_after_tokens:
                assert request.transport is not None
                request.transport.close()
                return resp
            delta = {"delta": {"content": " tok"}} if chat else {"text": " tok"}
            for index in indexes:
                chunk = {**head, "choices": [{"index": index, **delta}]}
                await resp.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")
            if self.token_delay_s:
                await asyncio.sleep(self.token_delay_s)
        if self.finish_chunk:
            last = {"content": ""} if chat else {"text": ""}
            end = {
                "index": 0,
                ("delta" if chat else "text"): last if chat else "",
                "finish_reason": "length",
            }
            chunk = {**head, "choices": [end]}
            await resp.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")
        if (body.get("stream_options") or {}).get("include_usage"):
            out = n * len(indexes)
            usage = {"prompt_tokens": 1, "completion_tokens": out, "total_tokens": out + 1}
            chunk = {**head, "choices": [], "usage": usage}
            await resp.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")
        await resp.write(b"data: [DONE]\n\n")
        return resp

    async def _tokenize(self, request: web.Request) -> web.Response:
        """vLLM's ``/tokenize``: one token per word of the prompt (or of the messages)."""
        body = await self._begin(request)
        text = body.get("prompt") or " ".join(
            str(m.get("content", "")) for m in body.get("messages") or []
        )
        tokens = list(range(len(str(text).split())))
        return web.json_response({"count": len(tokens), "max_model_len": 4096, "tokens": tokens})

    async def _detokenize(self, request: web.Request) -> web.Response:
        """vLLM's ``/detokenize``: a word per token id."""
        body = await self._begin(request)
        return web.json_response({"prompt": " ".join(f"t{t}" for t in body.get("tokens") or [])})

    async def _ollama(self, request: web.Request) -> web.StreamResponse:
        body = await self._begin(request)
        if self.fail_status is not None:
            return web.json_response({"error": "injected"}, status=self.fail_status)
        n = self._count((body.get("options") or {}).get("num_predict"))
        chat = request.path.endswith("/chat")
        resp = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await resp.prepare(request)
        for k in range(n):
            if self.die_after_tokens is not None and k >= self.die_after_tokens:
                assert request.transport is not None
                request.transport.close()
                return resp
            part = (
                {"message": {"role": "assistant", "content": " tok"}}
                if chat
                else {"response": " tok"}
            )
            await resp.write(
                json.dumps({"model": body["model"], **part, "done": False}).encode() + b"\n"
            )
            if self.token_delay_s:
                await asyncio.sleep(self.token_delay_s)
        last = {
            "model": body["model"],
            "done": True,
            "done_reason": "length",
            "prompt_eval_count": 7,
            "eval_count": n,
        }
        await resp.write(json.dumps(last).encode() + b"\n")
        return resp

    async def _metrics(self, request: web.Request) -> web.Response:
        return web.Response(text=self.metrics_text, content_type="text/plain")


def num_choices(body: dict[str, Any]) -> int:
    """Choices an OpenAI server such as vLLM returns: ``n`` for each prompt of a batch."""
    prompt = body.get("prompt")
    num_prompts = 1
    if isinstance(prompt, list) and prompt and isinstance(prompt[0], str | list):
        num_prompts = len(prompt)
    n = body.get("n")
    return num_prompts * (int(n) if n is not None else 1)
