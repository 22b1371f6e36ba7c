"""The gateway's hand-written Prometheus exposition against prometheus-client.

Both sides hold the same metrics: a requests counter {instance, tier, outcome} and TTFT and
E2E histograms {instance, tier} with the gateway's buckets. For 10 and 10,000 label sets
(instance × tier pairs) it times, in one process, alternating the two sides:

* an observation on the request path (one served request: counter + two histograms);
* rendering the whole text page (what a scrape of ``/metrics`` costs).

Best of ``--repeat`` rounds; CPU seconds (``time.process_time``). Both pages are parsed back
with prometheus-client's text parser and must hold the same samples (checked).

``--tenants N`` (default 10,000; 0 skips it) then times the per-tenant part of a keyed
scrape with N client keys (each with a budget, each having made one request): the page
with every tenant (what a scrape cost before the cap, prometheus-client's
``generate_latest`` of the key store's registry, and the hand-written page uncapped) against
the capped page the gateway now serves (``security.metrics_max_tenants``, default 50).
Bytes and CPU time per scrape; the capped page's totals must equal the full page's. Also
``request_us``: the key store's and the metrics' bookkeeping per request (a key check
counted, an admission and a settlement), CPU microseconds, after a capped scrape.

    .venv/bin/python benchmarks/gateway_metrics_render.py
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from sincere.serve.gateway.metrics import LATENCY_BUCKETS_S, GatewayMetrics
from sincere.serve.security.keys import KeySpec, Prices
from sincere.serve.security.keystore import KeyStore, Reservation
from sincere.serve.security.metrics import TenantMetrics


class ClientSide:
    """The same metrics kept by prometheus-client."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "sincere_gateway_requests",
            "Finished requests by outcome.",
            ("instance", "tier", "outcome"),
            registry=self.registry,
        )
        self.ttft = Histogram(
            "sincere_gateway_ttft_seconds",
            "Time to first token seen by the gateway.",
            ("instance", "tier"),
            buckets=LATENCY_BUCKETS_S,
            registry=self.registry,
        )
        self.e2e = Histogram(
            "sincere_gateway_e2e_seconds",
            "End-to-end latency seen by the gateway.",
            ("instance", "tier"),
            buckets=LATENCY_BUCKETS_S,
            registry=self.registry,
        )

    def served(self, instance: str, tier: str, ttft_s: float, e2e_s: float) -> None:
        self.ttft.labels(instance, tier).observe(ttft_s)
        self.e2e.labels(instance, tier).observe(e2e_s)
        self.requests.labels(instance, tier, "ok").inc()

    def render(self) -> str:
        return generate_latest(self.registry).decode()


def best_of(repeat: int, fn: Callable[[], object]) -> float:
    """Smallest CPU time of ``repeat`` calls."""
    best = float("inf")
    for _ in range(repeat):
        started = time.process_time()
        fn()
        best = min(best, time.process_time() - started)
    return best


