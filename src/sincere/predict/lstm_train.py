"""Training the sequence latency model (needs torch, the ``ml`` extra).

From one or more runs' records (:class:`~sincere.predict.records.Served`), every
served request becomes a sample: its history window and current features
(:mod:`sincere.predict.features`) in, its log TTFT and log TPOT out (TPOT only for
requests of two or more tokens). Features and targets are standardised with the
training set's means and deviations, which the model file keeps.

Loss: the Gaussian negative log-likelihood of each standardised log target, so the
model learns a spread per request as well as a mean. Adam, mini-batches in a seeded
order; the last ``valid_fraction`` of each run (by arrival) is held out, and the
weights of the epoch with the lowest held-out loss are kept (stopping after
``patience`` epochs without improvement).

Determinism: torch's seed, a seeded batch order, deterministic algorithms and one
thread (restored afterwards) give the same file for the same records and seed.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from sincere.core.errors import ConfigError
from sincere.predict.features import current_features, entry_features, targets, windows
from sincere.predict.lstm import (
    MAX_LOG_SIGMA,
    MIN_LOG_SIGMA,
    LstmLatency,
    LstmWeights,
    standardise_entries,
)
from sincere.predict.records import Served
from sincere.predict.saved import EpochProgress

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class LstmParams:
    """Hyper-parameters of the sequence model and its training."""

    history: int = 16  # finished requests per window
    hidden: int = 32  # LSTM state size
    head: int = 32  # units of the ReLU layer
    epochs: int = 40  # most passes over the data
    patience: int = 6  # epochs without held-out improvement before stopping
    batch_size: int = 256
    learning_rate: float = 3e-3
    valid_fraction: float = 0.1  # last share of each run held out for early stopping
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("history", "hidden", "head", "epochs", "patience", "batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1", value=getattr(self, name))
        if not 0.0 < self.valid_fraction < 0.5:
            raise ConfigError("valid_fraction must be in (0, 0.5)", value=self.valid_fraction)
        if not self.learning_rate > 0:
            raise ConfigError("learning_rate must be > 0", value=self.learning_rate)


@dataclass(frozen=True, eq=False)
class Samples:
    """Training samples of one or more runs (raw, not standardised)."""

    entries: FloatArray  # (n, history, entry features)
    present: npt.NDArray[np.bool_]  # (n, history)
    current: FloatArray  # (n, current features)
    target: FloatArray  # (n, 2) log TTFT, log TPOT
    valid: npt.NDArray[np.bool_]  # (n, 2) whether each target counts (TPOT needs 2+ tokens)
    held_out: npt.NDArray[np.bool_]  # (n,) in the early-stopping set


def samples(runs: Sequence[Served], history: int, valid_fraction: float = 0.1) -> Samples:
    """Every served request of every run as a sample (see the module docstring)."""
    parts = []
    for run in runs:
        h = windows(run, history)
        cur = current_features(run, h)
        valid = np.stack([np.ones(len(run), dtype=np.bool_), run.output_tokens > 1], axis=-1)
        held = np.arange(len(run)) >= math.ceil(len(run) * (1.0 - valid_fraction))
        parts.append(
            (entry_features(h), h.present, cur, targets(run.ttft_s, run.tpot_s), valid, held)
        )
    if not parts:
        raise ConfigError("no records to train on", allowed="one or more requests.parquet")
    cols = [np.concatenate([p[k] for p in parts]) for k in range(6)]
    return Samples(*cols)


def _standardisation(s: Samples) -> dict[str, FloatArray]:
    train = ~s.held_out
    entries = s.entries[train][s.present[train]][:, :-1]
    if len(entries) == 0:
        entries = np.zeros((1, s.entries.shape[-1] - 1))
    tgt = s.target[train]
    ok = s.valid[train]
    t_mean = np.array([tgt[ok[:, k], k].mean() if ok[:, k].any() else 0.0 for k in range(2)])
    t_std = np.array([tgt[ok[:, k], k].std() if ok[:, k].any() else 1.0 for k in range(2)])
    return {
        "entry_mean": entries.mean(axis=0),
        "entry_std": np.maximum(entries.std(axis=0), 1e-6),
        "current_mean": s.current[train].mean(axis=0),
        "current_std": np.maximum(s.current[train].std(axis=0), 1e-6),
        "target_mean": t_mean,
        "target_std": np.maximum(t_std, 1e-6),
    }


@dataclass(frozen=True)
class TrainReport:
    """What training did."""

    num_samples: int
    num_held_out: int
    epochs_run: int
    best_epoch: int
    held_out_loss: float  # Gaussian NLL per target, standardised units
    train_s: float


def train_lstm(
    runs: Sequence[Served], params: LstmParams, progress: EpochProgress | None = None
) -> tuple[LstmLatency, TrainReport]:
    """Train the sequence model on ``runs`` (see the module docstring)."""
    torch = require_torch()
    started = time.perf_counter()
    s = samples(runs, params.history, params.valid_fraction)
    if int((~s.held_out).sum()) < 2 or not s.held_out.any():
        raise ConfigError("too few served requests to train on", value=len(s.target))
    stats = _standardisation(s)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        net, best, epochs_run = _fit(torch, s, stats, params, progress)
    finally:
        torch.set_num_threads(threads)
    weights = _weights(net, stats)
    model = LstmLatency(weights, params.history)
    report = TrainReport(
        len(s.target), int(s.held_out.sum()), epochs_run, best[0], best[1],
        time.perf_counter() - started,
    )  # fmt: skip
    return model, report


def require_torch() -> Any:
    """The torch module, or a ConfigError saying how to install it."""
    try:
        import torch  # type: ignore[import-not-found, unused-ignore]
    except ImportError:
        raise ConfigError(
            "training the LSTM latency model needs torch",
            allowed="pip install 'sincere[ml]' (torch 2.13.0, CPU build)",
        ) from None
    return torch


def _tensors(torch: Any, s: Samples, stats: dict[str, FloatArray]) -> dict[str, Any]:
    entries = standardise_entries(s.entries, s.present, stats["entry_mean"], stats["entry_std"])
    current = (s.current - stats["current_mean"]) / stats["current_std"]
    target = (s.target - stats["target_mean"]) / stats["target_std"]

    def t(x: npt.NDArray[Any]) -> Any:
        return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))

    return {
        "entries": t(entries),
        "current": t(current),
        "target": t(target),
        "valid": t(s.valid.astype(np.float32)),
    }


def _nll(torch: Any, out: Any, target: Any, valid: Any) -> Any:
    """Mean Gaussian negative log-likelihood over the valid targets."""
    mu = out[:, 0::2]
    log_sigma = torch.clamp(out[:, 1::2], MIN_LOG_SIGMA, MAX_LOG_SIGMA)
    z = (target - mu) * torch.exp(-log_sigma)
    per = 0.5 * z * z + log_sigma
    return (per * valid).sum() / valid.sum().clamp(min=1.0)


class _Net:
    """The LSTM and its head as torch modules (no subclassing: torch stays optional)."""

    def __init__(self, torch: Any, num_entry: int, num_current: int, p: LstmParams) -> None:
        self.torch = torch
        self.lstm = torch.nn.LSTM(num_entry, p.hidden, batch_first=True)
        self.head = torch.nn.Sequential(
            torch.nn.Linear(p.hidden + num_current, p.head),
            torch.nn.ReLU(),
            torch.nn.Linear(p.head, 4),
        )

    def parameters(self) -> list[Any]:
        return [*self.lstm.parameters(), *self.head.parameters()]

    def __call__(self, entries: Any, current: Any) -> Any:
        _, (h, _) = self.lstm(entries)
        return self.head(self.torch.cat([h[-1], current], dim=1))

    def state(self) -> list[Any]:
        return [p.detach().clone() for p in self.parameters()]

    def load(self, state: list[Any]) -> None:
        with self.torch.no_grad():
            for p, saved in zip(self.parameters(), state, strict=True):
                p.copy_(saved)


def _fit(
    torch: Any,
    s: Samples,
    stats: dict[str, FloatArray],
    p: LstmParams,
    progress: EpochProgress | None,
) -> tuple[_Net, tuple[int, float], int]:
    torch.manual_seed(p.seed)
    torch.use_deterministic_algorithms(True)
    data = _tensors(torch, s, stats)
    net = _Net(torch, s.entries.shape[-1], s.current.shape[-1], p)
    opt = torch.optim.Adam(net.parameters(), lr=p.learning_rate)
    train_ix = torch.from_numpy(np.flatnonzero(~s.held_out))
    held_ix = torch.from_numpy(np.flatnonzero(s.held_out))
    gen = torch.Generator().manual_seed(p.seed)
    best = (0, math.inf)
    best_state = net.state()
    epoch = 0
    for epoch in range(1, p.epochs + 1):
        order = train_ix[torch.randperm(len(train_ix), generator=gen)]
        for start in range(0, len(order), p.batch_size):
            ix = order[start : start + p.batch_size]
            opt.zero_grad()
            out = net(data["entries"][ix], data["current"][ix])
            _nll(torch, out, data["target"][ix], data["valid"][ix]).backward()
            opt.step()
        with torch.no_grad():
            out = net(data["entries"][held_ix], data["current"][held_ix])
            loss = float(_nll(torch, out, data["target"][held_ix], data["valid"][held_ix]))
        if progress is not None:
            progress(epoch, p.epochs, loss)
        if loss < best[1]:
            best, best_state = (epoch, loss), net.state()
        elif epoch - best[0] >= p.patience:
            break
    net.load(best_state)
    return net, best, epoch


def _weights(net: _Net, stats: dict[str, FloatArray]) -> LstmWeights:
    def a(x: Any) -> FloatArray:
        return np.asarray(x.detach().numpy(), dtype=np.float64)

    lstm, first, last = net.lstm, net.head[0], net.head[2]
    return LstmWeights(
        w_ih=a(lstm.weight_ih_l0),
        w_hh=a(lstm.weight_hh_l0),
        b=a(lstm.bias_ih_l0) + a(lstm.bias_hh_l0),
        w1=a(first.weight),
        b1=a(first.bias),
        w2=a(last.weight),
        b2=a(last.bias),
        **stats,
    )
