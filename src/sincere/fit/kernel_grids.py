"""Fitting a kernel family's factor by shape (:mod:`sincere.perf.shape_grid`).

After a family's constants are fitted, the log residuals of its rows (measured over
predicted) are fitted by a function that is piecewise linear in ``log2`` of each size axis
between evenly spaced nodes (the tensor product of hat functions): least squares with a
ridge toward no correction, so a node no row reaches stays at a factor of 1 and a node few
rows reach moves little. Deterministic (a linear solve).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from sincere.perf.shape_grid import GridAxis, ShapeGrid

FArray = npt.NDArray[np.float64]

GEMM_GRID_AXES = (GridAxis(0.0, 16.0, 9), GridAxis(8.0, 16.0, 5), GridAxis(8.0, 16.0, 5))
"""A GEMM's grid: tokens (1 to 65,536, a node every two octaves), output and input features
(256 to 65,536, a node every two octaves) -- the measured tables' range."""

PREFILL_ATTENTION_GRID_AXES = (
    GridAxis(0.0, 14.0, 8),
    GridAxis(0.0, 8.0, 5),
    GridAxis(0.0, 6.0, 4),
    GridAxis(0.0, 6.0, 4),
)
"""Prefill attention's grid: query tokens per sequence (1 to 16,384), sequences (1 to 256),
query heads on the GPU (1 to 64) and query heads per KV head (1: MHA, to 64), a node every
two octaves: the kernel fills the GPU's SMs with (sequence, head, query tile) blocks, and
few of them leave it half idle; a group of query heads shares its KV head's tiles, which
MHA loads once per query head (its rows miss the form by twice GQA's without this axis)."""

ALLREDUCE_GRID_AXES = (GridAxis(10.0, 27.0, 18), GridAxis(1.0, 3.0, 3), GridAxis(0.0, 1.0, 2))
"""The all-reduce's grid: message bytes (1 KB to 128 MB, a node every octave: vLLM switches
algorithm and launch shape by size, in steps an octave apart), GPUs (2, 4, 8) and 1 + eager
(1: in a CUDA graph, 2: outside one)."""

ALLREDUCE_GRID_RIDGE = 0.05
"""The all-reduce grid's ridge: its nodes are the measured sizes themselves (one or two rows
each), which the grid should follow rather than shrink toward the form."""

GRID_RIDGE = 1.0
"""The ridge toward a factor of 1, against a sum of squares over thousands of rows: it
decides only nodes that few rows reach."""


def hat_basis(sizes: FArray, axis: GridAxis) -> FArray:
    """Each row's weight on each node of ``axis`` (two neighbours, summing to 1), as
    :meth:`GridAxis.locate` weighs them (clamped to the outer nodes)."""
    last = axis.nodes - 1
    t = (np.log2(sizes) - axis.lo) / (axis.hi - axis.lo) * last
    t = np.clip(t, 0.0, float(last))
    j = np.minimum(np.floor(t).astype(int), last - 1)
    w = t - j
    out = np.zeros((len(sizes), axis.nodes))
    rows = np.arange(len(sizes))
    out[rows, j] = 1.0 - w
    out[rows, j + 1] += w
    return out


def grid_design(sizes: Sequence[FArray], axes: Sequence[GridAxis]) -> FArray:
    """The rows' weights on every node of the grid (the first axis slowest)."""
    design = hat_basis(sizes[0], axes[0])
    for values, axis in zip(sizes[1:], axes[1:], strict=True):
        basis = hat_basis(values, axis)
        design = (design[:, :, None] * basis[:, None, :]).reshape(len(values), -1)
    return design


def fit_shape_grid(
    sizes: Sequence[FArray],
    log_residuals: FArray,
    axes: Sequence[GridAxis],
    ridge: float = GRID_RIDGE,
) -> ShapeGrid:
    """The grid over ``axes`` whose log factor best meets ``log_residuals`` (log of measured
    over predicted, one per row of ``sizes``), with ``ridge`` toward 0."""
    if len(sizes) != len(axes):
        raise ValueError(f"{len(sizes)} size columns for {len(axes)} axes")
    design = grid_design(sizes, axes)
    normal = design.T @ design + ridge * np.eye(design.shape[1])
    coef = np.linalg.solve(normal, design.T @ log_residuals)
    return ShapeGrid(tuple(axes), tuple(float(v) for v in coef))


def grid_log_factors(grid: ShapeGrid, sizes: Sequence[FArray]) -> FArray:
    """The grid's log factor at every row of ``sizes`` (vectorised :meth:`ShapeGrid.log_factor`)."""
    out: FArray = grid_design(sizes, grid.axes) @ np.asarray(grid.log_factors)
    return out
