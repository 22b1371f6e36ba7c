"""The open-loop load generator: send each request at its arrival time, whatever happens.

Requests go out on the schedule of their ``arrival_at`` (from the workload module's
arrival processes or a trace), never waiting for earlier answers, as in vLLM's
``benchmark_serving`` and in the simulator. Optional limits: ``max_concurrency``
(calls in flight; the rest wait client-side, and that wait counts as latency),
``timeout_s`` per call and ``time_limit_s`` for the whole run (a global deadline).
When the deadline passes, calls in flight are cancelled and recorded as rejected
with reason ``timeout``; requests not yet released are rejected as ``cancelled``.
Nothing is dropped: every request ends completed or rejected with a reason.

Closed loop (``concurrency``): ``concurrency`` client tasks instead, each sending its next
request when its last one ended (completed, failed or timed out) plus ``think_time_s``,
as vLLM's ``bench serve --max-concurrency`` and GuideLLM's concurrent mode do. Requests
go out in order (the next unsent one to whichever client is free), so they are numbered
in sending order; each one's ``arrival_at`` becomes the moment it was sent (the
workload's times are ignored), as the simulator's closed loop decides its arrivals in
the run. The run ends when every request was answered or at ``time_limit_s``.

The generator measures its own lateness (release time minus scheduled time); if
its 99th percentile exceeds ``late_after_s``, the summary says it did not keep up.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from urllib.parse import urlsplit

import aiohttp
import numpy as np

from sincere.bench.client import CallTiming, call
from sincere.bench.prompts import Api, endpoint_url, prompt_texts, request_body
from sincere.bench.results import (
    BenchResult,
    bench_summary,
    build_records,
    client_section,
    itl_table,
    measured_prefix_cache,
    pd_columns,
    pd_section,
    prefix_cache_section,
    reported_cached_tokens,
)
from sincere.core.errors import ConfigError
from sincere.core.request import RequestArrays

Progress = Callable[[int, int], None]
"""``progress(done, total)``, called as calls finish."""


@dataclass(frozen=True)
class BenchOptions:
    """How to send the requests (seconds; ``None`` = no limit)."""

    api: Api = "completions"  # /v1/completions or /v1/chat/completions
    model: str | None = None  # model name sent with every request; None = each request's own
    stream: bool = True  # stream tokens (needed for TTFT and ITL)
    max_concurrency: int | None = None  # calls in flight at once
    timeout_s: float | None = None  # per call, from its release
    time_limit_s: float | None = None  # whole run, from the start
    sincere_extension: bool = True  # send {"sincere": {"output_tokens": n}}
    # also send each request's own max_tokens, and its tier, priority and budget in the
    # extension (for sincere's gateway, whose tiers must include the trace's)
    request_fields: bool = False
    late_after_s: float = 0.01  # p99 release lateness beyond which the generator lagged
    concurrency: int | None = None  # closed loop: clients (None: open loop, at arrival times)
    think_time_s: float = 0.0  # closed loop: each client's pause between two requests
    ignore_eos: bool = False  # send vLLM's ignore_eos / min_tokens: exact output lengths

    def __post_init__(self) -> None:
        for name in ("timeout_s", "time_limit_s"):
            value = getattr(self, name)
            if value is not None and not (value > 0 and math.isfinite(value)):
                raise ConfigError(f"{name} must be a positive number of seconds", value=value)
        if self.max_concurrency is not None and self.max_concurrency < 1:
            raise ConfigError("max_concurrency must be >= 1", value=self.max_concurrency)
        if self.concurrency is not None and self.concurrency < 1:
            raise ConfigError("concurrency must be >= 1", value=self.concurrency)
        if not (self.think_time_s >= 0 and math.isfinite(self.think_time_s)):
            raise ConfigError("think_time_s must be a number >= 0", value=self.think_time_s)


class _Run:
    """State of one run: the calls' timings and the tasks in flight."""

    def __init__(self, url: str, requests: RequestArrays, options: BenchOptions) -> None:
        self.url = endpoint_url(url, options.api)
        self.requests = requests
        self.options = options
        self.bodies = _bodies(requests, options)
        n = len(requests)
        self.timings = [CallTiming() for _ in range(n)]
        self.dispatched_at = np.full(n, np.nan)
        self.tasks: set[asyncio.Task[None]] = set()
        self.limit = asyncio.Semaphore(options.max_concurrency or max(n, 1))
        self.num_done = 0
        self.num_sent = 0  # closed loop: requests handed to a client so far
        self.t0 = 0.0

    async def dispatch(self, session: aiohttp.ClientSession, progress: Progress | None) -> None:
        """Release every request at its arrival time."""
        arrivals = self.requests.arrival_at.tolist()
        for i, at in enumerate(arrivals):
            wait = at - (time.perf_counter() - self.t0)
            if wait > 0:
                await asyncio.sleep(wait)
            self.dispatched_at[i] = time.perf_counter() - self.t0
            task = asyncio.create_task(self.one(session, i, progress))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    async def clients(self, session: aiohttp.ClientSession, progress: Progress | None) -> None:
        """Closed loop: ``concurrency`` clients, each sending the next unsent request when
        its last one ended, after the think time."""
        assert self.options.concurrency is not None
        arrival_at = self.requests.arrival_at
        think, n = self.options.think_time_s, len(self.timings)

        async def client() -> None:
            while self.num_sent < n:
                i = self.num_sent
                self.num_sent += 1
                arrival_at[i] = self.dispatched_at[i] = time.perf_counter() - self.t0
                await self.one(session, i, progress)
                if think > 0 and self.num_sent < n:
                    await asyncio.sleep(think)

        await asyncio.gather(*(client() for _ in range(self.options.concurrency)))

    async def one(self, session: aiohttp.ClientSession, i: int, progress: Progress | None) -> None:
        """One call, under the concurrency limit and the per-call timeout."""
        timing = self.timings[i]
        try:
            async with self.limit, asyncio.timeout(self.options.timeout_s):
                await call(session, self.url, self.bodies[i], timing, self.t0, str(i))
        except TimeoutError:
            timing.error = "timeout"
        self.num_done += 1
        if progress is not None:
            progress(self.num_done, len(self.timings))

    async def drive(self, session: aiohttp.ClientSession, progress: Progress | None) -> str:
        """Run to the end or the deadline; the reason for calls still unfinished."""
        self.t0 = time.perf_counter()
        sender = self.dispatch if self.options.concurrency is None else self.clients
        dispatcher = asyncio.create_task(sender(session, progress))
        try:
            async with asyncio.timeout(self.options.time_limit_s):
                await dispatcher
                while self.tasks:
                    await asyncio.wait(set(self.tasks))
        except TimeoutError:
            await self._cancel(dispatcher)
            return "timeout"
        except asyncio.CancelledError:
            await self._cancel(dispatcher)
            return "cancelled"
        return "cancelled"

    async def _cancel(self, dispatcher: asyncio.Task[None]) -> None:
        pending = [dispatcher, *self.tasks]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    def reasons(self, unfinished: str) -> list[str | None]:
        """Each request's reject reason (``None`` for completed calls)."""
        out: list[str | None] = []
        for i, t in enumerate(self.timings):
            if t.error is not None:
                out.append(t.error)
            elif math.isnan(t.finished_at):
                out.append("cancelled" if math.isnan(self.dispatched_at[i]) else unfinished)
            else:
                out.append(None)
        return out


