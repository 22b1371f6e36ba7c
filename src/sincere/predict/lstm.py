"""The sequence latency model: an LSTM over an instance's recent history, served in NumPy.

The reference router predicts each instance's latency with an LSTM over the recent
request history. :class:`LstmLatency` is that model once trained
(:func:`sincere.predict.lstm_train.train_lstm`, which needs torch): one model shared
by every instance, whose history says how fast that instance is. For a request it
gives a lognormal distribution of TTFT and of time per output token
(:class:`~sincere.predict.slo.LatencyDistribution`: a mean and a spread of each
logarithm), from which come the point estimate routers use (medians) and the
probability of meeting an SLO (:func:`~sincere.predict.slo.distribution_slo_probability`).

Architecture: the history window (:mod:`sincere.predict.features`, standardised) runs
through a one-layer LSTM (torch's gate order: input, forget, cell, output); its last
hidden state and the current features feed a ReLU layer and a linear layer giving
``(mu, log sigma)`` of each standardised log target.

Cost. The history only changes when an instance finishes a request: ``observe`` only
appends to the instance's window, and the LSTM runs over every changed window in one
pass (:meth:`LstmLatency.refresh`, called by the next prediction or by the driver off
the hot path), keeping the ReLU layer's share of each. A prediction then costs one
small matrix product for the current features; :meth:`LstmLatency.distributions` does
it for all candidate instances at once. Inference is NumPy only: routing with a trained
file needs no torch.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from sincere.core.errors import ConfigError
from sincere.core.types import InstanceId, Seconds
from sincere.predict.features import (
    CURRENT_FEATURES,
    ENTRY_FEATURES,
    HISTORY_COLUMNS,
    TARGETS,
    History,
    current_raw,
    entry_features,
)
from sincere.predict.latency import (
    LatencyEstimate,
    RouteContext,
    time_per_output_token,
)
from sincere.predict.saved import Arrays, ModelHeader, check_model, read_model, save_model
from sincere.predict.slo import LatencyDistribution

FloatArray = npt.NDArray[np.float64]

KIND = "latency-lstm"
SCHEMA: dict[str, Any] = {
    "entry_features": list(ENTRY_FEATURES),
    "current_features": list(CURRENT_FEATURES),
    "targets": list(TARGETS),
}
"""The feature schema a latency model file must carry."""

ARRAYS: tuple[str, ...] = (
    "w_ih",
    "w_hh",
    "b",
    "w1",
    "b1",
    "w2",
    "b2",
    "entry_mean",
    "entry_std",
    "current_mean",
    "current_std",
    "target_mean",
    "target_std",
)
"""The arrays of a latency model file (see :class:`LstmWeights`)."""

MIN_LOG_SIGMA, MAX_LOG_SIGMA = -4.0, 2.0
"""Bounds of a predicted log spread (standardised units), in training and here."""


@dataclass(frozen=True, eq=False)
class LstmWeights:
    """The trained arrays (float64), named as in the file."""

    w_ih: FloatArray  # (4H, entry features): LSTM input weights, gates i, f, g, o
    w_hh: FloatArray  # (4H, H): LSTM recurrent weights
    b: FloatArray  # (4H,): both LSTM biases summed
    w1: FloatArray  # (M, H + current features): ReLU layer
    b1: FloatArray  # (M,)
    w2: FloatArray  # (4, M): mu and log sigma of each standardised target
    b2: FloatArray  # (4,)
    entry_mean: FloatArray  # standardisation of the entry features (present excluded)
    entry_std: FloatArray
    current_mean: FloatArray
    current_std: FloatArray
    target_mean: FloatArray  # of the log targets
    target_std: FloatArray

    @property
    def hidden(self) -> int:
        """LSTM state size H."""
        return int(self.w_hh.shape[1])

    def arrays(self) -> dict[str, FloatArray]:
        """The arrays by file name."""
        return {name: getattr(self, name) for name in ARRAYS}


def lstm_last_state(w: LstmWeights, entries: FloatArray) -> FloatArray:
    """The LSTM's last hidden state for standardised windows (requests, length, features).

    The sigmoid gates use ``sigmoid(x) = (1 + tanh(x / 2)) / 2``, so each step takes a
    single ``tanh`` over all four gates.
    """
    hid = w.hidden
    n, length, _ = entries.shape
    scale = np.full(4 * hid, 0.5)
    scale[2 * hid : 3 * hid] = 1.0  # the cell candidate is a plain tanh
    gates_in = (entries @ w.w_ih.T + w.b) * scale
    w_hh = w.w_hh.T * scale
    h = np.zeros((n, hid))
    c = np.zeros((n, hid))
    for t in range(length):
        a = np.tanh(gates_in[:, t] + h @ w_hh)
        sig = 0.5 + 0.5 * a
        c = sig[:, hid : 2 * hid] * c + sig[:, :hid] * a[:, 2 * hid : 3 * hid]
        h = sig[:, 3 * hid :] * np.tanh(c)
    return h


def standardise_entries(
    raw: FloatArray, present: npt.NDArray[np.bool_], mean: FloatArray, std: FloatArray
) -> FloatArray:
    """Entry features standardised; the ``present`` flag stays 0/1 and padding all 0."""
    out = raw.copy()
    out[..., :-1] = (raw[..., :-1] - mean) / std
    out[~present] = 0.0
    return out


def standard_entries(w: LstmWeights, history: History) -> FloatArray:
    """The standardised entry features of ``history`` (:func:`standardise_entries`)."""
    return standardise_entries(entry_features(history), history.present, w.entry_mean, w.entry_std)


@dataclass(frozen=True, eq=False)
class _Head:
    """The head with both standardisations folded in (for serving).

    ``z = W1[:, :H] h + b1 + W1[:, H:] (x - mean) / std = part(h) + x @ wc`` where
    ``part(h)`` already holds ``-W1[:, H:] mean / std``; the output layer is scaled so
    it gives mu in log-seconds directly.
    """

    wc: FloatArray  # (current features, M)
    shift: FloatArray  # (M,)
    w2: FloatArray  # (M, 4), target scale folded in
    b2: FloatArray  # (4,), target mean folded in
    target_std: FloatArray  # (2,)

    @classmethod
    def of(cls, w: LstmWeights) -> _Head:
        wc = (w.w1[:, w.hidden :] / w.current_std).T
        scale = np.array([w.target_std[0], 1.0, w.target_std[1], 1.0])
        offset = np.array([w.target_mean[0], 0.0, w.target_mean[1], 0.0])
        return cls(wc, -(w.current_mean @ wc), w.w2.T * scale, w.b2 * scale + offset, w.target_std)

    def part(self, w: LstmWeights, h: FloatArray) -> FloatArray:
        """The hidden states' share of the ReLU layer's input, one row per state."""
        return np.asarray(h @ w.w1[:, : w.hidden].T + w.b1 + self.shift, dtype=np.float64)

    def outputs(self, part: FloatArray, current: FloatArray) -> FloatArray:
        """Rows of :class:`~sincere.predict.slo.LatencyDistribution` fields (log-seconds)."""
        out = np.maximum(part + current @ self.wc, 0.0) @ self.w2 + self.b2
        log_sigma = np.clip(out[:, 1::2], MIN_LOG_SIGMA, MAX_LOG_SIGMA)
        out[:, 1::2] = np.exp(log_sigma) * self.target_std
        return np.asarray(out, dtype=np.float64)


def predict_windows(w: LstmWeights, history: History, current: FloatArray) -> FloatArray:
    """Batch prediction from raw windows and current features (``log1p`` applied).

    Rows of (ttft mu, ttft sigma, tpot mu, tpot sigma) in log-seconds.
    """
    head = _Head.of(w)
    h = lstm_last_state(w, standard_entries(w, history))
    return head.outputs(head.part(w, h), current)


class _Instance:
    """One instance's recent outcomes; its summary is row ``row`` of the model's parts."""

    __slots__ = ("entries", "last_finish_at", "row", "stale")

    def __init__(self, length: int, row: int) -> None:
        self.entries: deque[tuple[float, ...]] = deque(maxlen=length)  # HISTORY_COLUMNS
        self.last_finish_at: float | None = None  # latest finish in the window
        self.row = row
        self.stale = False  # the window changed since its summary was computed


class LstmLatency:
    """A trained sequence model as a latency predictor (module docstring).

    ``predict`` returns ``None`` until the instance has finished ``min_history``
    requests (routers explore it first), then the medians of :meth:`distribution`.
    ``observe`` only appends to the instance's window; the LSTM runs over every changed
    window at once at the next prediction, or when the driver calls :meth:`refresh`
    (off a router's hot path). With ``refresh_on_observe`` the window is summarised at
    once when its outcome arrives, so decisions never run the LSTM (one pass per outcome
    instead of one batched pass per decision).
    """

    def __init__(
        self,
        weights: LstmWeights,
        history: int,
        min_history: int = 1,
        refresh_on_observe: bool = False,
    ) -> None:
        if history < 1 or min_history < 0:
            raise ConfigError(
                "need history >= 1 and min_history >= 0",
                value=(history, min_history),
                allowed="history >= 1, min_history >= 0",
            )
        self.weights = weights
        self.length = history
        self.min_history = min_history
        self.refresh_on_observe = refresh_on_observe
        self._head = _Head.of(weights)
        self._instances: dict[InstanceId, _Instance] = {}
        self._parts = self._summarise([deque()])  # row 0: an instance with no history

    @classmethod
    def load(
        cls, path: str | Path, min_history: int = 1, refresh_on_observe: bool = False
    ) -> LstmLatency:
        """The model in ``path`` (a ``latency-lstm`` file from ``sincere predict train``)."""
        header, data = read_model(path)
        return cls.from_read(path, header, data, min_history, refresh_on_observe)

    @classmethod
    def from_read(
        cls,
        path: str | Path,
        header: ModelHeader,
        data: Arrays,
        min_history: int = 1,
        refresh_on_observe: bool = False,
    ) -> LstmLatency:
        """The model of a file already read with ``read_model``, checked as :meth:`load` does."""
        check_model(path, header, data, KIND, SCHEMA, ARRAYS)
        weights = LstmWeights(**{name: data[name] for name in ARRAYS})
        return cls(weights, int(header.params["history"]), min_history, refresh_on_observe)

    def save(self, path: str | Path, params: dict[str, Any], provenance: dict[str, Any]) -> Path:
        """Write the model to ``path`` (``params`` must include ``history``)."""
        header = ModelHeader(KIND, SCHEMA, {**params, "history": self.length}, provenance)
        return save_model(path, header, self.weights.arrays())

    def _summarise(self, windows: Sequence[deque[tuple[float, ...]]]) -> FloatArray:
        """The head's share of each window's last LSTM state, in one LSTM pass."""
        w = self.weights
        h = lstm_last_state(w, standard_entries(w, _windows(windows, self.length)))
        return self._head.part(w, h)

    def observe(
        self,
        instance: InstanceId,
        ctx: RouteContext,
        ttft_s: Seconds,
        e2e_s: Seconds,
        output_tokens: int,
    ) -> None:
        """Add a finished request (routed with ``ctx``) to its instance's window."""
        tpot = time_per_output_token(ttft_s, e2e_s, output_tokens)
        finish = ctx.routed_at + e2e_s
        entry = (
            ctx.routed_at, finish, ttft_s, tpot, ctx.prompt_tokens, output_tokens,
            ctx.num_running, ctx.num_waiting, ctx.waiting_prefill_tokens, ctx.num_outstanding,
        )  # fmt: skip
        state = self._instances.get(instance)
        if state is None:
            state = self._instances[instance] = _Instance(self.length, len(self._parts))
            self._parts = np.concatenate([self._parts, self._parts[:1]])
        state.entries.append(tuple(float(x) for x in entry))
        state.last_finish_at = max(e[1] for e in state.entries)
        state.stale = True
        if self.refresh_on_observe:
            self.refresh([instance])

    def refresh(self, instances: Sequence[InstanceId] | None = None) -> int:
        """Run the LSTM over the changed windows (of ``instances``, or all); how many."""
        names = self._instances if instances is None else instances
        stale = [s for s in (self._instances.get(i) for i in names) if s and s.stale]
        if stale:
            self._parts[[s.row for s in stale]] = self._summarise([s.entries for s in stale])
            for state in stale:
                state.stale = False
        return len(stale)

    def num_observed(self, instance: InstanceId) -> int:
        """Outcomes in ``instance``'s window (at most ``history``)."""
        state = self._instances.get(instance)
        return 0 if state is None else len(state.entries)

    def distributions(
        self, instances: Sequence[InstanceId], ctxs: Sequence[RouteContext]
    ) -> list[LatencyDistribution | None]:
        """:meth:`distribution` of each (instance, context) pair, in one matrix product."""
        out: list[LatencyDistribution | None] = [None] * len(instances)
        states = [self._instances.get(i) for i in instances]
        ready = [k for k, s in enumerate(states) if _size(s) >= self.min_history]
        if not ready:
            return out
        if any(s.stale for s in states if s is not None):
            self.refresh(instances)
        rows = [0 if (s := states[k]) is None else s.row for k in ready]
        raw = [_current(states[k], ctxs[k]) for k in ready]
        found = self._head.outputs(self._parts[rows], np.log1p(np.array(raw)))
        for k, values in zip(ready, found.tolist(), strict=True):
            out[k] = LatencyDistribution(*values)
        return out

    def distribution(self, instance: InstanceId, ctx: RouteContext) -> LatencyDistribution | None:
        """Lognormal TTFT and TPOT of a request on ``instance``; ``None`` before ``min_history``."""
        return self.distributions([instance], [ctx])[0]

    def predict(self, instance: InstanceId, ctx: RouteContext) -> LatencyEstimate | None:
        """Medians of :meth:`distribution`, E2E for ``ctx.expected_output_tokens``."""
        dist = self.distribution(instance, ctx)
        return None if dist is None else dist.estimate(ctx.expected_output_tokens)


def _size(state: _Instance | None) -> int:
    return 0 if state is None else len(state.entries)


def _current(state: _Instance | None, ctx: RouteContext) -> tuple[float, ...]:
    """The current features of ``ctx`` on an instance with this window."""
    load = (
        float(ctx.num_running),
        float(ctx.num_waiting),
        float(ctx.waiting_prefill_tokens),
        float(ctx.num_outstanding),
    )
    last, num = (None, 0) if state is None else (state.last_finish_at, len(state.entries))
    return current_raw(float(ctx.routed_at), float(ctx.prompt_tokens), load, last, num)


def _windows(windows: Sequence[deque[tuple[float, ...]]], length: int) -> History:
    """Left-padded windows from raw entries (oldest first), one row each."""
    values = np.zeros((len(HISTORY_COLUMNS), len(windows), length))
    present = np.zeros((len(windows), length), dtype=np.bool_)
    for row, entries in enumerate(windows):
        if entries:
            k = len(entries)
            values[:, row, length - k :] = np.array(entries).T
            present[row, length - k :] = True
    return History(dict(zip(HISTORY_COLUMNS, values, strict=True)), present)
