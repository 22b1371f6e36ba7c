"""Upstream secrets never print; URLs and text are redacted (a canary proves it)."""

from __future__ import annotations

import json
import logging
import pickle
from pathlib import Path

import pytest
from pydantic import BaseModel, ConfigDict, ValidationError

from sincere.core.errors import ConfigError
from sincere.serve.security.credentials import (
    MASK,
    RedactingFilter,
    Secret,
    SecretRef,
    redact_text,
    redact_url,
)

CANARY = "canary-7f3e9b1d5a2c"


class _Backend(BaseModel):
    """A config model holding a resolved secret, as a backend config would."""

    model_config = ConfigDict(arbitrary_types_allowed=True)
    url: str
    api_key: Secret | None = None


def test_secret_every_printed_form_is_masked() -> None:
    """repr, str, f-strings, %-format, pydantic dumps (python and JSON) never show the value."""
    secret = Secret(CANARY, "env:KEY")
    backend = _Backend(url="http://h", api_key=secret)
    forms = [
        repr(secret), str(secret), f"{secret}", f"{secret!r}", "%s" % (secret,),  # noqa: UP031
        repr(backend), str(backend.model_dump()), backend.model_dump_json(),
        json.dumps(backend.model_dump(mode="json")),
    ]  # fmt: skip
    for form in forms:
        assert CANARY not in form
    assert backend.model_dump()["api_key"] == MASK
    assert secret.reveal() == CANARY and secret.source == "env:KEY"


def test_secret_cannot_be_pickled_or_json_dumped() -> None:
    """Serialisers that would write the raw value refuse instead."""
    with pytest.raises(TypeError, match="cannot be pickled"):
        pickle.dumps(Secret(CANARY))
    with pytest.raises(TypeError):
        json.dumps(Secret(CANARY))


def test_secret_from_env_and_file(tmp_path: Path) -> None:
    """Secrets come from a variable or a file's first line; missing ones name the source."""
    assert Secret.from_env("K", {"K": CANARY}).reveal() == CANARY
    with pytest.raises(ConfigError, match="env:K: environment variable is unset or empty"):
        Secret.from_env("K", {})
    path = tmp_path / "key.txt"
    path.write_text(CANARY + "\n# comment\n")
    assert Secret.from_file(path).reveal() == CANARY
    with pytest.raises(ConfigError, match=r"file:.*missing\.txt: cannot read secret file"):
        Secret.from_file(tmp_path / "missing.txt")
    (tmp_path / "empty.txt").write_text("\n")
    with pytest.raises(ConfigError, match="secret file is empty"):
        Secret.from_file(tmp_path / "empty.txt")


def test_secret_ref_in_config_holds_no_value(tmp_path: Path) -> None:
    """A config names where a secret lives; its echo shows the name, resolve() reads it."""
    ref = SecretRef.model_validate({"env": "UPSTREAM_KEY"})
    assert CANARY not in ref.model_dump_json()
    assert ref.resolve({"UPSTREAM_KEY": CANARY}).reveal() == CANARY
    with pytest.raises(ValidationError, match="exactly one of env"):
        SecretRef.model_validate({"env": "A", "file": "b"})
    with pytest.raises(ValidationError, match="exactly one of env"):
        SecretRef.model_validate({})


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://app:hunter2@db:5432/x", "http://***@db:5432/x"),
        ("https://token@host/v1", "https://***@host/v1"),
        ("http://host:8000/v1?api_key=abc&model=m", "http://host:8000/v1?api_key=***&model=m"),
        ("http://host/x?sig=1&token=2", "http://host/x?sig=***&token=***"),
        ("http://host:8000", "http://host:8000"),
    ],
)
def test_redact_url(url: str, expected: str) -> None:
    """Userinfo and credential-like query values are masked; the rest stays readable."""
    assert redact_url(url) == expected


def test_redact_text_catches_the_usual_leaks() -> None:
    """Known secrets, URL userinfo, Bearer tokens, sk- keys and NAME=value secrets are masked."""
    body = (
        f"upstream said: DATABASE_URL=postgres://app:{CANARY}@db/prod; "
        f"Authorization: Bearer {CANARY}x; key sk-snc-0123456789ab.{CANARY}; "
        f"OPENAI_API_KEY={CANARY}y password: '{CANARY}z' other sk-abcdefghijklmnop{CANARY}"
    )
    out = redact_text(body)
    assert CANARY not in out
    assert "postgres://***@db/prod" in out and "upstream said" in out
    secret = Secret("plain-value-without-pattern")
    assert redact_text("x plain-value-without-pattern y", [secret]) == "x *** y"
    assert redact_text("model=llama-3-8b tokens 12") == "model=llama-3-8b tokens 12"


def test_redacting_filter_scrubs_messages_args_and_tracebacks(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A logger with the filter never emits the canary, in arguments or exception text."""
    log = logging.getLogger("sincere.test.redact")
    secret = Secret(CANARY)
    log.addFilter(RedactingFilter([secret]))
    try:
        with caplog.at_level(logging.INFO, logger="sincere.test.redact"):
            log.info("calling %s with key %s", "http://u:" + CANARY + "@h", secret.reveal())
            try:
                raise RuntimeError(f"upstream refused key {CANARY}")
            except RuntimeError:
                log.exception("failed")
        text = caplog.text + "".join(r.getMessage() for r in caplog.records)
        assert CANARY not in text
        assert "calling http://***@h with key ***" in text
    finally:
        log.filters.clear()
