"""Output length as a distribution: linear quantile regression on hashed prompt features.

The reference router trains its output-length predictor on prompts. Without a text
model to download, a prompt is described by cheap, deterministic features hashed into
``2 ** hash_bits`` slots (CRC-32 of a prefixed string, so a model file means the same
in every process):

* ``m:MODEL``, ``t:TIER``, ``b:BIN`` and ``mb:MODEL|BIN``, where BIN is
  ``floor(log2(prompt tokens))`` -- the prompt-bucket baseline as features;
* the prompt text when known: lower-cased words (``w:``) and word pairs (``p:``), each
  worth ``1 / sqrt(count)`` so long prompts do not dominate;

plus the standardised log prompt tokens, its square and a bias. For each quantile
level ``tau`` in :data:`LEVELS` a weight vector predicts the ``tau``-quantile of
``ln(output tokens)`` (pinball loss, Adam on mini-batches in a seeded order, an L2
penalty on the hashed slots so that a rare word cannot memorise its few lengths);
quantiles of the logarithm are quantiles of the length. Predicted quantiles are sorted,
so they never cross.

The levels are the midpoints of five equal probability bins, so the mean of the five
predicted quantiles is the midpoint rule for the length's mean (``E[X] = integral of
Q(u) du``): that mean, capped at ``max_tokens``, is :meth:`QuantileLength.predict`.
NumPy, and SciPy's sparse matrices for training and batch prediction; no torch.
"""

from __future__ import annotations

import itertools
import math
import re
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from sincere.core.errors import ConfigError
from sincere.core.request import Request
from sincere.predict.saved import (
    Arrays,
    EpochProgress,
    ModelHeader,
    check_model,
    read_model,
    save_model,
)

if TYPE_CHECKING:  # the records module reads Parquet: imported by its users only
    from sincere.predict.records import Lengths

FloatArray = npt.NDArray[np.float64]

KIND = "length-quantile"
LEVELS: tuple[float, ...] = (0.1, 0.3, 0.5, 0.7, 0.9)
"""Quantile levels predicted (midpoints of five equal bins)."""

MAX_WORDS = 512
"""Words of a prompt that are hashed (the rest are ignored)."""


def schema(hash_bits: int) -> dict[str, Any]:
    """The feature schema of a length model hashing into ``2 ** hash_bits`` slots."""
    return {
        "hashed": ["m:model", "t:tier", "b:log2_prompt_bin", "mb:model|bin", "w:word", "p:pair"],
        "dense": ["log_prompt_tokens", "log_prompt_tokens^2", "bias"],
        "hash": "crc32",
        "hash_bits": hash_bits,
        "max_words": MAX_WORDS,
        "levels": list(LEVELS),
    }


_WORD = re.compile(rb"[a-z0-9']+")
_WORD_SEED = zlib.crc32(b"w:")  # CRC-32 of "w:" + word, computed from this prefix's CRC
_PAIR_SEED = zlib.crc32(b"p:")  # CRC-32 of "p:" + word + " " + word


def _slot(key: str, mask: int) -> int:
    return zlib.crc32(key.encode("utf-8")) & mask


def hashed_features(
    prompt_tokens: int, model: str, tier: str, prompt: str | None, hash_bits: int
) -> dict[int, float]:
    """The hashed part of one request's features: slot -> value (see the docstring).

    Costs about a microsecond per word of prompt text: compute it once per request.
    """
    mask = (1 << hash_bits) - 1
    b = int(math.log2(max(prompt_tokens, 1)))
    out: dict[int, float] = {}
    for key in (f"m:{model}", f"t:{tier}", f"b:{b}", f"mb:{model}|{b}"):
        slot = _slot(key, mask)
        out[slot] = out.get(slot, 0.0) + 1.0
    if prompt:
        words = _WORD.findall(prompt.lower().encode("utf-8"))[:MAX_WORDS]
        crc = zlib.crc32
        slots = [crc(w, _WORD_SEED) & mask for w in words]
        slots += [crc(b" " + c, crc(a, _PAIR_SEED)) & mask for a, c in itertools.pairwise(words)]
        weight = 1.0 / math.sqrt(len(slots)) if slots else 0.0
        for slot in slots:
            out[slot] = out.get(slot, 0.0) + weight
    return out


