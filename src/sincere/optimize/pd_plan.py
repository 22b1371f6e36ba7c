"""Sizing prefill/decode pools (xPyD) at least cost under TTFT and TPOT targets.

For a load (Poisson arrivals at ``rate_per_s``, prompts of ``P`` and outputs of ``O``
tokens on average) and mean TTFT / TPOT targets, every candidate (accelerator, TP) is
timed with the project's step-time model (:mod:`sincere.perf`, the roofline unless
another is given) and sized for each pool alone; a MILP
(:func:`~sincere.optimize.solvers.solve_pools`) then picks one candidate per pool at
least cost within the accelerators available (docs/disaggregation.md, "Planning"); over
an NVLink KV link both pools are on one accelerator (NVLink joins one node's GPUs), the
cheapest such pair over the accelerators (:func:`choose_linked`).

**Prefill pool** (a queue of prompts, each prefilled whole, one per iteration -- what a
prefill instance with a token budget of ``P`` does):

* service time ``t_p`` = the step model's iteration of one ``P``-token prompt;
* the wait of ``c`` instances taking ``λ`` requests/s in all, one M/D/c queue (the router
  sends each prompt to the least-loaded instance, which a shared queue approaches),
  Allen-Cunneen: ``W = C(c, a)·t_p / (c − a) · (1 + c_s²) / 2``, ``a = λ·t_p``, Erlang C
  ``C``; ``c_s²`` the squared coefficient of variation of ``t_p`` when the load gives a
  sample of prompt lengths (each timed by the step model), else 0; exactly
  Pollaczek-Khinchine at ``c = 1``;
* the KV hand-off: ``P·kv_bytes_per_token`` over the link (bandwidth and latency as the
  simulator takes them, :func:`sincere.sim.disagg.link_figures`): ``x = wire + latency``;
  the link queue, M/D/1 (M/G/1) with every transfer of the instance on one link (the
  worst case): ``W_l = ρ_l·wire / (2(1 − ρ_l))``, ``ρ_l = λ_i·wire``;
* the pool's TTFT ``= W + t_p`` (the end of the prefill); the pool is sized so that
  ``W + t_p + W_l + x ≤ TTFT target`` with the fewest instances: the KV has reached the
  decode side within the TTFT budget too. With a ``prefix_hit_rate`` ``h`` the prefill
  iteration computes ``(1 − h)·P`` tokens with ``h·P`` cached as context.

**Decode pool** (one instance: at most ``b`` sequences decoding together):

* ``s(n)`` = the step model's decode iteration of ``n`` sequences at the mean context
  ``P + O/2``; ``b`` = the largest batch with ``s(b) ≤ TPOT target``, at most what the
  KV cache holds at ``P + O`` tokens a sequence (:func:`~sincere.perf.memory.plan_memory`)
  and at most ``max_batch``;
* the mean number decoding ``L`` solves ``L = λ_i·(O − 1)·s(L)`` (Little's law; ``s``
  interpolated between whole batches);
* waiting for a slot: Erlang C with ``b`` servers at offered load ``L`` (M/M/b),
  ``W_a = C(b, L)·(O − 1)·s(L) / (b − L)``;
* the pool is sized on ``s(L) + (x + W_l + W_a) / (O − 1)`` within the TPOT target (which
  bounds the slot wait ``W_a`` too).

What a streaming client sees -- its first token from the decode side, as the simulator
takes TTFT -- is :attr:`PDPlan.client_ttft_ms` ``= F + W + t_p + W_l + x + W_a`` and
:attr:`PDPlan.client_tpot_ms` ``= s(L)``, ``F`` the engine's front end (its intake at the
mean prompt: vLLM's HTTP server under the default ``vllm-v1``, :func:`front_end_ms`).

A decode candidate's per-instance capacity is the largest ``λ_i`` meeting its target
(bisection); it needs ``ceil(λ / λ_i)`` instances. The decode side reads mean lengths
only; the prefill side reads the prompt sample when there is one (a heavy tail lengthens
the queue well beyond what the mean prompt's M/D/c says).

**Attention data parallelism.** A mixture-of-experts candidate with ``attention_dp: D``
(and ``ep > 1``) is an instance of ``D`` attention ranks of ``tp`` GPUs each whose experts
form one group, as wide-EP deployments run DeepSeek or Qwen3-MoE: every rank schedules its
own batch, so each rank is a server of its own in the queues above -- a prefill pool of
``c`` instances is M/G/``cD``, a decode instance ``D`` servers of ``b`` sequences each at
``λ_i / D``. A rank is timed as the step model prices one rank of the group
(:class:`~sincere.perf.base.Deployment`: its own attention and dense layers, the experts
and the all-to-all as if every rank carried the same batch -- the busy case, so a lone
prefill is priced as if the other ranks prefilled beside it), and sized as ranks, rounded
up to whole instances of ``D`` ranks. The simulator's check runs the ranks as independent
engines under even load (``engine.dp_ranks: symmetric``, :mod:`~sincere.optimize.pd_check`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np

from sincere.catalog import get_accelerator, get_model
from sincere.core.errors import ConfigError
from sincere.engine.defaults import default_preset
from sincere.optimize.queueing import FloatArray
from sincere.optimize.solvers import PoolChoice, solve_pools
from sincere.optimize.speculation import planned_memory, planned_step
from sincere.perf.base import Batch, Deployment, StepTimeModel
from sincere.perf.execution_settings import PRESETS
from sincere.perf.factory import StepModelConfig
from sincere.sim.config import KvLinkConfig
from sincere.sim.disagg import link_figures

if TYPE_CHECKING:
    from sincere.engine.speculation import SpeculationConfig

POOLS: tuple[str, ...] = ("prefill", "decode")
MAX_DECODE_BATCH = 256
"""Default ceiling on a decode instance's batch (vLLM's default ``max_num_seqs``)."""
_BISECTIONS = 60
MAX_EXTRA_DECODE = 64
"""Most decode instances, as a multiple of the count sized alone, added for a slower link."""


@dataclass(frozen=True, slots=True)
class PDLoad:
    """The offered load: Poisson arrivals and mean lengths."""

    rate_per_s: float
    prompt_tokens: int
    output_tokens: int
    prompt_sample: tuple[int, ...] = ()  # prompt lengths drawn from the load; () = fixed
    prefix_hit_rate: float = 0.0  # share of prompt tokens expected in a prefix cache

    def __post_init__(self) -> None:
        if not 0.0 <= self.prefix_hit_rate < 1.0:
            raise ConfigError(
                "load prefix_hit_rate must be a fraction of prompt tokens",
                value=self.prefix_hit_rate, allowed="0 <= prefix_hit_rate < 1",
            )  # fmt: skip
        if any(n < 1 for n in self.prompt_sample):
            raise ConfigError("prompt lengths must be >= 1", value=min(self.prompt_sample))
        if not (self.rate_per_s > 0 and math.isfinite(self.rate_per_s)):
            raise ConfigError("load rate_per_s must be > 0", value=self.rate_per_s, allowed="> 0")
        if self.prompt_tokens < 1:
            raise ConfigError(
                "load prompt_tokens must be >= 1", value=self.prompt_tokens, allowed=">= 1"
            )
        if self.output_tokens < 2:
            raise ConfigError(
                "load output_tokens must be >= 2 (a decode phase needs a second token)",
                value=self.output_tokens,
                allowed=">= 2",
            )


@dataclass(frozen=True, slots=True)
class PDTargets:
    """Mean TTFT and mean TPOT targets, ms."""

    ttft_ms: float
    tpot_ms: float

    def __post_init__(self) -> None:
        for name in ("ttft_ms", "tpot_ms"):
            value = getattr(self, name)
            if not (value > 0 and math.isfinite(value)):
                raise ConfigError(f"SLO {name} must be > 0", value=value, allowed="> 0")


@dataclass(frozen=True, slots=True)
class Candidate:
    """One way to run an instance: accelerator and tensor-parallel degree; for a
    mixture-of-experts model also the expert-parallel degree and the attention ranks
    sharing one expert group (``attention_dp``: the instance is ``attention_dp`` ranks of
    ``tp`` GPUs each, every rank with its own batch, as vLLM's ``--data-parallel-size``
    with ``--enable-expert-parallel`` and SGLang's ``--enable-dp-attention`` run it)."""

    accelerator: str
    tp: int = 1
    ep: int = 1
    attention_dp: int = 1

    @property
    def num_gpus(self) -> int:
        """GPUs of one instance: every rank's."""
        return self.tp * self.attention_dp

    @property
    def shape(self) -> str:
        """``tp 4`` or, with expert parallelism, ``tp 4 x dp 2, ep 8``."""
        if self.attention_dp == 1 and self.ep == 1:
            return f"tp {self.tp}"
        ranks = f" x dp {self.attention_dp}" if self.attention_dp > 1 else ""
        return f"tp {self.tp}{ranks}, ep {self.ep}"


@dataclass(frozen=True, slots=True)
class PhaseTimes:
    """What the step model and the memory plan say about one candidate, seconds."""

    candidate: Candidate
    num_gpus: int  # one instance's (every attention rank's)
    price_per_hour_usd: float  # one instance (all its GPUs)
    # the rest is one attention rank's (the whole instance without attention DP)
    prefill_s: float  # one whole prompt, mean over the prompt lengths
    prefill_s2: float  # its second moment, s^2 (the M/G/1 wait reads it)
    decode_step_s: tuple[float, ...]  # s(n), n = 1 .. len
    kv_batch: int  # sequences of P + O tokens the KV cache holds
    wire_s: float  # the prompt's KV on the link, mean
    wire_s2: float  # its second moment, s^2
    latency_s: float  # the link's per-transfer latency

    @property
    def ranks(self) -> int:
        """Attention ranks of one instance, each a server of its own in the queues."""
        return self.candidate.attention_dp


@dataclass(frozen=True, slots=True)
class PoolPrediction:
    """A pool's predicted figures at a per-server rate (an instance, or with attention DP
    one of its ranks)."""

    ttft_ms: float  # prefill: W + t_p; decode: not applicable (nan)
    tpot_ms: float  # decode: s(L) + (hand-off + slot wait) / (O - 1), sized on; prefill: nan
    handoff_ms: float  # the KV transfer (link queue included)
    utilization: float  # ρ (prefill) or L / b (decode)
    step_ms: float = math.nan  # decode: s(L), the gap between tokens once decoding
    slot_wait_ms: float = math.nan  # decode: a landed KV's wait for a slot (W_a)


@dataclass(frozen=True, slots=True)
class PoolSizing:
    """One candidate sized alone for one pool."""

    pool: str  # prefill | decode
    candidate: Candidate
    num_gpus: int  # per instance
    count: int  # instances
    # decode: max sequences per engine (per attention rank: each of an instance's ranks
    # holds this many); prefill: 1 (one prompt at a time)
    batch: int
    capacity_per_s: float  # requests/s one instance carries within the target
    cost_per_hour_usd: float  # all instances
    predicted: PoolPrediction  # at rate / (count x ranks) per attention rank


@dataclass(frozen=True, slots=True)
class PDPlan:
    """The chosen xPyD: a prefill pool and a decode pool, and every sized candidate."""

    load: PDLoad
    targets: PDTargets
    prefill: PoolSizing
    decode: PoolSizing
    sized: tuple[PoolSizing, ...]  # every feasible (pool, candidate)
    # the engines' front end a client sees beyond them (the intake at the mean prompt and
    # the output delay of the engine a deployment runs by default, :func:`front_end_ms`)
    front_end_ms: float = 0.0

    @property
    def cost_per_hour_usd(self) -> float:
        return self.prefill.cost_per_hour_usd + self.decode.cost_per_hour_usd

    @property
    def num_gpus(self) -> int:
        return sum(p.count * p.num_gpus for p in (self.prefill, self.decode))

    @property
    def ttft_ms(self) -> float:
        return self.prefill.predicted.ttft_ms

    @property
    def tpot_ms(self) -> float:
        return self.decode.predicted.tpot_ms

    @property
    def client_ttft_ms(self) -> float:
        """The first token a streaming client gets (from the decode side): the front end,
        prefill wait and time, KV hand-off, and the wait for a decode slot -- as the
        simulator takes TTFT."""
        decode = self.decode.predicted
        wait = self.prefill.predicted.handoff_ms + decode.slot_wait_ms
        return self.front_end_ms + self.ttft_ms + wait

    @property
    def client_tpot_ms(self) -> float:
        """TPOT after that first token: the decode step ``s(L)``."""
        return self.decode.predicted.step_ms

    @property
    def meets(self) -> bool:
        """Predicted TTFT plus hand-off and TPOT within the targets (the engines' side: the
        front end, ``front_end_ms``, is not sized and not counted against them)."""
        ready = self.ttft_ms + self.prefill.predicted.handoff_ms
        return ready <= self.targets.ttft_ms * (1 + 1e-9) and self.tpot_ms <= (
            self.targets.tpot_ms * (1 + 1e-9)
        )


def deployment(
    model: str, cand: Candidate, precision: str = "bf16", kv_precision: str = "fp16"
) -> Deployment:
    """The catalog deployment of ``cand``: one attention rank of it (unknown names raise,
    listing the known ones; a shape the model cannot take raises, saying why)."""
    return Deployment(
        get_model(model), get_accelerator(cand.accelerator), precision, kv_precision, cand.tp,
        1, cand.ep, cand.attention_dp,
    )  # fmt: skip


def phase_times(
    dep: Deployment,
    step: StepTimeModel,
    load: PDLoad,
    kv_link: KvLinkConfig,
    max_batch: int = MAX_DECODE_BATCH,
    speculation: SpeculationConfig | None = None,
) -> PhaseTimes | None:
    """Time one candidate; ``None`` when the model does not fit it with one request's KV
    (beside a drafter's weights and KV when ``speculation`` is set)."""
    p, o = load.prompt_tokens, load.output_tokens
    mem = planned_memory(
        dep, speculation, max_num_seqs=max_batch, max_num_batched_tokens=max(p, max_batch)
    )
    if not mem.fits or mem.kv_capacity_tokens < p + o:
        return None
    ctx = p + o // 2
    steps = tuple(
        step.iteration_s(Batch(num_decode_seqs=n, decode_ctx_tokens=n * ctx))
        for n in range(1, max_batch + 1)
    )
    bandwidth, latency = link_figures(kv_link, dep.accelerator.interconnect_gbps, dep.num_gpus)
    per_token = dep.model.kv_bytes_per_token(dep.kv_precision) / (bandwidth * 1e9)
    lengths, weights = np.unique(np.asarray(load.prompt_sample or (p,)), return_counts=True)
    share = weights / weights.sum()
    hit = load.prefix_hit_rate  # cached prompt tokens: context of the chunk, not computed
    prefill = np.array(
        [
            step.iteration_s(Batch.of(prefill=[(max(1, round(n * (1 - hit))), round(n * hit))]))
            for n in lengths
        ]
    )
    state = dep.model.linear_state_bytes_per_seq(dep.state_precision)
    wire = lengths * per_token + state / (bandwidth * 1e9)
    gpus = dep.num_gpus * dep.attention_dp
    return PhaseTimes(
        Candidate(dep.accelerator.name, dep.tp, dep.ep, dep.attention_dp),
        gpus,
        dep.accelerator.price_per_hour_usd * gpus,
        float(share @ prefill),
        float(share @ prefill**2),
        steps,
        mem.max_batch_at(p + o),
        float(share @ wire),
        float(share @ wire**2),
        latency,
    )


def _mg1_wait(rate: float, mean: float, second: float) -> float:
    """Mean wait of an M/G/1 queue, ``λ·E[S²] / (2(1 − ρ))`` (Pollaczek-Khinchine; M/D/1
    when ``E[S²] = E[S]²``); ``inf`` at or past saturation."""
    rho = rate * mean
    return math.inf if rho >= 1.0 else rate * second / (2.0 * (1.0 - rho))


def _mgc_wait(servers: int, rate: float, mean: float, second: float) -> float:
    """Mean wait of an M/G/c queue, Allen-Cunneen: the M/M/c wait ``C(c, a)·E[S] / (c − a)``
    (``a = λ·E[S]``) times ``(1 + c_s²) / 2``; exactly Pollaczek-Khinchine at ``c = 1``;
    ``inf`` at or past saturation."""
    offered = rate * mean
    if offered >= servers:
        return math.inf
    cs2 = max(second / mean**2 - 1.0, 0.0) if mean > 0 else 0.0
    return erlang_c(servers, offered) * mean / (servers - offered) * (1.0 + cs2) / 2.0


def predict_prefill(t: PhaseTimes, rate_per_s: float, servers: int = 1) -> PoolPrediction:
    """TTFT and hand-off of a pool of ``servers`` prefill instances taking ``rate_per_s``
    in all (module docstring): one queue in front of the pool, as the router's sending
    each prompt to the least-loaded instance approaches."""
    wait = _mgc_wait(servers, rate_per_s, t.prefill_s, t.prefill_s2)
    handoff = handoff_s(t, rate_per_s / servers)
    return PoolPrediction(
        (wait + t.prefill_s) * 1e3, math.nan, handoff * 1e3, rate_per_s * t.prefill_s / servers
    )


def prefill_count(t: PhaseTimes, rate_per_s: float, most: int, targets: PDTargets) -> int:
    """Fewest prefill instances (at most ``most``, which meets the target on its own)
    whose pool keeps TTFT plus hand-off within target at ``rate_per_s``."""
    for n in range(max(1, math.ceil(rate_per_s * t.prefill_s)), most):
        pred = predict_prefill(t, rate_per_s, n)
        if pred.ttft_ms + pred.handoff_ms <= targets.ttft_ms:
            return n
    return most


def decode_batch(t: PhaseTimes, targets: PDTargets) -> int:
    """Largest batch whose decode step meets the TPOT target and whose KV fits (0: none)."""
    steps = np.asarray(t.decode_step_s)
    ok = np.flatnonzero(steps * 1e3 <= targets.tpot_ms)
    by_tpot = int(ok[-1]) + 1 if len(ok) else 0
    return min(by_tpot, t.kv_batch, len(steps))


def erlang_c(servers: int, offered: float) -> float:
    """Probability an arrival waits in M/M/``servers`` at ``offered`` Erlangs (1 if full)."""
    if offered >= servers:
        return 1.0
    b = 1.0
    for k in range(1, servers + 1):
        b = offered * b / (k + offered * b)
    return servers * b / (servers - offered * (1.0 - b))


def _step_at(steps: FloatArray, n: float) -> float:
    """``s(n)`` interpolated between whole batches (``s(1)`` below one)."""
    return float(np.interp(n, np.arange(1, len(steps) + 1), steps))


def busy_sequences(steps: FloatArray, batch: int, rate_per_s: float, decodes: int) -> float:
    """``L`` with ``L = λ·decodes·s(L)`` on ``[0, batch]``; ``inf`` when ``batch`` cannot
    carry ``rate_per_s``."""
    if batch - rate_per_s * decodes * _step_at(steps, batch) <= 0:
        return math.inf
    lo, hi = 0.0, float(batch)
    for _ in range(_BISECTIONS):
        mid = 0.5 * (lo + hi)
        if mid - rate_per_s * decodes * _step_at(steps, mid) < 0:
            lo = mid
        else:
            hi = mid
    return hi


def handoff_s(sender: PhaseTimes, rate_per_s: float) -> float:
    """KV transfer time from ``sender`` sending ``rate_per_s`` transfers a second, link
    queue included (all on one link: the worst case)."""
    queue = _mg1_wait(rate_per_s, sender.wire_s, sender.wire_s2)
    return queue + sender.wire_s + sender.latency_s


def predict_decode(
    t: PhaseTimes, batch: int, rate_per_s: float, load: PDLoad, handoff: float
) -> PoolPrediction:
    """TPOT of one decode instance of max ``batch`` at ``rate_per_s`` whose KV arrives
    ``handoff`` seconds after the first token (module docstring)."""
    steps = np.asarray(t.decode_step_s[:batch])
    decodes = load.output_tokens - 1
    busy = busy_sequences(steps, batch, rate_per_s, decodes)
    if math.isinf(busy):
        return PoolPrediction(math.nan, math.inf, handoff * 1e3, math.inf)
    s_l = _step_at(steps, busy)
    admit = erlang_c(batch, busy) * decodes * s_l / (batch - busy)
    tpot = s_l + (handoff + admit) / decodes
    return PoolPrediction(math.nan, tpot * 1e3, handoff * 1e3, busy / batch, s_l * 1e3, admit * 1e3)


def _max_rate(ok: Callable[[float], bool], ceiling: float) -> float:
    """Largest rate in ``(0, ceiling)`` where ``ok`` holds (``ok`` monotone); 0 if none."""
    lo, hi = 0.0, ceiling
    for _ in range(_BISECTIONS):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if ok(mid) else (lo, mid)
    return lo if lo > 0 and ok(lo) else 0.0


def prefill_capacity(t: PhaseTimes, targets: PDTargets) -> float:
    """Requests/s one prefill instance carries with TTFT plus hand-off within target."""

    def ok(rate: float) -> bool:
        pred = predict_prefill(t, rate)
        return pred.ttft_ms + pred.handoff_ms <= targets.ttft_ms

    return _max_rate(ok, 1.0 / max(t.prefill_s, t.wire_s))


def decode_capacity(t: PhaseTimes, batch: int, load: PDLoad, targets: PDTargets) -> float:
    """Requests/s one decode instance of max ``batch`` carries within the TPOT target,
    its KV sent from an instance like itself at the same rate (the chosen prefill pool's
    link is applied once both pools are chosen)."""

    def ok(rate: float) -> bool:
        pred = predict_decode(t, batch, rate, load, handoff_s(t, rate))
        return pred.tpot_ms <= targets.tpot_ms

    ceiling = batch / ((load.output_tokens - 1) * t.decode_step_s[0])
    return _max_rate(ok, ceiling)


def size_pools(times: Sequence[PhaseTimes], load: PDLoad, targets: PDTargets) -> list[PoolSizing]:
    """Every feasible (pool, candidate), each sized alone for the whole load. The queues'
    servers are attention ranks (an instance without attention DP is one): the ranks a
    pool needs are rounded up to whole instances, which only adds servers."""
    out: list[PoolSizing] = []
    rate = load.rate_per_s
    for t in times:
        ranks = t.ranks
        cap = prefill_capacity(t, targets)
        if cap > 0:
            most = math.ceil(rate / cap - 1e-9)  # as separate queues: enough
            n = math.ceil(prefill_count(t, rate, most, targets) / ranks)
            pred = predict_prefill(t, rate, n * ranks)
            out.append(_sized("prefill", t, n, 1, cap * ranks, pred))
        batch = decode_batch(t, targets)
        cap = decode_capacity(t, batch, load, targets) if batch > 0 else 0.0
        if cap > 0:
            n = math.ceil(math.ceil(rate / cap - 1e-9) / ranks)
            per_rank = rate / (n * ranks)
            pred = predict_decode(t, batch, per_rank, load, handoff_s(t, per_rank))
            out.append(_sized("decode", t, n, batch, cap * ranks, pred))
    return out


def _sized(
    pool: str, t: PhaseTimes, n: int, batch: int, cap: float, pred: PoolPrediction
) -> PoolSizing:
    return PoolSizing(pool, t.candidate, t.num_gpus, n, batch, cap, n * t.price_per_hour_usd, pred)


def choose(
    sized: Sequence[PoolSizing], capacity: dict[str, int] | None = None
) -> tuple[PoolSizing, PoolSizing]:
    """The cheapest (prefill, decode) pair within ``capacity`` (GPUs per accelerator;
    ``None`` or a missing accelerator: unlimited), by the MILP of
    :func:`~sincere.optimize.solvers.solve_pools`."""
    types = sorted({s.candidate.accelerator for s in sized} | set(capacity or {}))
    cap = np.array([float((capacity or {}).get(a, math.inf)) for a in types])
    choice = PoolChoice(
        np.array([POOLS.index(s.pool) for s in sized], dtype=np.int64),
        np.array([s.count for s in sized], dtype=np.int64),
        np.array([s.cost_per_hour_usd / s.count for s in sized]),
        np.array([s.num_gpus for s in sized], dtype=np.int64),
        np.array([types.index(s.candidate.accelerator) for s in sized], dtype=np.int64),
        cap,
        len(POOLS),
    )
    try:
        picked = solve_pools(choice)
    except ConfigError as exc:
        if "no candidate" in str(exc):
            raise ConfigError(
                "no candidate meets the SLOs in both pools",
                value=sorted({s.pool for s in sized}),
                allowed="a looser TTFT / TPOT target, a faster accelerator or more TP",
            ) from None
        raise
    return sized[int(picked[0])], sized[int(picked[1])]


def choose_linked(
    sized: Sequence[PoolSizing], capacity: dict[str, int] | None, link: KvLinkConfig
) -> tuple[PoolSizing, PoolSizing]:
    """:func:`choose`, with both pools on one accelerator when ``link`` is NVLink (it joins
    the GPUs of one node, and a node has one kind): the cheapest such pair over the
    accelerators; RDMA pairs any two."""
    if link.kind != "nvlink":
        return choose(sized, capacity)
    best: tuple[PoolSizing, PoolSizing] | None = None
    for acc in sorted({s.candidate.accelerator for s in sized}):
        try:
            pair = choose([s for s in sized if s.candidate.accelerator == acc], capacity)
        except ConfigError:  # this accelerator cannot hold both pools
            continue
        if best is None or _cost(pair) < _cost(best):
            best = pair
    if best is None:
        raise ConfigError(
            "no accelerator meets the SLOs in both pools on its own, and an NVLink KV link "
            "joins only the GPUs of one node",
            where="disaggregation.kv_link.kind",
            value="nvlink",
            allowed="rdma (pools on different accelerators), a looser TTFT / TPOT target, "
            "or a faster accelerator",
        )
    return best


def _cost(pair: tuple[PoolSizing, PoolSizing]) -> float:
    return pair[0].cost_per_hour_usd + pair[1].cost_per_hour_usd


def plan_pd(
    model: str,
    candidates: Sequence[Candidate],
    load: PDLoad,
    targets: PDTargets,
    *,
    kv_link: KvLinkConfig | None = None,
    step_model: StepModelConfig | None = None,
    speculation: SpeculationConfig | None = None,
    precision: str = "bf16",
    kv_precision: str = "fp16",
    max_batch: int = MAX_DECODE_BATCH,
    capacity: dict[str, int] | None = None,
) -> PDPlan:
    """Size xPyD for ``load`` under ``targets`` over ``candidates`` (module docstring);
    with ``speculation`` the decode side's steps are times per output token
    (:mod:`sincere.optimize.speculation`)."""
    if not candidates:
        raise ConfigError("no candidates to plan with", value=[], allowed="one or more")
    if max_batch < 1:
        raise ConfigError("max_batch must be >= 1", value=max_batch, allowed=">= 1")
    link = kv_link or KvLinkConfig()
    build = step_model or StepModelConfig()
    times = []
    for cand in candidates:
        dep = deployment(model, cand, precision, kv_precision)
        step = planned_step(build, dep, speculation)
        t = phase_times(dep, step, load, link, max_batch, speculation)
        if t is not None:
            times.append(t)
    sized = size_pools(times, load, targets)
    prefill, decode = choose_linked(sized, capacity, link)
    decode = _with_sender(decode, _times_of(times, decode.candidate), prefill, times, load, targets)
    _check_capacity((prefill, decode), capacity)
    front = front_end_ms(build, prefill.candidate.accelerator, load.prompt_tokens)
    return PDPlan(load, targets, prefill, decode, tuple(sized), front)


def front_end_ms(step_model: StepModelConfig, accelerator: str, prompt_tokens: int) -> float:
    """What the front end of the engine a deployment runs by default (``vllm-v1`` over the
    roofline: vLLM's HTTP server; none under ``eager``,
    :func:`~sincere.engine.defaults.default_preset`) adds to a client's TTFT at a prompt of
    ``prompt_tokens``: its intake and output delay. Its API processes' queue is left out
    (the pools' own queues are the plan's)."""
    preset = default_preset(step_model.kind, step_model.cc, get_accelerator(accelerator))
    front = PRESETS[preset].frontend
    return 1e3 * (front.intake_s(prompt_tokens) + front.output_s)


def _check_capacity(pools: Sequence[PoolSizing], capacity: dict[str, int] | None) -> None:
    """Raise when the pools (the decode pool possibly grown for its link) need more GPUs of
    an accelerator than ``capacity`` has."""
    used: dict[str, int] = {}
    for pool in pools:
        acc = pool.candidate.accelerator
        used[acc] = used.get(acc, 0) + pool.count * pool.num_gpus
    for acc, n in used.items():
        have = (capacity or {}).get(acc)
        if have is not None and n > have:
            raise ConfigError(
                f"the pools need {n} {acc} GPUs (the decode pool grown for the prefill "
                "pool's link)",
                where=f"capacity.{acc}",
                value=have,
                allowed=f">= {n}",
            )


def _with_sender(
    decode: PoolSizing,
    t: PhaseTimes,
    prefill: PoolSizing,
    times: Sequence[PhaseTimes],
    load: PDLoad,
    targets: PDTargets,
) -> PoolSizing:
    """``decode`` predicted with the chosen prefill pool's link, one more instance at a
    time while its TPOT misses the target (a slower link than its own)."""
    sender = _times_of(times, prefill.candidate)
    handoff = handoff_s(sender, load.rate_per_s / (prefill.count * sender.ranks))
    count = decode.count
    while True:
        pred = predict_decode(t, decode.batch, load.rate_per_s / (count * t.ranks), load, handoff)
        if pred.tpot_ms <= targets.tpot_ms:
            break
        if count >= MAX_EXTRA_DECODE * decode.count:
            raise ConfigError(
                "the decode pool cannot meet the TPOT target behind the chosen prefill "
                "pool's KV link",
                value=f"{pred.tpot_ms:.2f} ms > {targets.tpot_ms:g} ms",
                allowed="a faster kv_link, a looser tpot_ms or longer outputs",
            )
        count += 1
    cost = count * t.price_per_hour_usd
    return replace(decode, count=count, cost_per_hour_usd=cost, predicted=pred)


def _times_of(times: Sequence[PhaseTimes], cand: Candidate) -> PhaseTimes:
    return next(t for t in times if t.candidate == cand)
