"""The analytic latency of one request on every candidate: the router's pass over a fleet.

A router that predicts each candidate's latency for the arriving request
(:func:`~sincere.predict.latency.step_model_latency`) repeats, at every arrival, the
terms that depend on the instance's load alone: its queued prompts' attention pairs, the
decode attention of its running batch, the batch size it will decode at and the cost of
one decode step of that batch. Only an instance the simulator touched since the last
arrival has a new load (and a new view object), so those terms are kept per view
(:class:`LoadTerms`, rebuilt when the view object changes), and each arrival computes
only what the request adds: its prompt in the prefill iteration and the context it
brings to the decode steps (:func:`fleet_latencies`).

Exact, not approximate: for a :class:`~sincere.perf.roofline.Roofline` with one pipeline
stage and no architecture step (dense attention, no experts) the pass inlines
:meth:`~sincere.perf.roofline.Roofline.iteration_s_fast` and
:meth:`~sincere.perf.roofline.Roofline.decode_steps_s` and performs every floating-point
operation of ``step_model_latency`` on that model in the same order with the same
operands, a term kept per view being one the original computes before the request's part
is added to it (the prefill kernel's factor by shape included, as
:func:`~sincere.perf.shape_grid.prefill_factor` takes it). The one expression written
otherwise: with a free batch slot the decode context ``round(t * n / n) + n`` is
``t + n`` (the exact quotient of integers below 2**53 rounds to itself), used only while
the counts stay below 2**52. Results are
bit-identical (``tests/predict/test_fleet_latency.py`` holds them equal over random
loads and requests). Any other model has no terms here: its candidates are predicted by
``step_model_latency`` itself.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

from sincere.perf.base import StepTimeModel
from sincere.perf.roofline import (
    KernelCoef,
    Roofline,
    RooflineKernels,
    needs_arch_step,
    with_comm_s,
)
from sincere.perf.series import sum_max_affine
from sincere.perf.shape_grid import ShapeGrid, prefill_factor


class FleetCoef(NamedTuple):
    """A roofline's constants as the pass reads them (one object for equal models)."""

    graph_tokens: int
    comm_fixed_s: float
    comm_token_s: float
    comm_floor_s: float
    comm_eager_s: float
    pair_s: float
    diag: float
    query_pairs: float
    kv_token_s: float
    attn_kernel_s: float
    layers: float
    decode_pair_s: float  # a decode step's attention per context token on the compute line
    decode_kv_s: float  # ... and on the memory line
    prefill_grid: ShapeGrid | None  # prefill attention's factor by shape (None: none)
    q_heads: int  # the GPU's query heads (the grid's third axis)
    kv_group: float  # its query heads per KV head (the grid's fourth axis)
    gridded: KernelCoef | None  # the constants whose all-reduces take a factor by size


class LoadTerms(NamedTuple):
    """The terms of ``step_model_latency`` on one view that the request does not change."""

    coef: FleetCoef
    linear_memo: dict[int, float]  # the model's linear work by token count
    waiting_tokens: int  # prompt tokens queued
    num_running: int
    queue_pairs: float  # the queued prompts' attention pairs, mean-sized
    decode_attn_s: float  # one layer's decode attention of the running batch (if any)
    decode_grouped_s: float  # its second fixed cost where it holds 2+ sequences (else 0)
    cpu_s: float  # the prefill iteration's CPU cost
    head_s: float  # the prefill iteration's LM head
    ctx_base: int  # running context plus queued prompt tokens
    room_ctx: int | None  # with a free batch slot: the decode context less the prompt
    num_seqs: int  # the batch size the request decodes in
    num_ahead: int  # running and queued sequences, plus the request
    step_s: float  # one decode step of ``num_seqs`` sequences, attention aside
    slope_pair: float  # its attention's growth per step, compute line
    slope_kv: float  # ... memory line
    seq_ctx: float  # the memory line's per-sequence context
    gap_slope: float  # slope_pair - slope_kv
    rare: Rare  # what a memo miss or a full batch needs