def feature_row(
    prompt_tokens: int,
    model: str,
    tier: str,
    prompt: str | None,
    hash_bits: int,
    log_mean: float,
    log_std: float,
) -> dict[int, float]:
    """All features of one request: the hashed slots, then the standardised log prompt
    tokens, its square and the bias in slots ``2 ** hash_bits`` to ``2 ** hash_bits + 2``.

    The one place that builds a row, for training (:func:`design`) and serving
    (:meth:`QuantileLength.quantiles`) alike.
    """
    row = hashed_features(prompt_tokens, model, tier, prompt, hash_bits)
    width = 1 << hash_bits
    z = (math.log(prompt_tokens) - log_mean) / log_std
    row[width], row[width + 1], row[width + 2] = z, z * z, 1.0
    return row


@dataclass(frozen=True)
class LengthParams:
    """Hyper-parameters of the quantile length model and its training."""

    hash_bits: int = 14  # hashed slots: 2 ** hash_bits
    epochs: int = 30
    batch_size: int = 256
    learning_rate: float = 0.02
    l2: float = 1e-3  # on the hashed slots only: rare words would otherwise memorise noise
    seed: int = 0

    def __post_init__(self) -> None:
        if not 8 <= self.hash_bits <= 22:
            raise ConfigError("hash_bits must be in [8, 22]", value=self.hash_bits)
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1", value=getattr(self, name))
        if not (self.learning_rate > 0 and self.l2 >= 0):
            raise ConfigError(
                "need learning_rate > 0 and l2 >= 0", value=(self.learning_rate, self.l2)
            )


def design(data: Lengths, hash_bits: int, log_mean: float, log_std: float) -> Any:
    """The feature matrix of ``data`` (SciPy CSR): hashed slots, then the three dense columns.

    SciPy is imported here, not with the module: serving one request needs none of it.
    """
    import scipy.sparse as sp

    width = 1 << hash_bits
    indptr: list[int] = [0]
    indices: list[int] = []
    values: list[float] = []
    for k in range(len(data)):
        p = int(data.prompt_tokens[k])
        row = feature_row(
            p, data.model[k], data.tier[k], data.prompt[k], hash_bits, log_mean, log_std
        )
        indices.extend(row.keys())
        values.extend(row.values())
        indptr.append(len(indices))
    return sp.csr_matrix(
        (np.array(values), np.array(indices, dtype=np.int64), np.array(indptr, dtype=np.int64)),
        shape=(len(data), width + 3),
    )


def pinball(y: FloatArray, pred: FloatArray, levels: Sequence[float] = LEVELS) -> float:
    """Mean pinball (quantile) loss of ``pred`` (rows x levels) for targets ``y``."""
    tau = np.asarray(levels)
    r = y[:, None] - pred
    return float(np.mean(np.maximum(tau * r, (tau - 1.0) * r)))


