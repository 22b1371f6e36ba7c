"""Prefill/decode disaggregation in the simulator: roles, the KV link, and its event loop.

A config whose instances all have the default role (``both``) never reaches this module:
its runs take :mod:`sincere.sim.runner`'s loop unchanged. With prefill and decode
instances (docs/disaggregation.md):

* the :class:`~sincere.policy.pd.PDFrontDoor` decides per request whether to
  disaggregate and picks a prefill and a decode instance; a request not disaggregated is
  served whole by the cluster's front door, on ``both`` instances of its model, else on
  its decode instances (which then prefill it too, as llm-d's decode pods do);
* a disaggregated request is prefilled on its prefill instance, an ordinary continuous
  engine whose output cap is one token: prefix caching applies there, and its first token
  is computed at the end of the prefill (``prefill_done_at``);
* its prompt's KV (``prompt_tokens x`` the model's KV bytes per token at the prefill
  instance's KV precision; the first token's KV is computed by its first decode step)
  crosses the :class:`~sincere.perf.kv_link.KvLink` between the two instances, one
  per (prefill, decode) pair (the link model the live path's emulated decode engines
  use too), shared by its transfers in flight (processor sharing: ``n`` transfers each
  move at ``bandwidth / n``); a transfer's last byte lands ``latency_s`` after it
  leaves, so one alone takes ``latency_s + bytes / bandwidth``;
* routers learn from both phases: the prefill router is told the prefill's outcome
  (its first token) and the decode router the whole request's;
* the decode instance takes the KV
  (:meth:`~sincere.engine.continuous.ContinuousEngine.add_prefilled`) and starts
  decoding at an iteration boundary once blocks for it are free, in arrival
  order (backpressure: KV waiting for room holds nothing). That is when a streaming
  client gets its first token (the decode side emits it, as the live emulator and
  vLLM's disaggregated serving do), so TTFT (``first_token_at``) is taken then: the
  prefill, the KV transfer and the wait for decode room; the end of the prefill is
  reported beside it (``prefill_done_at``, the summary's ``disaggregation.prefill_ttft_s``).

Records: every column keeps its meaning (``instance`` is where the request ended: its
decode instance); :class:`PDRecords` adds, for disaggregated runs only, where each phase
ran, when the KV was ready and how long the transfer took (queueing on the link
included), and when decoding started.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from sincere.catalog import get_accelerator
from sincere.core.errors import ConfigError
from sincere.core.records import arrow_column, arrow_strings
from sincere.core.request import Request
from sincere.core.types import Seconds
from sincere.engine.continuous import ContinuousEngine
from sincere.engine.summary import describe
from sincere.perf.kv_link import NVLINK_DEFAULT_LATENCY_S as NVLINK_DEFAULT_LATENCY_S
from sincere.perf.kv_link import RDMA_DEFAULT_GBPS as RDMA_DEFAULT_GBPS
from sincere.perf.kv_link import RDMA_DEFAULT_LATENCY_S as RDMA_DEFAULT_LATENCY_S
from sincere.perf.kv_link import KvLink as KvLink
from sincere.perf.kv_link import link_figures as link_figures
from sincere.policy.front_door import Hold, Reject
from sincere.policy.pd import PHASE_ROLES, ROLES, Local, PDFrontDoor, PDRoute, missing_phase
from sincere.policy.router_base import Outcome
from sincere.sim.cluster import Cluster
from sincere.sim.config import InstanceConfig, SimulationConfig
from sincere.sim.events import EventQueue
from sincere.sim.runner import ARRIVAL, Progress, RunLog

NO_INSTANCE = -1


def role_of(inst: InstanceConfig) -> str:
    """An instance group's role (``both`` when not set)."""
    return inst.role or "both"


def is_disaggregated(config: SimulationConfig) -> bool:
    """Whether some instance has a prefill or decode role."""
    return any(role_of(inst) != "both" for inst in config.instances)


