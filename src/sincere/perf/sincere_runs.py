"""Request-level timing calibrated on SINCERE's real H100 runs (step-model kind ``sincere-runs``).

SINCERE's standalone profiles (:mod:`sincere.perf.table`) time a pipeline call and a
model load in isolation. In its served runs the same work took longer and came with
costs the profiles do not see. ``sincere fit sincere-runs DIR`` fits these, per
environment (CC or not), on the runs' batches and loads, and writes a calibration file
(the shipped one: ``sincere/data/perf/sincere_h100_runs.yaml``, with its provenance):

* **batch time** of model *m* with *n* requests: ``fixed_s + per_request_s · n`` (a
  per-call cost, then a cost per sequence: the pipeline pads, prefills and decodes all
  of them for 50 tokens);
* **swap**: ``release_s(previous model) + load_s(new model)``. Only the sum is seen in
  the runs (a load in the log spans freeing the old weights and loading the new); the
  split follows the convention that the cheapest release is 0;
* **cold load**: the first load of a run (no previous model; CUDA context, cold caches);
* **after-batch work** ``fixed_s + per_request_s · n``: what the server does between a
  batch's end and its next action (writing each request's result, a monitor sample); it
  delays the next batch but not the batch's own requests;
* what SINCERE's **scheduler planned with**: the swap figures of the standalone profile
  the runs show it used (``planning_profile``, read from the shipped profiles), the
  SelectBatch span the runs show (``select_horizon``) and its timer thread's polling
  period.

:class:`RunCalibratedModel` answers the :class:`~sincere.perf.base.StepTimeModel`
questions from these, plus :class:`RequestLevelCosts` (after-batch work, cold load,
planning figures), which request-level engines use when a step model offers it.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import yaml
from pydantic import Field

from sincere.core.errors import ConfigError
from sincere.core.params import Params
from sincere.core.types import Seconds
from sincere.core.yaml_data import load_yaml
from sincere.perf.base import Batch, Deployment, StepTimeBase, StepTimeModel, SwapTime
from sincere.perf.factory import STEP_MODELS, StepModelKind
from sincere.perf.table import MODEL_ALIASES, SINCERE_OUTPUT_TOKENS, sincere_profile

SHIPPED_CALIBRATION = "sincere_h100_runs.yaml"
CALIBRATION_KIND = "sincere-runs-calibration"
ENVS = ("non-cc", "cc")
PROFILES = ("noncc", "cc")  # which standalone profile a scheduler planned with


SELECT_HORIZONS = ("swap-and-batch", "sla-slack")


@dataclass(frozen=True, slots=True)
class SchedulerPlanning:
    """How SINCERE's scheduler planned in the runs a calibration was fitted on."""

    load: SwapTime  # the load time it plans a swap with (standalone profile)
    unload: SwapTime  # the unload time it plans a swap with
    select_horizon: str  # SelectBatch's span: "swap-and-batch" (T_adj) or "sla-slack"
    poll_period_s: Seconds  # sleep of its timer thread between passes

    def __post_init__(self) -> None:
        if self.select_horizon not in SELECT_HORIZONS:
            raise ConfigError("unknown select_horizon", value=self.select_horizon,
                              allowed=SELECT_HORIZONS)  # fmt: skip
        if not self.poll_period_s > 0:
            raise ConfigError("poll_period_s must be > 0", value=self.poll_period_s)


@runtime_checkable
class RequestLevelCosts(Protocol):
    """Costs of a served request-level engine beyond its batches and swaps."""

    def after_batch_s(self, num_requests: int) -> Seconds:
        """Server work after a batch of ``num_requests`` before it can act again."""
        ...

    def cold_load_s(self) -> Seconds:
        """The first load of a run (no model was resident before)."""
        ...

    def planning(self) -> SchedulerPlanning:
        """What the scheduler plans with (its Timer, SelectBatch) and its polling period."""
        ...


@dataclass(frozen=True, slots=True)
class Affine:
    """``fixed_s + per_request_s · n`` seconds."""

    fixed_s: float
    per_request_s: float

    def at(self, num_requests: int) -> Seconds:
        """The time for ``num_requests`` requests (0 for none)."""
        return self.fixed_s + self.per_request_s * num_requests if num_requests > 0 else 0.0


