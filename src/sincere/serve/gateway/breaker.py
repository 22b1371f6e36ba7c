"""A circuit breaker per serving instance: take a failing instance out, probe it back.

The classic three-state breaker (Nygard, *Release It!*): **closed** lets every
request through and counts consecutive failures; after ``failure_threshold`` of them
it turns **open** and the instance leaves routing; once ``cooldown_s`` has passed it
is **half-open** and exactly one probe request may go through at a time. A probe's
success closes the breaker; its failure opens it again for another cool-down.

Clock-free like every policy here: ``now`` (seconds, any monotonic origin) is an
argument, so the gateway drives it with the wall clock and tests with numbers.
"""

from __future__ import annotations

from enum import StrEnum

from sincere.core.errors import ConfigError


class BreakerState(StrEnum):
    """Where a breaker stands."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


STATE_CODES = {BreakerState.CLOSED: 0, BreakerState.OPEN: 1, BreakerState.HALF_OPEN: 2}
"""Numeric code of each state, for the ``breaker_state`` gauge."""


class CircuitBreaker:
    """Closed -> open after K consecutive failures -> half-open probe -> closed."""

    def __init__(self, failure_threshold: int = 5, cooldown_s: float = 5.0) -> None:
        if failure_threshold < 1:
            raise ConfigError(
                "breaker: failure_threshold must be >= 1",
                value=failure_threshold,
                allowed="an integer >= 1",
            )
        if not cooldown_s >= 0.0:
            raise ConfigError(
                "breaker: cooldown_s must be >= 0", value=cooldown_s, allowed="seconds >= 0"
            )
        self.failure_threshold = failure_threshold
        self.cooldown_s = cooldown_s
        self.num_failures = 0  # consecutive failures while closed
        self.opened_at: float | None = None  # when it last opened; None while closed
        self.probe_in_flight = False  # a half-open probe has been sent and not answered

    def state(self, now: float) -> BreakerState:
        """The state at ``now`` (open turns half-open once the cool-down is over)."""
        if self.opened_at is None:
            return BreakerState.CLOSED
        if now - self.opened_at >= self.cooldown_s:
            return BreakerState.HALF_OPEN
        return BreakerState.OPEN

    def can_send(self, now: float) -> bool:
        """Whether a request may go to the instance now (routing eligibility)."""
        if self.opened_at is None:
            return True
        return self.state(now) is BreakerState.HALF_OPEN and not self.probe_in_flight

    def send(self, now: float) -> None:
        """Note that a request was sent; in half-open state it is the probe."""
        if self.opened_at is not None and self.state(now) is BreakerState.HALF_OPEN:
            self.probe_in_flight = True

    def record_success(self, now: float) -> None:
        """A request succeeded: close the breaker and forget past failures."""
        self.num_failures = 0
        self.opened_at = None
        self.probe_in_flight = False

    def record_failure(self, now: float) -> None:
        """A request failed: count it; open at the threshold or when a probe fails."""
        if self.opened_at is not None:
            if self.probe_in_flight or self.state(now) is BreakerState.HALF_OPEN:
                self.opened_at = now  # failed probe: another cool-down
                self.probe_in_flight = False
            return
        self.num_failures += 1
        if self.num_failures >= self.failure_threshold:
            self.opened_at = now
            self.probe_in_flight = False
