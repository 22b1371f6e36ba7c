"""Features of the sequence latency model, built the same way offline and online.

The reference router's latency predictor is an LSTM over an instance's recent request
history (arrival time, latency, input and output length). Here that history is, for a
request arriving at ``now`` on an instance, the last ``length`` requests that instance
*finished* before ``now`` -- the only ones whose latencies a router can know --
oldest first, left-padded when there are fewer. Each entry is described by
:data:`ENTRY_FEATURES`: its TTFT and time per output token, its prompt and output
tokens, the gaps to the previous entry's arrival and finish (arrival times enter as
gaps, so the features do not depend on the clock's origin), and the instance's load
when that request arrived. The request itself and the instance's load now are
:data:`CURRENT_FEATURES`, with the time since the last finish and the history's size.

Times enter as logarithms (latencies in seconds, floored at :data:`MIN_SECONDS`; gaps
as ``log1p`` of milliseconds, signed for arrival gaps, which can be negative in finish
order), counts as ``log1p``. Padding entries are all zeros, ``present`` included.

:func:`windows` builds every request's history from a run's records at once;
:class:`~sincere.predict.lstm.LstmLatency` keeps one window per instance as outcomes
arrive; both go through :func:`entry_features` and :func:`current_features`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:  # the records module reads Parquet: imported by its users only
    from sincere.predict.records import Served

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]

ENTRY_FEATURES: tuple[str, ...] = (
    "log_ttft",
    "log_tpot",
    "log_prompt_tokens",
    "log_output_tokens",
    "arrival_gap",
    "finish_gap",
    "log_running",
    "log_waiting",
    "log_waiting_tokens",
    "log_outstanding",
    "present",
)
"""Features of one history entry (a finished request), in order."""

CURRENT_FEATURES: tuple[str, ...] = (
    "log_prompt_tokens",
    "log_running",
    "log_waiting",
    "log_waiting_tokens",
    "log_outstanding",
    "log_since_last_finish",
    "log_history",
)
"""Features of the request being routed and of its instance now, in order."""

TARGETS: tuple[str, ...] = ("log_ttft", "log_tpot")
"""What the model predicts (a mean and a spread of each)."""

MIN_SECONDS = 1e-4
"""Floor of a latency before its logarithm (a one-token request has TPOT 0)."""

HISTORY_COLUMNS: tuple[str, ...] = (
    "arrival_at",
    "finished_at",
    "ttft_s",
    "tpot_s",
    "prompt_tokens",
    "output_tokens",
    "running",
    "waiting",
    "waiting_tokens",
    "outstanding",
)
"""Raw columns of a history entry (the :class:`~sincere.predict.records.Served` names)."""


@dataclass(frozen=True, eq=False)
class History:
    """Raw history windows: ``values[name]`` has shape (requests, length); padding is 0."""

    values: dict[str, FloatArray]
    present: BoolArray  # False on padding entries

    @property
    def length(self) -> int:
        """Entries per window."""
        return int(self.present.shape[1])


def _log_s(seconds: FloatArray) -> FloatArray:
    return np.log(np.maximum(seconds, MIN_SECONDS))


def _log_ms(seconds: FloatArray) -> FloatArray:
    """``sign(x) * log1p(|x| in ms)``."""
    return np.sign(seconds) * np.log1p(np.abs(seconds) * 1000.0)


def _gaps(values: FloatArray, present: BoolArray) -> FloatArray:
    """Difference to the previous present entry of the window (0 for the first one)."""
    prev = np.concatenate([values[:, :1], values[:, :-1]], axis=1)
    prev_ok = np.concatenate([np.zeros_like(present[:, :1]), present[:, :-1]], axis=1)
    return np.where(present & prev_ok, values - prev, 0.0)


def entry_features(history: History) -> FloatArray:
    """Shape (requests, length, len(ENTRY_FEATURES)), in that order; zeros on padding."""
    v, present = history.values, history.present
    columns = [
        _log_s(v["ttft_s"]),
        _log_s(v["tpot_s"]),
        np.log(np.maximum(v["prompt_tokens"], 1.0)),
        np.log(np.maximum(v["output_tokens"], 1.0)),
        _log_ms(_gaps(v["arrival_at"], present)),
        _log_ms(_gaps(v["finished_at"], present)),
        np.log1p(v["running"]),
        np.log1p(v["waiting"]),
        np.log1p(v["waiting_tokens"]),
        np.log1p(v["outstanding"]),
        present.astype(np.float64),
    ]
    out = np.stack(columns, axis=-1)
    out[~present] = 0.0
    return out


def current_raw(
    now: float,
    prompt_tokens: float,
    load: tuple[float, float, float, float],
    last_finish_at: float | None,
    num_history: int,
) -> tuple[float, ...]:
    """One request's :data:`CURRENT_FEATURES` before ``log1p``: each feature is ``log1p`` of it.

    ``load`` is its instance's (running, waiting, waiting prompt tokens, outstanding) now;
    ``last_finish_at`` the latest finish in the window (``None`` when it is empty). The
    caller applies ``np.log1p`` to many rows at once (:func:`current_features`).
    """
    running, waiting, waiting_tokens, outstanding = load
    since = 0.0 if last_finish_at is None else max(now - last_finish_at, 0.0)
    return (
        max(prompt_tokens, 1.0) - 1.0,  # log1p(p - 1) = log(p)
        running,
        waiting,
        waiting_tokens,
        outstanding,
        since * 1000.0,
        float(num_history),
    )


def current_features(served: Served, history: History) -> FloatArray:
    """``log1p`` of :func:`current_raw` for every served request at its arrival.

    Shape (requests, len(CURRENT_FEATURES)).
    """
    present = history.present
    num = present.sum(axis=1).tolist()
    last = np.where(present, history.values["finished_at"], -np.inf).max(axis=1).tolist()
    columns = (served.running, served.waiting, served.waiting_tokens, served.outstanding)
    rows = [
        current_raw(t, p, (r, w, q, o), lf if k else None, k)
        for t, p, r, w, q, o, lf, k in zip(
            served.arrival_at.tolist(),
            served.prompt_tokens.tolist(),
            *(c.tolist() for c in columns),
            last,
            num,
            strict=True,
        )
    ]
    raw = np.array(rows, dtype=np.float64).reshape(len(rows), len(CURRENT_FEATURES))
    return np.log1p(raw)


def targets(ttft_s: FloatArray, tpot_s: FloatArray) -> FloatArray:
    """Shape (requests, 2): log TTFT and log TPOT (see :data:`TARGETS`)."""
    return np.stack([_log_s(ttft_s), _log_s(tpot_s)], axis=-1)


def windows(served: Served, length: int) -> History:
    """Each served request's history on its instance when it arrived (see the docstring).

    Finish ties are ordered by arrival, as :func:`finish_order` gives them.
    """
    n = len(served)
    index = np.full((n, length), -1, dtype=np.int64)
    steps = np.arange(length, dtype=np.int64)
    for e in range(len(served.instances)):
        mine = np.flatnonzero(served.instance == e)
        done = mine[np.lexsort((mine, served.finished_at[mine]))]
        num_done = np.searchsorted(served.finished_at[done], served.arrival_at[mine], "left")
        pos = num_done[:, None] - length + steps[None, :]
        index[mine] = np.where(pos >= 0, done[np.maximum(pos, 0)], -1)
    present = index >= 0
    take = np.maximum(index, 0)
    values = {
        name: np.where(present, np.asarray(getattr(served, name), dtype=np.float64)[take], 0.0)
        for name in HISTORY_COLUMNS
    }
    return History(values, present)


def finish_order(served: Served) -> npt.NDArray[np.int64]:
    """Positions of the served requests by finish time (ties by arrival position)."""
    positions = np.arange(len(served), dtype=np.int64)
    return positions[np.lexsort((positions, served.finished_at))]