def _bodies(requests: RequestArrays, options: BenchOptions) -> list[dict[str, object]]:
    texts = prompt_texts(requests)
    names = requests.models
    model_ix = requests.model.tolist()
    prompt = requests.prompt_tokens.tolist()
    output = requests.output_tokens.tolist()
    bodies: list[dict[str, object]] = [
        request_body(
            api=options.api,
            model=options.model or names[model_ix[i]],
            prompt=texts[i],
            prompt_tokens=prompt[i],
            output_tokens=output[i],
            stream=options.stream,
            sincere_extension=options.sincere_extension,
            ignore_eos=options.ignore_eos,
        )
        for i in range(len(requests))
    ]
    if options.request_fields:
        for i, body in enumerate(bodies):
            _add_request_fields(body, requests, i)
    for body, session in zip(bodies, requests.sessions, strict=False):
        if session is not None:  # OpenAI's end-user id: the gateway's session by default
            body["user"] = session
    return bodies


def _add_request_fields(body: dict[str, object], requests: RequestArrays, i: int) -> None:
    """Request ``i``'s own cap, tier, priority and budget, as sincere's gateway reads them."""
    body["max_tokens"] = int(requests.max_tokens[i])
    ext = body.setdefault("sincere", {})
    assert isinstance(ext, dict)
    ext["tier"] = requests.tiers[int(requests.tier[i])].name
    ext["priority"] = int(requests.priority[i])
    budget = float(requests.budget_usd[i])
    if not math.isnan(budget):
        ext["budget_usd"] = budget


