"""Validation of catalog entries read from YAML / JSON files.

A catalog file holds ``accelerators:`` and ``models:`` mappings from an entry's name to
its fields (the layout of the shipped ``sincere/data/*.yaml``). Each entry is checked
here by a pydantic model -- units and ranges (positive sizes and rates, known precision
names, ``num_heads`` divisible by ``num_kv_heads``) -- and turned into the frozen
:class:`~sincere.catalog.specs.Accelerator` / :class:`~sincere.catalog.specs.ModelArch`
the rest of sincere reads. Every problem becomes a :class:`CatalogEntryError` naming the
file, the entry, the field, the bad value and what is allowed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    ValidationError,
    field_validator,
    model_validator,
)

from sincere.catalog.specs import PRECISION_BYTES, Accelerator, ModelArch
from sincere.core.errors import DataError

MAX_RELATIVE_ACCURACY = 150.0
"""Upper bound of a relative accuracy, %: a quantized model may score a little above 100."""


class CatalogEntryError(DataError):
    """A catalog entry in a file is malformed.

    ``kind`` is ``"accelerator"`` or ``"model"``, ``entry`` the entry's name, ``field``
    the offending field (``None`` for the entry as a whole) and ``allowed`` what would
    be accepted.
    """

    def __init__(
        self,
        message: str,
        *,
        path: str | Path,
        kind: str,
        entry: str,
        field: str | None = None,
        value: object = None,
        allowed: str | None = None,
    ) -> None:
        text = f"{kind} {entry!r}"
        if field is not None:
            text += f", field {field!r}"
        text += f": {message}"
        if allowed:
            text += f"; allowed: {allowed}"
        super().__init__(text, path=path, value=value)
        self.kind = kind
        self.entry = entry
        self.field = field
        self.allowed = allowed


def _check_precision(name: str) -> str:
    if name not in PRECISION_BYTES:
        raise ValueError(f"unknown precision {name!r}; allowed: {', '.join(PRECISION_BYTES)}")
    return name


def split_accuracy_key(key: str) -> tuple[str, str | None]:
    """``"int8+kv-int8"`` -> ``("int8", "int8")``; ``"fp16"`` -> ``("fp16", None)``.

    Raises ``ValueError`` naming the key and the allowed form when it is malformed.
    """
    weight, sep, kv = key.partition("+kv-")
    if weight not in PRECISION_BYTES or (sep and kv not in PRECISION_BYTES):
        raise ValueError(
            f"bad precision key {key!r}; allowed: '<precision>' or '<precision>+kv-<precision>'"
            f" with precisions {', '.join(PRECISION_BYTES)}"
        )
    return weight, (kv if sep else None)


class FieldProblemError(ValueError):
    """A whole-entry check that can name the one field at fault and its value."""

    def __init__(self, field: str, value: object, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.value = value


class AcceleratorEntry(BaseModel):
    """One accelerator as written in a catalog file (units in the field names)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    vendor: str = Field(min_length=1)
    memory_gb: PositiveFloat
    hbm_bandwidth_gbps: PositiveFloat
    bf16_tflops: PositiveFloat
    fp8_tflops: PositiveFloat | None = None
    int8_tops: PositiveFloat | None = None
    fp4_tflops: PositiveFloat | None = None
    l2_cache_mb: PositiveFloat | None = None
    compute_capability: PositiveFloat | None = None
    interconnect_gbps: PositiveFloat
    host_link_gbps: PositiveFloat
    price_per_hour_usd: NonNegativeFloat
    power_w: PositiveFloat
    cc_supported: bool
    sources: dict[str, str] = Field(default_factory=dict)
    aliases: tuple[str, ...] = ()

    def to_spec(self, name: str) -> Accelerator:
        """The frozen record the rest of sincere reads."""
        data = self.model_dump()
        data["aliases"] = tuple(self.aliases)
        return Accelerator(name=name, **data)


