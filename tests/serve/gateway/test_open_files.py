"""The edge's connection limit against the open-file limit, and accept errors in the log."""

from __future__ import annotations

import asyncio
import errno
import logging
import resource
from collections.abc import Awaitable, Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st
from tests.serve.security.test_gateway import gateway_config

from sincere.serve.backends.fake_upstream import FakeUpstream
from sincere.serve.gateway.edge import (
    FD_MARGIN,
    AcceptErrorLog,
    fd_budget,
    per_client_share,
    upstream_fd_need,
)
from sincere.serve.gateway.server import Gateway


def run(factory: Callable[[], Awaitable[None]]) -> None:
    """One async test body with a hard time bound."""
    asyncio.run(asyncio.wait_for(factory(), 30))


@given(
    st.integers(1, 1 << 20), st.integers(0, 1 << 16), st.integers(16, 1 << 20),
    st.integers(16, 1 << 21),
)  # fmt: skip
def test_fd_budget_always_fits_under_the_limit(
    max_connections: int, upstream: int, soft: int, hard: int
) -> None:
    """The connections kept plus the upstreams fit the soft limit asked for (<= hard), and
    the connection limit is only ever lowered, with a note saying so."""
    soft = min(soft, hard)
    got = fd_budget(max_connections, upstream, soft, hard)
    assert soft <= got.soft_limit <= hard
    assert 1 <= got.max_connections <= max_connections
    if got.max_connections > 1:
        assert got.max_connections + upstream + FD_MARGIN <= got.soft_limit
    assert (got.note is None) == (got.max_connections == max_connections)


def test_a_low_fd_limit_lowers_the_connection_limit_at_start(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Under a 1,024-descriptor limit that cannot be raised, the default 4,096 connections
    are lowered to what fits, with one warning naming RLIMIT_NOFILE."""
    monkeypatch.setattr(resource, "getrlimit", lambda _: (1024, 1024))
    monkeypatch.setattr(resource, "setrlimit", lambda *_: None)
    caplog.set_level(logging.WARNING)

    async def main() -> None:
        async with FakeUpstream() as up, Gateway(gateway_config(up.url, None)) as gw:
            upstream = gw.config.backends[0].max_in_flight + 8
            assert gw.edge.max_connections == 1024 - upstream - FD_MARGIN
            # the configured share (1,024 of 4,096: a quarter) is kept: one address cannot
            # take every connection the lowered limit allows
            assert gw.edge.max_connections_per_client == gw.edge.max_connections // 4

    run(main)
    assert "RLIMIT_NOFILE" in caplog.text and "lowered from 4096" in caplog.text


def test_accept_errors_are_one_line_per_interval() -> None:
    """A thousand EMFILE accept errors in a burst give one log line, the rest counted."""
    log = logging.getLogger("test.accept")
    lines: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: lines.append(record.getMessage())  # type: ignore[method-assign]
    log.addHandler(handler)
    try:
        on_error = AcceptErrorLog(log, interval_s=60.0)
        loop = asyncio.new_event_loop()
        try:
            for _ in range(1000):
                context = {
                    "message": "socket.accept() out of system resource",
                    "exception": OSError(errno.EMFILE, "Too many open files"),
                }
                on_error(loop, context)
        finally:
            loop.close()
    finally:
        log.removeHandler(handler)
    assert len(lines) == 1 and "Too many open files" in lines[0]
    assert on_error.num_suppressed == 999


def test_unbounded_backends_do_not_shrink_the_edge() -> None:
    """Backends without an in-flight cap (1 << 20) need no more upstream sockets than the
    edge admits clients, so a 4,096-connection edge fits a 20,000-file limit unchanged."""
    need = upstream_fd_need([1 << 20, 1 << 20], 4096)
    assert need == 4096 + 16
    assert fd_budget(4096, need, 20_000, 20_000).max_connections == 4096
    assert upstream_fd_need([64, 32], 4096) == 96 + 16


@given(st.integers(1, 1 << 16), st.integers(1, 1 << 16), st.integers(1, 1 << 16))
def test_a_lowered_limit_keeps_the_per_client_share(
    per_client: int, configured: int, fitted: int
) -> None:
    """Lowering the connection limit never lets one address hold all of it when the
    configured per-client limit did not, and never raises the per-client limit."""
    fitted = min(fitted, configured)
    got = per_client_share(per_client, configured, fitted)
    assert 1 <= got <= min(per_client, fitted)
    if per_client < configured and fitted > 1:
        assert got < fitted
