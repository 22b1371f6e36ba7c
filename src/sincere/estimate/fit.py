"""Fitting the parallelism law's exponents, per precision.

MaverIQ fits alpha, beta, gamma, delta per precision with Adam on the mean relative
error over a few samples per model. We minimise the same loss,
``mean(|L_law(TP, PP, out) - L_target| / L_target)``, with SciPy's Nelder–Mead simplex
from several starting points (the loss is piecewise smooth: the law clamps its terms,
so gradients are not reliable) and keep the best; exponents are held in [-1, 4] by a
penalty outside that box.

The samples (:class:`LawSamples`) pair each configuration's references (the law's
inputs, from the fingerprints at TP/PP (1,1), (2,1), (1,2)) with a target latency at
output lengths 10, 20, 50, 100, 200:

* ``target="fingerprint"``: the full-depth latency that the fingerprint of that very
  (TP, PP) implies -- MaverIQ's setting, no full-model run needed;
* ``target="measured"``: latencies measured on full models
  (``full_model_data_collection*.csv``), when some are at hand.

Each precision key (``fp16``, ``int8+kv-int8``, ``int4-gptq`` ...) gets its own fit; a
pooled fit over all samples is the default for precisions without samples.
``sincere estimate fit --data DIR --out FILE`` runs :func:`fit_from_dir`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import numpy.typing as npt
import yaml
from scipy.optimize import minimize

from sincere.core.errors import ConfigError, DataError
from sincere.estimate.estimator import FingerprintBank
from sincere.estimate.fingerprint import ConfigKey, Measurement, read_measurements
from sincere.estimate.law import Exponents, ExponentTable, parallelism_law

FloatArray = npt.NDArray[np.float64]
Target = Literal["fingerprint", "measured"]
TARGETS: tuple[str, ...] = ("fingerprint", "measured")
OUTPUT_LENGTHS: tuple[int, ...] = (10, 20, 50, 100, 200)  # those of MaverIQ's full runs
STARTS: tuple[tuple[float, float, float, float], ...] = (
    (0.0, 1.0, 0.0, 1.0),
    (0.5, 1.0, 0.5, 1.0),
    (1.0, 0.5, 1.0, 0.5),
    (0.0, 0.5, 1.0, 0.0),
    (0.2, 2.0, 0.2, 2.0),
)
BOUNDS = (-1.0, 4.0)


@dataclass(frozen=True)
class LawSamples:
    """Law inputs and targets, one row per (configuration, output length)."""

    ref: FloatArray  # (n, 2): TTFT, TPOT at TP=1, PP=1 (s)
    at_tp2: FloatArray  # (n, 2) at TP=2, PP=1
    at_pp2: FloatArray  # (n, 2) at TP=1, PP=2
    tp: FloatArray  # (n,)
    pp: FloatArray  # (n,)
    output_tokens: FloatArray  # (n,)
    target_s: FloatArray  # (n,) latency to match (s)
    precision_key: tuple[str, ...]  # (n,)

    def __len__(self) -> int:
        return len(self.target_s)

    def select(self, mask: npt.NDArray[np.bool_]) -> LawSamples:
        """The rows where ``mask`` holds."""
        keys = tuple(k for k, m in zip(self.precision_key, mask, strict=True) if m)
        return LawSamples(
            self.ref[mask],
            self.at_tp2[mask],
            self.at_pp2[mask],
            self.tp[mask],
            self.pp[mask],
            self.output_tokens[mask],
            self.target_s[mask],
            keys,
        )


@dataclass(frozen=True, slots=True)
class _Row:
    ref: tuple[float, float]
    tp2: tuple[float, float]
    pp2: tuple[float, float]
    tp: int
    pp: int
    out: int
    target: float
    key: str


def _stack(rows: Sequence[_Row]) -> LawSamples:
    def arr(values: Iterable[object]) -> FloatArray:
        return np.asarray(list(values), dtype=np.float64)

    return LawSamples(
        ref=arr(r.ref for r in rows).reshape(-1, 2),
        at_tp2=arr(r.tp2 for r in rows).reshape(-1, 2),
        at_pp2=arr(r.pp2 for r in rows).reshape(-1, 2),
        tp=arr(r.tp for r in rows),
        pp=arr(r.pp for r in rows),
        output_tokens=arr(r.out for r in rows),
        target_s=arr(r.target for r in rows),
        precision_key=tuple(r.key for r in rows),
    )


def _rows_for(
    bank: FingerprintBank, key: ConfigKey, targets: Iterable[tuple[int, float]]
) -> list[_Row]:
    """Sample rows of ``key`` (``targets``: (output tokens, latency)); none if refs lack."""
    refs = bank.references(key)
    if (key.tp > 1 and refs.at_tp2 is None) or (key.pp > 1 and refs.at_pp2 is None):
        return []
    r, t2, p2 = refs.ref, refs.at_tp2 or refs.ref, refs.at_pp2 or refs.ref
    return [
        _Row(
            (r.ttft_s, r.tpot_s),
            (t2.ttft_s, t2.tpot_s),
            (p2.ttft_s, p2.tpot_s),
            key.tp,
            key.pp,
            out,
            target,
            key.precision_key,
        )
        for out, target in targets
        if target > 0
    ]


def fingerprint_samples(
    bank: FingerprintBank, output_tokens: Sequence[int] = OUTPUT_LENGTHS
) -> LawSamples:
    """Targets: the full-depth latency each batch-1 fingerprint implies (``direct``)."""
    direct = bank.with_options(mode="direct")
    rows: list[_Row] = []
    for key in bank.configs():
        if key.batch_size != 1 or (key.tp, key.pp) == (1, 1):
            continue
        if key.with_parallelism(1, 1) not in bank.fingerprints:
            continue
        fd = direct.full_depth(key)
        rows.extend(_rows_for(bank, key, ((o, fd.latency_s(o)) for o in output_tokens)))
    return _stack(rows)


def measured_samples(bank: FingerprintBank, measurements: Iterable[Measurement]) -> LawSamples:
    """Targets: measured full-model latencies of models the bank has references for."""
    rows: list[_Row] = []
    for m in measurements:
        if m.key.with_parallelism(1, 1) not in bank.fingerprints:
            continue
        rows.extend(_rows_for(bank, m.key, [(m.output_tokens, m.latency_s)]))
    return _stack(rows)


def predict(samples: LawSamples, ex: Exponents) -> FloatArray:
    """The law's latency for every sample row."""
    ttft = parallelism_law(
        samples.ref[:, 0], samples.at_tp2[:, 0], samples.at_pp2[:, 0], samples.tp, samples.pp, ex
    )
    tpot = parallelism_law(
        samples.ref[:, 1], samples.at_tp2[:, 1], samples.at_pp2[:, 1], samples.tp, samples.pp, ex
    )
    out: FloatArray = ttft + samples.output_tokens * tpot
    return out


