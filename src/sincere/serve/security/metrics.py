"""Prometheus metrics per tenant, on a registry the caller owns.

Counters, updated on the request path:

* ``sincere_tenant_requests_total{tenant, outcome}``: every key check, by outcome
  (``allowed``, ``unauthenticated``, ``forbidden``, ``rate_limited``,
  ``budget_exhausted``); requests without a valid key count under tenant ``""``;
* ``sincere_tenant_tokens_total{tenant, kind}``: settled prompt / completion tokens;
* ``sincere_tenant_spend_usd_total{tenant}``: settled spend, USD.

Gauges, computed when scraped from the key store (nothing on the request path):
``sincere_tenant_reserved_usd{tenant}`` (worst-case cost of requests in flight) and
``sincere_tenant_budget_remaining_usd{tenant}`` (over the tenant's keys that have a
budget). Pass the gateway's ``CollectorRegistry`` to export them beside its own.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

GaugeSource = Callable[[], Mapping[str, tuple[float, float | None]]]
"""tenant -> (reserved USD, remaining budget USD or None when no key has a budget)."""


class TenantMetrics:
    """The per-tenant counters, and the gauges read from a key store at scrape time.

    The counters are plain dict entries bumped on the request path (no lock: the key
    store runs on one event loop's thread) and rendered as Prometheus counters when
    scraped; a labelled ``prometheus_client.Counter`` would take a lock per increment.
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.requests: dict[tuple[str, str], int] = {}  # (tenant, outcome) -> checks
        self.tokens: dict[tuple[str, str], int] = {}  # (tenant, prompt|completion) -> tokens
        self.spend_usd: dict[str, float] = {}  # tenant -> settled USD
        self.registry.register(_CounterCollector(self))

    def decided(self, tenant: str, outcome: str) -> None:
        """Count one key check."""
        key = (tenant, outcome)
        self.requests[key] = self.requests.get(key, 0) + 1

    def settled(
        self, tenant: str, prompt_tokens: int, completion_tokens: int, cost_usd: float
    ) -> None:
        """Count one settled request's tokens and spend."""
        tokens = self.tokens
        prompt, completion = (tenant, "prompt"), (tenant, "completion")
        tokens[prompt] = tokens.get(prompt, 0) + prompt_tokens
        tokens[completion] = tokens.get(completion, 0) + completion_tokens
        self.spend_usd[tenant] = self.spend_usd.get(tenant, 0.0) + cost_usd

    def watch(self, source: GaugeSource) -> None:
        """Export the reserved and remaining-budget gauges from ``source`` at each scrape."""
        self.registry.register(_BudgetCollector(source))


class _CounterCollector(Collector):
    def __init__(self, metrics: TenantMetrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        m = self.metrics
        yield _counters(
            "sincere_tenant_requests", "Key checks by tenant and outcome.",
            ("tenant", "outcome"), m.requests.items(),
        )  # fmt: skip
        yield _counters(
            "sincere_tenant_tokens", "Settled tokens by tenant and kind (prompt, completion).",
            ("tenant", "kind"), m.tokens.items(),
        )  # fmt: skip
        spend = [((tenant,), usd) for tenant, usd in m.spend_usd.items()]
        yield _counters(
            "sincere_tenant_spend_usd", "Settled spend by tenant, USD.", ("tenant",), spend
        )


def _counters(
    name: str, text: str, labels: tuple[str, ...], values: Iterable[tuple[tuple[str, ...], float]]
) -> CounterMetricFamily:
    family = CounterMetricFamily(name, text, labels=labels)
    for key, value in sorted(values):
        family.add_metric(key, value)
    return family


class _BudgetCollector(Collector):
    def __init__(self, source: GaugeSource) -> None:
        self.source = source

    def collect(self) -> Iterator[Metric]:
        reserved = GaugeMetricFamily(
            "sincere_tenant_reserved_usd",
            "Worst-case cost of the tenant's requests in flight, USD.",
            labels=("tenant",),
        )
        remaining = GaugeMetricFamily(
            "sincere_tenant_budget_remaining_usd",
            "Budget left over the tenant's keys that have one, USD.",
            labels=("tenant",),
        )
        for tenant, (held, left) in sorted(self.source().items()):
            reserved.add_metric((tenant,), held)
            if left is not None:
                remaining.add_metric((tenant,), left)
        yield reserved
        yield remaining
