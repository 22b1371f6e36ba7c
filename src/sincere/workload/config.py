"""The ``workload:`` config section and :func:`generate`, which turns it into requests.

YAML shape (all keys documented in docs/workload.md)::

    num_requests: 10000          # and/or duration_s (whichever ends first)
    arrival: {kind: poisson, rate: 6.45}
    lengths: {kind: trace, source: azure-conv-2023, max_prompt_tokens: 4096}
    models: {llama-3-8b: 1.0}    # or a preset name: sincere
    tiers: {preset: niyama}      # or a list of {name, ttft_s, ttlt_s, tbt_s, priority, weight}
    max_tokens: null             # client cap on generated tokens

``trace: {path, format}`` replays a recorded trace instead of ``arrival`` and ``lengths``:
its requests in order with their arrival times, lengths, block ids (prefix caching) and
models where it names them (otherwise drawn from ``models``); ``tiers`` are drawn as usual.
An ``arrival`` section beside it replaces the recorded times (e.g. ``kind: trace`` of the
same file with a ``rate``, for capacity scans); ``num_requests`` / ``duration_s`` cut it.

``arrival`` takes any kind of :data:`~sincere.workload.arrivals.ARRIVALS` with that
class's parameters; ``sincere-bursty`` / ``sincere-ramp`` also take ``mean: 4|8|12``;
``trace`` takes ``path`` (and ``format``, ``time_scale``, ``rate``, ``loop``) instead of
recorded times. Parameters are checked at load time; files are read by :func:`generate`.
Generation draws arrivals, lengths, models and tiers from four independent streams
spawned from ``seed``, so the same config and seed give identical arrays.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field, PositiveInt, field_validator, model_validator

from sincere.core.config import TierConfig, read_yaml, validate_config
from sincere.core.errors import ConfigError
from sincere.core.request import RequestArrays
from sincere.workload.arrivals import ARRIVALS, ArrivalProcess
from sincere.workload.lengths import (
    LENGTHS,
    Independent,
    IntArray,
    JointLengths,
    LengthDistribution,
    PairedLengths,
    length_sources,
    load_length_table,
)
from sincere.workload.mixes import SINCERE_MODEL_MIX, ModelMix, TierMix, tier_preset
from sincere.workload.sessions import SessionShape, build_sessions
from sincere.workload.traces import read_lengths, read_trace

_SIMPLE = {float: (int, float), int: (int,), bool: (bool,), str: (str,)}


def _check_params(owner: str, cls: type[Any], params: dict[str, Any]) -> None:
    """Reject unknown names and wrongly typed scalars before calling the constructor."""
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(params) - set(fields))
    if unknown:
        raise ValueError(f"{owner}: unknown parameter(s) {unknown}; allowed: {sorted(fields)}")
    hints = typing.get_type_hints(cls)
    for name, value in params.items():
        hint = hints.get(name)
        is_union = typing.get_origin(hint) in (typing.Union, types.UnionType)
        options = typing.get_args(hint) if is_union else (hint,)
        simple = [t for t in options if t in _SIMPLE]
        if not simple or (value is None and type(None) in options):
            continue
        accepted = tuple(t for s in simple for t in _SIMPLE[s])
        if not isinstance(value, accepted) or (isinstance(value, bool) and bool not in simple):
            want = " or ".join(s.__name__ for s in simple)
            raise ValueError(f"{owner}.{name}: expected {want}, got {value!r}")


def _construct(owner: str, cls: type[Any], params: dict[str, Any]) -> Any:
    _check_params(owner, cls, params)
    try:
        return cls(**params)
    except ConfigError as exc:
        raise ValueError(str(exc)) from None


class ArrivalConfig(BaseModel):
    """``arrival:``: a ``kind`` plus that kind's parameters."""

    model_config = ConfigDict(extra="allow", frozen=True)
    kind: str

    @model_validator(mode="after")
    def _check(self) -> ArrivalConfig:
        if self.kind not in ARRIVALS:
            raise ValueError(f"unknown arrival kind {self.kind!r}; allowed: {ARRIVALS.names()}")
        self.build(check_only=True)
        return self

    @property
    def params(self) -> dict[str, Any]:
        """The parameters besides ``kind``."""
        return dict(self.model_extra or {})

    def build(self, base_dir: Path | None = None, *, check_only: bool = False) -> ArrivalProcess:
        """The arrival process (``trace`` reads its file unless ``check_only``)."""
        params = self.params
        cls = ARRIVALS.get(self.kind)
        if self.kind == "trace":
            path, fmt = params.pop("path", None), params.pop("format", None)
            if not isinstance(path, str):
                raise ValueError(f"trace: 'path' (a trace file) is required, got {path!r}")
            times: Any = [0.0, 1.0] if check_only else _trace_times(path, fmt, base_dir)
            params["recorded_at"] = times
        elif self.kind == "closed" and isinstance(params.get("think_time_s"), dict):
            params.update(_think_time(params.pop("think_time_s")))
        elif "mean" in params and hasattr(cls, "preset"):
            if len(params) > 1:
                raise ValueError(f"{self.kind}: 'mean' selects a preset; give no other parameter")
            try:
                return cls.preset(params["mean"])  # type: ignore[no-any-return]
            except ConfigError as exc:
                raise ValueError(str(exc)) from None
        process: ArrivalProcess = _construct(self.kind, cls, params)
        return process


