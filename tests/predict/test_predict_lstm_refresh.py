"""When the LSTM re-runs a changed window: at the next prediction, or when its outcome arrives."""

from __future__ import annotations

import numpy as np

from sincere.predict.features import CURRENT_FEATURES, ENTRY_FEATURES
from sincere.predict.latency import RouteContext
from sincere.predict.lstm import LstmLatency, LstmWeights


def weights(seed: int = 0, hidden: int = 6, head: int = 5) -> LstmWeights:
    """Small random weights (what runs does not depend on their values)."""
    rng = np.random.default_rng(seed)
    n_in, n_cur = len(ENTRY_FEATURES), len(CURRENT_FEATURES)
    return LstmWeights(
        w_ih=rng.normal(0, 0.3, (4 * hidden, n_in)), w_hh=rng.normal(0, 0.3, (4 * hidden, hidden)),
        b=rng.normal(0, 0.3, 4 * hidden), w1=rng.normal(0, 0.3, (head, hidden + n_cur)),
        b1=rng.normal(0, 0.3, head), w2=rng.normal(0, 0.3, (4, head)), b2=rng.normal(0, 0.3, 4),
        entry_mean=np.zeros(n_in - 1), entry_std=np.ones(n_in - 1),
        current_mean=np.zeros(n_cur), current_std=np.ones(n_cur),
        target_mean=np.array([-2.0, -4.0]), target_std=np.ones(2),
    )  # fmt: skip


def test_refresh_on_observe_gives_the_same_predictions_without_stale_windows() -> None:
    """Summarising at each outcome predicts exactly what the lazy batched refresh predicts,
    and leaves no window for a decision to re-run."""
    lazy = LstmLatency(weights(), history=4)
    eager = LstmLatency(weights(), history=4, refresh_on_observe=True)
    ctx = RouteContext(500, 100.0, num_running=3, num_waiting=1, num_outstanding=4)
    for k in range(10):
        at = ctx._replace(routed_at=float(k), num_running=k % 5)
        for model in (lazy, eager):
            model.observe(f"i{k % 3}", at, 0.05 + 0.01 * k, 2.0 + 0.1 * k, 100)
        assert eager.refresh() == 0  # nothing left stale
    assert lazy.refresh(["i0"]) == 1
    now = ctx._replace(routed_at=12.0)
    for name in ("i0", "i1", "i2"):
        a, b = lazy.distribution(name, now), eager.distribution(name, now)
        assert a is not None and b is not None
        np.testing.assert_allclose(a, b, rtol=1e-12)  # batch shapes may round differently
