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

from collections.abc import Callable, Iterator, Mapping

from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

OUTCOMES = ("allowed", "unauthenticated", "forbidden", "rate_limited", "budget_exhausted")

GaugeSource = Callable[[], Mapping[str, tuple[float, float | None]]]
"""tenant -> (reserved USD, remaining budget USD or None when no key has a budget)."""


class TenantMetrics:
    """The per-tenant counters, and the gauges read from a key store at scrape time."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self._requests = Counter(
            "sincere_tenant_requests",
            "Key checks by tenant and outcome.",
            ("tenant", "outcome"),
            registry=self.registry,
        )
        self._tokens = Counter(
            "sincere_tenant_tokens",
            "Settled tokens by tenant and kind (prompt, completion).",
            ("tenant", "kind"),
            registry=self.registry,
        )
        self._spend = Counter(
            "sincere_tenant_spend_usd",
            "Settled spend by tenant, USD.",
            ("tenant",),
            registry=self.registry,
        )
        self._children: dict[tuple[str, str], Counter] = {}  # labelled children, cached
        self._settled: dict[str, tuple[Counter, Counter, Counter]] = {}  # per tenant, cached

    def decided(self, tenant: str, outcome: str) -> None:
        """Count one key check."""
        child = self._children.get((tenant, outcome))
        if child is None:
            child = self._children[tenant, outcome] = self._requests.labels(tenant, outcome)
        child.inc()

    def settled(
        self, tenant: str, prompt_tokens: int, completion_tokens: int, cost_usd: float
    ) -> None:
        """Count one settled request's tokens and spend."""
        children = self._settled.get(tenant)
        if children is None:
            children = self._settled[tenant] = (
                self._tokens.labels(tenant, "prompt"),
                self._tokens.labels(tenant, "completion"),
                self._spend.labels(tenant),
            )
        children[0].inc(prompt_tokens)
        children[1].inc(completion_tokens)
        children[2].inc(cost_usd)

    def watch(self, source: GaugeSource) -> None:
        """Export the reserved and remaining-budget gauges from ``source`` at each scrape."""
        self.registry.register(_BudgetCollector(source))


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
