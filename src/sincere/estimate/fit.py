"""Fitting the parallelism law: exponents and the decode overhead per TP degree.

Two kinds of constants, both properties of the GPUs and links the data was measured on,
not of one model:

* the **decode overhead per layer** of each TP degree (:attr:`ExponentTable.
  decode_s_per_layer`): with ``target="measured"`` read off full-model runs, as
  ``(TPOT(t, 1) - TPOT(1, 1) / t) / N_L`` per model and precision (TPOT the median of the
  pairwise slopes of latency against output length), averaged; with ``target="fingerprint"``
  from the models' pooled fingerprint overheads
  (:func:`~sincere.estimate.overhead.decode_from_fingerprints`);
* the **exponents** alpha, gamma, delta, which only matter off PP = 1, and beta, which only
  matters for TP degrees without fingerprints. MaverIQ fits its exponents with Adam on the
  mean relative error; we minimise the same loss, ``mean(|L_law - L_target| / L_target)``,
  with SciPy's Nelder–Mead simplex from several starts (the law clamps its terms, so
  gradients are not reliable), exponents held in [-1, 4] by a penalty outside that box.
  alpha, gamma, delta are fitted on every sample with its own TP overhead; beta then on
  the samples at TP > 2 with the overhead taken from TP 2 instead (as for a model profiled
  at TP 2 only); when there are none, beta stays at 1.

Samples (:class:`LawSamples`) pair each configuration's law inputs (the references and
the TP overhead, from the bank) with a target latency:

* ``target="fingerprint"``: the full-depth latency that the fingerprint of that very
  (TP, PP) implies, at output lengths 10, 20, 50, 100, 200 -- MaverIQ's setting, no
  full-model run needed;
* ``target="measured"``: latencies measured on full models
  (``full_model_data_collection*.csv``), when some are at hand. This is the default of
  ``sincere estimate fit`` when the folder has them (``target="auto"``).

``per_precision=True`` also fits one set of exponents per precision key; by default one
pooled set (the overheads it scales do not depend on the precision). ``sincere estimate
fit --data DIR --out FILE`` runs :func:`fit_from_dir`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, cast

import numpy as np
import numpy.typing as npt
import yaml
from scipy.optimize import minimize

from sincere.core.errors import ConfigError, DataError
from sincere.estimate.estimator import FingerprintBank
from sincere.estimate.fingerprint import ConfigKey, Measurement, read_measurements
from sincere.estimate.law import (
    Exponents,
    ExponentTable,
    extrapolate_overhead,
    parallelism_law,
)
from sincere.estimate.overhead import decode_from_fingerprints

FloatArray = npt.NDArray[np.float64]
Target = Literal["fingerprint", "measured"]
TARGETS: tuple[str, ...] = ("auto", "fingerprint", "measured")
OUTPUT_LENGTHS: tuple[int, ...] = (10, 20, 50, 100, 200)  # those of MaverIQ's full runs
STARTS: tuple[tuple[float, float, float], ...] = (  # (alpha, gamma, delta)
    (0.0, 0.0, 1.0),
    (0.5, 0.5, 1.0),
    (1.0, 1.0, 0.5),
    (0.0, 1.0, 0.0),
    (0.2, -0.5, 2.0),
)
BOUNDS = (-1.0, 4.0)


@dataclass(frozen=True)
class LawSamples:
    """Law inputs and targets, one row per (configuration, output length)."""

    ref: FloatArray  # (n, 2): TTFT, TPOT at TP=1, PP=1 (s)
    tp_overhead: FloatArray  # (n, 2): TP overhead O(from_tp) the row's TP is scaled from
    at_pp2: FloatArray  # (n, 2) at TP=1, PP=2
    tp: FloatArray  # (n,)
    pp: FloatArray  # (n,)
    output_tokens: FloatArray  # (n,)
    target_s: FloatArray  # (n,) latency to match (s)
    precision_key: tuple[str, ...]  # (n,)
    from_tp: FloatArray  # (n,) TP degree of tp_overhead (= tp where measured)

    def __len__(self) -> int:
        return len(self.target_s)

    def select(self, mask: npt.NDArray[np.bool_]) -> LawSamples:
        """The rows where ``mask`` holds."""
        keys = tuple(k for k, m in zip(self.precision_key, mask, strict=True) if m)
        return LawSamples(
            self.ref[mask],
            self.tp_overhead[mask],
            self.at_pp2[mask],
            self.tp[mask],
            self.pp[mask],
            self.output_tokens[mask],
            self.target_s[mask],
            keys,
            self.from_tp[mask],
        )

    @property
    def extrapolated(self) -> npt.NDArray[np.bool_]:
        """Rows whose TP overhead comes from another degree (where beta matters)."""
        out: npt.NDArray[np.bool_] = (self.tp > 1) & (self.from_tp != self.tp)
        return out


@dataclass(frozen=True, slots=True)
class _Row:
    ref: tuple[float, float]
    ovh: tuple[float, float]
    pp2: tuple[float, float]
    tp: int
    pp: int
    out: int
    target: float
    key: str
    from_tp: int


def _stack(rows: Sequence[_Row]) -> LawSamples:
    def arr(values: Iterable[object]) -> FloatArray:
        return np.asarray(list(values), dtype=np.float64)

    return LawSamples(
        ref=arr(r.ref for r in rows).reshape(-1, 2),
        tp_overhead=arr(r.ovh for r in rows).reshape(-1, 2),
        at_pp2=arr(r.pp2 for r in rows).reshape(-1, 2),
        tp=arr(r.tp for r in rows),
        pp=arr(r.pp for r in rows),
        output_tokens=arr(r.out for r in rows),
        target_s=arr(r.target for r in rows),
        precision_key=tuple(r.key for r in rows),
        from_tp=arr(r.from_tp for r in rows),
    )


def _overheads(bank: FingerprintBank, key: ConfigKey) -> list[tuple[FloatArray, int]]:
    """The TP overhead(s) a row of ``key`` is fitted with: its own (or nearest) degree,
    plus TP 2's when ``key.tp > 2`` was measured too (the samples beta is fitted on)."""
    if key.tp == 1:
        return [(np.zeros(2), 1)]
    base = bank.tp_overhead_base(key)
    if base is None:
        return []
    out = [base]
    if base[1] == key.tp and key.tp > 2:
        two = bank.tp_overhead_base(key.with_parallelism(2, key.pp))
        if two is not None and two[1] == 2:
            out.append(two)
    return out


