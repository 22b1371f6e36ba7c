"""Colocated against disaggregated serving: goodput per GPU, and where splitting wins.

For results whose strategy axis compares a ``colocated`` deployment with ``xPyD`` ones
(the built-in ``pd-study``; docs/disaggregation.md), per traffic, env (the KV link) and
SLO tier:

* **goodput per GPU** -- DistServe's goodput: the highest arrival rate at which at least
  :data:`GOODPUT_ATTAINMENT` of the requests meet every target of the tier (each tier
  judged on all the run's requests, :func:`tier_attainment`; TPOT per request, its mean
  time per output token, so 90 % attainment bounds the P90 of per-request TPOT and of
  TTFT together; averaged over seeds), interpolated linearly over the load sweep where
  the tier's attainment crosses it (:func:`~sincere.experiment.tables.crossing`),
  divided by the deployment's GPUs (the ``count x tp`` of its instances, read from each
  cell's ``config.yaml``). Where the lowest load already misses it the goodput is 0;
  where even the highest load meets it, the highest load (a lower bound: the row is
  marked);
* **the ratio** of the best xPyD deployment's goodput per GPU to the colocated one's
  (> 1: disaggregation wins);
* the same ratio with the first token of a disaggregated request counted at the end of
  its prefill (:func:`tier_attainment` with ``at_prefill_end``): the simulator takes TTFT
  where a streaming client gets it, from the decode side once the KV has landed and found
  room; counted at the end of the prefill instead, the transfer and the wait for decode
  room only inflate the request's mean TPOT (how the simulator took it before).

Colocated cells do not depend on the link (the runner simulates them once and files the
result under every link label); they are read at the same env label as the xPyD cells
they are compared with.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from sincere.experiment.results import Results, mean_of
from sincere.experiment.tables import Column, TableData, crossing

COLOCATED = "colocated"
"""The strategy label of the colocated deployment ratios are taken against; other labels
starting with it are further colocated baselines (each gets its own ratio column)."""
SPLIT_LABEL = re.compile(r"^(\d+)P(\d+)D$")
"""A disaggregated deployment's strategy label: ``xPyD``."""
GOODPUT_ATTAINMENT = 0.9
"""DistServe's attainment goal: goodput is the highest rate with 90 % of requests in SLO."""


@dataclass(frozen=True, slots=True)
class Goodput:
    """One deployment's goodput per GPU for one tier, and whether it is a bound."""

    per_gpu: float  # requests/s per GPU
    bound: str  # "": interpolated; ">=": the sweep's top passed; "<": its bottom failed


@dataclass(frozen=True, slots=True)
class PDRow:
    """One traffic x tier x env: each deployment's goodput and the best split's ratio."""

    traffic: Any
    tier: str
    env: Any
    goodput: dict[str, Goodput]  # deployment label -> its goodput
    best_split: str | None  # the xPyD label with the highest goodput per GPU
    at_prefill: dict[str, Goodput]  # the same, first token counted at the prefill's end

    @property
    def ratio(self) -> float | None:
        """Best xPyD over colocated goodput per GPU (None: either is missing or 0)."""
        return self.ratio_to(COLOCATED)

    def ratio_to(self, baseline: str) -> float | None:
        """Best xPyD over ``baseline``'s goodput per GPU (None: either missing or 0)."""
        base = self.goodput.get(baseline)
        if base is None or self.best_split is None or base.per_gpu <= 0:
            return None
        return self.goodput[self.best_split].per_gpu / base.per_gpu

    @property
    def ratio_at_prefill(self) -> float | None:
        """Best xPyD (by this measure) over colocated, first token at the prefill's end."""
        base = self.at_prefill.get(COLOCATED)
        splits = [g.per_gpu for d, g in self.at_prefill.items() if SPLIT_LABEL.match(d)]
        if base is None or not splits or base.per_gpu <= 0:
            return None
        return max(splits) / base.per_gpu


def is_pd_study(results: Results) -> bool:
    """Whether the strategy axis holds ``colocated`` and an ``xPyD`` label, over a
    numeric load axis."""
    strategy, load = results.role("strategy"), results.role("load")
    if strategy is None or load is None:
        return False
    labels = [str(x) for x in results.axes[strategy]]
    numeric = all(isinstance(x, int | float) for x in results.axes[load])
    return numeric and COLOCATED in labels and any(SPLIT_LABEL.match(x) for x in labels)


