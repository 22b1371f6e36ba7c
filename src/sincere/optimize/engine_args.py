"""What the real engines' speculation arguments share (:mod:`~sincere.optimize.vllm_args`,
:mod:`~sincere.optimize.sglang_args`): the engine's name for sincere's drafting method, and
the model the engine loads to draft."""

from __future__ import annotations

from collections.abc import Mapping

from sincere.core.errors import ConfigError
from sincere.engine.speculation import SpeculationConfig

OWN_DRAFTERS = ("mtp", "ngram")
"""sincere's methods that draft without a separate model (the target's own MTP module, or
look-ups in the text)."""


def engine_method(
    engine: str, setting: str, table: Mapping[str, tuple[str, ...]], spec: SpeculationConfig,
    given: str | None,
) -> str:  # fmt: skip
    """The engine's value of ``setting`` for ``spec.method``: ``given`` if it is one of
    ``table``'s for that method, else the table's first; any other is a
    :class:`ConfigError` naming the allowed ones."""
    allowed = table[spec.method]
    chosen = given or allowed[0]
    if chosen not in allowed:
        raise ConfigError(
            f"{engine}'s {setting} for sincere's {spec.method!r} drafting",
            value=given,
            allowed=allowed,
        )
    return chosen


def drafter(
    spec: SpeculationConfig, model_ids: Mapping[str, str], given: str | None, *, engine: str,
    setting: str, example: str,
) -> str | None:  # fmt: skip
    """The model the engine loads to draft: ``given``, the draft model's id in
    ``model_ids`` (else its catalog name), or none for :data:`OWN_DRAFTERS`. Refused: a
    model given for those, and an EAGLE head with no repository (``setting``: the
    argument that takes it, ``example``: a repository to show)."""
    if spec.method in OWN_DRAFTERS:
        if given is not None:
            raise ConfigError(
                f"method {spec.method} drafts without a separate model ({engine} loads none)",
                value=given,
            )
        return None
    if given is not None:
        return given
    if spec.draft_model is not None:
        return model_ids.get(spec.draft_model, spec.draft_model)
    raise ConfigError(
        f"an EAGLE deployment needs its head's repository for {engine}'s {setting}",
        value=None,
        allowed=f"{setting}: e.g. {example}",
    )
