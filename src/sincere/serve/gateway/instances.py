"""What the gateway knows about each instance, and the router's view built from it.

The load signal has two sources, in this order of trust:

1. the gateway's own counts: requests sent to the instance and not finished
   (``num_in_flight``), which are exact and current;
2. metrics scraped from the engine's Prometheus ``/metrics`` (vLLM's gauge names
   ``vllm:num_requests_running``, ``vllm:num_requests_waiting``,
   ``vllm:kv_cache_usage_perc``), used for the running / waiting split and the KV
   usage only while fresher than ``max_age_s``; stale samples are ignored and the
   split falls back to the gateway's counts against the instance's batch limit.

Latency history feeds admission control: EWMAs of TTFT and time per output token,
from requests whose first token was *measured* (streamed answers, Ollama), with the
time of the last measurement so that an old estimate can expire; and an EWMA of how
long a request holds a slot, which gives the rate at which the gateway's queue drains.
Views are cached per model and rebuilt only when what they show changed (requests in
flight, the fresh sample, health), and the response headers naming the instance are
built once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from sincere.policy.router_base import InstanceView
from sincere.serve.backends.openai_api import Backend
from sincere.serve.gateway.breaker import CircuitBreaker

VLLM_GAUGES = {
    "vllm:num_requests_running": "num_running",
    "vllm:num_requests_waiting": "num_waiting",
    "vllm:kv_cache_usage_perc": "kv_usage",
    "vllm:gpu_cache_usage_perc": "kv_usage",  # older vLLM name
}
"""Scraped gauge name -> field of :class:`EngineSample`."""

_EWMA = 0.2  # weight of the newest observation in the latency averages

INSTANCE_HEADER = "x-sincere-instance"
"""Response header naming the instance that served the request."""


@dataclass(frozen=True, slots=True)
class EngineSample:
    """One scrape of an engine's gauges."""

    at: float  # loop time of the scrape, seconds
    num_running: int
    num_waiting: int
    kv_usage: float  # fraction of KV cache in use, 0..1


def parse_vllm_metrics(text: str, at: float) -> EngineSample | None:
    """The vLLM gauges of a Prometheus text page (summed over label sets), or None."""
    found: dict[str, float] = {}
    for line in text.splitlines():
        if not line.startswith("vllm:"):
            continue
        name_part, _, value_part = line.rpartition(" ")
        name = name_part.split("{", 1)[0].strip()
        field = VLLM_GAUGES.get(name)
        if field is None:
            continue
        try:
            value = float(value_part)
        except ValueError:
            continue
        if math.isfinite(value):
            found[field] = found.get(field, 0.0) + value
    if not found:
        return None
    return EngineSample(
        at,
        int(found.get("num_running", 0)),
        int(found.get("num_waiting", 0)),
        min(1.0, max(0.0, found.get("kv_usage", 0.0))),
    )


