"""The tensor-parallel overhead of a model, read off its fingerprints.

At TP = t a model does ``1/t`` of its TP = 1 work per GPU plus what parallelism costs:
two all-reduces of the activations per layer, kernels that stop shrinking once a GPU's
share is small, and the runtime's per-step synchronisation. The *TP overhead* is that
extra, ``O(t) = L(t, 1) - L(1, 1) / t``, for TTFT and TPOT separately.

Two facts make it measurable from fingerprints with little noise:

* it does not depend on the weight or KV precision: the all-reduced activations are fp16
  whatever the weights (MaverIQ's full runs: at TP 4 the TPOT overhead of llama-2-13b is
  4.0–4.5 ms for fp16, int8 and int4 alike), so a model's precision variants are pooled:
  the residuals ``l_t(n, o) - l_1(n, o) / t`` of every variant with both fingerprints are
  averaged point by point, then solved for per-layer and fixed terms
  (:func:`~sincere.estimate.fingerprint.layer_terms`) and taken to full depth;
* the split between TTFT and TPOT is the noisy part of a fingerprint (a second difference
  over only 10 output tokens), while the level near the fingerprints' output lengths is
  well measured. The decode overhead is the cost of small all-reduces (a few KB per layer
  and token, latency-bound), so it is a property of the GPUs and links per layer, not of
  one model: when a calibration ``decode_s_per_layer[t]`` is known (fitted on full-model
  runs or on all fingerprints, :mod:`sincere.estimate.fit`), the TPOT overhead is
  ``N_L * decode_s_per_layer[t]`` and the TTFT overhead keeps the pooled level at the
  middle output length ``o_m``: ``O_ttft = O_ttft,fp + o_m * (O_tpot,fp - O_tpot)``.
  The prefill overhead stays the model's own: its all-reduces carry prompt x hidden
  bytes, and their cost depends on the message size (llama-2-7b and GPT-J, hidden 4096,
  lose 8 ms per layer at TP 4 and ~30 ms at TP 8 where llama-2-13b loses ~1 ms).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from sincere.estimate.fingerprint import ConfigKey, Fingerprint, layer_terms

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class TpOverhead:
    """A model's TP overhead at one TP degree and batch size (full depth, seconds)."""

    tp: int  # tensor-parallel degree
    ttft_s: float  # TTFT beyond TTFT(1, 1) / tp
    tpot_s: float  # TPOT beyond TPOT(1, 1) / tp
    num_variants: int  # precision variants pooled
    decode: str  # where the TPOT part comes from: "fingerprints" or "calibration"

    @property
    def vector(self) -> FloatArray:
        """``[ttft_s, tpot_s]``."""
        return np.asarray([self.ttft_s, self.tpot_s], dtype=np.float64)


def _residual(at_tp: Fingerprint, at_one: Fingerprint, tp: int) -> dict[tuple[int, int], float]:
    """``l_tp(n, o) - l_1(n, o) / tp`` at the points both fingerprints have."""
    common = set(at_tp.latency_s) & set(at_one.latency_s)
    return {p: at_tp.latency_s[p] - at_one.latency_s[p] / tp for p in common}


def _pooled_points(pairs: Iterable[dict[tuple[int, int], float]]) -> dict[tuple[int, int], float]:
    """Point-by-point mean of residuals that share the same four points."""
    groups: dict[frozenset[tuple[int, int]], list[dict[tuple[int, int], float]]] = {}
    for r in pairs:
        if len(r) == 4:
            groups.setdefault(frozenset(r), []).append(r)
    if not groups:
        return {}
    best = max(groups.values(), key=len)  # the layout most variants share
    return {p: float(np.mean([r[p] for r in best])) for p in best[0]}


def fingerprint_overheads(
    fingerprints: Mapping[ConfigKey, Fingerprint], model: str, batch_size: int, num_layers: int
) -> dict[int, TpOverhead]:
    """``{tp: O(tp)}`` for every TP > 1 at which ``model`` has PP = 1 fingerprints of some
    precision that also has the TP = 1 one, pooled over those precisions (module docstring)."""
    by_tp: dict[int, list[dict[tuple[int, int], float]]] = {}
    for key, fp in fingerprints.items():
        if key.model != model or key.batch_size != batch_size or key.pp != 1 or key.tp < 2:
            continue
        one = fingerprints.get(key.with_parallelism(1, 1))
        if one is not None:
            by_tp.setdefault(key.tp, []).append(_residual(fp, one, key.tp))
    out = {}
    for tp, residuals in sorted(by_tp.items()):
        points = _pooled_points(residuals)
        if len({n for n, _ in points}) != 2:
            continue
        full = layer_terms(points).at_depth(num_layers)
        out[tp] = TpOverhead(tp, full.ttft_s, full.tpot_s, len(residuals), "fingerprints")
    return out


def middle_output(fingerprints: Iterable[Fingerprint]) -> float:
    """Mean output length of the fingerprints' points (15 for MaverIQ's 10 and 20)."""
    outs = [o for fp in fingerprints for _, o in fp.latency_s]
    return float(np.mean(outs)) if outs else 15.0


def calibrated(
    overhead: TpOverhead, num_layers: int, decode_s_per_layer: float, middle: float
) -> TpOverhead:
    """``overhead`` with the calibrated decode part; the level at ``middle`` tokens kept."""
    tpot = num_layers * decode_s_per_layer
    ttft = overhead.ttft_s + middle * (overhead.tpot_s - tpot)
    return TpOverhead(overhead.tp, ttft, tpot, overhead.num_variants, "calibration")


def decode_from_fingerprints(
    fingerprints: Mapping[ConfigKey, Fingerprint], num_layers: Callable[[str], int]
) -> dict[int, float]:
    """Decode overhead per layer of each TP degree: the pooled fingerprint TPOT overhead
    of every model at batch 1, per layer, averaged over the models."""
    per_tp: dict[int, list[float]] = {}
    for model in sorted({k.model for k in fingerprints}):
        n = num_layers(model)
        for tp, ovh in fingerprint_overheads(fingerprints, model, 1, n).items():
            per_tp.setdefault(tp, []).append(ovh.tpot_s / n)
    return {tp: float(np.mean(v)) for tp, v in sorted(per_tp.items())}
