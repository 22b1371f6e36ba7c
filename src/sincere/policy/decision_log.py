"""Decisions are data: every front-door call and every outcome, one JSON line each.

Both drivers (the simulator's cluster and the gateway's dispatcher) write, when asked
(``--decisions FILE``), one record per event in the order they happened:

* ``{"event": "decide" | "place", "at", "request": {...}, "num_queued", "exclude",
  "waiting", "candidates": [views...], "decision": {...}}`` -- one call of
  :meth:`~sincere.policy.front_door.FrontDoor.decide` or ``place``: the request (its
  id, ``client_id`` when a client named it, model, sizes, tier, priority, budget, and its
  ``block_ids``, ``block_tokens`` and ``session`` where it has them), every
  view the front door was given (all scalar fields; ``step_model`` as a flag) and its
  answer (``kind`` route / hold / reject, instance, ``max_tokens``, code, reason, and the
  router's per-candidate ``estimates``);
* ``{"event": "outcome", ...}`` -- a routed request finished (what ``observe`` learns);
* ``{"event": "hold", "instance", "held_s"}`` -- a request released its slot (what the
  queue's drain rate learns).

Times are the driver's clock (the simulator's seconds, the gateway's event-loop time).
Because the front door is clock-free, :func:`replay` can feed a log's inputs to a fresh
front door -- built by either path from the same config -- and compare its answers with
the logged ones: the same inputs give the same decisions, whichever path logged them.
Unknown view fields are ``null``; non-finite numbers too.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from sincere.core.errors import ConfigError
from sincere.core.jsonsafe import json_safe
from sincere.core.request import Request, Tier
from sincere.core.types import InstanceId, Seconds
from sincere.perf.base import StepTimeModel
from sincere.policy.front_door import Decision, FrontDoor, Hold, Reject, Route
from sincere.policy.reads import Reads
from sincere.policy.router_base import InstanceView, Outcome

Record = dict[str, Any]

_VIEW_FIELDS = tuple(f.name for f in fields(InstanceView) if f.name != "step_model")


class DecisionLog:
    """Writes decision records as JSON lines through ``write`` (a file's, a list's append)."""

    def __init__(self, write: Callable[[str], object]) -> None:
        self.write = write

    @property
    def reads(self) -> Reads:
        """The views each call was shown (engine load: they must carry it) and every
        outcome; not tokens beyond what the front door itself reads (it records what the
        front door saw). Never oblivious: it keeps everything."""
        return Reads(load=True, tokens=False, outcomes=True, oblivious=False)

    def call(
        self,
        event: str,
        request: Request,
        views: Sequence[InstanceView],
        now: Seconds,
        decision: Decision,
        *,
        num_queued: int = 0,
        exclude: Iterable[InstanceId] = (),
        waiting: bool = False,
        client_id: str | None = None,
    ) -> None:
        """One ``decide`` or ``place`` call with its inputs and answer."""
        self._emit(
            {
                "event": event,
                "at": now,
                "request": request_record(request, client_id),
                "num_queued": num_queued,
                "exclude": sorted(exclude),
                "waiting": waiting,
                "candidates": [view_record(v) for v in views],
                "decision": decision_record(decision),
            }
        )

    def outcome(self, outcome: Outcome) -> None:
        """A routed request finished."""
        self._emit(
            {
                "event": "outcome",
                "at": outcome.finished_at,
                "request": outcome.request.id,
                "instance": outcome.instance,
                "ttft_s": outcome.ttft_s,
                "e2e_s": outcome.e2e_s,
                "output_tokens": outcome.output_tokens,
            }
        )

    def hold(self, instance: InstanceId, held_s: Seconds, now: Seconds) -> None:
        """A request released its slot on ``instance`` after ``held_s``."""
        self._emit({"event": "hold", "at": now, "instance": instance, "held_s": held_s})

    def _emit(self, record: Record) -> None:
        self.write(json.dumps(json_safe(record), separators=(",", ":")) + "\n")


@contextlib.contextmanager
def open_log(path: str | Path, *, append: bool = False) -> Iterator[DecisionLog]:
    """A log writing whole lines to the file at ``path`` (created; appended to with
    ``append``, so that several processes may share it), closed on exit.

    Raises :class:`~sincere.core.errors.ConfigError` naming the file when it cannot be
    opened.
    """
    where = Path(path)
    try:
        sink = where.open("a" if append else "w", encoding="utf-8", buffering=1)
    except OSError as exc:
        raise ConfigError("cannot write the decision log", where=where, value=str(exc)) from None
    with sink:
        yield DecisionLog(sink.write)


def request_record(request: Request, client_id: str | None = None) -> Record:
    """The request as the log holds it (everything a policy may read but the prompt)."""
    tier = request.tier
    return {
        "id": request.id,
        "client_id": client_id,
        "arrival_at": request.arrival_at,
        "model": request.model,
        "prompt_tokens": request.prompt_tokens,
        "output_tokens": request.output_tokens,
        "max_tokens": request.max_tokens,
        "tier": [tier.name, tier.ttft_s, tier.ttlt_s, tier.tbt_s, tier.priority],
        "priority": request.priority,
        "budget_usd": request.budget_usd,
        **_content_record(request),
    }


def _content_record(request: Request) -> Record:
    """The prompt's block ids, their size and the session, where the request has them
    (absent otherwise, so logs of requests without them read as before)."""
    out: Record = {}
    if request.block_ids:
        out["block_ids"] = list(request.block_ids)
        out["block_tokens"] = request.block_tokens
    if request.session is not None:
        out["session"] = request.session
    return out


def view_record(view: InstanceView) -> Record:
    """Every scalar field of ``view``; the step model as whether there is one."""
    out = {name: getattr(view, name) for name in _VIEW_FIELDS}
    out["step_model"] = view.step_model is not None
    return out


_DECISION_KINDS: dict[type, str] = {Route: "route", Hold: "hold", Reject: "reject"}
"""A decision record's ``kind`` per answer type."""


