"""Planning deployments that speculate: each candidate's decode time per output token.

With ``speculation`` set (the ``engine.speculation`` block's fields: method, drafted
tokens, acceptance, ``max_batch``, a draft model), every candidate's step model (the
plan input's ``step_model``, which must split its iterations into parts: the roofline) is
priced by :class:`~sincere.perf.speculation.SpeculativeDecode`, and the planner reads a
decode-only iteration of ``n`` sequences as the time per output token of each:
``(draft + verify) / tokens_per_step`` within ``max_batch``, the plain decode step above
it. Both the decode pool's ``s(n)`` (TPOT and Little's law, :mod:`.pd_plan`) and the
colocated plan's fitted decode line (:mod:`.derive`) are per-token times, so dividing by
the tokens a step yields is the whole change; prefill iterations are the target's.

Approximations: the expected tokens per step stand for every step (a real run's accepted
lengths vary); the KV cache a batch holds is planned without the ``k + 1`` lookahead slots
a speculating engine reserves per sequence. The drafter's weights and KV per token come out
of the memory plan as in the engine (:func:`planned_memory`,
:mod:`sincere.engine.draft_memory`), so a speculating candidate holds fewer sequences.
"""

from __future__ import annotations

from sincere.catalog import get_model
from sincere.core.errors import ConfigError
from sincere.engine.draft_memory import draft_memory
from sincere.engine.speculation import SpeculationConfig
from sincere.perf.base import Deployment, StepTimeModel
from sincere.perf.factory import StepModelConfig
from sincere.perf.memory import MemoryPlan, plan_memory
from sincere.perf.speculation import PerTokenDecode, SpeculativeDecode


def planned_step(
    step_model: StepModelConfig, dep: Deployment, speculation: SpeculationConfig | None
) -> StepTimeModel:
    """``step_model`` built for ``dep``, :func:`speculating` when ``speculation`` is set."""
    step = step_model.build(dep)
    return step if speculation is None else speculating(step, dep, speculation)


def speculating(
    step: StepTimeModel, dep: Deployment, speculation: SpeculationConfig
) -> PerTokenDecode:
    """``step`` of ``dep`` speculating (a draft model runs on the target's GPUs, in its
    precision and TP); a step model that cannot be priced so is a ConfigError."""
    draft = None
    if speculation.draft_model is not None:
        arch = get_model(speculation.draft_model)
        draft_dep = Deployment(arch, dep.accelerator, dep.precision, dep.kv_precision, dep.tp)
        draft = StepModelConfig(kind="roofline").build(draft_dep)
    try:
        spec = SpeculativeDecode(step, speculation.params(), dep.model.num_layers, draft)
    except ConfigError as exc:
        raise ConfigError(str(exc), where="speculation") from None
    return PerTokenDecode(spec)


def planned_memory(
    dep: Deployment,
    speculation: SpeculationConfig | None,
    *,
    max_num_seqs: int,
    max_num_batched_tokens: int = 8192,
) -> MemoryPlan:
    """``dep``'s memory plan, its drafter's weights and KV per token taken out of the KV
    pool when ``speculation`` is set (as a speculating engine sizes its pool)."""
    if speculation is None:
        return plan_memory(
            dep, max_num_seqs=max_num_seqs, max_num_batched_tokens=max_num_batched_tokens
        )
    try:
        draft = draft_memory(speculation, dep, max_num_seqs)
    except ConfigError as exc:
        raise ConfigError(str(exc), where="speculation") from None
    return plan_memory(
        dep,
        max_num_seqs=max_num_seqs,
        max_num_batched_tokens=max_num_batched_tokens,
        draft_weight_bytes=draft.weight_bytes,
        draft_kv_bytes_per_token=draft.kv_bytes_per_token,
    )