def samples(page: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """The request and latency samples of a page (name, labels) -> value."""
    out = {}
    for family in text_string_to_metric_families(page):
        for s in family.samples:
            if s.name.endswith("_created") or not s.name.startswith(
                ("sincere_gateway_requests", "sincere_gateway_ttft", "sincere_gateway_e2e")
            ):
                continue
            name = s.name.removesuffix("_total")
            labels = {k: (f"{float(v):g}" if k == "le" else v) for k, v in s.labels.items()}
            out[(name, tuple(sorted(labels.items())))] = round(s.value, 6)
    return out


def tenant_pages(num_keys: int, max_tenants: int, repeat: int) -> dict[str, object]:
    """Bytes and CPU ms of the per-tenant page at ``num_keys`` keys: every tenant, or capped."""
    prices = Prices(1e-6, 2e-6)
    with tempfile.TemporaryDirectory() as folder:
        registry = CollectorRegistry()
        metrics = TenantMetrics(registry)
        store = KeyStore.open(f"{folder}/keys.db", metrics=metrics)
        try:
            now = time.time()
            for k in range(num_keys):
                _, record = store.create(
                    KeySpec(name=f"tenant-{k:05d}", budget_usd=10.0), actor="bench", now=now
                )
                metrics.decided(record.name, "allowed")
                held = store.admit(record, 100, 20 + k % 50, prices, now)
                assert isinstance(held, Reservation)
                store.settle(held, 100, 10 + k % 50, prices)
            pages = {
                "library": lambda: generate_latest(registry).decode(),
                "every": lambda: metrics.render(None),
                "capped": lambda: metrics.render(max_tenants),
            }
            full, capped = samples_of(pages["every"]()), samples_of(pages["capped"]())
            for family in ("sincere_tenant_spend_usd", "sincere_tenant_budget_remaining_usd"):
                if abs(_total(full, family) - _total(capped, family)) > 1e-6:
                    raise SystemExit(f"the capped page lost part of {family}")
            row: dict[str, object] = {"keys": num_keys, "max_tenants": max_tenants}
            for name, render in pages.items():
                row[f"{name}_kib"] = round(len(render()) / 1024, 1)
                row[f"{name}_ms"] = round(best_of(repeat, render) * 1e3, 2)
            row["request_us"] = round(request_cost_s(store, metrics, repeat) * 1e6, 2)
            return row
        finally:
            store.close()


def request_cost_s(store: KeyStore, metrics: TenantMetrics, repeat: int) -> float:
    """CPU seconds of one request's key-store bookkeeping (key check counted, admit, settle)
    on a store whose capped page was scraped (so the top tenants are being kept)."""
    records = [r for r in store.records() if r.kind == "client"]
    prices, now, n = Prices(1e-6, 2e-6), time.time(), 5_000

    def requests() -> None:
        for k in range(n):
            record = records[(k * 7919) % len(records)]
            metrics.decided(record.name, "allowed")
            held = store.admit(record, 100, 20, prices, now)
            assert isinstance(held, Reservation)
            store.settle(held, 100, 10, prices)

    return best_of(repeat, requests) / n


def samples_of(page: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a page (name, labels) -> value."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(page)
        for s in family.samples
    }


def _total(found: dict[tuple[str, tuple[tuple[str, str], ...]], float], family: str) -> float:
    return sum(v for (name, _), v in found.items() if name.startswith(family))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--observations", type=int, default=20_000)
    parser.add_argument("--tenants", type=int, default=10_000, help="keys (0: skip)")
    parser.add_argument("--max-tenants", type=int, default=50)
    parser.add_argument("--skip-gateway", action="store_true", help="the tenant part only")
    args = parser.parse_args()
    if not args.skip_gateway:
        gateway_rows(args.repeat, args.observations)
    if args.tenants:
        print(json.dumps(tenant_pages(args.tenants, args.max_tenants, args.repeat)), flush=True)


def gateway_rows(repeat: int, num_observations: int) -> None:
    """The gateway's own page, hand-written against prometheus-client (one JSON row each)."""
    for num_sets in (10, 10_000):
        pairs = [(f"emu-{k % 1000}", f"tier-{k // 1000}") for k in range(num_sets)]
        hand, client = GatewayMetrics(), ClientSide()
        for k, (inst, tier) in enumerate(pairs):  # every label set exists before timing
            hand.served(inst, tier, 0.01 * (k % 50), 0.1 * (k % 50))
            client.served(inst, tier, 0.01 * (k % 50), 0.1 * (k % 50))
        hand_page = hand.render({}, {}, {})
        if samples(hand_page) != samples(client.render()):
            raise SystemExit(f"the two pages differ at {num_sets} label sets")
        n = num_observations

        def observe(
            side: GatewayMetrics | ClientSide, pairs: list[tuple[str, str]] = pairs, n: int = n
        ) -> Callable[[], None]:
            def run() -> None:
                for k in range(n):
                    inst, tier = pairs[k % len(pairs)]
                    side.served(inst, tier, 0.2, 1.5)

            return run

        def render_hand(hand: GatewayMetrics = hand) -> str:
            return hand.render({}, {}, {})

        row = {
            "label_sets": num_sets,
            "observe_us_hand": round(best_of(repeat, observe(hand)) / n * 1e6, 2),
            "observe_us_client": round(best_of(repeat, observe(client)) / n * 1e6, 2),
            "render_ms_hand": round(best_of(repeat, render_hand) * 1e3, 2),
            "render_ms_client": round(best_of(repeat, client.render) * 1e3, 2),
            "page_kib": round(len(hand_page) / 1024),
        }
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
