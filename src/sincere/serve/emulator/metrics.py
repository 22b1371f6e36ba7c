"""Prometheus metrics of an emulated engine, under the names and labels of vLLM 0.32.0.

So dashboards, autoscalers, load generators (inference-perf, GuideLLM) and sincere's own
gateway read an emulator as they read vLLM. The set tracked is what vLLM 0.32.0's
``PrometheusStatLogger`` (``vllm/v1/metrics/loggers.py``) exports by default, one series
per ``model_name`` and ``engine`` (``"0"``, one engine core per server):

* gauges ``vllm:num_requests_running``, ``vllm:num_requests_waiting``,
  ``vllm:num_requests_waiting_by_reason{reason}``, ``vllm:kv_cache_usage_perc`` (a
  fraction 0..1), ``vllm:engine_sleep_state{sleep_state}`` (sleep mode: :mod:`.sleep`) and
  ``vllm:cache_config_info``;
* counters ``vllm:prompt_tokens``, ``vllm:prompt_tokens_by_source{source}``,
  ``vllm:prompt_tokens_cached``, ``vllm:prompt_tokens_cached_by_source{source}``,
  ``vllm:generation_tokens``, ``vllm:request_success{finished_reason}``,
  ``vllm:num_preemptions``, ``vllm:prefix_cache_queries`` / ``_hits`` (prompt tokens
  looked up / found, from the engine load), ``vllm:external_prefix_cache_queries`` /
  ``_hits`` (KV pulled from a prefill instance), ``vllm:mm_cache_queries`` / ``_hits``
  (always 0: no images are emulated), ``vllm:admission_rejections{reason}`` (always 0:
  the emulator has no queue limit of vLLM's kind; a full emulator answers 503);
* histograms ``vllm:time_to_first_token_seconds``, ``vllm:inter_token_latency_seconds``
  (every gap), ``vllm:request_time_per_output_token_seconds`` (per request: decode time /
  (tokens - 1), 0 for one token, as vLLM), ``vllm:e2e_request_latency_seconds``,
  ``vllm:request_queue_time_seconds`` (arrival to first scheduled),
  ``vllm:request_prefill_time_seconds`` (first scheduled to first token),
  ``vllm:request_decode_time_seconds`` (first to last token),
  ``vllm:request_inference_time_seconds`` (first scheduled to last token),
  ``vllm:request_prompt_tokens``, ``vllm:request_generation_tokens``,
  ``vllm:request_max_num_generation_tokens``, ``vllm:request_params_max_tokens``,
  ``vllm:request_params_n``, ``vllm:request_num_preemptions``,
  ``vllm:request_prefill_kv_computed_tokens`` and ``vllm:iteration_tokens_total``.

An engine that speculates (``engine.speculation``) also exports vLLM's counters
``vllm:spec_decode_num_drafts``, ``vllm:spec_decode_num_draft_tokens``,
``vllm:spec_decode_num_accepted_tokens`` and
``vllm:spec_decode_num_accepted_tokens_per_pos{position}`` (position 0 is the first drafted
token), registered only then, as vLLM registers them only with a speculative config.

Bucket bounds are vLLM's (``vllm/v1/metrics/buckets.py``; token counts on a 1-2-5 series up
to the context). Times are wall-clock seconds taken when the emulator hands a token to the
response. Names vLLM has removed (``vllm:time_per_output_token_seconds``,
``vllm:gpu_cache_usage_perc``) are not exported. sincere adds
``sincere:injected_errors_total`` and ``sincere:aborted_requests_total``. An engine with KV
offload tiers also exports their counters (:mod:`.offload_metrics`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from sincere.engine.base import EngineLoad, SpecDecodeStats
from sincere.engine.kv_tiers import KvTierStats
from sincere.serve.emulator.offload_metrics import OffloadMetrics

VLLM_VERSION = "0.32.0"
"""The vLLM release whose metric set and OpenAI API the emulator tracks."""

TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5,
                5.0, 7.5, 10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0)  # fmt: skip
ITL_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0,
               7.5, 10.0, 20.0, 40.0, 80.0)  # fmt: skip
LATENCY_BUCKETS = (0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0,
                   60.0, 120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0)  # fmt: skip
ITERATION_BUCKETS = (1, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384)
N_BUCKETS = (1, 2, 5, 10, 20)
PREEMPTION_BUCKETS = (1, 2, 3, 4, 5, 10, 20)
FINISH_REASONS = ("stop", "length", "abort", "error", "repetition")
PROMPT_SOURCES = ("local_compute", "local_cache_hit", "external_kv_transfer")
CACHED_SOURCES = ("device", "host", "p2p", "disk", "external_unspecified")
ENGINE = "0"  # one engine core per emulated server

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
"""Prometheus' text exposition format."""


