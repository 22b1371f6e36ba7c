"""Unit tests of the gateway's bounds: upstream allow-list, controller input, edge counts, caps."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from sincere.core.errors import ConfigError
from sincere.core.request import Request, Tier
from sincere.policy.routers._common import budget_max_tokens
from sincere.serve.backends.config import BackendConfig
from sincere.serve.backends.openai_api import make_backend
from sincere.serve.control.inputs import (
    check_emulator_fields,
    parse_load,
    resolve_api_file,
)
from sincere.serve.control.upstream_policy import check_upstream, parse_rules
from sincere.serve.gateway.breaker import CircuitBreaker
from sincere.serve.gateway.config import parse_config
from sincere.serve.gateway.dispatch import Dispatcher, DuplicateInstanceError
from sincere.serve.gateway.edge import EdgeLimits, raw_error
from sincere.serve.gateway.instances import InstanceState
from sincere.serve.gateway.metrics import GatewayMetrics
from sincere.serve.protocol import ProtocolError, check_text
from sincere.serve.security.credentials import redact_url

RULES = parse_rules(["127.0.0.1:8100-8102", "gpu-a.internal:*", "[::1]:9000"])


@pytest.mark.parametrize(
    ("url", "origin"),
    [
        ("http://127.0.0.1:8101", "http://127.0.0.1:8101"),
        ("http://127.0.0.1:8102/", "http://127.0.0.1:8102"),
        ("https://GPU-A.internal", "https://gpu-a.internal:443"),
        ("http://[::1]:9000", "http://[::1]:9000"),
    ],
)
def test_allowed_origins_are_normalised(url: str, origin: str) -> None:
    """A bare origin on the allow-list comes back as scheme://host:port."""
    assert check_upstream(url, RULES) == origin


@pytest.mark.parametrize(
    ("url", "match"),
    [
        ("http://127.0.0.1:8103", "not in controller.allowed_upstreams"),
        ("http://localhost:8101", "not in controller.allowed_upstreams"),
        ("http://127.0.0.1:8101/internal/x?q=", "bare origin"),
        ("http://127.0.0.1:8101/?q=1", "bare origin"),
        ("http://127.0.0.1:8101#f", "bare origin"),
        ("http://u:p@127.0.0.1:8101", "user info"),
        ("ftp://127.0.0.1:8101", "http"),
    ],
)
def test_other_urls_are_refused(url: str, match: str) -> None:
    """Off-list hosts or ports, paths, queries, fragments, credentials and schemes are refused."""
    with pytest.raises(ConfigError, match=match):
        check_upstream(url, RULES)


def test_bad_allow_list_entries_name_the_entry() -> None:
    """A malformed rule is a config error naming it."""
    with pytest.raises(ConfigError, match="allowed_upstreams"):
        parse_config({"controller": {"allowed_upstreams": ["127.0.0.1:99999"]}})
    with pytest.raises(ConfigError, match="allowed_upstreams"):
        parse_rules(["no-port"])


def test_redacted_urls_hide_user_info_only() -> None:
    """User and password become ***; a URL without them is unchanged."""
    assert redact_url("http://app:hunter2@db:5432") == "http://***@db:5432"
    assert redact_url("http://127.0.0.1:8000") == "http://127.0.0.1:8000"


def test_api_emulator_fields_refuse_paths_and_huge_numbers(tmp_path: Path) -> None:
    """Text only at name fields, bounded numbers, params_file only under files_dir."""
    ok = check_emulator_fields({"model": "llama-3-8b", "engine": {"max_num_seqs": 64}}, None)
    assert ok["engine"]["max_num_seqs"] == 64
    with pytest.raises(ConfigError, match=r"emulator\.step_model\.params\.batch_paths"):
        check_emulator_fields({"step_model": {"params": {"batch_paths": ["/etc/x"]}}}, None)
    with pytest.raises(ConfigError, match=r"max_num_requests: out of range"):
        check_emulator_fields({"max_num_requests": 65_537}, None)
    with pytest.raises(ConfigError, match=r"seed: out of range"):
        check_emulator_fields({"seed": 10**400}, None)
    with pytest.raises(ConfigError, match="files cannot be named"):
        check_emulator_fields({"step_model": {"params_file": "p.yaml"}}, None)
    fields = check_emulator_fields({"step_model": {"params_file": "p.yaml"}}, tmp_path)
    assert fields["step_model"]["params_file"] == str(tmp_path.resolve() / "p.yaml")
    for bad in ("../p.yaml", "/etc/passwd", "a/../../p.yaml"):
        with pytest.raises(ConfigError, match="relative file name under"):
            resolve_api_file(bad, tmp_path.resolve(), "x")


