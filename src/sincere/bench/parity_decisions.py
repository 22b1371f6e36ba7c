"""The two paths' decision logs side by side: the same answers, and why not where they differ.

Both the simulator and the gateway log every front-door call
(:mod:`sincere.policy.decision_log`). Here the first call about each request of a trace
is paired across the two logs (the simulator names requests by their position; the
gateway by the ``x-request-id`` the load generator sent, the same position) and their
answers compared: kind (route / hold / reject), instance, ``max_tokens`` cap and
rejection code. Where they differ, :func:`explain` lists the inputs that differ -- a
candidate's load as each path saw it at that moment, a request field -- which is what
makes two correct runs of one policy diverge on the wall clock (a finish that crossed an
arrival, a load read a few milliseconds stale). A difference with equal inputs is
*unexplained*: the two paths' policy state (a learned predictor, a random stream) has
drifted apart, or their logic differs; the replays in :mod:`sincere.bench.parity` tell
those apart.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

Record = dict[str, Any]

LOAD_FIELDS = (
    "healthy",
    "num_outstanding",
    "num_running",
    "num_waiting",
    "waiting_prefill_tokens",
    "running_remaining_tokens",
    "running_ctx_tokens",
    "kv_usage",
)
"""View fields that change while serving (the static ones come from one config)."""

REQUEST_FIELDS = ("model", "prompt_tokens", "max_tokens", "tier", "priority", "budget_usd")
"""Request fields a policy may read (times excepted: each path has its own clock)."""


@dataclass(frozen=True, slots=True)
class DecisionDiff:
    """A request the two paths decided differently, and the inputs that differed."""

    position: int  # the request's position in the trace
    sim: Record  # the simulator's answer
    live: Record | None  # the gateway's (None: it logged no call for this request)
    inputs: tuple[str, ...]  # differing inputs, e.g. "b.num_outstanding: sim 1, live 2"

    @property
    def explained(self) -> bool:
        """Whether differing inputs account for the different answers."""
        return bool(self.inputs)


def first_calls(
    records: Iterable[Record], key: Callable[[Record], int | None]
) -> dict[int, Record]:
    """The first ``decide`` call about each request, by ``key(record)`` (its position)."""
    out: dict[int, Record] = {}
    for rec in records:
        if rec["event"] != "decide":
            continue
        position = key(rec)
        if position is not None and position not in out:
            out[position] = rec
    return out


def sim_position(rec: Record) -> int:
    """The simulator names a request by its position."""
    return int(rec["request"]["id"])


def live_position(rec: Record) -> int | None:
    """The gateway knows a request's position from the client's ``x-request-id``."""
    client = rec["request"].get("client_id")
    return int(client) if isinstance(client, str) and client.isdigit() else None


def answer(decision: Record) -> tuple[Any, ...]:
    """What must agree: kind, instance, cap and rejection code (reasons may word numbers)."""
    return (
        decision["kind"],
        decision.get("instance"),
        decision.get("max_tokens"),
        decision.get("code"),
    )


def compare_decisions(
    sim_records: Iterable[Record], live_records: Iterable[Record]
) -> tuple[int, list[DecisionDiff]]:
    """``(requests compared, differences)`` between the first calls of the two logs."""
    sim = first_calls(sim_records, sim_position)
    live = first_calls(live_records, live_position)
    diffs = []
    for position, s in sorted(sim.items()):
        other = live.get(position)
        if other is None:
            diffs.append(DecisionDiff(position, s["decision"], None, ("no live decision",)))
        elif answer(s["decision"]) != answer(other["decision"]):
            diffs.append(
                DecisionDiff(position, s["decision"], other["decision"], explain(s, other))
            )
    return len(sim), diffs


def explain(sim: Record, live: Record) -> tuple[str, ...]:
    """The inputs of two calls about one request that differ (empty: the same inputs)."""
    out = [
        f"request.{name}: sim {sim['request'][name]!r}, live {live['request'][name]!r}"
        for name in REQUEST_FIELDS
        if sim["request"][name] != live["request"][name]
    ]
    sim_views = {c["id"]: c for c in sim["candidates"]}
    live_views = {c["id"]: c for c in live["candidates"]}
    if sim_views.keys() != live_views.keys():
        out.append(f"candidates: sim {sorted(sim_views)}, live {sorted(live_views)}")
    for ident in sorted(sim_views.keys() & live_views.keys()):
        a, b = sim_views[ident], live_views[ident]
        out += [
            f"{ident}.{name}: sim {a[name]!r}, live {b[name]!r}"
            for name in LOAD_FIELDS
            if not _same_value(a[name], b[name])
        ]
    return tuple(out)


def _same_value(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
    return bool(a == b)