def token_buckets(max_context: int) -> tuple[float, ...]:
    """vLLM's token-count buckets: 1, 2, 5, 10, 20, 50, ... up to ``max_context``."""
    out: list[float] = []
    scale = 1
    while True:
        for mantissa in (1, 2, 5):
            if mantissa * scale > max_context:
                return tuple(out)
            out.append(float(mantissa * scale))
        scale *= 10


@dataclass(frozen=True, slots=True)
class FinishedRequest:
    """One finished request's figures; times are wall-clock (loop) seconds."""

    finish_reason: str  # "stop" or "length"
    arrival_at: float  # the request reached the server
    scheduled_at: float  # first iteration that computed it (its KV landing for a decode)
    first_token_at: float
    last_token_at: float
    prompt_tokens: int
    cached_tokens: int  # prompt tokens not computed here (prefix cache, pulled KV)
    generation_tokens: int
    max_tokens: int  # the cap the request ran under
    num_preemptions: int
    # the parent's ``n`` when this is the last of its choices to finish (vLLM records ``n``
    # and the cap once a parent request); None for its other choices
    n_param: int | None = 1


class EmulatorMetrics:
    """One engine's metrics in a private registry (several emulators share a process)."""

    def __init__(self, model_name: str, max_context: int = 8192, block_tokens: int = 16) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.labels = (model_name, ENGINE)
        self.model_name = model_name
        self._previous_preemptions = 0
        self._previous_prefix = (0, 0)  # prefix-cache queries and hits already counted
        self._offload: OffloadMetrics | None = None  # KV tier counters, once an engine has tiers
        self._spec_decode: SpecDecodeCounters | None = None  # built when an engine speculates
        self._token_buckets = token_buckets(max_context)
        self._build_gauges(block_tokens)
        self._build_counters()
        self._build_token_counters()
        self._build_histograms()

    def _gauge(self, name: str, doc: str, extra: Sequence[str] = ()) -> Gauge:
        return Gauge(name, doc, ["model_name", "engine", *extra], registry=self.registry)

    def _counter(self, name: str, doc: str, extra: Sequence[str] = ()) -> Counter:
        return Counter(name, doc, ["model_name", "engine", *extra], registry=self.registry)

    def _histogram(self, name: str, doc: str, buckets: Sequence[float]) -> Histogram:
        return Histogram(
            name, doc, ["model_name", "engine"], buckets=buckets, registry=self.registry
        ).labels(*self.labels)

    def _build_gauges(self, block_tokens: int) -> None:
        m = self.labels
        self.running = self._gauge("vllm:num_requests_running", "Requests in the batch.").labels(*m)
        self.waiting = self._gauge("vllm:num_requests_waiting", "Requests queued.").labels(*m)
        by_reason = self._gauge(
            "vllm:num_requests_waiting_by_reason", "Waiting requests by reason.", ["reason"]
        )
        self.waiting_capacity = by_reason.labels(*m, "capacity")
        by_reason.labels(*m, "deferred").set(0)
        sleep = self._gauge("vllm:engine_sleep_state", "Engine sleep state.", ["sleep_state"])
        states = ("awake", "weights_offloaded", "discard_all")
        self._sleep_state = {state: sleep.labels(*m, state) for state in states}
        self.set_sleep_level(None)
        self.kv_usage = self._gauge(
            "vllm:kv_cache_usage_perc", "KV-cache usage. 1 means 100 percent usage."
        ).labels(*m)
        Gauge(
            "vllm:cache_config_info", "Information of the LLMEngine CacheConfig",
            ["block_size", "engine"], registry=self.registry,
        ).labels(str(block_tokens), ENGINE).set(1)  # fmt: skip

    def _build_counters(self) -> None:
        m = self.labels
        success = self._counter("vllm:request_success", "Requests finished.", ["finished_reason"])
        self._success = {reason: success.labels(*m, reason) for reason in FINISH_REASONS}
        self.preemptions = self._counter("vllm:num_preemptions", "Preemptions.").labels(*m)
        self.prefix_queries = self._counter(
            "vllm:prefix_cache_queries", "Prompt tokens looked up in the prefix cache."
        ).labels(*m)
        self.prefix_hits = self._counter(
            "vllm:prefix_cache_hits", "Prompt tokens found cached."
        ).labels(*m)
        self.external_queries = self._counter(
            "vllm:external_prefix_cache_queries", "Prompt tokens looked up in other instances."
        ).labels(*m)
        self.external_hits = self._counter(
            "vllm:external_prefix_cache_hits", "Prompt tokens pulled from other instances."
        ).labels(*m)
        for name in ("vllm:mm_cache_queries", "vllm:mm_cache_hits"):
            self._counter(name, "Multi-modal cache items (none are emulated).").labels(*m)
        rejections = Counter(
            "vllm:admission_rejections", "Admissions refused by a queue limit.",
            ["model_name", "reason"], registry=self.registry,
        )  # fmt: skip
        for reason in ("max_num_queued_reqs", "max_num_queued_tokens"):
            rejections.labels(self.model_name, reason)
        self.injected_errors = self._counter("sincere:injected_errors", "HTTP 500s injected.")
        self.injected_errors = self.injected_errors.labels(*m)
        self.aborted = self._counter("sincere:aborted_requests", "Requests aborted.").labels(*m)

    def _build_token_counters(self) -> None:
        m = self.labels
        self.prompt_tokens = self._counter("vllm:prompt_tokens", "Prompt tokens.").labels(*m)
        by_source = self._counter(
            "vllm:prompt_tokens_by_source", "Prompt tokens by source.", ["source"]
        )
        self._prompt_by_source = {s: by_source.labels(*m, s) for s in PROMPT_SOURCES}
        self.prompt_cached = self._counter(
            "vllm:prompt_tokens_cached", "Cached prompt tokens (local + external)."
        ).labels(*m)
        cached = self._counter(
            "vllm:prompt_tokens_cached_by_source", "Cached prompt tokens by tier.", ["source"]
        )
        self._cached_by_source = {s: cached.labels(*m, s) for s in CACHED_SOURCES}
        self.generation_tokens = self._counter(
            "vllm:generation_tokens", "Generation tokens."
        ).labels(*m)

    def _build_histograms(self) -> None:
        h, tokens = self._histogram, self._token_buckets
        self.ttft = h("vllm:time_to_first_token_seconds", "Time to first token, s.", TTFT_BUCKETS)
        self.itl = h("vllm:inter_token_latency_seconds", "Inter-token latency, s.", ITL_BUCKETS)
        self.tpot = h(
            "vllm:request_time_per_output_token_seconds", "Per request TPOT, s.", ITL_BUCKETS
        )
        self.e2e = h("vllm:e2e_request_latency_seconds", "E2E latency, s.", LATENCY_BUCKETS)
        self.queue = h("vllm:request_queue_time_seconds", "WAITING phase, s.", LATENCY_BUCKETS)
        self.inference = h(
            "vllm:request_inference_time_seconds", "RUNNING phase, s.", LATENCY_BUCKETS
        )
        self.prefill = h("vllm:request_prefill_time_seconds", "PREFILL phase, s.", LATENCY_BUCKETS)
        self.decode = h("vllm:request_decode_time_seconds", "DECODE phase, s.", LATENCY_BUCKETS)
        self.request_prompt = h("vllm:request_prompt_tokens", "Prompt tokens.", tokens)
        self.request_generation = h("vllm:request_generation_tokens", "Output tokens.", tokens)
        self.iteration_tokens = h(
            "vllm:iteration_tokens_total", "Tokens per engine step.", ITERATION_BUCKETS
        )
        self.max_generation = h(
            "vllm:request_max_num_generation_tokens", "Most tokens a request may make.", tokens
        )
        self.n_param = h("vllm:request_params_n", "The n request parameter.", N_BUCKETS)
        self.max_tokens_param = h(
            "vllm:request_params_max_tokens", "The max_tokens request parameter.", tokens
        )
        self.request_preemptions = h(
            "vllm:request_num_preemptions", "Preemptions per request.", PREEMPTION_BUCKETS
        )
        self.kv_computed = h(
            "vllm:request_prefill_kv_computed_tokens", "Prompt tokens computed.", tokens
        )

    # ---------------------------------------------------------------- events

    def prompt_done(
        self,
        prompt_tokens: int,
        cached_tokens: int,
        external: bool,
        tier_loaded: tuple[int, int] = (0, 0),
    ) -> None:
        """Count a prompt whose first token came out: computed, cached or pulled tokens.

        ``external``: its whole KV was pulled from a prefill instance; ``tier_loaded``:
        of its ``cached_tokens``, those loaded back from the CPU and from the disk KV tier,
        which vLLM counts as ``external_kv_transfer`` (loaded through its offload
        connector) and caches by source ``host`` / ``disk``, not as local cache hits.
        """
        self.prompt_tokens.inc(prompt_tokens)
        self._prompt_by_source["local_compute"].inc(prompt_tokens - cached_tokens)
        self.prompt_cached.inc(cached_tokens)
        by_source, cached_by = self._prompt_by_source, self._cached_by_source
        if external:
            by_source["external_kv_transfer"].inc(cached_tokens)
            cached_by["p2p"].inc(cached_tokens)
            self.external_queries.inc(prompt_tokens)
            self.external_hits.inc(cached_tokens)
            return
        host = min(tier_loaded[0], cached_tokens)  # a load of a recompute after preemption
        disk = min(tier_loaded[1], cached_tokens - host)  # may exceed the first admission's
        by_source["local_cache_hit"].inc(cached_tokens - host - disk)
        by_source["external_kv_transfer"].inc(host + disk)
        cached_by["device"].inc(cached_tokens - host - disk)
        cached_by["host"].inc(host)
        cached_by["disk"].inc(disk)

    def request_finished(self, done: FinishedRequest) -> None:
        """Observe everything vLLM records when a request finishes."""
        self._success[done.finish_reason].inc()
        decode_s = done.last_token_at - done.first_token_at
        n = done.generation_tokens
        for hist, value in (
            (self.e2e, done.last_token_at - done.arrival_at),
            (self.queue, done.scheduled_at - done.arrival_at),
            (self.prefill, done.first_token_at - done.scheduled_at),
            (self.decode, decode_s),
            (self.inference, done.last_token_at - done.scheduled_at),
            (self.tpot, decode_s / (n - 1) if n > 1 else 0.0),
            (self.request_prompt, done.prompt_tokens),
            (self.request_generation, n),
            (self.kv_computed, done.prompt_tokens - done.cached_tokens),
            (self.request_preemptions, done.num_preemptions),
            (self.max_tokens_param, done.max_tokens),
        ):
            hist.observe(value)
        if done.n_param is not None:
            self.max_generation.observe(done.max_tokens)
            self.n_param.observe(done.n_param)

    def set_sleep_level(self, level: int | None) -> None:
        """``vllm:engine_sleep_state``: awake (None), weights offloaded (1), all dropped (2)."""
        current = {None: "awake", 1: "weights_offloaded", 2: "discard_all"}[level]
        for state, gauge in self._sleep_state.items():
            gauge.set(1 if state == current else 0)

    def render(
        self,
        load: EngineLoad,
        num_preemptions: int,
        kv_tiers: KvTierStats | None = None,
        spec_decode: SpecDecodeStats | None = None,
    ) -> bytes:
        """The exposition text, with gauges refreshed from ``load``, the counters moved on
        to the engine's totals, the KV tier counters from ``kv_tiers`` (:mod:`.offload_metrics`;
        None: the engine has no tiers) and ``spec_decode`` (its speculation counters, if it
        speculates)."""
        for gauge, value in (
            (self.running, load.num_running),
            (self.waiting, load.num_waiting),
            (self.waiting_capacity, load.num_waiting),
            (self.kv_usage, load.kv_usage),
        ):
            if value is not None:  # an engine reports all three; keep the type honest
                gauge.set(value)
        if num_preemptions > self._previous_preemptions:
            self.preemptions.inc(num_preemptions - self._previous_preemptions)
            self._previous_preemptions = num_preemptions
        self._count_prefix(load)
        if kv_tiers is not None:
            if self._offload is None:
                external = (self.external_queries, self.external_hits)
                self._offload = OffloadMetrics(self.registry, self.labels, external)
            self._offload.update(kv_tiers)
        if spec_decode is not None:
            if self._spec_decode is None:
                num_positions = len(spec_decode.accepted_per_pos)
                self._spec_decode = SpecDecodeCounters(self._counter, self.labels, num_positions)
            self._spec_decode.advance(spec_decode)
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


