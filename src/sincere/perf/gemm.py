"""One GEMM's time on one GPU: the roofline's tiled compute and memory traffic, overlapped.

A ``k × n`` weight matrix (``weight_bytes`` a weight) multiplies ``tokens`` activations.
Compute is ``2 k n`` FLOPs per token, the token count rounded up to a multiple of
``token_tile`` above one tile (the steps measured kernels take); traffic is the weights
once plus the activations in and out. The two overlap as ``(compute^p + memory^p)^(1/p)``
with ``p = overlap_exponent`` (``inf``: the larger). Under fp8 or NVFP4 compute the
activations are quantised first: a fixed kernel cost and a time per input element more,
on the memory side (``fp8_gemm_kernel_s`` / ``fp8_act_s``, ``nvfp4_gemm_kernel_s`` /
``nvfp4_act_s``: fitted per GPU as a time, not as bytes at the GPU's bandwidth, because
it carries between GPUs as a time: 3.2-5.4 ps an element on the five fp8 GPUs measured,
where the same cost read as bytes spans 3.8-20), and the kernel steps at its own token
tile (``fp8_token_tile``, ``nvfp4_token_tile``).
Last, where the GPU's measured GEMMs of that kind were fitted, the time takes their factor
by shape (:func:`gemm_grid`, :mod:`sincere.perf.shape_grid`): what the form leaves of
the real kernels' tile and split choices. Both the dense roofline and the
per-architecture step price their GEMMs here.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sincere.perf.roofline import RooflineParams
    from sincere.perf.shape_grid import ShapeGrid


def overlap_s(p: float, compute: float, memory: float) -> float:
    """``(compute^p + memory^p)^(1/p)``, seconds; the larger for ``p = inf`` or no work."""
    high = compute if compute > memory else memory
    if math.isinf(p) or high <= 0.0:
        return high
    low = compute if compute <= memory else memory
    return high * math.pow(1.0 + math.pow(low / high, p), 1.0 / p)


def gemm_grid(
    params: RooflineParams, compute_precision: str, weight_bytes: float
) -> ShapeGrid | None:
    """The factor by shape of a GEMM with ``weight_bytes`` weights under
    ``compute_precision``: the measured family it belongs to (16-bit weights: bf16; fp8 or
    NVFP4 compute of quantised weights: that family); None where no family measured such
    GEMMs (weight-only quantisation) or ``shape_corrections`` is off."""
    if not params.shape_corrections:
        return None
    if weight_bytes >= 2.0:
        return params.gemm_bf16_grid
    if compute_precision == "fp8":
        return params.gemm_fp8_grid
    if compute_precision == "nvfp4":
        return params.gemm_nvfp4_grid
    return None


def gemm_s(
    params: RooflineParams,
    k: int,
    n: int,
    weight_bytes: float,
    tokens: int,
    rates: tuple[float, float],
    quant: tuple[float, float, int] | None,
    grid: ShapeGrid | None = None,
) -> float:
    """One GEMM over ``tokens`` tokens at ``rates`` (FLOP/s, HBM bytes/s), seconds;
    ``quant``: its activations are quantised first at this (fixed cost s, seconds per
    input element) and its kernel steps at its token tile (see the module); None: they are
    not, and it steps at ``token_tile``. ``grid``: the factor by shape it takes
    (:func:`gemm_grid`)."""
    peak, hbm = rates
    tile = params.token_tile if quant is None else quant[2]
    tiled = tokens if tokens <= tile else tile * math.ceil(tokens / tile)
    compute = 2.0 * k * n * tiled / peak
    moved = k * n * weight_bytes
    moved += (k + n) * tokens * params.activation_bytes
    if quant is not None:
        memory = moved / hbm + k * tokens * quant[1]
        out = quant[0] + overlap_s(params.overlap_exponent, compute, memory)
    else:
        out = overlap_s(params.overlap_exponent, compute, moved / hbm)
    if grid is not None:
        out *= grid.factor_along(tokens, (n, k))
    return out