def tiers_of(results: Results) -> list[str]:
    """The tier names with an attainment column, in first-seen order."""
    names: list[str] = []
    for row in results.ok_rows:
        for column in row:
            match = re.fullmatch(r"tier\.(.+)\.slo_attainment", column)
            if match and match.group(1) not in names:
                names.append(match.group(1))
    return names


def num_gpus(config_path: Path) -> int:
    """GPUs of a cell's deployment: ``count x tp`` summed over its instance groups."""
    data = yaml.safe_load(config_path.read_text(encoding="utf-8"))
    return sum(int(i.get("count", 1)) * int(i.get("tp", 1)) for i in data["instances"])


def tier_attainment(
    requests_path: Path, config_path: Path, *, at_prefill_end: bool = False
) -> dict[str, float]:
    """Per tier, the share of *all* the run's requests that meet its targets (TTFT, TPOT
    as (E2E - TTFT) / (output - 1) per request, TTLT); rejected and unfinished requests
    miss. ``at_prefill_end``: a disaggregated request's first token counts at
    ``prefill_done_at`` (its TPOT over the rest of the time). Empty when the tiers are
    not a list in the config.

    Every tier is judged on every request, not only on those drawn into it: the study's
    policies never read a request's tier (tests/experiment/test_pd_study.py holds a run
    with an extra tier to the same per-request timings), so the tiers are only targets,
    each measured on the whole sample, and adding one changes no other tier's figure.
    """
    return both_attainments(requests_path, config_path)[at_prefill_end]


def both_attainments(requests_path: Path, config_path: Path) -> dict[bool, dict[str, float]]:
    """:func:`tier_attainment` without and with ``at_prefill_end`` (one read)."""
    import pyarrow.parquet as pq

    data = yaml.safe_load(config_path.read_text(encoding="utf-8"))
    tiers = (data.get("workload") or {}).get("tiers")
    if not isinstance(tiers, list):
        return {False: {}, True: {}}
    table = pq.read_table(requests_path)
    return {early: _met_shares(table, tiers, early) for early in (False, True)}


def _met_shares(table: Any, tiers: list[dict[str, Any]], at_prefill_end: bool) -> dict[str, float]:
    """Each tier's share of the table's requests meeting its targets."""
    import numpy as np

    def col(name: str) -> Any:
        return table.column(name).to_numpy(zero_copy_only=False).astype(float)

    arrival, ttft, e2e = col("arrival_at"), col("ttft_s"), col("e2e_s")
    out_tokens = col("output_tokens")
    if at_prefill_end and "prefill_done_at" in table.column_names:
        done = col("prefill_done_at") - arrival
        ttft = np.where(np.isnan(done), ttft, done)
    with np.errstate(invalid="ignore", divide="ignore"):
        tpot = np.where(out_tokens > 1, (e2e - ttft) / (out_tokens - 1), 0.0)
    served = ~np.isnan(e2e) & ~table.column("rejected").to_numpy(zero_copy_only=False)
    if not len(served):
        return {}
    found = {}
    for tier in tiers:
        met = served.copy()
        for target, value in (("ttft_s", ttft), ("tbt_s", tpot), ("ttlt_s", e2e)):
            if tier.get(target) is not None:
                met &= value <= float(tier[target])
        found[str(tier["name"])] = float(met.mean())
    return found


def goodput_per_gpu(loads: list[float], attainment: list[float], gpus: int) -> Goodput:
    """Goodput per GPU from a tier's attainment over an increasing load sweep."""
    cap, last_pass, _ = crossing(loads, [1.0 - a for a in attainment], 1.0 - GOODPUT_ATTAINMENT)
    if cap is not None:
        return Goodput(cap / gpus, "")
    if last_pass is not None:
        return Goodput(last_pass / gpus, ">=")
    return Goodput(0.0, "<")


Cache = dict[Path, dict[bool, dict[str, float]]]
"""Each cell's :func:`both_attainments`, by its requests path."""


def _deploy_goodput(
    results: Results,
    fixed: dict[str, Any],
    tier: str,
    gpus: int,
    cache: Cache,
    at_prefill_end: bool = False,
) -> Goodput | None:
    """A deployment's goodput per GPU over the load sweep, its attainment at each load the
    mean over seeds of :func:`tier_attainment` (a cell without ``requests.parquet``: the
    results table's attainment of the tier's own requests)."""
    load = results.role("load")
    assert load is not None
    pairs = []
    for x in sorted(float(v) for v in results.axes[load]):
        rows = results.select({**fixed, load: x})
        shares = [_attainment(results, r, cache, at_prefill_end).get(tier) for r in rows]
        known = [v for v in shares if v is not None]
        value = sum(known) / len(known) if known else None
        if value is None and not at_prefill_end:
            value = mean_of(rows, f"tier.{tier}.slo_attainment")
        if value is not None:
            pairs.append((x, value))
    if not pairs:
        return None
    return goodput_per_gpu([p[0] for p in pairs], [p[1] for p in pairs], gpus)