def mean_relative_error(samples: LawSamples, ex: Exponents) -> float:
    """The fitting loss: mean of ``|law - target| / target``."""
    if len(samples) == 0:
        return 0.0
    return float(np.mean(np.abs(predict(samples, ex) - samples.target_s) / samples.target_s))


@dataclass(frozen=True, slots=True)
class ExponentFit:
    """Result of one fit."""

    exponents: Exponents
    loss: float  # mean relative error at the optimum
    num_samples: int


def fit_exponents(samples: LawSamples, starts: Sequence[Sequence[float]] = STARTS) -> ExponentFit:
    """Nelder–Mead from each start on the mean relative error; the best one wins."""
    if len(samples) == 0:
        raise ConfigError("no samples to fit the parallelism law on")
    lo, hi = BOUNDS

    def loss(x: FloatArray) -> float:
        inside = np.clip(x, lo, hi)
        return mean_relative_error(samples, Exponents(*inside)) + float(np.sum(np.abs(x - inside)))

    best_x, best_f = np.asarray(starts[0], dtype=np.float64), np.inf
    for x0 in starts:
        res = minimize(
            loss,
            np.asarray(x0, dtype=np.float64),
            method="Nelder-Mead",
            options={"maxiter": 4000, "xatol": 1e-4, "fatol": 1e-7},
        )
        if float(res.fun) < best_f:
            best_x, best_f = np.clip(res.x, lo, hi), float(res.fun)
    ex = Exponents(*(float(v) for v in best_x))
    return ExponentFit(ex, mean_relative_error(samples, ex), len(samples))


def fit_table(
    samples: LawSamples, source: str = ""
) -> tuple[ExponentTable, dict[str, ExponentFit]]:
    """One fit per precision key plus a pooled default; also returns each fit's details."""
    fits = {"default": fit_exponents(samples)}
    keys = np.asarray(samples.precision_key)
    for key in sorted(set(samples.precision_key)):
        fits[key] = fit_exponents(samples.select(keys == key))
    table = ExponentTable(
        by_precision={k: f.exponents for k, f in fits.items() if k != "default"},
        default=fits["default"].exponents,
        source=source,
    )
    return table, fits


def _csvs(data_dir: Path, pattern: str) -> list[Path]:
    found = sorted(data_dir.glob(pattern))
    if not found:
        raise DataError(f"no file matching {pattern!r}", path=data_dir)
    return found


def fit_from_dir(
    data_dir: str | Path, target: str = "fingerprint", pp_reference: str = "same-depth"
) -> tuple[ExponentTable, dict[str, ExponentFit]]:
    """Fit on MaverIQ's files in ``data_dir`` (``fingerprint_data_collection*.csv``, and
    ``full_model_data_collection*.csv`` when ``target="measured"``)."""
    if target not in TARGETS:
        raise ConfigError("unknown fit target", value=target, allowed=TARGETS)
    data_dir = Path(data_dir)
    fp_files = _csvs(data_dir, "fingerprint_data_collection*.csv")
    bank = FingerprintBank.from_files(fp_files, ExponentTable({}), pp_reference=pp_reference)
    names = ", ".join(p.name for p in fp_files)
    if target == "fingerprint":
        samples = fingerprint_samples(bank)
    else:
        full = _csvs(data_dir, "full_model_data_collection*.csv")
        samples = measured_samples(bank, [m for f in full for m in read_measurements(f)])
        names += ", " + ", ".join(p.name for p in full)
    source = (
        f"MaverIQ measurements ({names}); target={target}; pp_reference={bank.pp_reference}; "
        "Nelder-Mead on mean relative error from 5 starts (sincere.estimate.fit)"
    )
    return fit_table(samples, source)


def write_exponents(table: ExponentTable, path: str | Path) -> None:
    """Write ``table`` as YAML (what :func:`~sincere.estimate.law.load_exponents` reads)."""
    text = "# Parallelism-law exponents, written by `sincere estimate fit`.\n"
    text += yaml.safe_dump(table.to_dict(), sort_keys=False, width=100)
    Path(path).write_text(text)
