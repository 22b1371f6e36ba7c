"""Prometheus metrics per tenant, on a registry the caller owns.

Counters, updated on the request path:

* ``sincere_tenant_requests_total{tenant, outcome}``: every key check, by outcome
  (``allowed``, ``unauthenticated``, ``forbidden``, ``rate_limited``,
  ``budget_exhausted``); requests without a valid key count under tenant ``""``;
* ``sincere_tenant_tokens_total{tenant, kind}``: settled prompt / completion tokens;
* ``sincere_tenant_spend_usd_total{tenant}``: settled spend, USD.

Gauges, kept up to date by the key store as reservations, spend and keys change (see
:class:`TenantGauges`): ``sincere_tenant_reserved_usd{tenant}`` (worst-case cost of requests
in flight) and ``sincere_tenant_budget_remaining_usd{tenant}`` (over the tenant's keys that
have a budget). Pass the gateway's ``CollectorRegistry`` to export them beside its own.

A scrape's cost does not grow with the number of keys or tenants: :meth:`TenantMetrics.render`
(what the gateway serves) writes per-tenant series for the ``max_tenants`` tenants with the
most settled spend (then the most key checks) and sums every other tenant into one series
labelled ``tenant="(other)"``; ``sincere_tenant_series_omitted`` says how many tenants that
series holds. The top tenants are kept in a min-heap updated as ranks rise (they never fall:
spend and checks only grow), the ``(other)`` series are running totals less the shown
tenants' values, and the gauges' per-tenant and total sums are kept exactly (integers in
units of 2**-1074 USD, so a sum is the correctly rounded sum of its parts whatever the order
of the changes). A capped page costs O(max_tenants); the page with every tenant
(``render(None)``, an admin's ``?tenants=all``) and the registry (``generate_latest``) still
cost O(tenants).
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable, Iterable, Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

OTHER = "(other)"
"""The tenant label of the series summing the tenants a bounded page leaves out."""


_UNIT = 1 << 1074
"""Every finite float is an integer multiple of 2**-1074: sums kept in these units are exact."""


def _exact(usd: float) -> int:
    """``usd`` as an integer number of 2**-1074 USD (exact)."""
    numerator, denominator = usd.as_integer_ratio()  # denominator: a power of two <= 2**1074
    return numerator << (1075 - denominator.bit_length())


def _usd(units: int) -> float:
    """An exact sum back to the nearest float (int / int divides correctly rounded); a sum
    beyond the largest float (budgets near 1e308) is infinite, as a float sum would be."""
    try:
        return units / _UNIT
    except OverflowError:
        return math.inf if units > 0 else -math.inf


class TenantGauges:
    """Per-tenant reserved and remaining-budget USD, kept exactly as keys change.

    The key store calls :meth:`set` with a key's current figures each time its reservations,
    spend or record change; a tenant's values and the totals over tenants are then read in
    O(1), equal to a full recomputation (``math.fsum`` over the keys) to the last bit.
    """

    def __init__(self) -> None:
        self._keys: dict[str, tuple[str, int, int | None]] = {}  # key -> (tenant, held, left)
        self._held: dict[str, int] = {}  # tenant -> reserved, exact units
        self._left: dict[str, int] = {}  # tenant -> remaining over budgeted keys, exact units
        self._budgeted: dict[str, int] = {}  # tenant -> its keys that have a budget
        self.held_total = 0  # exact units, over every tenant
        self.left_total = 0

    def set(self, key_id: str, tenant: str | None, held_usd: float, left_usd: float | None) -> None:
        """Key ``key_id`` now holds ``held_usd`` and has ``left_usd`` of budget (None: no
        budget) for ``tenant``; ``tenant`` None: the key counts for no tenant."""
        old = self._keys.get(key_id)
        if tenant is None:
            if old is not None:
                del self._keys[key_id]
                self._add(old, -1)
            return
        new = (tenant, _exact(held_usd), None if left_usd is None else _exact(left_usd))
        if old is None or old[0] != tenant or (old[2] is None) != (new[2] is None):
            if old is not None:
                self._add(old, -1)
            self._keys[key_id] = new
            self._add(new, 1)
            return
        self._keys[key_id] = new  # the same tenant, budgeted or not as before: the changes
        if new[1] != old[1]:
            held = new[1] - old[1]
            self._held[tenant] += held
            self.held_total += held
        if new[2] is not None and old[2] is not None and new[2] != old[2]:
            left = new[2] - old[2]
            self._left[tenant] += left
            self.left_total += left

    def _add(self, key: tuple[str, int, int | None], sign: int) -> None:
        tenant, held, left = key
        self._held[tenant] = self._held.get(tenant, 0) + sign * held
        self.held_total += sign * held
        if left is not None:
            self._left[tenant] = self._left.get(tenant, 0) + sign * left
            self._budgeted[tenant] = self._budgeted.get(tenant, 0) + sign
            self.left_total += sign * left

    def __contains__(self, tenant: object) -> bool:
        return tenant in self._held

    def get(self, tenant: str) -> tuple[float, float | None]:
        """(reserved USD, remaining USD or None when none of its keys has a budget)."""
        held = _usd(self._held[tenant])
        return held, _usd(self._left[tenant]) if self._budgeted.get(tenant) else None

    def items(self) -> dict[str, tuple[float, float | None]]:
        """Every tenant's figures (O(tenants): the uncapped page and the registry)."""
        return {tenant: self.get(tenant) for tenant in self._held}

    def others(self, shown: Iterable[str]) -> tuple[float, float]:
        """Reserved and remaining USD summed over every tenant but ``shown`` (exact)."""
        held, left = self.held_total, self.left_total
        for tenant in shown:
            held -= self._held.get(tenant, 0)
            if self._budgeted.get(tenant):
                left -= self._left[tenant]
        return _usd(held), _usd(left)


