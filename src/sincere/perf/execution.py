"""How an engine runs its iterations: CUDA graphs, asynchronous scheduling, its front end.

A step-time model (the roofline, a fitted table, …) prices the GPU work of one iteration
and, for the roofline, the CPU work beside it (scheduling, preparing inputs, processing
outputs: ``overhead_s + overhead_per_seq_s · sequences``). How those two combine is the
engine's *execution model*, and engines of 2026 differ from the eager engines of 2024:

* **CUDA graphs.** vLLM V1 captures the model for a list of batch sizes: a decode-only
  iteration replays a *full* graph of the smallest captured size that holds its sequences
  (the padded slots cost their linear, communication and LM-head work), a mixed iteration
  a *piecewise* graph padded the same way in tokens (attention runs outside the graph).
  Above the largest captured size the iteration runs eagerly, unpadded.
* **Asynchronous scheduling.** The CPU part of iteration ``n + 1`` (scheduling, input
  preparation) runs while the GPU computes iteration ``n``; only what does not fit under
  the share ``cpu_overlap`` of the GPU time is exposed: ``max(0, cpu - cpu_overlap *
  gpu)``, plus ``serial_s`` per iteration that never overlaps (the hand-off of sampled
  tokens between the two). vLLM's share is 0.4: hundreds of sequences on a fast GPU
  leave part of their CPU work in the step (fitted on InferenceX's vLLM points of 129-512
  clients); every other preset's is 1. Without it the CPU
  part runs in series, as the eager engines of 2024 did: ``gpu + cpu``.
* **Polling the input queue.** An engine takes new requests from its input queue between
  iterations; SGLang's ``--scheduler-recv-interval N`` makes it poll only once every ``N``
  decode-only iterations (an iteration that prefilled, or an idle engine, polls at once:
  its ``SchedulerRecvSkipper`` weighs a decode iteration 1 and any other 1,000 against
  ``N``). A request that arrives during a run of decodes waits for the next poll, on
  average ``N / 2`` iterations (``recv_interval``; 1, every iteration, is every engine's
  default; :mod:`sincere.engine.async_intake`).
* **Waiting to batch new prompts.** TensorRT-LLM's ``batch_wait_timeout_iters K`` holds new
  prompts back while the engine runs, up to ``K`` iterations counted from the first one
  held, so that more of them prefill together (``batch_wait_iters``; 0, no wait, is every
  preset's default). Its other stop, ``batch_wait_max_tokens_ratio`` of the token budget
  scheduled, is not modelled.
* **Balancing attention-DP ranks.** TensorRT-LLM's ``attention_dp_config`` with
  ``enable_balance`` holds new prompts of a group of attention-DP ranks until every rank
  has one, so that the ranks prefill together instead of one rank's prefill holding the
  others' decodes: at each iteration where not every rank has a prompt (and a free slot)
  a count goes up, and the prompts go when it reaches ``timeout_iters`` or some rank has
  nothing to decode; once every rank has one, up to ``batching_wait_iters`` more
  iterations while every rank decodes (``balance_timeout_iters``,
  ``balance_batching_iters``; off in every preset, as TensorRT-LLM's default; applied by
  a lockstep group, :mod:`sincere.engine.lockstep`).
* **Prefill beside the decodes.** vLLM and TensorRT-LLM put new prompts' chunks in the same
  iteration as the running decodes (``mixed_prefill``, every preset's default but
  SGLang's). SGLang runs a batch of new prompts (or the next chunk of one) alone while any
  is waiting: the decoding requests wait for it and gain no token in it, unless the server
  runs with ``--enable-mixed-chunk``.
* **The front end.** What a client sees beyond the engine: the HTTP hop and request
  parsing (``request_s``) and tokenisation (``prompt_token_s`` per prompt token) before
  the engine sees a request, and detokenisation and streaming (``output_s``) between the
  engine's token and the client's; a server that streams in chunks may hold the first
  token back until its chunk is full (``first_chunk_tokens``, :class:`FrontEnd`). The
  simulator takes TTFT, ITL and end-to-end latency where the client does when a front end
  is set (docs/metrics.md).

Named presets (:data:`PRESETS`) hold each engine's defaults with their sources; every
field can be overridden (``engine: {preset: vllm-v1, execution: {async_scheduling:
false}}``). ``eager`` is the engine of 2024 the simulator was first built on (CPU in
series, no graph padding, no front end); an engine block that names no preset is that one,
and a deployment fills in today's engine for its step model instead
(:mod:`sincere.engine.defaults`: ``vllm-v1`` over the roofline).

:class:`ExecutedStepModel` wraps a step-time model whose CPU part is separable
(:class:`SeparableCpu`: the roofline); it keeps every answer of the inner model exact,
including the closed-form sum of decode iterations the engines jump over.
"""

from __future__ import annotations

import bisect
import dataclasses

