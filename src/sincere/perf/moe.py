"""Formulas for mixture-of-experts layers, MLA, sliding windows and weight formats.

Pure functions of plain numbers; :mod:`sincere.perf.arch_step` composes them into
an iteration's time. Sources and assumptions:

* **Distinct experts.** A token picks ``k`` distinct experts of ``E``; under uniform
  routing a given expert escapes one token with probability ``1 - k/E`` and a batch
  of ``T`` tokens with ``(1 - k/E)^T``, so the batch activates ``E (1 - (1 - k/E)^T)``
  experts on average (the occupancy argument also used for MoE serving in e.g.
  Huang et al., "Towards MoE deployment", 2023). ``skew > 0`` makes expert ``i``'s
  popularity ``∝ i^-skew`` (Zipf): a token includes it with probability
  ``min(1, k p_i)`` and the count is ``Σ 1 - (1 - q_i)^T``; ``skew = 0`` is uniform.
* **Grouped GEMM.** Each active expert's tokens are padded to a tile of ``tile``
  rows (vLLM's fused MoE kernel uses ``BLOCK_SIZE_M`` 16 to 64), so the work of
  ``m`` tokens per expert is that of ``tile · ceil(m / tile)``.
* **Permutation.** Tokens are gathered into expert order and scattered back with
  their routing weights: ``2 T h (1 + k)`` activation elements read and written.
* **Fused-MoE kernel** (:func:`expert_work`, :func:`fused_moe_s`): the one formula both
  the step model and the kernel fit (:mod:`sincere.fit.kernels`) price a layer's routed
  experts with. Compute: the padded rows' FLOPs plus ``tail_share`` of the busiest
  expert's over the peak × efficiency; memory: the active experts' weights in their
  bytes plus the tokens' activations in and out of the GEMMs and the permutation's over
  HBM × efficiency, plus a fixed cost per active expert (``expert_s``: a narrow expert's
  weights do not stream at the rate a wide one's do); the two combined by the roofline's
  p-norm, plus a fixed kernel cost.
* **Narrow and unaligned experts** (:func:`narrow_expert_scale`, :func:`unaligned_factor`):
  an expert ``w`` wide on one GPU computes as if ``w + offset`` wide (the GEMMs' fixed steps
  per tile), and where ``w`` is not a multiple of :data:`ALIGNED_WIDTH` the kernel leaves
  its fast path (measured 2.1-2.4x on Hopper's bf16 experts, none on Ada's).
* **The database's power-law rows** (:func:`collector_power_law_load`): the collector
  does not draw a popularity per expert and tokens from it; it draws each expert's *count*
  from a bounded power law (exponent ``alpha``; ``[1, 0.8 T]`` where ``T k > E``, else
  ``[0.01, 2]``), scales the counts to ``T k`` slots, rounds them (the rounding's
  difference given to the largest or taken from the smallest experts in turn, equal
  counts ranked by the values drawn), and under
  expert parallelism times the group of ``E / ep`` contiguous experts with the most
  slots. No expert can hold more than ``T`` (a token's experts are distinct): a count over
  it is taken as capped and its excess given to the next largest.
* **The busiest expert-parallel rank** (:func:`busiest_rank_load`). Under expert
  parallelism each of ``ep`` GPUs holds ``E / ep`` contiguous experts, and a layer lasts as
  long as the rank the batch loads most: the one with the most distinct experts to read
  and the most routed tokens to compute, not the mean. A rank's routed token copies are a
  sum over the batch's tokens of how many of each token's ``k`` distinct experts it holds
  (hypergeometric under uniform routing: mean ``k / ep``, variance
  ``(k / ep)(1 - 1/ep)(E - k)/(E - 1)``); its distinct experts a sum of ``E / ep``
  indicators, each expert active with probability ``a = 1 - (1 - k/E)^T`` and two of them
  both idle with ``b = ((E - k)(E - k - 1) / (E (E - 1)))^T``. Both counts are taken as
  normal and the busiest rank as the expected maximum over the ranks: ``mean + sd ·
  e(ep)``, ``e(n)`` the expected largest of ``n`` independent standard normals (0.56 at 2,
  1.03 at 4, 1.42 at 8), for the token copies times ``sqrt(ep / (ep - 1))`` since the
  ranks' copies sum to ``T k`` (equicorrelated with ``-1 / (ep - 1)``). With a Zipf
  popularity each rank has its own mean and spread (the most popular experts share the
  first rank) and the maximum is integrated numerically. A seeded draw of real routings
  holds the closed form within a few percent from 4 tokens on (``tests/perf/test_perf_moe.py``).
  At a decode batch of 4 on Qwen3.5's 512 experts (top 10) over 4 ranks the busiest rank
  reads 1.3x the mean rank's experts; at 128 tokens the two are within 3 %. The step model
  prices the busiest rank only when asked (``MoEParams.busiest_rank``): the measured EP
  serving points fit the mean rank better (benchmarks/README.md).
* **Expert-parallel all-to-all.** Two exchanges per MoE layer (dispatch, combine);
  in each, a GPU sends its ``T / ep`` tokens' ``k`` copies bound to the other
  ``ep - 1`` ranks: ``(T/ep) k h b (ep-1)/ep`` bytes, no de-duplication of copies
  bound to the same rank. Time: a latency plus the busiest rank's bytes
  (``imbalance`` × the mean) over the link.
* **MLA** (DeepSeek-V2/V3): the cache holds a latent of ``kv_lora_rank`` plus a
  rotary key of ``qk_rope_head_dim`` per token and layer, shared by all heads.
  Decode runs the absorbed form: every head scores against the latent and rope key
  (``2 (r + rope)`` FLOPs a pair) and sums latents (``2 r``), reading the cache once
  for all heads; prefill runs the expanded form (``2 (d_qk + d_v)`` a pair and head).
* **Sliding windows**: a window layer reads at most ``window`` cached tokens a
  sequence. From a batch's sums the cap is ``min(ctx, seqs · window)`` (exact when
  the sequences are equally long, else an upper bound).
"""

