"""The per-tenant page a scrape gets: bounded to the top tenants, the rest summed, nothing lost."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from sincere.serve.security.metrics import OTHER, TenantMetrics


def _samples(text: str) -> dict[str, float]:
    """Prometheus text as {name{labels}: value}."""
    lines = (line.rpartition(" ") for line in text.splitlines() if not line.startswith("#"))
    return {name: float(value) for name, _, value in lines if name}


def _tenants(samples: dict[str, float]) -> set[str]:
    return {k.split('tenant="')[1].split('"')[0] for k in samples if 'tenant="' in k}


def _filled(spends: list[float]) -> TenantMetrics:
    metrics = TenantMetrics()
    for k, usd in enumerate(spends):
        metrics.decided(f"t{k}", "allowed")
        metrics.settled(f"t{k}", 10, k, usd)
    metrics.watch(lambda: {f"t{k}": (0.5, 2.0) for k in range(len(spends))})
    return metrics


def test_a_bounded_page_shows_the_biggest_spenders_and_sums_the_rest() -> None:
    """300 tenants, cap 5: the 5 with the most spend have their series, the 295 others one
    (other) series each, and ``sincere_tenant_series_omitted`` says 295."""
    metrics = _filled([float(k) for k in range(300)])
    page = _samples(metrics.render(max_tenants=5))
    assert _tenants(page) == {"t299", "t298", "t297", "t296", "t295", OTHER}
    assert page["sincere_tenant_series_omitted"] == 295
    assert page['sincere_tenant_spend_usd_total{tenant="(other)"}'] == sum(range(295))
    assert page['sincere_tenant_reserved_usd{tenant="(other)"}'] == 0.5 * 295
    assert len(metrics.render(max_tenants=5)) < 3000
    full = _samples(metrics.render(max_tenants=None))
    assert len(_tenants(full)) == 300 and full["sincere_tenant_series_omitted"] == 0


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.floats(0, 100, allow_nan=False), min_size=1, max_size=40),
    st.integers(0, 50),
)
def test_bounded_pages_keep_every_total(spends: list[float], cap: int) -> None:
    """Whatever the cap, each family's sum over tenants equals the uncapped page's."""
    metrics = _filled(spends)
    capped, full = _samples(metrics.render(cap)), _samples(metrics.render(None))
    assert len(_tenants(capped) - {OTHER}) <= cap
    families = ("sincere_tenant_spend_usd_total", "sincere_tenant_tokens_total",
                "sincere_tenant_requests_total", "sincere_tenant_budget_remaining_usd")  # fmt: skip
    for family in families:
        total = sum(v for k, v in capped.items() if k.startswith(family + "{"))
        expected = sum(v for k, v in full.items() if k.startswith(family + "{"))
        assert abs(total - expected) <= 1e-9 * max(1.0, expected)