class Rare(NamedTuple):
    """What a load's prediction seldom needs: the model's kernels (a token count not in
    the memo yet) and, with a full batch, the wait for a slot."""

    kernels: RooflineKernels
    model: StepTimeModel  # its decode_steps_s gives the slot wait
    max_num_seqs: int
    slot_rounds: int  # rounds of waiting for a batch slot (0: the batch has room)
    slot_steps: int  # decode steps of one such round


SeqsTerms = tuple[float, float, float, float, float, float, float]
""":func:`seqs_terms` of one sequence count."""

EXACT_INT = 2**52
"""Token counts below this (and their sum with another) are exact as floats."""


def fast_roofline(model: StepTimeModel | None) -> Roofline | None:
    """``model`` when the pass computes it inline (a plain roofline, one pipeline stage,
    dense attention); else ``None``."""
    if type(model) is not Roofline:
        return None
    if model.kernels.coef.pp != 1 or needs_arch_step(model.deployment):
        return None
    return model


def fleet_coef(coef: KernelCoef) -> FleetCoef:
    """The pass's constants of ``coef`` (as :meth:`Roofline.decode_steps_s` folds them)."""
    w = 1.0 * coef.layers * 1.0  # decode_steps_s's weight: scale * layers * share
    return FleetCoef(
        coef.graph_tokens,
        coef.comm_fixed_s,
        coef.comm_token_s,
        coef.comm_floor_s,
        coef.comm_eager_s,
        coef.pair_s,
        coef.diag,
        coef.query_pairs,
        coef.kv_token_s,
        coef.attn_kernel_s,
        coef.layers,
        w * coef.pair_s,
        w * coef.kv_token_s,
        coef.prefill_grid,
        coef.q_heads,
        coef.kv_group,
        coef if coef.comm_grid is not None else None,
    )


def load_terms(
    model: Roofline,
    coef: FleetCoef,
    num_running: int,
    num_waiting: int,
    waiting_tokens: int,
    running_remaining: int,
    running_ctx: int,
    max_num_seqs: int,
    by_seqs: dict[int, SeqsTerms] | None = None,
) -> LoadTerms:
    """The request-free terms of ``step_model_latency`` on a load (``model`` must pass
    :func:`fast_roofline`; ``coef`` is :func:`fleet_coef` of its coefficients;
    ``by_seqs`` keeps :func:`seqs_terms` of ``model`` by sequence count)."""
    c, kernels = model.kernels.coef, model.kernels
    w, n_wait, r = waiting_tokens, num_waiting, num_running
    mean_w = w / n_wait if n_wait else 0.0
    queue_pairs = n_wait * mean_w * (mean_w + 1) / 2
    decode_attn = 0.0
    if r > 0:  # iteration_s_fast's decode part: the running batch beside our prefill
        compute = c.pair_s * running_ctx
        memory = c.kv_token_s * (running_ctx + c.seq_tokens * r)
        decode_attn = c.decode_kernel_s + (compute if compute > memory else memory)
    decode_grouped = c.decode_grouped_s if r >= 2 else 0.0  # added after, as the step does
    num_ahead = r + n_wait
    excess = num_ahead + 1 - max_num_seqs
    rounds, slot_steps = 0, 0
    if excess > 0:  # _slot_wait_s
        rounds = math.ceil(excess / max_num_seqs)
        per_seq = running_remaining / r if r else 1.0
        slot_steps = max(1, round(per_seq))
    num_seqs = min(num_ahead + 1, max_num_seqs)
    by_seqs = {} if by_seqs is None else by_seqs
    seqs_now = by_seqs.get(num_seqs)
    if seqs_now is None:
        seqs_now = by_seqs[num_seqs] = seqs_terms(model, coef, num_seqs)
    step_s, slope_pair, slope_kv, seq_ctx, gap_slope = seqs_now[2:]
    prefill = by_seqs.get(n_wait + 1 + r)  # the prefill iteration's sequences
    if prefill is None:
        prefill = by_seqs[n_wait + 1 + r] = seqs_terms(model, coef, n_wait + 1 + r)
    ctx_base = running_ctx + w
    # with room in the batch the decode context is round(total * n / n) + n, i.e. the
    # prompt plus this, as long as every count stays exact as a float
    room = excess <= 0 and ctx_base + num_seqs < EXACT_INT
    return LoadTerms(
        coef,
        kernels.linear_memo,
        w,
        r,
        queue_pairs,
        decode_attn,
        decode_grouped,
        prefill[0],
        prefill[1],
        ctx_base,
        ctx_base + num_seqs if room else None,
        num_seqs,
        num_ahead + 1,
        step_s,
        slope_pair,
        slope_kv,
        seq_ctx,
        gap_slope,
        Rare(kernels, model, max_num_seqs, rounds, slot_steps),
    )