def check_roles(config: SimulationConfig) -> None:
    """Raise :class:`ConfigError` unless every model with a prefill or decode instance
    has both kinds, and ``disaggregation`` is only set when some instance has a role."""
    if not is_disaggregated(config):
        if config.disaggregation is not None:
            raise ConfigError(
                "disaggregation is set but no instance has a prefill or decode role",
                where="instances[].role", value="both", allowed=ROLES,
            )  # fmt: skip
        return
    served: dict[str, set[str]] = {}
    for inst in config.instances:
        for model in inst.model_names:
            served.setdefault(model, set()).add(role_of(inst))
    for model, roles in served.items():
        missing = missing_phase(roles)
        if missing is not None:
            raise ConfigError(
                f"model {model!r} has {(roles & PHASE_ROLES).pop()} instances but no {missing} "
                "instance: a disaggregated model needs at least one of each",
                where="instances[].role", value=sorted(roles), allowed=ROLES,
            )  # fmt: skip
    _check_nvlink_pairs(config)


def _check_nvlink_pairs(config: SimulationConfig) -> None:
    """Raise when an NVLink would join a model's prefill and decode instances on different
    accelerators: NVLink joins the GPUs of one node, and a node has one kind of GPU."""
    link = config.disaggregation.kv_link if config.disaggregation is not None else None
    if link is not None and link.kind != "nvlink":
        return
    kinds: dict[str, set[str]] = {}
    for inst in config.instances:
        if role_of(inst) in PHASE_ROLES:
            for model in inst.model_names:
                kinds.setdefault(model, set()).add(_accelerator_name(inst.accelerator))
    for model, names in kinds.items():
        if len(names) > 1:
            raise ConfigError(
                f"model {model!r} has prefill and decode instances on different accelerators "
                "joined by NVLink, which links the GPUs of one node",
                where="disaggregation.kv_link.kind", value="nvlink",
                allowed="rdma (between nodes; bandwidth_gbps and latency_s may be given), or "
                f"one accelerator for both pools (now {sorted(names)})",
            )  # fmt: skip


def _accelerator_name(name: str) -> str:
    """The catalog's name for ``name`` (an alias or another case), else ``name`` itself."""
    try:
        return get_accelerator(name).name
    except ConfigError:  # reported where the instance is built
        return name


@dataclass(eq=False)
class PDRecords:
    """Per-request outcomes of the two phases (disaggregated runs only)."""

    prefill_instance: npt.NDArray[np.int64]  # -1: not disaggregated
    decode_instance: npt.NDArray[np.int64]  # -1: not disaggregated (or decode not needed)
    prefill_done_at: npt.NDArray[np.float64]  # first token, end of the prefill
    kv_ready_at: npt.NDArray[np.float64]  # the KV arrived at the decode instance
    decode_started_at: npt.NDArray[np.float64]  # joined the decode batch
    kv_bytes: npt.NDArray[np.float64]  # bytes transferred

    @classmethod
    def empty(cls, n: int) -> PDRecords:
        """Records of ``n`` requests none of which has been disaggregated."""
        nan = np.full(n, np.nan)
        return cls(
            np.full(n, NO_INSTANCE, dtype=np.int64), np.full(n, NO_INSTANCE, dtype=np.int64),
            nan.copy(), nan.copy(), nan.copy(), np.zeros(n),
        )  # fmt: skip

    def columns(self, instances: list[str]) -> dict[str, pa.Array]:
        """The extra ``requests.parquet`` columns (null where not disaggregated)."""
        names = [*instances, ""]
        pre, dec = self.prefill_instance, self.decode_instance
        ready, started = self.kv_ready_at, self.decode_started_at
        return {
            "prefill_instance": _names(names, pre),
            "decode_instance": _names(names, dec),
            "prefill_done_at": arrow_column(self.prefill_done_at, np.isnan(self.prefill_done_at)),
            "kv_transfer_s": arrow_column(ready - self.prefill_done_at, np.isnan(ready)),
            "kv_ready_at": arrow_column(ready, np.isnan(ready)),
            "decode_started_at": arrow_column(started, np.isnan(started)),
            "kv_bytes": arrow_column(self.kv_bytes),
        }