async def served_model(url: str) -> str | None:
    """The first model a server lists at ``/v1/models`` (``None`` if it lists none or fails)."""
    root = endpoint_url(url, "completions").removesuffix("/completions")
    root = root.removesuffix("/chat")
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session,
            session.get(f"{root}/models") as resp,
        ):
            payload = await resp.json(content_type=None)
        return str(payload["data"][0]["id"])
    except (aiohttp.ClientError, TimeoutError, ValueError, KeyError, IndexError, TypeError):
        return None


async def probe(url: str, timeout_s: float = 10.0) -> None:
    """Raise :class:`ConfigError` when no TCP connection to ``url``'s host and port opens.

    A cheap check before a long run: it sends nothing over HTTP, so any server that
    accepts connections passes (whether it speaks the OpenAI API shows in the records).
    """
    parts = urlsplit(endpoint_url(url, "completions"))
    host = parts.hostname or ""
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as exc:  # a port outside 0-65535 or not a number
        raise ConfigError(f"bad port in the URL ({exc})", value=url) from None
    try:
        async with asyncio.timeout(timeout_s):
            _, writer = await asyncio.open_connection(host, port)
    except (OSError, TimeoutError) as exc:
        reason = f"no answer in {timeout_s:g} s" if isinstance(exc, TimeoutError) else exc
        raise ConfigError(
            f"cannot connect to {host}:{port} ({reason}); is the server running?", value=url
        ) from None
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()


async def run_bench_async(
    url: str,
    requests: RequestArrays,
    options: BenchOptions | None = None,
    progress: Progress | None = None,
) -> BenchResult:
    """Send ``requests`` open-loop to ``url``; use inside a running event loop (notebooks).

    Raises :class:`~sincere.core.errors.ConfigError` for a bad URL or option. Server
    and network errors do not raise: they become rejected requests with a reason.
    """
    options = options or BenchOptions()
    if options.concurrency is not None:  # the run decides the arrival times: on a copy
        requests = replace(requests, arrival_at=np.zeros(len(requests)))
    if options.model is None and requests.models == ("default",):
        options = replace(options, model=await served_model(url))
    run = _Run(url, requests, options)
    connector = aiohttp.TCPConnector(limit=options.max_concurrency or 0, ttl_dns_cache=300)
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=30)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        unfinished = await run.drive(session, progress)
        duration_s = time.perf_counter() - run.t0
    return _result(run, unfinished, duration_s)


def _result(run: _Run, unfinished: str, duration_s: float) -> BenchResult:
    requests, options = run.requests, run.options
    records = build_records(requests, run.timings, run.reasons(unfinished))
    sent_at = np.array([t.sent_at for t in run.timings])
    itl = itl_table(run.timings)
    coalesced = sum(t.coalesced for t in run.timings)
    client = client_section(
        requests, records, run.dispatched_at, sent_at, options.late_after_s, coalesced
    )
    settings = {"url": run.url, **asdict(options), "num_requests": len(requests)}
    client = {**settings, **client}
    cached = reported_cached_tokens(run.timings)
    reported = prefix_cache_section(requests, cached)
    if reported is not None:
        client["prefix_cache"] = reported
    summary = bench_summary(requests, records, itl, duration_s, client)
    if options.concurrency is not None:  # as the simulator's closed loop says it
        summary["closed_loop"] = {
            "concurrency": options.concurrency,
            "think_time_s": options.think_time_s,
        }
    if reported is not None:  # the servers' reported hits, as the simulator's block reads
        summary["prefix_cache"] = measured_prefix_cache(reported)
    phases = pd_columns(run.timings)
    pd = pd_section(requests, phases)
    if pd is not None:
        summary["disaggregation"] = pd
    return BenchResult(
        requests, records, sent_at, run.dispatched_at, itl, summary, settings, cached, phases
    )


def run_bench(
    url: str,
    requests: RequestArrays,
    options: BenchOptions | None = None,
    progress: Progress | None = None,
) -> BenchResult:
    """Send ``requests`` open-loop to ``url`` and measure every call (blocking).

    ``url`` is a server root (``http://host:port``), its ``/v1`` or a full endpoint.
    Without ``options.model``, requests of the workload's unnamed ``default`` model ask
    for the first model the server lists at ``/v1/models``.
    Each request sends a prompt of its ``prompt_tokens`` and ``max_tokens`` = its
    ``output_tokens``. Returns the records, ITL gaps and summary (see
    :class:`~sincere.bench.results.BenchResult`); in a running event loop use
    :func:`run_bench_async`.
    """
    return asyncio.run(run_bench_async(url, requests, options, progress))
