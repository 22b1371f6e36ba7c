"""The gateway's edge: connection limits that keep slow or greedy clients from holding it.

The connection-level limits (admission by address and in all, the first head's timer,
TLS handshakes counted and timed) are :mod:`sincere.serve.security.connections`
(:class:`EdgeLimits`, :class:`EdgeSite`), shared with the seal proxy. Here is what is
the gateway's own: the gateway reads a body under a ``body_timeout_s`` deadline
(``408``), aiohttp's keep-alive timer closes a connection that has no complete request
head ``idle_timeout_s`` after it opened or after its last response (so a later head on
a kept-alive connection is bounded by that), the open-file limit is checked at start
and accept errors are rate-limited in the log. Every refusal is counted by reason in
:attr:`EdgeLimits.refused` (``sincere_gateway_edge_refusals_total``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from sincere.serve.gateway.config import LimitsConfig
from sincere.serve.protocol import ProtocolError
from sincere.serve.security.connections import (
    AcceptErrorLog,
    EdgeLimits,
    EdgeProtocol,
    EdgeSite,
    expect_handler,
    raw_error,
    route_unrouted,
)

__all__ = [
    "AcceptErrorLog", "EdgeLimits", "EdgeProtocol", "EdgeSite", "FdBudget", "QuietServerLog",
    "expect_handler", "fd_budget", "fit_open_files", "per_client_share", "raw_error",
    "read_body", "route_unrouted", "runner_kwargs", "upstream_fd_need",
]  # fmt: skip


class QuietServerLog(logging.LoggerAdapter):  # type: ignore[type-arg]
    """aiohttp's server log, with a client's malformed request as one DEBUG line.

    aiohttp logs every request its parser rejects (a bad header byte, a bad method)
    with a traceback at ERROR; any client could flood the log that way. The 400 it
    answers is unchanged.
    """

    def exception(self, msg: object, *args: object, exc_info: Any = True, **kw: Any) -> None:
        """Log an exception; a client's HTTP syntax error gets one line at DEBUG."""
        if isinstance(exc_info, HttpProcessingError):
            words = " ".join(part.strip() for part in str(exc_info).splitlines() if part.strip())
            self.debug(f"{msg}: %s", *args, words[:200] or type(exc_info).__name__)
            return
        super().exception(msg, *args, exc_info=exc_info, **kw)


def runner_kwargs(idle_timeout_s: float, body_timeout_s: float) -> dict[str, Any]:
    """aiohttp server settings for the edge: keep-alive (idle) timeout, lingering, quiet log."""
    return {
        "keepalive_timeout": idle_timeout_s,
        "lingering_time": min(10.0, body_timeout_s),
        "logger": QuietServerLog(logging.getLogger("aiohttp.server"), {}),
    }


_BODY_HINT = (
    " (limits.max_body_bytes; images sent inline as base64 count toward it: send image URLs "
    "or ask the operator to raise the limit)"
)


async def read_body(http_req: web.Request, limits: LimitsConfig, edge: EdgeLimits) -> bytes:
    """The request body, within ``limits.max_body_bytes`` (413) and ``body_timeout_s`` (408)."""
    limit = limits.max_body_bytes
    if http_req.content_length is not None and http_req.content_length > limit:
        raise ProtocolError(
            413,
            f"request body: got {http_req.content_length} bytes; allowed: at most {limit} bytes"
            f"{_BODY_HINT}",
            code="body_too_large",
        )
    try:
        if http_req.content.is_eof():  # all there already: no timer needed
            return await http_req.read()
        async with asyncio.timeout(limits.body_timeout_s):
            return await http_req.read()
    except web.HTTPRequestEntityTooLarge:
        raise ProtocolError(
            413, f"request body: allowed: at most {limit} bytes{_BODY_HINT}", code="body_too_large"
        ) from None
    except TimeoutError:
        edge.count("body_timeout")
        raise ProtocolError(
            408,
            f"request body not complete within {limits.body_timeout_s:g}s (limits.body_timeout_s)",
            code="body_timeout",
        ) from None


FD_MARGIN = 64  # descriptors kept for logs, the key store, scrapes and the like


@dataclass(frozen=True, slots=True)
class FdBudget:
    """What the process's open-file limit allows: the soft limit to set, the connections."""

    soft_limit: int  # RLIMIT_NOFILE soft limit to ask for (unchanged if it is enough)
    max_connections: int  # client connections the edge may hold within it
    note: str | None  # one log line when the connection limit had to be lowered


def fd_budget(max_connections: int, upstream_fds: int, soft: int, hard: int) -> FdBudget:
    """Fit ``max_connections`` client connections and ``upstream_fds`` upstream ones under
    RLIMIT_NOFILE: raise the soft limit toward what is needed (not above ``hard``), and
    lower the connection limit when even that is not enough."""
    need = max_connections + upstream_fds + FD_MARGIN
    unlimited = hard < 0  # RLIM_INFINITY
    target = need if unlimited else min(need, hard)
    new_soft = max(soft, target)
    if new_soft >= need:
        return FdBudget(new_soft, max_connections, None)
    fits = min(max_connections, max(1, new_soft - upstream_fds - FD_MARGIN))
    if fits == max_connections:  # one connection is the least the edge can hold
        return FdBudget(new_soft, max_connections, None)
    note = (
        f"limits.max_connections lowered from {max_connections} to {fits}: the open-file "
        f"limit (RLIMIT_NOFILE) is {new_soft} and the upstreams need {upstream_fds}; "
        "raise it (ulimit -n) to keep the configured limit"
    )
    return FdBudget(new_soft, fits, note)


def upstream_fd_need(max_in_flight: Sequence[int], max_connections: int) -> int:
    """Sockets the backends' pools can hold: each relayed request holds one for one client
    connection, so never more than the edge admits, plus each backend's scrapes (8)."""
    return min(sum(max_in_flight), max_connections) + 8 * len(max_in_flight)


def fit_open_files(edge: EdgeLimits, upstream_fds: int, log: logging.Logger) -> None:
    """Check the edge's connection limit against RLIMIT_NOFILE at start (see :func:`fd_budget`)."""
    try:
        import resource
    except ImportError:  # not a POSIX system: nothing to check
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    budget = fd_budget(edge.max_connections, upstream_fds, soft, hard)
    if budget.soft_limit != soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (budget.soft_limit, hard))
        except (ValueError, OSError):
            budget = fd_budget(edge.max_connections, upstream_fds, soft, soft)
    if budget.note is not None:
        log.warning("%s", budget.note)
    edge.max_connections_per_client = per_client_share(
        edge.max_connections_per_client, edge.max_connections, budget.max_connections
    )
    edge.max_connections = budget.max_connections


def per_client_share(per_client: int, configured: int, fitted: int) -> int:
    """The per-address connection limit once the connection limit went from ``configured``
    to ``fitted``: the same share of it (at least 1), so that one address still cannot take
    every connection when the configured limit did not let it."""
    if fitted >= configured or per_client >= configured:
        return min(per_client, fitted)
    return max(1, min(per_client, per_client * fitted // configured, fitted - 1))
