"""The gateway's own Prometheus metrics, hand-written for a cheap hot path.

Served at ``GET /metrics`` in the Prometheus text format (version 0.0.4):

* ``sincere_gateway_requests_total{instance,tier,outcome}`` -- finished requests by
  outcome: ``ok``, ``error`` (upstream failed), ``rejected`` (admission, 429),
  ``timeout`` (queue wait, 504), ``unavailable`` (queue full / no instance, 503),
  ``client_error`` (4xx), ``cancelled`` (the client disconnected first),
  ``internal_error`` (500, a bug); ``instance=""`` when none was chosen;
* ``sincere_gateway_ttft_seconds`` and ``sincere_gateway_e2e_seconds``
  ``{instance,tier}`` histograms (non-streamed requests: TTFT = E2E);
* ``sincere_gateway_queue_wait_seconds{model}`` histogram and
  ``sincere_gateway_queue_length{model}`` gauge;
* ``sincere_gateway_in_flight{instance}``, ``sincere_gateway_breaker_state{instance}``
  (0 closed, 1 open, 2 half-open) gauges;
* ``sincere_gateway_upstream_errors_total{instance,kind}`` and
  ``sincere_gateway_retries_total{instance}`` counters;
* ``sincere_gateway_edge_refusals_total{reason}`` (connections refused over the
  limits, header and body timeouts) and the ``sincere_gateway_connections`` gauge.

An observation is a dict lookup and a bisect (well under a microsecond); the text is
built only when scraped. Kept hand-written on measurement: prometheus-client, holding the
same metrics, cost 7-13x more per served request and 12-16x more per render at 10 and
10,000 label sets (benchmarks/gateway_metrics_render.py; figures in benchmarks/README.md).
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Any

LATENCY_BUCKETS_S = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    120.0,
)
"""Upper bounds (seconds) of the latency histograms' buckets."""


class Histogram:
    """Cumulative-bucket histogram of one label set."""

    __slots__ = ("bounds", "count", "counts", "total")

    def __init__(self, bounds: tuple[float, ...] = LATENCY_BUCKETS_S) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # last slot: above every bound
        self.count = 0
        self.total = 0.0

    def observe(self, value: float) -> None:
        """Add one value."""
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.count += 1
        self.total += value

    def lines(self, name: str, labels: str) -> Iterable[str]:
        """Prometheus lines: cumulative buckets, sum and count."""
        sep = "," if labels else ""
        running = 0
        for bound, n in zip(self.bounds, self.counts, strict=False):
            running += n
            yield f'{name}_bucket{{{labels}{sep}le="{bound:g}"}} {running}'
        yield f'{name}_bucket{{{labels}{sep}le="+Inf"}} {self.count}'
        yield f"{name}_sum{{{labels}}} {self.total:.6f}"
        yield f"{name}_count{{{labels}}} {self.count}"