def _names(names: list[str], index: npt.NDArray[np.int64]) -> pa.Array:
    """``names[index]``, null where ``index`` is negative (``names`` ends with a blank)."""
    return arrow_strings(names, np.where(index < 0, len(names) - 1, index), index < 0)


@dataclass(eq=False)
class PDPlan:
    """What a disaggregated cluster adds: roles, candidates per phase, KV sizes, links."""

    door: PDFrontDoor
    roles: list[str]  # per engine
    prefill_of: list[list[int]]  # per model: its prefill engines
    decode_of: list[list[int]]  # per model: its decode engines
    kv_bytes_per_token: list[float]  # per engine (its model's KV at its KV precision)
    link_figures: list[tuple[float, float]]  # per engine as a sender: (GB/s, latency s)
    records: PDRecords
    links: dict[tuple[int, int], KvLink] = field(default_factory=dict)
    all_links: list[KvLink] = field(default_factory=list)  # by index, in creation order

    def link(self, p: int, d: int) -> KvLink:
        """The link from prefill engine ``p`` to decode engine ``d``."""
        found = self.links.get((p, d))
        if found is None:
            bandwidth, latency = self.link_figures[p]
            found = self.links[(p, d)] = KvLink(bandwidth, latency, len(self.all_links))
            self.all_links.append(found)
        return found

    def summary(self, arrival_at: npt.NDArray[np.float64]) -> dict[str, object]:
        """Counts, link totals and the time to the end of the prefill (``prefill_ttft_s``;
        the summary's ``ttft_s`` is the client's, at the decode side) for ``summary.json``."""
        rec = self.records
        done = ~np.isnan(rec.kv_ready_at)
        wait = rec.kv_ready_at - rec.prefill_done_at
        split = rec.prefill_instance >= 0
        return {
            "num_disaggregated": int(split.sum()),
            "prefill_ttft_s": describe((rec.prefill_done_at - arrival_at)[split]),
            "num_transfers": int(done.sum()),
            "kv_bytes": float(rec.kv_bytes.sum()),
            "kv_transfer_s_mean": float(wait[done].mean()) if done.any() else None,
            "kv_transfer_s_max": float(wait[done].max()) if done.any() else None,
            "roles": dict(Counter(self.roles)),
        }


KV_READY = 0  # priority of a KV arrival or a link's next end: before engine wake-ups


