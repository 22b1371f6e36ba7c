"""The OpenAI-compatible gateway: ``sincere serve CONFIG``.

An aiohttp server in front of serving instances (any OpenAI-compatible engine, or
Ollama) that routes every request with the same router objects the simulator
drives. Endpoints:

* ``POST /v1/completions``, ``POST /v1/chat/completions`` -- parsed and validated by
  :mod:`sincere.serve.protocol` (bad input: 4xx with an OpenAI error body), then
  admitted, routed, queued and relayed (:mod:`~sincere.serve.gateway.dispatch`,
  :mod:`~sincere.serve.gateway.relay`); SSE streams pass through token by token.
  The response header ``x-sincere-instance`` names the instance that served it.
* ``GET /v1/models`` -- the union of the instances' models (with keys: a client key's
  allowed ones); ``GET /health`` (with keys: instance states to admin keys only);
  ``GET /metrics`` -- the gateway's Prometheus metrics
  (:mod:`~sincere.serve.gateway.metrics`; with keys: an admin key, see
  ``security.metrics_access``);
* ``/admin/...`` -- the controller API (:mod:`sincere.serve.gateway.controller`).

Security (:class:`~sincere.serve.gateway.config.SecurityConfig`, wired by
:mod:`~sincere.serve.gateway.auth` and :mod:`~sincere.serve.gateway.sealed`): with a key
store every request needs a client key (checked before the body is read; limits and budget
before routing; spend settled when it ends) and ``/admin`` an admin key; upstream
credentials; TLS; sealed bodies routed on their declared headers and relayed unread.

Client-facing limits (:class:`~sincere.serve.gateway.config.LimitsConfig`): connections per
client and in all, and header / body / idle timeouts (:mod:`~sincere.serve.gateway.edge`).
Priority and tier are server policy: the default tier is what a client gets, and a
client may only ask for a tier or a priority that is not more important (403).
A client that disconnects is one log line and a ``cancelled`` count; an unexpected
error is a 500 with no internals, counted as ``internal_error``.

Background tasks read the engines' load (sincere's JSON engine load, else their
``/metrics``) every ``scrape.interval_ms`` and re-drain the queues every 50 ms (a
breaker may have turned half-open). Per request
the hot path does no pydantic, no logging above DEBUG, and reuses one keep-alive
session per backend (see docs/gateway.md, "Performance").

:func:`serve_gateway` runs it to completion on uvloop when importable (extra
``fast``), optionally as ``workers`` processes sharing the port (``SO_REUSEPORT``;
the kernel spreads connections over them). Each worker then has its own router
state, queues, breakers, limits and metrics: ``max_in_flight`` and the queue bound
apply per worker, and ``/metrics`` answers for the worker that took the connection.

Usage::

    async with Gateway(load_config("gateway.yaml")) as gw:
        print(gw.url)           # http://127.0.0.1:PORT
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import signal
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from aiohttp import web

from sincere.core.errors import ConfigError
from sincere.core.request import Request
from sincere.policy.decision_log import DecisionLog, open_log
from sincere.serve.backends.config import BackendConfig
from sincere.serve.backends.openai_api import make_backend
from sincere.serve.binding import Served, bound_port
from sincere.serve.gateway.auth import GatewayAuth, check_bind, refusal_response
from sincere.serve.gateway.billing import reserve_prices, settle, settle_async, token_counter
from sincere.serve.gateway.breaker import STATE_CODES, CircuitBreaker
from sincere.serve.gateway.config import GatewayConfig
from sincere.serve.gateway.dispatch import Dispatcher, Pending, RefusalError
from sincere.serve.gateway.edge import (
    AcceptErrorLog,
    EdgeLimits,
    EdgeSite,
    expect_handler,
    fit_open_files,
    read_body,
    runner_kwargs,
    upstream_fd_need,
)
from sincere.serve.gateway.instances import InstanceState
from sincere.serve.gateway.metrics import GatewayMetrics
from sincere.serve.gateway.observed_load import ObservedLoad
from sincere.serve.gateway.pd_relay import PDRelay
from sincere.serve.gateway.relay import Relay
from sincere.serve.gateway.requests import RequestFactory, session_of, with_cap
from sincere.serve.gateway.scrape import LoadScraper
from sincere.serve.gateway.sealed import parse_any
from sincere.serve.protocol import (
    CompletionRequest,
    Kind,
    ProtocolError,
    dumps,
    error_body,
    models_response,
)
from sincere.serve.security.policy import Grant, Refusal, RequestFacts
from sincere.serve.security.tls import server_context

DRAIN_INTERVAL_S = 0.05  # how often queues are re-drained in the background


class Gateway(Served):
    """The gateway server: instances, dispatcher, metrics and the aiohttp app."""

    def __init__(
        self,
        config: GatewayConfig,
        *,
        reuse_port: bool = False,
        decisions: DecisionLog | None = None,
    ) -> None:
        self.config = config
        self.reuse_port = reuse_port  # share the port with other worker processes
        self.log = logging.getLogger("sincere.serve.gateway.server")
        self.metrics = GatewayMetrics()
        self.dispatcher = Dispatcher(config, self.metrics, decisions)
        limits = config.limits
        self.requests = RequestFactory(
            config.tier_objects(),
            config.default_tier,
            limits.max_tokens,
            limits.default_max_tokens,
            config.prefix,
        )
        self.load = ObservedLoad(config.planning.window_s, 0.0)
        self.scraper = LoadScraper(
            config.scrape, self.dispatcher.instances.values, lambda: self.loop.time()
        )
        self.auth = GatewayAuth(config.security, config.state)
        sealed = config.security.sealed_backends
        self._sealed_only = frozenset(sealed)  # backends that take sealed bodies only
        first_byte = {n: t.first_byte_timeout_s for n, t in config.tiers.items()}
        scrub = self._scrub if self.auth.secrets else None
        self.relay = Relay(self.dispatcher, self.metrics, self.load, first_byte, self.log, scrub)
        self.pd_relay = PDRelay(config, self.dispatcher, self.relay)  # roles: two phases
        self.edge = EdgeLimits(
            limits.header_timeout_s, limits.max_connections, limits.max_connections_per_client,
            limits.tls_handshake_timeout_s,
        )  # fmt: skip
        self._logged_errors: set[str] = set()  # exception types whose traceback was logged
        self._tasks: list[asyncio.Task[None]] = []
        self._runner: web.AppRunner | None = None
        self._loop: asyncio.AbstractEventLoop | None = None  # set while serving
        self.port = config.port
        self.app = self._make_app()
        for backend in config.backends:
            self.add_backend(backend)

    # ------------------------------------------------------------- lifecycle

    def _make_app(self) -> web.Application:
        app = web.Application(client_max_size=self.config.limits.max_body_bytes + 1)
        expect = expect_handler
        app.router.add_post("/v1/completions", self._completions, expect_handler=expect)
        app.router.add_post("/v1/chat/completions", self._chat, expect_handler=expect)
        app.router.add_get("/v1/models", self._models, expect_handler=expect)
        app.router.add_get("/health", self._health, expect_handler=expect)
        app.router.add_get("/metrics", self._metrics, expect_handler=expect)
        if self.config.admin:
            from sincere.serve.gateway.controller import Controller
            from sincere.serve.gateway.controller_api import ControllerApi

            self.controller: Controller | None = Controller(self)
            ControllerApi(self.controller).add_routes(app)
        else:
            self.controller = None
        return app

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The running event loop (the gateway's clock: ``loop.time()``)."""
        return self._loop or asyncio.get_running_loop()

    @property
    def url(self) -> str:
        """Base URL the gateway listens on."""
        scheme = "https" if self.config.security.tls_cert is not None else "http"
        return f"{scheme}://{self.config.host}:{self.port}"

    async def start(self) -> None:
        """Bind and serve; start the scraper, the drain ticker and the key store's loops."""
        security = self.config.security
        check_bind(self.config.host, security)
        tls = None
        if security.tls_cert is not None and security.tls_key is not None:
            tls = server_context(security.tls_cert, security.tls_key)
        self._loop = asyncio.get_running_loop()
        self._loop.set_exception_handler(AcceptErrorLog(self.log))
        upstream_fds = upstream_fd_need(
            [b.max_in_flight for b in self.config.backends], self.edge.max_connections
        )
        fit_open_files(self.edge, upstream_fds, self.log)
        self.load.restart(self.loop.time())
        limits = self.config.limits
        self._runner = web.AppRunner(
            self.app,
            access_log=None,
            handle_signals=False,
            handler_cancellation=True,
            **runner_kwargs(limits.idle_timeout_s, limits.body_timeout_s),
        )
        await self._runner.setup()
        site = EdgeSite(
            self._runner,
            self.config.host,
            self.config.port,
            self.edge,
            reuse_port=self.reuse_port,
            ssl_context=tls,
        )
        try:
            await site.start()
        except BaseException:
            await self._runner.cleanup()
            self._runner = None
            raise
        self.port = bound_port(self._runner, self.config.port)
        self._tasks += [asyncio.create_task(loop) for loop in self.auth.start()]
        self._tasks.append(asyncio.create_task(self._drain_loop()))
        if self.config.scrape.enabled:
            self._tasks.append(asyncio.create_task(self.scraper.run()))

    async def stop(self) -> None:
        """Stop serving, cancel background tasks, close every backend session."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        if self.controller is not None:
            await self.controller.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        for state in list(self.dispatcher.instances.values()):
            await state.backend.close()
        await self.auth.drain()
        self.auth.stop()
        self._loop = None

    # ------------------------------------------------------------- instances

    def add_backend(self, config: BackendConfig, *, emulated: bool = False) -> InstanceState:
        """Put a backend into routing."""
        breaker = CircuitBreaker(
            self.config.breaker.failure_threshold, self.config.breaker.cooldown_s
        )
        backend = make_backend(config)
        secret = self.auth.credential(config.name)
        if secret is not None:
            backend.use_api_key(secret.reveal())
        state = InstanceState(backend, breaker, emulated=emulated)
        self.dispatcher.add(state)
        return state

    async def remove_backend(self, name: str) -> InstanceState:
        """Take a backend out of routing; its in-flight requests finish first."""
        state = self.dispatcher.remove(name)
        for model in state.backend.models:
            if not self.dispatcher.by_model.get(model):
                self.dispatcher.fail_queued(model, f"the last instance of {model!r} was removed")
        for _ in range(int(self.config.queue.timeout_s / 0.01) + 1):
            if state.num_in_flight == 0:
                break
            await asyncio.sleep(0.01)
        await state.backend.close()
        return state

    # -------------------------------------------------------------- handlers

    async def _completions(self, http_req: web.Request) -> web.StreamResponse:
        return await self._handle(http_req, "completion")

    async def _chat(self, http_req: web.Request) -> web.StreamResponse:
        return await self._handle(http_req, "chat")

    async def _handle(self, http_req: web.Request, kind: Kind) -> web.StreamResponse:
        tier = self.config.default_tier
        pending: Pending | None = None
        grant: Grant | None = None
        try:
            key = self.auth.authenticate(http_req.headers)  # None: no keys configured
            if isinstance(key, Refusal):
                return self._refused(key, tier)
            creq, sealed = await self._parse(http_req, kind)
            if key is not None:
                creq = with_cap(creq, self.config.limits.default_max_tokens)
            req = self.requests.build(
                creq,
                self.loop.time(),
                base_tier=None if key is None else key.spec.tier,
                priority_ceiling=None if key is None else key.spec.priority_ceiling,
                tenant=None if key is None else key.name,
                session=session_of(http_req.headers, creq, self.config.prefix),
            )
            tier = req.tier.name
            if key is not None:
                prices = reserve_prices(self.dispatcher, req.model)
                granted = await self.auth.authorize_async(key, _facts(req, creq), prices)
                if isinstance(granted, Refusal):
                    return self._refused(granted, tier)
                grant = granted
            pending = Pending(req, _client_id(http_req), sealed=sealed)
            if creq.sincere.deadline_s is not None:
                pending.deadline_at = req.arrival_at + creq.sincere.deadline_s
            if self._sealed_only:
                pending.skip = self._sealed_only if sealed is None else self._plain_names()
            counted = token_counter(creq, sealed is not None)  # x-sincere-token-counter
            pending.headers = (counted,) if grant is None else (*grant.headers, counted)
            return await self.pd_relay.serve(http_req, creq, pending)
        except ProtocolError as exc:
            self.metrics.finished("", tier, "client_error")
            return web.Response(
                status=exc.status, body=exc.to_bytes(), content_type="application/json"
            )
        except RefusalError as exc:
            self.metrics.finished("", tier, exc.outcome)
            body = error_body(exc.message, type=_error_type(exc.status), code=exc.code)
            return web.Response(
                status=exc.status, body=dumps(body), content_type="application/json"
            )
        except asyncio.CancelledError:  # the client went away (or the gateway stops)
            self.relay.client_left(
                tier, pending.instance if pending else "", "waiting for an answer"
            )
            if grant is not None:  # settled now (in a task with shared state), not awaited
                settle(self.auth, grant, pending, self.dispatcher)
                grant = None
            raise
        except Exception as exc:  # a bug: answer 500 without internals, count it, log it
            return self.internal_error(http_req, tier, exc)
        finally:
            if grant is not None and self.auth.shared is not None:
                await settle_async(self.auth, grant, pending, self.dispatcher)
            elif grant is not None:
                settle(self.auth, grant, pending, self.dispatcher)

    async def _parse(
        self, http_req: web.Request, kind: Kind
    ) -> tuple[CompletionRequest, dict[str, str] | None]:
        """The request to route, and for a sealed body the headers to relay it with."""
        body = await read_body(http_req, self.config.limits, self.edge)
        confidential = self.config.security.confidential
        served, limit = self.dispatcher.served, self.config.limits.max_body_bytes
        creq, sealed = parse_any(http_req.headers, kind, body, served, limit, confidential)
        if sealed is not None and not self._sealed_only:
            raise ProtocolError(
                415,
                "Content-Type: application/sincere-sealed: this gateway has no backend that "
                "opens sealed bodies (security.sealed_backends is empty); send plain JSON",
                param="Content-Type",
                code="sealed_not_served",
            )
        return creq, sealed

    def _plain_names(self) -> frozenset[str]:
        """Instances that are not seal proxies (a sealed body must not go there)."""
        return frozenset(n for n in self.dispatcher.instances if n not in self._sealed_only)

    def _refused(self, refusal: Refusal, tier: str) -> web.Response:
        """A key check's refusal as the client's answer (401/402/403/429), counted."""
        self.metrics.finished("", tier, refusal.outcome)
        return refusal_response(refusal)

    def _scrub(self, body: bytes) -> bytes:
        """An upstream's error body with the upstream secrets (and token look-alikes) masked."""
        text = body.decode("utf-8", "replace")
        cleaned = self.auth.redact(text)
        return body if cleaned == text else cleaned.encode()

    def internal_error(self, http_req: web.Request, tier: str, exc: Exception) -> web.Response:
        """A 500 for an unexpected error: counted, logged (traceback once per error type)."""
        self.metrics.finished("", tier, "internal_error")
        kind = type(exc).__name__
        if kind in self._logged_errors:
            self.log.error("internal error on %s: %s: %s", http_req.path, kind, exc)
        else:
            self._logged_errors.add(kind)
            self.log.exception("internal error on %s", http_req.path)
        body = error_body("internal error (logged by the gateway)", type="server_error")
        return web.Response(status=500, body=dumps(body), content_type="application/json")

    async def _models(self, http_req: web.Request) -> web.Response:
        """The models served; with keys, a client key's only (401 without one)."""
        names = self.dispatcher.served
        key = self.auth.authenticate(http_req.headers)
        if isinstance(key, Refusal):
            return self._refused(key, self.config.default_tier)
        if key is not None and key.spec.models is not None:
            names = names & key.spec.models
        return web.json_response(models_response(sorted(names), int(time.time())))

    def _is_admin(self, http_req: web.Request) -> bool:
        """Whether the caller may see the gateway's internals (always without keys)."""
        return not isinstance(self.auth.admin(http_req.headers, ""), Refusal)

    async def _health(self, http_req: web.Request) -> web.Response:
        """Up or degraded; instance states to admins only when keys are on."""
        now = self.loop.time()
        states = {s.name: s.breaker.state(now).value for s in self.dispatcher.instances.values()}
        ok = any(v != "open" for v in states.values())
        out: dict[str, Any] = {"status": "ok" if ok else "degraded"}
        if self.auth.store is None or self._is_admin(http_req):
            out["instances"] = states
        state = await asyncio.to_thread(self.auth.state_health) if self.auth.shared else None
        if state is not None:
            out["state"] = state
            if not state["ok"]:
                out["status"] = "degraded"
        return web.json_response(out)

    async def _metrics(self, http_req: web.Request) -> web.Response:
        """Prometheus text; with keys an admin or metrics key's (``aggregate``: tenant-free)."""
        tenants, every_tenant = True, False
        if self.auth.store is not None:
            grant = self.auth.metrics_reader(http_req.headers)
            if isinstance(grant, Refusal):
                if self.config.security.metrics_access != "aggregate":
                    return refusal_response(grant)
                tenants = False
            else:  # ?tenants=all: an admin's page without the tenant cap
                wants_all = http_req.query.get("tenants") == "all"
                every_tenant = wants_all and grant.actor.startswith("admin:")
        now = self.loop.time()
        d = self.dispatcher
        text = self.metrics.render(
            {m: len(q) for m, q in d.queues.items()},
            {s.name: s.num_in_flight for s in d.instances.values()},
            {s.name: STATE_CODES[s.breaker.state(now)] for s in d.instances.values()},
            self.edge.refused,
            self.edge.num_open,
        ) + (self.auth.metrics_text(every_tenant) if tenants else "")
        return web.Response(text=text, content_type="text/plain", charset="utf-8")

    # ------------------------------------------------------- background tasks

    async def scrape(self, state: InstanceState) -> None:
        """Read one engine's load now (:meth:`LoadScraper.scrape`)."""
        await self.scraper.scrape(state)

    async def _drain_loop(self) -> None:
        while True:
            await asyncio.sleep(DRAIN_INTERVAL_S)
            self.dispatcher.drain_all(self.loop.time())