def _think_time(spec: dict[str, Any]) -> dict[str, Any]:
    """``think_time_s: {kind: constant|exponential, mean: S}`` as the closed loop's
    ``think_time`` and ``think_time_s`` parameters."""
    unknown = sorted(set(spec) - {"kind", "mean"})
    if unknown or "mean" not in spec:
        raise ValueError(
            f"closed.think_time_s: got {spec!r}; give a number of seconds or "
            "{kind: constant|exponential, mean: seconds}"
        )
    return {"think_time": spec.get("kind", "constant"), "think_time_s": spec["mean"]}


def _resolve(path: str, base_dir: Path | None) -> Path:
    p = Path(path).expanduser()
    return p if p.is_absolute() or base_dir is None else base_dir / p


def _trace_times(path: str, fmt: str | None, base_dir: Path | None) -> Any:
    return read_trace(_resolve(path, base_dir), format=fmt).arrival_at


def unknown_source(source: str, path: Path) -> str:
    """Why ``lengths.source`` names nothing: neither a built-in table nor a file."""
    close = difflib.get_close_matches(source, length_sources(), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return (
        f"{source!r} is neither a built-in length table{hint} nor a trace file (no file "
        f"{str(path)!r}); built-in tables: {', '.join(length_sources())}"
    )


class LengthsConfig(BaseModel):
    """``lengths:``: a trace's joint (prompt, output) pairs, or one distribution per column.

    ``source`` is a shipped table (``azure-conv-2023``, ``azure-code-2023``: joint copula
    sampling) or a trace file (its pairs resampled, or replayed in order with ``replay``).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    kind: Literal["trace", "independent"] | None = None
    source: str | None = None
    format: str | None = None
    replay: bool = False
    max_prompt_tokens: PositiveInt | None = None
    max_output_tokens: PositiveInt | None = None
    prompt: dict[str, Any] | None = None
    output: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _check(self) -> LengthsConfig:
        kind = self.kind or ("trace" if self.source is not None else "independent")
        if kind == "trace":
            if self.source is None or self.prompt is not None or self.output is not None:
                raise ValueError("kind trace needs 'source' and takes no 'prompt'/'output'")
            if self.replay and self.source in length_sources():
                raise ValueError(f"replay needs a trace file; {self.source!r} is a table")
        else:
            if self.prompt is None or self.output is None or self.source is not None:
                raise ValueError("give 'source' (a trace), or both 'prompt' and 'output'")
            for column in ("prompt", "output"):
                self._distribution(column)
        return self

    def _distribution(self, column: str) -> LengthDistribution:
        spec = dict(getattr(self, column))
        kind = spec.pop("kind", None)
        if kind not in LENGTHS:
            raise ValueError(f"{column}.kind: got {kind!r}; allowed: {LENGTHS.names()}")
        cap = self.max_prompt_tokens if column == "prompt" else self.max_output_tokens
        dist: LengthDistribution = _construct(f"{column}", LENGTHS.get(kind), spec)
        return _Capped(dist, cap) if cap is not None else dist

    def build(self, base_dir: Path | None = None) -> JointLengths:
        """The joint sampler (reads a trace file when ``source`` is one)."""
        if self.source is None:
            return Independent(self._distribution("prompt"), self._distribution("output"))
        caps = (self.max_prompt_tokens, self.max_output_tokens)
        if self.source in length_sources():
            return load_length_table(self.source).joint(*caps)
        path = _resolve(self.source, base_dir)
        if not path.is_file():
            raise ConfigError(unknown_source(self.source, path), where="workload.lengths.source")
        trace = read_lengths(path, format=self.format)
        return PairedLengths(trace.prompt_tokens, trace.output_tokens, *caps, replay=self.replay)


class _Capped:
    """A single distribution clipped to a cap (the config's ``max_*_tokens``)."""

    def __init__(self, dist: LengthDistribution, cap: int) -> None:
        self.dist, self.cap = dist, cap

    def sample(self, rng: np.random.Generator, n: int) -> IntArray:
        """``n`` draws of the wrapped distribution, clipped to the cap."""
        return np.minimum(self.dist.sample(rng, n), self.cap)


class TraceConfig(BaseModel):
    """``trace:``: a recorded trace replayed as the workload (``format``: see ``trace formats``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    path: str
    format: str | None = None


class SessionsConfig(BaseModel):
    """``sessions:``: shared system prompts, multi-turn sessions, agent loops
    (:mod:`sincere.workload.sessions`); ``arrival`` then gives session starts and
    ``lengths`` each user message (prompt column) and answer (output column)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    min_turns: PositiveInt = 1
    max_turns: PositiveInt = 1
    think_s: float = Field(default=10.0, ge=0, allow_inf_nan=False)
    system_prompt_tokens: int = Field(default=0, ge=0)
    num_system_prompts: PositiveInt = 1
    popularity_s: float = Field(default=1.0, ge=0, allow_inf_nan=False)
    block_tokens: PositiveInt = 16

    @model_validator(mode="after")
    def _check(self) -> SessionsConfig:
        self.shape()
        return self

    def shape(self) -> SessionShape:
        """The generator's parameters."""
        try:
            return SessionShape(**self.model_dump())
        except ConfigError as exc:
            raise ValueError(str(exc)) from None


class WeightedTierConfig(TierConfig):
    """One tier of a ``tiers:`` list: the tier's targets and its share of the requests."""

    weight: float = Field(default=1.0, ge=0)  # relative share of the requests


class TierPresetConfig(BaseModel):
    """``tiers: {preset: NAME, weights: [...]}``."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    preset: str = "default"
    weights: list[float] | None = None

    @model_validator(mode="after")
    def _check(self) -> TierPresetConfig:
        try:
            tier_preset(self.preset, self.weights)
        except ConfigError as exc:
            raise ValueError(str(exc)) from None
        return self


class WorkloadConfig(BaseModel):
    """The ``workload:`` section: how many requests, when, how long, which model and tier."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    num_requests: PositiveInt | None = None
    duration_s: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    arrival: ArrivalConfig | None = None  # required unless ``trace`` is given
    lengths: LengthsConfig | None = None  # required unless ``trace`` is given; not with it
    trace: TraceConfig | None = None  # replay a recorded trace (module docstring)
    sessions: SessionsConfig | None = None  # prompts sharing prefixes (workload.sessions)
    models: dict[str, float] | str = Field(default_factory=lambda: {"default": 1.0})
    tiers: TierPresetConfig | list[WeightedTierConfig] = Field(default_factory=TierPresetConfig)
    max_tokens: PositiveInt | None = None

    @model_validator(mode="after")
    def _check(self) -> WorkloadConfig:
        if self.trace is None:
            if self.num_requests is None and self.duration_s is None:
                raise ValueError("give num_requests, duration_s or both")
            if self.arrival is None or self.lengths is None:
                raise ValueError("give arrival and lengths (or a trace to replay)")
        elif self.lengths is not None:
            raise ValueError("a replayed trace brings its own lengths; drop 'lengths'")
        if self.trace is not None and self.sessions is not None:
            raise ValueError("give a trace or sessions, not both")
        if self.arrival is not None and self.arrival.kind == "closed":
            self._check_closed()
        self.model_mix()
        self.tier_mix()
        return self

    def _check_closed(self) -> None:
        """A closed loop draws a fixed number of requests whose times the run decides."""
        if self.num_requests is None or self.duration_s is not None:
            raise ValueError(
                "arrival kind closed needs num_requests and no duration_s (its arrival "
                f"times are decided by the run); got num_requests={self.num_requests}, "
                f"duration_s={self.duration_s}"
            )
        if self.trace is not None or self.sessions is not None:
            raise ValueError("arrival kind closed takes no trace or sessions")

    @field_validator("tiers")
    @classmethod
    def _non_empty(cls, v: TierPresetConfig | list[WeightedTierConfig]) -> Any:
        if isinstance(v, list) and not v:
            raise ValueError("the tier list is empty; give at least one tier or a preset")
        return v

    def model_mix(self) -> ModelMix:
        """The model mix (a preset name or the given probabilities)."""
        if isinstance(self.models, str):
            if self.models != "sincere":
                raise ValueError(f"unknown model mix preset {self.models!r}; allowed: sincere")
            return ModelMix(SINCERE_MODEL_MIX)
        try:
            return ModelMix(self.models)
        except ConfigError as exc:
            raise ValueError(str(exc)) from None

    def missing_files(self, base_dir: Path | None = None) -> list[str]:
        """``field: path`` of each trace file this workload reads that does not exist."""
        wanted = []
        if self.trace is not None:
            wanted.append(("trace.path", self.trace.path))
        if (
            self.arrival is not None
            and self.arrival.kind == "trace"
            and isinstance(self.arrival.params.get("path"), str)
        ):
            wanted.append(("arrival.path", self.arrival.params["path"]))
        lengths = self.lengths
        if (
            lengths is not None
            and lengths.source is not None
            and lengths.source not in length_sources()
        ):
            wanted.append(("lengths.source", lengths.source))
        return [
            f"workload.{where}: "
            + (
                unknown_source(path, _resolve(path, base_dir))
                if where == "lengths.source"
                else f"no such file {str(_resolve(path, base_dir))!r}"
            )
            for where, path in wanted
            if not _resolve(path, base_dir).is_file()
        ]

    def tier_mix(self) -> TierMix:
        """The tiers and their weights."""
        if isinstance(self.tiers, TierPresetConfig):
            return tier_preset(self.tiers.preset, self.tiers.weights)
        tiers = tuple(t.to_tier() for t in self.tiers)
        try:
            return TierMix(tiers, tuple(t.weight for t in self.tiers))
        except ConfigError as exc:
            raise ValueError(str(exc)) from None


def load_workload_config(
    data: Any, source: str | Path | None = None, *, prefix: str = "workload"
) -> WorkloadConfig:
    """Validate a mapping (or a YAML file path) as a :class:`WorkloadConfig`.

    Errors become one :class:`ConfigError` naming each field path, value and what is allowed.
    """
    if isinstance(data, str | Path):
        source = source or data
        data = read_yaml(data, "workload")
    return validate_config(WorkloadConfig, data, source, prefix=prefix)


def _streams(seed: int) -> list[np.random.Generator]:
    return [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(4)]


def as_workload_config(
    config: WorkloadConfig | Mapping[str, Any] | str | Path,
) -> tuple[WorkloadConfig, Path | None]:
    """``config`` as a :class:`WorkloadConfig`, with the folder of the file it came from.

    Takes the config object, a mapping (a ``workload:`` section, or a whole simulation
    config holding one) or a YAML file of either kind.
    """
    if isinstance(config, WorkloadConfig):
        return config, None
    source: str | Path | None = None
    folder: Path | None = None
    data: Any = config
    if isinstance(config, str | Path):
        source, folder = Path(config), Path(config).resolve().parent
        data = read_yaml(config, "workload")
    if isinstance(data, Mapping) and "workload" in data and "arrival" not in data:
        data = data["workload"]
    return load_workload_config(data, source), folder


def generate(
    config: WorkloadConfig | Mapping[str, Any] | str | Path,
    seed: int = 0,
    *,
    base_dir: Path | None = None,
) -> RequestArrays:
    """Draw the requests of ``config`` (see :func:`as_workload_config` for what it takes);
    relative trace paths resolve against ``base_dir`` (default: the config file's folder)."""
    config, folder = as_workload_config(config)
    base_dir = base_dir if base_dir is not None else folder
    if config.trace is not None:
        return _replay(config, config.trace, seed, base_dir)
    arrival_rng, length_rng, model_rng, tier_rng = _streams(seed)
    assert config.arrival is not None and config.lengths is not None  # checked on load
    process = config.arrival.build(base_dir)
    t = process.times(arrival_rng, num_requests=config.num_requests, duration_s=config.duration_s)
    if config.sessions is not None:
        return _sessions(config, config.sessions, t, base_dir, length_rng, model_rng, tier_rng)
    prompt, output = config.lengths.build(base_dir).sample(length_rng, len(t))
    return _assemble(config, np.asarray(t, dtype=np.float64), prompt, output, model_rng, tier_rng)


def _assemble(
    config: WorkloadConfig,
    arrival_at: npt.NDArray[np.float64],
    prompt: npt.NDArray[np.int64],
    output: npt.NDArray[np.int64],
    model_rng: np.random.Generator,
    tier_rng: np.random.Generator,
    **content: Any,
) -> RequestArrays:
    """Requests from their arrivals and lengths: outputs capped by the workload's
    ``max_tokens``, models and tiers drawn from its mixes; ``content``: block ids, their
    size and sessions, where the source has them."""
    n = len(arrival_at)
    if config.max_tokens is not None:
        output = np.minimum(output, config.max_tokens)
        max_tokens = np.full(n, config.max_tokens, dtype=np.int64)
    else:
        max_tokens = output.copy()
    mix, tiers = config.model_mix(), config.tier_mix()
    tier = tiers.sample(tier_rng, n)
    return RequestArrays(
        arrival_at=arrival_at,
        prompt_tokens=prompt,
        output_tokens=output,
        max_tokens=max_tokens,
        model=mix.sample(model_rng, n),
        tier=tier,
        priority=tiers.priorities[tier],
        budget_usd=np.full(n, np.nan),
        models=mix.models,
        tiers=tiers.tiers,
        **content,
    )


def _sessions(
    config: WorkloadConfig,
    sessions: SessionsConfig,
    starts: Any,
    base_dir: Path | None,
    length_rng: np.random.Generator,
    model_rng: np.random.Generator,
    tier_rng: np.random.Generator,
) -> RequestArrays:
    """Sessions starting at ``starts`` (one per arrival), cut to the workload's size."""
    assert config.lengths is not None  # checked on load
    shape = sessions.shape()
    user, answer = config.lengths.build(base_dir).sample(length_rng, len(starts) * shape.max_turns)
    at = np.asarray(starts, dtype=np.float64)
    got = build_sessions(at, shape, user, answer, length_rng, keep=config.num_requests)
    n = len(got.arrival_at)
    if config.num_requests is not None and config.num_requests < n:
        n = config.num_requests
    if config.duration_s is not None:
        n = int(np.searchsorted(got.arrival_at[:n], config.duration_s, side="left"))
    return _assemble(
        config,
        got.arrival_at[:n],
        got.prompt_tokens[:n],
        got.output_tokens[:n],
        model_rng,
        tier_rng,
        block_ids=got.block_ids[:n],
        block_tokens=shape.block_tokens,
        sessions=got.sessions[:n],
    )


def _replay(
    config: WorkloadConfig, trace: TraceConfig, seed: int, base_dir: Path | None
) -> RequestArrays:
    """The requests of a recorded trace, cut and completed by the rest of ``config``."""
    arrival_rng, _, model_rng, tier_rng = _streams(seed)
    rec = read_trace(_resolve(trace.path, base_dir), format=trace.format)
    t = rec.arrival_at
    if config.arrival is not None:
        t = config.arrival.build(base_dir).times(arrival_rng, num_requests=len(rec))
    n = len(rec) if len(t) > len(rec) else len(t)
    if config.num_requests is not None and config.num_requests < n:
        n = config.num_requests
    if config.duration_s is not None:
        n = int(np.searchsorted(t[:n], config.duration_s, side="left"))
    output = rec.output_tokens[:n]
    max_tokens = rec.max_tokens[:n].copy()
    if config.max_tokens is not None:
        output = np.minimum(output, config.max_tokens)
        max_tokens = np.minimum(max_tokens, config.max_tokens)
    mix, tiers = config.model_mix(), config.tier_mix()
    named = rec.models != ("default",)
    tier = tiers.sample(tier_rng, n)
    return RequestArrays(
        arrival_at=np.asarray(t[:n], dtype=np.float64),
        prompt_tokens=rec.prompt_tokens[:n],
        output_tokens=output,
        max_tokens=max_tokens,
        model=rec.model[:n] if named else mix.sample(model_rng, n),
        tier=tier,
        priority=tiers.priorities[tier],
        budget_usd=np.full(n, np.nan),
        models=rec.models if named else mix.models,
        tiers=tiers.tiers,
        prompts=rec.prompts[:n],
        block_ids=rec.block_ids[:n],
        block_tokens=rec.block_tokens if rec.block_ids else 0,
        sessions=rec.sessions[:n],
    )


__all__ = [
    "ArrivalConfig",
    "LengthsConfig",
    "SessionsConfig",
    "TierPresetConfig",
    "TraceConfig",
    "WeightedTierConfig",
    "WorkloadConfig",
    "as_workload_config",
    "generate",
    "load_workload_config",
]
