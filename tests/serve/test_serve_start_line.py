"""`sincere serve`'s start line says what serves: workers, key store, where limits live."""

from __future__ import annotations

from pathlib import Path

from sincere.cli.serve import redis_address, start_line
from sincere.serve.gateway.config import GatewayConfig


def _config(**fields: object) -> GatewayConfig:
    return GatewayConfig.model_validate({"backends": [], **fields})


def test_the_line_names_workers_keys_and_redis_without_its_password(tmp_path: Path) -> None:
    """Keys and a Redis with credentials: both named, the password and user left out."""
    cfg = _config(
        security={"keys": str(tmp_path / "keys.db")},
        state={"redis": "redis://admin:s3cret@10.0.0.7:6380/2"},
    )
    line = start_line("http://127.0.0.1:8080", cfg, 2)
    assert line.startswith("sincere gateway on http://127.0.0.1:8080 (2 workers, 0 backends")
    assert f"keys {tmp_path / 'keys.db'}" in line
    assert "in Redis redis://10.0.0.7:6380/2, shared by every worker" in line
    assert "s3cret" not in line and "admin" not in line


def test_without_redis_the_line_says_limits_are_per_process(tmp_path: Path) -> None:
    """Keys without Redis: each worker keeps its own limits; no keys: no authentication."""
    keyed = start_line("u", _config(security={"keys": str(tmp_path / "k.db")}), 3)
    assert "3 workers" in keyed and "limits and budgets in each worker process" in keyed
    assert "1 worker," in start_line("u", _config(), 1)
    assert "no keys (no authentication)" in start_line("u", _config(), 1)


def test_redis_address_keeps_scheme_host_port_and_database() -> None:
    """TLS, IPv6 and unix-socket URLs keep everything but the credentials."""
    assert redis_address("rediss://:pw@cache.example:6379/0") == "rediss://cache.example:6379/0"
    assert redis_address("redis://u:pw@[::1]:6379/1") == "redis://[::1]:6379/1"
    assert redis_address("unix:///run/redis.sock") == "unix:///run/redis.sock"
