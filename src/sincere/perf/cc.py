"""Confidential-computing (H100 CC mode) costs added to any step-time model.

In CC mode the GPU computes at native speed but every host↔device transfer goes
through an AES-GCM encrypted bounce buffer in shared memory, and each kernel
launch / copy pays a fixed toll on that channel (the published H100
confidential-computing studies, docs/references.md).
:class:`Confidential` wraps an inner :class:`StepTimeModel` with:

* a **latency floor** per forward pass, ``min_iteration_s``: the CPU-side work of
  one step (launches, encrypted copies of inputs and sampled tokens) overlaps with
  GPU work, so it only shows when the GPU step is shorter;
  ``iteration = max(inner, min_iteration_s)``;
* a fixed ``per_iteration_s`` and ``per_call_s`` (per request-level call);
* the step's I/O, ``io_bytes_per_token`` per token in and per sequence out, over
  ``bounce_gbps`` (4 GB/s is our assumption, not a measured figure; the term is
  microseconds for token I/O);
* a load slowdown (weights go through the bounce buffer) and an unload slowdown.
  The std of load times is kept from the inner model (SINCERE's CC stds are not
  larger than its non-CC ones).

**Calibration** (``scripts/derive_perf.py``, stored in
``sincere/data/perf/sincere_h100.yaml`` with the source): on SINCERE's H100
measurements (HF pipeline, 50 new tokens) CC loads are 2.52× / 2.58× / 2.66× slower
for granite-7b / gemma-7b / llama3-8b; a batch-of-one call takes ~1.3–1.5 s in CC
vs ~0.74–0.87 s without, while from batch ~8 upward CC and non-CC times agree within
run-to-run noise (both ~6–6.6 s at batch 64). Forms compared for CC against
non-CC call time (constant, linear, ``a/b`` and ``a·exp(−b/τ)`` added overheads, and
``max(nonCC, floor) + c``): over all batch sizes the exponential decay and the floor
tie (9–12 % relative RMS, mostly run-to-run noise); for batch ≤ 16, where the
overhead lives, the floor is best for gemma and granite (3.8 %, 5.8 %). The floor is
implemented: it fits as well and has a physical reading at iteration level (fitted
call floor 1.26–1.44 s over 50 passes, i.e. ~28 ms per pass, plus ~0.08 s per
call). The defaults below are the mean over the three models;
:func:`sincere_cc_params` gives each model's own fit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import numpy.typing as npt

from sincere.core.errors import ConfigError
from sincere.core.types import Seconds
from sincere.perf.base import Batch, StepTimeBase, StepTimeModel, SwapTime
from sincere.perf.table import MODEL_ALIASES, load_shipped_profiles


@dataclass(frozen=True, slots=True)
class CCParams:
    """CC-mode costs. Defaults: mean fit over SINCERE's three models (see module doc)."""

    min_iteration_s: float = 0.027617  # latency floor of one forward pass
    per_iteration_s: float = 0.0  # fixed extra per forward pass
    per_call_s: float = 0.0825  # fixed extra per request-level call
    io_bytes_per_token: float = 8.0  # bytes through the bounce buffer per token in / out
    bounce_gbps: float = 4.0  # encrypted bounce-buffer bandwidth, GB/s (assumed)
    load_slowdown: float = 2.587667  # CC load time / non-CC load time
    unload_slowdown: float = 1.140867  # CC unload time / non-CC unload time

    def __post_init__(self) -> None:
        if self.bounce_gbps <= 0.0:
            raise ConfigError("CCParams.bounce_gbps must be > 0", value=self.bounce_gbps)
        if self.load_slowdown <= 0.0 or self.unload_slowdown <= 0.0:
            raise ConfigError(
                "CCParams slowdowns must be > 0", value=(self.load_slowdown, self.unload_slowdown)
            )
        for name in ("min_iteration_s", "per_iteration_s", "io_bytes_per_token"):
            if getattr(self, name) < 0.0:
                raise ConfigError(f"CCParams.{name} must be >= 0", value=getattr(self, name))


