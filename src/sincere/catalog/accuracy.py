"""Relative accuracy keys: sincere's form and MaverIQ's.

sincere keys a model's relative accuracy (percent of its fp16 accuracy) by
``"<precision>[+kv-<kv precision>]"`` (see :class:`~sincere.catalog.specs.ModelArch`).
MaverIQ's relative MMLU table (``mmlu_relative_accuracy.json``) keys the same figures as
``<model>_<weight precision>_<int8 KV cache>_<extra>``: the weight precision is
``float16``, ``int8``, ``int4`` (weight-only) or ``int4_gptq``; the KV flag is ``True``
when the KV cache is int8; the last field is ``None`` throughout the published table and
is not interpreted. This module converts MaverIQ's keys to ours, so its table can be
checked against (or re-derived into) ``models.yaml``.
"""

from __future__ import annotations

from sincere.catalog.specs import accuracy_key

MAVERIQ_PRECISIONS: dict[str, str] = {
    "float16": "fp16",
    "bfloat16": "bf16",
    "int8": "int8",
    "int4": "int4",
    "int4_gptq": "int4-gptq",
}
"""MaverIQ's weight-precision spellings -> sincere's precision names."""

_KV_FLAGS = {"True": "int8", "False": "fp16"}


def parse_maveriq_accuracy_key(key: str) -> tuple[str, str]:
    """``"llama-2-7b_int4_gptq_False_None"`` -> ``("llama-2-7b", "int4-gptq")``.

    Returns MaverIQ's model name (as spelled there) and sincere's precision key. Raises
    ``ValueError`` naming the key and the expected form when it does not parse.
    """
    parts = key.split("_")
    if len(parts) < 4 or parts[-2] not in _KV_FLAGS:
        raise ValueError(
            f"bad MaverIQ accuracy key {key!r}; expected '<model>_<precision>_<True|False>_<x>'"
        )
    model, precision = parts[0], "_".join(parts[1:-2])
    if precision not in MAVERIQ_PRECISIONS:
        raise ValueError(
            f"unknown precision {precision!r} in MaverIQ accuracy key {key!r};"
            f" allowed: {', '.join(MAVERIQ_PRECISIONS)}"
        )
    return model, accuracy_key(MAVERIQ_PRECISIONS[precision], _KV_FLAGS[parts[-2]])