class PDLoop:
    """The event loop of a disaggregated cluster: arrivals, engine wake-ups, KV arrivals.

    Payloads: :data:`~sincere.sim.runner.ARRIVAL`, an engine index, ``-2 - i`` for
    request ``i``'s KV landing at its decode instance, or ``-2 - n - k`` (``n``
    requests) for link ``k``'s next transfer sending its last byte.
    """

    def __init__(self, cluster: Cluster, plan: PDPlan, progress: Progress | None) -> None:
        self.cluster = cluster
        self.plan = plan
        self.progress = progress
        self.arrivals = cluster.requests.arrival_at.tolist()
        self.queue: EventQueue[int] = EventQueue()
        self.wake: list[float | None] = [None] * len(cluster.engines)
        self.in_system = 0
        self.area = 0.0
        self.last_at = 0.0
        self.num_events = 0
        req = cluster.requests
        # tokens each request will generate (its cap applied; re-read after routing)
        self._prompt = req.prompt_tokens
        self._pending: dict[int, int] = {}  # prefilling request -> its decode engine
        # disaggregated requests whose outcomes a router learns from, with what it saw
        self._learns = plan.door.learns_from_outcomes
        self._seen: dict[int, Request] = {}
        # the per-phase routers read the same views as the cluster's front door: keep
        # the loads and token counts in them when either phase's router reads them
        if plan.door.reads_engine_load:
            cluster.load_blind = False
        if plan.door.reads_engine_tokens:
            cluster.exact_tokens = True

    def run(self) -> RunLog:
        n = len(self.arrivals)
        if n:
            self.queue.push(self.arrivals[0], 0, ARRIVAL)
        k = 0
        while self.queue or self._drain():
            at, payload = self.queue.pop()
            if payload >= 0 and self.wake[payload] != at:
                continue  # stale wake-up
            self.area += self.in_system * (at - self.last_at)
            self.last_at = at
            self.num_events += 1
            if payload == ARRIVAL:
                self._arrive(k, at)
                k += 1
                if k < n:
                    self.queue.push(self.arrivals[k], 0, ARRIVAL)
                if self.progress is not None and k % 10_000 == 0:
                    self.progress(k, n)
            elif payload >= 0:
                self._advance(payload, at)
            elif payload >= -1 - n:
                self._kv_ready(-2 - payload, at)
            else:
                self._link_end(-2 - n - payload, at)
        records = self.cluster.records
        left = records.unfinished()
        for i in left.tolist():
            records.reject(int(i), "unfinished")
        return RunLog(self.last_at, self.area, self.num_events, len(left))

    def _arrive(self, i: int, at: Seconds) -> None:
        self.in_system += 1
        cluster, plan = self.cluster, self.plan
        model = int(cluster.requests.model[i])
        request = cluster.requests.request(i)
        decision = self._pd_decision(i, model, request, at)
        if isinstance(decision, Reject):
            cluster.records.reject(i, decision.code)
            self.in_system -= 1
            return
        assert not isinstance(decision, Hold), "simulated instances have no in-flight cap"
        if decision is None:
            e = cluster.route(i, at)
            if e is None:
                self.in_system -= 1
                cluster.finished(i)
                return
            self._add(e, i, at)
            return
        if isinstance(decision, Local):  # whole on the decode instance the decider read
            if decision.route.max_tokens is not None:
                cluster.max_tokens[i] = decision.route.max_tokens
            self._add(cluster._engine_of[decision.route.instance], i, at)
            return
        p = cluster._engine_of[decision.prefill.instance]
        d = cluster._engine_of[decision.decode.instance]
        if decision.decode.max_tokens is not None:
            cluster.max_tokens[i] = decision.decode.max_tokens
        plan.records.prefill_instance[i] = p
        plan.records.decode_instance[i] = d
        self._pending[i] = d
        if self._learns:
            self._seen[i] = request
        cluster.outstanding[d] += 1  # routed there, not finished: the decode router sees it
        cluster.touched(d)
        self._add(p, i, at)

    def _pd_decision(
        self, i: int, model: int, request: Request, at: Seconds
    ) -> PDRoute | Local | Reject | Hold | None:
        plan, cluster = self.plan, self.cluster
        prefill, decode = plan.prefill_of[model], plan.decode_of[model]
        if not prefill or not decode:
            return None
        return plan.door.decide(
            request, cluster._views_at(prefill, at), cluster._views_at(decode, at), at
        )

    def _add(self, e: int, i: int, at: Seconds) -> None:
        self.cluster.outstanding[e] += 1
        self.cluster.engines[e].add(i, at)
        self.cluster.touched(e)
        self._reschedule(e)

    def _advance(self, e: int, at: Seconds) -> None:
        cluster = self.cluster
        self.wake[e] = None
        engine = cluster.engines[e]
        done = engine.advance(at)
        cluster.touched(e)
        if isinstance(engine, ContinuousEngine) and engine.kv_admitted:
            started = self.plan.records.decode_started_at
            first = cluster.records.first_token_at
            for i, when in engine.kv_admitted:
                started[i] = first[i] = when  # the client's first token: decode side
            engine.kv_admitted.clear()
        for i in done:
            cluster.outstanding[e] -= 1
            d = self._pending.pop(i, None)
            if d is not None:
                self._observe(i, e, at, prefill=True)
                if self._prefilled(i, d, at):
                    continue
                self._seen.pop(i, None)  # done at its prefill: no decode outcome
            elif i in self._seen:
                self._observe(i, e, at, prefill=False)
            self.in_system -= 1
            cluster.finished(i)
        self._reschedule(e)

    def _prefilled(self, i: int, d: int, at: Seconds) -> bool:
        """Prefill of ``i`` done: send its KV to decode engine ``d``; whether it went
        (not when the prefill was rejected or its one token was all it had to make)."""
        cluster, rec = self.cluster, self.plan.records
        records = cluster.records
        target = min(int(cluster.requests.output_tokens[i]), int(cluster.max_tokens[i]))
        if records.rejected[i] or target <= 1:
            cluster.outstanding[d] -= 1
            cluster.touched(d)
            rec.decode_instance[i] = NO_INSTANCE
            rec.prefill_done_at[i] = records.finished_at[i]
            return False
        rec.prefill_done_at[i] = at
        records.finished_at[i] = np.nan  # the request goes on at its decode instance
        p = int(records.instance[i])
        num_bytes = int(self._prompt[i]) * self.plan.kv_bytes_per_token[p]
        rec.kv_bytes[i] = num_bytes
        link = self.plan.link(p, d)
        end = link.start(i, at, num_bytes)
        assert end is not None, "a transfer was just started"
        self.queue.push(end, KV_READY, -2 - len(self.arrivals) - link.index)
        return True

    def _link_end(self, k: int, at: Seconds) -> None:
        """Link ``k``'s next transfer (or transfers) sent its last byte: it lands later."""
        link = self.plan.all_links[k]
        if link.next_at != at:
            return  # stale: a transfer started or ended since
        for i in link.finish(at):
            ready = at + link.latency_s
            self.plan.records.kv_ready_at[i] = ready
            self.queue.push(ready, KV_READY, -2 - i)
        if link.next_at is not None:
            self.queue.push(link.next_at, KV_READY, -2 - len(self.arrivals) - k)

    def _observe(self, i: int, e: int, at: Seconds, *, prefill: bool) -> None:
        """Tell the phase's router how request ``i`` went on engine ``e`` (its prefill:
        the first token; its decode: the whole request), unless it was rejected."""
        request = self._seen.get(i) if prefill else self._seen.pop(i, None)
        records = self.cluster.records
        if request is None or records.rejected[i]:
            self._seen.pop(i, None)
            return
        arrival = float(self.cluster.requests.arrival_at[i])
        instance = self.cluster.infos[e].id
        end, tokens = (at, 1) if prefill else (None, None)
        outcome = Outcome.of_record(
            records, i, request, instance, arrival, end_at=end, output_tokens=tokens
        )
        door = self.plan.door
        (door.observe_prefill if prefill else door.observe_decode)(outcome)

    def _kv_ready(self, i: int, at: Seconds) -> None:
        d = int(self.plan.records.decode_instance[i])
        engine = self.cluster.engines[d]
        assert isinstance(engine, ContinuousEngine), "decode instances are continuous engines"
        engine.add_prefilled(i, at, int(self._prompt[i]))
        self.cluster.touched(d)
        self._reschedule(d)

    def _drain(self) -> bool:
        """No events left: let engines holding requests back serve them."""
        if self.in_system <= 0:
            return False
        for e, engine in enumerate(self.cluster.engines):
            engine.drain(self.last_at)
            self.cluster.touched(e)
            self._reschedule(e)
        return len(self.queue) > 0

    def _reschedule(self, e: int) -> None:
        at = self.cluster.engines[e].next_event_at()
        if at is not None and at != self.wake[e]:
            self.wake[e] = at
            self.queue.push(at, 1, e)


def run_pd(cluster: Cluster, plan: PDPlan, progress: Progress | None = None) -> RunLog:
    """Run every request of a disaggregated ``cluster`` to completion (or rejection)."""
    log = PDLoop(cluster, plan, progress).run()
    if progress is not None:
        progress(len(cluster.requests), len(cluster.requests))
    return log