def seqs_terms(model: Roofline, coef: FleetCoef, seqs: int) -> SeqsTerms:
    """The terms of ``seqs`` sequences alone: an iteration's CPU cost and LM head, and
    decode_steps_s's cost of a step of ``seqs`` (attention aside; scale 1, share 1), its
    attention's slopes per step, the per-sequence context and the slopes' gap."""
    c, kernels = model.kernels.coef, model.kernels
    cpu = c.cpu_s + c.cpu_seq_s * seqs
    head = kernels.lm_head_s(seqs)
    if seqs <= 0:
        return cpu, head, 0.0, 0.0, 0.0, 0.0, 0.0
    kernel = c.decode_kernel_s + (c.decode_grouped_s if seqs >= 2 else 0.0)
    fixed = with_comm_s(c, kernels.linear_layer_s(seqs) + kernel, seqs, seqs)
    stage = c.layers * fixed + kernels.lm_head_s(seqs)
    step_s = c.cpu_s + c.cpu_seq_s * seqs + 1.0 * stage
    slope_pair = coef.decode_pair_s * seqs
    slope_kv = coef.decode_kv_s * seqs
    return cpu, head, step_s, slope_pair, slope_kv, c.seq_tokens * seqs, slope_pair - slope_kv


def fleet_latencies(
    terms: Sequence[LoadTerms], prompt_tokens: int, expected_output: float, e2e: bool = True
) -> tuple[list[float], list[float]]:
    """TTFT and E2E of a request of ``prompt_tokens`` expecting ``expected_output`` tokens
    on each load of ``terms``: ``step_model_latency``'s ``ttft_s`` and ``e2e_s``, bit for
    bit (its ``output_tokens`` is ``max(expected_output, 1.0)``). ``e2e`` false: TTFT only
    (the E2E list is empty; each load's answer is its own, so one load's E2E is asked
    later with that load alone)."""
    p = prompt_tokens
    prompt_pairs = p * (p + 1) / 2
    steps = max(0, round(expected_output) - 1) if e2e else 0
    steps_less = steps - 1
    exact = 0 <= p < EXACT_INT
    ttfts: list[float] = []
    e2es: list[float] = []
    add_ttft, add_e2e = ttfts.append, e2es.append
    last: FleetCoef | None = None
    graph = 0
    comm_fixed = comm_token = floor = eager = pair_s = diag = query_pairs = 0.0
    kv_s = attn_kernel = layers = decode_pair = decode_kv = 0.0
    heads = 0
    group = 1.0
    grid: ShapeGrid | None = None
    gridded: KernelCoef | None = None
    for t in terms:
        (coef, memo, w, r, queue_pairs, decode_attn, decode_grouped, cpu_s, head_s, ctx_base,
         room_ctx, num_seqs, num_ahead, step_s, slope_pair, slope_kv, seq_ctx, gap_slope,
         rare) = t  # fmt: skip
        if coef is not last:
            (graph, comm_fixed, comm_token, floor, eager, pair_s, diag, query_pairs, kv_s,
             attn_kernel, layers, decode_pair, decode_kv, grid, heads, group,
             gridded) = last = coef  # fmt: skip
        # the prefill iteration: queued prompts and ours beside the running decodes
        prefill_tokens = w + p
        tokens = prefill_tokens + r
        if tokens == 0:
            prefill = 0.0
        else:
            linear = memo.get(tokens)
            if linear is None:
                linear = rare.kernels.linear_layer_s(tokens)
            if gridded is not None:  # the all-reduce's factor by message size
                layer = linear + rare.kernels.gridded_comm_layer_s(tokens)
            elif tokens <= graph:
                layer = linear + comm_fixed + comm_token * tokens
            elif floor <= 0.0:
                layer = linear + comm_fixed + comm_token * tokens + eager
            else:
                in_graph = comm_fixed + comm_token * tokens
                layer = linear + (in_graph if in_graph > floor else floor) + eager
            pairs = queue_pairs + prompt_pairs
            ctx_pairs = 0.0  # no prompt token is cached before the chunk
            if ctx_pairs > pairs:
                ctx_pairs = pairs
            compute = pair_s * (
                ctx_pairs + diag * (pairs - ctx_pairs) + query_pairs * prefill_tokens
            )
            memory = kv_s * (prefill_tokens + 0)
            attn = attn_kernel + (compute if compute > memory else memory)
            if grid is not None:  # the queued prompts' and ours
                attn *= prefill_factor(grid, heads, prefill_tokens, num_ahead - r, group)
            layer += attn
            if r > 0:
                layer += decode_attn
                layer += decode_grouped
            prefill = cpu_s + layers * layer + head_s
        if room_ctx is not None and exact:
            ttft = 0.0 + prefill
            ctx = room_ctx + p
        else:
            total_ctx = ctx_base + p
            slot = 0.0
            if rare.slot_rounds:
                slot = rare.slot_rounds * rare.model.decode_steps_s(
                    rare.max_num_seqs, total_ctx, rare.slot_steps
                )
            ttft = slot + prefill
            ctx = round(total_ctx * num_seqs / num_ahead) + num_seqs
        add_ttft(ttft)
        if steps <= 0 or num_seqs <= 0:
            if e2e:
                add_e2e(ttft + 0.0)
            continue
        # the decode steps: decode_steps_s of num_seqs sequences from this context
        first_pair = decode_pair * ctx
        first_kv = decode_kv * (ctx + seq_ctx)
        gap0 = first_pair - first_kv
        if gap_slope == 0.0 or (gap0 >= 0.0) == (gap0 + gap_slope * steps_less >= 0.0):
            if gap0 >= 0.0:
                attention = steps * first_pair + slope_pair * steps * steps_less / 2.0
            else:
                attention = steps * first_kv + slope_kv * steps * steps_less / 2.0
        else:
            attention = sum_max_affine(first_pair, slope_pair, first_kv, slope_kv, steps)
        add_e2e(ttft + (steps * step_s + attention))
    return ttfts, e2es


