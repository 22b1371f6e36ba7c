"""A deployment's clock compressed by one factor: ``time_scale`` (a time-compressed replay).

A whole day cannot be replayed on the wall clock, but it can at ``1/k`` of its speed:
every time in the scenario -- arrivals, iteration times, provisioning, load, sleep and
wake times, the controller's interval and cool-down, SLO targets -- multiplied by one
factor ``time_scale`` (e.g. ``1/64``). The deployment's share of that is its engine's
time: :class:`TimeScaled` multiplies every answer of the step-time model (an iteration,
a run of decode iterations, a request-level batch, a swap) by the factor. The simulator
and the emulator build their engines through :func:`~sincere.engine.build.step_model_of`,
so a simulated and an emulated instance of one ``time_scale`` run the same compressed
engine. The rest of a scenario is scaled with it by
:func:`sincere.sim.autoscale_time.time_scaled` (the simulator's config) and the replay's
own code (the live gateway's).

Exactness: a power-of-two factor (``1/64``, ``1/128``) multiplies a float exactly, so a
simulated run at that scale is the run at scale 1 with every time multiplied, bit for
bit; another factor agrees up to rounding (ties between events a rounding apart may
order differently).

The engine preset's front end (``execution.frontend``: intake and output delay) is the
deployment's too and is compressed by the same factor
(:meth:`~sincere.engine.spec.DeploymentSpec.front_end`). Not scaled (a ``time_scale`` other
than 1 with them is refused when the engine is built): KV offload tiers' transfers and
speculative decoding's draft model -- they keep their own times.
"""

from __future__ import annotations

from collections.abc import Sequence

from sincere.core.types import Seconds
from sincere.perf.base import Batch, StepTimeModel, SwapTime


class TimeScaled:
    """``inner``'s times multiplied by ``factor`` (a :class:`StepTimeModel`)."""

    def __init__(self, inner: StepTimeModel, factor: float) -> None:
        assert factor > 0, "checked by the deployment's config"
        self.inner = inner
        self.factor = factor

    def iteration_s(self, batch: Batch) -> Seconds:
        """One iteration of ``batch``."""
        return self.inner.iteration_s(batch) * self.factor

    def iteration_s_fast(
        self,
        num_prefill_seqs: int,
        prefill_tokens: int,
        prefill_ctx_tokens: int,
        prefill_attn_pairs: float,
        num_decode_seqs: int,
        decode_ctx_tokens: int,
    ) -> Seconds:
        """:meth:`iteration_s` from the batch's fields."""
        inner = self.inner.iteration_s_fast(
            num_prefill_seqs, prefill_tokens, prefill_ctx_tokens, prefill_attn_pairs,
            num_decode_seqs, decode_ctx_tokens,
        )  # fmt: skip
        return inner * self.factor

    def decode_steps_s(self, num_seqs: int, ctx_tokens: int, num_steps: int) -> Seconds:
        """``num_steps`` decode iterations of ``num_seqs`` sequences."""
        return self.inner.decode_steps_s(num_seqs, ctx_tokens, num_steps) * self.factor

    def request_batch_s(self, prompt_tokens: Sequence[int], output_tokens: int) -> Seconds:
        """A request-level batch."""
        return self.inner.request_batch_s(prompt_tokens, output_tokens) * self.factor

    def load_time(self) -> SwapTime:
        """Loading the weights."""
        return self._scaled(self.inner.load_time())

    def unload_time(self) -> SwapTime:
        """Unloading the weights."""
        return self._scaled(self.inner.unload_time())

    def _scaled(self, swap: SwapTime) -> SwapTime:
        return SwapTime(swap.mean_s * self.factor, swap.std_s * self.factor)


def unscaled(step_model: StepTimeModel) -> StepTimeModel:
    """The model a :class:`TimeScaled` multiplies (``step_model`` itself otherwise): what
    the engine reads its execution model from (asynchronous scheduling, polling, prefill
    beside the decodes), which a factor on its times does not change."""
    return step_model.inner if isinstance(step_model, TimeScaled) else step_model
