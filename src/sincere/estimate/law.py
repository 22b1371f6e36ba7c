"""MaverIQ's parallelism law: latency and memory at any (TP, PP) from three references.

With ``L_ref = L(1, 1)`` and the references ``L(2, 1)`` and ``L(1, 2)`` (REFERENCE.md §3),

``L(TP, PP) = L_ref / (TP * PP^alpha) + ((TP-1)^beta / PP^gamma) * TP_ovh + (PP-1)^delta * PP_ovh``

with ``TP_ovh = L(2, 1) - L_ref / 2`` and ``PP_ovh = L(1, 2) - L_ref / 2^alpha``. Every term
and both overheads are clamped at zero; the TP term vanishes at TP = 1 and the PP term at
PP = 1 (so ``0^0`` never adds an overhead). The law is applied to TTFT and TPOT separately,
so ``latency(out) = TTFT + out * TPOT`` still holds at every (TP, PP). At (2, 1) and (1, 2)
it returns the references themselves. The exponents are fitted per precision
(:mod:`sincere.estimate.fit`); the shipped ones are in ``data/estimate/parallelism.yaml``.

Memory (GB, all GPUs): ``M(TP, PP) = M_base + (TP-1)*A + TP*(PP-1)*A'`` where ``M_base =
M(1, 1)``, ``A = M(2, 1) - M(1, 1)`` is what one more tensor-parallel rank adds (its
runtime context, replicated embeddings and buffers) and ``A' = M(1, 2) - M(1, 1)`` what one
more pipeline stage adds per TP rank. Both are read off the references, clamped at zero.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import numpy.typing as npt
import yaml

from sincere.core.errors import ConfigError

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class Exponents:
    """The law's exponents for one precision (dimensionless)."""

    alpha: float = 0.0  # how much PP divides the reference latency (0: not at all)
    beta: float = 1.0  # growth of the TP overhead with the number of extra ranks
    gamma: float = 0.0  # shrinking of the TP overhead with PP
    delta: float = 1.0  # growth of the PP overhead with the number of extra stages

    def as_tuple(self) -> tuple[float, float, float, float]:
        """``(alpha, beta, gamma, delta)``."""
        return (self.alpha, self.beta, self.gamma, self.delta)


def _check_degrees(tp: FloatArray, pp: FloatArray) -> None:
    if np.any(tp < 1) or np.any(pp < 1):
        raise ConfigError("tp and pp must be >= 1", value=(tp.min(), pp.min()))


def parallelism_law(
    ref: npt.ArrayLike,
    at_tp2: npt.ArrayLike,
    at_pp2: npt.ArrayLike,
    tp: npt.ArrayLike,
    pp: npt.ArrayLike,
    ex: Exponents,
) -> FloatArray:
    """``L(tp, pp)`` from ``L(1,1)``, ``L(2,1)``, ``L(1,2)`` (broadcasting arrays)."""
    r, l21, l12 = (np.asarray(a, dtype=np.float64) for a in (ref, at_tp2, at_pp2))
    t, p = np.asarray(tp, dtype=np.float64), np.asarray(pp, dtype=np.float64)
    _check_degrees(t, p)
    tp_ovh = np.maximum(l21 - r / 2.0, 0.0)
    pp_ovh = np.maximum(l12 - r / 2.0**ex.alpha, 0.0)
    base = np.maximum(r / (t * p**ex.alpha), 0.0)
    extra_ranks = np.where(t > 1, t - 1.0, 1.0)  # 1 where unused: keeps 0**negative away
    extra_stages = np.where(p > 1, p - 1.0, 1.0)
    extra_tp = np.where(t > 1, extra_ranks**ex.beta / p**ex.gamma * tp_ovh, 0.0)
    extra_pp = np.where(p > 1, extra_stages**ex.delta * pp_ovh, 0.0)
    out: FloatArray = base + extra_tp + extra_pp
    return out


def memory_law(ref_gb: float, at_tp2_gb: float, at_pp2_gb: float, tp: int, pp: int) -> float:
    """``M(tp, pp) = M_base + (tp-1)*A + tp*(pp-1)*A'`` (module docstring), GB."""
    if tp < 1 or pp < 1:
        raise ConfigError("tp and pp must be >= 1", value=(tp, pp))
    per_rank = max(at_tp2_gb - ref_gb, 0.0)
    per_stage = max(at_pp2_gb - ref_gb, 0.0)
    return ref_gb + (tp - 1) * per_rank + tp * (pp - 1) * per_stage


# --------------------------------------------------------------------------- exponent table
SHIPPED_EXPONENTS = "parallelism.yaml"  # in sincere/data/estimate/


@dataclass(frozen=True)
class ExponentTable:
    """Fitted exponents per precision key (``"int8+kv-int8"``), with a pooled default."""

    by_precision: dict[str, Exponents]  # precision key -> exponents
    default: Exponents = Exponents()  # used for precisions without their own fit
    source: str = ""  # where the fit came from (data, method)

    def get(self, precision_key: str) -> Exponents:
        """Exponents of ``precision_key``, or the default."""
        return self.by_precision.get(precision_key, self.default)

    def to_dict(self) -> dict[str, object]:
        """Plain mapping, as :func:`load_exponents` reads it."""
        return {
            "source": self.source,
            "default": _ex_dict(self.default),
            "exponents": {k: _ex_dict(v) for k, v in sorted(self.by_precision.items())},
        }


def _ex_dict(ex: Exponents) -> dict[str, float]:
    names = ("alpha", "beta", "gamma", "delta")
    return {k: round(float(v), 6) for k, v in zip(names, ex.as_tuple(), strict=True)}


def _ex_from(value: object, where: str) -> Exponents:
    names = ("alpha", "beta", "gamma", "delta")
    if not isinstance(value, dict) or set(value) - set(names):
        raise ConfigError("exponents must be a mapping", where=where, value=value, allowed=names)
    try:
        return Exponents(**{k: float(v) for k, v in value.items()})
    except (TypeError, ValueError):
        raise ConfigError("exponents must be numbers", where=where, value=value) from None


def exponents_from_dict(data: object, where: str = "exponents") -> ExponentTable:
    """Build an :class:`ExponentTable` from :meth:`ExponentTable.to_dict`'s form."""
    if not isinstance(data, dict):
        raise ConfigError("exponent file must hold a mapping", where=where, value=type(data))
    table = data.get("exponents", {})
    if not isinstance(table, dict):
        raise ConfigError("'exponents' must map precision keys to exponents", where=where)
    return ExponentTable(
        by_precision={str(k): _ex_from(v, f"{where}: exponents.{k}") for k, v in table.items()},
        default=_ex_from(data.get("default", {}), f"{where}: default"),
        source=str(data.get("source", "")),
    )


def load_exponents(path: str | Path | None = None) -> ExponentTable:
    """Exponents from a YAML / JSON file; ``None`` reads the shipped fit."""
    if path is None:
        text = (
            resources.files("sincere").joinpath("data", "estimate", SHIPPED_EXPONENTS).read_text()
        )
        where: str | Path = f"sincere/data/estimate/{SHIPPED_EXPONENTS}"
    else:
        try:
            text = Path(path).read_text()
        except OSError as exc:
            raise ConfigError("cannot read exponent file", where=path, value=str(exc)) from None
        where = path
    return exponents_from_dict(yaml.safe_load(text), str(where))
