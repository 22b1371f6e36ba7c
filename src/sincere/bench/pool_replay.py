"""A pool scenario simulated and replayed live on a compressed clock, and the two compared.

The replay runs the simulator's own pool controller
(:class:`~sincere.sim.actuation_rule.PoolRule`) in the gateway's control plane
(:class:`~sincere.serve.control.pool.LivePool`): one emulated engine per model and slot,
started, put to sleep and woken through the emulator's admin routes, the requests sent by
the load generator (``bench``) on 127.0.0.1 at their arrival times. A day cannot be
replayed on the wall clock, so the scenario is the simulated one with every time
multiplied by one factor (:mod:`sincere.sim.autoscale_time`, the engines' ``time_scale``):
the simulated run of that scaled scenario is the scale-1 one with every time scaled, and
the live replay is compared with it (:func:`compare`): the actuations of each kind, how
many match one of the same kind and model in the other run within one reading, the
slot-hours paid and the SLO attainment.

What is emulated and what is real: as :mod:`~sincere.serve.control.pool` says (no GPU,
provisioning and weight moves waited; the decisions, routes, requests held and served
are real). The live run's times carry what the simulated one has not: the event loop's
lateness (about a millisecond, sampled: ``loop_lag_s``) and the gateway's and the
client's own time per request, which weigh more the more the clock is compressed.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from sincere.bench.parity import run_controlled
from sincere.bench.results import BenchResult
from sincere.serve.app import CONTROLLER, compose
from sincere.serve.control.pool import LivePool
from sincere.serve.control.sim_scaling import live_actuation
from sincere.serve.gateway.config import GatewayConfig, parse_config
from sincere.serve.protocol import count_prompt_tokens
from sincere.sim.api import SimulationResult

MAX_NUM_REQUESTS = 512  # per emulated engine: above any slot's share of a burst


@dataclass
class LiveReplay:
    """What the live replay measured."""

    bench: BenchResult  # the requests' outcomes, as the client saw them
    events: list[dict[str, Any]]  # every actuation of the live pool (at_s, kind, model, slot)
    counts: dict[str, int]  # actuations by kind
    slot_hours: float  # slots paid, from time 0 to the simulated run's end
    loop_lag_s: np.ndarray[Any, np.dtype[np.float64]]  # the event loop's lateness, sampled


def gateway_config(sim: SimulationResult, max_instances: int) -> GatewayConfig:
    """A gateway as the simulated run: its router (and seed), admission, the pool's
    engines emulating the first instances entry's deployment (with its ``time_scale``),
    and a queue that never drops a held request -- the tiers are given by name only, for
    the gateway would refuse a request held past its deadline (504) that the simulated
    pool holds on (attainment is the client's count, against the requests' tiers)."""
    inst = sim.config.instances[0]
    emulator = {**inst.deployment_fields(), "models": None,
                "max_num_requests": MAX_NUM_REQUESTS}  # fmt: skip
    tiers: dict[str, dict[str, Any]] = {t.name: {} for t in sim.requests_in.tiers}
    return parse_config(
        {
            "port": 0,
            "router": {"name": sim.config.router.name, "seed": sim.config.seed},
            "admission": sim.config.admission.model_dump(),
            "tiers": tiers,
            "default_tier": sim.requests_in.tiers[0].name,
            "scrape": {"enabled": False},
            "queue": {"max_len": 1 << 20, "timeout_s": 3600.0, "shed_early": False},
            "planning": {"emulator": emulator},
            "controller": {"max_instances": max_instances},
        }
    )


def live_pool_section(actuation: dict[str, Any], models: list[str]) -> dict[str, Any]:
    """The simulated ``actuation`` section as ``controller.actuation``: its groups the
    pool's model names (every model starts on its instances entry's count, 1 here)."""
    raw = {k: v for k, v in actuation.items() if k not in ("groups", "initial")}
    return {**raw, "groups": models}


async def replay(
    sim: SimulationResult, actuation: dict[str, Any], end_s: float, time_limit_s: float
) -> LiveReplay:
    """Replay ``sim``'s requests live through a gateway whose pool (``actuation``, the
    simulated section) starts with the load generator; stop reading at ``end_s``. The
    event loop's lag is sampled until the simulated run's last finish (the load
    generator's summing-up afterwards holds the loop)."""
    models = list(sim.requests_in.models)
    for model in models:  # the tokenizer's first load would hold the loop
        count_prompt_tokens("warm up", model)
    section = live_pool_section(actuation, models)
    max_instances = actuation["max_slots"] * len(models)
    lag_until_s = float(np.nanmax(sim.records.finished_at))  # then the bench sums up
    half = actuation["scaling"]["interval_s"] / 2  # past the reading at end_s
    async with compose(gateway_config(sim, max_instances)) as gw:
        pool = LivePool(gw.app[CONTROLLER], live_actuation(section, max_instances), gw.loop.time)

        def read() -> tuple[list[dict[str, Any]], dict[str, int], float]:
            rule = pool.the_rule
            paid = rule.book.summary(end_s, {})["instance_hours"]  # to the simulated end
            hours = float(paid)  # type: ignore[arg-type]
            return [asdict(e) for e in rule.events], dict(rule.counts), hours

        result, (events, counts, hours), lags = await run_controlled(
            gw.url, sim.requests_in, pool, read, lag_until_s=lag_until_s,
            end_s=end_s + half, time_limit_s=time_limit_s,
        )  # fmt: skip
        return LiveReplay(result, events, counts, hours, lags)


def compare(
    sim_events: list[dict[str, Any]], live_events: list[dict[str, Any]], interval_s: float,
    until_s: float,
) -> dict[str, Any]:  # fmt: skip
    """Actuations by kind, simulated (up to ``until_s``, the last reading) and live (up to
    one reading later: a live reading is late by the loop's lag), and how many of them
    match: paired in time order with one of the same kind and model in the other run at
    most one reading (``interval_s``) apart (greedily, earliest first); the largest gap of
    the matched, in readings."""
    sim_by = _by_kind_model(sim_events, until_s)
    live_by = _by_kind_model(live_events, until_s + interval_s)
    gaps = [
        gap
        for key in sim_by.keys() & live_by.keys()
        for gap in _matched(sim_by[key], live_by[key], interval_s)
    ]
    counts: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for (kind, _), times in sim_by.items():
        counts[kind][0] += len(times)
    for (kind, _), times in live_by.items():
        counts[kind][1] += len(times)
    return {
        "counts": {k: (sim, live) for k, (sim, live) in sorted(counts.items())},
        "num_sim": sum(len(v) for v in sim_by.values()),
        "num_live": sum(len(v) for v in live_by.values()),
        "num_matched": len(gaps),
        "max_gap_intervals": max(gaps, default=0.0),
    }


def _matched(a: list[float], b: list[float], interval_s: float) -> list[float]:
    """Gaps (in readings) of the pairs of ``a`` and ``b`` (sorted times) at most one
    reading apart, matched earliest first."""
    gaps, i, j = [], 0, 0
    while i < len(a) and j < len(b):
        gap = (a[i] - b[j]) / interval_s
        if abs(gap) <= 1.0:
            gaps.append(abs(gap))
            i, j = i + 1, j + 1
        elif gap < 0:
            i += 1
        else:
            j += 1
    return gaps


def _by_kind_model(
    events: list[dict[str, Any]], until_s: float
) -> dict[tuple[str, str], list[float]]:
    out: dict[tuple[str, str], list[float]] = defaultdict(list)
    for e in events:
        if e["at_s"] <= until_s:
            out[e["kind"], e["model"]].append(float(e["at_s"]))
    return out
