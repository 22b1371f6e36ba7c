"""An emulated inference engine: a real OpenAI-compatible HTTP server with no GPU.

It is an *emulator*: no weights run. Each request goes through sincere's
continuous-batching engine model (:mod:`sincere.engine.continuous`) on the wall
clock (:mod:`.live`), with iteration times from any sincere step-time model
(a roofline of the catalog's figures, a fitted parameter file, SINCERE's measured
profiles), so TTFT, inter-token gaps, queueing, batching, preemption and KV-cache
limits behave as the model says a real deployment would. Every generated token is
the same filler text (``token_text``, default ``" tok"``).

Endpoints: ``POST /v1/completions`` and ``POST /v1/chat/completions`` (streamed as
Server-Sent Events or not, see :mod:`sincere.serve.protocol`), ``GET /v1/models``, ``GET /health``,
``GET /metrics`` (Prometheus text, vLLM's names, :mod:`.metrics`) and
``GET /sincere/load`` (the engine's :class:`~sincere.engine.base.EngineLoad` as JSON), and
vLLM's development-mode sleep routes ``POST /sleep?level=1|2``, ``POST /wake_up``, ``GET
/is_sleeping`` (:mod:`.sleep`: emulated wake times; generation is refused while asleep).

Output length: the request's ``sincere.output_tokens`` when given, else a draw from
``output_lengths`` when configured, else ``max_tokens`` (default
``default_max_tokens``); always capped by ``max_tokens``. Finishing below the cap
reports ``finish_reason: "stop"``, at the cap ``"length"``; a stop string found in the
text ends it sooner (:mod:`.text`).

The API is vLLM 0.32.0's: what it refuses (:mod:`.vllm_api`, 400 with vLLM's error
body), the fields and chunks of its answers (:mod:`.answer`), its metrics (:mod:`.metrics`),
``n`` choices and batched prompts, each choice its own engine request (:mod:`.choices`).

The front end (:mod:`.frontend`): under an engine preset whose front end has time
(``engine: {preset: vllm-v1}``, or ``execution: {frontend: ...}``) a request reaches the
engine its intake later, in the order received, and every token and end reaches the
client the output delay later, as the simulator counts them (:mod:`sincere.sim.frontend`).

Failure injection (:class:`~.config.FailureConfig`): ``error_rate`` answers
HTTP 500 before any byte of the answer; ``stall_probability`` / ``stall_s`` pause the
engine after an iteration; ``crash_after`` serves that many requests, then the next
one kills the server (open connections are cut, the port closes). A client that
disconnects has its request aborted in the engine, freeing its KV blocks.

Python API: ``async with EmulatorServer(config) as server: server.url`` or
``servers = await start_emulators(configs)`` (in-process, same event loop) and
``await stop_emulators(servers)``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import asdict
from http import HTTPStatus
from typing import Any

import numpy as np
from aiohttp import web

from sincere.catalog import get_model
from sincere.core.errors import ConfigError
from sincere.core.request import DEFAULT_TIER
from sincere.engine.build import deployment_of
from sincere.perf.kv_link import kv_bytes, sender_figures
from sincere.serve.binding import Served, bound_port, listen_error
from sincere.serve.emulator import choices, pd
from sincere.serve.emulator.answer import (
    SSE_HEADERS,
    Reply,
    fingerprint,
    raise_rejected,
    random_request_id,
)
from sincere.serve.emulator.choices import Prompt
from sincere.serve.emulator.config import EmulatorConfig
from sincere.serve.emulator.frontend import Intake
from sincere.serve.emulator.live import CapacityError, Finish, LiveEngine, LiveRequest, Parent
from sincere.serve.emulator.metrics import CONTENT_TYPE, EmulatorMetrics
from sincere.serve.emulator.planning import RequestPlanner
from sincere.serve.emulator.sleep import SleepMode, wake_times
from sincere.serve.emulator.vllm_api import check_request
from sincere.serve.protocol import (
    SSE_DONE,
    CompletionRequest,
    Kind,
    ProtocolError,
    dumps,
    models_response,
    sse_event,
)


class EmulatorServer(Served):
    """One emulated engine behind an aiohttp server; an async context manager."""

    def __init__(self, config: EmulatorConfig) -> None:
        self.config = config
        self.name = config.name or f"{config.model}-0"
        arch = _arch(config)
        self.model_name = config.served_model_name or arch.name
        max_context = config.engine.max_model_len or arch.max_context
        self.metrics = EmulatorMetrics(self.model_name, max_context, config.prefix_block_tokens)
        self.deployment = deployment_of(config, config.model, f"emulator {self.name}")
        self.sleep = _sleep_mode(self, config)
        self.prefix_caching = config.engine.enable_prefix_caching  # usage says cached tokens
        seeds = np.random.SeedSequence(config.seed).spawn(3)
        self.planner = RequestPlanner(
            config, arch, self.model_name, self.metrics, fingerprint(config),
            np.random.default_rng(seeds[0]), np.random.default_rng(seeds[1]),
        )  # fmt: skip
        self._stall_rng = np.random.default_rng(seeds[2])
        self.front_end = config.front_end()  # the preset's, on the deployment's clock
        if self.front_end.first_chunk_tokens > 1:
            raise ConfigError(
                "execution.frontend.first_chunk_tokens above 1 (a first chunk of several "
                "tokens, as SGLang and TensorRT-LLM stream with a stream interval) is "
                "simulated only; the emulated engine streams each token as made",
                value=self.front_end.first_chunk_tokens,
                allowed="1",
            )
        self.intake = Intake(self.front_end)
        self._created = int(time.time())
        self._num_received = 0
        self.crashed = False
        self.live: LiveEngine | None = None
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None
        self._open: set[asyncio.Transport] = set()
        self.port = config.port

    # ---------------------------------------------------------------- lifecycle

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:8100`` (the bound port once started)."""
        return f"http://{self.config.host}:{self.port}"

    async def start(self) -> None:
        """Build the engine and start listening (``port`` 0: the OS picks, see ``port``)."""
        self.live = _build_live(self.config, self.name, self.model_name, self.metrics,
                                self._stall_rng)  # fmt: skip
        app = web.Application(client_max_size=self.config.max_body_bytes + 1)
        app.router.add_post("/v1/completions", self._completions)
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_get("/v1/models", self._models)
        app.router.add_get("/health", self._health)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/sincere/load", self._load)
        self.sleep.add_routes(app)
        self._runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
        await self._runner.setup()
        self._site = web.TCPSite(self._runner, self.config.host, self.config.port)
        try:
            await self._site.start()
        except OSError as exc:
            await self.close()
            raise listen_error(self.config.host, self.config.port, exc) from None
        self.port = bound_port(self._runner, self.config.port)

    async def stop(self) -> None:
        """Abort requests in flight and stop the server."""
        if self.live is not None:
            self.live.close()
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    # ---------------------------------------------------------------- handlers

    async def _completions(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, "completion")

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, "chat")

    async def _serve(self, request: web.Request, kind: Kind) -> web.StreamResponse:
        transport = request.transport
        if transport is None or self._crash_due(transport):
            return web.Response(status=500)  # never sent: the connection is already cut
        self._open.add(transport)
        request_id = request.headers.get("X-Request-Id") or random_request_id()
        try:
            self.sleep.check_awake()
            planner = self.planner
            req = await planner.parse(request, kind)
            shaping = check_request(req.body, req.kind)  # what vLLM refuses, first
            planner.inject_error()
            planned = planner.replies(req, request_id, shaping, self.live)
            response = await self._answer(request, req, *planned)
        except ProtocolError as exc:
            response = _error_response(exc)
        finally:
            self._open.discard(transport)
        if not response.prepared:  # a stream set it before its first byte
            response.headers["X-Request-Id"] = request_id
        return response

    async def _answer(
        self, request: web.Request, req: CompletionRequest, prompts: list[Prompt],
        replies: list[Reply],
    ) -> web.StreamResponse:  # fmt: skip
        live = self.live
        if live is None:
            raise ProtocolError(503, "emulator not started")
        phase = pd.phase_of(req.body, self.config.role)
        if phase is not None and len(replies) > 1:
            raise ProtocolError(400, f"n and a list of prompts: got {len(replies)} answers to "
                                f"a {phase} request; allowed: one (n 1, one prompt)",
                                param="n")  # fmt: skip
        await self.intake.wait(sum(p.num_tokens for p in prompts))
        slots = self._submit_all(live, req, prompts, replies, phase)
        try:
            if len(slots) > 1:
                many = choices.Answer(replies, slots, sum(p.num_tokens for p in prompts),
                                      self.prefix_caching, live)  # fmt: skip
                return await (many.stream(request) if req.stream else many.full())
            reply, slot = replies[0], slots[0]
            if req.stream:
                return await self._stream(request, reply, slot)
            return self._full(req, reply, await asyncio.shield(slot.done), slot, phase)
        except BaseException:  # the client left, or a choice was refused: end them all
            for slot in slots:
                live.abort(slot)
            raise

    def _submit_all(
        self, live: LiveEngine, req: CompletionRequest, prompts: list[Prompt],
        replies: list[Reply], phase: str | None,
    ) -> list[LiveRequest]:  # fmt: skip
        """Each choice of each prompt as its own engine request; all or none (503)."""
        n = len(replies) // len(prompts)
        slots: list[LiveRequest] = []
        try:
            for prompt in prompts:
                parent = Parent(n, n) if n > 1 else None
                for reply in replies[len(slots) : len(slots) + n]:
                    slots.append(self._submit(live, req, reply, phase, prompt, parent))
        except CapacityError as exc:
            for slot in slots:
                live.abort(slot)
            raise ProtocolError(503, f"emulator at capacity: {exc}; retry later") from None
        return slots

    def _submit(
        self, live: LiveEngine, req: CompletionRequest, reply: Reply, phase: str | None,
        prompt: Prompt, parent: Parent | None,
    ) -> LiveRequest:  # fmt: skip
        """Give ``req`` to the engine: prefilled KV to pull (a decode request), or whole."""
        priority, tier = req.sincere.priority or 0, self.planner.tier_of(req)
        lengths = (reply.max_tokens, reply.plan.num_tokens)
        stopped = reply.plan.stop_reason is not None
        if phase == "decode":
            remote = pd.remote_kv(req.body)
            bandwidth, latency = sender_figures(self.config.kv_link, self.deployment)
            num_bytes = remote.kv_bytes
            if num_bytes is None:
                num_bytes = kv_bytes(self.deployment, req.prompt_tokens)
            return live.submit_prefilled(
                req.prompt_tokens, *lengths, stream=req.stream,
                engine_id=remote.engine_id, kv_bytes=num_bytes,
                bandwidth_gbps=remote.bandwidth_gbps or bandwidth,
                latency_s=latency if remote.latency_s is None else remote.latency_s,
                priority=priority, tier=tier, stopped=stopped,
            )  # fmt: skip
        return live.submit(
            prompt.num_tokens, *lengths, stream=req.stream, priority=priority, tier=tier,
            stopped=stopped, block_ids=prompt.block_ids, parent=parent,
        )  # fmt: skip

    def _cached(self, outcome: Finish) -> int | None:
        """``usage.prompt_tokens_details.cached_tokens`` when prefix caching is on."""
        return outcome.cached_tokens if self.prefix_caching else None

    def _full(
        self,
        req: CompletionRequest,
        reply: Reply,
        outcome: Finish,
        slot: LiveRequest,
        phase: str | None,
    ) -> web.Response:
        raise_rejected(outcome)
        reason = outcome.finish_reason or "stop"
        body = reply.full(outcome.num_tokens, reason, self._cached(outcome))
        if phase == "prefill":
            body[pd.PARAM] = pd.prefill_params(
                engine_id=self.name, host=self.config.host, port=self.port, request_id=reply.id,
                prompt_tokens=req.prompt_tokens, block_tokens=self.config.prefix_block_tokens,
                deployment=self.deployment, link=self.config.kv_link,
            )  # fmt: skip
        return web.Response(
            body=dumps(body), content_type="application/json", headers=_kv_headers(slot)
        )

    async def _stream(
        self, request: web.Request, reply: Reply, slot: LiveRequest
    ) -> web.StreamResponse:
        queue = slot.queue
        assert queue is not None  # submitted with stream=True
        item = await queue.get()
        if item == 0:  # ended before any token: an ordinary error answer
            raise_rejected(slot.done.result())
        response = web.StreamResponse(headers={**SSE_HEADERS, **_kv_headers(slot)})
        response.headers["X-Request-Id"] = reply.request_id
        try:
            await response.prepare(request)
            if reply.kind == "chat":
                await response.write(sse_event(reply.role_chunk()))
            written = await _write_tokens(response, reply, queue, item)
            await response.write(self._stream_end(reply, written, slot.done.result()))
            await response.write_eof()
        except ConnectionResetError:  # the client went away: free its slot, no traceback
            assert self.live is not None  # handlers run only once started
            self.live.abort(slot)
        return response

    def _stream_end(self, reply: Reply, written: int, outcome: Finish) -> bytes:
        """The finishing chunk (unless the last token carried it), usage, ``[DONE]``."""
        end = b""
        if written < reply.plan.num_tokens:  # ended early (aborted): say so
            end = sse_event(reply.end_chunk(written, outcome.finish_reason or "abort"))
        if reply.include_usage:
            end += sse_event(reply.usage_chunk(outcome.num_tokens, self._cached(outcome)))
        return end + SSE_DONE

    async def _models(self, request: web.Request) -> web.Response:
        return web.json_response(models_response([self.model_name], self._created))

    async def _health(self, request: web.Request) -> web.Response:
        return web.Response(status=200)

    async def _metrics(self, request: web.Request) -> web.Response:
        assert self.live is not None  # handlers run only once started
        engine = self.live.engine
        stats = engine.stats()
        text = self.metrics.render(
            engine.load(), stats.num_preemptions, stats.kv_tiers, stats.spec_decode
        )
        return web.Response(body=text, headers={"Content-Type": CONTENT_TYPE})

    async def _load(self, request: web.Request) -> web.Response:
        assert self.live is not None  # handlers run only once started
        engine = self.live.engine
        load = asdict(engine.load())
        load["num_in_flight"] = self.live.num_in_flight
        spec = engine.stats().spec_decode
        if spec is not None:  # vLLM's counters, as /metrics has them
            load["spec_decode"] = {
                "num_drafts": spec.num_drafts,
                "num_draft_tokens": spec.num_draft_tokens,
                "num_accepted_tokens": spec.num_accepted_tokens,
            }
        return web.json_response(load)

    # ------------------------------------------------------------------ crash

    def _crash_due(self, transport: asyncio.Transport) -> bool:
        """Count a request; past ``crash_after`` kill the server and cut this connection."""
        self._num_received += 1
        limit = self.config.failures.crash_after
        if self.crashed or (limit is not None and self._num_received > limit):
            if not self.crashed:
                self.crashed = True
                asyncio.get_running_loop().create_task(self._crash())
            transport.abort()
            return True
        return False

    async def _crash(self) -> None:
        for transport in list(self._open):
            transport.abort()
        if self.live is not None:
            self.live.close()
        if self._site is not None:
            await self._site.stop()


