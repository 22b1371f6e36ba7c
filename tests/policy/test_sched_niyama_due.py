"""NextTokenDue: Niyama's earliest next-token due time, kept incrementally."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import pytest

from sincere.core.request import RequestArrays, Tier
from sincere.perf.base import Batch, StepTimeBase
from sincere.policy.schedulers import StaticView
from sincere.policy.schedulers.base import DecodeTimeline
from sincere.policy.schedulers.deadlines import NextTokenDue
from sincere.policy.schedulers.niyama import Niyama

TIERS = (Tier("fast", ttft_s=1.0, tbt_s=0.1), Tier("none", ttft_s=1.0))


class PerToken(StepTimeBase):
    """1 ms per token."""

    def iteration_s(self, batch: Batch) -> float:
        return 0.001 * batch.num_tokens


@dataclass
class TimelineView(StaticView):
    """A hand-made view with a decode timeline: ``step`` gives every decode a token."""

    starts: list[int] = field(default_factory=list)
    iterations: int = 0

    @property
    def num_iterations(self) -> int:
        return self.iterations

    def decode_starts(self, since: int) -> Sequence[int]:
        return self.starts[since:]

    def is_decoding(self, i: int) -> bool:
        return i in self.decoding_ix

    def start(self, i: int, at: float) -> None:
        self.decoding_ix = [*self.decoding_ix, i]
        self.first_token.setdefault(i, at)
        self.produced.setdefault(i, 1)
        self.starts.append(i)

    def stop(self, i: int) -> None:
        self.decoding_ix = [j for j in self.decoding_ix if j != i]

    def step(self) -> None:
        self.iterations += 1
        for i in self.decoding_ix:
            self.produced[i] += 1


def _view(n: int) -> tuple[Niyama, TimelineView]:
    req = RequestArrays.build(
        [0.1 * k for k in range(n)], [10] * n, [50] * n, tiers=TIERS, tier=[k % 2 for k in range(n)]
    )
    sched = Niyama(PerToken())
    return sched, TimelineView(req, sched)


def test_hand_made_timeline_takes_the_fast_path_and_agrees() -> None:
    """With starts, stops, restarts and steps, the tracker equals the scan."""
    sched, view = _view(40)
    assert isinstance(view, DecodeTimeline)
    for k in range(40):
        view.start(k, at=0.1 * k + 2.5)
        view.step()
        if k % 3 == 0:
            view.stop(k // 2)
        if k % 7 == 0:
            view.start(k // 2, at=99.0)  # a restart keeps its first-token time
        now = 3.0 + 0.05 * k
        assert sched.min_decode_slack_s(view, now) == sched.scan_decode_slack_s(view, now)
    assert sched._due is not None


def test_only_tiers_with_a_tbt_target_count() -> None:
    """Decodes of a tier without TBT target give no slack: inf when only they decode."""
    sched, view = _view(4)
    view.start(1, at=0.5)
    view.start(3, at=0.7)
    assert math.isinf(sched.min_decode_slack_s(view, 0.0))
    view.start(0, at=2.0)  # fast tier: token 1 due at max(2.0, 1.0) + 0.1
    assert sched.min_decode_slack_s(view, 1.0) == pytest.approx(1.1)


def test_stale_entries_stay_bounded() -> None:
    """Finished sequences behind the heap's top are compacted away, not kept forever."""
    sched, view = _view(2000)
    due = NextTokenDue(view, sched.deadline_at)
    for k in range(0, 20, 2):  # early, urgent decodes that stay at the heap's top
        view.start(k, at=0.1 * k + 1.0)
    for k in range(20, 2000, 2):  # later ones finish after one step, never at the top
        view.start(k, at=0.1 * k + 1.0)
        view.step()
        due.earliest_due_at()
        view.stop(k)
        assert due.num_entries <= 2 * (view.num_decoding + 1) + 64  # as at the query
    assert view.num_decoding == 10
