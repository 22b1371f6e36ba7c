"""The hand-written /metrics page is valid Prometheus text: prometheus-client parses it back."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from sincere.serve.gateway.metrics import LATENCY_BUCKETS_S, GatewayMetrics


def test_page_parses_back_with_escaped_labels_and_cumulative_buckets() -> None:
    """Label values with quote, backslash and newline and every bucket survive a parse."""
    odd = 'emu "1"\\a\nb'
    m = GatewayMetrics()
    m.served(odd, "gold", 0.02, 0.3)
    m.served(odd, "gold", 7.0, 200.0)
    m.finished("", "gold", "rejected")
    page = m.render({"llama": 2}, {odd: 1}, {odd: 0}, {"limit": 3}, 4)
    families = {f.name: f for f in text_string_to_metric_families(page)}
    requests = {
        (s.labels["instance"], s.labels["outcome"]): s.value
        for s in families["sincere_gateway_requests"].samples
    }
    assert requests == {(odd, "ok"): 2.0, ("", "rejected"): 1.0}
    buckets = [
        s for s in families["sincere_gateway_e2e_seconds"].samples if s.name.endswith("_bucket")
    ]
    assert all(s.labels["instance"] == odd for s in buckets)
    assert len(buckets) == len(LATENCY_BUCKETS_S) + 1
    counts = [s.value for s in buckets]
    assert counts == sorted(counts) and counts[-1] == 2.0  # cumulative, +Inf holds all
    assert [s.value for s in families["sincere_gateway_connections"].samples] == [4.0]
