"""What the gateway knows about each instance, and the router's view built from it.

Static facts (:class:`~sincere.engine.instance.InstanceInfo`) come from the backend's
config: its models, prices, quality and limits, and -- when the config declares the
deployment behind it (``deployment``, as the controller does for the emulated engines it
starts) -- its accelerator, precision, batch limit and step-time model, built by the
engine layer exactly as the simulator builds them.

The load has two sources, in this order of trust:

1. the gateway's own count of requests sent to the instance and not finished
   (``num_in_flight``): exact and current, always known;
2. a sample read from the backend every ``scrape.interval_ms``: sincere's emulator
   reports its whole :class:`~sincere.engine.base.EngineLoad` as JSON (``load_path``,
   ``/sincere/load``); other engines their Prometheus ``/metrics`` (vLLM's gauge names
   ``vllm:num_requests_running``, ``vllm:num_requests_waiting``,
   ``vllm:kv_cache_usage_perc``), which carry no token counts. Both also give the
   engine's prefix-cache counters where it exports them (``vllm:prefix_cache_queries``
   and ``vllm:prefix_cache_hits``, tokens; the emulator's JSON ``prefix_cache_queries`` /
   ``prefix_cache_hits``): :attr:`LoadSample.prefix_hit_rate`. A speculating vLLM's
   ``vllm:spec_decode_num_drafts`` / ``_num_draft_tokens`` / ``_num_accepted_tokens``
   counters (the emulator's JSON: ``spec_decode``) give the observed acceptance
   (:class:`~.spec_decode.SpecCounts`, shown per instance by ``/health`` and the gateway's
   ``/metrics``); with a declared deployment that speculates, the routers' step-time
   estimate takes it up (:mod:`.spec_decode`).
   A sample older than ``max_age_s`` is ignored.

What no fresh sample says is unknown (``None`` in the view), never 0: routers then fall
back explicitly (see :mod:`sincere.policy.routers`).
:func:`sincere.engine.instance.instance_view` builds the view, as on the simulator's path.

What was measured on an instance (latencies, slot hold times) is the front door's
(:class:`~sincere.policy.admission.LatencyHistory`), as in the simulator. Views are
cached per model and rebuilt only when what they show changed (requests in flight, the
fresh sample, health), and the response headers naming the instance are built once.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from typing import Any

from sincere.engine.base import EngineLoad
from sincere.engine.instance import InstanceInfo, instance_view, spec_info
from sincere.policy.router_base import InstanceView
from sincere.serve.backends.config import BackendConfig
from sincere.serve.backends.openai_api import Backend
from sincere.serve.gateway.breaker import CircuitBreaker
from sincere.serve.gateway.spec_decode import (
    AcceptanceEstimate,
    SpecCounts,
    declared,
    declared_speculation,
)

VLLM_GAUGES = {
    "vllm:num_requests_running": "num_running",
    "vllm:num_requests_waiting": "num_waiting",
    "vllm:kv_cache_usage_perc": "kv_usage",
    "vllm:gpu_cache_usage_perc": "kv_usage",  # older vLLM name
}
"""Scraped gauge name -> field of :class:`~sincere.engine.base.EngineLoad`."""

PREFIX_COUNTERS = {
    "vllm:prefix_cache_queries_total": "queries",
    "vllm:prefix_cache_hits_total": "hits",
    "vllm:prefix_cache_queries": "queries",  # the counter without its exposition suffix
    "vllm:prefix_cache_hits": "hits",
    "vllm:gpu_prefix_cache_queries_total": "queries",  # older vLLM V1 names
    "vllm:gpu_prefix_cache_hits_total": "hits",
}
"""Scraped prefix-cache counter (tokens queried / found cached, vLLM's) -> sample field."""

SPEC_COUNTERS = {
    f"vllm:spec_decode_num_{name}{suffix}": name
    for name in ("drafts", "draft_tokens", "accepted_tokens")
    for suffix in ("_total", "")  # with and without the counter's exposition suffix
}
"""Scraped speculative-decoding counter (vLLM's, cumulative) -> :class:`SpecCounts` field."""


INSTANCE_HEADER = "x-sincere-instance"
"""Response header naming the instance that served the request."""


@dataclass(frozen=True, slots=True)
class LoadSample:
    """One reading of an engine's load."""

    at: float  # loop time of the reading, seconds
    load: EngineLoad  # what it said (fields it does not report are None)
    prefix_cache_queries: float | None = None  # prompt tokens looked up in its prefix cache
    prefix_cache_hits: float | None = None  # of those, tokens found cached (both cumulative)
    spec: SpecCounts | None = None  # speculative-decoding counters (None: not speculating)

    @property
    def prefix_hit_rate(self) -> float | None:
        """Cumulative share of queried prompt tokens found cached (None: not reported)."""
        q, h = self.prefix_cache_queries, self.prefix_cache_hits
        return None if q is None or h is None or q <= 0 else h / q


def parse_vllm_metrics(text: str, at: float) -> LoadSample | None:
    """The vLLM gauges, prefix-cache and speculative-decoding counters of a Prometheus page
    (summed over label sets), or None when it has none of them."""
    found: dict[str, float] = {}
    prefix: dict[str, float] = {}
    spec: dict[str, float] = {}
    families = ((VLLM_GAUGES, found), (PREFIX_COUNTERS, prefix), (SPEC_COUNTERS, spec))
    for line in text.splitlines():
        if not line.startswith("vllm:"):
            continue
        name_part, _, value_part = line.rpartition(" ")
        name = name_part.split("{", 1)[0].strip()
        for fields, into in families:
            if name in fields:
                _add(into, fields[name], value_part)
                break
    if not found and not prefix and not spec:
        return None
    running, waiting, kv = found.get("num_running"), found.get("num_waiting"), found.get("kv_usage")
    load = EngineLoad(
        num_running=None if running is None else int(running),
        num_waiting=None if waiting is None else int(waiting),
        waiting_prefill_tokens=None,  # vLLM exports no token gauges
        running_remaining_tokens=None,
        running_ctx_tokens=None,
        kv_usage=None if kv is None else min(1.0, max(0.0, kv)),
        busy_s=None,
    )
    counts = None
    if spec:
        drafted, accepted = spec.get("draft_tokens", 0.0), spec.get("accepted_tokens", 0.0)
        counts = SpecCounts(spec.get("drafts", 0.0), drafted, accepted)
    return LoadSample(at, load, prefix.get("queries"), prefix.get("hits"), counts)


def _add(into: dict[str, float], field: str, text: str) -> None:
    """Add a sample's value to ``into[field]`` (summed over label sets); junk is skipped."""
    try:
        value = float(text)
    except ValueError:
        return
    if math.isfinite(value):
        into[field] = into.get(field, 0.0) + value


def parse_engine_load(text: str, at: float) -> LoadSample | None:
    """An engine load as sincere's emulator reports it (JSON), or None when unusable."""
    try:
        data: Any = json.loads(text)
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    kv = _number(data.get("kv_usage"))
    load = EngineLoad(
        num_running=_count(data.get("num_running")),
        num_waiting=_count(data.get("num_waiting")),
        waiting_prefill_tokens=_count(data.get("waiting_prefill_tokens")),
        running_remaining_tokens=_count(data.get("running_remaining_tokens")),
        running_ctx_tokens=_count(data.get("running_ctx_tokens")),
        kv_usage=None if kv is None else min(1.0, max(0.0, kv)),
        busy_s=_number(data.get("busy_s")),
    )
    queries = _number(data.get("prefix_cache_queries"))
    hits = _number(data.get("prefix_cache_hits"))
    return LoadSample(at, load, queries, hits, _spec_counts(data.get("spec_decode")))


def _spec_counts(value: object) -> SpecCounts | None:
    """A speculating emulator's ``spec_decode`` counters (None: absent or malformed)."""
    if not isinstance(value, dict):
        return None
    counts: list[float] = []
    for name in ("num_drafts", "num_draft_tokens", "num_accepted_tokens"):
        number = _number(value.get(name))
        if number is None or number < 0:
            return None
        counts.append(number)
    return SpecCounts(*counts)


def _count(value: object) -> int | None:
    """A non-negative integer count, or None (absent or not a count)."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    return None


def _number(value: object) -> float | None:
    """A finite number, or None (absent or not a number)."""
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def backend_info(config: BackendConfig) -> InstanceInfo:
    """Static facts of a backend: its config, and its declared deployment when given."""
    base = InstanceInfo(
        id=config.name,
        models=tuple(config.models),
        accelerator=config.accelerator,
        max_num_seqs=config.max_num_seqs,
        max_in_flight=config.max_in_flight,
        price_in_per_token_usd=config.price_in_per_1m_usd / 1e6,
        price_out_per_token_usd=config.price_out_per_1m_usd / 1e6,
        quality=config.quality,
    )
    built = declared(config)
    if built is None:
        return base
    info = spec_info(
        built.spec, config.name, built.deployment, built.step,
        price_in_per_mtok_usd=config.price_in_per_1m_usd,
        price_out_per_mtok_usd=config.price_out_per_1m_usd,
        quality=config.quality, max_in_flight=config.max_in_flight,
    )  # fmt: skip
    return dataclasses.replace(info, models=base.models)


class InstanceState:
    """Live state of one backend instance, owned by the gateway's event loop."""

    def __init__(
        self,
        backend: Backend,
        breaker: CircuitBreaker,
        emulated: bool = False,
    ) -> None:
        self.backend = backend
        self.name = backend.name
        self.breaker = breaker
        self.info = backend_info(backend.config)
        # a declared deployment's speculation, its acceptance updated from the scrapes
        declared = declared_speculation(backend.config)
        self.acceptance = None if declared is None else AcceptanceEstimate(declared)
        if self.acceptance is not None:
            self.info = dataclasses.replace(self.info, step_model=self.acceptance.model)
        self.num_in_flight = 0  # sent to the instance and not finished
        self.sample: LoadSample | None = None  # last reading of the engine's load
        self.emulated = emulated  # started by the controller (it may stop it)
        self.removed = False  # taken out by the controller; finishing its requests
        self.routable = True  # False: asleep (its model's requests wait in the queue)
        self.last_done_at: float | None = None  # loop time it last finished a request
        self.num_requests = 0  # requests sent, ever
        self.json_headers = {"Content-Type": "application/json", INSTANCE_HEADER: self.name}
        self.sse_headers = {
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            INSTANCE_HEADER: self.name,
        }
        # model -> (what the view showed: in flight, sample, healthy; the view)
        self._views: dict[str, tuple[tuple[int, LoadSample | None, bool], InstanceView]] = {}

    @property
    def url(self) -> str:
        """The backend's base URL (may carry credentials: redact before showing it)."""
        return self.backend.url

    @property
    def models(self) -> dict[str, str]:
        """Public model name -> the name the backend knows it by."""
        return self.backend.models

    @property
    def kind(self) -> str:
        """The API the backend speaks (``openai``, ``ollama``)."""
        return self.backend.config.kind

    def take_sample(self, sample: LoadSample) -> None:
        """A scrape read ``sample``: keep it, and move a speculating deployment's step
        model to the acceptance it reports (:mod:`.spec_decode`)."""
        self.sample = sample
        if self.acceptance is not None:
            model = self.acceptance.observe(sample.spec)
            if model is not self.info.step_model:
                self.info = dataclasses.replace(self.info, step_model=model)

    def fresh_sample(self, now: float, max_age_s: float) -> LoadSample | None:
        """The last scrape if younger than ``max_age_s``; stale ones are ignored."""
        s = self.sample
        return s if s is not None and now - s.at <= max_age_s else None

    def view(self, model: str, now: float, max_age_s: float) -> InstanceView:
        """The router's read-only view of this instance serving ``model`` (cached)."""
        s = self.fresh_sample(now, max_age_s)
        healthy = not self.removed and self.routable and self.breaker.can_send(now)
        key = (self.num_in_flight, s, healthy)
        cached = self._views.get(model)
        if cached is not None and cached[0] == key:
            return cached[1]
        load = None if s is None else s.load
        view = instance_view(self.info, load, self.num_in_flight, healthy=healthy, model=model)
        self._views[model] = (key, view)
        return view
