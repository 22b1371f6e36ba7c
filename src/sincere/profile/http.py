"""Profile any OpenAI-compatible endpoint: a concurrency sweep with streamed timings.

For every (prompt length, output length) pair and every concurrency ``c`` of SINCERE's
batch-size ladder (:func:`~sincere.profile.sizes.batch_size_ladder`, up to
``max_concurrency``), ``c`` identical streaming ``/v1/completions`` requests are sent at
once, ``repeats`` times. Each stream is read server-sent event by event, so the time to
the first token (TTFT) and every inter-token gap (ITL) are measured on the client's
clock; TPOT is vLLM's ``(E2E − TTFT) / (output tokens − 1)`` per request. A point's
*processing time* is the wall time from sending the batch to its last token (SINCERE's
"processing time (s)" of a batch), and its throughput ``c / processing time``.

A sweep of one (prompt, output) pair stops at the first concurrency where a request
fails (SINCERE's out-of-memory row: the time is written as ``None``), and the whole
profile stops after ``max_duration_s``. Prompts are ``prompt_tokens`` repetitions of a
common word (one token in most tokenizers); the token counts the server reports in
``usage`` are recorded beside the requested ones. vLLM's ``ignore_eos`` / ``min_tokens``
extensions make every request produce exactly ``output_tokens`` tokens (turn them off
for strict OpenAI servers).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import numpy as np

from sincere.core.errors import ConfigError
from sincere.profile.monitor import Monitor
from sincere.profile.sizes import batch_size_ladder

ProfileRow = dict[str, Any]


@dataclass(frozen=True, slots=True)
class HttpProfileConfig:
    """What to sweep and the bounds of the sweep."""

    url: str  # base URL of the server, e.g. http://127.0.0.1:8000
    model: str | None = None  # served model name (None: the first of /v1/models)
    prompt_tokens: tuple[int, ...] = (128,)  # prompt lengths to try, tokens
    output_tokens: tuple[int, ...] = (32,)  # output lengths to try, tokens
    max_concurrency: int = 16  # largest concurrency (batch size) tried
    repeats: int = 1  # batches sent per point
    request_timeout_s: float = 120.0  # one request's limit
    max_duration_s: float = 600.0  # the whole profile's limit
    prompt_word: str = "hello"  # the word repeated to make prompts
    vllm_extras: bool = True  # send ignore_eos / min_tokens so outputs have exact length
    warmup: bool = True  # one untimed request before the sweep
    headers: tuple[tuple[str, str], ...] = ()  # extra HTTP headers (e.g. authorization)

    def __post_init__(self) -> None:
        for name in ("prompt_tokens", "output_tokens"):
            values = getattr(self, name)
            if not values or min(values) < 1:
                raise ConfigError(f"{name} must be positive token counts", value=values)
        if self.max_concurrency < 1 or self.repeats < 1:
            raise ConfigError(
                "max_concurrency and repeats must be >= 1",
                value=(self.max_concurrency, self.repeats),
            )
        if self.request_timeout_s <= 0 or self.max_duration_s <= 0:
            raise ConfigError("time limits must be > 0 s", value=self.max_duration_s)

    @property
    def base_url(self) -> str:
        """The URL without a trailing slash or ``/v1``."""
        url = self.url.rstrip("/")
        return url[: -len("/v1")] if url.endswith("/v1") else url


@dataclass(slots=True)
class RequestTiming:
    """What one streamed request measured, seconds from its send."""

    ttft_s: float | None = None  # first token
    e2e_s: float | None = None  # last byte of the stream
    token_at_s: list[float] = field(default_factory=list)  # arrival of each text chunk
    prompt_tokens: int | None = None  # from the server's usage, when it sends one
    output_tokens: int | None = None  # from usage, else the number of text chunks
    error: str | None = None  # why it failed

    @property
    def num_output_tokens(self) -> int:
        """Output tokens: the server's count, else the chunks seen."""
        return self.output_tokens if self.output_tokens is not None else len(self.token_at_s)

    @property
    def tpot_s(self) -> float | None:
        """``(E2E − TTFT) / (output tokens − 1)``, ``None`` for a single token."""
        n = self.num_output_tokens
        if self.ttft_s is None or self.e2e_s is None or n < 2:
            return None
        return (self.e2e_s - self.ttft_s) / (n - 1)


