"""Upstream credentials that never print, and redaction of URLs and free text.

A backend's API key is read from an environment variable or a file into a
:class:`Secret`. Its ``repr``, ``str``, ``format``, pickling and pydantic/JSON
serialisation all give ``***``; only :meth:`Secret.reveal` returns the value, and
only the code that builds the upstream ``Authorization`` header should call it. In a
pydantic config a secret is written ``{"env": "NAME"}`` or ``{"file": "path"}``
(:class:`SecretRef`), so the config itself never holds the value and its echo
(``model_dump``) shows only where the value comes from.

Redaction for text that may carry secrets by accident (an upstream's error body, a
config echo, a log line): :func:`redact_url` masks a URL's userinfo and the values of
credential-like query parameters; :func:`redact_text` masks known secret values,
userinfo in any URL, ``Bearer`` tokens, sincere's own key tokens and
``NAME=value`` pairs whose name says password, secret, token or key.
:class:`RedactingFilter` applies :func:`redact_text` to every record of a logger.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict, GetCoreSchemaHandler, model_validator
from pydantic_core import core_schema

from sincere.core.errors import ConfigError

MASK = "***"

_SENSITIVE_NAME = re.compile(
    r"pass(word|wd)?|secret|token|api[_-]?key|access[_-]?key|private[_-]?key|auth|credential|sig(nature)?",
    re.IGNORECASE,
)
_URL_USERINFO = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<userinfo>[^/\s@]+)@")
_BEARER = re.compile(r"(?P<head>\bBearer\s+)[A-Za-z0-9._~+/=-]+", re.IGNORECASE)
_SINCERE_TOKEN = re.compile(r"\bsk-snc-[A-Za-z0-9_.-]+")
_OPENAI_STYLE = re.compile(r"\bsk-[A-Za-z0-9_-]{16,}")
_ASSIGNMENT = re.compile(
    r"(?P<name>\b[A-Za-z_][A-Za-z0-9_.-]*)(?P<sep>\s*[=:]\s*)(?P<quote>[\"']?)(?P<value>[^\s\"'&,;]+)"
)


class Secret:
    """A credential whose every printed or serialised form is ``***``."""

    __slots__ = ("_source", "_value")

    def __init__(self, value: str, source: str = "value") -> None:
        if not value:
            raise ConfigError("a secret may not be empty", where=source)
        self._value = value
        self._source = source  # where it came from, e.g. "env:OPENAI_KEY" (safe to print)

    @classmethod
    def from_env(cls, name: str, environ: dict[str, str] | None = None) -> Secret:
        """The value of environment variable ``name``; a clear error when unset or empty."""
        env = os.environ if environ is None else environ
        value = env.get(name)
        if not value:
            raise ConfigError(
                "environment variable is unset or empty",
                where=f"env:{name}",
                allowed="a non-empty value",
            )
        return cls(value, f"env:{name}")

    @classmethod
    def from_file(cls, path: str | Path) -> Secret:
        """The first line of ``path`` (trailing whitespace removed); a clear error if unreadable."""
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(
                f"cannot read secret file: {exc.strerror}", where=f"file:{path}"
            ) from None
        value = text.splitlines()[0].strip() if text.strip() else ""
        if not value:
            raise ConfigError("secret file is empty", where=f"file:{path}")
        return cls(value, f"file:{path}")

    @property
    def source(self) -> str:
        """Where the value came from (``env:NAME``, ``file:PATH``), never the value."""
        return self._source

    def reveal(self) -> str:
        """The value itself: only for building the upstream request."""
        return self._value

    def __repr__(self) -> str:
        return f"Secret({MASK}, source={self._source!r})"

    def __str__(self) -> str:
        return MASK

    def __format__(self, spec: str) -> str:
        return MASK

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(("Secret", self._value))

    def __reduce__(self) -> NoReturn:
        raise TypeError("a Secret cannot be pickled (it would write the value)")

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: GetCoreSchemaHandler) -> Any:
        """In a pydantic model: accept a :class:`Secret`, serialise (JSON or not) as ``***``."""
        return core_schema.is_instance_schema(
            cls, serialization=core_schema.plain_serializer_function_ser_schema(lambda _: MASK)
        )


class SecretRef(BaseModel):
    """Where a secret comes from in a config file: ``{env: NAME}`` or ``{file: PATH}``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    env: str | None = None  # environment variable holding the value
    file: Path | None = None  # file whose first line is the value

    @model_validator(mode="after")
    def _exactly_one(self) -> SecretRef:
        if (self.env is None) == (self.file is None):
            raise ValueError("give exactly one of env (a variable name) or file (a path)")
        return self

    def resolve(self, environ: dict[str, str] | None = None) -> Secret:
        """Read the value now (at start-up), with a clear error when it is missing."""
        if self.env is not None:
            return Secret.from_env(self.env, environ)
        assert self.file is not None
        return Secret.from_file(self.file)


def redact_url(url: str) -> str:
    """``url`` with its userinfo and credential-like query values replaced by ``***``."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return redact_text(url)
    netloc = parts.netloc
    if "@" in netloc:
        netloc = f"{MASK}@{netloc.rpartition('@')[2]}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        masked = [(k, MASK if _SENSITIVE_NAME.search(k) else v) for k, v in pairs]
        query = urlencode(masked, safe="*")
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def redact_text(text: str, secrets: Iterable[Secret | str] = ()) -> str:
    """``text`` with known secrets and secret-looking substrings replaced by ``***``."""
    for secret in secrets:
        value = secret.reveal() if isinstance(secret, Secret) else secret
        if value:
            text = text.replace(value, MASK)
    text = _URL_USERINFO.sub(lambda m: f"{m['scheme']}{MASK}@", text)
    text = _BEARER.sub(lambda m: f"{m['head']}{MASK}", text)
    text = _SINCERE_TOKEN.sub(MASK, text)
    text = _OPENAI_STYLE.sub(MASK, text)
    return _ASSIGNMENT.sub(_mask_assignment, text)


def _mask_assignment(match: re.Match[str]) -> str:
    if not _SENSITIVE_NAME.search(match["name"]) or match["value"] == MASK:
        return match[0]
    return f"{match['name']}{match['sep']}{match['quote']}{MASK}"


class RedactingFilter(logging.Filter):
    """A logging filter that passes every record through :func:`redact_text`."""

    def __init__(self, secrets: Iterable[Secret] = ()) -> None:
        super().__init__()
        self.secrets = tuple(secrets)

    def filter(self, record: logging.LogRecord) -> bool:
        """Render the message once, redacted; drop the arguments it was built from."""
        message = record.getMessage()
        record.msg = redact_text(message, self.secrets)
        record.args = None
        if record.exc_info and record.exc_info[1] is not None:
            record.exc_text = redact_text(
                logging.Formatter().formatException(record.exc_info), self.secrets
            )
            record.exc_info = None
        return True