from sincere.core.errors import ConfigError
from sincere.core.types import Seconds
from sincere.perf.base import Batch, StepParts, StepTimeBase, StepTimeModel, SwapTime
from sincere.perf.execution_settings import (
    GRAPH_MODES,
    PRESETS,
    ExecutionParams,
    FrontEnd,
    IntakeQueue,
    SeparableCpu,
    execution_params,
)

__all__ = [
    "GRAPH_MODES",
    "PRESETS",
    "ExecutedStepModel",
    "ExecutionParams",
    "FrontEnd",
    "IntakeQueue",
    "SeparableCpu",
    "balance_iters",
    "batch_wait_iters",
    "execution_params",
    "mixes_prefill",
    "recv_interval",
    "schedules_ahead",
    "with_execution",
]


class ExecutedStepModel(StepTimeBase):
    """``inner``'s iterations run the way :class:`ExecutionParams` says (module docstring).

    ``inner`` must price CPU work apart (:class:`SeparableCpu`); its iteration time is
    ``gpu + cpu``, and this model returns ``gpu + padding + exposed cpu``.
    """

    def __init__(self, inner: StepTimeModel, params: ExecutionParams) -> None:
        if not isinstance(inner, SeparableCpu):
            raise ConfigError(
                f"engine execution settings need a step-time model that prices its CPU part "
                f"apart (the roofline); {type(inner).__name__} times whole iterations as "
                "measured: leave the engine's preset out",
                value=params.name,
            )
        super().__init__(inner.load_time(), inner.unload_time())
        self.inner = inner
        self.params = params
        self._cpu = inner
        self._sizes = list(params.graph_sizes)
        self._largest = self._sizes[-1] if self._sizes else 0
        self._full = params.graph_mode in ("full_and_piecewise", "full_decode_only", "piecewise")
        self._mixed = params.graph_mode in ("full_and_piecewise", "piecewise")
        self._pad_memo: dict[int, float] = {}

    def load_time(self) -> SwapTime:
        return self.inner.load_time()

    def unload_time(self) -> SwapTime:
        return self.inner.unload_time()

    # --- CUDA graphs -------------------------------------------------------------------
    def padded(self, tokens: int, decode_only: bool) -> int:
        """The size the iteration runs at: the smallest captured size that holds it."""
        if not self.graphed(tokens, decode_only):
            return tokens
        return self._sizes[bisect.bisect_left(self._sizes, tokens)]

    def graphed(self, tokens: int, decode_only: bool) -> bool:
        """Whether an iteration of ``tokens`` runs under a CUDA graph (padded or not)."""
        graphed = self._full if decode_only else self._mixed
        return graphed and 0 < tokens <= self._largest

    def padding_s(self, tokens: int, decode_only: bool) -> Seconds:
        """GPU time the padded slots of an iteration of ``tokens`` cost (0 when unpadded);
        memoised per token count and kind of iteration."""
        key = 2 * tokens + decode_only
        cost = self._pad_memo.get(key)
        if cost is not None:
            return cost
        size = self.padded(tokens, decode_only)
        cost = 0.0
        if size != tokens:
            step = self.inner.iteration_s_fast
            cpu = self._cpu.cpu_step_s
            wide = step(0, 0, 0, 0.0, size, 0) - cpu(size)
            cost = max(0.0, wide - (step(0, 0, 0, 0.0, tokens, 0) - cpu(tokens)))
        self._pad_memo[key] = cost
        return cost

    # --- overlap -----------------------------------------------------------------------
    def overlapped(self, gpu: float, cpu: float) -> Seconds:
        """An iteration of ``gpu`` seconds on the GPU and ``cpu`` on the CPU: the CPU
        hidden under the GPU (asynchronous scheduling) or in series."""
        return self._total(gpu, cpu)

    def _total(self, gpu: float, cpu: float) -> float:
        if not self.params.async_scheduling:
            return gpu + cpu
        hidden = self.params.cpu_overlap * gpu
        exposed = cpu - hidden if cpu > hidden else 0.0
        return gpu + exposed + self.params.serial_s

    def iteration_s_fast(
        self,
        num_prefill_seqs: int,
        prefill_tokens: int,
        prefill_ctx_tokens: int,
        prefill_attn_pairs: float,
        num_decode_seqs: int,
        decode_ctx_tokens: int,
    ) -> Seconds:
        tokens = prefill_tokens + num_decode_seqs
        if tokens == 0:
            return 0.0
        whole = self.inner.iteration_s_fast(
            num_prefill_seqs, prefill_tokens, prefill_ctx_tokens, prefill_attn_pairs,
            num_decode_seqs, decode_ctx_tokens,
        )  # fmt: skip
        cpu = self._cpu.cpu_step_s(num_prefill_seqs + num_decode_seqs)
        gpu = whole - cpu + self.padding_s(tokens, num_prefill_seqs == 0)
        return self._total(gpu, cpu)

    def iteration_s(self, batch: Batch) -> Seconds:
        return self.iteration_s_fast(
            batch.num_prefill_seqs, batch.prefill_tokens, batch.prefill_ctx_tokens,
            batch.prefill_attn_pairs, batch.num_decode_seqs, batch.decode_ctx_tokens,
        )  # fmt: skip

    def decode_steps_s(self, num_seqs: int, ctx_tokens: int, num_steps: int) -> Seconds:
        """Exact sum of ``num_steps`` decode iterations (the inner model's closed form)."""
        if num_steps <= 0 or num_seqs <= 0:
            return 0.0
        cpu = self._cpu.cpu_step_s(num_seqs)
        pad = self.padding_s(num_seqs, True)
        inner = self.inner.decode_steps_s
        total_gpu = inner(num_seqs, ctx_tokens, num_steps) - num_steps * cpu + num_steps * pad
        if not self.params.async_scheduling:
            return total_gpu + num_steps * cpu
        serial = num_steps * self.params.serial_s
        # GPU time per step never falls as the context grows: the CPU is exposed on a prefix
        first_hidden = self._first_step_at_least(num_seqs, ctx_tokens, num_steps, cpu, pad)
        exposed = 0.0
        if first_hidden:
            hidden_gpu = (
                inner(num_seqs, ctx_tokens, first_hidden) - first_hidden * cpu + first_hidden * pad
            )
            exposed = first_hidden * cpu - self.params.cpu_overlap * hidden_gpu
        return total_gpu + max(0.0, exposed) + serial

    def _first_step_at_least(
        self, num_seqs: int, ctx_tokens: int, num_steps: int, cpu: float, pad: float
    ) -> int:
        """The first decode step whose GPU time, the share the CPU hides under, covers
        ``cpu`` (``num_steps`` if none): a bisection, after the first step alone (the
        GPU's, mostly, from the start)."""
        step = self.inner.iteration_s_fast
        share = self.params.cpu_overlap
        if share * (step(0, 0, 0, 0.0, num_seqs, ctx_tokens) - cpu + pad) >= cpu:
            return 0
        lo, hi = 0, num_steps
        while lo < hi:
            mid = (lo + hi) // 2
            gpu = step(0, 0, 0, 0.0, num_seqs, ctx_tokens + mid * num_seqs) - cpu + pad
            if share * gpu >= cpu:
                hi = mid
            else:
                lo = mid + 1
        return lo

    # --- breakdown -----------------------------------------------------------------------
    def parts(self, batch: Batch) -> StepParts:
        """The inner model's parts with the padding in linear and only the exposed CPU."""
        parts_of = getattr(self.inner, "parts", None)
        if parts_of is None:
            return StepParts(overhead_s=self.iteration_s(batch))
        inner: StepParts = parts_of(batch)
        if batch.num_tokens == 0:
            return inner
        cpu = self._cpu.cpu_step_s(batch.num_seqs)
        pad = self.padding_s(batch.num_tokens, batch.num_prefill_seqs == 0)
        gpu = inner.total_s - inner.overhead_s + pad
        overhead = self._total(gpu, cpu) - gpu
        return dataclasses.replace(inner, linear_s=inner.linear_s + pad, overhead_s=overhead)