def _request_body(cfg: HttpProfileConfig, model: str, prompt: int, output: int) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": model,
        "prompt": " ".join([cfg.prompt_word] * prompt),
        "max_tokens": output,
        "temperature": 0.0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    if cfg.vllm_extras:
        body.update(ignore_eos=True, min_tokens=output)
    return body


def _read_event(timing: RequestTiming, payload: str, elapsed_s: float) -> None:
    """Apply one SSE ``data:`` payload to ``timing``."""
    event = json.loads(payload)
    if "error" in event:
        timing.error = str(event["error"])[:200]
        return
    for choice in event.get("choices") or ():
        text = choice.get("text") or (choice.get("delta") or {}).get("content")
        if text:
            if timing.ttft_s is None:
                timing.ttft_s = elapsed_s
            timing.token_at_s.append(elapsed_s)
    usage = event.get("usage")
    if usage:
        timing.prompt_tokens = usage.get("prompt_tokens")
        timing.output_tokens = usage.get("completion_tokens")


async def stream_completion(
    session: aiohttp.ClientSession, url: str, body: dict[str, Any], timeout_s: float
) -> RequestTiming:
    """Send one streaming completion and time its tokens (errors are recorded, not raised)."""
    timing = RequestTiming()
    sent_at = time.perf_counter()
    try:
        timeout = aiohttp.ClientTimeout(total=timeout_s)
        async with session.post(url, json=body, timeout=timeout) as resp:
            if resp.status != 200:
                timing.error = f"HTTP {resp.status}: {(await resp.text())[:200]}"
                return timing
            async for raw in resp.content:
                line = raw.decode("utf-8", "replace").strip()
                if not line.startswith("data:"):
                    continue
                payload = line[len("data:") :].strip()
                if payload == "[DONE]":
                    break
                _read_event(timing, payload, time.perf_counter() - sent_at)
    except (TimeoutError, aiohttp.ClientError, json.JSONDecodeError) as exc:
        timing.error = f"{type(exc).__name__}: {exc}"[:200]
    timing.e2e_s = time.perf_counter() - sent_at
    if timing.error is None and timing.ttft_s is None:
        timing.error = "stream ended without a token"
    return timing


def _stats(prefix: str, values: Sequence[float]) -> dict[str, float | None]:
    """Mean, p50 and p90 of ``values`` as ``<prefix>_mean_s`` etc. (``None`` when empty)."""
    if not values:
        return {f"{prefix}_{k}_s": None for k in ("mean", "p50", "p90")}
    arr = np.asarray(values, dtype=float)
    return {
        f"{prefix}_mean_s": float(arr.mean()),
        f"{prefix}_p50_s": float(np.percentile(arr, 50)),
        f"{prefix}_p90_s": float(np.percentile(arr, 90)),
    }


LEADING_COLUMNS = [
    "model",
    "batch_size",
    "processing time (s)",
    "throughput (qps)",
    "prompt_tokens",
    "output_tokens",
]
"""data/sincere's leading columns, then the requested lengths (tokens)."""


def summarize_point(
    model: str,
    batch_size: int,
    prompt: int,
    output: int,
    batches: Sequence[tuple[float, Sequence[RequestTiming]]],
) -> ProfileRow:
    """One CSV row from ``(processing_s, timings)`` of each repeat of a point."""
    timings = [t for _, ts in batches for t in ts]
    failed = [t for t in timings if t.error is not None]
    ok = [t for t in timings if t.error is None]
    proc = float(np.median([p for p, _ in batches])) if not failed else None
    row: ProfileRow = {
        "model": model,
        "batch_size": batch_size,
        "processing time (s)": proc,
        "throughput (qps)": batch_size / proc if proc else None,
        "prompt_tokens": prompt,
        "output_tokens": output,
        "measured_prompt_tokens": _mean_of([t.prompt_tokens for t in ok]),
        "measured_output_tokens": _mean_of([t.num_output_tokens for t in ok]),
    }
    row.update(_stats("ttft", [t.ttft_s for t in ok if t.ttft_s is not None]))
    row.update(_stats("tpot", [v for t in ok if (v := t.tpot_s) is not None]))
    gaps = [g for t in ok for g in np.diff(t.token_at_s).tolist()]
    row.update(_stats("itl", gaps))
    row.update(_stats("e2e", [t.e2e_s for t in ok if t.e2e_s is not None]))
    row.update(
        num_requests=len(timings),
        num_errors=len(failed),
        error=failed[0].error if failed else "",
    )
    return row


