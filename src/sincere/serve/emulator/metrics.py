"""Prometheus metrics of an emulated engine, under vLLM's names.

So dashboards, autoscalers and sincere's own gateway read an emulator as they read
vLLM: gauges ``vllm:num_requests_running``, ``vllm:num_requests_waiting`` and
``vllm:kv_cache_usage_perc`` (a fraction 0..1, as vLLM reports it); histograms
``vllm:time_to_first_token_seconds``, ``vllm:inter_token_latency_seconds`` (every gap
between streamed tokens), ``vllm:time_per_output_token_seconds`` (per request, (E2E -
TTFT) / (tokens - 1)), ``vllm:e2e_request_latency_seconds``; counters
``vllm:prompt_tokens_total``, ``vllm:generation_tokens_total``,
``vllm:request_success_total`` (label ``finished_reason``: stop / length),
``vllm:num_preemptions_total`` and the prefix cache's ``vllm:prefix_cache_queries_total`` /
``vllm:prefix_cache_hits_total`` (prompt tokens looked up / found cached, as vLLM v1
counts them; from the engine load's ``prefix_cache_queries`` / ``prefix_cache_hits``,
0 while the engine reports none); plus ``sincere:injected_errors_total`` and
``sincere:aborted_requests_total``. Every series is labelled ``model_name``. Bucket
bounds are vLLM v1's (``vllm/v1/metrics/loggers.py``). Times are wall-clock seconds
measured when the emulator hands a token to the response.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from sincere.engine.base import EngineLoad

TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5,
                5.0, 7.5, 10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0)  # fmt: skip
ITL_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0,
               7.5, 10.0, 20.0, 40.0, 80.0)  # fmt: skip
E2E_BUCKETS = (0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0,
               60.0, 120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0)  # fmt: skip

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
"""Prometheus' text exposition format."""


class EmulatorMetrics:
    """One engine's metrics in a private registry (several emulators share a process)."""

    def __init__(self, model_name: str) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.model_name = model_name
        self._previous_preemptions = 0
        self._previous_prefix = (0, 0)  # prefix-cache queries and hits already counted
        self._build_gauges()
        self._build_histograms()
        self._build_counters()

    def _gauge(self, name: str, doc: str) -> Gauge:
        return Gauge(name, doc, ["model_name"], registry=self.registry)

    def _build_gauges(self) -> None:
        m = self.model_name
        self.running = self._gauge("vllm:num_requests_running", "Requests in the batch.").labels(m)
        self.waiting = self._gauge("vllm:num_requests_waiting", "Requests queued.").labels(m)
        self.kv_usage = self._gauge(
            "vllm:kv_cache_usage_perc", "KV-cache usage, fraction 0..1."
        ).labels(m)

    def _histogram(self, name: str, doc: str, buckets: tuple[float, ...]) -> Histogram:
        return Histogram(name, doc, ["model_name"], buckets=buckets, registry=self.registry)

    def _build_histograms(self) -> None:
        m = self.model_name
        self.ttft = self._histogram(
            "vllm:time_to_first_token_seconds", "Time to first token, s.", TTFT_BUCKETS
        ).labels(m)
        self.itl = self._histogram(
            "vllm:inter_token_latency_seconds", "Gap between streamed tokens, s.", ITL_BUCKETS
        ).labels(m)
        self.tpot = self._histogram(
            "vllm:time_per_output_token_seconds", "Per request (E2E-TTFT)/(n-1), s.", ITL_BUCKETS
        ).labels(m)
        self.e2e = self._histogram(
            "vllm:e2e_request_latency_seconds", "Arrival to last token, s.", E2E_BUCKETS
        ).labels(m)

    def _build_counters(self) -> None:
        m, r = self.model_name, self.registry
        self.prompt_tokens = Counter(
            "vllm:prompt_tokens", "Prompt tokens processed.", ["model_name"], registry=r
        ).labels(m)
        self.generation_tokens = Counter(
            "vllm:generation_tokens", "Tokens generated.", ["model_name"], registry=r
        ).labels(m)
        self._success = Counter(
            "vllm:request_success",
            "Requests finished.",
            ["model_name", "finished_reason"],
            registry=r,
        )
        self.preemptions = Counter(
            "vllm:num_preemptions", "Sequences preempted.", ["model_name"], registry=r
        ).labels(m)
        self.prefix_queries = Counter(
            "vllm:prefix_cache_queries",
            "Prompt tokens looked up in the prefix cache.",
            ["model_name"],
            registry=r,
        ).labels(m)
        self.prefix_hits = Counter(
            "vllm:prefix_cache_hits", "Prompt tokens found cached.", ["model_name"], registry=r
        ).labels(m)
        self.injected_errors = Counter(
            "sincere:injected_errors", "HTTP 500s injected.", ["model_name"], registry=r
        ).labels(m)
        self.aborted = Counter(
            "sincere:aborted_requests",
            "Requests aborted (client gone).",
            ["model_name"],
            registry=r,
        ).labels(m)

    def success(self, finished_reason: str) -> None:
        """Count a request that finished with ``finished_reason``."""
        self._success.labels(self.model_name, finished_reason).inc()

    def finished(
        self, arrival_at: float, first_at: float | None, last_at: float, num_tokens: int
    ) -> None:
        """Observe E2E and TPOT of a finished request (wall-clock seconds)."""
        self.e2e.observe(last_at - arrival_at)
        if first_at is not None and num_tokens > 1:
            self.tpot.observe((last_at - first_at) / (num_tokens - 1))

    def render(self, load: EngineLoad, num_preemptions: int) -> bytes:
        """The exposition text, with gauges refreshed from ``load``."""
        for gauge, value in (
            (self.running, load.num_running),
            (self.waiting, load.num_waiting),
            (self.kv_usage, load.kv_usage),
        ):
            if value is not None:  # an engine reports all three; keep the type honest
                gauge.set(value)
        if num_preemptions > self._previous_preemptions:
            self.preemptions.inc(num_preemptions - self._previous_preemptions)
            self._previous_preemptions = num_preemptions
        self._count_prefix(load)
        return generate_latest(self.registry)

    def _count_prefix(self, load: EngineLoad) -> None:
        """Move the prefix-cache counters on to the load's cumulative totals."""
        queries = getattr(load, "prefix_cache_queries", None)
        hits = getattr(load, "prefix_cache_hits", None)
        if not isinstance(queries, int) or not isinstance(hits, int):
            return
        seen_q, seen_h = self._previous_prefix
        if queries > seen_q:
            self.prefix_queries.inc(queries - seen_q)
        if hits > seen_h:
            self.prefix_hits.inc(hits - seen_h)
        self._previous_prefix = (max(queries, seen_q), max(hits, seen_h))