def _client_id(http_req: web.Request) -> str | None:
    """The client's own request id (``x-request-id``), when it is a short printable text."""
    value = http_req.headers.get("x-request-id")
    if value is None or len(value) > 128 or not value.isprintable():
        return None
    return value


def _facts(req: Request, creq: CompletionRequest) -> RequestFacts:
    """What the key check needs: model, sized prompt and answer cap, asked tier/priority."""
    fields = creq.sincere
    return RequestFacts(
        req.model, req.prompt_tokens, req.max_tokens or req.output_tokens, fields.tier,
        fields.priority,
    )  # fmt: skip


def _error_type(status: int) -> str:
    if status == 429:
        return "rate_limit_error"
    return "server_error" if status >= 500 else "invalid_request_error"


async def run_gateway(
    config: GatewayConfig,
    ready: Any = None,
    *,
    reuse_port: bool = False,
    decisions: Path | None = None,
) -> None:
    """Serve until cancelled (``sincere serve``); ``ready(gateway)`` is called once bound.

    ``decisions``: a file every front-door call and outcome is appended to (JSON lines).
    """
    async with contextlib.AsyncExitStack() as stack:
        log = None if decisions is None else stack.enter_context(open_log(decisions, append=True))
        gw = await stack.enter_async_context(Gateway(config, reuse_port=reuse_port, decisions=log))
        if ready is not None:
            ready(gw)
        await asyncio.Event().wait()