def balance_iters(step_model: StepTimeModel) -> tuple[int, int]:
    """The attention-DP balance of ``step_model``'s execution model: ``(timeout_iters,
    batching_wait_iters)``, ``(0, 0)`` when off (the module docstring)."""
    if isinstance(step_model, ExecutedStepModel):
        params = step_model.params
        return params.balance_timeout_iters, params.balance_batching_iters
    return 0, 0


def schedules_ahead(step_model: StepTimeModel) -> bool:
    """Whether an engine timed by ``step_model`` plans each iteration while the one before
    runs (asynchronous scheduling): its new requests join one iteration late
    (:mod:`sincere.engine.async_intake`)."""
    return isinstance(step_model, ExecutedStepModel) and step_model.params.async_scheduling


def mixes_prefill(step_model: StepTimeModel) -> bool:
    """Whether an engine timed by ``step_model`` runs prefill chunks in the same iteration as
    its decodes (the module docstring; False: SGLang's prefill batches run alone)."""
    if isinstance(step_model, ExecutedStepModel):
        return step_model.params.mixed_prefill
    return True


def recv_interval(step_model: StepTimeModel) -> int:
    """Decode-only iterations between two polls of the input queue by an engine timed by
    ``step_model`` (1: every iteration; the module docstring)."""
    if isinstance(step_model, ExecutedStepModel):
        return step_model.params.recv_interval
    return 1


def batch_wait_iters(step_model: StepTimeModel) -> int:
    """Iterations an engine timed by ``step_model`` holds new prompts to batch them (0: it
    takes them at the next poll; the module docstring)."""
    if isinstance(step_model, ExecutedStepModel):
        return step_model.params.batch_wait_iters
    return 0


def with_execution(
    model: StepTimeModel, params: ExecutionParams, max_num_seqs: int
) -> StepTimeModel:
    """``model`` run the way ``params`` says (unchanged for the 2024 eager engine)."""
    if params == PRESETS["eager"]:
        return model
    return ExecutedStepModel(model, params.for_engine(max_num_seqs))
