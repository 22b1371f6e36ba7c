"""API key tokens, their salted digests, key specs and the sliding-window counter."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sincere.core.errors import ConfigError
from sincere.serve.security.keys import (
    ADMIN_PREFIX,
    CLIENT_PREFIX,
    KeyRecord,
    KeySpec,
    Prices,
    hash_secret,
    new_token,
    split_token,
)
from sincere.serve.security.windows import SlidingWindow


def _record(token: str, spec: KeySpec | None = None) -> KeyRecord:
    salt, digest = hash_secret(token)
    parts = split_token(token)
    assert parts is not None
    return KeyRecord(parts[1], spec or KeySpec(name="t"), salt, digest, 0.0, "test")


def test_token_round_trip_client_and_admin() -> None:
    """A fresh token splits back into its kind, id and secret; admin tokens are marked."""
    key_id, token = new_token("client")
    assert token.startswith(CLIENT_PREFIX) and not token.startswith(ADMIN_PREFIX)
    assert split_token(token) == ("client", key_id, token.rpartition(".")[2])
    admin_id, admin = new_token("admin")
    assert admin.startswith(ADMIN_PREFIX)
    assert split_token(admin) == ("admin", admin_id, admin.rpartition(".")[2])


@pytest.mark.parametrize(
    "token",
    ["", "Bearer x", "sk-snc-", "sk-snc-0123456789ab", "sk-snc-0123456789ab.", "sk-snc-XYZ.abc",
     "sk-snc-0123456789AB.abc", "sk-other-0123456789ab.abc"],
)  # fmt: skip
def test_malformed_tokens_are_rejected(token: str) -> None:
    """Anything not shaped like prefix, 12 lower-case hex id, dot and secret is no token."""
    assert split_token(token) is None


def test_digest_matches_only_the_right_secret() -> None:
    """The stored digest verifies the token's secret and nothing else; salts differ per key."""
    _, token = new_token("client")
    record = _record(token)
    secret = token.rpartition(".")[2]
    assert record.matches(secret)
    assert not record.matches(secret[:-1] + ("A" if secret[-1] != "A" else "B"))
    assert not record.matches("")
    assert hash_secret(token)[0] != hash_secret(token)[0]


def test_record_never_holds_the_secret() -> None:
    """Neither the record's fields nor its repr contain the token's secret."""
    _, token = new_token("client")
    record = _record(token)
    secret = token.rpartition(".")[2]
    assert secret not in repr(record)
    assert secret.encode() not in record.salt + record.digest


def test_record_state_follows_expiry_and_revocation() -> None:
    """A key is active until its expiry, then expired; revoked wins over both."""
    _, token = new_token("client")
    record = _record(token, KeySpec(name="t", expires_at=100.0))
    assert record.state(99.9) == "active"
    assert record.state(100.0) == "expired"
    revoked = KeyRecord(record.key_id, record.spec, record.salt, record.digest, 0.0, "t", 50.0)
    assert revoked.state(10.0) == "revoked"


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        (KeySpec(name=""), "name"),
        (KeySpec(name="a\nb"), "name"),
        (KeySpec(name="t", max_requests_per_min=0), "max_requests_per_min.*got 0"),
        (KeySpec(name="t", max_tokens_per_min=-5), "max_tokens_per_min.*got -5"),
        (KeySpec(name="t", budget_usd=math.nan), "budget_usd"),
        (KeySpec(name="t", budget_usd=-1.0), "budget_usd.*got -1.0"),
        (KeySpec(name="t", models=frozenset()), "models"),
        (KeySpec(name="t", expires_at=5.0), "expires_at.*not in the future"),
        (KeySpec(kind="admin", name="ops", budget_usd=1.0), "budget_usd.*admin key"),
    ],
)
def test_spec_validation_names_the_field(spec: KeySpec, match: str) -> None:
    """A bad key spec raises ConfigError naming the field and the bad value."""
    with pytest.raises(ConfigError, match=match):
        spec.validate(now=10.0)


def test_prices_per_million() -> None:
    """Prices given per 1M tokens cost prompt and completion tokens separately."""
    prices = Prices.per_million(1.0, 3.0)
    assert prices.cost_usd(1000, 2000) == pytest.approx(0.001 + 0.006)


# ------------------------------------------------------------------ sliding window
def test_window_refuses_over_limit_and_names_the_wait() -> None:
    """With limit 3 per 60 s (1-s buckets), the 4th request waits until the 1st leaves."""
    window = SlidingWindow(3, 60.0, 60)
    for t in (10.2, 20.0, 30.0):
        assert window.retry_after_s(t, 1) is None
        window.add(t, 1)
    wait = window.retry_after_s(40.0, 1)
    assert wait is not None
    # the first request's bucket [10, 11) leaves when bucket 71 starts: at 71 s
    assert wait == pytest.approx(71.0 - 40.0)
    assert window.retry_after_s(40.0 + wait, 1) is None


def test_window_amount_larger_than_limit_never_fits() -> None:
    """A single amount above the limit gets an infinite wait, not a misleading retry."""
    window = SlidingWindow(100)
    assert window.retry_after_s(0.0, 101) == math.inf


def test_window_adjust_corrects_a_recorded_amount() -> None:
    """A reservation settled lower frees the difference at once; an old bucket is ignored."""
    window = SlidingWindow(1000, 60.0, 60)
    bucket = window.add(5.0, 800)
    assert window.retry_after_s(6.0, 300) is not None
    window.adjust(bucket, -600)
    assert window.total(6.0) == 200
    window.adjust(bucket, -10_000)  # never below zero
    assert window.total(6.0) == 0
    old = window.add(7.0, 5)
    window.total(500.0)
    window.adjust(old, 50)  # left the window long ago: no effect
    assert window.total(500.0) == 0


def test_window_clock_stepping_back_is_treated_as_standing_still() -> None:
    """A now earlier than the last one does not expire or double-count anything."""
    window = SlidingWindow(10)
    window.add(100.0, 4)
    assert window.total(50.0) == 4
    window.add(50.0, 1)
    assert window.total(100.0) == 5


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.floats(0.0, 5.0), st.integers(1, 40)),
        min_size=1,
        max_size=120,
    )
)
def test_window_never_exceeds_limit_in_any_true_window(steps: list[tuple[float, int]]) -> None:
    """Admitting only what fits keeps every real 60-s span at or under the limit."""
    limit, window_s = 100, 60.0
    window = SlidingWindow(limit, window_s, 12)
    now, admitted = 1000.0, []
    for gap, amount in steps:
        now += gap * 10
        if window.retry_after_s(now, amount) is None:
            window.add(now, amount)
            admitted.append((now, amount))
    for start, _ in admitted:
        held = sum(a for t, a in admitted if start <= t < start + window_s)
        assert held <= limit
