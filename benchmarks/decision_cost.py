"""Per-decision cost of the learning routers at 16 instances, per latency predictor.

The gateway decides on its event loop, so a routing decision must stay well under
100 microseconds at 16 instances. This times whole decisions -- ``Router.route`` of
``latency-optimal`` and ``cost-optimal`` over 16 gateway-like views (no step model,
engine load unknown, so every prediction is the learned one) for requests of a tier with
TTFT and TBT targets (so cost-optimal computes each instance's SLO probability) -- with
each latency predictor:

* ``recent-window`` (the EWMA baseline), ``linear`` (ridge; cost-optimal's default);
* ``lstm``: the sequence model with the trained model's sizes (history 16, state 32,
  head 32; weights drawn at random -- cost does not depend on their values), all 16
  candidates predicted in one batch.

Three figures per pair, median microseconds per call over ``--decisions`` calls after
a warm-up (the median of ``--repeat`` passes), and the ratio to the EWMA baseline
measured in the same run:

* ``decide``: a decision when no outcome arrived since the last one (the LSTM's
  per-instance summaries are current);
* ``decide after outcome``: a decision right after one outcome (the LSTM re-runs that
  instance's window inside the decision);
* ``observe``: learning one outcome (for the LSTM with its window refreshed there, off
  the decision's path: :meth:`~sincere.predict.lstm.LstmLatency.refresh`).

``lstm refresh-on-observe`` is the LSTM with ``refresh_on_observe: true``: the window
is summarised when its outcome arrives, so no decision runs the LSTM.

    python benchmarks/decision_cost.py                 # about a minute
    python benchmarks/decision_cost.py --decisions 500 # quicker, noisier
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from sincere.core.request import Request, Tier
from sincere.policy.router_base import ROUTERS, InstanceView, Outcome, Router
from sincere.policy.routers import make_router  # noqa: F401 (fills ROUTERS)
from sincere.predict.features import CURRENT_FEATURES, ENTRY_FEATURES
from sincere.predict.latency import LatencyPredictor, LinearLatency, RecentWindow
from sincere.predict.length import HistoryMean
from sincere.predict.lstm import LstmLatency, LstmWeights

NUM_INSTANCES = 16
TIER = Tier("interactive", ttft_s=0.15, tbt_s=0.08)  # cost-optimal computes P(SLO met)
WARM_OUTCOMES = 64  # per instance, before timing


def random_lstm(
    rng: np.random.Generator, refresh_on_observe: bool = False, hidden: int = 32, head: int = 32
) -> LstmLatency:
    """An LSTM latency model with the trained sizes and random weights."""
    n_in, n_cur = len(ENTRY_FEATURES), len(CURRENT_FEATURES)

    def w(*shape: int) -> Any:
        return rng.normal(0.0, 0.2, shape)

    weights = LstmWeights(
        w_ih=w(4 * hidden, n_in), w_hh=w(4 * hidden, hidden), b=w(4 * hidden),
        w1=w(head, hidden + n_cur), b1=w(head), w2=w(4, head), b2=w(4),
        entry_mean=np.zeros(n_in - 1), entry_std=np.ones(n_in - 1),
        current_mean=np.zeros(n_cur), current_std=np.ones(n_cur),
        target_mean=np.array([-2.0, -4.0]), target_std=np.ones(2),
    )  # fmt: skip
    return LstmLatency(weights, history=16, refresh_on_observe=refresh_on_observe)


def predictors(rng: np.random.Generator) -> dict[str, Callable[[], LatencyPredictor]]:
    return {
        "recent-window": RecentWindow,
        "linear": LinearLatency,
        "lstm": lambda: random_lstm(rng),
        "lstm refresh-on-observe": lambda: random_lstm(rng, refresh_on_observe=True),
    }


def gateway_views(rng: np.random.Generator) -> list[InstanceView]:
    """16 instances as the gateway sees them: outstanding counts only."""
    return [
        InstanceView(f"i{k}", "m", "H100", num_outstanding=int(rng.integers(0, 32)))
        for k in range(NUM_INSTANCES)
    ]


class Driver:
    """Routes requests and feeds outcomes back, as the front door does."""

    def __init__(self, router: Router, rng: np.random.Generator) -> None:
        self.router, self.rng = router, rng
        self.views = gateway_views(rng)
        self.next_id = 0

    def decide(self) -> tuple[Request, str]:
        req = Request(
            self.next_id, float(self.next_id) * 0.01, "m", 600, 180, max_tokens=512, tier=TIER
        )
        self.next_id += 1
        decision = self.router.route(req, self.views, req.arrival_at)
        assert decision.instance is not None
        return req, decision.instance

    def outcome(self, req: Request, instance: str) -> Outcome:
        e2e = 2.0 + float(self.rng.random())
        return Outcome(req, instance, 0.05, e2e, 180, req.arrival_at + e2e)


def build(router: str, predictor: LatencyPredictor, seed: int) -> Router:
    return ROUTERS.build(
        router,
        {},
        rng=np.random.default_rng(seed),
        length_predictor=HistoryMean(),
        latency_predictor=predictor,
    )


def _median_us(samples: list[int]) -> float:
    return float(np.median(samples)) / 1e3


def measure(router_name: str, make: Callable[[], LatencyPredictor], n: int) -> dict[str, float]:
    """Median microseconds of a decision, a decision after an outcome, and an observe."""
    rng = np.random.default_rng(0)
    predictor = make()
    driver = Driver(build(router_name, predictor, 0), rng)
    for _ in range(WARM_OUTCOMES * NUM_INSTANCES):
        req, inst = driver.decide()
        driver.router.observe(driver.outcome(req, inst))
    lstm = predictor if isinstance(predictor, LstmLatency) else None
    clock = time.perf_counter_ns
    decide, after, observe = [], [], []
    for _ in range(n):
        t0 = clock()
        req_a, inst_a = driver.decide()  # summaries current
        t1 = clock()
        req_b, inst_b = driver.decide()
        t2 = clock()
        driver.router.observe(driver.outcome(req_a, inst_a))
        if lstm is not None:
            lstm.refresh()  # what a driver would do off the decision's path
        t3 = clock()
        driver.router.observe(driver.outcome(req_b, inst_b))
        t4 = clock()
        driver.decide()  # right after an outcome
        t5 = clock()
        decide.append(t1 - t0)
        observe.append(t3 - t2)
        after.append(t5 - t4)
    return {
        "decide_us": _median_us(decide),
        "decide_after_outcome_us": _median_us(after),
        "observe_us": _median_us(observe),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--decisions", type=int, default=3000)
    ap.add_argument("--repeat", type=int, default=3, help="passes; each figure is the median")
    args = ap.parse_args()
    rows = []
    for router in ("latency-optimal", "cost-optimal"):
        base = None
        for name, make in predictors(np.random.default_rng(1)).items():
            measure(router, make, 100)  # warm-up
            passes = [measure(router, make, args.decisions) for _ in range(args.repeat)]
            row = {k: float(np.median([p[k] for p in passes])) for k in passes[0]}
            base = base or row
            ratio = {f"{k}_vs_ewma": round(v / base[k], 2) for k, v in row.items()}
            rows.append({"router": router, "predictor": name, **row, **ratio})
    for row in rows:
        print(json.dumps({k: round(v, 2) if isinstance(v, float) else v for k, v in row.items()}))
    worst = max(r["decide_after_outcome_us"] for r in rows)
    print(
        f"decision cost at {NUM_INSTANCES} instances: worst {worst:.1f} us "
        f"({platform.machine()}, Python {platform.python_version()})"
    )


if __name__ == "__main__":
    main()