class SpecDecodeCounters:
    """vLLM's speculative decoding counters of one engine, moved on to its totals."""

    def __init__(
        self,
        counter: Callable[[str, str, Sequence[str]], Counter],
        m: tuple[str, str],
        num_positions: int,
    ) -> None:
        self.drafts = counter("vllm:spec_decode_num_drafts", "Spec decoding drafts.", ()).labels(*m)
        self.draft_tokens = counter(
            "vllm:spec_decode_num_draft_tokens", "Draft tokens.", ()
        ).labels(*m)
        self.accepted = counter(
            "vllm:spec_decode_num_accepted_tokens", "Accepted draft tokens.", ()
        ).labels(*m)
        per_pos = counter(
            "vllm:spec_decode_num_accepted_tokens_per_pos",
            "Accepted tokens per draft position.",
            ["position"],
        )
        self.per_pos = [per_pos.labels(*m, str(j)) for j in range(num_positions)]
        self._seen = SpecDecodeStats(0, 0, 0, (0,) * num_positions)

    def advance(self, now: SpecDecodeStats) -> None:
        """Add what the engine counted since the last call."""
        seen = self._seen
        for counter, value, before in (
            (self.drafts, now.num_drafts, seen.num_drafts),
            (self.draft_tokens, now.num_draft_tokens, seen.num_draft_tokens),
            (self.accepted, now.num_accepted_tokens, seen.num_accepted_tokens),
            *zip(self.per_pos, now.accepted_per_pos, seen.accepted_per_pos, strict=True),
        ):
            if value > before:
                counter.inc(value - before)
        self._seen = now
