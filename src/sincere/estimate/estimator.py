"""Latency and memory of a deployment from fingerprints (MaverIQ's estimator).

:class:`FingerprintBank` holds the fingerprints of any number of models and answers for
any configuration of them: the full-depth TTFT, TPOT and memory (module
:mod:`~sincere.estimate.fingerprint`), at the requested batch size (the batch law, from
batch-1 and batch-2 fingerprints), at the requested TP / PP (the parallelism law of
:mod:`~sincere.estimate.law` from the (1,1), (2,1) and (1,2) references).

Two modes: ``"law"`` (default) extrapolates from the reference fingerprints of a model,
which is MaverIQ's point (profile little, extrapolate); ``"direct"`` uses the
fingerprint of the exact configuration when there is one and the law otherwise.

The TP term: ``tp_reference="pooled"`` (default) uses the model's TP overhead at every
TP degree it has fingerprints for, pooled over its precision variants, with the decode
part from the exponent table's calibration when it has one
(:mod:`~sincere.estimate.overhead`), and MaverIQ's ``(TP-1)^beta`` form only between or
beyond the profiled degrees. ``"tp2"`` is MaverIQ verbatim: the TP = 2 fingerprint of
the same precision, extrapolated to every TP with ``(TP-1)^beta``. With fingerprints at
(1,1), (2,1) and (1,2) only, both read TP 2 alone; ``"pooled"`` still averages the
precisions. The overhead of a TP degree is read at the largest batch size <= the
requested one that has fingerprints at that degree (MaverIQ's TP 4 and 8 fingerprints
are batch 1 only: small-batch all-reduces are latency-bound, so it carries over).

The (1,2) reference: ``pp_reference="fingerprint"`` solves the PP=2 fingerprint with the
per-layer formulas, as MaverIQ does. Those formulas divide second differences of
latencies that differ by one layer, and on PP fingerprints (which carry the
inter-stage hops' jitter) the result is often wrong by 50 % or more (negative per-layer
TTFTs happen). ``"same-depth"`` (default) instead takes a pipeline stage's layers to run
as fast as on one GPU (true at a fixed batch: the same kernels on the same GPU) and
reads only the PP overhead off the fingerprints, as the difference between the PP=2 and
the PP=1 fingerprint of equal layer count (both have a 2-layer variant):
``L(1,2) = L_ref + [l_PP2(n,o) - l_PP1(n,o)]`` split into TTFT and TPOT parts like the
per-layer terms. It uses the same measurements and halves the leave-one-model-out error
(``benchmarks/estimate_loo.py``).

:class:`FingerprintEstimator` is one configuration's view and a step-time model
(:class:`~sincere.perf.base.StepTimeBase`): a prefill iteration of ``b`` sequences
takes ``TTFT(b)``, a decode iteration of ``b`` sequences ``TPOT(b)``, a mixed iteration
the sum. Limits of that mapping: fingerprints are measured at one prompt length and
batch-1 / batch-2, so prompt length and context length do not change the time, and
batch sizes beyond 2 follow the linear batch law.

:func:`roofline_estimate` answers for models without fingerprints from
:class:`~sincere.perf.roofline.Roofline` and :func:`~sincere.perf.memory.plan_memory`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from sincere.catalog import get_accelerator, get_model
from sincere.core.errors import ConfigError
from sincere.core.types import Seconds
from sincere.estimate.fingerprint import (
    ConfigKey,
    Fingerprint,
    FullDepth,
    batch_full_depth,
    read_fingerprints,
)
from sincere.estimate.law import (
    ExponentTable,
    extrapolate_overhead,
    load_exponents,
    memory_law,
    nearest_profiled,
    parallelism_law,
)
from sincere.estimate.overhead import (
    TpOverhead,
    calibrated,
    fingerprint_overheads,
    middle_output,
)
from sincere.perf.base import Batch, Deployment, StepTimeBase, SwapTime
from sincere.perf.memory import plan_memory
from sincere.perf.roofline import Roofline

FloatArray = npt.NDArray[np.float64]
MODES: tuple[str, ...] = ("law", "direct")
PP_REFERENCES: tuple[str, ...] = ("same-depth", "fingerprint")
TP_REFERENCES: tuple[str, ...] = ("pooled", "tp2")


@dataclass(frozen=True, slots=True)
class Estimate:
    """Predicted latency and memory of one configuration serving one request batch."""

    key: ConfigKey  # the configuration (batch size included)
    output_tokens: int  # tokens each request generates
    ttft_s: Seconds  # time to first token
    tpot_s: Seconds  # time per output token
    memory_gb: float  # device memory, all GPUs together, GB
    source: str  # "fingerprint-law", "fingerprint-direct" or "roofline"

    @property
    def latency_s(self) -> Seconds:
        """End-to-end latency: ``TTFT + output_tokens * TPOT``."""
        return self.ttft_s + self.output_tokens * self.tpot_s

    @property
    def num_gpus(self) -> int:
        """GPUs one replica takes (every attention rank's)."""
        return self.key.tp * self.key.pp * self.key.attention_dp


@dataclass(frozen=True, slots=True)
class References:
    """Full-depth figures of the three reference configurations at one batch size."""

    ref: FullDepth  # TP=1, PP=1
    at_tp2: FullDepth | None  # TP=2, PP=1 (None: not profiled)
    at_pp2: FullDepth | None  # TP=1, PP=2 (None: not profiled)


def _clamped(fd: FullDepth) -> FullDepth:
    return FullDepth(max(fd.ttft_s, 0.0), max(fd.tpot_s, 0.0), max(fd.memory_gb, 0.0))


def _shift(base: FullDepth, longer: Fingerprint, shorter: Fingerprint) -> FullDepth | None:
    """``base`` plus the overhead of ``longer`` over ``shorter`` at a common layer count."""
    common = sorted(set(longer.layer_counts) & set(shorter.layer_counts))
    if not common:
        return None
    n = common[0]
    outs = sorted(o for m, o in longer.latency_s if m == n)
    if len(outs) != 2 or sorted(o for m, o in shorter.latency_s if m == n) != outs:
        return None
    o1, o2 = outs
    d1 = longer.latency_s[n, o1] - shorter.latency_s[n, o1]
    d2 = longer.latency_s[n, o2] - shorter.latency_s[n, o2]
    d_tpot = (d2 - d1) / (o2 - o1)
    d_mem = longer.memory_gb[n] - shorter.memory_gb[n]
    return FullDepth(base.ttft_s + d1 - o1 * d_tpot, base.tpot_s + d_tpot, base.memory_gb + d_mem)


class FingerprintBank:
    """Fingerprints of several models and the fitted exponents; see the module docstring."""

    def __init__(
        self,
        fingerprints: Mapping[ConfigKey, Fingerprint],
        exponents: ExponentTable | None = None,
        *,
        num_layers: Mapping[str, int] | None = None,
        mode: str = "law",
        pp_reference: str = "same-depth",
        tp_reference: str = "pooled",
    ) -> None:
        if mode not in MODES:
            raise ConfigError("unknown estimator mode", value=mode, allowed=MODES)
        if pp_reference not in PP_REFERENCES:
            raise ConfigError("unknown pp_reference", value=pp_reference, allowed=PP_REFERENCES)
        if tp_reference not in TP_REFERENCES:
            raise ConfigError("unknown tp_reference", value=tp_reference, allowed=TP_REFERENCES)
        self.fingerprints = dict(fingerprints)
        self.exponents = exponents if exponents is not None else load_exponents()
        self._num_layers = dict(num_layers or {})
        self.mode = mode
        self.pp_reference = pp_reference
        self.tp_reference = tp_reference
        self._overheads: dict[tuple[str, int], dict[int, TpOverhead]] = {}

    @classmethod
    def from_files(
        cls,
        paths: str | Path | Iterable[str | Path],
        exponents: ExponentTable | None = None,
        *,
        duplicates: str = "first",
        num_layers: Mapping[str, int] | None = None,
        mode: str = "law",
        pp_reference: str = "same-depth",
        tp_reference: str = "pooled",
    ) -> FingerprintBank:
        """Read MaverIQ fingerprint CSVs (see :func:`read_fingerprints`)."""
        return cls(
            read_fingerprints(paths, duplicates),
            exponents,
            num_layers=num_layers,
            mode=mode,
            pp_reference=pp_reference,
            tp_reference=tp_reference,
        )

    def with_options(self, **changes: object) -> FingerprintBank:
        """A copy with other ``exponents`` / ``mode`` / ``pp_reference`` / ``tp_reference``
        / ``num_layers``."""
        kwargs: dict[str, object] = {
            "exponents": self.exponents,
            "num_layers": self._num_layers,
            "mode": self.mode,
            "pp_reference": self.pp_reference,
            "tp_reference": self.tp_reference,
        }
        kwargs.update(changes)
        return FingerprintBank(self.fingerprints, **kwargs)  # type: ignore[arg-type]

    def only_models(self, models: Iterable[str]) -> FingerprintBank:
        """A bank restricted to ``models``."""
        keep = set(models)
        kept = {k: v for k, v in self.fingerprints.items() if k.model in keep}
        return FingerprintBank(
            kept,
            self.exponents,
            num_layers=self._num_layers,
            mode=self.mode,
            pp_reference=self.pp_reference,
            tp_reference=self.tp_reference,
        )

    # --- what is in the bank ---------------------------------------------------------
    def models(self) -> list[str]:
        """Models with at least one fingerprint."""
        return sorted({k.model for k in self.fingerprints})

    def has_model(self, model: str) -> bool:
        """Whether any fingerprint of ``model`` is held."""
        return any(k.model == model for k in self.fingerprints)

    def num_layers(self, model: str) -> int:
        """Hidden layers of the full model (given, else the catalog's)."""
        if model in self._num_layers:
            return self._num_layers[model]
        return get_model(model).num_layers

    def precisions(self, model: str) -> list[tuple[str, str]]:
        """``(weights, KV cache)`` precisions ``model`` has fingerprints of, sorted."""
        return sorted(
            {(k.precision, k.kv_precision) for k in self.fingerprints if k.model == model}
        )

    def below_noise(self, key: ConfigKey) -> list[str]:
        """Which full-depth figures of ``key``'s TP = 1 reference(s) solve to <= 0 and are
        shown as 0: the 1- and 2-layer timings differ by less than their noise there."""
        out = []
        for b in [key.batch_size] if key.batch_size <= 2 else [1, 2]:
            ref = key.with_parallelism(1, 1).with_batch(b)
            if ref not in self.fingerprints:
                continue
            raw = self.fingerprints[ref].terms().at_depth(self.num_layers(key.model))
            out += [
                f"{name} at batch {b} solves to {value:.3g} s"
                for name, value in (("TTFT", raw.ttft_s), ("TPOT", raw.tpot_s))
                if value <= 0
            ]
        return out

    def configs(self, model: str | None = None) -> list[ConfigKey]:
        """Profiled configurations (of ``model``), sorted."""
        return sorted(k for k in self.fingerprints if model is None or k.model == model)

    # --- full-depth figures ----------------------------------------------------------
    def _fingerprint(self, key: ConfigKey) -> Fingerprint:
        try:
            return self.fingerprints[key]
        except KeyError:
            raise ConfigError(
                f"no fingerprint of {key.model} with TP={key.tp}, PP={key.pp}, "
                f"{key.precision_key}, batch {key.batch_size}",
                allowed=sorted({k.precision_key for k in self.configs(key.model)}),
            ) from None

    def _at(self, key: ConfigKey) -> FullDepth:
        """Full depth of a profiled configuration at its own batch size."""
        return _clamped(self._fingerprint(key).terms().at_depth(self.num_layers(key.model)))

    @staticmethod
    def _batched(key: ConfigKey, fn: Callable[[ConfigKey], FullDepth]) -> FullDepth:
        """``fn`` at ``key``'s batch size: profiled at 1 and 2, the batch law beyond."""
        if key.batch_size <= 2:
            return fn(key)
        return batch_full_depth(fn(key.with_batch(1)), fn(key.with_batch(2)), key.batch_size)

    def _pp2(self, key: ConfigKey) -> FullDepth | None:
        k12 = key.with_parallelism(1, 2)
        if k12 not in self.fingerprints:
            return None
        if self.pp_reference == "fingerprint":
            return self._at(k12)
        k11 = key.with_parallelism(1, 1)
        return _shift(self._at(k11), self.fingerprints[k12], self.fingerprints[k11])

    def references(self, key: ConfigKey) -> References:
        """The three references at ``key``'s precision and batch size."""

        def ref(k: ConfigKey) -> FullDepth:
            return self._at(k.with_parallelism(1, 1))

        def tp2(k: ConfigKey) -> FullDepth:
            return self._at(k.with_parallelism(2, 1))

        def pp2(k: ConfigKey) -> FullDepth:
            value = self._pp2(k)
            if value is None:
                raise ConfigError(f"no PP=2 fingerprint of {k.model} ({k.precision_key})")
            return value

        has_tp2 = key.with_parallelism(2, 1).with_batch(min(key.batch_size, 2))
        has_pp2 = key.with_parallelism(1, 2).with_batch(min(key.batch_size, 2))
        return References(
            ref=self._batched(key, ref),
            at_tp2=self._batched(key, tp2) if has_tp2 in self.fingerprints else None,
            at_pp2=self._batched(key, pp2) if has_pp2 in self.fingerprints else None,
        )

    def tp_overheads(self, model: str, batch_size: int) -> dict[int, TpOverhead]:
        """``{tp: O(tp)}`` of ``model`` at ``batch_size``: pooled over its precisions, the
        decode part calibrated where the exponent table says (module docstring)."""
        cached = self._overheads.get((model, batch_size))
        if cached is not None:
            return cached
        n = self.num_layers(model)
        found = fingerprint_overheads(self.fingerprints, model, batch_size, n)
        decode = self.exponents.decode_s_per_layer
        middle = middle_output(fp for k, fp in self.fingerprints.items() if k.model == model)
        out = {
            tp: calibrated(ovh, n, decode[tp], middle) if tp in decode else ovh
            for tp, ovh in found.items()
        }
        self._overheads[model, batch_size] = out
        return out

    def tp_overhead_base(self, key: ConfigKey) -> tuple[FloatArray, int] | None:
        """``(O(t0), t0)``, the TP overhead (TTFT, TPOT) the law extrapolates ``key.tp``
        from: ``t0 = key.tp`` where measured (at the largest batch <= the key's that has
        it), else the nearest profiled degree; ``tp_reference="tp2"``: the key's own
        precision at TP 2. ``None`` when nothing above TP 1 was profiled."""
        if self.tp_reference == "tp2":
            refs = self.references(key)
            if refs.at_tp2 is None:
                return None
            ref, tp2 = refs.ref, refs.at_tp2
            return np.asarray([tp2.ttft_s - ref.ttft_s / 2, tp2.tpot_s - ref.tpot_s / 2]), 2
        batches = {k.batch_size for k in self.configs(key.model) if k.batch_size <= key.batch_size}
        tables = [self.tp_overheads(key.model, b) for b in sorted(batches, reverse=True)]
        for table in sorted(tables, key=lambda t: key.tp not in t):  # stable: measured first
            t0 = nearest_profiled(key.tp, table)
            if t0 is not None:
                return table[t0].vector, t0
        return None

    def full_depth(self, key: ConfigKey) -> FullDepth:
        """TTFT, TPOT and memory of ``key`` (see the module docstring for the mode)."""
        if key.tp < 1 or key.pp < 1 or key.batch_size < 1:
            raise ConfigError("tp, pp and batch size must be >= 1", value=key)
        if self.mode == "direct" and key in self.fingerprints:
            return self._at(key)
        if self.mode == "direct" and key.with_batch(min(key.batch_size, 2)) in self.fingerprints:
            return self._batched(key, self._at)
        return self._by_law(key)

    def _by_law(self, key: ConfigKey) -> FullDepth:
        refs = self.references(key)
        ex = self.exponents.get(key.precision_key)
        overhead = None
        if key.tp > 1:
            base = self.tp_overhead_base(key)
            if base is None:
                which = (
                    f"TP=2 fingerprint of {key.model} ({key.precision_key})"
                    if self.tp_reference == "tp2"
                    else f"TP > 1 fingerprint of {key.model} (any precision, batch <= "
                    f"{key.batch_size})"
                )
                raise ConfigError(f"no {which}; cannot extrapolate to TP > 1", value=key.tp)
            overhead = extrapolate_overhead(base[0], base[1], key.tp, ex.beta)
        if key.pp > 1 and refs.at_pp2 is None:
            raise ConfigError(
                f"no PP=2 fingerprint of {key.model} ({key.precision_key}); cannot extrapolate "
                "to PP > 1",
                value=key.pp,
            )
        tp2 = refs.at_tp2 or refs.ref
        pp2 = refs.at_pp2 or refs.ref
        ttft, tpot = parallelism_law(
            [refs.ref.ttft_s, refs.ref.tpot_s],
            [tp2.ttft_s, tp2.tpot_s],
            [pp2.ttft_s, pp2.tpot_s],
            key.tp,
            key.pp,
            ex,
            tp_overhead=overhead,
        )
        mem = memory_law(refs.ref.memory_gb, tp2.memory_gb, pp2.memory_gb, key.tp, key.pp)
        return FullDepth(float(ttft), float(tpot), mem)

    def estimate(self, key: ConfigKey, output_tokens: int) -> Estimate:
        """Latency and memory of ``key`` serving requests of ``output_tokens`` tokens."""
        if output_tokens < 1:
            raise ConfigError("output tokens must be >= 1", value=output_tokens)
        fd = self.full_depth(key)
        direct = self.mode == "direct" and key.with_batch(min(key.batch_size, 2)) in (
            self.fingerprints
        )
        source = "fingerprint-direct" if direct else "fingerprint-law"
        return Estimate(key, output_tokens, fd.ttft_s, fd.tpot_s, fd.memory_gb, source)

    def estimator(self, key: ConfigKey, **swap: SwapTime) -> FingerprintEstimator:
        """The step-time model of ``key``'s configuration (its batch size is ignored)."""
        return FingerprintEstimator(self, key, **swap)


class FingerprintEstimator(StepTimeBase):
    """One configuration's fingerprint estimate as a step-time model (module docstring)."""

    def __init__(
        self,
        bank: FingerprintBank,
        key: ConfigKey,
        load: SwapTime | None = None,
        unload: SwapTime | None = None,
    ) -> None:
        super().__init__(load, unload)
        self.bank = bank
        self.key = key.with_batch(1)
        self._one = bank.full_depth(self.key)
        self._two: FullDepth | None = None
        try:
            self._two = bank.full_depth(self.key.with_batch(2))
        except ConfigError:
            self._two = None  # no batch-2 fingerprints: only batch 1 can be answered

    def at_batch(self, batch_size: int) -> FullDepth:
        """TTFT, TPOT and memory at ``batch_size`` (the batch law beyond 1)."""
        if batch_size == 1:
            return self._one
        if self._two is None:
            raise ConfigError(
                f"no batch-2 fingerprints of {self.key.model} ({self.key.precision_key}); "
                "the batch law needs them",
                value=batch_size,
            )
        return batch_full_depth(self._one, self._two, batch_size)

    def latency_s(self, output_tokens: int, batch_size: int = 1) -> Seconds:
        """End-to-end latency of a batch whose requests produce ``output_tokens``."""
        return self.at_batch(batch_size).latency_s(output_tokens)

    def memory_gb(self, batch_size: int = 1) -> float:
        """Device memory, all GPUs, GB."""
        return self.at_batch(batch_size).memory_gb

    def iteration_s(self, batch: Batch) -> Seconds:
        """TTFT of the prefill sequences plus TPOT of the decode sequences."""
        total = 0.0
        if batch.num_prefill_seqs > 0:
            total += self.at_batch(batch.num_prefill_seqs).ttft_s
        if batch.num_decode_seqs > 0:
            total += self.at_batch(batch.num_decode_seqs).tpot_s
        return total

    def request_batch_s(self, prompt_tokens: Sequence[int], output_tokens: int) -> Seconds:
        """MaverIQ's ``TTFT + out * TPOT`` at the batch's size."""
        if not prompt_tokens:
            return 0.0
        return self.latency_s(output_tokens, len(prompt_tokens))


# --------------------------------------------------------------------------- roofline fallback
def roofline_estimate(
    key: ConfigKey,
    output_tokens: int,
    *,
    accelerator: str = "A6000",
    prompt_tokens: int = 128,
) -> Estimate:
    """Latency and memory of ``key`` from the catalog roofline (no fingerprint needed).

    TTFT is one prefill iteration of ``batch_size`` prompts; TPOT a decode step at the
    mean context (prompt plus half the output); memory is weights, runtime overhead and
    the activation peak on every GPU plus the KV cache of the whole batch. With attention
    ranks (``attention_dp``) each rank takes its share of the batch (the largest,
    ``ceil(batch / attention_dp)``) and is timed as one rank of the group
    (:class:`~sincere.perf.base.Deployment`); memory is every rank's.
    """
    if output_tokens < 1 or prompt_tokens < 1:
        raise ConfigError(
            "output and prompt tokens must be >= 1", value=(output_tokens, prompt_tokens)
        )
    dep = key_deployment(key, accelerator)
    model = Roofline(dep)
    b = rank_batch(key)
    ttft = model.iteration_s(Batch.of(prefill=[(prompt_tokens, 0)] * b))
    ctx = b * (prompt_tokens + output_tokens // 2)
    tpot = model.iteration_s(Batch(num_decode_seqs=b, decode_ctx_tokens=ctx))
    memory = replica_memory_gb(dep, b, prompt_tokens, output_tokens)
    return Estimate(key, output_tokens, ttft, tpot, memory, "roofline")


def key_deployment(key: ConfigKey, accelerator: str) -> Deployment:
    """The catalog deployment of ``key`` on ``accelerator`` (one attention rank of it)."""
    return Deployment(
        get_model(key.model), get_accelerator(accelerator), key.precision, key.kv_precision,
        key.tp, key.pp, key.ep, key.attention_dp,
    )  # fmt: skip


def rank_batch(key: ConfigKey) -> int:
    """The sequences of ``key``'s batch the busiest attention rank holds (all of them
    without attention DP)."""
    return -(-key.batch_size // key.attention_dp)


def replica_memory_gb(dep: Deployment, batch: int, prompt_tokens: int, output_tokens: int) -> float:
    """Device memory of a replica of ``dep`` (every attention rank), each rank holding
    ``batch`` requests of ``prompt_tokens + output_tokens``: weights, runtime overhead and
    the activation peak on every GPU plus the KV cache, GB."""
    plan = plan_memory(dep, max_num_seqs=batch, max_num_batched_tokens=batch * prompt_tokens)
    per_gpu = plan.weight_bytes_per_gpu + plan.activation_bytes + plan.overhead_bytes
    kv = plan.kv_bytes_per_token_per_gpu * batch * (prompt_tokens + output_tokens)
    return dep.num_gpus * dep.attention_dp * (per_gpu + kv) / 1e9


def relative_errors(
    predicted: Sequence[float] | npt.NDArray[np.float64],
    measured: Sequence[float] | npt.NDArray[np.float64],
) -> npt.NDArray[np.float64]:
    """``|predicted - measured| / measured`` elementwise."""
    p, m = np.asarray(predicted, dtype=np.float64), np.asarray(measured, dtype=np.float64)
    out: npt.NDArray[np.float64] = np.abs(p - m) / m
    return out


__all__ = [
    "Estimate",
    "FingerprintBank",
    "FingerprintEstimator",
    "References",
    "relative_errors",
    "roofline_estimate",
]