class ModelEntry(BaseModel):
    """One model architecture as written in a catalog file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    family: str = ""
    num_params_b: PositiveFloat
    num_layers: PositiveInt
    hidden_size: PositiveInt
    intermediate_size: PositiveInt
    num_heads: PositiveInt
    num_kv_heads: PositiveInt
    vocab_size: PositiveInt
    max_context: PositiveInt
    head_dim: NonNegativeInt = 0
    precisions: tuple[str, ...] = ("fp16", "bf16")
    relative_accuracy: dict[str, float] = Field(default_factory=dict)
    accuracy_source: str = ""
    source: str = ""
    aliases: tuple[str, ...] = ()
    gated_mlp: bool = True
    tied_embeddings: bool = False
    num_experts: NonNegativeInt = 0
    experts_per_token: NonNegativeInt = 0
    num_shared_experts: NonNegativeInt = 0
    expert_intermediate_size: NonNegativeInt = 0
    num_dense_layers: NonNegativeInt = 0
    q_lora_rank: NonNegativeInt = 0
    kv_lora_rank: NonNegativeInt = 0
    qk_rope_head_dim: NonNegativeInt = 0
    sliding_window: NonNegativeInt = 0
    num_sliding_layers: NonNegativeInt = 0
    num_linear_layers: NonNegativeInt = 0
    linear_num_key_heads: NonNegativeInt = 0
    linear_num_value_heads: NonNegativeInt = 0
    linear_key_head_dim: NonNegativeInt = 0
    linear_value_head_dim: NonNegativeInt = 0
    linear_conv_kernel: NonNegativeInt = 0
    attention_output_gate: bool = False
    native_precision: str = "bf16"

    @field_validator("native_precision")
    @classmethod
    def _known_native(cls, value: str) -> str:
        return _check_precision(value)

    @field_validator("precisions")
    @classmethod
    def _known_precisions(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError("at least one precision is needed")
        return tuple(_check_precision(p) for p in value)

    @field_validator("relative_accuracy")
    @classmethod
    def _accuracy_keys(cls, value: dict[str, float]) -> dict[str, float]:
        for key, pct in value.items():
            split_accuracy_key(key)
            if not 0.0 < pct <= MAX_RELATIVE_ACCURACY:
                raise ValueError(
                    f"{key}: {pct} is out of range; allowed: 0 < % <= {MAX_RELATIVE_ACCURACY:g}"
                )
        return value

    @model_validator(mode="after")
    def _consistent_heads(self) -> ModelEntry:
        if self.num_heads % self.num_kv_heads:
            raise ValueError(
                f"num_heads {self.num_heads} is not divisible by num_kv_heads"
                f" {self.num_kv_heads}; allowed: a divisor of num_heads"
            )
        if not self.head_dim and self.hidden_size % self.num_heads:
            raise ValueError(
                f"hidden_size {self.hidden_size} is not divisible by num_heads"
                f" {self.num_heads}; allowed: set head_dim explicitly"
            )
        _check_moe(self)
        _check_attention_variants(self)
        if self.native_precision not in self.precisions:
            raise ValueError(
                f"native_precision {self.native_precision!r} is not in precisions;"
                f" allowed: {', '.join(self.precisions)}"
            )
        missing = {split_accuracy_key(k)[0] for k in self.relative_accuracy} - set(self.precisions)
        if missing:
            raise ValueError(
                f"relative_accuracy names precisions {sorted(missing)} that are not in"
                f" precisions; allowed: {', '.join(self.precisions)}"
            )
        return self

    def to_spec(self, name: str) -> ModelArch:
        """The frozen record the rest of sincere reads."""
        data = self.model_dump()
        data["precisions"] = tuple(self.precisions)
        data["aliases"] = tuple(self.aliases)
        data["head_dim"] = self.head_dim or self.hidden_size // self.num_heads  # filled in
        return ModelArch(name=name, **data)


def _check_moe(entry: ModelEntry) -> None:
    """Mixture-of-experts fields: all or none, top-k within the experts."""
    if not entry.num_experts:
        others = {
            "experts_per_token": entry.experts_per_token,
            "num_shared_experts": entry.num_shared_experts,
            "expert_intermediate_size": entry.expert_intermediate_size,
            "num_dense_layers": entry.num_dense_layers,
        }
        for name, value in others.items():
            if value:
                raise FieldProblemError(
                    name,
                    value,
                    f"{name} {value} set on a dense model (num_experts 0);"
                    " allowed: 0, or set num_experts",
                )
        return
    if not 1 <= entry.experts_per_token <= entry.num_experts:
        raise FieldProblemError(
            "experts_per_token",
            entry.experts_per_token,
            f"experts_per_token {entry.experts_per_token} is not within num_experts"
            f" {entry.num_experts}; allowed: 1 to {entry.num_experts}",
        )
    if not entry.expert_intermediate_size:
        raise FieldProblemError(
            "expert_intermediate_size",
            0,
            "expert_intermediate_size 0 on an MoE model; allowed: the width of one expert's MLP",
        )
    if entry.num_dense_layers >= entry.num_layers:
        raise FieldProblemError(
            "num_dense_layers",
            entry.num_dense_layers,
            f"num_dense_layers {entry.num_dense_layers} leaves no MoE layer;"
            f" allowed: 0 to {entry.num_layers - 1}",
        )


def _check_attention_variants(entry: ModelEntry) -> None:
    """MLA's latent and rope dims come together; the sliding window names its layers."""
    if bool(entry.kv_lora_rank) != bool(entry.qk_rope_head_dim):
        raise FieldProblemError(
            "qk_rope_head_dim",
            entry.qk_rope_head_dim,
            f"kv_lora_rank {entry.kv_lora_rank} and qk_rope_head_dim {entry.qk_rope_head_dim}"
            " must be set together (MLA) or both be 0",
        )
    if entry.q_lora_rank and not entry.kv_lora_rank:
        raise FieldProblemError(
            "q_lora_rank",
            entry.q_lora_rank,
            f"q_lora_rank {entry.q_lora_rank} set without MLA; allowed: 0, or set kv_lora_rank",
        )
    if entry.num_sliding_layers > entry.num_layers:
        raise FieldProblemError(
            "num_sliding_layers",
            entry.num_sliding_layers,
            f"num_sliding_layers {entry.num_sliding_layers} exceeds num_layers"
            f" {entry.num_layers}; allowed: 0 to {entry.num_layers}",
        )
    if bool(entry.sliding_window) != bool(entry.num_sliding_layers):
        raise FieldProblemError(
            "sliding_window",
            entry.sliding_window,
            f"sliding_window {entry.sliding_window} and num_sliding_layers"
            f" {entry.num_sliding_layers} must be set together or both be 0",
        )
    _check_linear_layers(entry)


