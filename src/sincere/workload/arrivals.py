"""Arrival processes: when requests come.

Each process is a small frozen dataclass whose ``times(rng, num_requests=,
duration_s=)`` returns sorted absolute arrival times (seconds from 0), drawn in bulk
with NumPy. Give ``num_requests``, ``duration_s`` or both (whichever ends first).

Processes and where they come from:

* ``poisson`` -- exponential inter-arrivals at ``rate`` req/s (Niyama, SINCERE "gamma").
* ``gamma`` -- renewal process with Gamma inter-arrivals of mean ``1/rate`` and
  coefficient of variation ``cv`` (shape ``1/cv^2``): ``cv > 1`` is burstier than Poisson.
* ``constant`` -- evenly spaced arrivals.
* ``steps`` -- a Poisson process whose rate changes at given times.
* ``diurnal`` -- a sinusoidal rate ``mean * (1 + amplitude * sin(2 pi t / period))``,
  drawn by thinning a Poisson process (Lewis & Shedler).
* ``sincere-bursty`` / ``sincere-ramp`` -- SINCERE's traffic patterns with the exact
  parameters of its experiments (docs/references.md, SINCERE); ``preset(mean=4|8|12)``.
* ``trace`` -- replay of recorded times, optionally rescaled in time or to a target rate.

Kinds are registered in :data:`ARRIVALS` by name; :func:`make_arrival` builds one.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

import numpy as np
import numpy.typing as npt

from sincere.core.errors import ConfigError
from sincere.core.registry import Registry

FloatArray = npt.NDArray[np.float64]
_EMPTY: FloatArray = np.zeros(0, dtype=np.float64)


class ArrivalProcess(Protocol):
    """Anything that draws sorted arrival times."""

    def times(
        self,
        rng: np.random.Generator,
        *,
        num_requests: int | None = None,
        duration_s: float | None = None,
    ) -> FloatArray:
        """Sorted arrival times in seconds from 0; stops at ``num_requests`` or ``duration_s``."""
        ...


ARRIVALS: Registry[type[Any]] = Registry("arrival process")
"""Arrival process classes by ``kind`` name."""


def make_arrival(kind: str, **params: Any) -> ArrivalProcess:
    """Build the arrival process registered as ``kind`` from keyword parameters."""
    cls = ARRIVALS.get(kind)
    process: ArrivalProcess = cls(**params)
    return process


def _check_limits(num_requests: int | None, duration_s: float | None) -> None:
    if num_requests is None and duration_s is None:
        raise ConfigError(
            "an arrival process needs num_requests or duration_s", allowed="either or both"
        )
    if num_requests is not None and num_requests < 0:
        raise ConfigError("num_requests must be >= 0", value=num_requests)
    if duration_s is not None and not (duration_s > 0 and math.isfinite(duration_s)):
        raise ConfigError("duration_s must be a finite number > 0", value=duration_s)


def _positive(owner: str, name: str, value: float) -> None:
    if not (value > 0 and math.isfinite(value)):
        raise ConfigError(f"{owner}: {name} must be a finite number > 0", value=value)


def _expected(rate: float, duration_s: float | None) -> int:
    return math.ceil(rate * (duration_s or 0.0))


def _trim(t: FloatArray, num_requests: int | None, duration_s: float | None) -> FloatArray:
    if duration_s is not None:
        t = t[: int(np.searchsorted(t, duration_s, side="left"))]
    if num_requests is not None:
        t = t[:num_requests]
    return t


def _renewal(
    gaps: Callable[[int], FloatArray],
    rate: float,
    num_requests: int | None,
    duration_s: float | None,
) -> FloatArray:
    """Cumulative sums of i.i.d. gaps until the limits are reached (chunked when open-ended)."""
    _check_limits(num_requests, duration_s)
    if num_requests is not None:
        return _trim(np.cumsum(gaps(num_requests)), num_requests, duration_s)
    assert duration_s is not None
    chunks: list[FloatArray] = []
    end = 0.0
    while end < duration_s:
        want = int(rate * (duration_s - end) * 1.1) + 16
        chunk = end + np.cumsum(gaps(want))
        chunks.append(chunk)
        end = float(chunk[-1])
    return _trim(np.concatenate(chunks), None, duration_s)


class _Renewal:
    """A renewal process: i.i.d. inter-arrival gaps of mean ``1 / rate``, drawn by
    :meth:`gaps` (a subclass's distribution) and summed by :func:`_renewal`."""

    __slots__ = ()
    rate: float

    def gaps(self, rng: np.random.Generator) -> Callable[[int], FloatArray]:
        """A draw of ``k`` gaps from ``rng``."""
        raise NotImplementedError

    def times(
        self,
        rng: np.random.Generator,
        *,
        num_requests: int | None = None,
        duration_s: float | None = None,
    ) -> FloatArray:
        """Sorted arrival times (see :class:`ArrivalProcess`)."""
        return _renewal(self.gaps(rng), self.rate, num_requests, duration_s)


@ARRIVALS.register("poisson")
@dataclass(frozen=True, slots=True)
class Poisson(_Renewal):
    """Poisson arrivals: exponential inter-arrival times at ``rate`` requests per second."""

    rate: float

    def __post_init__(self) -> None:
        _positive("poisson", "rate", self.rate)

    def gaps(self, rng: np.random.Generator) -> Callable[[int], FloatArray]:
        """Exponential gaps of mean ``1 / rate``."""
        scale = 1.0 / self.rate

        def draw(k: int) -> FloatArray:
            return np.asarray(rng.exponential(scale, k), dtype=np.float64)

        return draw


@ARRIVALS.register("gamma")
@dataclass(frozen=True, slots=True)
class Gamma(_Renewal):
    """Gamma renewal arrivals: mean rate ``rate`` req/s, inter-arrival CV ``cv`` (1 = Poisson)."""

    rate: float
    cv: float = 1.0

    def __post_init__(self) -> None:
        _positive("gamma", "rate", self.rate)
        _positive("gamma", "cv", self.cv)

    def gaps(self, rng: np.random.Generator) -> Callable[[int], FloatArray]:
        """Gamma gaps of shape ``1 / cv**2`` and mean ``1 / rate``."""
        shape = 1.0 / self.cv**2
        scale = 1.0 / (self.rate * shape)  # mean gap = shape * scale = 1 / rate

        def draw(k: int) -> FloatArray:
            return np.asarray(rng.gamma(shape, scale, k), dtype=np.float64)

        return draw


@ARRIVALS.register("constant")
@dataclass(frozen=True, slots=True)
class Constant:
    """Deterministic arrivals every ``1/rate`` seconds, the first at ``1/rate``."""

    rate: float

    def __post_init__(self) -> None:
        _positive("constant", "rate", self.rate)

    def times(
        self,
        rng: np.random.Generator,
        *,
        num_requests: int | None = None,
        duration_s: float | None = None,
    ) -> FloatArray:
        """Sorted arrival times (see :class:`ArrivalProcess`); ``rng`` is unused."""
        _check_limits(num_requests, duration_s)
        n = num_requests if num_requests is not None else _expected(self.rate, duration_s)
        return _trim(np.arange(1, n + 1, dtype=np.float64) / self.rate, num_requests, duration_s)


def _inhomogeneous(
    rng: np.random.Generator,
    rate_at: Callable[[FloatArray], FloatArray],
    max_rate: float,
    num_requests: int | None,
    duration_s: float | None,
) -> FloatArray:
    """Thinning: candidates at ``max_rate``, each kept with probability ``rate_at(t)/max_rate``."""
    _check_limits(num_requests, duration_s)
    kept: list[FloatArray] = []
    num_kept, end = 0, 0.0
    while True:
        want = num_requests - num_kept if num_requests is not None else 0
        horizon = duration_s - end if duration_s is not None else math.inf
        k = int(min(max(want, 1) * 2.5, horizon * max_rate * 1.1) + 64)
        cand = end + np.cumsum(rng.exponential(1.0 / max_rate, k))
        accept = rng.random(k) * max_rate < rate_at(cand)
        kept.append(cand[accept])
        num_kept += int(accept.sum())
        end = float(cand[-1])
        if (duration_s is not None and end >= duration_s) or (
            num_requests is not None and num_kept >= num_requests
        ):
            return _trim(np.concatenate(kept), num_requests, duration_s)


class _Thinned:
    """A Poisson process whose rate varies in time, drawn by :func:`_inhomogeneous`: a
    subclass gives the rate at given times and the rate it never exceeds."""

    __slots__ = ()

    def rate_at(self, t: FloatArray) -> FloatArray:
        """The instantaneous rate (req/s) at times ``t``."""
        raise NotImplementedError

    @property
    def peak_rate(self) -> float:
        """The largest rate (req/s): candidates are drawn at it."""
        raise NotImplementedError

    def times(
        self,
        rng: np.random.Generator,
        *,
        num_requests: int | None = None,
        duration_s: float | None = None,
    ) -> FloatArray:
        """Sorted arrival times (see :class:`ArrivalProcess`)."""
        return _inhomogeneous(rng, self.rate_at, self.peak_rate, num_requests, duration_s)


@ARRIVALS.register("steps")
@dataclass(frozen=True, slots=True)
class Steps(_Thinned):
    """Poisson arrivals whose rate changes in steps: ``steps = [(at_s, rate), ...]``.

    The first step must start at 0; each rate holds until the next step (the last one
    forever). A rate of 0 makes a silent period.
    """

    steps: tuple[tuple[float, float], ...]

    def __post_init__(self) -> None:
        steps = tuple((float(a), float(r)) for a, r in self.steps)
        object.__setattr__(self, "steps", steps)
        if not steps or steps[0][0] != 0.0:
            raise ConfigError("steps: the first step must start at 0", value=self.steps)
        at = [a for a, _ in steps]
        if any(b <= a for a, b in itertools.pairwise(at)):
            raise ConfigError("steps: step times must increase", value=at)
        rates = [r for _, r in steps]
        if any(not (r >= 0 and math.isfinite(r)) for r in rates) or max(rates) <= 0:
            raise ConfigError("steps: rates must be >= 0 and not all 0", value=rates)
        if rates[-1] <= 0:
            raise ConfigError("steps: the last rate must be > 0 (it holds forever)", value=rates)

    def rate_at(self, t: FloatArray) -> FloatArray:
        """The rate of the step each of ``t`` falls in."""
        at = np.array([a for a, _ in self.steps])
        rates = np.array([r for _, r in self.steps])
        out: FloatArray = rates[np.searchsorted(at, t, side="right") - 1]
        return out

    @property
    def peak_rate(self) -> float:
        """The largest step's rate."""
        return max(r for _, r in self.steps)


@ARRIVALS.register("diurnal")
@dataclass(frozen=True, slots=True)
class Diurnal(_Thinned):
    """Sinusoidal rate ``mean * (1 + amplitude * sin(2 pi t / period_s + phase))``, by thinning.

    ``amplitude`` is relative, in [0, 1]; ``period_s`` defaults to a day.
    """

    mean: float
    amplitude: float = 0.5
    period_s: float = 86_400.0
    phase: float = 0.0  # radians

    def __post_init__(self) -> None:
        _positive("diurnal", "mean", self.mean)
        _positive("diurnal", "period_s", self.period_s)
        if not 0.0 <= self.amplitude <= 1.0:
            raise ConfigError(
                "diurnal: amplitude must be within [0, 1]", value=self.amplitude, allowed="0..1"
            )

    def rate_at(self, t: FloatArray) -> FloatArray:
        """The instantaneous rate (req/s) at times ``t``."""
        wave = np.sin(2.0 * np.pi * t / self.period_s + self.phase)
        return np.asarray(self.mean * (1.0 + self.amplitude * wave), dtype=np.float64)

    @property
    def peak_rate(self) -> float:
        """The wave's crest."""
        return self.mean * (1.0 + self.amplitude)


def _uniform_range(owner: str, name: str, lo_hi: tuple[float, float], low: float = 0.0) -> None:
    lo, hi = lo_hi
    if not (low <= lo <= hi and math.isfinite(hi)):
        raise ConfigError(
            f"{owner}: {name} must be a range (lo, hi) with {low} <= lo <= hi", value=lo_hi
        )


@ARRIVALS.register("sincere-bursty")
@dataclass(frozen=True, slots=True)
class SincereBursty:
    """SINCERE's bursty on/off traffic: burst and idle periods alternate, starting with a burst.

    Each period draws its length and its rate uniformly from the given ranges
    (seconds, req/s); arrivals inside a period are Poisson at that rate. Mean rate
    = (E[burst_s] E[burst_rate] + E[idle_s] E[idle_rate]) / (E[burst_s] + E[idle_s]).
    SINCERE states the idle rate U(0, 1) for mean 4 only; we use it for 8 and 12 too.
    """

    burst_s: tuple[float, float] = (1.0, 3.0)
    burst_rate: tuple[float, float] = (20.0, 35.0)
    idle_s: tuple[float, float] = (10.0, 18.0)
    idle_rate: tuple[float, float] = (0.0, 1.0)

    PRESETS: ClassVar[dict[int, dict[str, tuple[float, float]]]] = {
        4: {"burst_s": (1, 3), "burst_rate": (20, 35), "idle_s": (10, 18), "idle_rate": (0, 1)},
        8: {"burst_s": (1, 4), "burst_rate": (30, 45), "idle_s": (8, 12), "idle_rate": (0, 1)},
        12: {"burst_s": (1, 4), "burst_rate": (50, 75), "idle_s": (8, 12), "idle_rate": (0, 1)},
    }

    def __post_init__(self) -> None:
        for name in ("burst_s", "burst_rate", "idle_s", "idle_rate"):
            value = tuple(float(v) for v in getattr(self, name))
            if len(value) != 2:
                raise ConfigError(f"sincere-bursty: {name} must be (lo, hi)", value=value)
            object.__setattr__(self, name, value)
            _uniform_range("sincere-bursty", name, (value[0], value[1]))
        if self.burst_s[1] + self.idle_s[1] <= 0 or self.mean_rate <= 0:
            raise ConfigError(
                "sincere-bursty: periods and rates must allow a positive mean rate",
                value=self.mean_rate,
            )

    @classmethod
    def preset(cls, mean: int) -> SincereBursty:
        """SINCERE's parameters for a nominal mean of 4, 8 or 12 req/s."""
        if mean not in cls.PRESETS:
            raise ConfigError("sincere-bursty: no preset", value=mean, allowed=["4", "8", "12"])
        return cls(**cls.PRESETS[mean])

    @property
    def mean_rate(self) -> float:
        """Long-run mean rate (req/s) implied by the parameters."""

        def mid(r: tuple[float, float]) -> float:
            return (r[0] + r[1]) / 2.0

        work = mid(self.burst_s) * mid(self.burst_rate) + mid(self.idle_s) * mid(self.idle_rate)
        return work / (mid(self.burst_s) + mid(self.idle_s))

    def _periods(self, rng: np.random.Generator, k: int) -> tuple[FloatArray, FloatArray]:
        """``2k`` alternating (burst, idle) period lengths and rates."""
        lengths = np.empty(2 * k)
        rates = np.empty(2 * k)
        lengths[0::2] = rng.uniform(*self.burst_s, k)
        lengths[1::2] = rng.uniform(*self.idle_s, k)
        rates[0::2] = rng.uniform(*self.burst_rate, k)
        rates[1::2] = rng.uniform(*self.idle_rate, k)
        return lengths, rates

    def times(
        self,
        rng: np.random.Generator,
        *,
        num_requests: int | None = None,
        duration_s: float | None = None,
    ) -> FloatArray:
        """Sorted arrival times (see :class:`ArrivalProcess`)."""
        _check_limits(num_requests, duration_s)
        cycle = sum(self.burst_s) / 2 + sum(self.idle_s) / 2
        need = duration_s if duration_s is not None else 2.0 * (num_requests or 0) / self.mean_rate
        chunks: list[FloatArray] = []
        start, num = 0.0, 0
        while (duration_s is not None and start < duration_s) or (
            duration_s is None and num < (num_requests or 0)
        ):
            lengths, rates = self._periods(rng, int(need / cycle) + 2)
            starts = start + np.concatenate(([0.0], np.cumsum(lengths)[:-1]))
            counts = rng.poisson(lengths * rates)
            t = np.repeat(starts, counts) + rng.random(int(counts.sum())) * np.repeat(
                lengths, counts
            )
            chunks.append(np.sort(t))
            num += len(t)
            start = float(starts[-1] + lengths[-1])
        return _trim(np.concatenate(chunks) if chunks else _EMPTY, num_requests, duration_s)


@ARRIVALS.register("sincere-ramp")
@dataclass(frozen=True, slots=True)
class SincereRamp(_Thinned):
    """SINCERE's ramp: the rate rises linearly ``min_rate -> max_rate`` over ``rise_s``, falls
    back over ``fall_s``, and repeats (a triangle wave; Poisson arrivals, drawn by thinning).

    Presets by nominal mean: max 7 / 15 / 24 req/s for means 4 / 8 / 12, min 1, 20 s each way.
    """

    max_rate: float = 7.0
    min_rate: float = 1.0
    rise_s: float = 20.0
    fall_s: float = 20.0

    PRESETS: ClassVar[dict[int, float]] = {4: 7.0, 8: 15.0, 12: 24.0}

    def __post_init__(self) -> None:
        _positive("sincere-ramp", "max_rate", self.max_rate)
        _positive("sincere-ramp", "rise_s", self.rise_s)
        _positive("sincere-ramp", "fall_s", self.fall_s)
        if not 0 <= self.min_rate <= self.max_rate:
            raise ConfigError(
                "sincere-ramp: min_rate must be within [0, max_rate]", value=self.min_rate
            )

    @classmethod
    def preset(cls, mean: int) -> SincereRamp:
        """SINCERE's parameters for a nominal mean of 4, 8 or 12 req/s."""
        if mean not in cls.PRESETS:
            raise ConfigError("sincere-ramp: no preset", value=mean, allowed=["4", "8", "12"])
        return cls(max_rate=cls.PRESETS[mean])

    @property
    def mean_rate(self) -> float:
        """Long-run mean rate (req/s): the triangle wave's average."""
        return (self.min_rate + self.max_rate) / 2.0

    def rate_at(self, t: FloatArray) -> FloatArray:
        """The instantaneous rate (req/s) at times ``t``."""
        phase = np.mod(t, self.rise_s + self.fall_s)
        up = phase / self.rise_s
        down = 1.0 - (phase - self.rise_s) / self.fall_s
        frac = np.where(phase < self.rise_s, up, down)
        return np.asarray(self.min_rate + (self.max_rate - self.min_rate) * frac, np.float64)

    @property
    def peak_rate(self) -> float:
        """The top of the triangle."""
        return self.max_rate


@ARRIVALS.register("trace")
@dataclass(frozen=True, slots=True, eq=False)
class TraceReplay:
    """Replay recorded arrival times, shifted to start at 0.

    ``time_scale`` multiplies every gap (2 = half the rate); ``rate`` instead rescales the
    gaps so the mean rate ``(n - 1) / span`` hits that target. With ``loop``, asking for
    more requests than recorded repeats the trace, one mean gap after its end.
    """

    recorded_at: Sequence[float] | FloatArray = field(default_factory=tuple)
    time_scale: float = 1.0
    rate: float | None = None
    loop: bool = False

    def __post_init__(self) -> None:
        t = np.sort(np.asarray(self.recorded_at, dtype=np.float64))
        if len(t) == 0 or not np.all(np.isfinite(t)):
            raise ConfigError("trace replay needs at least one finite arrival time")
        object.__setattr__(self, "recorded_at", t)
        _positive("trace", "time_scale", self.time_scale)
        if self.rate is not None:
            _positive("trace", "rate", self.rate)
            if self.time_scale != 1.0:
                raise ConfigError("trace: give time_scale or rate, not both", value=self.rate)
            if len(t) < 2 or t[-1] == t[0]:
                raise ConfigError("trace: rate needs at least two distinct arrival times")

    def base_times(self) -> FloatArray:
        """The recorded times after shifting to 0 and rescaling."""
        t = np.asarray(self.recorded_at, dtype=np.float64)
        t = t - t[0]
        if self.rate is not None:
            return np.asarray(t * ((len(t) - 1) / t[-1] / self.rate), dtype=np.float64)
        return np.asarray(t * self.time_scale, dtype=np.float64)

    def times(
        self,
        rng: np.random.Generator,
        *,
        num_requests: int | None = None,
        duration_s: float | None = None,
    ) -> FloatArray:
        """Sorted arrival times (see :class:`ArrivalProcess`); ``rng`` is unused."""
        _check_limits(num_requests, duration_s)
        t = self.base_times()
        if self.loop:
            span = t[-1] + (t[-1] / (len(t) - 1) if len(t) > 1 and t[-1] > 0 else 1.0)
            want = num_requests if num_requests is not None else 0
            reps = max(-(-want // len(t)), int(duration_s / span) + 1 if duration_s else 1)
            t = (t[None, :] + span * np.arange(reps)[:, None]).ravel()
        elif num_requests is not None and num_requests > len(t) and duration_s is None:
            raise ConfigError(
                f"trace has {len(t)} arrivals, fewer than num_requests",
                value=num_requests,
                allowed="num_requests <= trace length, or loop: true",
            )
        return _trim(t, num_requests, duration_s)


THINK_TIMES = ("constant", "exponential")
"""How a closed loop's think times are drawn: all ``think_time_s``, or exponential with
that mean."""


@ARRIVALS.register("closed")
@dataclass(frozen=True, slots=True)
class Closed:
    """A closed loop: ``concurrency`` clients, each sending its next request when its last
    one ends (finished or rejected), after a think time.

    The arrival times are decided by the run, not here: :meth:`times` gives ``num_requests``
    placeholders (0.0), which the simulator's loop overwrites as the requests arrive, in
    arrival order. ``think_time`` names the think-time distribution (:data:`THINK_TIMES`)
    of mean ``think_time_s``; the first ``warmup_share`` of the requests (in arrival
    order) are left out of the summary.
    """

    concurrency: int
    think_time_s: float = 0.0
    think_time: str = "constant"
    warmup_share: float = 0.0

    def __post_init__(self) -> None:
        if self.concurrency < 1:
            raise ConfigError("closed: concurrency must be >= 1", value=self.concurrency)
        if not (self.think_time_s >= 0 and math.isfinite(self.think_time_s)):
            raise ConfigError(
                "closed: think_time_s must be a finite number >= 0", value=self.think_time_s
            )
        if self.think_time not in THINK_TIMES:
            raise ConfigError(
                "closed: unknown think_time", value=self.think_time, allowed=list(THINK_TIMES)
            )
        if not 0.0 <= self.warmup_share < 1.0:
            raise ConfigError(
                "closed: warmup_share must be in [0, 1)", value=self.warmup_share, allowed="0..1"
            )

    def times(
        self,
        rng: np.random.Generator,
        *,
        num_requests: int | None = None,
        duration_s: float | None = None,
    ) -> FloatArray:
        """``num_requests`` placeholder times (0.0): the run decides the real ones."""
        if num_requests is None or duration_s is not None:
            raise ConfigError(
                "a closed loop needs num_requests (and no duration_s): its arrivals are "
                "decided by the run",
                value={"num_requests": num_requests, "duration_s": duration_s},
            )
        _check_limits(num_requests, None)
        return np.zeros(num_requests, dtype=np.float64)

    def think_times(self, rng: np.random.Generator, n: int) -> FloatArray:
        """``n`` think times, the ``j``-th for the ``j``-th request to end."""
        if self.think_time == "exponential" and self.think_time_s > 0:
            return np.asarray(rng.exponential(self.think_time_s, n), dtype=np.float64)
        return np.full(n, self.think_time_s, dtype=np.float64)

    def num_warmup(self, n: int) -> int:
        """How many of ``n`` requests (the first to arrive) warm the system up."""
        return int(self.warmup_share * n)