class InstanceState:
    """Live state of one backend instance, owned by the gateway's event loop."""

    def __init__(
        self,
        backend: Backend,
        breaker: CircuitBreaker,
        emulated: bool = False,
        max_estimate_age_s: float = math.inf,
    ) -> None:
        self.backend = backend
        self.name = backend.name
        self.breaker = breaker
        self.max_in_flight = backend.config.max_in_flight
        self.max_num_seqs = backend.config.max_num_seqs
        self.num_in_flight = 0  # sent to the instance and not finished
        self.sample: EngineSample | None = None  # last scrape
        self.ttft_s: float | None = None  # EWMA of measured TTFT
        self.tpot_s: float | None = None  # EWMA of measured time per output token
        self.measured_at = -math.inf  # loop time of the last measured TTFT
        self.max_estimate_age_s = max_estimate_age_s  # older latency estimates are dropped
        self.hold_s: float | None = None  # EWMA of the time a request holds a slot
        self.emulated = emulated  # started by the controller (it may stop it)
        self.removed = False  # taken out by the controller; finishing its requests
        self.num_requests = 0  # requests sent, ever
        self.json_headers = {"Content-Type": "application/json", INSTANCE_HEADER: self.name}
        self.sse_headers = {
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            INSTANCE_HEADER: self.name,
        }
        # model -> (what the view showed: in flight, sample, healthy; the view)
        self._views: dict[str, tuple[tuple[int, EngineSample | None, bool], InstanceView]] = {}

    def has_room(self) -> bool:
        """Whether the gateway may send it one more request."""
        return self.num_in_flight < self.max_in_flight and not self.removed

    def fresh_sample(self, now: float, max_age_s: float) -> EngineSample | None:
        """The last scrape if younger than ``max_age_s``; stale ones are ignored."""
        s = self.sample
        return s if s is not None and now - s.at <= max_age_s else None

    def view(self, model: str, now: float, max_age_s: float) -> InstanceView:
        """The router's read-only view of this instance serving ``model`` (cached)."""
        s = self.fresh_sample(now, max_age_s)
        healthy = not self.removed and self.breaker.can_send(now)
        key = (self.num_in_flight, s, healthy)
        cached = self._views.get(model)
        if cached is not None and cached[0] == key:
            return cached[1]
        view = self._build_view(model, s, healthy)
        self._views[model] = (key, view)
        return view

    def _build_view(self, model: str, s: EngineSample | None, healthy: bool) -> InstanceView:
        n = self.num_in_flight
        if s is not None:
            running, waiting, kv = s.num_running, s.num_waiting, s.kv_usage
        else:
            running = min(n, self.max_num_seqs)
            waiting, kv = n - running, 0.0
        cfg = self.backend.config
        return InstanceView(
            id=self.name,
            model=model,
            accelerator=cfg.accelerator,
            num_running=running,
            num_waiting=waiting,
            num_outstanding=n,
            kv_usage=kv,
            max_num_seqs=self.max_num_seqs,
            price_in_per_token_usd=self.backend.price_in_per_token_usd,
            price_out_per_token_usd=self.backend.price_out_per_token_usd,
            quality=cfg.quality,
            healthy=healthy,
        )

    def observe(self, ttft_s: float | None, e2e_s: float, output_tokens: int, now: float) -> None:
        """Fold one finished request into the latency averages.

        ``ttft_s`` is None when the first token was not measured (a non-streamed
        OpenAI answer arrives whole): its end-to-end time is no TTFT, so it is not
        folded in -- taking it for one once locked a tier out of admission.
        """
        if ttft_s is None:
            return
        if now - self.measured_at > self.max_estimate_age_s:  # expired: start afresh
            self.ttft_s = self.tpot_s = None
        self.ttft_s = ttft_s if self.ttft_s is None else _mix(self.ttft_s, ttft_s)
        self.measured_at = now
        if output_tokens > 1:
            tpot = max(0.0, e2e_s - ttft_s) / (output_tokens - 1)
            self.tpot_s = tpot if self.tpot_s is None else _mix(self.tpot_s, tpot)

    def observe_hold(self, hold_s: float) -> None:
        """Fold in how long one request held its slot (reserve to release)."""
        self.hold_s = hold_s if self.hold_s is None else _mix(self.hold_s, hold_s)

    def service_rate(self) -> float | None:
        """Requests per second the instance frees while full (slots / mean hold); None: no data."""
        if not self.hold_s:
            return None
        return self.max_in_flight / self.hold_s

    def predicted_e2e_s(self, output_tokens: int, now: float) -> float | None:
        """EWMA-based end-to-end estimate (None: no measurement younger than the maximum age)."""
        if self.ttft_s is None or now - self.measured_at > self.max_estimate_age_s:
            return None
        return self.ttft_s + (self.tpot_s or 0.0) * max(0, output_tokens - 1)


def _mix(old: float, new: float) -> float:
    return (1.0 - _EWMA) * old + _EWMA * new
