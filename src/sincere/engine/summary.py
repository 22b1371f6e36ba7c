"""The run's summary: vLLM's latency metrics, throughput, SLO attainment, goodput, cost.

Definitions (docs/metrics.md): TTFT = first token - arrival; TPOT = (E2E - TTFT) /
(output tokens - 1); ITL = every gap between two tokens of a request; E2E = last
token - arrival; queueing delay = first scheduled - arrival. Latency statistics
cover completed requests; ITL comes from the engines' gap histograms (see
:mod:`sincere.engine.gaps` for its resolution). ``duration_s`` runs from time 0 to
the last event. Throughput and goodput are per second of ``duration_s``; SLO
attainment is the share of *all* requests (rejected ones count as misses) that met
every target of their tier. Utilisation of an engine is its busy time over
``duration_s``; cost is accelerator-hours over ``duration_s`` times the catalog's
hourly price.

The simulator summarises its runs here and the load generator its measured ones
(without engine statistics), so ``summary.json`` means the same for both.
"""

from __future__ import annotations

import copy
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from sincere.core.records import RecordArrays, latencies, slo_met
from sincere.core.request import RequestArrays
from sincere.engine.base import EngineStats, SpecDecodeStats
from sincere.engine.gaps import GapHistogram
from sincere.engine.instance import InstanceInfo
from sincere.engine.kv_tiers import kv_tiers_summary

QUANTILES = {"p50": 50.0, "p90": 90.0, "p99": 99.0}
Stats = dict[str, float | None]


def _clean(x: float) -> float | None:
    return None if math.isnan(x) or math.isinf(x) else float(x)


def describe(values: npt.NDArray[np.float64]) -> Stats:
    """Mean and percentiles of the finite values (``None`` when there are none)."""
    v = values[np.isfinite(values)]
    if not len(v):
        return {"mean": None, **dict.fromkeys(QUANTILES)}
    pct = np.percentile(v, list(QUANTILES.values()))
    return {"mean": float(v.mean()), **{k: float(p) for k, p in zip(QUANTILES, pct, strict=True)}}


def describe_gaps(hist: GapHistogram) -> Stats:
    """ITL statistics from a gap histogram."""
    return {
        "mean": _clean(hist.mean_s),
        **{k: _clean(hist.quantile(q / 100.0)) for k, q in QUANTILES.items()},
    }


def _group(
    requests: RequestArrays,
    records: RecordArrays,
    lat: dict[str, npt.NDArray[np.float64]],
    met: npt.NDArray[np.bool_],
    sel: npt.NDArray[np.bool_],
    duration_s: float,
) -> dict[str, Any]:
    done = sel & ~np.isnan(records.finished_at) & ~records.rejected
    out_tokens = int(records.output_tokens[done].sum())
    num = int(sel.sum())
    per_s = 1.0 / duration_s if duration_s > 0 else math.nan
    return {
        "num_requests": num,
        "num_completed": int(done.sum()),
        "num_rejected": int((sel & records.rejected).sum()),
        "throughput_rps": _clean(done.sum() * per_s),
        "output_tokens_per_s": _clean(out_tokens * per_s),
        "total_tokens_per_s": _clean(
            (out_tokens + int(requests.prompt_tokens[done].sum())) * per_s
        ),
        **{name: describe(lat[name][done]) for name in ("ttft_s", "tpot_s", "e2e_s", "queue_s")},
        "slo_attainment": _clean(met[sel].mean()) if num else None,
        "goodput_rps": _clean(met[sel].sum() * per_s),
    }


def summarize(
    requests: RequestArrays,
    records: RecordArrays,
    duration_s: float,
    infos: Sequence[InstanceInfo],
    stats: Sequence[EngineStats],
    gaps: Sequence[GapHistogram],
) -> dict[str, Any]:
    """The ``summary.json`` mapping; ``gaps[t]`` holds the ITL gaps of tier ``t``."""
    lat = latencies(requests, records)
    met = slo_met(requests, records, lat)
    everyone = np.ones(len(requests), dtype=np.bool_)
    overall = _group(requests, records, lat, met, everyone, duration_s)
    summary = copy.deepcopy(overall)
    over_context = rejected_over_context(records)
    if over_context:  # only then: summaries of runs that fit keep their bytes
        summary["rejected_over_context"] = over_context
    summary["duration_s"] = duration_s
    total = GapHistogram()
    for hist in gaps:
        total.merge(hist)
    summary["itl_s"] = describe_gaps(total)
    summary.update(_fleet(infos, stats, duration_s, summary["output_tokens_per_s"]))
    if any(len(ids) for ids in requests.block_ids):
        summary["prefix_cache"] = prefix_cache_summary(requests, records, stats)
    tiers = kv_tiers_summary([st.kv_tiers for st in stats])
    if tiers is not None:  # only then: summaries of runs without tiers keep their bytes
        summary["kv_tiers"] = tiers
    speculating = [st.spec_decode for st in stats if st.spec_decode is not None]
    if speculating:  # only then: summaries of runs without speculation keep their bytes
        summary["spec_decode"] = spec_decode_summary(speculating)
    summary["tiers"] = {
        tier.name: {
            **(
                copy.deepcopy(overall)  # one tier: the same selection, already computed
                if len(requests.tiers) == 1
                else _group(requests, records, lat, met, requests.tier == t, duration_s)
            ),
            "itl_s": describe_gaps(gaps[t]),
        }
        for t, tier in enumerate(requests.tiers)
    }
    return _ordered(summary)