def _mean_of(values: Sequence[float | int | None]) -> float | None:
    present = [float(v) for v in values if v is not None]
    return sum(present) / len(present) if present else None


async def run_batch(
    session: aiohttp.ClientSession, url: str, body: dict[str, Any], n: int, timeout_s: float
) -> tuple[float, list[RequestTiming]]:
    """Send ``n`` copies of ``body`` at once; the wall time to the last token and each timing."""
    started = time.perf_counter()
    timings = await asyncio.gather(
        *(stream_completion(session, url, body, timeout_s) for _ in range(n))
    )
    return time.perf_counter() - started, list(timings)


Progress = Callable[[int, int, ProfileRow], None]  # (points done, points planned, last row)


@dataclass
class HttpProfiler:
    """Runs the sweep of an :class:`HttpProfileConfig`; see the module docstring."""

    config: HttpProfileConfig
    monitor: Monitor | None = None  # samples host / GPU columns into each row
    on_point: Progress | None = None

    def plan(self) -> list[tuple[int, int, int]]:
        """The (prompt, output, concurrency) points, in the order they run."""
        ladder = batch_size_ladder(self.config.max_concurrency)
        cfg = self.config
        return [(p, o, c) for p in cfg.prompt_tokens for o in cfg.output_tokens for c in ladder]

    async def run(self) -> list[ProfileRow]:
        """Profile the endpoint; rows in :data:`LEADING_COLUMNS` order plus timings."""
        cfg = self.config
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(headers=dict(cfg.headers), connector=connector) as s:
            model = cfg.model or await served_model(s, cfg.base_url)
            if cfg.warmup:
                body = _request_body(cfg, model, min(cfg.prompt_tokens), 2)
                await run_batch(s, self._url, body, 1, cfg.request_timeout_s)
            return await self._sweep(s, model)

    @property
    def _url(self) -> str:
        return f"{self.config.base_url}/v1/completions"

    async def _sweep(self, session: aiohttp.ClientSession, model: str) -> list[ProfileRow]:
        cfg, points = self.config, self.plan()
        deadline = time.perf_counter() + cfg.max_duration_s
        rows: list[ProfileRow] = []
        failed_pairs: set[tuple[int, int]] = set()
        for done, (p, o, c) in enumerate(points, start=1):
            if (p, o) in failed_pairs or time.perf_counter() > deadline:
                continue
            row = await self._point(session, model, p, o, c)
            rows.append(row)
            if row["num_errors"]:
                failed_pairs.add((p, o))
            if self.on_point is not None:
                self.on_point(done, len(points), row)
        return rows

    async def _point(
        self, session: aiohttp.ClientSession, model: str, p: int, o: int, c: int
    ) -> ProfileRow:
        cfg = self.config
        body = _request_body(cfg, model, p, o)
        started = time.monotonic()
        batches = []
        for _ in range(cfg.repeats):
            batches.append(await run_batch(session, self._url, body, c, cfg.request_timeout_s))
            if any(t.error for t in batches[-1][1]):
                break
        row = summarize_point(model, c, p, o, batches)
        if self.monitor is not None:
            row.update(self.monitor.window(started, time.monotonic()))
        return row


async def served_model(session: aiohttp.ClientSession, base_url: str) -> str:
    """The first model id of ``GET /v1/models``; raises ``ConfigError`` if there is none."""
    try:
        async with session.get(f"{base_url}/v1/models") as resp:
            data = await resp.json(content_type=None)
    except (aiohttp.ClientError, json.JSONDecodeError) as exc:
        raise ConfigError("cannot list models", where=base_url, value=str(exc)) from None
    models = [m.get("id") for m in (data or {}).get("data", []) if isinstance(m, dict)]
    if not models or not models[0]:
        raise ConfigError("the server lists no model; pass --model", where=base_url)
    return str(models[0])


def profile_http(
    config: HttpProfileConfig, monitor: Monitor | None = None, on_point: Progress | None = None
) -> list[ProfileRow]:
    """Run :class:`HttpProfiler` to completion (a blocking wrapper around ``asyncio.run``)."""
    return asyncio.run(HttpProfiler(config, monitor, on_point).run())
