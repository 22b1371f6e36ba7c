"""A kernel family's factor by shape: what its measured rows show beyond the roofline's form.

The roofline prices a GEMM from a handful of fitted constants (a share of the peak, a share
of the bandwidth, an overlap, a tile). Real kernels also pick tile shapes, split-K and
pipeline depths by problem size, which moves their time by some percent up or down in ways
no few-constant form follows; over a GPU's measured vLLM GEMMs that is most of what the
form leaves (its own rows' mean error 9-16 %). A :class:`ShapeGrid` keeps that part as a
factor that is piecewise linear in ``log2`` of each size between nodes (multilinear over
the axes, constant beyond the outer nodes), fitted to the rows' log residuals with a ridge
toward 1 (:func:`sincere.fit.kernel_grids.fit_shape_grid`). It is smooth by construction:
a node is shared by every shape within two octaves of it, so a shape that was never
measured takes its neighbours' factor rather than a row's own noise (the leave-one-shape-
out check in ``benchmarks/step_fit.py`` measures that).

Which families carry one, and the axes of each, are the fit's
(:mod:`sincere.fit.kernel_grids`): the GEMMs over tokens, output and input features; prefill
attention over query tokens per sequence, sequences, query heads and query heads per KV head.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sincere.core.errors import ConfigError


@dataclass(frozen=True, slots=True)
class GridAxis:
    """Nodes ``lo, ..., hi`` (``log2`` of a size), ``nodes`` of them, evenly spaced."""

    lo: float
    hi: float
    nodes: int

    def __post_init__(self) -> None:
        if self.nodes < 2 or not self.hi > self.lo:
            raise ConfigError(
                "a shape-grid axis needs hi > lo and at least 2 nodes",
                value=(self.lo, self.hi, self.nodes),
                allowed="[lo, hi, nodes] with hi > lo, nodes >= 2",
            )

    def locate(self, size: float) -> tuple[int, float]:
        """(node below, weight of the node above) of ``size``; clamped to the outer nodes."""
        last = self.nodes - 1
        t = (math.log2(size) - self.lo) / (self.hi - self.lo) * last if size > 0 else 0.0
        if t <= 0.0:
            return 0, 0.0
        if t >= last:
            return last - 1, 1.0
        j = int(t)
        return j, t - j


@dataclass(frozen=True, slots=True)
class ShapeGrid:
    """``log_factors`` at every node of ``axes`` (the first axis slowest), see the module."""

    axes: tuple[GridAxis, ...]
    log_factors: tuple[float, ...]
    # the log factors along the first axis' nodes at fixed other sizes, as asked for
    _lines: dict[tuple[float, ...], tuple[float, ...]] = field(
        default_factory=dict, init=False, repr=False, compare=False, hash=False
    )
    # factors at whole sizes, as asked for (:meth:`factor_at`)
    _points: dict[tuple[float, ...], float] = field(
        default_factory=dict, init=False, repr=False, compare=False, hash=False
    )
    # factors under a cost's monotone envelope, as asked for (:meth:`lowest_ahead`)
    _ahead: dict[tuple[float, ...], float] = field(
        default_factory=dict, init=False, repr=False, compare=False, hash=False
    )

    def __post_init__(self) -> None:
        if not self.axes:
            raise ConfigError("a shape grid needs at least one axis")
        count = math.prod(a.nodes for a in self.axes)
        if len(self.log_factors) != count:
            raise ConfigError(
                "a shape grid needs one log factor per node",
                value=len(self.log_factors),
                allowed=str(count),
            )
        if not all(math.isfinite(v) for v in self.log_factors):
            raise ConfigError("a shape grid's log factors must be finite numbers")

    def log_factor(self, sizes: Sequence[float]) -> float:
        """The natural log of the factor at ``sizes`` (one per axis, in the axes' order)."""
        if len(sizes) != len(self.axes):
            raise ValueError(f"{len(sizes)} sizes for a grid of {len(self.axes)} axes")
        corners: list[tuple[int, float]] = [(0, 1.0)]
        for axis, size in zip(self.axes, sizes, strict=True):
            j, w = axis.locate(size)
            grown: list[tuple[int, float]] = []
            for at, weight in corners:
                base = at * axis.nodes + j
                grown.append((base, weight * (1.0 - w)))
                grown.append((base + 1, weight * w))
            corners = grown
        values = self.log_factors
        total = 0.0
        for at, weight in corners:
            if weight:
                total += weight * values[at]
        return total

    def factor(self, sizes: Sequence[float]) -> float:
        """The factor a kernel of these ``sizes`` takes (1: as the roofline prices it)."""
        return math.exp(self.log_factor(sizes))

    def factor_along(self, size: float, rest: tuple[float, ...]) -> float:
        """:meth:`factor` at ``(size, *rest)``, the same number: with the other sizes
        fixed the interpolation is piecewise linear along the first axis between its
        nodes, whose values at ``rest`` are computed once per ``rest`` (a GEMM's features)
        and kept, so a step pays one lookup per GEMM."""
        line = self._line(rest)
        j, w = self.axes[0].locate(size)
        return math.exp(line[j] * (1.0 - w) + line[j + 1] * w if w else line[j])

    def _line(self, rest: tuple[float, ...]) -> tuple[float, ...]:
        """The log factors at the first axis' nodes with the other sizes at ``rest``,
        computed once per ``rest``."""
        line = self._lines.get(rest)
        if line is None:
            first = self.axes[0]
            step = (first.hi - first.lo) / (first.nodes - 1)
            line = tuple(
                self.log_factor((2.0 ** (first.lo + j * step), *rest)) for j in range(first.nodes)
            )
            self._lines[rest] = line
        return line

    def factor_at(self, sizes: tuple[float, ...]) -> float:
        """:meth:`factor` at ``sizes``, kept once asked for (an all-reduce's few message
        sizes come back every step)."""
        got = self._points.get(sizes)
        if got is None:
            got = self._points[sizes] = self.factor(sizes)
        return got

    def lowest_ahead(self, sizes: tuple[float, ...], fixed: float, slope: float) -> float:
        """The factor at ``sizes`` lowered to the monotone envelope of the cost it scales:
        with ``fixed + slope · s`` the form's price at a first size ``s`` (the rest held),
        ``sizes``' cost is the least cost at any first size from its own up, as a factor of
        its own form. A dispatcher that picks its algorithm by size can run a smaller input
        the way it runs a larger one, so a bump where a smaller call measured slower than a
        larger one is not what it pays. Exact: between two nodes the factor is
        ``t ** c`` times a constant (linear in ``log2 t``), so the cost's least there is at
        an end or where ``(fixed + slope · t) · t ** c`` turns, ``t = −c · fixed / (slope ·
        (1 + c))``; below the first node and beyond the last the factor is constant and
        the cost grows. Kept once asked for."""
        key = (*sizes, fixed, slope)
        got = self._ahead.get(key)
        if got is not None:
            return got
        size, rest = sizes[0], sizes[1:]
        own = fixed + slope * size
        if own <= 0.0:
            got = self._ahead[key] = self.factor_at(sizes)
            return got
        first = self.axes[0]
        step = (first.hi - first.lo) / (first.nodes - 1)
        line = self._line(rest)
        best = start = self.log_factor(sizes) + math.log(own)
        for j in range(first.nodes - 1):
            right = 2.0 ** (first.lo + (j + 1) * step)
            if right <= size:
                continue
            left = max(size, 2.0 ** (first.lo + j * step))
            power = (line[j + 1] - line[j]) / (step * math.log(2.0))  # the factor's t ** power
            best = min(best, line[j + 1] + math.log(fixed + slope * right))
            if slope > 0.0 and -1.0 < power < 0.0:
                turn = -power * fixed / (slope * (1.0 + power))
                if left < turn < right:
                    at = line[j] + power * math.log(turn / 2.0 ** (first.lo + j * step))
                    best = min(best, at + math.log(fixed + slope * turn))
        # nothing cheaper ahead: the grid's own factor, to the bit
        got = self._ahead[key] = self.factor_at(sizes) if best >= start else math.exp(best) / own
        return got

    @classmethod
    def from_mapping(cls, value: Any, name: str) -> ShapeGrid:
        """A grid from ``{axes: [[lo, hi, nodes], ...], log_factors: [...]}`` (a fit file's
        form); a ``ConfigError`` naming ``name`` for anything else."""
        if isinstance(value, ShapeGrid):
            return value
        if not isinstance(value, Mapping) or set(value) != {"axes", "log_factors"}:
            raise ConfigError(
                f"{name} must be a mapping of axes and log_factors",
                value=value if not isinstance(value, Mapping) else sorted(value),
                allowed="{axes: [[lo, hi, nodes], ...], log_factors: [numbers]}",
            )
        try:
            axes = tuple(GridAxis(float(lo), float(hi), int(n)) for lo, hi, n in value["axes"])
            logs = tuple(float(v) for v in value["log_factors"])
        except (TypeError, ValueError):
            raise ConfigError(
                f"{name}: axes must be [lo, hi, nodes] triples and log_factors numbers",
                value=value["axes"],
            ) from None
        return cls(axes, logs)

    def as_dict(self) -> dict[str, Any]:
        """The fit file's form (:meth:`from_mapping` reads it back)."""
        return {
            "axes": [[a.lo, a.hi, a.nodes] for a in self.axes],
            "log_factors": list(self.log_factors),
        }


def prefill_factor(
    grid: ShapeGrid | None, q_heads: int, tokens: float, num_seqs: float, group: float
) -> float:
    """The factor a prefill attention kernel over ``num_seqs`` chunks of ``tokens`` query
    tokens in all takes (1 without a grid): ``grid`` (prefill attention's) at the chunks'
    mean length, their count, the GPU's ``q_heads`` and its query heads per KV head
    (``group``, :func:`kv_group`; a grid of three axes, fitted before that axis, reads
    the first three only); a share of a batch's counts (micro-batches) is rounded to whole
    chunks and tokens first. The one place the step models and the latency routers' fleet
    pass take it from."""
    if grid is None or num_seqs <= 0:
        return 1.0
    seqs = max(1, round(num_seqs))
    if len(grid.axes) == 3:
        return grid.factor_along(round(tokens) / seqs, (float(seqs), float(q_heads)))
    return grid.factor_along(round(tokens) / seqs, (float(seqs), float(q_heads), group))


def kv_group(q_heads: int, kv_heads: int) -> float:
    """Query heads per KV head on one GPU (``q_heads`` over ``kv_heads``, at least 1): the
    prefill attention grid's fourth size."""
    return max(1.0, q_heads / max(1, kv_heads))


def allreduce_factor(
    grid: ShapeGrid | None,
    nbytes: float,
    gpus: float,
    eager: bool,
    form: tuple[float, float],
) -> float:
    """The factor one all-reduce of ``nbytes`` over ``gpus`` GPUs takes (1 without a grid):
    the all-reduce's grid (message bytes, GPUs, 1 in a CUDA graph or 2 outside one) fitted to
    the GPU's measured calls, under the monotone envelope of the call's time, whose affine
    price ``form`` gives (seconds fixed, seconds per byte; :meth:`ShapeGrid.lowest_ahead`):
    a serving engine picks its all-reduce by message size (one-shot, two-shot, symmetric
    memory, NCCL), so no call costs it more than any larger one. The one place every step
    model takes it from."""
    if grid is None:
        return 1.0
    return grid.lowest_ahead((nbytes, gpus, 2.0 if eager else 1.0), form[0], form[1])
