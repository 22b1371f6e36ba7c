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

A scrape's cost must not grow with the number of keys: :meth:`TenantMetrics.render` (what
the gateway serves) writes per-tenant series for the ``max_tenants`` tenants with the most
settled spend (then the most key checks) and sums every other tenant into one series
labelled ``tenant="(other)"``; ``sincere_tenant_series_omitted`` says how many tenants that
series holds. The registry (``generate_latest``) still shows every tenant.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable, Iterator, Mapping

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

GaugeSource = Callable[[], Mapping[str, tuple[float, float | None]]]
"""tenant -> (reserved USD, remaining budget USD or None when no key has a budget)."""

OTHER = "(other)"
"""The tenant label of the series summing the tenants a bounded page leaves out."""


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
        self.checks: dict[str, int] = {}  # tenant -> key checks of any outcome (for ranking)
        # the same summed over tenants, kept as they change: a capped page's (other) series
        # is a total less the shown tenants' values, so its cost does not grow with tenants
        self.outcome_totals: dict[str, int] = {}
        self.token_totals: dict[str, int] = {"prompt": 0, "completion": 0}
        self.spend_total_usd = 0.0
        self._gauges: GaugeSource | None = None
        self.registry.register(_CounterCollector(self))

    def decided(self, tenant: str, outcome: str) -> None:
        """Count one key check."""
        key = (tenant, outcome)
        self.requests[key] = self.requests.get(key, 0) + 1
        self.checks[tenant] = self.checks.get(tenant, 0) + 1
        self.outcome_totals[outcome] = self.outcome_totals.get(outcome, 0) + 1

    def settled(
        self, tenant: str, prompt_tokens: int, completion_tokens: int, cost_usd: float
    ) -> None:
        """Count one settled request's tokens and spend."""
        tokens = self.tokens
        prompt, completion = (tenant, "prompt"), (tenant, "completion")
        tokens[prompt] = tokens.get(prompt, 0) + prompt_tokens
        tokens[completion] = tokens.get(completion, 0) + completion_tokens
        self.spend_usd[tenant] = self.spend_usd.get(tenant, 0.0) + cost_usd
        totals = self.token_totals
        totals["prompt"] += prompt_tokens
        totals["completion"] += completion_tokens
        self.spend_total_usd += cost_usd

    def watch(self, source: GaugeSource) -> None:
        """Export the reserved and remaining-budget gauges from ``source`` at each scrape."""
        self._gauges = source
        self.registry.register(_BudgetCollector(source))

    def shown(self, max_tenants: int | None, also: Iterable[str] = ()) -> frozenset[str] | None:
        """The tenants a page of at most ``max_tenants`` shows (None: every tenant), ranked by
        settled spend, then key checks; ``also``: tenants known otherwise (the gauges')."""
        names = self.checks.keys() | self.spend_usd.keys() | set(also)
        if max_tenants is None or len(names) <= max_tenants:
            return None
        spend, checks = self.spend_usd, self.checks
        top = heapq.nlargest(
            max_tenants, names, key=lambda t: (spend.get(t, 0.0), checks.get(t, 0), t)
        )
        return frozenset(top)

    def render(self, max_tenants: int | None = None) -> str:
        """The per-tenant page: every tenant, or the top ``max_tenants`` and ``(other)``."""
        gauges = dict(self._gauges()) if self._gauges is not None else {}
        shown = self.shown(max_tenants, gauges.keys())
        if shown is None:
            families, num_omitted = self._every_tenant(gauges), 0
        else:
            families = self._capped(sorted(shown), gauges)
            names = self.checks.keys() | self.spend_usd.keys() | gauges.keys()
            num_omitted = len(names) - len(shown)
        out: list[str] = []
        for (name, kind, text, labels), items in zip(FAMILIES, families, strict=False):
            _lines(out, name, kind, text, labels, items)
        out.append("# HELP sincere_tenant_series_omitted Tenants summed in the (other) series.")
        out.append("# TYPE sincere_tenant_series_omitted gauge")
        out.append(f"sincere_tenant_series_omitted {num_omitted}")
        return "\n".join(out) + "\n"

    def _every_tenant(self, gauges: Mapping[str, tuple[float, float | None]]) -> list[Items]:
        families: list[Items] = [
            sorted(self.requests.items()),
            sorted(self.tokens.items()),
            sorted(((t,), v) for t, v in self.spend_usd.items()),
        ]
        if self._gauges is not None:
            families.append(sorted(((t,), held) for t, (held, _) in gauges.items()))
            families.append(
                sorted(((t,), left) for t, (_, left) in gauges.items() if left is not None)
            )
        return families

    def _capped(
        self, shown: list[str], gauges: Mapping[str, tuple[float, float | None]]
    ) -> list[Items]:
        """Each family's series of the ``shown`` tenants, then ``(other)`` = total - shown."""
        requests: list[tuple[tuple[str, ...], float]] = []
        for outcome, total in sorted(self.outcome_totals.items()):
            mine = [((t, outcome), self.requests.get((t, outcome), 0)) for t in shown]
            requests += [m for m in mine if m[1]]
            requests.append(((OTHER, outcome), total - sum(v for _, v in mine)))
        tokens: list[tuple[tuple[str, ...], float]] = []
        for kind, total in sorted(self.token_totals.items()):
            mine = [((t, kind), self.tokens[(t, kind)]) for t in shown if (t, kind) in self.tokens]
            tokens += [*mine, ((OTHER, kind), total - sum(v for _, v in mine))]
        spend = [((t,), self.spend_usd[t]) for t in shown if t in self.spend_usd]
        spend.append(((OTHER,), max(0.0, self.spend_total_usd - sum(v for _, v in spend))))
        families: list[Items] = [requests, tokens, spend]
        if self._gauges is not None:
            held = [((t,), gauges[t][0]) for t in shown if t in gauges]
            all_held = sum(h for h, _ in gauges.values())
            held.append(((OTHER,), max(0.0, all_held - sum(v for _, v in held))))
            left = [((t,), v) for t in shown if t in gauges and (v := gauges[t][1]) is not None]
            all_left = sum(v for _, v in gauges.values() if v is not None)
            left.append(((OTHER,), max(0.0, all_left - sum(v for _, v in left))))
            families += [held, left]
        return families


FAMILIES = (
    ("sincere_tenant_requests_total", "counter", "Key checks by tenant and outcome.",
     ("tenant", "outcome")),
    ("sincere_tenant_tokens_total", "counter",
     "Settled tokens by tenant and kind (prompt, completion).", ("tenant", "kind")),
    ("sincere_tenant_spend_usd_total", "counter", "Settled spend by tenant, USD.", ("tenant",)),
    ("sincere_tenant_reserved_usd", "gauge",
     "Worst-case cost of the tenant's requests in flight, USD.", ("tenant",)),
    ("sincere_tenant_budget_remaining_usd", "gauge",
     "Budget left over the tenant's keys that have one, USD.", ("tenant",)),
)  # fmt: skip
"""The per-tenant families: name, type, help, labels."""


Items = Iterable[tuple[tuple[str, ...], float]]


def _lines(
    out: list[str],
    name: str,
    kind: str,
    help_text: str,
    labels: tuple[str, ...],
    values: Iterable[tuple[tuple[str, ...], float]],
) -> None:
    out.append(f"# HELP {name} {help_text}")
    out.append(f"# TYPE {name} {kind}")
    for key, value in values:
        named = sorted(zip(labels, key, strict=True))  # label names in order, as the library
        pairs = ",".join(f'{n}="{_escape(v)}"' for n, v in named)
        out.append(f"{name}{{{pairs}}} {float(value)!r}")


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


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
