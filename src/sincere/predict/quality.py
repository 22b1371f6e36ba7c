"""Quality (relevance) estimates of a model served at a precision.

The reference router scores each model's answers offline with an LLM judge; MaverIQ
keeps the relative MMLU accuracy of each model x precision against its fp16 version
(in the catalog as ``ModelArch.relative_accuracy``, keyed by
:func:`sincere.catalog.accuracy_key`: ``"int8"``, ``"int8+kv-int8"``, ...). Routers
read ``InstanceView.quality`` (1.0 = the reference); this helper derives it from the
relative accuracy and an optional per-model base score (a judge's or a benchmark's
score), so a 70B model in int4 and an 8B model in bf16 land on one scale:

    quality = base_score * relative_accuracy(precision, kv_precision) / 100.

A 16-bit setting (fp16 / bf16 weights, unquantised KV) missing from the table counts
as 100 %; any other missing setting is an error listing the measured ones.
"""

from __future__ import annotations

from sincere.catalog.specs import UNQUANTIZED_KV, ModelArch, accuracy_key
from sincere.core.errors import ConfigError

SIXTEEN_BIT: frozenset[str] = frozenset({"fp16", "bf16"})
"""Weight precisions that are the reference of relative accuracy."""


def relative_accuracy(arch: ModelArch, precision: str, kv_precision: str = "fp16") -> float:
    """Accuracy of ``arch`` in that setting relative to fp16, as a fraction (1.0 = same)."""
    percent = arch.relative_accuracy_of(precision, kv_precision)
    if percent is not None:
        return percent / 100.0
    if precision in SIXTEEN_BIT and kv_precision in UNQUANTIZED_KV:
        return 1.0
    raise ConfigError(
        f"model {arch.name!r} has no relative accuracy for this setting",
        value=accuracy_key(precision, kv_precision),
        allowed=sorted(arch.relative_accuracy) or "16-bit settings only",
    )


def model_quality(
    arch: ModelArch,
    precision: str,
    kv_precision: str = "fp16",
    base_score: float = 1.0,
) -> float:
    """``base_score`` times the relative accuracy in that setting: an InstanceView.quality."""
    if not base_score > 0:
        raise ConfigError("base_score must be > 0", value=base_score, allowed="a float > 0")
    return base_score * relative_accuracy(arch, precision, kv_precision)