def _attainment(
    results: Results, row: dict[str, Any], cache: Cache, at_prefill_end: bool
) -> dict[str, float]:
    """:func:`tier_attainment` of a cell (its folder read once)."""
    path = results.requests_path(row)
    if path not in cache:
        if not path.exists():
            return {}
        cache[path] = both_attainments(path, path.with_name("config.yaml"))
    return cache[path][at_prefill_end]


def pd_rows(results: Results) -> list[PDRow]:
    """Every traffic x tier x env row of the comparison (other axes at the reference)."""
    strategy, traffic, env = (results.role(r) for r in ("strategy", "traffic", "env"))
    assert strategy is not None
    deploys = [str(x) for x in results.axes[strategy]]
    free = [a for a in (strategy, traffic, env, results.role("load")) if a is not None]
    base = results.slice_except(*free)
    gpus = _gpus_by_deploy(results, strategy, base)
    cache: Cache = {}
    out = []
    for t in results.axes[traffic] if traffic else [None]:
        for tier in tiers_of(results):
            for e in results.axes[env] if env else [None]:
                fixed = {**base, **({traffic: t} if traffic else {}), **({env: e} if env else {})}
                found: dict[str, Goodput] = {}
                early: dict[str, Goodput] = {}
                for d in deploys:
                    if d not in gpus:
                        continue
                    where = {**fixed, strategy: d}
                    g = _deploy_goodput(results, where, tier, gpus[d], cache)
                    if g is not None:
                        found[d] = g
                    g = _deploy_goodput(results, where, tier, gpus[d], cache, True)
                    if g is not None:
                        early[d] = g
                splits = [d for d in found if SPLIT_LABEL.match(d)]
                best = max(splits, key=lambda d: found[d].per_gpu, default=None)
                out.append(PDRow(t, tier, e, found, best, early))
    return out


def _gpus_by_deploy(results: Results, strategy: str, base: dict[str, Any]) -> dict[str, int]:
    """Each deployment label's GPU count, from one of its cells' ``config.yaml``."""
    gpus: dict[str, int] = {}
    for label in results.axes[strategy]:
        rows = results.select({**base, strategy: label})
        if rows:
            path = results.requests_path(rows[0]).with_name("config.yaml")
            gpus[str(label)] = num_gpus(path)
    return gpus


def pd_table(results: Results) -> TableData | None:
    """Goodput per GPU per deployment and the best xPyD / colocated ratio; ``None``
    unless :func:`is_pd_study`."""
    if not is_pd_study(results):
        return None
    strategy, traffic, env = (results.role(r) for r in ("strategy", "traffic", "env"))
    assert strategy is not None
    deploys = [str(x) for x in results.axes[strategy]]
    columns = [Column(f"{d} goodput/GPU", "tier.*.slo_attainment", "goodput") for d in deploys]
    baselines = [d for d in deploys if d.startswith(COLOCATED)]
    columns += [Column(f"best xPyD / {b}", "tier.*.slo_attainment", "ratio") for b in baselines]
    columns.append(
        Column(
            f"best xPyD / {COLOCATED}, first token at the prefill's end",
            "requests.parquet",
            "ratio_at_prefill",
        )
    )
    keys = [a for a in (traffic,) if a] + ["tier"] + [a for a in (env,) if a] + ["best xPyD"]
    rows = pd_rows(results)
    bounds = [
        f"{_where(r)} {d} {g.bound}" for r in rows for d, g in r.goodput.items() if g.bound == ">="
    ]
    note = (
        f"goodput per GPU (req/s/GPU): the highest arrival rate at which "
        f"{GOODPUT_ATTAINMENT:.0%} of all the run's requests meet both the tier's TTFT and "
        "per-request TPOT targets (mean over seeds), interpolated over the load sweep, "
        "divided by the deployment's GPUs "
        "(0: the lowest load already missed it); ratio > 1: the best xPyD split wins; the "
        "last column counts a disaggregated request's first token at the end of its "
        "prefill (the KV transfer and the wait for decode room then raise its mean TPOT "
        "instead of its TTFT)"
    )
    if bounds:
        note += "; lower bounds (the highest load still met it): " + ", ".join(bounds)
    free = [a for a in (strategy, traffic, env, results.role("load")) if a is not None]
    table = TableData(
        "P/D disaggregation: goodput per GPU", note, keys, results.slice_except(*free), columns
    )
    for r in rows:
        values: list[float | None] = [
            r.goodput[d].per_gpu if d in r.goodput else None for d in deploys
        ]
        values += [r.ratio_to(b) for b in baselines] + [r.ratio_at_prefill]
        label = [*([r.traffic] if traffic else []), r.tier, *([r.env] if env else [])]
        table.rows.append(([*label, _winner(r)], values))
    return table