class FleetLatency:
    """Builds :class:`LoadTerms`: whether a model is one the pass computes, and its
    constants, are found once per model (models with equal constants share one object, so
    the pass unpacks them only when they change between candidates)."""

    def __init__(self) -> None:
        # by every constant's exact value (as hex: 0.0 and -0.0 are two keys)
        self._coefs: dict[tuple[object, ...], FleetCoef] = {}
        # by id(model): the model (kept, so the id is not reused), its constants and its
        # seqs_terms by sequence count
        self._models: dict[int, tuple[StepTimeModel, FleetCoef | None, dict[int, SeqsTerms]]] = {}

    def terms(
        self,
        model: StepTimeModel,
        num_running: int,
        num_waiting: int,
        waiting_tokens: int,
        running_remaining: int,
        running_ctx: int,
        max_num_seqs: int,
    ) -> LoadTerms | None:
        """:func:`load_terms` of this load on ``model``; ``None`` when the pass does not
        compute ``model`` (:func:`fast_roofline`)."""
        known = self._models.get(id(model))
        if known is None or known[0] is not model:
            fast = fast_roofline(model)
            coef = None if fast is None else fleet_coef(fast.kernels.coef)
            if coef is not None:
                key = tuple(v.hex() if isinstance(v, float) else v for v in coef)
                coef = self._coefs.setdefault(key, coef)
            known = self._models[id(model)] = (model, coef, {})
        coef = known[1]
        if coef is None:
            return None
        assert isinstance(model, Roofline)  # fast_roofline() said so
        return load_terms(
            model,
            coef,
            num_running,
            num_waiting,
            waiting_tokens,
            running_remaining,
            running_ctx,
            max_num_seqs,
            known[2],
        )
