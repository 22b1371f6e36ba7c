"""Closed-form sums of piecewise-affine step times.

A run of decode iterations of the same ``n`` sequences grows the summed context by
``n`` tokens per step, so any iteration time that is affine in the context is an
arithmetic series over the steps. The roofline (max of a compute and a memory
line), the clamped binned regression and the confidential wrapper's latency floor
are all maxima of such lines; :func:`sum_max_affine` sums them exactly by splitting
the run where the two lines cross. This keeps the simulator's jump over identical
iterations exact instead of approximate.
"""

from __future__ import annotations

import math


def sum_affine(first: float, slope: float, num_steps: int) -> float:
    """Sum of ``first + slope*k`` for ``k = 0 .. num_steps-1``."""
    if num_steps <= 0:
        return 0.0
    return num_steps * first + slope * num_steps * (num_steps - 1) / 2.0


def sum_max_affine(
    first_a: float, slope_a: float, first_b: float, slope_b: float, num_steps: int
) -> float:
    """Exact sum over ``k = 0 .. num_steps-1`` of ``max(a + sa*k, b + sb*k)``.

    The difference of two lines changes sign at most once, so the run splits into a
    prefix where one line dominates and a suffix where the other does.
    """
    if num_steps <= 0:
        return 0.0
    gap0 = first_a - first_b  # a - b at k = 0
    gap_slope = slope_a - slope_b
    if gap_slope == 0.0 or (gap0 >= 0.0) == (gap0 + gap_slope * (num_steps - 1) >= 0.0):
        # One line dominates over the whole run.
        if gap0 >= 0.0:
            return sum_affine(first_a, slope_a, num_steps)
        return sum_affine(first_b, slope_b, num_steps)
    cross = -gap0 / gap_slope  # real-valued crossing step
    split = min(max(math.floor(cross) + 1, 0), num_steps)  # first step past the crossing
    head_a = gap0 >= 0.0  # line a dominates the prefix
    head = sum_affine(first_a if head_a else first_b, slope_a if head_a else slope_b, split)
    tail_first_a = first_a + slope_a * split
    tail_first_b = first_b + slope_b * split
    tail = sum_affine(
        tail_first_b if head_a else tail_first_a,
        slope_b if head_a else slope_a,
        num_steps - split,
    )
    return head + tail
