"""What the controller API accepts from a remote caller, checked before anything runs.

Whoever reaches the gateway's port can call ``/admin``, so every value of a request
body is bounded and no value may name a file of the server:

* **emulator fields** (``POST /admin/models {emulator}``, ``POST /admin/instances``
  without ``url``) are :class:`~sincere.serve.emulator.config.EmulatorConfig` fields.
  Text is accepted only where it is a name (model, accelerator, precisions,
  scheduler, step-model and length kinds, instance names, the filler token text);
  any other string is refused, because parameters of step models and length
  distributions may be file paths. ``step_model.params_file`` is accepted only as a
  relative name under ``controller.files_dir`` (none when unset), and a file that
  cannot be used is reported without its contents. Numbers must be finite, at most
  ``1e9`` in magnitude, and below the limits of :data:`API_LIMITS` for fields that
  size memory.
* **loads** (``POST /admin/plan {loads}``): model and tier of the planning problem,
  ``rate_per_min`` finite in ``[0, 1e7]``, mean token counts finite in ``(0, 1e7]``.
* **names** (models, instances): printable text of at most 128 characters.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from sincere.core.errors import ConfigError
from sincere.optimize.scaling import LoadSummary

MAX_API_NUMBER = 1e9
"""Largest magnitude of any number in an emulator's fields given over the API."""

API_LIMITS: dict[str, float] = {
    "max_num_requests": 65_536,  # slots preallocated by the emulated engine (~140 B each)
    "engine.block_size": 1024,  # the KV accounting keeps a list of this length
    "engine.max_num_seqs": 65_536,
    "engine.num_kv_blocks": 1 << 26,
}
"""Tighter bounds (inclusive) for emulator fields that size memory."""

TEXT_FIELDS = frozenset(
    {
        "name",
        "model",
        "served_model_name",
        "accelerator",
        "precision",
        "kv_precision",
        "token_text",
        "engine.kind",
        "engine.scheduler",
        "step_model.kind",
        "output_lengths.kind",
    }
)
"""The emulator fields where the API accepts text (names, never paths)."""

MAX_RATE_PER_MIN = 1e7
MAX_MEAN_TOKENS = 1e7
MAX_NAME_CHARS = 128


def check_name(value: object, field: str) -> str:
    """A model or instance name: printable text, 1 to 128 characters."""
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{field} must be a non-empty string", value=value)
    if len(value) > MAX_NAME_CHARS or not value.isprintable():
        raise ConfigError(
            f"{field}: not a usable name",
            value=value[:60],
            allowed=f"printable text of at most {MAX_NAME_CHARS} characters",
        )
    return value


def check_emulator_fields(
    fields: dict[str, Any], files_dir: Path | None, where: str = "emulator"
) -> dict[str, Any]:
    """``fields`` with ``step_model.params_file`` resolved; raise on anything not allowed."""
    stack: list[tuple[str, object]] = [(k, v) for k, v in fields.items()]
    while stack:
        path, value = stack.pop()
        if isinstance(value, dict):
            stack.extend((f"{path}.{k}", v) for k, v in value.items())
        elif isinstance(value, list):
            stack.extend((f"{path}[{i}]", v) for i, v in enumerate(value))
        elif path == "step_model.params_file":
            continue  # checked below
        elif isinstance(value, str) and path not in TEXT_FIELDS:
            raise ConfigError(
                f"{where}.{path}: text is accepted over the API only for names "
                f"({', '.join(sorted(TEXT_FIELDS))}), since a string may name a server file",
                allowed="numbers and booleans here; put paths in planning.emulator",
            )
        elif isinstance(value, int | float) and not isinstance(value, bool):
            _check_number(f"{where}.{path}", path, value)
    step = fields.get("step_model")
    if isinstance(step, dict) and step.get("params_file") is not None:
        name = step["params_file"]
        resolved = resolve_api_file(name, files_dir, f"{where}.step_model.params_file")
        fields = {**fields, "step_model": {**step, "params_file": str(resolved)}}
    return fields


def _check_number(where: str, path: str, value: float) -> None:
    limit = API_LIMITS.get(path, MAX_API_NUMBER)
    # abs() compares integers exactly (no float conversion that could overflow); NaN fails
    if not abs(value) <= limit:
        raise ConfigError(
            f"{where}: out of range",
            value=value,
            allowed=f"a finite number of magnitude <= {limit:g}",
        )


def resolve_api_file(name: object, files_dir: Path | None, where: str) -> Path:
    """The file ``name`` under ``files_dir``; refused when unset, absolute, or outside it.

    The message never says whether a path exists outside ``files_dir``.
    """
    if files_dir is None:
        raise ConfigError(
            f"{where}: files cannot be named over the API",
            allowed="set controller.files_dir to allow file names under it",
        )
    if not isinstance(name, str) or not name or Path(name).is_absolute():
        raise ConfigError(f"{where}: allowed: a relative file name under controller.files_dir")
    resolved = (files_dir / name).resolve()
    if not resolved.is_relative_to(files_dir):
        raise ConfigError(f"{where}: allowed: a relative file name under controller.files_dir")
    return resolved


def parse_load(raw: object, i: int, models: set[str], tiers: set[str]) -> LoadSummary:
    """One entry of ``POST /admin/plan {loads}``: known model and tier, finite positive sizes."""
    where = f"loads[{i}]"
    if not isinstance(raw, dict):
        raise ConfigError(f"{where} must be an object", value=raw)
    model, tier = raw.get("model"), raw.get("tier")
    if model not in models:
        raise ConfigError(
            f"{where}.model: not a model of the planning problem", value=model, allowed=models
        )
    if tier not in tiers:
        raise ConfigError(
            f"{where}.tier: not a service class of the planning problem", value=tier, allowed=tiers
        )
    rate = _bounded(raw.get("rate_per_min"), f"{where}.rate_per_min", 0.0, MAX_RATE_PER_MIN, True)
    avg_in = _bounded(
        raw.get("avg_in_tokens", 128), f"{where}.avg_in_tokens", 0.0, MAX_MEAN_TOKENS, False
    )
    avg_out = _bounded(
        raw.get("avg_out_tokens", 128), f"{where}.avg_out_tokens", 0.0, MAX_MEAN_TOKENS, False
    )
    return LoadSummary(str(model), str(tier), rate, avg_in, avg_out, 0)


def _bounded(value: object, where: str, low: float, high: float, low_ok: bool) -> float:
    """A finite number in ``[low, high]`` (``(low, high]`` unless ``low_ok``)."""
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    number = float(value) if ok and abs(value) <= high else math.nan  # type: ignore[arg-type]
    if not (math.isfinite(number) and (low <= number if low_ok else low < number)):
        bracket = "[" if low_ok else "("
        raise ConfigError(
            f"{where}: out of range",
            value=value,
            allowed=f"a finite number in {bracket}{low:g}, {high:g}]",
        )
    return number
