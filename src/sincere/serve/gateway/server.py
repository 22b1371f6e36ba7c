"""The OpenAI-compatible gateway: ``sincere serve CONFIG``.

An aiohttp server in front of serving instances (any OpenAI-compatible engine, or
Ollama) that routes every request with the same router objects the simulator
drives. Endpoints:

* ``POST /v1/completions``, ``POST /v1/chat/completions`` -- parsed and validated by
  :mod:`sincere.serve.protocol` (bad input: 4xx with an OpenAI error body), then
  admitted, routed, queued and relayed (:mod:`~sincere.serve.gateway.dispatch`,
  :mod:`~sincere.serve.gateway.relay`); SSE streams pass through token by token.
  The response header ``x-sincere-instance`` names the instance that served it.
  :meth:`Gateway._handle` reads as parse -> guard -> relay -> settle: the guard
  (:mod:`~sincere.serve.gateway.guard`) checks the key on the headers, then admits the
  parsed request (limits, budget reservation, admission) and settles its spend at the end.
* ``GET /v1/models``, ``GET /health``, ``GET /metrics`` -- read-only pages, each showing
  a caller what it may see (:mod:`~sincere.serve.gateway.status`);

The gateway is the data plane. It knows nothing of the control plane
(:mod:`sincere.serve.control`): it offers the control plane's
:class:`~sincere.serve.control.fleet.Fleet` face (:meth:`Gateway.add_backend`,
:meth:`Gateway.remove_backend`, :meth:`Gateway.instances_of`,
:meth:`Gateway.instance_health`, :meth:`Gateway.observed_load`), and
:func:`sincere.serve.app.compose` mounts the controller's ``/admin`` routes on its app.

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

:func:`sincere.serve.app.serve_gateway` runs it to completion on uvloop when importable
(extra ``fast``; :func:`run_on_fast_loop`), optionally as ``workers`` processes sharing
the port (``SO_REUSEPORT``; the kernel spreads connections over them). Each worker then
has its own router state, queues, breakers, limits and metrics: ``max_in_flight`` and
the queue bound apply per worker, and ``/metrics`` answers for the worker that took the
connection.

Usage (the data plane alone; :func:`sincere.serve.app.compose` adds ``/admin``)::

    async with Gateway(load_config("gateway.yaml")) as gw:
        print(gw.url)           # http://127.0.0.1:PORT
"""

from __future__ import annotations

import asyncio
import contextlib
import faulthandler
import gc
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, NoReturn

from aiohttp import web