from __future__ import annotations

import functools
import math

import numpy as np
import numpy.typing as npt

from sincere.core.errors import ConfigError

FArray = npt.NDArray[np.float64]

ALIGNED_WIDTH = 16
"""Elements an expert's width on one GPU is a multiple of on the fused kernel's fast path;
Hopper's bf16 experts run 2.1-2.4x as long at other widths (``moe_unaligned_factor``)."""

SKEWED_ROUTING_NOTE = "no balanced rows: fitted on the skewed routings"
"""The note a kernel fit's fused-MoE family carries where its table timed skewed routings
only (A100's): the busiest GPU's hot experts are what such rows time, which the formula
prices for balanced routing; such a family does not stand in for other GPUs
(:mod:`sincere.perf.calibration`'s kernel-class priors)."""

INT4_WEIGHTS = frozenset({"int4", "int4-gptq"})
"""Weight precisions whose experts the INT4 (W4A16) kernel runs: 4-bit integer weights
dequantised to bf16 (vLLM's Marlin MoE kernel), priced by the ``moe_int4_*`` constants and
read from the database's ``int4_wo`` rows."""


def _check_routing(num_experts: int, top_k: int) -> None:
    if num_experts < 1 or not 1 <= top_k <= num_experts:
        raise ConfigError(
            "experts_per_token must be within num_experts",
            value=(top_k, num_experts),
            allowed="1 <= experts_per_token <= num_experts",
        )


def expected_distinct_experts(
    num_tokens: float, num_experts: int, top_k: int, skew: float = 0.0
) -> float:
    """Experts a batch of ``num_tokens`` tokens activates on average (see the module docstring)."""
    _check_routing(num_experts, top_k)
    if skew < 0.0:
        raise ConfigError("routing skew must be >= 0", value=skew, allowed=">= 0 (0: uniform)")
    if num_tokens <= 0:
        return 0.0
    if skew == 0.0:
        return num_experts * (1.0 - math.pow(1.0 - top_k / num_experts, num_tokens))
    weights = [math.pow(i, -skew) for i in range(1, num_experts + 1)]
    total = sum(weights)
    distinct = 0.0
    for w in weights:
        q = min(1.0, top_k * w / total)
        distinct += 1.0 - math.pow(1.0 - q, num_tokens)
    return distinct


def grouped_gemm_rows(tokens_per_expert: float, num_active: float, tile: int) -> float:
    """Rows a grouped GEMM computes: each active expert's tokens padded to the tile."""
    if tile < 1:
        raise ConfigError("expert tile must be >= 1 token", value=tile)
    if tokens_per_expert <= 0.0 or num_active <= 0.0:
        return 0.0
    return num_active * tile * math.ceil(tokens_per_expert / tile - 1e-9)


