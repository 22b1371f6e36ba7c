"""API keys: the token a client sends, how it is stored, and what a key allows.

A key is a token ``sk-snc-<id>.<secret>`` (client) or ``sk-snc-admin-<id>.<secret>``
(admin): ``id`` is 12 hex characters, public, and names the key in lists, logs and
the audit trail; ``secret`` is 32 random bytes (``secrets.token_bytes``, the operating
system's generator: never seeded, on purpose) in URL-safe base64. Only
``HMAC-SHA256(salt, secret)`` with a 16-byte random salt per key is stored, and
verification compares digests in constant time (:func:`hmac.compare_digest`). A slow
password KDF would add nothing here: the secret has 256 bits of entropy, so no
dictionary or brute-force search applies, and a per-request check must cost
microseconds, not the ~100 ms a password KDF is tuned to take.

A client key carries a tenant name and its limits (:class:`KeyRecord`); an admin key
carries an operator name and may use only the admin API; a metrics key
(``sk-snc-metrics-<id>.<secret>``) names a scraper and may only read ``/metrics``.
:class:`KeySpec` is what a caller asks for at creation, validated with errors naming the field.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import math
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from sincere.core.errors import ConfigError

KeyKind = Literal["client", "admin", "metrics"]
KEY_KINDS: tuple[KeyKind, ...] = ("client", "admin", "metrics")

CLIENT_PREFIX = "sk-snc-"
ADMIN_PREFIX = "sk-snc-admin-"
METRICS_PREFIX = "sk-snc-metrics-"
_PREFIXES: dict[KeyKind, str] = {
    "client": CLIENT_PREFIX, "admin": ADMIN_PREFIX, "metrics": METRICS_PREFIX,
}  # fmt: skip
ID_CHARS = 12  # hex characters of a key id (48 bits)
SALT_BYTES = 16
SECRET_BYTES = 32

TokenBytes = Callable[[int], bytes]  # the random source (tests may pass their own)


@dataclass(frozen=True, slots=True)
class Prices:
    """What one token costs on an instance, USD (the gateway's per-instance prices)."""

    in_per_token_usd: float  # per prompt token
    out_per_token_usd: float  # per generated token

    def cost_usd(self, prompt_tokens: int, completion_tokens: int) -> float:
        """Price of a request with these token counts."""
        return self.in_per_token_usd * prompt_tokens + self.out_per_token_usd * completion_tokens

    @classmethod
    def per_million(cls, in_per_1m_usd: float, out_per_1m_usd: float) -> Prices:
        """From USD per 1M tokens, the unit of the gateway's config."""
        return cls(in_per_1m_usd / 1e6, out_per_1m_usd / 1e6)


@dataclass(frozen=True, slots=True)
class KeySpec:
    """What a new key allows (``None``: no limit / every model / the server's default)."""

    kind: KeyKind = "client"
    name: str = ""  # tenant (client key), operator (admin key) or scraper (metrics key)
    models: frozenset[str] | None = None  # models the key may use
    tier: str | None = None  # the tier its requests get
    priority_ceiling: int | None = None  # the most important priority it may use (smallest)
    max_requests_per_min: int | None = None
    max_tokens_per_min: int | None = None  # prompt + max_tokens, settled to actual
    budget_usd: float | None = None  # total spend allowed over the key's life
    expires_at: float | None = None  # Unix time, seconds

    def validate(self, now: float) -> None:
        """Raise :class:`ConfigError` naming the first bad field, its value and what is allowed."""
        if self.kind not in KEY_KINDS:
            raise ConfigError("bad key kind", where="kind", value=self.kind, allowed=KEY_KINDS)
        if not self.name or not self.name.isprintable() or len(self.name) > 128:
            raise ConfigError(
                "bad name", where="name", value=self.name, allowed="1-128 printable characters"
            )
        if self.kind != "client" and self._client_fields():
            raise ConfigError(
                f"an {self.kind} key has no tenant limits",
                where=self._client_fields()[0],
                allowed="models, tier, priority, limits and budget only on client keys",
            )
        for field, limit in (
            ("max_requests_per_min", self.max_requests_per_min),
            ("max_tokens_per_min", self.max_tokens_per_min),
        ):
            if limit is not None and limit < 1:
                raise ConfigError("bad limit", where=field, value=limit, allowed="an integer >= 1")
        if self.budget_usd is not None and not (
            math.isfinite(self.budget_usd) and self.budget_usd >= 0
        ):
            raise ConfigError(
                "bad budget", where="budget_usd", value=self.budget_usd, allowed="a finite USD >= 0"
            )
        if self.models is not None and not self.models:
            raise ConfigError("empty model list", where="models", allowed="at least one model")
        if self.expires_at is not None and not self.expires_at > now:
            raise ConfigError(
                "expiry is not in the future", where="expires_at", value=self.expires_at
            )

    def _client_fields(self) -> list[str]:
        names = (
            "models", "tier", "priority_ceiling", "max_requests_per_min", "max_tokens_per_min",
            "budget_usd",
        )  # fmt: skip
        return [n for n in names if getattr(self, n) is not None]


@dataclass(frozen=True, slots=True)
class KeyRecord:
    """A stored key: what it allows, its salted digest, and its life (never the secret)."""

    key_id: str  # public id, ID_CHARS hex characters
    spec: KeySpec  # what it allows
    salt: bytes  # random per key
    digest: bytes  # HMAC-SHA256(salt, secret)
    created_at: float  # Unix time, seconds
    created_by: str  # actor that created it
    revoked_at: float | None = None  # Unix time; None: not revoked
    revoked_by: str | None = None

    @property
    def kind(self) -> KeyKind:
        return self.spec.kind

    @property
    def name(self) -> str:
        return self.spec.name

    def matches(self, secret: str) -> bool:
        """Whether ``secret`` is this key's, compared in constant time."""
        return hmac.compare_digest(digest_of(self.salt, secret), self.digest)

    def state(self, now: float) -> str:
        """``active``, ``revoked`` or ``expired`` at ``now``."""
        if self.revoked_at is not None:
            return "revoked"
        if self.spec.expires_at is not None and now >= self.spec.expires_at:
            return "expired"
        return "active"


def digest_of(salt: bytes, secret: str) -> bytes:
    """HMAC-SHA256 of the secret under the key's salt."""
    return hmac.new(salt, secret.encode("utf-8"), hashlib.sha256).digest()


def new_token(kind: KeyKind, token_bytes: TokenBytes = secrets.token_bytes) -> tuple[str, str]:
    """A fresh ``(key_id, token)``; the token is shown once, at creation."""
    key_id = token_bytes(ID_CHARS // 2).hex()
    secret = base64.urlsafe_b64encode(token_bytes(SECRET_BYTES)).rstrip(b"=").decode()
    return key_id, f"{_PREFIXES[kind]}{key_id}.{secret}"


def split_token(token: str) -> tuple[KeyKind, str, str] | None:
    """``(kind, key_id, secret)`` of a well-formed token, else ``None``."""
    kind: KeyKind
    if token.startswith(ADMIN_PREFIX):
        kind = "admin"
        rest = token[len(ADMIN_PREFIX) :]
    elif token.startswith(METRICS_PREFIX):
        kind = "metrics"
        rest = token[len(METRICS_PREFIX) :]
    elif token.startswith(CLIENT_PREFIX):
        kind = "client"
        rest = token[len(CLIENT_PREFIX) :]
    else:
        return None
    key_id, dot, secret = rest.partition(".")
    if not dot or len(key_id) != ID_CHARS or not secret or not _is_hex(key_id):
        return None
    return kind, key_id, secret


def _is_hex(text: str) -> bool:
    return all(c in "0123456789abcdef" for c in text)


def hash_secret(token: str, token_bytes: TokenBytes = secrets.token_bytes) -> tuple[bytes, bytes]:
    """``(salt, digest)`` to store for a token made by :func:`new_token`."""
    parts = split_token(token)
    if parts is None:
        raise ValueError("not a sincere key token")
    salt = token_bytes(SALT_BYTES)
    return salt, digest_of(salt, parts[2])
