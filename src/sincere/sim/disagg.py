"""Prefill/decode disaggregation in the simulator: roles, the KV link, and its extension.

A config whose instances all have the default role (``both``) never reaches this module:
its runs take :mod:`sincere.sim.runner`'s loop unchanged. With prefill and decode
instances, :class:`PDExtension` plugs into that same loop (docs/disaggregation.md):

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
from sincere.engine.summary import describe
from sincere.perf.kv_link import NVLINK_DEFAULT_LATENCY_S as NVLINK_DEFAULT_LATENCY_S
from sincere.perf.kv_link import RDMA_DEFAULT_GBPS as RDMA_DEFAULT_GBPS
from sincere.perf.kv_link import RDMA_DEFAULT_LATENCY_S as RDMA_DEFAULT_LATENCY_S
from sincere.perf.kv_link import KvLink as KvLink
from sincere.perf.kv_link import link_figures as link_figures
from sincere.policy.front_door import Hold, Reject
from sincere.policy.pd import PHASE_ROLES, ROLES, Local, PDFrontDoor, PDRoute, missing_phase
from sincere.policy.reads import Reads
from sincere.policy.router_base import Outcome
from sincere.sim.cluster import Cluster
from sincere.sim.config import InstanceConfig, SimulationConfig
from sincere.sim.extension import Extension, Sim
from sincere.sim.plan import ExtensionNeeds

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
    state_bytes: list[float] = field(default_factory=list)  # per engine: a sequence's
    # recurrent state (linear-attention layers), sent with its KV; empty: none

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


KV_PRIORITY = 0  # a KV arrival or a link's next end: before engine wake-ups at one time


class PDExtension(Extension):
    """Disaggregation on the simulator's loop: per-phase routing at arrivals, the hand-off
    of a finished prefill to its KV link, and two event kinds of its own -- a link's next
    transfer sending its last byte (index: the link) and a request's KV landing at its
    decode instance (index: the request)."""

    def __init__(self, plan: PDPlan) -> None:
        self.plan = plan
        self._cluster: Cluster | None = None
        self._sim: Sim | None = None
        self._pending: dict[int, int] = {}  # prefilling request -> its decode engine
        self._learns = False  # whether a phase's router learns (set at attach)
        # disaggregated requests whose outcomes a router learns from, with what it saw
        self._seen: dict[int, Request] = {}
        self._kv_ready_kind = self._link_end_kind = 0  # set at attach

    @property
    def needs(self) -> ExtensionNeeds:
        """The per-phase routers read the same views as the cluster's front door (their
        load and token counts as they declare); the phases' outcomes are built here, not
        by the cluster. Arrivals are routed here, and KV lands in engines between events."""
        reads = self.plan.door.reads
        return ExtensionNeeds(
            reads=Reads(load=reads.load, tokens=reads.tokens, outcomes=False, oblivious=False),
            routes_arrivals=True,
            feeds_engines=True,
        )

    def attach(self, sim: Sim) -> None:
        """Declare the KV arrivals and link ends (before engine wake-ups at one time)."""
        self._sim = sim
        self._cluster = sim.cluster
        self._prompt = sim.cluster.requests.prompt_tokens
        self._learns = self.plan.door.learns_from_outcomes
        self._kv_ready_kind = sim.add_kind(KV_PRIORITY, self._kv_ready)
        self._link_end_kind = sim.add_kind(KV_PRIORITY, self._link_end)

    @property
    def cluster(self) -> Cluster:
        assert self._cluster is not None, "attached to a loop"
        return self._cluster

    @property
    def sim(self) -> Sim:
        assert self._sim is not None, "attached to a loop"
        return self._sim

    def arrive(self, i: int, at: Seconds) -> bool:
        """Route request ``i`` by phase; ``False`` when the cluster's front door should."""
        cluster, plan = self.cluster, self.plan
        request = cluster.requests.request(i)
        decision = self._pd_decision(int(cluster.requests.model[i]), request, at)
        if decision is None:
            return False
        if isinstance(decision, Reject):
            cluster.records.reject(i, decision.code)
            self.sim.turn_away(i, at)
            return True
        assert not isinstance(decision, Hold), "simulated instances have no in-flight cap"
        if isinstance(decision, Local):  # whole on the decode instance the decider read
            if decision.route.max_tokens is not None:
                cluster.max_tokens[i] = decision.route.max_tokens
            self.sim.place(cluster.engine_index(decision.route.instance), i, at)
            return True
        p = cluster.engine_index(decision.prefill.instance)
        d = cluster.engine_index(decision.decode.instance)
        if decision.decode.max_tokens is not None:
            cluster.max_tokens[i] = decision.decode.max_tokens
        plan.records.prefill_instance[i] = p
        plan.records.decode_instance[i] = d
        self._pending[i] = d
        if self._learns:
            self._seen[i] = request
        cluster.outstanding[d] += 1  # routed there, not finished: the decode router sees it
        cluster.touched(d)
        self.sim.place(p, i, at)
        return True

    def _pd_decision(
        self, model: int, request: Request, at: Seconds
    ) -> PDRoute | Local | Reject | Hold | None:
        plan, cluster = self.plan, self.cluster
        prefill, decode = plan.prefill_of[model], plan.decode_of[model]
        if not prefill or not decode:
            return None
        return plan.door.decide(
            request, cluster.views_at(prefill, at), cluster.views_at(decode, at), at
        )

    def advanced(self, e: int, at: Seconds, done: list[int]) -> list[int]:
        """Note decode starts; a finished prefill goes on to its KV link (kept in the
        system); the phases' routers learn. Returns the requests that left."""
        cluster = self.cluster
        engine = cluster.engines[e]
        cluster.touched(e)
        intake = engine.kv_intake
        if intake is not None and intake.kv_admitted:
            started = self.plan.records.decode_started_at
            first = cluster.records.first_token_at
            for i, when in intake.kv_admitted:
                started[i] = first[i] = when  # the client's first token: decode side
            intake.kv_admitted.clear()
        left: list[int] = []
        for i in done:
            d = self._pending.pop(i, None)
            if d is not None:
                self._observe(i, e, at, prefill=True)
                if self._prefilled(i, d, at):
                    cluster.outstanding[e] -= 1
                    continue
                self._seen.pop(i, None)  # done at its prefill: no decode outcome
            elif i in self._seen:
                self._observe(i, e, at, prefill=False)
            left.append(i)
        return left

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
        if self.plan.state_bytes:
            num_bytes += self.plan.state_bytes[p]
        rec.kv_bytes[i] = num_bytes
        link = self.plan.link(p, d)
        end = link.start(i, at, num_bytes)
        assert end is not None, "a transfer was just started"
        self.sim.schedule(end, self._link_end_kind, link.index)
        return True

    def _link_end(self, k: int, at: Seconds) -> None:
        """Link ``k``'s next transfer (or transfers) sent its last byte: it lands later."""
        link = self.plan.all_links[k]
        if link.next_at != at:
            return  # stale: a transfer started or ended since
        for i in link.finish(at):
            ready = at + link.latency_s
            self.plan.records.kv_ready_at[i] = ready
            self.sim.schedule(ready, self._kv_ready_kind, i)
        if link.next_at is not None:
            self.sim.schedule(link.next_at, self._link_end_kind, k)

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
        """Request ``i``'s KV landed at its decode instance, which takes it."""
        d = int(self.plan.records.decode_instance[i])
        intake = self.cluster.engines[d].kv_intake
        assert intake is not None, "decode instances take prefilled KV (checked at build)"
        intake.add_prefilled(i, at, int(self._prompt[i]))
        self.cluster.touched(d)
        self.sim.reschedule(d)