CONTEXT_REASONS = ("prompt_too_long", "over_context")
"""Rejections for the model's context length: no room for one output token; prompt +
``max_tokens`` over ``max_model_len`` (vLLM's rule)."""


def rejected_over_context(records: RecordArrays) -> dict[str, int]:
    """Requests refused for the context length, by reason (empty when none were)."""
    reasons = Counter(r for r in records.reject_reason if r in CONTEXT_REASONS)
    return {r: reasons[r] for r in CONTEXT_REASONS if reasons[r]}


def prefix_cache_summary(
    requests: RequestArrays, records: RecordArrays, stats: Sequence[EngineStats]
) -> dict[str, Any]:
    """The ``prefix_cache`` block: how much prompt work the engines' prefix caches saved.

    ``hit_rate`` is the fraction of prompt tokens found cached when each request was first
    admitted (``query_tokens`` and ``hit_tokens`` over the requests that started); the
    engine counters also count recomputations after preemption, as vLLM's do.
    """
    started = ~np.isnan(records.first_scheduled_at)
    queries = int(requests.prompt_tokens[started].sum())
    hits = int(records.cached_tokens[started].sum())
    return {
        "hit_rate": _clean(hits / queries) if queries else None,
        "query_tokens": queries,
        "hit_tokens": hits,
        "engine_query_tokens": sum(st.prefix_cache_queries for st in stats),
        "engine_hit_tokens": sum(st.prefix_cache_hits for st in stats),
        "num_evicted_blocks": sum(st.prefix_cache_evictions for st in stats),
    }


def spec_decode_summary(counts: Sequence[SpecDecodeStats]) -> dict[str, Any]:
    """The ``spec_decode`` block: vLLM's speculative decoding counters summed over
    ``counts`` (one per engine), the acceptance rate (accepted over drafted tokens) and
    the mean acceptance length (tokens per draft: accepted ones plus the verify pass's)."""
    total = SpecDecodeStats.total(counts)
    drafts, drafted = total.num_drafts, total.num_draft_tokens
    accepted = total.num_accepted_tokens
    return {
        "num_drafts": drafts,
        "num_draft_tokens": drafted,
        "num_accepted_tokens": accepted,
        "num_accepted_tokens_per_pos": list(total.accepted_per_pos),
        "acceptance_rate": _clean(accepted / drafted) if drafted else None,
        "mean_acceptance_length": _clean(1.0 + accepted / drafts) if drafts else None,
    }


def _fleet(
    infos: Sequence[InstanceInfo],
    stats: Sequence[EngineStats],
    duration_s: float,
    output_tokens_per_s: float | None,
) -> dict[str, Any]:
    instances: dict[str, dict[str, Any]] = {
        info.id: {
            "utilization": _clean(st.busy_s / duration_s) if duration_s > 0 else None,
            "busy_s": st.busy_s,
            "swap_s": st.swap_s,
            "num_steps": st.num_steps,
            "num_swaps": st.num_swaps,
            "num_preemptions": st.num_preemptions,
            "num_generated_tokens": st.num_generated_tokens,
            "cost_usd": instance_cost(info, duration_s),
            **(
                {}
                if st.spec_decode is None
                else {"spec_decode": spec_decode_summary([st.spec_decode])}
            ),
        }
        for info, st in zip(infos, stats, strict=True)
    }
    utils = [v["utilization"] for v in instances.values() if v["utilization"] is not None]
    return {
        "utilization": float(np.mean(utils)) if utils else None,
        **fleet_cost(instances, (output_tokens_per_s or 0.0) * duration_s),
        "num_preemptions": sum(st.num_preemptions for st in stats),
        "instances": instances,
    }


def instance_cost(info: InstanceInfo, paid_s: float) -> float | None:
    """Accelerator-hours over ``paid_s`` times the hourly price (None: not declared)."""
    per_hour = info.cost_per_hour_usd
    return None if per_hour is None else per_hour * paid_s / 3600.0


def fleet_cost(instances: Mapping[str, Mapping[str, Any]], tokens: float) -> dict[str, Any]:
    """The fleet's ``cost_usd`` (None when an instance's is unknown) and its cost per
    million of the ``tokens`` generated, from the per-instance ``cost_usd``."""
    costs = [v["cost_usd"] for v in instances.values()]
    cost = None if None in costs else float(sum(costs))
    return {
        "cost_usd": cost,
        "cost_per_1m_output_tokens_usd": (
            _clean(cost / tokens * 1e6) if tokens and cost is not None else None
        ),
    }


_FIRST = (
    "num_requests",
    "num_completed",
    "num_rejected",
    "rejected_over_context",
    "duration_s",
    "throughput_rps",
    "output_tokens_per_s",
    "total_tokens_per_s",
    "ttft_s",
    "tpot_s",
    "itl_s",
    "e2e_s",
    "queue_s",
    "slo_attainment",
    "goodput_rps",
    "utilization",
    "cost_usd",
    "cost_per_1m_output_tokens_usd",
)


def _ordered(summary: dict[str, Any]) -> dict[str, Any]:
    head = {k: summary[k] for k in _FIRST if k in summary}
    return {**head, **{k: v for k, v in summary.items() if k not in head}}