def _check_linear_layers(entry: ModelEntry) -> None:
    """Gated DeltaNet layers name their heads and sizes, and leave room for the others."""
    shape = {
        "linear_num_key_heads": entry.linear_num_key_heads,
        "linear_num_value_heads": entry.linear_num_value_heads,
        "linear_key_head_dim": entry.linear_key_head_dim,
        "linear_value_head_dim": entry.linear_value_head_dim,
        "linear_conv_kernel": entry.linear_conv_kernel,
    }
    if not entry.num_linear_layers:
        for name, value in shape.items():
            if value:
                raise FieldProblemError(
                    name,
                    value,
                    f"{name} {value} set without linear-attention layers;"
                    " allowed: 0, or set num_linear_layers",
                )
        return
    for name, value in shape.items():
        if not value:
            raise FieldProblemError(
                name,
                value,
                f"{name} is 0 on a model with {entry.num_linear_layers} linear-attention"
                " layers; allowed: its Gated DeltaNet size from config.json (linear_*)",
            )
    if entry.linear_num_value_heads % entry.linear_num_key_heads:
        raise FieldProblemError(
            "linear_num_value_heads",
            entry.linear_num_value_heads,
            f"linear_num_value_heads {entry.linear_num_value_heads} is not a multiple of"
            f" linear_num_key_heads {entry.linear_num_key_heads}; allowed: a multiple",
        )
    others = entry.num_linear_layers + entry.num_sliding_layers
    if others >= entry.num_layers:
        raise FieldProblemError(
            "num_linear_layers",
            entry.num_linear_layers,
            f"num_linear_layers {entry.num_linear_layers} (with {entry.num_sliding_layers}"
            f" sliding-window layers) leaves no full-attention layer of {entry.num_layers};"
            f" allowed: 0 to {entry.num_layers - entry.num_sliding_layers - 1}",
        )


_ENTRY_MODELS: dict[str, type[AcceleratorEntry] | type[ModelEntry]] = {
    "accelerator": AcceleratorEntry,
    "model": ModelEntry,
}


def entry_fields(kind: str) -> list[str]:
    """Field names an entry of ``kind`` may carry."""
    return sorted(_ENTRY_MODELS[kind].model_fields)


def validate_accelerator(name: str, raw: dict[str, Any], path: str | Path) -> Accelerator:
    """Check one accelerator entry; raises :class:`CatalogEntryError` on the first problem."""
    try:
        return AcceleratorEntry.model_validate(raw).to_spec(name)
    except ValidationError as exc:
        raise _entry_error(exc, "accelerator", name, path) from None


def validate_model(name: str, raw: dict[str, Any], path: str | Path) -> ModelArch:
    """Check one model entry; raises :class:`CatalogEntryError` on the first problem."""
    try:
        return ModelEntry.model_validate(raw).to_spec(name)
    except ValidationError as exc:
        raise _entry_error(exc, "model", name, path) from None


def _entry_error(exc: ValidationError, kind: str, name: str, path: str | Path) -> CatalogEntryError:
    """Turn pydantic's first error into one naming the file, entry, field and value."""
    err = exc.errors(include_url=False)[0]
    loc = [str(part) for part in err["loc"]]
    field = loc[0] if loc else None
    where = ".".join(loc) if loc else None
    value: object = err.get("input")
    message = str(err["msg"]).removeprefix("Value error, ")
    allowed: str | None = None
    if err["type"] == "missing":
        message, value = "missing required field", None
    elif err["type"] == "extra_forbidden":
        message, allowed = "unknown field", ", ".join(entry_fields(kind))
    elif isinstance(err.get("ctx", {}).get("error"), FieldProblemError):
        problem = err["ctx"]["error"]
        field, value = problem.field, problem.value
    elif field is None:
        value = None  # a whole-entry check: the message carries the values
    if len(loc) > 1:
        message = f"{where}: {message}"
    return CatalogEntryError(
        message, path=path, kind=kind, entry=name, field=field, value=value, allowed=allowed
    )