Rank = tuple[float, int, str]
"""A tenant's place on a capped page: settled spend, key checks, name (largest first)."""


class _Leaders:
    """The ``size`` tenants of highest rank, kept as ranks rise (ranks never fall).

    A min-heap of the members' ranks as last seen: an entry may be stale (lower than the
    tenant's rank now), never higher, so the lowest member is found by refreshing stale
    entries at the top of the heap (each refresh paid for by an earlier rise). A tenant
    outside the set can only enter by rising above the lowest member, which it replaces.
    """

    def __init__(self, size: int, rank: Callable[[str], Rank], tenants: Iterable[str]) -> None:
        self.size = size
        self.rank = rank
        self._heap = heapq.nlargest(size, map(rank, tenants))
        heapq.heapify(self._heap)
        self.members = {r[2] for r in self._heap}

    def raised(self, tenant: str) -> None:
        """``tenant`` is new or its rank rose: let it in if it now belongs."""
        if tenant in self.members or self.size == 0:
            return
        rank = self.rank(tenant)
        if len(self.members) < self.size:
            heapq.heappush(self._heap, rank)
            self.members.add(tenant)
            return
        lowest = self._lowest()
        if rank > lowest:
            heapq.heapreplace(self._heap, rank)
            self.members.discard(lowest[2])
            self.members.add(tenant)

    def _lowest(self) -> Rank:
        heap = self._heap
        while True:
            now = self.rank(heap[0][2])
            if now == heap[0]:
                return now
            heapq.heapreplace(heap, now)


