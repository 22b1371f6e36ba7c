"""The LSTM latency model: windows, NumPy serving equal to torch training, determinism."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sincere.core.errors import ConfigError
from sincere.predict.evaluate import replay_latency
from sincere.predict.features import current_features, finish_order, windows
from sincere.predict.latency import RouteContext
from sincere.predict.lstm import LstmLatency, lstm_last_state, predict_windows, standard_entries
from sincere.predict.lstm_train import LstmParams, train_lstm
from sincere.predict.records import Served, read_served

torch = pytest.importorskip("torch")

FAST = LstmParams(epochs=3, hidden=8, head=8, history=6)


@pytest.fixture(scope="module")
def runs(hetero_runs: list[Path]) -> list[Served]:
    return [read_served(folder / "requests.parquet") for folder in hetero_runs]


@pytest.fixture(scope="module")
def model(runs: list[Served]) -> LstmLatency:
    return train_lstm(runs[:1], FAST)[0]


def test_windows_hold_only_requests_finished_before_arrival(runs: list[Served]) -> None:
    """A window has the same instance's last finishes before the arrival, oldest first."""
    run = runs[0]
    h = windows(run, 6)
    for i in range(0, len(run), 97):
        mine = [j for j in finish_order(run).tolist() if run.instance[j] == run.instance[i]]
        done = [j for j in mine if run.finished_at[j] < run.arrival_at[i]][-6:]
        got = h.values["finished_at"][i][h.present[i]]
        np.testing.assert_array_equal(got, run.finished_at[done])
        assert h.present[i].tolist() == [False] * (6 - len(done)) + [True] * len(done)


def test_numpy_lstm_equals_torch(model: LstmLatency, runs: list[Served]) -> None:
    """The NumPy forward pass gives torch's LSTM state for the same weights."""
    w = model.weights
    lstm = torch.nn.LSTM(w.w_ih.shape[1], w.hidden, batch_first=True).double()
    with torch.no_grad():
        lstm.weight_ih_l0.copy_(torch.from_numpy(w.w_ih))
        lstm.weight_hh_l0.copy_(torch.from_numpy(w.w_hh))
        lstm.bias_ih_l0.copy_(torch.from_numpy(w.b))
        lstm.bias_hh_l0.zero_()
    entries = standard_entries(w, windows(runs[1], model.length))[:300]
    _, (h, _) = lstm(torch.from_numpy(entries))
    np.testing.assert_allclose(lstm_last_state(w, entries), h[-1].detach().numpy(), atol=1e-12)


def test_serving_one_by_one_equals_batch_prediction(model: LstmLatency, runs: list[Served]) -> None:
    """Observing outcomes as they finish gives the offline windows' predictions exactly."""
    run = runs[1]
    fresh = LstmLatency(model.weights, model.length, min_history=0)
    track = replay_latency(run, {"lstm": fresh})["lstm"]
    h = windows(run, model.length)
    batch = predict_windows(model.weights, h, current_features(run, h))
    np.testing.assert_allclose(np.log(track.ttft), batch[:, 0], rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(np.log(track.tpot), batch[:, 2], rtol=1e-9, atol=1e-9)


def test_no_prediction_before_min_history() -> None:
    """An instance with fewer outcomes than min_history gets None (routers explore it)."""
    w = train_lstm_small()
    model = LstmLatency(w.weights, w.length, min_history=2)
    ctx = RouteContext(100, 50.0, routed_at=1.0)
    assert model.predict("a", ctx) is None
    model.observe("a", ctx, 0.1, 1.0, 50)
    assert model.predict("a", ctx) is None
    model.observe("a", ctx._replace(routed_at=2.0), 0.1, 1.0, 50)
    est = model.predict("a", ctx._replace(routed_at=3.0))
    assert est is not None and est.ttft_s > 0 and est.e2e_s > est.ttft_s


def test_batched_distributions_equal_one_at_a_time(model: LstmLatency) -> None:
    """distributions() over many instances = distribution() of each; refresh is lazy."""
    ctx = RouteContext(300, 80.0, num_running=4, num_outstanding=5, routed_at=10.0)
    for k, name in enumerate(("a", "b", "c")):
        for j in range(k + 2):
            model.observe(name, ctx._replace(routed_at=float(j)), 0.05 * (k + 1), 2.0, 80)
    assert model.refresh(["a"]) == 1
    names, ctxs = ["a", "b", "c", "z"], [ctx] * 4
    together = model.distributions(names, ctxs)
    assert together[3] is None  # never observed
    for name, dist in zip(names[:3], together[:3], strict=True):
        assert dist == pytest.approx(model.distribution(name, ctx), rel=1e-12)
    assert model.refresh() == 0


def test_training_is_deterministic(runs: list[Served], tmp_path: Path) -> None:
    """The same records and seed give the same model file, byte for byte."""
    files = []
    for k in range(2):
        trained, _ = train_lstm(runs[:1], FAST)
        files.append(trained.save(tmp_path / f"m{k}.npz", {}, {"seed": 0}).read_bytes())
    assert files[0] == files[1]
    other, _ = train_lstm(runs[:1], LstmParams(epochs=3, hidden=8, head=8, history=6, seed=1))
    first = LstmLatency.load(tmp_path / "m0.npz")
    assert not np.array_equal(other.weights.w_ih, first.weights.w_ih)


def test_bad_parameters_are_rejected() -> None:
    """Hyper-parameters out of range name the parameter."""
    with pytest.raises(ConfigError, match="history must be >= 1"):
        LstmParams(history=0)
    with pytest.raises(ConfigError, match="valid_fraction"):
        LstmParams(valid_fraction=0.7)


def train_lstm_small() -> LstmLatency:
    """A tiny model trained on a synthetic run (for behaviour that needs any weights)."""
    rng = np.random.default_rng(0)
    n = 300
    arrival = np.sort(rng.uniform(0, 100, n))
    outstanding = rng.integers(0, 10, n)
    ttft = 0.02 * (1 + outstanding)
    out = rng.integers(2, 100, n)
    run = Served(
        instance=rng.integers(0, 2, n), instances=("a", "b"), arrival_at=arrival,
        finished_at=arrival + ttft + 0.01 * out, ttft_s=ttft, tpot_s=np.full(n, 0.01),
        prompt_tokens=rng.integers(10, 500, n), output_tokens=out, running=outstanding,
        waiting=np.zeros(n, dtype=np.int64), waiting_tokens=np.zeros(n, dtype=np.int64),
        outstanding=outstanding, tier=("",) * n, slo_met=None, num_derived=0, source="synthetic",
    )  # fmt: skip
    return train_lstm([run], LstmParams(epochs=2, hidden=4, head=4, history=4))[0]


def test_importing_the_predictors_imports_neither_torch_nor_scipy() -> None:
    """Routers import sincere.predict; that loads no torch, SciPy, Parquet or learned model."""
    import subprocess
    import sys

    heavy = "('torch', 'scipy', 'pyarrow', 'sincere.predict.lstm')"
    code = (
        "import sys, sincere.predict, sincere.policy.routers;"
        f"print(sorted(m for m in {heavy} if m in sys.modules))"
    )
    found = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert found.strip() == "[]"
    code = "import sincere.predict as p; print(p.LstmLatency.__name__, p.QuantileLength.__name__)"
    named = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert named.stdout.split() == ["LstmLatency", "QuantileLength"]  # loaded when asked for
