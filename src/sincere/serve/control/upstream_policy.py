"""Which servers a remote caller may put behind the gateway, and how addresses are shown.

``POST /admin/instances {url: ...}`` names a server that will receive other clients'
prompts and whose ``/metrics`` the gateway will read every half second, so a URL
given over the API must be a bare origin -- scheme, host and port; no path, query,
fragment or user info -- whose host and port match the operator's allow-list
(``controller.allowed_upstreams``). Rules are ``host:port``, ``host:*`` (any port) or
``host:low-high`` (a port range); hosts compare exactly, after lower-casing (a name
is not resolved, so ``localhost`` and ``127.0.0.1`` are different rules). Nothing is
contacted before the check passes.

URLs are shown to API callers with their user info and credential-like query values
replaced by ``***`` (:func:`sincere.serve.security.credentials.redact_url`); clients of
``/v1`` never see upstream addresses at all.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from yarl import URL

from sincere.core.errors import ConfigError

_SCHEMES = {"http": 80, "https": 443}


@dataclass(frozen=True, slots=True)
class UpstreamRule:
    """One allow-list entry: a host and an inclusive port range."""

    host: str  # lower-case host name or IP literal (IPv6 without brackets)
    low_port: int
    high_port: int

    def allows(self, host: str, port: int) -> bool:
        """Whether ``host:port`` matches this rule."""
        return host == self.host and self.low_port <= port <= self.high_port


def parse_rule(entry: str) -> UpstreamRule:
    """``host:port``, ``host:*`` or ``host:low-high`` (``[v6]:port`` for IPv6)."""
    allowed = "host:port, host:* or host:low-high"
    host, sep, ports = entry.strip().rpartition(":")
    host = host.strip("[]").lower()
    if not sep or not host:
        raise ConfigError("controller.allowed_upstreams: bad entry", value=entry, allowed=allowed)
    if ports == "*":
        return UpstreamRule(host, 1, 65535)
    low, _, high = ports.partition("-")
    try:
        lo, hi = int(low), int(high or low)
    except ValueError:
        raise ConfigError(
            "controller.allowed_upstreams: bad port", value=entry, allowed=allowed
        ) from None
    if not 1 <= lo <= hi <= 65535:
        raise ConfigError(
            "controller.allowed_upstreams: ports must lie in 1..65535, low <= high",
            value=entry,
        )
    return UpstreamRule(host, lo, hi)


def parse_rules(entries: Sequence[str]) -> tuple[UpstreamRule, ...]:
    """The allow-list (see :func:`parse_rule`)."""
    return tuple(parse_rule(e) for e in entries)


def check_upstream(url: str, rules: Sequence[UpstreamRule]) -> str:
    """The origin ``scheme://host:port`` of ``url``, if the API may register it; else raise.

    Raises :class:`ConfigError` for a URL with user info, a path other than ``/``, a
    query or a fragment, a scheme other than http(s), or a host and port no rule allows.
    """
    try:
        parsed = URL(url)
    except (ValueError, TypeError):
        raise ConfigError("url: not a URL", value=url, allowed="http(s)://host:port") from None
    if parsed.scheme not in _SCHEMES or not parsed.host:
        raise ConfigError("url: needs http(s) and a host", value=url, allowed="http(s)://host:port")
    if parsed.user is not None or parsed.password is not None:
        raise ConfigError(
            "url: must not carry user info (credentials)", allowed="http(s)://host:port"
        )
    if parsed.raw_path not in ("", "/") or parsed.raw_query_string or parsed.raw_fragment:
        raise ConfigError(
            "url: must be a bare origin (no path, query or fragment)",
            value=url,
            allowed="http(s)://host:port",
        )
    host = parsed.host.lower()
    port = parsed.port or _SCHEMES[parsed.scheme]
    if not any(rule.allows(host, port) for rule in rules):
        raise ConfigError(
            f"url: {host}:{port} is not in controller.allowed_upstreams",
            allowed=", ".join(f"{r.host}:{r.low_port}-{r.high_port}" for r in rules) or "none",
        )
    shown_host = f"[{host}]" if ":" in host else host
    return f"{parsed.scheme}://{shown_host}:{port}"