def serve_gateway(
    config: GatewayConfig,
    *,
    workers: int = 1,
    ready: Callable[[Gateway], None] | None = None,
    decisions: Path | None = None,
) -> None:
    """Serve until interrupted, on uvloop when importable, in ``workers`` processes.

    With ``workers > 1`` this process binds first (with ``SO_REUSEPORT``; port 0 is
    resolved here), calls ``ready`` and starts ``workers - 1`` more processes on the
    same port; they stop when this one does: on SIGINT or SIGTERM it stops them (and on
    Linux the kernel stops them should it be killed outright). Linux and the BSDs only. With
    ``decisions`` every process appends its decisions to that file, line by line.
    """
    if workers < 1:
        raise ConfigError("serve: workers must be >= 1", value=workers, allowed="an integer >= 1")
    children: list[multiprocessing.process.BaseProcess] = []

    def on_ready(gw: Gateway) -> None:
        if workers > 1:
            bound = config.model_copy(update={"port": gw.port})
            ctx = multiprocessing.get_context("spawn")
            for _ in range(workers - 1):
                child = ctx.Process(target=_worker, args=(bound, decisions), daemon=True)
                child.start()
                children.append(child)
        if ready is not None:
            ready(gw)

    stop_on_sigterm()
    try:
        with contextlib.suppress(KeyboardInterrupt):
            run_on_fast_loop(
                run_gateway(config, on_ready, reuse_port=workers > 1, decisions=decisions)
            )
    finally:
        for child in children:
            child.terminate()
        for child in children:
            child.join(timeout=5)
            if child.is_alive():
                child.kill()
                child.join(timeout=5)


def stop_on_sigterm() -> None:
    """SIGTERM stops this process as Ctrl-C does (cleanly: keys flushed, workers stopped)."""
    signal.signal(signal.SIGTERM, _interrupt)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def _die_with_parent() -> None:
    """Linux: have the kernel send this process SIGTERM when its parent dies (even by -9)."""
    with contextlib.suppress(OSError, AttributeError):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGTERM), 0, 0, 0)  # PR_SET_PDEATHSIG = 1


def _worker(config: GatewayConfig, decisions: Path | None) -> None:
    """One extra worker process of :func:`serve_gateway`; it stops with the first one."""
    _die_with_parent()
    stop_on_sigterm()
    with contextlib.suppress(KeyboardInterrupt):
        run_on_fast_loop(run_gateway(config, reuse_port=True, decisions=decisions))


def run_on_fast_loop(main: Coroutine[Any, Any, None]) -> None:
    """Run ``main`` to completion on uvloop when it is installed (extra ``fast``), else asyncio."""
    try:
        import uvloop  # type: ignore[import-not-found, unused-ignore]
    except ImportError:
        asyncio.run(main)
        return
    uvloop.run(main)
