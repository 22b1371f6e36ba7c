"""MaverIQ's parallelism law, with the TP overhead read where it was profiled.

With ``L_ref = L(1, 1)`` and the references ``L(2, 1)`` and ``L(1, 2)`` (docs/references.md,
MaverIQ), MaverIQ's law is

``L(TP, PP) = L_ref / (TP * PP^alpha) + ((TP-1)^beta / PP^gamma) * TP_ovh + (PP-1)^delta * PP_ovh``

with ``TP_ovh = L(2, 1) - L_ref / 2`` and ``PP_ovh = L(1, 2) - L_ref / 2^alpha``. It
extrapolates the TP overhead of every degree from TP = 2. On MaverIQ's 8-GPU machine that
misses what happens at TP 4 and 8: the all-reduces of every layer cross slower links (the
decode overhead per layer grows ~2x from TP 2 to 4 and ~2.5x more to 8), per-GPU kernels
stop shrinking, and for some hidden sizes the prefill all-reduce collapses (llama-2-7b's
TTFT grows 3x at TP 4 and 11x at TP 8). No power of ``TP - 1`` fitted on TP 2 says that.

So the TP term takes the *measured* overhead ``O(TP) = L(TP, 1) - L_ref / TP`` where TP
fingerprints exist (:mod:`sincere.estimate.estimator` pools it over a model's precisions,
since the all-reduced activations are fp16 whatever the weights), and MaverIQ's form from
the nearest profiled degree ``t0`` where they do not (:func:`nearest_profiled`,
:func:`extrapolate_overhead`):

``L(TP, PP) = L_ref / (TP * PP^alpha) + O(TP) / PP^gamma + (PP-1)^delta * PP_ovh``,
``O(TP) = O(t0) * ((TP-1) / (t0-1))^beta`` for an unprofiled TP.

Every term and both overheads are clamped at zero; the TP term vanishes at TP = 1 and the
PP term at PP = 1 (so ``0^0`` never adds an overhead). The law is applied to TTFT and TPOT
separately, so ``latency(out) = TTFT + out * TPOT`` still holds at every (TP, PP).
Without ``tp_overhead`` :func:`parallelism_law` is MaverIQ's law verbatim. The exponents
are fitted (:mod:`sincere.estimate.fit`); the shipped ones are in
``data/estimate/parallelism.yaml``, with the decode overhead per layer of each TP degree
(:attr:`ExponentTable.decode_s_per_layer`), a property of the GPUs and links.

Memory (GB, all GPUs): ``M(TP, PP) = M_base + (TP-1)*A + TP*(PP-1)*A'`` where ``M_base =
M(1, 1)``, ``A = M(2, 1) - M(1, 1)`` is what one more tensor-parallel rank adds (its
runtime context, replicated embeddings and buffers) and ``A' = M(1, 2) - M(1, 1)`` what one
more pipeline stage adds per TP rank. Both are read off the references, clamped at zero.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
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
    tp_overhead: npt.ArrayLike | None = None,
) -> FloatArray:
    """``L(tp, pp)`` from ``L(1,1)``, ``L(2,1)``, ``L(1,2)`` (broadcasting arrays).

    ``tp_overhead``: the TP overhead ``O(tp)`` at PP = 1 (module docstring); when given it
    replaces MaverIQ's ``(tp-1)^beta * (L(2,1) - L_ref/2)`` and ``at_tp2`` is not used.
    """
    r, l21, l12 = (np.asarray(a, dtype=np.float64) for a in (ref, at_tp2, at_pp2))
    t, p = np.asarray(tp, dtype=np.float64), np.asarray(pp, dtype=np.float64)
    _check_degrees(t, p)
    extra_ranks = np.where(t > 1, t - 1.0, 1.0)  # 1 where unused: keeps 0**negative away
    if tp_overhead is None:
        tp_ovh = extra_ranks**ex.beta * np.maximum(l21 - r / 2.0, 0.0)
    else:
        tp_ovh = np.maximum(np.asarray(tp_overhead, dtype=np.float64), 0.0)
    pp_ovh = np.maximum(l12 - r / 2.0**ex.alpha, 0.0)
    base = np.maximum(r / (t * p**ex.alpha), 0.0)
    extra_stages = np.where(p > 1, p - 1.0, 1.0)
    extra_tp = np.where(t > 1, tp_ovh / p**ex.gamma, 0.0)
    extra_pp = np.where(p > 1, extra_stages**ex.delta * pp_ovh, 0.0)
    out: FloatArray = base + extra_tp + extra_pp
    return out


def nearest_profiled(tp: int, degrees: Iterable[int]) -> int | None:
    """The profiled degree the overhead of ``tp`` is read at: ``tp`` itself, else the
    largest one below it, else the smallest above; ``None`` when none is > 1."""
    profiled = sorted(t for t in degrees if t > 1)
    if tp in profiled or not profiled:
        return tp if tp in profiled else None
    below = [t for t in profiled if t < tp]
    return below[-1] if below else profiled[0]


def extrapolate_overhead(
    base: npt.ArrayLike, from_tp: npt.ArrayLike, tp: npt.ArrayLike, beta: float
) -> FloatArray:
    """MaverIQ's form ``O(from_tp) * ((tp-1)/(from_tp-1))^beta``; ``O`` itself where
    ``tp == from_tp`` (broadcasting arrays; ``from_tp`` > 1 where they differ)."""
    o = np.asarray(base, dtype=np.float64)
    t0, t = np.asarray(from_tp, dtype=np.float64), np.asarray(tp, dtype=np.float64)
    same = t0 == t
    ratio = np.where(same, 1.0, (t - 1.0) / np.where(same, 2.0, t0 - 1.0))
    out: FloatArray = o * np.where(same, 1.0, ratio**beta)
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
    """Fitted exponents per precision key (``"int8+kv-int8"``), with a pooled default, and
    the decode TP overhead per layer of each TP degree (seconds per token per layer)."""

    by_precision: dict[str, Exponents]  # precision key -> exponents
    default: Exponents = Exponents()  # used for precisions without their own fit
    source: str = ""  # where the fit came from (data, method)
    # TP degree -> decode time one layer adds per token at that degree beyond its 1/TP share
    # of TP = 1 (all-reduces, kernels that do not shrink); empty: read off the fingerprints
    decode_s_per_layer: dict[int, float] = field(default_factory=dict)

    def get(self, precision_key: str) -> Exponents:
        """Exponents of ``precision_key``, or the default."""
        return self.by_precision.get(precision_key, self.default)

    def with_decode(self, decode_s_per_layer: Mapping[int, float]) -> ExponentTable:
        """The same exponents with another decode-overhead table."""
        return ExponentTable(self.by_precision, self.default, self.source, dict(decode_s_per_layer))

    def to_dict(self) -> dict[str, object]:
        """Plain mapping, as :func:`load_exponents` reads it."""
        out: dict[str, object] = {"source": self.source, "default": _ex_dict(self.default)}
        if self.decode_s_per_layer:
            out["decode_s_per_layer"] = {
                int(t): float(f"{v:.6g}") for t, v in sorted(self.decode_s_per_layer.items())
            }
        out["exponents"] = {k: _ex_dict(v) for k, v in sorted(self.by_precision.items())}
        return out


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
        decode_s_per_layer=_decode_from(data.get("decode_s_per_layer", {}), where),
    )


def _decode_from(value: object, where: str) -> dict[int, float]:
    """``{tp: seconds}`` with whole TP degrees >= 2 and finite seconds >= 0."""
    where = f"{where}: decode_s_per_layer"
    if not isinstance(value, dict):
        raise ConfigError("must map TP degrees to seconds", where=where, value=value)
    out: dict[int, float] = {}
    for k, v in value.items():
        try:
            tp, seconds = int(k), float(v)
        except (TypeError, ValueError):
            raise ConfigError("entries must be numbers", where=where, value={k: v}) from None
        if tp < 2 or tp != float(k) or not np.isfinite(seconds) or seconds < 0:
            raise ConfigError("entries must be TP >= 2: seconds >= 0", where=where, value={k: v})
        out[tp] = seconds
    return out


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