def decision_record(decision: Decision) -> Record:
    """The front door's answer: its kind, then its fields in order (a route's estimates as
    a mapping of instance to value)."""
    out: Record = {"kind": _DECISION_KINDS[type(decision)]}
    out.update((f.name, getattr(decision, f.name)) for f in fields(decision))
    if isinstance(decision, Route):
        out["estimates"] = dict(decision.estimates)
    return out


def request_of(record: Record) -> Request:
    """The :class:`Request` a ``request`` record describes."""
    name, ttft, ttlt, tbt, priority = record["tier"]
    return Request(
        id=record["id"],
        arrival_at=record["arrival_at"],
        model=record["model"],
        prompt_tokens=record["prompt_tokens"],
        output_tokens=record["output_tokens"],
        max_tokens=record["max_tokens"],
        tier=Tier(name, ttft, ttlt, tbt, priority),
        priority=record["priority"],
        budget_usd=record["budget_usd"],
        block_ids=tuple(record.get("block_ids", ())),
        block_tokens=record.get("block_tokens", 0),
        session=record.get("session"),
    )


def view_of(record: Record, step_models: Mapping[InstanceId, StepTimeModel]) -> InstanceView:
    """The view a candidate record describes, its step model taken from ``step_models``."""
    values = {name: record[name] for name in _VIEW_FIELDS}
    step = step_models.get(record["id"]) if record["step_model"] else None
    return InstanceView(**values, step_model=step)


def read_log(lines: Iterable[str]) -> Iterator[Record]:
    """The records of a decision log (blank lines skipped)."""
    for line in lines:
        if line.strip():
            yield json.loads(line)


@dataclass(frozen=True, slots=True)
class Mismatch:
    """A logged call whose replay answered differently."""

    position: int  # index of the record in the log
    request: int  # its request id
    logged: Record  # the decision the log holds
    replayed: Record  # what the fresh front door answered


def replay(
    records: Iterable[Record],
    front_door: FrontDoor,
    step_models: Mapping[InstanceId, StepTimeModel],
) -> tuple[int, list[Mismatch]]:
    """Feed a log's inputs to ``front_door``, in order; ``(calls replayed, mismatches)``.

    Outcomes and holds are fed back as they were observed, so learning routers and the
    admission history evolve as they did when the log was written.
    """
    requests: dict[int, Request] = {}
    num_calls, mismatches = 0, []
    for position, rec in enumerate(records):
        if rec["event"] == "outcome":
            req = requests.get(rec["request"])
            if req is not None:
                front_door.observe(_outcome(rec, req))
            continue
        if rec["event"] == "hold":
            front_door.observe_hold(rec["instance"], rec["held_s"])
            continue
        request = requests.setdefault(rec["request"]["id"], request_of(rec["request"]))
        got = decision_record(_call(rec, request, front_door, step_models))
        num_calls += 1
        if not _same(got, rec["decision"]):
            mismatches.append(Mismatch(position, request.id, rec["decision"], got))
    return num_calls, mismatches


def _call(
    rec: Record,
    request: Request,
    front_door: FrontDoor,
    step_models: Mapping[InstanceId, StepTimeModel],
) -> Decision:
    views = [view_of(c, step_models) for c in rec["candidates"]]
    if rec["event"] == "decide":
        return front_door.decide(request, views, rec["at"], rec["num_queued"])
    return front_door.place(
        request,
        views,
        rec["at"],
        exclude=frozenset(rec["exclude"]),
        num_queued=rec["num_queued"],
        waiting=rec["waiting"],
    )


def _outcome(rec: Record, request: Request) -> Outcome:
    return Outcome(
        request, rec["instance"], rec["ttft_s"], rec["e2e_s"], rec["output_tokens"], rec["at"]
    )


def _same(a: Record, b: Record) -> bool:
    """Equal decision records (after the JSON round trip: non-finite numbers are null)."""
    return bool(json_safe(json.loads(json.dumps(json_safe(a)))) == b)