def _labels(names: tuple[str, ...], values: tuple[str, ...]) -> str:
    return ",".join(f'{n}="{_escape(v)}"' for n, v in zip(names, values, strict=True))


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class GatewayMetrics:
    """Counters and histograms of the gateway, rendered on demand."""

    def __init__(self) -> None:
        self.requests: dict[tuple[str, str, str], int] = defaultdict(int)
        self.ttft: dict[tuple[str, str], Histogram] = defaultdict(Histogram)
        self.e2e: dict[tuple[str, str], Histogram] = defaultdict(Histogram)
        self.queue_wait: dict[str, Histogram] = defaultdict(Histogram)
        self.upstream_errors: dict[tuple[str, str], int] = defaultdict(int)
        self.retries: dict[str, int] = defaultdict(int)
        # (instance, tier) -> its TTFT and E2E histograms and its "ok" counter key
        self._served: dict[tuple[str, str], tuple[Histogram, Histogram, tuple[str, str, str]]] = {}

    def served(self, instance: str, tier: str, ttft_s: float, e2e_s: float) -> None:
        """Count an ``ok`` request and record its TTFT and E2E (pre-bound: one lookup)."""
        bound = self._served.get((instance, tier))
        if bound is None:
            key = (instance, tier)
            bound = self._served[key] = (self.ttft[key], self.e2e[key], (instance, tier, "ok"))
        bound[0].observe(ttft_s)
        bound[1].observe(e2e_s)
        self.requests[bound[2]] += 1

    def finished(self, instance: str, tier: str, outcome: str) -> None:
        """Count one finished request."""
        self.requests[(instance, tier, outcome)] += 1

    def latency(self, instance: str, tier: str, ttft_s: float, e2e_s: float) -> None:
        """Record a served request's TTFT and E2E."""
        self.ttft[(instance, tier)].observe(ttft_s)
        self.e2e[(instance, tier)].observe(e2e_s)

    def upstream_error(self, instance: str, kind: str) -> None:
        """Count an upstream failure (``connect``, ``status``, ``stream``)."""
        self.upstream_errors[(instance, kind)] += 1

    def render(
        self,
        queue_lengths: dict[str, int],
        in_flight: dict[str, int],
        breaker_states: dict[str, int],
        edge_refusals: Mapping[str, int] | None = None,
        num_connections: int = 0,
    ) -> str:
        """The whole page."""
        out: list[str] = []
        _counter(
            out,
            "sincere_gateway_requests_total",
            ("instance", "tier", "outcome"),
            self.requests.items(),
            "Finished requests by outcome.",
        )
        _histograms(
            out,
            "sincere_gateway_ttft_seconds",
            ("instance", "tier"),
            self.ttft,
            "Time to first token seen by the gateway.",
        )
        _histograms(
            out,
            "sincere_gateway_e2e_seconds",
            ("instance", "tier"),
            self.e2e,
            "End-to-end latency seen by the gateway.",
        )
        _histograms(
            out,
            "sincere_gateway_queue_wait_seconds",
            ("model",),
            {(k,): v for k, v in self.queue_wait.items()},
            "Wait in the gateway queue.",
        )
        _gauge(out, "sincere_gateway_queue_length", "model", queue_lengths, "Requests queued.")
        _gauge(out, "sincere_gateway_in_flight", "instance", in_flight, "Requests at the instance.")
        _gauge(
            out,
            "sincere_gateway_breaker_state",
            "instance",
            breaker_states,
            "Circuit breaker: 0 closed, 1 open, 2 half-open.",
        )
        _counter(
            out,
            "sincere_gateway_upstream_errors_total",
            ("instance", "kind"),
            self.upstream_errors.items(),
            "Upstream failures.",
        )
        _counter(
            out,
            "sincere_gateway_retries_total",
            ("instance",),
            (((k,), v) for k, v in self.retries.items()),
            "Retries away from an instance.",
        )
        _counter(
            out,
            "sincere_gateway_edge_refusals_total",
            ("reason",),
            (((k,), v) for k, v in (edge_refusals or {}).items()),
            "Connections refused over the limits, and header / body timeouts.",
        )
        _header(out, "sincere_gateway_connections", "gauge", "Client connections open.")
        out.append(f"sincere_gateway_connections {num_connections}")
        return "\n".join(out) + "\n"


def _header(out: list[str], name: str, kind: str, help_text: str) -> None:
    out.append(f"# HELP {name} {help_text}")
    out.append(f"# TYPE {name} {kind}")


def _counter(
    out: list[str],
    name: str,
    names: tuple[str, ...],
    items: Iterable[tuple[tuple[str, ...], int]],
    help_text: str,
) -> None:
    _header(out, name, "counter", help_text)
    out.extend(f"{name}{{{_labels(names, k)}}} {v}" for k, v in sorted(items))


def _gauge(out: list[str], name: str, label: str, values: dict[str, int], help_text: str) -> None:
    _header(out, name, "gauge", help_text)
    out.extend(f'{name}{{{label}="{_escape(k)}"}} {v}' for k, v in sorted(values.items()))


def _histograms(
    out: list[str],
    name: str,
    names: tuple[str, ...],
    hists: Mapping[Any, Histogram],
    help_text: str,
) -> None:
    _header(out, name, "histogram", help_text)
    for key in sorted(hists):
        out.extend(hists[key].lines(name, _labels(names, key)))
