"""Train a predictor from record files into a model file, and evaluate a model file on records.

What ``sincere predict train`` and ``sincere predict eval`` run, callable from Python:

>>> summary = train_model("latency", ["runs/a/requests.parquet"], "lat.npz")  # doctest: +SKIP
>>> scores = evaluate_model("lat.npz", ["runs/b/requests.parquet"])        # doctest: +SKIP

Kinds: ``latency`` (:class:`~sincere.predict.lstm.LstmLatency`, trained with torch)
and ``length`` (:class:`~sincere.predict.quantile_length.QuantileLength`, NumPy and
SciPy). A model file records the files it was trained on (as given), the seed and the
hyper-parameters; the same records and seed give the same file, byte for byte.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from sincere.core.errors import ConfigError
from sincere.core.request import Tier
from sincere.predict.evaluate import (
    LatencyScores,
    LengthScores,
    StepModelLatency,
    evaluate_latency,
    evaluate_length,
)
from sincere.predict.latency import LatencyPredictor, LinearLatency, RecentWindow
from sincere.predict.lstm import LstmLatency
from sincere.predict.quantile_length import LengthParams, QuantileLength
from sincere.predict.records import Lengths, read_lengths, read_lengths_of, read_served
from sincere.predict.saved import EpochProgress, read_model

MODEL_KINDS: dict[str, str] = {"latency": "latency-lstm", "length": "length-quantile"}
"""``sincere predict train KIND`` -> the model file's kind."""


@dataclass(frozen=True)
class TrainSummary:
    """What training produced."""

    kind: str  # latency or length
    path: Path  # the model file written
    num_requests: int  # served requests trained on
    num_derived_load: int  # of those, requests whose load came from timestamps
    train_s: float  # wall seconds of training
    detail: dict[str, Any]  # kind-specific: epochs run, held-out loss, ...


def _provenance(records: Sequence[str | Path], seed: int) -> dict[str, Any]:
    from sincere import __version__

    return {"records": [str(r) for r in records], "seed": seed, "sincere_version": __version__}


def train_model(
    kind: str,
    records: Sequence[str | Path],
    out: str | Path,
    *,
    seed: int = 0,
    epochs: int | None = None,
    options: Mapping[str, Any] | None = None,
    progress: EpochProgress | None = None,
) -> TrainSummary:
    """Train a ``kind`` predictor on ``records`` and write it to ``out``.

    ``options`` are the kind's other hyper-parameters (:class:`LstmParams` or
    :class:`LengthParams` fields). Raises ConfigError / DataError for bad input.
    """
    if kind not in MODEL_KINDS:
        raise ConfigError("unknown predictor kind", value=kind, allowed=sorted(MODEL_KINDS))
    if not records:
        raise ConfigError("no records files given", allowed="one or more requests.parquet")
    extra = dict(options or {})
    if epochs is not None:
        extra["epochs"] = epochs
    job = _TrainJob(records, Path(out), seed, extra, progress)
    return _train_length(job) if kind == "length" else _train_latency(job)


@dataclass(frozen=True)
class _TrainJob:
    """What every kind's training is given: the records, where the model goes, the seed,
    the kind's hyper-parameters and the epoch progress callback."""

    records: Sequence[str | Path]
    out: Path
    seed: int
    options: dict[str, Any]
    progress: EpochProgress | None

    def params(self, cls: Any) -> Any:
        """The hyper-parameter dataclass ``cls`` from the options and the seed."""
        known = set(cls.__dataclass_fields__) - {"seed"}
        unknown = sorted(set(self.options) - known)
        if unknown:
            raise ConfigError(
                f"unknown {cls.__name__} option(s)", value=unknown, allowed=sorted(known)
            )
        return cls(seed=self.seed, **self.options)

    def save(self, model: LstmLatency | QuantileLength, params: Any) -> Path:
        """Write ``model`` with its hyper-parameters and where it came from."""
        provenance = _provenance(self.records, self.seed)
        return model.save(self.out, asdict(params), provenance)


def _train_latency(job: _TrainJob) -> TrainSummary:
    from sincere.predict.lstm_train import LstmParams, train_lstm

    params = job.params(LstmParams)
    runs = [read_served(r) for r in job.records]
    model, report = train_lstm(runs, params, job.progress)
    path = job.save(model, params)
    detail = {
        "epochs_run": report.epochs_run,
        "best_epoch": report.best_epoch,
        "held_out_nll": report.held_out_loss,
        "num_held_out": report.num_held_out,
    }
    derived = sum(r.num_derived for r in runs)
    return TrainSummary("latency", path, report.num_samples, derived, report.train_s, detail)


def _train_length(job: _TrainJob) -> TrainSummary:
    params = job.params(LengthParams)
    data = read_lengths(job.records)
    model, train_s = QuantileLength.train(data, params, job.progress)
    path = job.save(model, params)
    with_text = sum(p is not None for p in data.prompt)
    return TrainSummary("length", path, len(data), 0, train_s, {"with_text": with_text})


@dataclass(frozen=True)
class InstanceFacts:
    """What the records do not say about a run's instances: from its simulation config."""

    step_models: Mapping[str, Any]  # instance -> StepTimeModel
    max_num_seqs: Mapping[str, int]
    tiers: Mapping[str, Tier]


def evaluate_model(
    model: str | Path,
    records: Sequence[str | Path],
    *,
    facts: InstanceFacts | None = None,
    warmup: float = 0.1,
) -> list[LatencyScores] | list[LengthScores]:
    """Scores of the model file ``model`` and its baselines on ``records``.

    Latency: each file is a run, replayed with the online baselines (``recent-window``,
    ``linear``), the step-model prediction when ``facts`` give step models, and the
    model; the first ``warmup`` share of each run is not scored. Length: the first
    ``warmup`` share of each file trains the baselines; the rest is scored.
    """
    if not 0.0 <= warmup < 1.0:
        raise ConfigError("warmup must be in [0, 1)", value=warmup)
    header, data = read_model(model)
    if header.kind == MODEL_KINDS["length"]:
        return _evaluate_length(QuantileLength.from_read(model, header, data), records, warmup)
    lstm = LstmLatency.from_read(model, header, data)
    runs = [read_served(r) for r in records]
    predictors: dict[str, Callable[[], LatencyPredictor]] = {
        "recent-window (EWMA)": RecentWindow,
        "linear (ridge)": LinearLatency,
    }
    if facts is not None and facts.step_models:
        predictors["step model"] = lambda: StepModelLatency(facts.step_models, facts.max_num_seqs)
    predictors["lstm"] = lambda: LstmLatency(lstm.weights, lstm.length, lstm.min_history)
    return evaluate_latency(predictors, runs, None if facts is None else facts.tiers, warmup)


def _evaluate_length(
    model: QuantileLength, records: Sequence[str | Path], warmup: float
) -> list[LengthScores]:
    if not records:
        raise ConfigError("no records files given", allowed="one or more requests.parquet")
    heads, tails = zip(*(read_lengths_of(r).split(warmup) for r in records), strict=True)
    return evaluate_length(model, Lengths.concat(heads), Lengths.concat(tails))
