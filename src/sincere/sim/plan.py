"""The run's speed shortcuts, decided once from what its plug-ins declare they read.

Every plug-in of a simulated cluster -- the front door (router and admission), the
decision log, an extension (:mod:`sincere.sim.extension`) and any probe a caller adds --
declares in one :class:`~sincere.policy.reads.Reads` what its answers depend on.
:func:`plan_shortcuts` turns those declarations, and a few facts of the cluster
(budgets, in-flight caps, engines that hold requests back, a closed loop), into one frozen
:class:`Shortcuts`; the cluster, the loop and the engines follow it, and nothing changes
it during a run. Every shortcut gives the answers the long way would (the tests run both
ways and compare bit for bit); a plug-in that declares nothing reads everything, and so
gets none of them.

* ``passthrough`` -- a request with one eligible instance goes there without asking the
  front door: nothing screens requests (no admission), no budget in the run, no decision
  log records the call, no extension routes arrivals itself;
* ``exact_tokens`` -- someone reads token counts: a view is moved on by the decode
  iterations ended since its engine's last event;
* ``load_blind`` -- nobody reads engine-reported load (nor tokens): views show the load
  unknown, and only a change of outstanding count makes one stale;
* ``observes`` -- someone learns from (or records) the front door's outcomes: finished
  requests are told to it;
* ``all_open`` -- no instance has an in-flight cap: every view is a candidate;
* ``apart`` -- every answer is oblivious and nothing observes, holds back or loops
  closed: the trace is routed first, then each engine runs alone;
* ``by_count`` -- the front door can place a request from one count per candidate
  alone (``"outstanding"``: ``least-outstanding``, ``power-of-two`` by outstanding, and
  ``prefix-aware`` by outstanding, which with block ids reads each request's chained keys
  as well, ``counts_by_with_prompt``; ``"requests"``,
  waiting plus running: ``join-shortest-queue`` by requests; no
  admission), and nothing else is read or recorded at a decision (``passthrough``,
  ``all_open``, no outcomes, no exact tokens): an arrival is routed from the cluster's
  list of those counts, with no request object and no view (``None``: by the views);
* ``engine_pacing`` -- how engines cut their work into events
  (:meth:`~sincere.engine.base.Engine.configure`): ``exact`` when a router reads loads
  between iterations (or an extension feeds engines between events), ``summed`` when
  nobody reads them but the loop integrates over iterations (several engines) -- also
  when only ``by_count``'s queue counts are read, which do not change inside a prefill
  run cut into one piece -- else ``free``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from sincere.policy.reads import READS_NOTHING, Reads
from sincere.policy.router_base import CountKey

Pacing = Literal["free", "exact", "summed"]


@dataclass(frozen=True, slots=True)
class Facts:
    """What the plan needs to know of the cluster besides the declarations."""

    num_engines: int
    has_front_door: bool
    screens: bool  # the front door screens requests (admission)
    no_budgets: bool  # no request of the run has a budget
    all_open: bool  # no instance has an in-flight cap
    holds_back: bool  # some engine may hold requests back until the run's end
    closed: bool  # the arrivals follow completions (a closed loop)
    # the count the front door can place by (FrontDoor.counts_by, or with block ids
    # counts_by_with_prompt); None: none
    door_counts_by: CountKey | None = None


@dataclass(frozen=True, slots=True)
class ExtensionNeeds:
    """What an extension declares: what its decisions read of the cluster's views, whether
    it routes arrivals itself, and whether it gives engines work between their events."""

    reads: Reads = field(default_factory=Reads)
    routes_arrivals: bool = True
    feeds_engines: bool = True


@dataclass(frozen=True, slots=True)
class Shortcuts:
    """Every shortcut of one run (see the module docstring)."""

    passthrough: bool
    exact_tokens: bool
    load_blind: bool
    observes: bool
    all_open: bool
    apart: bool
    by_count: CountKey | None
    engine_pacing: Pacing


def plan_shortcuts(
    facts: Facts,
    door: Reads | None,
    log: Reads | None = None,
    extension: ExtensionNeeds | None = None,
    probes: Sequence[Reads] = (),
) -> Shortcuts:
    """The shortcuts that the declarations allow: ``door`` the front door's (``None``:
    no front door), ``log`` the decision log's, ``extension`` the extension's, ``probes``
    those of anything else that reads the cluster during the run."""
    others = READS_NOTHING
    for reads in [*([log] if log is not None else []), *probes]:
        others = others | reads
    if extension is not None:
        others = others | extension.reads
    door_reads = door if door is not None else READS_NOTHING
    everyone = door_reads | others
    load_blind = door is not None and not (everyone.load or everyone.tokens)
    observes = door is not None and (door_reads.outcomes or log is not None or others.outcomes)
    apart = (
        door is not None
        and everyone.oblivious
        and load_blind
        and not observes
        and facts.all_open
        and not facts.holds_back
        and not facts.closed
        and extension is None
    )
    passthrough = (
        facts.no_budgets
        and not facts.screens
        and log is None
        and (extension is None or not extension.routes_arrivals)
    )
    by_count = _by_count(facts, passthrough, load_blind, observes, everyone.tokens)
    # what is read between engine events: nothing, or only queue counts, which a prefill
    # run cut into one piece leaves as one event per iteration would (no admission, no
    # finish inside it)
    counts_only = by_count is not None and not (others.load or others.tokens)
    return Shortcuts(
        passthrough=passthrough,
        exact_tokens=door is not None and everyone.tokens,
        load_blind=load_blind,
        observes=observes,
        all_open=facts.all_open,
        apart=apart,
        by_count=by_count,
        engine_pacing=_pacing(facts, load_blind or counts_only, extension),
    )


def _by_count(
    facts: Facts, passthrough: bool, load_blind: bool, observes: bool, tokens: bool
) -> CountKey | None:
    """The count arrivals are placed by (module docstring, ``by_count``). Queue counts
    are kept from the engines' events, which a load-blind run does not report."""
    key = facts.door_counts_by
    if key is None or not passthrough or not facts.all_open or observes or tokens:
        return None
    if key == "requests" and load_blind:
        return None
    return key


def _pacing(facts: Facts, blind: bool, extension: ExtensionNeeds | None) -> Pacing:
    """How engines cut their work into events (module docstring, ``engine_pacing``);
    ``blind``: nothing but counts is read of the engines between their events."""
    if facts.num_engines < 2:
        return "free"  # one engine: nobody reads its load, and no per-iteration sums
    feeds = extension is not None and extension.feeds_engines
    if blind and not feeds:
        return "summed"
    return "exact" if facts.has_front_door else "free"