def _winner(row: PDRow) -> str:
    """The best split's label, or "–" when no split has any goodput."""
    best = row.best_split
    return best if best is not None and row.goodput[best].per_gpu > 0 else "–"


def _where(row: PDRow) -> str:
    return "/".join(str(x) for x in (row.traffic, row.tier, row.env) if x is not None)


def pd_ratio_figure(results: Results, path: Path) -> Path | None:
    """Heatmaps of best-xPyD / colocated goodput per GPU (traffic x tier rows, env
    columns, each cell annotated with the ratio and the winning split): TTFT as a client
    sees it (from the decode side), and the first token counted at the prefill's end."""
    if not is_pd_study(results):
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = pd_rows(results)
    envs = list(dict.fromkeys(r.env for r in rows))
    lines = list(dict.fromkeys((r.traffic, r.tier) for r in rows))
    fig, axes = plt.subplots(
        1, 2, figsize=(2.2 + 2.2 * len(envs), 1.0 + 0.45 * len(lines)), sharey=True
    )
    panels = (
        ("first token from the decode side", lambda r: (r.ratio, r.best_split)),
        ("first token at the prefill's end", _at_prefill_best),
    )
    images = []
    for ax, (title, pick) in zip(axes, panels, strict=True):
        images.append(_heatmap(ax, rows, envs, lines, pick))
        ax.set_title(title, fontsize=8)
        ax.set_xlabel(results.role("env") or "", fontsize=8)
    axes[0].set_yticks(range(len(lines)), [f"{t} / {tier}" for t, tier in lines], fontsize=8)
    bar = fig.colorbar(images[0], ax=list(axes), fraction=0.04)
    bar.set_label("log2(best xPyD / colocated goodput per GPU)", fontsize=7)
    bar.ax.tick_params(labelsize=7)
    fig.suptitle("Where disaggregation wins (blue) or loses (red)", fontsize=9)
    fig.savefig(path, dpi=80, bbox_inches="tight")
    plt.close(fig)
    return path


RATIO_LIMIT = 2.0
"""The colour scale's ends, in log2 of the ratio (x4 either way; beyond is clipped)."""


def _at_prefill_best(row: PDRow) -> tuple[float | None, str | None]:
    """The first-token-at-the-prefill's-end ratio and the split that achieves it."""
    splits = {d: g for d, g in row.at_prefill.items() if SPLIT_LABEL.match(d)}
    best = max(splits, key=lambda d: splits[d].per_gpu, default=None)
    return row.ratio_at_prefill, best


def _heatmap(
    ax: Any,
    rows: list[PDRow],
    envs: list[Any],
    lines: list[tuple[Any, str]],
    pick: Any,
) -> Any:
    """One panel: log2 of the ratio ``pick(row)`` gives, annotated."""
    import numpy as np

    grid = np.full((len(lines), len(envs)), np.nan)
    for r in rows:
        i, j = lines.index((r.traffic, r.tier)), envs.index(r.env)
        ratio, split = pick(r)
        label, color = "–", "black"
        if ratio is not None:
            grid[i, j] = math.log2(max(ratio, 2.0**-RATIO_LIMIT))
            label = f"x{ratio:.2f}\n{split}" if ratio > 0 else "x0\nno split"
            color = "white" if abs(grid[i, j]) > RATIO_LIMIT / 2 else "black"
        ax.text(j, i, label, ha="center", va="center", fontsize=7, color=color)
    image = ax.imshow(grid, cmap="RdBu", vmin=-RATIO_LIMIT, vmax=RATIO_LIMIT, aspect="auto")
    ax.set_xticks(range(len(envs)), [str(e) for e in envs], fontsize=8)
    return image