class QuantileLength:
    """A trained quantile model as an output-length predictor (see the module docstring)."""

    def __init__(self, weights: FloatArray, hash_bits: int, log_mean: float, log_std: float):
        self.weights = weights  # (2 ** hash_bits + 3, len(LEVELS))
        self.hash_bits = hash_bits
        self.log_mean = log_mean
        self.log_std = log_std

    @classmethod
    def train(
        cls, data: Lengths, params: LengthParams, progress: EpochProgress | None = None
    ) -> tuple[QuantileLength, float]:
        """Fit on ``data``; returns the model and the training seconds."""
        started = time.perf_counter()
        if len(data) < 2:
            raise ConfigError("too few served requests to train on", value=len(data))
        logp = np.log(data.prompt_tokens.astype(np.float64))
        log_mean, log_std = float(logp.mean()), max(float(logp.std()), 1e-6)
        x = design(data, params.hash_bits, log_mean, log_std)
        y = np.log(data.output_tokens.astype(np.float64))
        w = _fit(x, y, params, progress)
        return cls(w, params.hash_bits, log_mean, log_std), time.perf_counter() - started

    @classmethod
    def load(cls, path: str | Path) -> QuantileLength:
        """The model in ``path`` (a ``length-quantile`` file from ``sincere predict train``)."""
        header, data = read_model(path)
        return cls.from_read(path, header, data)

    @classmethod
    def from_read(cls, path: str | Path, header: ModelHeader, data: Arrays) -> QuantileLength:
        """The model of a file already read with ``read_model``, checked as :meth:`load` does."""
        check_length_file(path, header, data)
        bits = int(header.schema["hash_bits"])
        return cls(data["weights"], bits, float(data["log_mean"][0]), float(data["log_std"][0]))

    def save(self, path: str | Path, params: dict[str, Any], provenance: dict[str, Any]) -> Path:
        """Write the model to ``path``."""
        header = ModelHeader(KIND, schema(self.hash_bits), params, provenance)
        arrays = {
            "weights": self.weights,
            "log_mean": np.array([self.log_mean]),
            "log_std": np.array([self.log_std]),
        }
        return save_model(path, header, arrays)

    def log_quantiles(self, data: Lengths) -> FloatArray:
        """Sorted quantiles of ln(output tokens), one row per request."""
        x = design(data, self.hash_bits, self.log_mean, self.log_std)
        return np.sort(np.asarray(x @ self.weights), axis=1)

    def quantiles(self, request: Request) -> tuple[float, ...]:
        """Output-token quantiles of ``request`` at :data:`LEVELS`, uncapped."""
        row = feature_row(
            request.prompt_tokens,
            request.model,
            request.tier.name,
            request.prompt,
            self.hash_bits,
            self.log_mean,
            self.log_std,
        )
        slots = np.fromiter(row.keys(), dtype=np.int64, count=len(row))
        values = np.fromiter(row.values(), dtype=np.float64, count=len(row))
        q = values @ self.weights[slots]
        return tuple(math.exp(v) for v in sorted(q.tolist()))

    def predict(self, request: Request) -> float:
        """Mean of the predicted quantiles (the midpoint rule), in [1, max_tokens]."""
        mean = sum(self.quantiles(request)) / len(LEVELS)
        if request.max_tokens is not None:
            mean = min(mean, float(request.max_tokens))
        return max(mean, 1.0)

    def observe(self, request: Request, output_tokens: int) -> None:
        """Nothing: the model is trained offline (retrain from new records)."""


def check_length_file(path: str | Path, header: ModelHeader, data: Arrays) -> None:
    """Check a read ``length-quantile`` file against this code's schema (``path`` names it)."""
    bits = header.schema.get("hash_bits")
    expected = schema(int(bits) if isinstance(bits, int) else 14)
    check_model(path, header, data, KIND, expected, ("weights", "log_mean", "log_std"))


def _fit(x: Any, y: FloatArray, p: LengthParams, progress: EpochProgress | None) -> FloatArray:
    """Adam on the mean pinball loss plus ``l2``, mini-batches in a seeded order."""
    rng = np.random.default_rng(p.seed)
    tau = np.asarray(LEVELS)
    w = np.zeros((x.shape[1], len(LEVELS)))
    w[-1] = np.quantile(y, tau)  # bias starts at the overall quantiles
    m, v = np.zeros_like(w), np.zeros_like(w)
    beta1, beta2, step = 0.9, 0.999, 0
    n = len(y)
    for epoch in range(1, p.epochs + 1):
        order = rng.permutation(n)
        for start in range(0, n, p.batch_size):
            rows = order[start : start + p.batch_size]
            xb = x[rows]
            r = y[rows, None] - xb @ w
            g = xb.T @ np.where(r > 0, -tau, 1.0 - tau) / len(rows)
            g[:-3] += p.l2 * w[:-3]  # the hashed slots; not the dense columns and bias
            step += 1
            m = beta1 * m + (1 - beta1) * g
            v = beta2 * v + (1 - beta2) * g * g
            m_hat, v_hat = m / (1 - beta1**step), v / (1 - beta2**step)
            w -= p.learning_rate * m_hat / (np.sqrt(v_hat) + 1e-8)
        if progress is not None:
            progress(epoch, p.epochs, pinball(y, np.asarray(x @ w)))
    return w