class TenantMetrics:
    """The per-tenant counters, and the gauges the key store keeps up to date.

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
        self.gauges = TenantGauges()  # set by the key store through key_changed
        self.tenants: set[str] = set()  # every tenant with a counter or a client key
        self._watched = False  # a key store exports the gauges
        self._leaders: _Leaders | None = None  # the top tenants, once a capped page asked
        self.registry.register(_CounterCollector(self))

    def decided(self, tenant: str, outcome: str) -> None:
        """Count one key check."""
        key = (tenant, outcome)
        self.requests[key] = self.requests.get(key, 0) + 1
        self.checks[tenant] = self.checks.get(tenant, 0) + 1
        self.outcome_totals[outcome] = self.outcome_totals.get(outcome, 0) + 1
        self._raised(tenant)

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
        if cost_usd < 0:  # a rank fell (negative prices): the leaders are picked again
            self._leaders = None
        self._raised(tenant)

    def _raised(self, tenant: str) -> None:
        self.tenants.add(tenant)
        if self._leaders is not None:
            self._leaders.raised(tenant)

    def watch(self) -> None:
        """Export the reserved and remaining-budget gauges (a key store keeps them)."""
        if not self._watched:
            self._watched = True
            self.registry.register(_BudgetCollector(self.gauges))

    def key_changed(
        self, key_id: str, tenant: str | None, held_usd: float, left_usd: float | None
    ) -> None:
        """A key's reservations, spend or record changed: see :meth:`TenantGauges.set`."""
        self.gauges.set(key_id, tenant, held_usd, left_usd)
        if tenant is not None and tenant not in self.tenants:
            self._raised(tenant)

    def _rank(self, tenant: str) -> Rank:
        return self.spend_usd.get(tenant, 0.0), self.checks.get(tenant, 0), tenant

    def shown(self, max_tenants: int | None) -> frozenset[str] | None:
        """The tenants a page of at most ``max_tenants`` shows (None: every tenant), ranked by
        settled spend, then key checks (kept as they change; picked afresh when the cap does)."""
        if max_tenants is None or len(self.tenants) <= max_tenants:
            return None
        if self._leaders is None or self._leaders.size != max_tenants:
            self._leaders = _Leaders(max_tenants, self._rank, self.tenants)
        return frozenset(self._leaders.members)

    def render(self, max_tenants: int | None = None) -> str:
        """The per-tenant page: every tenant, or the top ``max_tenants`` and ``(other)``."""
        shown = self.shown(max_tenants)
        if shown is None:
            families, num_omitted = self._every_tenant(), 0
        else:
            families = self._capped(sorted(shown))
            num_omitted = len(self.tenants) - len(shown)
        out: list[str] = []
        for (name, kind, text, labels), items in zip(FAMILIES, families, strict=False):
            _lines(out, name, kind, text, labels, items)
        out.append("# HELP sincere_tenant_series_omitted Tenants summed in the (other) series.")
        out.append("# TYPE sincere_tenant_series_omitted gauge")
        out.append(f"sincere_tenant_series_omitted {num_omitted}")
        return "\n".join(out) + "\n"

    def _every_tenant(self) -> list[Items]:
        families: list[Items] = [
            sorted(self.requests.items()),
            sorted(self.tokens.items()),
            sorted(((t,), v) for t, v in self.spend_usd.items()),
        ]
        if self._watched:
            gauges = self.gauges.items()
            families.append(sorted(((t,), held) for t, (held, _) in gauges.items()))
            families.append(
                sorted(((t,), left) for t, (_, left) in gauges.items() if left is not None)
            )
        return families

    def _capped(self, shown: list[str]) -> list[Items]:
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
        if self._watched:
            gauges = self.gauges
            mine_g = [(t, gauges.get(t)) for t in shown if t in gauges]
            held_other, left_other = gauges.others(t for t, _ in mine_g)
            held = [((t,), h) for t, (h, _) in mine_g]
            left = [((t,), v) for t, (_, v) in mine_g if v is not None]
            families += [[*held, ((OTHER,), held_other)], [*left, ((OTHER,), left_other)]]
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
    def __init__(self, gauges: TenantGauges) -> None:
        self.gauges = gauges

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
        for tenant, (held, left) in sorted(self.gauges.items().items()):
            reserved.add_metric((tenant,), held)
            if left is not None:
                remaining.add_metric((tenant,), left)
        yield reserved
        yield remaining
