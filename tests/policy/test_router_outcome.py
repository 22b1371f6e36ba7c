"""Outcomes for learning routers, built from a run's records in one place."""

from __future__ import annotations

import pytest

from sincere.core.records import RecordArrays
from sincere.core.request import Request
from sincere.policy.router_base import Outcome


def _records() -> RecordArrays:
    records = RecordArrays.empty(2, ["e0"])
    records.first_token_at[0] = 1.5
    records.finished_at[:] = [4.0, 6.0]
    records.output_tokens[:] = [20, 30]
    return records


def test_an_outcome_reads_ttft_e2e_and_tokens_from_the_records() -> None:
    """TTFT and E2E run from the arrival given; a request with no first token has no TTFT."""
    request = Request(0, 1.0, "m", 100, 20)
    got = Outcome.of_record(_records(), 0, request, "e0", 1.0)
    assert got == Outcome(request, "e0", 0.5, 3.0, 20, 4.0)
    whole = Outcome.of_record(_records(), 1, Request(1, 2.0, "m", 100, 30), "e0", 2.0)
    assert whole.ttft_s is None and whole.e2e_s == pytest.approx(4.0)


def test_a_phase_outcome_ends_where_its_phase_ends() -> None:
    """A disaggregated prefill reports its own end and its one token, not the request's."""
    request = Request(0, 1.0, "m", 100, 20)
    got = Outcome.of_record(_records(), 0, request, "p0", 1.0, end_at=2.0, output_tokens=1)
    assert (got.e2e_s, got.finished_at, got.output_tokens) == (1.0, 2.0, 1)