@pytest.mark.parametrize(
    ("raw", "match"),
    [
        ({"model": "m", "tier": "t", "rate_per_min": math.nan}, "rate_per_min"),
        ({"model": "m", "tier": "t", "rate_per_min": -1}, "rate_per_min"),
        ({"model": "m", "tier": "t", "rate_per_min": 10**400}, "rate_per_min"),
        ({"model": "m", "tier": "t", "rate_per_min": 5, "avg_in_tokens": 0}, "avg_in_tokens"),
        ({"model": "m", "tier": "t", "rate_per_min": True}, "rate_per_min"),
        ({"model": "x", "tier": "t", "rate_per_min": 5}, r"loads\[0\]\.model"),
        ({"model": "m", "tier": "u", "rate_per_min": 5}, r"loads\[0\]\.tier"),
    ],
)
def test_plan_loads_are_checked(raw: dict[str, Any], match: str) -> None:
    """A plan load names a known model and tier and has finite sizes in range."""
    with pytest.raises(ConfigError, match=match):
        parse_load(raw, 0, {"m"}, {"t"})
    assert (
        parse_load({"model": "m", "tier": "t", "rate_per_min": 0}, 0, {"m"}, {"t"}).rate_per_min
        == 0
    )


def test_edge_counts_connections_per_client_and_in_all() -> None:
    """Per-client and total caps refuse with 429 / 503; releasing frees the slot."""
    edge = EdgeLimits(1.0, max_connections=3, max_connections_per_client=2)
    assert edge.admit("a") is None and edge.admit("a") is None
    refused = edge.admit("a")
    assert refused is not None and refused.status == 429
    assert edge.admit("b") is None
    full = edge.admit("c")
    assert full is not None and full.status == 503
    edge.release("a")
    assert edge.admit("a") is None and edge.by_client == {"a": 2, "b": 1}
    assert edge.refused == {"max_connections_per_client": 1, "max_connections": 1}
    assert raw_error(ProtocolError(408, "late", code="x")).startswith(
        b"HTTP/1.1 408 Request Timeout"
    )


def _state(name: str, **backend: Any) -> InstanceState:
    cfg = BackendConfig(name=name, url="http://127.0.0.1:9", models={"m": "m"}, **backend)
    return InstanceState(make_backend(cfg), CircuitBreaker())


def test_duplicate_names_are_refused_and_membership_has_one_source() -> None:
    """A taken name raises; by_model and served always follow the instances."""
    d = Dispatcher(parse_config({}), GatewayMetrics())
    d.add(_state("a"))
    with pytest.raises(DuplicateInstanceError, match="already in routing"):
        d.add(_state("a"))
    d.add(_state("b"))
    assert [s.name for s in d.by_model["m"]] == ["a", "b"]
    d.remove("a")
    assert [s.name for s in d.by_model["m"]] == ["b"] and d.served == {"m"}
    d.remove("b")
    assert d.by_model == {} and d.served == set()


def test_budget_caps_never_overflow() -> None:
    """A huge budget caps nothing; a small one pays whole tokens; none left is zero."""
    view = _state("a", price_in_per_1m_usd=1.0, price_out_per_1m_usd=2.0).view("m", 0.0, 1.0)
    tier = Tier("default")

    def req(budget: float) -> Request:
        return Request(1, 0.0, "m", 10, 5, budget_usd=budget, tier=tier)

    assert budget_max_tokens(req(1e300), view) is None
    assert budget_max_tokens(req(10e-6 + 7 * 2e-6), view) == 7
    assert budget_max_tokens(req(1e-6), view) == 0


def test_text_with_lone_surrogates_names_its_field() -> None:
    """A lone surrogate in a nested value or a key is a 400 naming where it is."""
    with pytest.raises(ProtocolError, match=r"^messages\[1\]\.content"):
        check_text({"messages": [{"content": "ok"}, {"content": "\udc80"}]})
    with pytest.raises(ProtocolError, match="field names"):
        check_text({"x\ud800": 1})
    deep: Any = "\ud800"
    for _ in range(5000):
        deep = [deep]
    with pytest.raises(ProtocolError, match=r"^body\[0\]"):
        check_text(deep)