def grouped_gemm_efficiency(tokens_per_expert: float, tile: int) -> float:
    """Useful share of a grouped GEMM's rows at ``tokens_per_expert`` tokens an expert."""
    if tokens_per_expert <= 0.0:
        return 1.0
    return tokens_per_expert / grouped_gemm_rows(tokens_per_expert, 1.0, tile)


def permutation_bytes(num_tokens: float, top_k: int, hidden: int, act_bytes: float) -> float:
    """Bytes the gather into expert order and the weighted scatter back move."""
    return 2.0 * num_tokens * hidden * (1.0 + top_k) * act_bytes


def foreign_pair_bytes(
    num_tokens: float, top_k: int, hidden: int, width: int, gated: bool, ep: int, act_bytes: float
) -> float:
    """Activation bytes one GPU's fused MoE moves for the routed pairs of *other* GPUs'
    experts under expert parallelism (0 without): vLLM's Triton kernel computes only its own
    experts' pairs, but its buffers span every routed pair of the batch it holds, the
    others written as zeros, and its activation and per-token reduction run over all of
    them. Per such pair: the first GEMM's output (``up``: two widths gated, one plain), the
    activation's read of it and write of one width, the second GEMM's output and the
    reduction's read of it (``2 up + width + 2 hidden``). Priced at HBM speed times the
    fitted ``moe_ep_foreign_factor`` (0 where a GPU's EP kernel takes no such pass)."""
    if ep <= 1:
        return 0.0
    up = (2 if gated else 1) * width
    return num_tokens * top_k * (1.0 - 1.0 / ep) * (2 * up + width + 2 * hidden) * act_bytes


def all_to_all_bytes(
    num_tokens: float, top_k: int, hidden: int, ep: int, act_bytes: float
) -> float:
    """Bytes one GPU sends in one expert-parallel exchange (dispatch or combine)."""
    if ep < 1:
        raise ConfigError("ep must be >= 1", value=ep)
    return num_tokens / ep * top_k * hidden * act_bytes * (ep - 1) / ep


def all_to_all_s(
    message_bytes: float, link_bytes_per_s: float, latency_s: float, imbalance: float = 1.0
) -> float:
    """One exchange: its latency plus the busiest rank's bytes over the link (0 bytes: 0 s)."""
    if imbalance < 1.0:
        raise ConfigError("EP imbalance must be >= 1", value=imbalance, allowed=">= 1")
    if message_bytes <= 0.0:
        return 0.0
    return latency_s + imbalance * message_bytes / link_bytes_per_s


def mla_decode_flops_per_pair(num_heads: int, kv_lora_rank: int, rope_dim: int) -> float:
    """FLOPs per (query, cached token) pair and layer of MLA's absorbed decode form."""
    return 2.0 * num_heads * (2 * kv_lora_rank + rope_dim)


def mla_prefill_flops_per_pair(num_heads: int, head_dim: int, rope_dim: int) -> float:
    """FLOPs per (query, key) pair and layer of MLA's expanded form (prefill)."""
    return 2.0 * num_heads * (head_dim + rope_dim + head_dim)


def mla_kv_bytes_per_token_layer(kv_lora_rank: int, rope_dim: int, kv_bytes: float) -> float:
    """Cache bytes of one token in one MLA layer: the latent and the rotary key."""
    return (kv_lora_rank + rope_dim) * kv_bytes


def windowed_context(ctx_tokens: float, num_seqs: int, window: int) -> float:
    """Cached tokens the decode sequences of a sliding-window layer read (summed)."""
    return min(ctx_tokens, float(num_seqs) * window)


def windowed_pairs(pairs: float, num_tokens: int, window: int) -> float:
    """Causal query-key pairs of a prefill in a sliding-window layer (each query <= window)."""
    return min(pairs, float(num_tokens) * window)