class Confidential(StepTimeBase):
    """``inner`` run in CC mode; see the module docstring for the cost model."""

    def __init__(self, inner: StepTimeModel, params: CCParams | None = None) -> None:
        self.inner = inner
        self.params = params or CCParams()
        load, unload = inner.load_time(), inner.unload_time()
        super().__init__(
            SwapTime(load.mean_s * self.params.load_slowdown, load.std_s),
            SwapTime(unload.mean_s * self.params.unload_slowdown, unload.std_s),
        )

    def _io_s(self, num_bytes: float) -> float:
        return num_bytes / (self.params.bounce_gbps * 1e9)

    def _extra_s(self, batch: Batch) -> float:
        """Per-iteration additive cost: fixed part plus the batch's token I/O."""
        io = self.params.io_bytes_per_token * (batch.num_tokens + batch.num_seqs)
        return self.params.per_iteration_s + self._io_s(io)

    def iteration_s(self, batch: Batch) -> Seconds:
        """``max(inner, floor) + per_iteration_s + I/O``."""
        if batch.num_tokens == 0:
            return 0.0
        inner = self.inner.iteration_s(batch)
        return max(inner, self.params.min_iteration_s) + self._extra_s(batch)

    def decode_steps_s(self, num_seqs: int, ctx_tokens: int, num_steps: int) -> Seconds:
        """Exact when the inner step time does not fall as context grows.

        The steps still under the floor form a prefix; it is found by bisection and
        the rest is the inner model's own closed-form sum.
        """
        if num_steps <= 0 or num_seqs <= 0:
            return 0.0
        floor = self.params.min_iteration_s
        low, high = 0, num_steps  # steps [0, low) are under the floor; [high, n) are not
        while low < high:
            mid = (low + high) // 2
            step = Batch(num_decode_seqs=num_seqs, decode_ctx_tokens=ctx_tokens + mid * num_seqs)
            if self.inner.iteration_s(step) < floor:
                low = mid + 1
            else:
                high = mid
        rest = self.inner.decode_steps_s(num_seqs, ctx_tokens + low * num_seqs, num_steps - low)
        extra = self._extra_s(Batch(num_decode_seqs=num_seqs, decode_ctx_tokens=ctx_tokens))
        return low * floor + rest + num_steps * extra

    def request_batch_s(self, prompt_tokens: Sequence[int], output_tokens: int) -> Seconds:
        """A call: ``max(inner call, passes × floor) + per-call and per-pass extras + I/O``.

        A call makes ``output_tokens`` forward passes (one prefill, then decodes).
        """
        if not prompt_tokens:
            return 0.0
        p = self.params
        passes = max(output_tokens, 1)
        inner = self.inner.request_batch_s(prompt_tokens, output_tokens)
        io_bytes = p.io_bytes_per_token * (sum(prompt_tokens) + 2 * len(prompt_tokens) * passes)
        return (
            max(inner, passes * p.min_iteration_s)
            + p.per_call_s
            + passes * p.per_iteration_s
            + self._io_s(io_bytes)
        )


def fit_call_floor(
    noncc_s: npt.ArrayLike, cc_s: npt.ArrayLike, num_grid: int = 2001
) -> tuple[float, float, float]:
    """Fit ``cc ≈ max(noncc, floor) + extra`` by relative least squares.

    Arrays hold call times at the same batch sizes. Returns ``(floor_s, extra_s,
    rms_relative_error)``; for each floor on a grid the best ``extra`` has a closed
    form, and the grid point with the least error wins.
    """
    noncc, cc = np.asarray(noncc_s, dtype=float), np.asarray(cc_s, dtype=float)
    if noncc.shape != cc.shape or noncc.size < 2:
        raise ConfigError("need >= 2 paired CC / non-CC times", value=(noncc.shape, cc.shape))
    floors = np.linspace(0.0, float(cc.max()), num_grid)[:, None]
    base = np.maximum(noncc[None, :], floors)  # grid x batch sizes
    weight = 1.0 / cc**2
    extra = ((cc - base) * weight).sum(axis=1) / weight.sum()
    err = np.sqrt((((base + extra[:, None] - cc) / cc) ** 2).mean(axis=1))
    best = int(np.argmin(err))
    return float(floors[best, 0]), float(extra[best]), float(err[best])


def sincere_cc_params(model: str | None = None) -> CCParams:
    """CC parameters fitted on SINCERE's data for ``model`` (None: the three-model mean)."""
    fits = load_shipped_profiles()["cc_fit"]
    key = "default" if model is None else MODEL_ALIASES.get(model, model)
    if key not in fits["per_model"] and key != "default":
        raise ConfigError("no CC fit for model", value=model, allowed=fits["per_model"])
    entry = fits["default"] if key == "default" else fits["per_model"][key]
    return replace(
        CCParams(),
        min_iteration_s=float(entry["min_iteration_s"]),
        per_call_s=float(entry["per_call_s"]),
        load_slowdown=float(entry["load_slowdown"]),
        unload_slowdown=float(entry["unload_slowdown"]),
    )
