"""Iteration times straight from a model's own operator profiles: no fitting, no training.

:class:`ProfiledStep` composes one iteration from the tables of
:mod:`sincere.perf.operators` the way Vidur composes its predictions, per layer: the
nine linear operators at the iteration's token count (rounded up to a multiple of 8,
so the 128-token steps of the measured GEMMs stay), prefill attention for each prefill
chunk, decode attention for the decode batch at its mean context (rounded up to 64),
and two all-reduces of ``tokens × hidden × 2`` bytes when TP > 1; times the number of
layers. The CPU's work per step comes from an engine-steps table (the model's own at
its TP, else any one in the folder; ``cpu=False`` leaves it out). The LM head and the
embedding are not profiled and not counted (``lm_head_s`` is 0).

A :class:`~sincere.perf.base.Batch` carries sums, so several prefill chunks in one
iteration are timed as that many equal chunks of the mean length and cached context.
The attention table must have the deployment's per-GPU shape (query and KV heads per
GPU, head size); with ``scale_attention=True`` a table of another shape is used
instead, its time above the kernel's floor scaled by the ratio of query heads (prefill,
compute-bound) or KV heads (decode, memory-bound) -- an approximation, reported as such.
Pipeline parallelism is not profiled in this layout and is refused.
"""

from __future__ import annotations

import functools
from pathlib import Path

from sincere.core.errors import ConfigError
from sincere.core.types import Seconds
from sincere.perf.base import Batch, Deployment, StepParts, StepTimeBase, SwapTime
from sincere.perf.operators import (
    AllReduceTable,
    AttentionShape,
    AttentionTable,
    EngineStepsTable,
    OperatorProfiles,
    accelerator_folder,
    read_operator_profiles,
)


@functools.cache
def load_profiles(folder: str) -> OperatorProfiles:
    """The operator profiles of one accelerator's folder, read once per process."""
    return read_operator_profiles(folder)


def profiles_for(directory: str | Path, accelerator: str) -> OperatorProfiles:
    """Profiles of ``accelerator`` under ``directory`` (its folder or the one above)."""
    return load_profiles(str(accelerator_folder(directory, accelerator).resolve()))


class ProfiledStep(StepTimeBase):
    """Iteration time composed from operator profiles (see the module docstring)."""

    def __init__(
        self,
        profiles: OperatorProfiles,
        deployment: Deployment,
        *,
        all_reduce: str | None = None,
        cpu: bool = True,
        scale_attention: bool = False,
        load: SwapTime | None = None,
        unload: SwapTime | None = None,
    ) -> None:
        super().__init__(load, unload)
        model, tp = deployment.model, deployment.tp
        if deployment.pp != 1:
            raise ConfigError(
                "profiled step model: pipeline parallelism is not profiled",
                value=deployment.pp,
                allowed="pp = 1",
            )
        self.deployment = deployment
        self.linear = profiles.linear_table(model.name, tp)
        self.attention, self.attention_scale = _attention(
            profiles, AttentionShape.of(model, tp), scale_attention
        )
        self.all_reduce: AllReduceTable | None = profiles.topology(all_reduce) if tp > 1 else None
        self.steps: EngineStepsTable | None = profiles.steps_table(model.name, tp) if cpu else None
        self._prefill_floor = min(float(r.ys.min()) for r in self.attention.prefill.rows)
        self._decode_floor = min(float(r.ys.min()) for r in self.attention.decode.rows)
        self._memo: dict[int, float] = {}

    def _linear_ms(self, tokens: int) -> float:
        cached = self._memo.get(tokens)
        if cached is None:
            cached = self._memo[tokens] = self.linear.layer_ms(tokens)
        return cached

    def _prefill_ms(self, chunk: float, cached: float) -> float:
        t = self.attention.prefill_ms(chunk, cached)
        q_ratio = self.attention_scale[0]
        return t if q_ratio == 1.0 else self._prefill_floor + (t - self._prefill_floor) * q_ratio

    def _decode_ms(self, num_seqs: float, mean_ctx: float) -> float:
        t = self.attention.decode_ms(num_seqs, mean_ctx)
        kv_ratio = self.attention_scale[1]
        return t if kv_ratio == 1.0 else self._decode_floor + (t - self._decode_floor) * kv_ratio

    def parts(self, batch: Batch) -> StepParts:
        """The composed iteration, by part (``lm_head_s`` is not profiled: 0)."""
        tokens = batch.num_tokens
        if tokens == 0:
            return StepParts()
        layers = self.deployment.model.num_layers
        attn_ms = 0.0
        if batch.num_prefill_seqs > 0:
            n = batch.num_prefill_seqs
            attn_ms += n * self._prefill_ms(batch.prefill_tokens / n, batch.prefill_ctx_tokens / n)
        if batch.num_decode_seqs > 0:
            n = batch.num_decode_seqs
            attn_ms += self._decode_ms(n, batch.decode_ctx_tokens / n)
        comm_ms = 0.0
        if self.all_reduce is not None:
            message = tokens * self.deployment.model.hidden_size * 2.0
            comm_ms = 2.0 * self.all_reduce.time_ms(message, self.deployment.tp)
        cpu_ms = self.steps.step_ms(batch.num_seqs) if self.steps is not None else 0.0
        return StepParts(
            linear_s=1e-3 * layers * self._linear_ms(tokens),
            attention_s=1e-3 * layers * attn_ms,
            communication_s=1e-3 * layers * comm_ms,
            overhead_s=1e-3 * cpu_ms,
        )

    def iteration_s(self, batch: Batch) -> Seconds:
        """The composed iteration's duration."""
        return self.parts(batch).total_s

    def decode_steps_s(self, num_seqs: int, ctx_tokens: int, num_steps: int) -> Seconds:
        """Exact: every step composed on its own (the tables are not affine in the context)."""
        total = 0.0
        for step in range(max(0, num_steps)):
            batch = Batch(num_decode_seqs=num_seqs, decode_ctx_tokens=ctx_tokens + step * num_seqs)
            total += self.iteration_s(batch)
        return total


def _attention(
    profiles: OperatorProfiles, shape: AttentionShape, scale: bool
) -> tuple[AttentionTable, tuple[float, float]]:
    """The table of ``shape``, or with ``scale`` the nearest one and its (q, kv) work ratios."""
    table = profiles.attention_table(shape)
    if table is not None:
        return table, (1.0, 1.0)
    if not profiles.attention:
        raise ConfigError("no attention_*.csv in the profiles", where=profiles.folder)
    if not scale:
        raise ConfigError(
            "no attention profile with this per-GPU shape "
            "(set scale_attention: true to scale another)",
            where=profiles.folder,
            value=str(shape),
            allowed=[str(t.shape) for t in profiles.attention],
        )
    nearest = min(
        profiles.attention,
        key=lambda t: (
            t.shape.head_size != shape.head_size,
            abs(t.shape.q_heads - shape.q_heads),
            abs(t.shape.kv_heads - shape.kv_heads),
        ),
    )
    ref = nearest.shape
    q_ratio = shape.q_heads * shape.head_size / (ref.q_heads * ref.head_size)
    kv_ratio = shape.kv_heads * shape.head_size / (ref.kv_heads * ref.head_size)
    return nearest, (q_ratio, kv_ratio)