async def _write_tokens(
    response: web.StreamResponse, reply: Reply, queue: asyncio.Queue[int], item: int
) -> int:
    """Write token chunks as the engine hands tokens out, until the end marker (0); the
    planned last token's chunk carries the finish reason. Returns the tokens written."""
    last = reply.plan.num_tokens - 1
    reason = reply.finish_reason
    k = 0
    while item != 0:
        parts = []
        while item == 1:
            if k <= last:
                chunk = reply.token_chunk(k, reason if k == last else None)
                parts.append(sse_event(chunk))
            k += 1
            item = queue.get_nowait() if not queue.empty() else -1
        await response.write(b"".join(parts))
        if item == -1:
            item = await queue.get()
    return min(k, last + 1)


def _kv_headers(slot: LiveRequest) -> dict[str, str]:
    """A decode answer's phase timings (see :mod:`.pd`); none for other requests."""
    ready, admitted = slot.kv_ready_at, slot.kv_admitted_at
    if ready is None or admitted is None:
        return {}
    return {
        pd.KV_TRANSFER_HEADER: f"{ready - slot.arrival_at:.6f}",
        pd.KV_WAIT_HEADER: f"{admitted - ready:.6f}",
    }


_ERROR_TYPES = {400: "BadRequestError", 404: "NotFoundError", 500: "InternalServerError"}


