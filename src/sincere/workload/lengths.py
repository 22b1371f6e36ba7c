"""Length distributions: how many prompt tokens a request has and how many it generates.

Single distributions (registered in :data:`LENGTHS`) draw one column of token counts,
integers >= ``min_tokens`` (1) and, when ``max_tokens`` is set, clipped to it:

* ``fixed`` -- always ``tokens``.
* ``uniform`` -- integers uniform in ``[low, high]``.
* ``lognormal`` -- by ``median`` and ``sigma`` (of log tokens) or by ``mean`` and ``std``
  (of tokens), rounded.
* ``empirical`` -- resampled from ``samples``, or inverse-CDF from a ``quantiles`` table
  (equally spaced probability levels 0..1, linear interpolation), or from a shipped
  table (``source: azure-conv-2023``, ``column: prompt|output``).

Joint samplers draw (prompt, output) pairs together, since real lengths are
correlated: :class:`PairedLengths` resamples (or replays) the pairs of a trace, and
:class:`CopulaLengths` draws from shipped tables: 1001 marginal quantiles per column
plus a 2-D histogram of the pairs' normalised ranks (an empirical copula on a grid),
so both marginals and their dependence survive without shipping the trace. The
tables in ``sincere/data/lengths/`` come from the Azure LLM inference trace 2023
(Microsoft, CC-BY 4.0; Patel et al., "Splitwise", ISCA 2024) via
``scripts/derive_lengths.py``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from sincere.core.errors import ConfigError, DataError
from sincere.core.registry import Registry

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]


class LengthDistribution(Protocol):
    """Draws token counts for one column (prompt or output)."""

    def sample(self, rng: np.random.Generator, n: int) -> IntArray:
        """``n`` token counts, each >= 1."""
        ...


class JointLengths(Protocol):
    """Draws (prompt, output) token counts together."""

    def sample(self, rng: np.random.Generator, n: int) -> tuple[IntArray, IntArray]:
        """``n`` prompt lengths and ``n`` output lengths, each >= 1."""
        ...


LENGTHS: Registry[type[Any]] = Registry("length distribution")
"""Single-column length distribution classes by ``kind`` name."""


def make_lengths(kind: str, **params: Any) -> LengthDistribution:
    """Build the length distribution registered as ``kind`` from keyword parameters."""
    dist: LengthDistribution = LENGTHS.get(kind)(**params)
    return dist


def _to_tokens(x: FloatArray, min_tokens: int, max_tokens: int | None) -> IntArray:
    hi = max_tokens if max_tokens is not None else np.iinfo(np.int64).max
    return np.clip(np.rint(x), min_tokens, hi).astype(np.int64)


def _check_bounds(owner: str, min_tokens: int, max_tokens: int | None) -> None:
    if min_tokens < 1:
        raise ConfigError(f"{owner}: min_tokens must be >= 1", value=min_tokens)
    if max_tokens is not None and max_tokens < min_tokens:
        raise ConfigError(
            f"{owner}: max_tokens must be >= min_tokens ({min_tokens})", value=max_tokens
        )


@LENGTHS.register("fixed")
@dataclass(frozen=True, slots=True)
class Fixed:
    """Every request has exactly ``tokens`` tokens."""

    tokens: int

    def __post_init__(self) -> None:
        if self.tokens < 1:
            raise ConfigError("fixed: tokens must be >= 1", value=self.tokens)

    def sample(self, rng: np.random.Generator, n: int) -> IntArray:
        """``n`` copies of ``tokens``."""
        return np.full(n, self.tokens, dtype=np.int64)


@LENGTHS.register("uniform")
@dataclass(frozen=True, slots=True)
class Uniform:
    """Integers uniform in ``[low, high]`` (both included)."""

    low: int
    high: int

    def __post_init__(self) -> None:
        if not 1 <= self.low <= self.high:
            raise ConfigError(
                "uniform: need 1 <= low <= high", value=(self.low, self.high), allowed="low>=1"
            )

    def sample(self, rng: np.random.Generator, n: int) -> IntArray:
        """``n`` uniform integers."""
        return rng.integers(self.low, self.high, n, endpoint=True, dtype=np.int64)


@LENGTHS.register("lognormal")
@dataclass(frozen=True, slots=True)
class LogNormal:
    """Log-normal token counts, by ``median`` and ``sigma`` or by ``mean`` and ``std``."""

    median: float | None = None
    sigma: float | None = None  # std of log(tokens)
    mean: float | None = None
    std: float | None = None
    min_tokens: int = 1
    max_tokens: int | None = None

    def __post_init__(self) -> None:
        by_median = self.median is not None and self.sigma is not None
        by_mean = self.mean is not None and self.std is not None
        if by_median == by_mean:
            raise ConfigError(
                "lognormal: give either median and sigma, or mean and std",
                value={"median": self.median, "sigma": self.sigma, "mean": self.mean},
            )
        for name in ("median", "mean"):
            v = getattr(self, name)
            if v is not None and not (v > 0 and math.isfinite(v)):
                raise ConfigError(f"lognormal: {name} must be > 0", value=v)
        for name in ("sigma", "std"):
            v = getattr(self, name)
            if v is not None and not (v >= 0 and math.isfinite(v)):
                raise ConfigError(f"lognormal: {name} must be >= 0", value=v)
        _check_bounds("lognormal", self.min_tokens, self.max_tokens)

    @property
    def mu_sigma(self) -> tuple[float, float]:
        """Parameters (mu, sigma) of log(tokens)."""
        if self.median is not None and self.sigma is not None:
            return math.log(self.median), self.sigma
        mean, std = float(self.mean or 1.0), float(self.std or 0.0)
        s2 = math.log1p((std / mean) ** 2)
        return math.log(mean) - s2 / 2.0, math.sqrt(s2)

    def sample(self, rng: np.random.Generator, n: int) -> IntArray:
        """``n`` rounded log-normal draws, clipped to the bounds."""
        mu, sigma = self.mu_sigma
        return _to_tokens(rng.lognormal(mu, sigma, n), self.min_tokens, self.max_tokens)


def _interp_quantiles(quantiles: FloatArray, u: FloatArray) -> FloatArray:
    levels = np.linspace(0.0, 1.0, len(quantiles))
    return np.asarray(np.interp(u, levels, quantiles), dtype=np.float64)


@LENGTHS.register("empirical")
@dataclass(frozen=True, slots=True, eq=False)
class Empirical:
    """Resample observed lengths, or invert a quantile table; clip to ``max_tokens``.

    Give exactly one of ``samples`` (token counts), ``quantiles`` (values at equally
    spaced probability levels from 0 to 1, non-decreasing) or ``source`` with ``column``
    (a shipped table, see :func:`length_sources`).
    """

    samples: tuple[int, ...] | None = None
    quantiles: tuple[float, ...] | None = None
    source: str | None = None
    column: str = "prompt"
    min_tokens: int = 1
    max_tokens: int | None = None
    _values: FloatArray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        given = [x is not None for x in (self.samples, self.quantiles, self.source)]
        if sum(given) != 1:
            raise ConfigError(
                "empirical: give exactly one of samples, quantiles, source",
                allowed=["samples", "quantiles", "source"],
            )
        _check_bounds("empirical", self.min_tokens, self.max_tokens)
        if self.source is not None:
            table = load_length_table(self.source)
            values = table.quantiles(self.column)
        else:
            values = np.asarray(self.samples or self.quantiles, dtype=np.float64)
        if len(values) < 1 or not np.all(np.isfinite(values)) or values.min() < 0:
            raise ConfigError("empirical: values must be finite, >= 0 and not empty")
        if self.quantiles is not None and (len(values) < 2 or np.any(np.diff(values) < 0)):
            raise ConfigError("empirical: quantiles must be >= 2 non-decreasing values")
        object.__setattr__(self, "_values", values)

    def sample(self, rng: np.random.Generator, n: int) -> IntArray:
        """``n`` draws: bootstrap of ``samples`` or inverse CDF of the quantile table."""
        if self.samples is not None:
            x = self._values[rng.integers(0, len(self._values), n)]
        else:
            x = _interp_quantiles(self._values, rng.random(n))
        return _to_tokens(x, self.min_tokens, self.max_tokens)


@dataclass(frozen=True, slots=True)
class Independent:
    """Prompt and output lengths drawn independently of each other."""

    prompt: LengthDistribution
    output: LengthDistribution

    def sample(self, rng: np.random.Generator, n: int) -> tuple[IntArray, IntArray]:
        """``n`` independent (prompt, output) pairs."""
        return self.prompt.sample(rng, n), self.output.sample(rng, n)


@dataclass(frozen=True, slots=True, eq=False)
class PairedLengths:
    """The (prompt, output) pairs of a trace, resampled together (or replayed in order).

    With ``replay`` the i-th request takes the i-th pair (wrapping around), so a trace
    can be replayed exactly; otherwise pairs are drawn uniformly with replacement.
    """

    prompt_tokens: IntArray
    output_tokens: IntArray
    max_prompt_tokens: int | None = None
    max_output_tokens: int | None = None
    replay: bool = False

    def __post_init__(self) -> None:
        p = np.asarray(self.prompt_tokens, dtype=np.int64)
        o = np.asarray(self.output_tokens, dtype=np.int64)
        if len(p) == 0 or len(p) != len(o):
            raise ConfigError("paired lengths need equally many (>0) prompt and output lengths")
        object.__setattr__(self, "prompt_tokens", p)
        object.__setattr__(self, "output_tokens", o)
        _check_bounds("paired lengths", 1, self.max_prompt_tokens)
        _check_bounds("paired lengths", 1, self.max_output_tokens)

    def sample(self, rng: np.random.Generator, n: int) -> tuple[IntArray, IntArray]:
        """``n`` pairs, clipped to the caps."""
        if self.replay:
            ix = np.arange(n) % len(self.prompt_tokens)
        else:
            ix = rng.integers(0, len(self.prompt_tokens), n)
        p = _clip(self.prompt_tokens[ix], self.max_prompt_tokens)
        return p, _clip(self.output_tokens[ix], self.max_output_tokens)


def _clip(x: IntArray, max_tokens: int | None) -> IntArray:
    return np.clip(x, 1, max_tokens if max_tokens is not None else None).astype(np.int64)


@dataclass(frozen=True, slots=True, eq=False)
class CopulaLengths:
    """Joint lengths from marginal quantile tables and a grid copula of their ranks.

    ``counts[i, j]`` is how many trace pairs had prompt rank in ``[i/g, (i+1)/g)`` and
    output rank in ``[j/g, (j+1)/g)`` (``g`` = grid size). A draw picks a cell by
    those counts, a uniform point inside it, and maps both coordinates through the
    marginal quantile functions.
    """

    prompt_quantiles: FloatArray
    output_quantiles: FloatArray
    counts: IntArray
    max_prompt_tokens: int | None = None
    max_output_tokens: int | None = None

    def __post_init__(self) -> None:
        counts = np.asarray(self.counts, dtype=np.int64)
        if counts.ndim != 2 or counts.shape[0] != counts.shape[1] or counts.sum() <= 0:
            raise ConfigError("copula counts must be a square grid with a positive total")
        object.__setattr__(self, "counts", counts)
        _check_bounds("copula lengths", 1, self.max_prompt_tokens)
        _check_bounds("copula lengths", 1, self.max_output_tokens)

    @classmethod
    def fit(
        cls, prompt: IntArray, output: IntArray, *, num_quantiles: int = 1001, grid: int = 32
    ) -> CopulaLengths:
        """Fit marginals and the rank grid to observed pairs."""
        p = np.asarray(prompt, dtype=np.float64)
        o = np.asarray(output, dtype=np.float64)
        levels = np.linspace(0.0, 1.0, num_quantiles)

        def cells(x: FloatArray) -> IntArray:
            ranks = (np.argsort(np.argsort(x, kind="stable"), kind="stable") + 0.5) / len(x)
            return np.minimum((ranks * grid).astype(np.int64), grid - 1)

        counts = np.zeros((grid, grid), dtype=np.int64)
        np.add.at(counts, (cells(p), cells(o)), 1)
        return cls(np.quantile(p, levels), np.quantile(o, levels), counts)

    def sample(self, rng: np.random.Generator, n: int) -> tuple[IntArray, IntArray]:
        """``n`` (prompt, output) pairs."""
        g = self.counts.shape[0]
        cdf = np.cumsum(self.counts.ravel()).astype(np.float64)
        cell = np.searchsorted(cdf, rng.random(n) * cdf[-1], side="right")
        u = (cell // g + rng.random(n)) / g
        v = (cell % g + rng.random(n)) / g
        p = _to_tokens(_interp_quantiles(self.prompt_quantiles, u), 1, self.max_prompt_tokens)
        o = _to_tokens(_interp_quantiles(self.output_quantiles, v), 1, self.max_output_tokens)
        return p, o


@dataclass(frozen=True, slots=True, eq=False)
class LengthTable:
    """A shipped length table: marginal quantiles, rank-grid copula and attribution."""

    name: str
    attribution: str
    num_pairs: int
    prompt: FloatArray
    output: FloatArray
    copula_counts: IntArray

    def quantiles(self, column: str) -> FloatArray:
        """The quantile table of ``column`` (``prompt`` or ``output``)."""
        if column not in ("prompt", "output"):
            raise ConfigError("unknown length column", value=column, allowed=["prompt", "output"])
        return self.prompt if column == "prompt" else self.output

    def joint(
        self, max_prompt_tokens: int | None = None, max_output_tokens: int | None = None
    ) -> CopulaLengths:
        """A joint sampler for this table, with optional caps."""
        return CopulaLengths(
            self.prompt, self.output, self.copula_counts, max_prompt_tokens, max_output_tokens
        )


def _data_dir() -> Any:
    return resources.files("sincere") / "data" / "lengths"


def length_sources() -> list[str]:
    """Names of the shipped length tables (e.g. ``azure-conv-2023``)."""
    files = _data_dir().iterdir()
    return sorted(f.name[:-5].replace("_", "-") for f in files if f.name.endswith(".json"))


@cache
def load_length_table(name: str) -> LengthTable:
    """The shipped table ``name`` (see :func:`length_sources`)."""
    if name not in length_sources():
        raise ConfigError("unknown length source", value=name, allowed=length_sources())
    path = _data_dir() / (name.replace("-", "_") + ".json")
    raw = json.loads(path.read_text(encoding="utf-8"))
    try:
        return LengthTable(
            name=name,
            attribution=str(raw["attribution"]),
            num_pairs=int(raw["num_pairs"]),
            prompt=np.asarray(raw["prompt_quantiles"], dtype=np.float64),
            output=np.asarray(raw["output_quantiles"], dtype=np.float64),
            copula_counts=np.asarray(raw["copula_counts"], dtype=np.int64),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise DataError(f"malformed length table: {exc}", path=str(path)) from None