def _rows_for(
    bank: FingerprintBank, key: ConfigKey, targets: Iterable[tuple[int, float]]
) -> list[_Row]:
    """Sample rows of ``key`` (``targets``: (output tokens, latency)); none if refs lack."""
    refs = bank.references(key)
    if key.pp > 1 and refs.at_pp2 is None:
        return []
    r, p2 = refs.ref, refs.at_pp2 or refs.ref
    pairs = [(o, y) for o, y in targets if y > 0]
    return [
        _Row(
            (r.ttft_s, r.tpot_s),
            (float(ovh[0]), float(ovh[1])),
            (p2.ttft_s, p2.tpot_s),
            key.tp,
            key.pp,
            out,
            target,
            key.precision_key,
            from_tp,
        )
        for ovh, from_tp in _overheads(bank, key)
        for out, target in pairs
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
    ovh = extrapolate_overhead(
        samples.tp_overhead, samples.from_tp[:, None], samples.tp[:, None], ex.beta
    )
    ttft, tpot = (
        parallelism_law(
            samples.ref[:, i],
            samples.ref[:, i],
            samples.at_pp2[:, i],
            samples.tp,
            samples.pp,
            ex,
            tp_overhead=ovh[:, i],
        )
        for i in (0, 1)
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
    loss: float  # mean relative error at the optimum (rows with their own TP overhead)
    num_samples: int


def _penalised(f: Callable[[FloatArray], float]) -> Callable[[FloatArray], float]:
    lo, hi = BOUNDS

    def loss(x: FloatArray) -> float:
        inside = np.clip(x, lo, hi)
        return f(inside) + float(np.sum(np.abs(x - inside)))

    return loss


def _simplex(f: Callable[[FloatArray], float], starts: Sequence[Sequence[float]]) -> FloatArray:
    """The best Nelder–Mead optimum of ``f`` (penalised outside BOUNDS) over ``starts``."""
    loss = _penalised(f)
    best_x, best_f = np.asarray(starts[0], dtype=np.float64), np.inf
    for x0 in starts:
        res = minimize(
            loss,
            np.asarray(x0, dtype=np.float64),
            method="Nelder-Mead",
            options={"maxiter": 4000, "xatol": 1e-4, "fatol": 1e-7},
        )
        if float(res.fun) < best_f:
            best_x, best_f = np.clip(res.x, *BOUNDS), float(res.fun)
    return best_x


def fit_exponents(samples: LawSamples, starts: Sequence[Sequence[float]] = STARTS) -> ExponentFit:
    """alpha, gamma, delta on the rows with their own TP overhead, then beta on the rows
    extrapolated from another degree (module docstring)."""
    if len(samples) == 0:
        raise ConfigError("no samples to fit the parallelism law on")
    own = samples.select(~samples.extrapolated)
    if len(own) == 0:
        raise ConfigError("no samples with their own TP overhead to fit the law on")

    def agd(x: FloatArray) -> float:
        return mean_relative_error(own, Exponents(x[0], 1.0, x[1], x[2]))

    a, g, d = (float(v) for v in _simplex(agd, starts))
    beta = 1.0
    far = samples.select(samples.extrapolated)
    if len(far) > 0:

        def b_only(x: FloatArray) -> float:
            return mean_relative_error(far, Exponents(a, x[0], g, d))

        beta = float(_simplex(b_only, [(1.0,), (0.5,), (2.0,)])[0])
    ex = Exponents(a, beta, g, d)
    return ExponentFit(ex, mean_relative_error(own, ex), len(own))


def fit_table(
    samples: LawSamples,
    source: str = "",
    *,
    per_precision: bool = False,
    decode_s_per_layer: dict[int, float] | None = None,
) -> tuple[ExponentTable, dict[str, ExponentFit]]:
    """A pooled fit (the default), one per precision key if asked; also each fit's details."""
    fits = {"default": fit_exponents(samples)}
    keys = np.asarray(samples.precision_key)
    for key in sorted(set(samples.precision_key)) if per_precision else []:
        fits[key] = fit_exponents(samples.select(keys == key))
    table = ExponentTable(
        by_precision={k: f.exponents for k, f in fits.items() if k != "default"},
        default=fits["default"].exponents,
        source=source,
        decode_s_per_layer=dict(decode_s_per_layer or {}),
    )
    return table, fits


# --------------------------------------------------------------------------- decode overhead
def _line_tpot(points: Sequence[tuple[int, float]]) -> float | None:
    """Slope of latency against output length: the median of the pairwise slopes
    (Theil–Sen, robust to one stray run); ``None`` under 2 distinct lengths."""
    slopes = [
        (y2 - y1) / (o2 - o1)
        for i, (o1, y1) in enumerate(points)
        for o2, y2 in points[i + 1 :]
        if o2 != o1
    ]
    return float(np.median(slopes)) if slopes else None


def decode_from_runs(
    measurements: Iterable[Measurement], num_layers: Callable[[str], int]
) -> dict[int, float]:
    """Decode overhead per layer of each TP degree from full-model runs at PP = 1:
    ``(TPOT(t) - TPOT(1) / t) / N_L`` per model and precision, averaged (module docstring)."""
    points: dict[ConfigKey, list[tuple[int, float]]] = {}
    for m in measurements:
        if m.key.pp == 1:
            points.setdefault(m.key, []).append((m.output_tokens, m.latency_s))
    tpot = {k: v for k, v in ((k, _line_tpot(p)) for k, p in points.items()) if v is not None}
    per_tp: dict[int, list[float]] = {}
    for key, value in tpot.items():
        one = tpot.get(key.with_parallelism(1, 1))
        if key.tp > 1 and one is not None:
            per_tp.setdefault(key.tp, []).append((value - one / key.tp) / num_layers(key.model))
    return {tp: float(np.mean(v)) for tp, v in sorted(per_tp.items())}


def fit_law(
    bank: FingerprintBank,
    measurements: Sequence[Measurement] = (),
    *,
    target: Target = "fingerprint",
    per_precision: bool = False,
    source: str = "",
) -> tuple[ExponentTable, dict[str, ExponentFit]]:
    """Decode overheads, then exponents, on ``bank`` (and ``measurements`` for the
    ``measured`` target): the table an estimator of the same GPUs uses."""
    if target == "measured":
        decode = decode_from_runs(measurements, bank.num_layers)
    else:
        decode = decode_from_fingerprints(bank.fingerprints, bank.num_layers)
    calibrated = bank.with_options(exponents=ExponentTable({}).with_decode(decode))
    if target == "measured":
        samples = measured_samples(calibrated, measurements)
    else:
        samples = fingerprint_samples(calibrated)
    return fit_table(samples, source, per_precision=per_precision, decode_s_per_layer=decode)


def _csvs(data_dir: Path, pattern: str) -> list[Path]:
    found = sorted(data_dir.glob(pattern))
    if not found:
        raise DataError(f"no file matching {pattern!r}", path=data_dir)
    return found


def fit_from_dir(
    data_dir: str | Path,
    target: str = "auto",
    pp_reference: str = "same-depth",
    *,
    per_precision: bool = False,
) -> tuple[ExponentTable, dict[str, ExponentFit]]:
    """Fit on MaverIQ's files in ``data_dir`` (``fingerprint_data_collection*.csv``, and
    ``full_model_data_collection*.csv`` for ``target="measured"``; ``"auto"`` picks
    measured when the folder has full-model files, else fingerprint)."""
    if target not in TARGETS:
        raise ConfigError("unknown fit target", value=target, allowed=TARGETS)
    data_dir = Path(data_dir)
    fp_files = _csvs(data_dir, "fingerprint_data_collection*.csv")
    bank = FingerprintBank.from_files(fp_files, ExponentTable({}), pp_reference=pp_reference)
    names = ", ".join(p.name for p in fp_files)
    if target == "auto":
        target = (
            "measured" if any(data_dir.glob("full_model_data_collection*.csv")) else "fingerprint"
        )
    rows: list[Measurement] = []
    if target == "measured":
        full = _csvs(data_dir, "full_model_data_collection*.csv")
        rows = [m for f in full for m in read_measurements(f)]
        names += ", " + ", ".join(p.name for p in full)
    source = (
        f"`sincere estimate fit --data {data_dir.name} --target {target}` on MaverIQ "
        f"measurements ({names}); pp_reference={bank.pp_reference}; TP overheads pooled "
        "over precisions, decode overhead per layer and TP degree from the target data; "
        "Nelder-Mead on mean relative error (sincere.estimate.fit)"
    )
    return fit_law(
        bank, rows, target=cast(Target, target), per_precision=per_precision, source=source
    )


def write_exponents(table: ExponentTable, path: str | Path) -> None:
    """Write ``table`` as YAML (what :func:`~sincere.estimate.law.load_exponents` reads)."""
    text = "# Parallelism-law exponents, written by `sincere estimate fit`.\n"
    text += yaml.safe_dump(table.to_dict(), sort_keys=False, width=100)
    Path(path).write_text(text)
