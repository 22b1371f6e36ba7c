"""A deployment's speculation as arguments of SGLang's server (``sglang.launch_server``).

SGLang takes speculative decoding at launch (docs.sglang.io, "Speculative Decoding"; the
argument names are its ``ServerArgs``'): ``--speculative-algorithm`` (``EAGLE`` or
``EAGLE3`` for an EAGLE head, ``NEXTN`` for a model's own multi-token-prediction module,
``STANDALONE`` for a separate draft model, ``NGRAM``), ``--speculative-draft-model-path``
(the head or draft model; none for NEXTN, whose module ships in the target's checkpoint,
nor for NGRAM), ``--speculative-num-steps`` (drafting depth: ``k``),
``--speculative-eagle-topk`` (branching per step: 1 for a chain) and
``--speculative-num-draft-tokens`` (positions verified per sequence: ``k + 1`` for a chain,
as SGLang itself forces when topk is 1; a tree's ``verify_tokens``). An n-gram drafter
gets only the verified positions; SGLang's look-up window keeps its defaults.

A tree draft (``verify_tokens``) needs its branching, which sincere's speculation does not
hold: give ``eagle_topk`` (2 or more). Refused with an error: ``max_batch`` (SGLang's
server has no batch size above which it stops speculating, so the plan's priced cut-off
could not hold). Not carried: the acceptance rates (SGLang measures them) and an EAGLE
head's ``draft_layers`` (the head's own architecture).
"""

from __future__ import annotations

from collections.abc import Mapping

from sincere.core.errors import ConfigError
from sincere.engine.speculation import SpeculationConfig
from sincere.optimize.engine_args import drafter, engine_method

SGLANG_ALGORITHMS: dict[str, tuple[str, ...]] = {
    "eagle": ("EAGLE3", "EAGLE"),
    "mtp": ("NEXTN", "EAGLE"),
    "draft-model": ("STANDALONE",),
    "ngram": ("NGRAM",),
}
"""sincere's drafting method -> SGLang's ``--speculative-algorithm`` values for it (the
first is the default)."""


def sglang_speculative_args(
    spec: SpeculationConfig,
    model_ids: Mapping[str, str],
    draft_model_path: str | None = None,
    algorithm: str | None = None,
    eagle_topk: int | None = None,
) -> list[str]:
    """SGLang's ``--speculative-*`` arguments for ``spec`` (module docstring).
    ``draft_model_path``: the EAGLE head's repository (a draft model's default: its
    ``model_ids`` entry, else its catalog name); ``algorithm``: one of
    :data:`SGLANG_ALGORITHMS`' values for ``spec.method``; ``eagle_topk``: a tree's
    branching. Raises :class:`ConfigError` for an algorithm SGLang does not pair with the
    method, a ``max_batch``, a tree without ``eagle_topk`` (or a chain given one above 1),
    or a drafter model missing or given where none is loaded."""
    chosen = engine_method("SGLang", "speculative algorithm", SGLANG_ALGORITHMS, spec, algorithm)
    if spec.max_batch is not None:
        raise ConfigError(
            "SGLang has no batch size above which it stops speculating: plan without "
            "speculation.max_batch to launch on SGLang",
            value=spec.max_batch,
            allowed="no max_batch",
        )
    k = spec.params().num_draft_tokens
    args = ["--speculative-algorithm", chosen]
    path = drafter(
        spec, model_ids, draft_model_path, engine="SGLang", setting="draft_model_path",
        example="yuhuili/EAGLE3-LLaMA3.1-Instruct-8B",
    )  # fmt: skip
    if path is not None:
        args += ["--speculative-draft-model-path", path]
    verified = _verified_positions(spec, k, eagle_topk)
    if spec.method == "ngram":
        return [*args, "--speculative-num-draft-tokens", str(verified)]
    topk = 1 if eagle_topk is None else eagle_topk
    return [
        *args,
        "--speculative-num-steps", str(k),
        "--speculative-eagle-topk", str(topk),
        "--speculative-num-draft-tokens", str(verified),
    ]  # fmt: skip


def _verified_positions(spec: SpeculationConfig, k: int, eagle_topk: int | None) -> int:
    """Positions SGLang verifies per sequence: ``k + 1`` for a chain, a tree's own."""
    if spec.verify_tokens is None:
        if eagle_topk not in (None, 1):
            raise ConfigError(
                "eagle_topk above 1 drafts a tree: give speculation.verify_tokens (the "
                "positions verified) so the plan is priced as one",
                value=eagle_topk,
                allowed="1 or none for a chain draft",
            )
        return k + 1
    if spec.method == "ngram" or eagle_topk is None or eagle_topk < 2:
        raise ConfigError(
            "a tree draft (speculation.verify_tokens) needs SGLang's branching per step: "
            "give eagle_topk of 2 or more (method eagle, mtp or draft-model)",
            value=eagle_topk,
            allowed=">= 2",
        )
    return spec.verify_tokens