from sincere.core.load import LoadSummary
from sincere.policy.decision_log import DecisionLog
from sincere.serve.backends.config import BackendConfig
from sincere.serve.backends.openai_api import make_backend
from sincere.serve.binding import Served, bound_port, cancel_and_wait
from sincere.serve.gateway.answers import key_refusal_answer, openai_app, refusal_answer
from sincere.serve.gateway.auth import GatewayAuth, check_bind
from sincere.serve.gateway.breaker import CircuitBreaker
from sincere.serve.gateway.config import GatewayConfig
from sincere.serve.gateway.dispatch import Dispatcher, RefusalError
from sincere.serve.gateway.edge import (
    AcceptErrorLog,
    EdgeLimits,
    EdgeSite,
    expect_handler,
    fit_open_files,
    read_body,
    route_unrouted,
    runner_kwargs,
    upstream_fd_need,
)
from sincere.serve.gateway.exchange import Exchange
from sincere.serve.gateway.guard import Admitted, Guard, Refused
from sincere.serve.gateway.instances import InstanceState
from sincere.serve.gateway.metrics import GatewayMetrics
from sincere.serve.gateway.observed_load import ObservedLoad
from sincere.serve.gateway.passthrough import Passthrough
from sincere.serve.gateway.pd_relay import PDRelay
from sincere.serve.gateway.relay import Relay
from sincere.serve.gateway.requests import RequestFactory
from sincere.serve.gateway.scrape import LoadScraper
from sincere.serve.gateway.status import StatusPages
from sincere.serve.protocol import (
    Kind,
    ProtocolError,
    dumps,
    error_body,
)
from sincere.serve.security.policy import Refusal
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
        first_byte = {n: t.first_byte_timeout_s for n, t in config.tiers.items()}
        scrub = self._scrub if self.auth.secrets else None
        exchange = Exchange(self.dispatcher, self.metrics, self.load, self.log, scrub)
        self.relay = Relay(exchange, first_byte)
        self.pd_relay = PDRelay(config, self.dispatcher, self.relay)  # roles: two phases
        self.guard = Guard(
            config, self.auth, self.dispatcher, self.requests, self._now,
            admits_later=self.pd_relay.admits_later,
        )  # fmt: skip
        self.edge = EdgeLimits(
            limits.header_timeout_s, limits.max_connections, limits.max_connections_per_client,
            limits.tls_handshake_timeout_s,
        )  # fmt: skip
        self.passthrough = Passthrough(self.auth, self.dispatcher, limits, self.edge)
        self.status = StatusPages(
            config, self.dispatcher, self.auth, self.metrics, self.edge, self._refused, self._now
        )
        self._logged_errors: set[str] = set()  # exception types whose traceback was logged
        self._tasks: list[asyncio.Task[None]] = []
        self.on_stop: list[Callable[[], Awaitable[None]]] = []  # run first when stopping
        self._runner: web.AppRunner | None = None
        self._loop: asyncio.AbstractEventLoop | None = None  # set while serving
        self.port = config.port
        self.app = self._make_app()
        for backend in config.backends:
            self.add_backend(backend)

    # ------------------------------------------------------------- lifecycle

    def _make_app(self) -> web.Application:
        app = openai_app(self.config.limits.max_body_bytes, self.config.allowed_origins)
        expect = expect_handler
        for path in ("/tokenize", "/detokenize"):
            app.router.add_post(path, self.passthrough.handle, expect_handler=expect)
        app.router.add_post("/v1/completions", self._completions, expect_handler=expect)
        app.router.add_post("/v1/chat/completions", self._chat, expect_handler=expect)
        app.router.add_get("/v1/models", self.status.models, expect_handler=expect)
        app.router.add_get("/health", self.status.health, expect_handler=expect)
        app.router.add_get("/metrics", self.status.metrics_page, expect_handler=expect)
        route_unrouted(app)  # 404 / 405 with the same Expect check
        return app

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The running event loop (the gateway's clock: ``loop.time()``)."""
        return self._loop or asyncio.get_running_loop()

    def _now(self) -> float:
        """The gateway's clock now (loop time, seconds)."""
        return self.loop.time()

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
        await cancel_and_wait(self._tasks)
        self._tasks.clear()
        for hook in self.on_stop:
            await hook()
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

    def set_routable(self, name: str, routable: bool) -> None:
        """Take an instance out of routing while its engine sleeps, its model still served
        (requests wait in the queue), or put it back (the queue drains into it)."""
        self.dispatcher.set_routable(name, routable)

    def num_queued(self, model: str) -> int:
        """Requests of ``model`` waiting in the gateway's queue."""
        queue = self.dispatcher.queues.get(model)
        return 0 if queue is None else len(queue)

    def on_held(self, listener: Callable[[str], None]) -> None:
        """Call ``listener`` with the model of every request the gateway queues."""
        self.dispatcher.on_held.append(listener)

    def instances_of(self, model: str | None = None) -> list[InstanceState]:
        """The instances serving ``model`` (every instance when None), in the order added."""
        if model is None:
            return list(self.dispatcher.instances.values())
        return list(self.dispatcher.by_model.get(model, ()))

    def instance_health(self) -> dict[str, str]:
        """Each instance's circuit-breaker state now."""
        return self.status.instance_health()

    def observed_load(self) -> list[LoadSummary]:
        """Load per (model, tier) over the planning window ending now."""
        return self.load.summary(self.loop.time())

    # -------------------------------------------------------------- handlers

    async def _completions(self, http_req: web.Request) -> web.StreamResponse:
        return await self._handle(http_req, "completion")

    async def _chat(self, http_req: web.Request) -> web.StreamResponse:
        return await self._handle(http_req, "chat")

    async def _handle(self, http_req: web.Request, kind: Kind) -> web.StreamResponse:
        """parse -> guard -> relay -> settle (the key is checked before the body is read)."""
        tier = self.config.default_tier
        admitted: Admitted | None = None
        try:
            key = self.guard.authenticate(http_req.headers)  # None: no keys configured
            if isinstance(key, Refusal):
                return self._refused(key, tier)
            body = await read_body(http_req, self.config.limits, self.edge)
            creq, sealed = self.guard.parse(http_req.headers, kind, body)
            verdict = await self.guard.admit(key, creq, sealed, http_req.headers)
            if isinstance(verdict, Refused):
                return self._turned_away(verdict)
            admitted, tier = verdict, verdict.tier
            return await self.pd_relay.serve(http_req, admitted.request, admitted.pending)
        except ProtocolError as exc:
            self.metrics.finished("", tier, "client_error")
            return web.Response(
                status=exc.status, body=exc.to_bytes(), content_type="application/json"
            )
        except RefusalError as exc:
            return self._refusal_answer(exc, tier)
        except asyncio.CancelledError:  # the client went away (or the gateway stops)
            instance = "" if admitted is None else admitted.pending.instance
            self.relay.exchange.client_left(tier, instance, "waiting for an answer")
            if admitted is not None:  # settled now (in a task with shared state), not awaited
                self.guard.settle_now(admitted)
                admitted = None
            raise
        except Exception as exc:  # a bug: answer 500 without internals, count it, log it
            return self.internal_error(http_req, tier, exc)
        finally:
            if admitted is not None:  # Guard.settle without a coroutine of its own
                self.guard.settle_now(admitted)

    def _refused(self, refusal: Refusal, tier: str) -> web.Response:
        """A key check's refusal as the client's answer (401/403/429; a spent budget 429
        ``insufficient_quota`` or 402, ``security.budget_status``), counted."""
        self.metrics.finished("", tier, refusal.outcome)
        return key_refusal_answer(refusal, self.config.security.budget_status)

    def _turned_away(self, refused: Refused) -> web.Response:
        """The guard's refusal (a key check's or admission's) as the client's answer, counted."""
        if isinstance(refused.refusal, RefusalError):
            return self._refusal_answer(refused.refusal, refused.tier)
        return self._refused(refused.refusal, refused.tier)

    def _refusal_answer(self, exc: RefusalError, tier: str) -> web.Response:
        """The gateway's own refusal (429/502/503/504) as an OpenAI error body with retry
        hints (:mod:`.answers`), counted."""
        self.metrics.finished("", tier, exc.outcome)
        return refusal_answer(exc, self.config.breaker.cooldown_s)

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

    # ------------------------------------------------------- background tasks

    async def scrape(self, state: InstanceState) -> None:
        """Read one engine's load now (:meth:`LoadScraper.scrape`)."""
        await self.scraper.scrape(state)

    async def _drain_loop(self) -> None:
        while True:
            await asyncio.sleep(DRAIN_INTERVAL_S)
            self.dispatcher.drain_all(self.loop.time())


def freeze_startup_heap() -> None:
    """Take what a serving process built before its first request out of the collector.

    The imports and the app leave ~10^5 long-lived objects; a full collection scans them
    all and pauses every request in flight for tens of ms (0.03-0.16 s measured here). Once
    frozen (``gc.freeze``), collections scan only what was made since, so the pauses scale
    with a request's garbage, not with the process. Called once, when a server is bound."""
    gc.collect()
    gc.freeze()


STOP_REPORT_S = 10.0
"""A graceful stop still running this long after SIGTERM writes every thread's stack to
stderr (once), so a stop that hangs says where it waits; the stop itself goes on."""


def stop_on_sigterm() -> None:
    """SIGTERM stops this process as Ctrl-C does (cleanly: keys flushed, workers stopped);
    a stop that takes over :data:`STOP_REPORT_S` reports where it waits."""
    signal.signal(signal.SIGTERM, _interrupt)


def _interrupt(signum: int, frame: object) -> None:
    """Stop as Ctrl-C does. With an event loop running, the interrupt is raised from a
    callback of its own, not from wherever the signal lands: landing inside a transport's
    callback (a peer's EOF, say), uvloop reports the exception as that connection's error
    and runs on, so a stop was lost and the process kept serving until killed."""
    faulthandler.dump_traceback_later(STOP_REPORT_S, exit=False)
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        raise KeyboardInterrupt(f"signal {signum}") from None
    loop.call_soon_threadsafe(_raise_interrupt, signum)


def _raise_interrupt(signum: int) -> None:
    """A loop callback that stops the loop the way Ctrl-C does (both loops re-raise it)."""
    raise KeyboardInterrupt(f"signal {signum}")


def die_with_parent() -> None:
    """Linux: have the kernel send this process SIGTERM when its parent dies (even by -9)."""
    with contextlib.suppress(OSError, AttributeError):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGTERM), 0, 0, 0)  # PR_SET_PDEATHSIG = 1


def exit_process(code: int = 0) -> NoReturn:
    """End this process now, after a clean stop: flush the standard streams and the logs,
    then skip the interpreter's teardown of every imported module (half a second or more
    for the gateway's, per process, which made a stopping gateway wait on each worker).
    Only for a process whose work is done: the gateway stopped, keys and logs flushed."""
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)


def run_on_fast_loop(main: Coroutine[Any, Any, None]) -> None:
    """Run ``main`` to completion on uvloop when it is installed (extra ``fast``), else asyncio."""
    try:
        import uvloop  # type: ignore[import-not-found, unused-ignore]
    except ImportError:
        asyncio.run(main)
        return
    uvloop.run(main)