def routing_load(
    num_tokens: float, num_experts: int, top_k: int, skew: float, tile: int
) -> tuple[float, float, float]:
    """(distinct experts, padded grouped-GEMM rows, busiest expert's tokens) of a batch.

    Expert ``i`` is picked by a token with probability ``q_i = min(1, k p_i)``
    (``p_i ∝ i^-skew``; uniform at 0); it is active with probability ``1 - (1 - q_i)^T``
    and then holds ``T q_i`` tokens over that probability, padded to ``tile`` rows. The
    busiest expert holds ``T max q_i`` tokens. Uniform routing gives
    :func:`expected_distinct_experts` and :func:`grouped_gemm_rows` of the mean load.
    """
    _check_routing(num_experts, top_k)
    if tile < 1:
        raise ConfigError("expert tile must be >= 1 token", value=tile)
    if num_tokens <= 0:
        return 0.0, 0.0, 0.0
    if skew == 0.0:
        distinct = expected_distinct_experts(num_tokens, num_experts, top_k)
        rows = grouped_gemm_rows(num_tokens * top_k / distinct, distinct, tile)
        return distinct, rows, num_tokens * top_k / num_experts
    weights = [math.pow(i, -skew) for i in range(1, num_experts + 1)]
    total = sum(weights)
    distinct = rows = busiest = 0.0
    for w in weights:
        q = min(1.0, top_k * w / total)
        active = 1.0 - math.pow(1.0 - q, num_tokens)
        if active <= 0.0:
            continue
        load = num_tokens * q / active
        distinct += active
        rows += active * tile * math.ceil(load / tile - 1e-9)
        busiest = max(busiest, num_tokens * q)
    return distinct, rows, busiest


@functools.lru_cache(maxsize=64)
def expected_max_of_normals(count: int) -> float:
    """The expected largest of ``count`` independent standard normal draws (0 for one)."""
    if count < 1:
        raise ConfigError("count must be >= 1", value=count)
    return expected_max_normal(np.zeros(count), np.ones(count))


def expected_max_normal(means: FArray, sds: FArray) -> float:
    """The expected largest of independent normal draws ``N(means[i], sds[i]^2)``: ``lo +
    ∫ P(max > x) dx`` from ``lo``, nine spreads below the lowest, on a fine grid."""
    from scipy.special import ndtr  # here: importing SciPy costs every run ~0.1 s

    means, sds = np.asarray(means, dtype=float), np.asarray(sds, dtype=float)
    if means.size == 0 or means.shape != sds.shape or float(sds.min()) < 0.0:
        raise ConfigError("normals need as many spreads >= 0 as means", value=(means, sds))
    if float(sds.max()) == 0.0:
        return float(means.max())
    lo = float((means - 9.0 * sds).min())
    hi = float((means + 9.0 * sds).max())
    x = np.linspace(lo, hi, 4097)
    spread = np.where(sds > 0.0, sds, 1.0)[:, None]
    below = np.where(sds[:, None] > 0.0, ndtr((x[None, :] - means[:, None]) / spread),
                     (x[None, :] >= means[:, None]).astype(float))  # fmt: skip
    return lo + float(np.trapezoid(1.0 - below.prod(axis=0), x))


@functools.lru_cache(maxsize=65536)
def busiest_rank_load(
    num_tokens: float, num_experts: int, top_k: int, skew: float, ep: int
) -> tuple[float, float]:
    """(distinct experts active, routed token copies) of the busiest of ``ep`` expert-parallel
    ranks, each holding ``E / ep`` contiguous experts, expected over the routing (the module
    docstring); ``ep`` 1: the whole batch's. Memoised."""
    _check_routing(num_experts, top_k)
    if ep < 1 or num_experts % ep:
        raise ConfigError("ep must divide num_experts", value=(ep, num_experts))
    if num_tokens <= 0:
        return 0.0, 0.0
    e, k, t = num_experts, top_k, num_tokens
    n = e // ep
    if ep == 1:
        return expected_distinct_experts(t, e, k, skew), t * k
    spare = (e - k) / (e - 1) if e > 1 else 0.0  # a token's picks are distinct experts
    if skew == 0.0:
        a = 1.0 - math.pow(1.0 - k / e, t)
        b = math.pow((e - k) * (e - k - 1) / (e * (e - 1)), t) if e - k >= 1 else 0.0
        var_d = max(0.0, n * a * (1.0 - a) + n * (n - 1) * (b - (1.0 - a) ** 2))
        top = expected_max_of_normals(ep)
        distinct = n * a + math.sqrt(var_d) * top
        var_r = t * (k / ep) * (1.0 - 1.0 / ep) * spare
        routed = t * k / ep + math.sqrt(var_r * ep / (ep - 1)) * top
    else:
        weights = np.power(np.arange(1, e + 1, dtype=float), -skew)
        q = np.minimum(1.0, k * weights / weights.sum()).reshape(ep, n)
        active = 1.0 - np.power(1.0 - q, t)
        distinct = expected_max_normal(active.sum(axis=1),
                                       np.sqrt((active * (1.0 - active)).sum(axis=1)))  # fmt: skip
        share = q.sum(axis=1)
        var_r = t * np.maximum(share * (1.0 - share / k), 0.0) * spare
        routed = expected_max_normal(t * share, np.sqrt(var_r))
    routed = min(routed, t * min(k, n))
    return min(distinct, float(n), routed), routed