@dataclass(frozen=True, slots=True)
class EnvCalibration:
    """One environment's fitted figures."""

    batch: Mapping[str, Affine]  # model -> batch time
    load_s: Mapping[str, float]  # model -> time to load it
    release_s: Mapping[str, float]  # model -> time to release it before the next load
    cold_load_s: float  # first load of a run
    after_batch: Affine  # server work after each batch
    swap_rms_s: float = 0.0  # residual spread of swap times around the fit
    batch_rms_s: float = 0.0  # residual spread of batch times around the fit


@dataclass(frozen=True, slots=True)
class RunCalibration:
    """A calibration file: figures per environment and the scheduler's planning."""

    envs: Mapping[str, EnvCalibration]
    planning_profile: str  # "noncc" / "cc": the standalone profile the scheduler used
    select_horizon: str  # SelectBatch's span the runs show
    poll_period_s: Seconds  # the timer thread's sleep between passes
    source: str  # what it was fitted on, by which command

    def env(self, cc: bool) -> EnvCalibration:
        """The figures of CC mode or not."""
        name = "cc" if cc else "non-cc"
        if name not in self.envs:
            raise ConfigError("calibration has no figures for env", value=name,
                              allowed=self.envs)  # fmt: skip
        return self.envs[name]


class RunCalibratedModel(StepTimeBase):
    """One model's request-level timing in one environment, from a calibration."""

    def __init__(
        self,
        batch: Affine,
        load: SwapTime,
        release: SwapTime,
        *,
        cold_load_s: Seconds,
        after_batch: Affine,
        planning: SchedulerPlanning,
        output_tokens: int = SINCERE_OUTPUT_TOKENS,
    ) -> None:
        super().__init__(load, release)
        if batch.fixed_s < 0 or batch.per_request_s <= 0:
            raise ConfigError("batch time needs fixed_s >= 0 and per_request_s > 0",
                              value=batch)  # fmt: skip
        self.batch = batch
        self.output_tokens = output_tokens
        self._cold_load_s = cold_load_s
        self._after = after_batch
        self._planning = planning

    def request_batch_s(self, prompt_tokens: Sequence[int], output_tokens: int) -> Seconds:
        """A pipeline call of ``len(prompt_tokens)`` requests (lengths not modelled)."""
        return self.batch.at(len(prompt_tokens))

    def iteration_s(self, batch: Batch) -> Seconds:
        """The call time at ``num_seqs`` spread over its forward passes."""
        return self.batch.at(batch.num_seqs) / self.output_tokens

    def after_batch_s(self, num_requests: int) -> Seconds:
        """Server work after a batch of ``num_requests``."""
        return max(0.0, self._after.at(num_requests))

    def cold_load_s(self) -> Seconds:
        """The first load of a run."""
        return self._cold_load_s

    def planning(self) -> SchedulerPlanning:
        """What SINCERE's scheduler planned with in the calibration's runs."""
        return self._planning


def _affine(data: Any, where: str) -> Affine:
    try:
        return Affine(float(data["fixed_s"]), float(data["per_request_s"]))
    except (KeyError, TypeError, ValueError):
        raise ConfigError("expected {fixed_s, per_request_s}", where=where, value=data) from None


def _per_model(data: Any, where: str) -> dict[str, float]:
    if not isinstance(data, Mapping):
        raise ConfigError("expected a mapping model -> seconds", where=where, value=data)
    try:
        return {str(m): float(v["mean_s"] if isinstance(v, Mapping) else v)
                for m, v in data.items()}  # fmt: skip
    except (KeyError, TypeError, ValueError):
        raise ConfigError("expected numbers of seconds", where=where, value=data) from None


def _env(data: Any, where: str) -> EnvCalibration:
    if not isinstance(data, Mapping):
        raise ConfigError("expected a mapping", where=where, value=data)
    try:
        batch = {str(m): _affine(v, f"{where}.batch.{m}") for m, v in data["batch"].items()}
        return EnvCalibration(
            batch=batch,
            load_s=_per_model(data["load"], f"{where}.load"),
            release_s=_per_model(data["release"], f"{where}.release"),
            cold_load_s=float(data["cold_load_s"]),
            after_batch=_affine(data["after_batch"], f"{where}.after_batch"),
            swap_rms_s=float(data.get("swap_rms_s", 0.0)),
            batch_rms_s=float(data.get("batch_rms_s", 0.0)),
        )
    except KeyError as exc:
        raise ConfigError("missing key", where=where, value=str(exc)) from None