def _error_response(exc: ProtocolError) -> web.Response:
    """vLLM's error body: ``{"error": {"message", "type", "param", "code": <status>}}``."""
    kind = _ERROR_TYPES.get(exc.status) or HTTPStatus(exc.status).phrase
    body = {"error": {"message": exc.message, "type": kind, "param": exc.param,
                      "code": exc.status}}  # fmt: skip
    return web.Response(status=exc.status, body=dumps(body), content_type="application/json")


def _arch(config: EmulatorConfig) -> Any:
    try:
        return get_model(config.model)
    except ConfigError as exc:
        raise ConfigError(str(exc), where=f"emulator {config.name or config.model}") from None


def _sleep_mode(server: EmulatorServer, config: EmulatorConfig) -> SleepMode:
    """Sleep mode with wake times from one GPU's share of the deployment's weights."""
    dep = server.deployment
    weight_bytes = dep.weight_bytes_per_gpu

    def num_in_flight() -> int:
        return 0 if server.live is None else server.live.num_in_flight

    wake_s = wake_times(config.sleep, weight_bytes)
    return SleepMode(wake_s, num_in_flight, server.metrics.set_sleep_level)


def _build_live(
    config: EmulatorConfig,
    name: str,
    model_name: str,
    metrics: EmulatorMetrics,
    rng: np.random.Generator,
) -> LiveEngine:
    """The wall-clock engine of ``config`` (built as the simulator builds its engines)."""
    tiers = tuple(t.to_tier() for t in config.tiers)
    return LiveEngine(
        name, model_name, config, capacity=config.max_num_requests,
        block_tokens=config.prefix_block_tokens,
        tiers=tiers or (DEFAULT_TIER,), metrics=metrics, rng=rng,
        stall_probability=config.failures.stall_probability, stall_s=config.failures.stall_s,
        output_s=config.front_end().output_s,
    )  # fmt: skip


async def start_emulators(configs: Sequence[EmulatorConfig]) -> list[EmulatorServer]:
    """Start one server per config in this event loop; stop them with :func:`stop_emulators`."""
    servers: list[EmulatorServer] = []
    try:
        for config in configs:
            server = EmulatorServer(config)
            await server.start()
            servers.append(server)
    except BaseException:
        await stop_emulators(servers)
        raise
    return servers


async def stop_emulators(servers: Sequence[EmulatorServer]) -> None:
    """Close every server (requests in flight are aborted)."""
    for server in servers:
        await server.close()


async def serve_forever(configs: Sequence[EmulatorConfig], *, announce: Any = None) -> None:
    """Run emulators until cancelled; ``announce(servers)`` is called once they listen."""
    servers = await start_emulators(configs)
    try:
        if announce is not None:
            announce(servers)
        await asyncio.Event().wait()
    finally:
        await stop_emulators(servers)