def round_robin_load(
    num_tokens: float, num_experts: int, top_k: int, tile: int
) -> tuple[float, float, float]:
    """:func:`routing_load` of a batch whose tokens are dealt to experts in turn (the kernel
    database's ``balanced`` rows): ``min(E, T k)`` experts active, each holding ``T k`` over
    that many tokens (padded to ``tile`` rows), the busiest ``ceil(T k / E)``."""
    _check_routing(num_experts, top_k)
    if num_tokens <= 0:
        return 0.0, 0.0, 0.0
    routed = num_tokens * top_k
    distinct = min(float(num_experts), routed)
    rows = grouped_gemm_rows(routed / distinct, distinct, tile)
    return distinct, rows, float(math.ceil(routed / num_experts - 1e-9))


IArray = npt.NDArray[np.int64]


def power_law_counts(
    size: int, alpha: float, bounds: tuple[float, float], rng: np.random.Generator
) -> FArray:
    """``size`` values of a power law ``∝ x^-alpha`` on ``bounds`` by inverse-CDF sampling
    (``alpha`` 1: log-uniform)."""
    low, high = bounds
    u = rng.random(size)
    if alpha == 1.0:
        out: FArray = low * (high / low) ** u
        return out
    e = 1.0 - alpha
    out = ((high**e - low**e) * u + low**e) ** (1.0 / e)
    return out


def settle_total(counts: IArray, values: FArray, total: int) -> IArray:
    """``counts`` brought to sum ``total``: one more to each of the largest in turn, or one
    fewer to each of the smallest (the largest where that one is empty); equal counts
    ranked by the ``values`` they were rounded from (not by position: an all-empty draw
    would otherwise give its slots to the first experts, all in one EP group)."""
    out = counts.copy()
    delta = total - int(out.sum())
    order = np.lexsort((-values, -out))
    if delta > 0:
        np.add.at(out, order[np.arange(delta) % len(out)], 1)
    for i in range(-delta):
        j = int(order[-(i % len(out)) - 1])
        out[j if out[j] > 0 else int(np.argmax(out))] -= 1
    return out


def collector_power_law_draw(
    num_tokens: int, num_experts: int, top_k: int, alpha: float, rng: np.random.Generator
) -> IArray:
    """One draw of the database collector's expert loads (before any cap): power-law
    values scaled to ``T k`` slots, rounded and settled to sum exactly ``T k`` (the module
    docstring)."""
    _check_routing(num_experts, top_k)
    routed = num_tokens * top_k
    bounds = (1.0, 0.8 * num_tokens) if routed > num_experts else (0.01, 2.0)
    values = power_law_counts(num_experts, alpha, bounds, rng)
    counts = np.round(values / values.sum() * routed).astype(np.int64)
    return settle_total(counts, values, routed)


def cap_loads(loads: IArray, cap: int) -> IArray:
    """``loads`` with none above ``cap``: each excess given to the largest loads below it,
    filled to ``cap`` in order of size (the total kept where ``cap · E`` allows it)."""
    order = np.argsort(-loads, kind="stable")
    ranked = loads[order]
    excess = int(np.maximum(ranked - cap, 0).sum())
    ranked = np.minimum(ranked, cap)
    room = cap - ranked
    before = np.cumsum(room) - room
    ranked = ranked + np.clip(excess - before, 0, room)
    out = np.empty_like(loads)
    out[order] = ranked
    return out