def parse_calibration(data: Any, where: str) -> RunCalibration:
    """Validate a calibration document (what ``sincere fit sincere-runs`` writes)."""
    if not isinstance(data, Mapping) or data.get("kind") != CALIBRATION_KIND:
        raise ConfigError("not a sincere-runs calibration", where=where,
                          allowed=f"a mapping with kind: {CALIBRATION_KIND}")  # fmt: skip
    envs = data.get("envs")
    if not isinstance(envs, Mapping) or not envs or set(envs) - set(ENVS):
        given = sorted(envs) if isinstance(envs, Mapping) else envs
        raise ConfigError("envs must map non-cc / cc to figures", where=where, value=given)
    scheduler = data.get("scheduler") or {}
    profile = str(scheduler.get("planning_profile", "noncc"))
    if profile not in PROFILES:
        raise ConfigError("unknown planning_profile", where=where, value=profile,
                          allowed=PROFILES)  # fmt: skip
    try:
        horizon = str(scheduler.get("select_horizon", "sla-slack"))
        poll = float(scheduler.get("poll_period_s", 0.1))
    except (TypeError, ValueError):
        raise ConfigError("bad scheduler block", where=where, value=scheduler) from None
    SchedulerPlanning(SwapTime(0.0), SwapTime(0.0), horizon, poll)  # checks both values
    return RunCalibration(
        envs={str(k): _env(v, f"{where}: envs.{k}") for k, v in envs.items()},
        planning_profile=profile,
        select_horizon=horizon,
        poll_period_s=poll,
        source=str(data.get("source", "")),
    )


def load_calibration(path: str | Path | None = None) -> RunCalibration:
    """A calibration file (``None``: the shipped one, fitted on SINCERE's published runs)."""
    if path is None:
        return _shipped()
    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError("cannot read calibration file", where=p, value=str(exc)) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"not valid YAML: {exc}", where=p) from None
    return parse_calibration(data, str(p))


@functools.cache
def _shipped() -> RunCalibration:
    text = resources.files("sincere").joinpath("data", "perf", SHIPPED_CALIBRATION).read_text()
    return parse_calibration(load_yaml(text), SHIPPED_CALIBRATION)


def calibrated_model(calibration: RunCalibration, model: str, cc: bool) -> RunCalibratedModel:
    """The calibrated timing of ``model`` (a SINCERE name or the catalog's) in CC or not."""
    key = MODEL_ALIASES.get(model, model)
    env = calibration.env(cc)
    if key not in env.batch or key not in env.load_s or key not in env.release_s:
        raise ConfigError("no calibrated timing for model", value=model, allowed=env.batch)
    planned = sincere_profile(key, cc=calibration.planning_profile == "cc")
    planning = SchedulerPlanning(
        planned.load_time(),
        planned.unload_time(),
        calibration.select_horizon,
        calibration.poll_period_s,
    )
    return RunCalibratedModel(
        env.batch[key],
        SwapTime(env.load_s[key], env.swap_rms_s),
        SwapTime(env.release_s[key]),
        cold_load_s=env.cold_load_s,
        after_batch=env.after_batch,
        planning=planning,
    )


class SincereRunsParams(Params):
    """Parameters of ``sincere-runs``."""

    model: str | None = Field(
        None, description="SINCERE model whose fitted timing to use; null: the deployment's"
    )
    calibration: Path | None = Field(
        None,
        strict=False,
        description="calibration file from `sincere fit sincere-runs`; null: the shipped one",
    )


def _build(params: SincereRunsParams, dep: Deployment, cc: bool) -> StepTimeModel:
    calibration = load_calibration(params.calibration)
    return calibrated_model(calibration, params.model or dep.model.name, cc)


STEP_MODELS.register("sincere-runs", params=SincereRunsParams)(
    StepModelKind(_build, measured_cc=True)
)