def busiest_group(loads: IArray, ep: int) -> IArray:
    """The loads of the group of ``E / ep`` contiguous experts with the most tokens (the
    collector's rank 0 under expert parallelism)."""
    if ep < 1 or len(loads) % ep:
        raise ConfigError("ep must divide num_experts", value=(ep, len(loads)))
    groups = loads.reshape(ep, -1)
    out: IArray = groups[int(np.argmax(groups.sum(axis=1)))]
    return out


def group_figures(loads: IArray, tile: int) -> tuple[float, float, float, float]:
    """(active experts, padded rows, busiest expert's tokens, routed tokens) of ``loads``."""
    active = loads[loads > 0]
    if active.size == 0:
        return 0.0, 0.0, 0.0, 0.0
    rows = float((tile * np.ceil(active / tile)).sum())
    return float(active.size), rows, float(active.max()), float(active.sum())


@functools.lru_cache(maxsize=65536)
def collector_group_load(
    num_tokens: int,
    num_experts: int,
    top_k: int,
    alpha: float,
    tile: int,
    ep: int = 1,
    draws: int = 64,
    seed: int = 0,
) -> tuple[float, float, float, float]:
    """:func:`collector_power_law_load` and the measured GPU's routed tokens, averaged over
    ``draws`` draws of a generator seeded ``seed`` (deterministic)."""
    _check_routing(num_experts, top_k)
    if tile < 1:
        raise ConfigError("expert tile must be >= 1 token", value=tile)
    if alpha < 0.0:
        raise ConfigError("power-law exponent must be >= 0", value=alpha)
    if num_tokens <= 0:
        return 0.0, 0.0, 0.0, 0.0
    rng = np.random.default_rng(seed)
    total = np.zeros(4)
    for _ in range(draws):
        loads = cap_loads(collector_power_law_draw(num_tokens, num_experts, top_k, alpha, rng),
                          num_tokens)  # fmt: skip
        total += group_figures(busiest_group(loads, ep), tile)
    mean = total / draws
    return float(mean[0]), float(mean[1]), float(mean[2]), float(mean[3])


def collector_power_law_load(
    num_tokens: int,
    num_experts: int,
    top_k: int,
    alpha: float,
    tile: int,
    ep: int = 1,
    draws: int = 64,
    seed: int = 0,
) -> tuple[float, float, float]:
    """:func:`routing_load` of the database's ``power_law_<alpha>`` rows: (experts active
    on the measured GPU, their padded grouped-GEMM rows, the busiest expert's tokens) under
    the collector's generator (the module docstring), averaged over ``draws`` seeded draws.
    Under ``ep`` > 1 the figures are the busiest group's (the GPU the collector times), not
    the whole batch's. Memoised."""
    distinct, rows, busiest, _ = collector_group_load(
        num_tokens, num_experts, top_k, alpha, tile, ep, draws, seed
    )
    return distinct, rows, busiest


def collector_expert_work(
    num_tokens: float,
    hidden: int,
    width: int,
    routing: tuple[int, int, float, int],
    act_bytes: float,
    gated: bool = True,
    ep: int = 1,
) -> tuple[float, float, float, float, float]:
    """:func:`expert_work` of a ``power_law_<alpha>`` row of the database read as its
    collector drew it (``routing``'s skew is ``alpha``): the busiest GPU's own experts,
    rows and routed tokens (:func:`collector_group_load`), so no imbalance applies."""
    num_experts, top_k, alpha, tile = routing
    tokens = round(num_tokens)
    distinct, rows, busiest, routed = collector_group_load(
        tokens, num_experts, top_k, alpha, tile, ep
    )
    up = (2 if gated else 1) * width
    per_expert = float(hidden * (up + width))
    moved = routed * (2 * hidden + up + width) * act_bytes
    moved += permutation_bytes(num_tokens / ep, top_k, hidden, act_bytes)
    flops = 2.0 * per_expert * rows
    return flops, 2.0 * per_expert * busiest, distinct * per_expert, moved, distinct


def expert_work(
    num_tokens: float,
    hidden: int,
    width: int,
    routing: tuple[int, int, float, int],
    act_bytes: float,
    gated: bool = True,
    ep: int = 1,
    imbalance: float = 1.0,
    dealt: bool = False,
    collector: bool = False,
    busiest: bool = False,
) -> tuple[float, float, float, float, float]:
    """(FLOPs of the padded rows, FLOPs of the busiest expert, weight elements read,
    activation bytes moved, experts active on this GPU) of one fused-MoE layer on one GPU.

    ``routing`` is ``(num_experts, top_k, skew, tile)`` (:func:`routing_load`); each
    expert is ``width`` wide on this GPU (gate and up, or up alone, and down); the GPU
    holds ``1/ep`` of the experts and computes its ``T k / ep`` routed tokens times
    ``imbalance`` (the busiest GPU's share over the mean). ``dealt``: tokens dealt to the
    experts in turn (:func:`round_robin_load`; ``skew`` unused), not drawn at random.
    ``collector`` (where not ``dealt``): ``skew`` is the exponent of the database
    collector's power law, read by :func:`collector_expert_work` (``imbalance`` unused).
    ``busiest`` (drawn routing, ``ep`` > 1): the GPU is the busiest rank, with its expected
    distinct experts and routed tokens (:func:`busiest_rank_load`), not the mean rank's;
    ``imbalance`` multiplies on top.
    """
    if collector and not dealt:
        return collector_expert_work(num_tokens, hidden, width, routing, act_bytes, gated, ep)
    num_experts, top_k, skew, tile = routing
    if dealt:
        distinct, rows, top_expert = round_robin_load(num_tokens, num_experts, top_k, tile)
    else:
        distinct, rows, top_expert = routing_load(num_tokens, num_experts, top_k, skew, tile)
    up = (2 if gated else 1) * width
    per_expert = float(hidden * (up + width))
    if busiest and not dealt and ep > 1 and num_tokens > 0:  # its own experts and tokens
        mean_routed = num_tokens * top_k / ep
        distinct, routed = busiest_rank_load(num_tokens, num_experts, top_k, skew, ep)
        if skew == 0.0:
            rows = grouped_gemm_rows(routed / distinct, distinct, tile)
        else:
            rows = rows / ep * (routed / mean_routed)
        routed *= imbalance
        flops = 2.0 * per_expert * imbalance * rows
    else:  # the mean rank's share
        routed = num_tokens * top_k / ep * imbalance
        flops = 2.0 * per_expert * imbalance * rows / ep
        distinct /= ep
    moved = routed * (2 * hidden + up + width) * act_bytes
    moved += permutation_bytes(num_tokens / ep, top_k, hidden, act_bytes)
    return flops, 2.0 * per_expert * top_expert, distinct * per_expert, moved, distinct


def narrow_expert_scale(width: FArray | float, offset: float) -> FArray | float:
    """Compute of an expert ``width`` wide on one GPU as a share of its FLOPs: its GEMMs run
    as if ``offset`` wider (their fixed steps per tile weigh on narrow experts), fitted as
    ``moe_width_offset``."""
    return (width + offset) / width


def unaligned_factor(width: int, factor: float) -> float:
    """``factor`` where an expert's width on one GPU is off :data:`ALIGNED_WIDTH`, else 1."""
    return factor if width % ALIGNED_WIDTH else 1.0


def pnorm(compute: FArray, memory: FArray, p: float) -> FArray:
    """``(compute^p + memory^p)^(1/p)``, computed stably; ``p = inf`` is the max."""
    high, low = np.maximum(compute, memory), np.minimum(compute, memory)
    if math.isinf(p):
        return high
    ratio = np.where(high > 0, low / np.where(high > 0, high, 1.0), 0.0)
    out: FArray = high * (1.0 + ratio**p) ** (1.0 / p)
    return out


def fused_moe_s(
    work: tuple[FArray, FArray, FArray, FArray, FArray],
    rates: tuple[float, float],
    weight_bytes: float,
    kernel_s: float,
    tail_share: float,
    p: float,
    expert_s: float = 0.0,
) -> FArray:
    """The fused-MoE kernel's time of each :func:`expert_work` (stacked) at ``rates``
    (FLOP/s and HBM bytes/s reached, efficiencies applied), ``weight_bytes`` a weight:
    ``kernel_s + pnorm(compute, memory, p)`` (the module docstring), the memory side with
    ``expert_s`` for each active expert (a small expert's weights do not stream at the
    rate a large one's do)."""
    flops, tail, weights, acts, active = work
    peak, hbm = rates
    compute = (flops + tail_share * tail) / peak
    memory = (weights * weight_bytes + acts) / hbm + expert_s * active
    out: FArray = kernel_s + pnorm(compute, memory, p)
    return out
