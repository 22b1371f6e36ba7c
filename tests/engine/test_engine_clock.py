"""The GPU's clock under the engine's recent work (engine/clock.py): the duty by hand, the
levels, and a real H100 engine whose lone prompt starts at the burst clock and falls within
itself while prompts back to back settle at the sustained ratio."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sincere.catalog import get_accelerator
from sincere.core.records import RecordArrays
from sincere.core.request import RequestArrays
from sincere.engine.build import build_engine, clock_levels_of, deployment_of, step_model_of
from sincere.engine.clock import (
    EXPONENT,
    LEVELS,
    TAU_S,
    ClockLevels,
    EngineClock,
    mean_square_duty,
)
from sincere.engine.continuous import ContinuousEngine
from sincere.engine.runs import Run
from sincere.engine.spec import DeploymentSpec
from sincere.perf.calibration import default_roofline_params

from .test_engine_continuous import drive

MODEL = "llama-3-8b"


def _run(start: float, end: float, tokens: int, steps: int = 1, decodes: int = 0) -> Run:
    if not tokens:  # a decode run
        return Run(start, end, steps, decodes, 0, (), (end - start) / steps, 0.0)
    durations = ((end - start) / steps,) * steps
    return Run(start, end, steps, decodes, 0, ((0, tokens * steps),), durations[0], 0.0,
               tokens * steps, durations)  # fmt: skip


def _levels(ridge: float = 100.0) -> tuple[ClockLevels, list[float]]:
    built: list[float] = []

    def build(keep: float) -> object:
        built.append(keep)
        return ("model", keep)

    levels = ClockLevels(("model", "base"), 0.8, ridge, build)  # type: ignore[arg-type]
    return levels, built


def test_the_duty_follows_busy_work_and_idle_time_by_hand() -> None:
    """A prefill of 0.1 s pulls D from 0 to 1 - e^-1 = 0.632 (level round(8 * 0.4) = 3);
    a decode run of 64 sequences (busy 0.64 at a ridge of 100 tokens) pulls it towards
    0.64, and carried on in a second piece it folds exactly as one piece would; idle time
    decays it; a repeated chunk counts its tokens per iteration."""
    levels, _ = _levels()
    clock = EngineClock(levels)
    assert clock.level_at(5.0) == 0  # never ran: the burst clock
    clock.ran(_run(0.0, 0.1, 2048))
    d1 = 1.0 - math.exp(-0.1 / TAU_S)
    assert clock.duty_at(0.1) == pytest.approx(d1)
    assert clock.level_at(0.1) == round(LEVELS * d1**EXPONENT) == 3
    clock.ran(_run(0.1, 0.3, 0, steps=10, decodes=64))
    assert clock.duty_at(0.3) == pytest.approx(0.64 + (d1 - 0.64) * math.exp(-2.0))
    clock.ran(_run(0.3, 0.5, 0, steps=10, decodes=64))  # the same run, carried on
    whole = EngineClock(levels)
    whole.ran(_run(0.0, 0.1, 2048))
    whole.ran(_run(0.1, 0.5, 0, steps=20, decodes=64))
    assert clock.duty_at(0.5) == whole.duty_at(0.5)  # bit for bit
    d2 = 0.64 + (d1 - 0.64) * math.exp(-4.0)
    assert clock.duty_at(0.8) == pytest.approx(d2 * math.exp(-3.0))
    assert clock.level_at(0.8) == 0
    clock.ran(_run(0.8, 0.9, 50, steps=4))  # 200 tokens in 4 iterations: busy 0.5
    assert clock.duty_at(0.9) == pytest.approx(0.5 + (d2 * math.exp(-3.0) - 0.5) * math.exp(-1.0))


def test_levels_keep_their_share_and_build_once() -> None:
    """Level 0 keeps the burst rate, level LEVELS is the base (sustained) model itself;
    each other level is built on first use and then reused."""
    levels, built = _levels()
    assert levels.keep(0) == 1.0 and levels.keep(LEVELS) == pytest.approx(0.8)
    assert levels.model(LEVELS) == ("model", "base") and not built
    assert levels.model(2) == ("model", pytest.approx(0.95))
    levels.model(2)
    assert built == [pytest.approx(0.95)]
    with pytest.raises(ValueError, match="sustained ratio in"):
        ClockLevels(("m",), 1.0, 100.0, lambda k: ("m",))  # type: ignore[arg-type]


def _ttfts(spec: DeploymentSpec, arrivals: list[float], prompt: int) -> np.ndarray:
    n = len(arrivals)
    req = RequestArrays.build(arrivals, [prompt] * n, [1] * n, models=(MODEL,))
    engine = build_engine(spec, "e0", req, RecordArrays.empty(n, ["e0"]), 0).engine
    drive(engine)
    assert isinstance(engine, ContinuousEngine)
    return np.asarray(engine.records.first_token_at)


def _spec(**engine: object) -> DeploymentSpec:
    return DeploymentSpec(model=MODEL, accelerator="H100-SXM", engine=engine)


def _at_keep(keep: float, **engine: object) -> DeploymentSpec:
    """The H100 spec priced at ``keep`` of the burst compute rate throughout."""
    return DeploymentSpec(
        model=MODEL, accelerator="H100-SXM", engine={"gpu_clock": "sustained", **engine},
        step_model={"params": {"sustained_compute_ratio": keep}},
    )  # fmt: skip


def test_a_lone_prompt_falls_from_the_burst_clock_within_itself_and_a_backlog_settles() -> None:
    """One prompt on an idle engine starts at the burst clock and runs at the level of the
    mean squared duty through it (its length at the burst clock): for a 4,096-token prompt
    (about 0.1 s, the clock's time constant) level 1 of 8, by hand. 12 prompts of 8,000
    tokens at once, one an iteration: the first slower than at the burst clock, the last at
    exactly the sustained model's iteration time; the decodes after them run at the burst
    clock."""
    ratio = default_roofline_params(get_accelerator("H100-SXM")).sustained_compute_ratio
    burst_s = _ttfts(_at_keep(1.0), [0.0], 4096)[0]
    level = round(LEVELS * mean_square_duty(0.0, 1.0, burst_s))
    assert level == 1
    lone = _ttfts(_spec(), [0.0], 4096)[0]
    assert lone == _ttfts(_at_keep(1.0 - (1.0 - ratio) * level / LEVELS), [0.0], 4096)[0]
    assert burst_s < lone < _ttfts(_spec(gpu_clock="sustained"), [0.0], 4096)[0] * 0.93

    arrivals, one = [0.0] * 12, {"max_num_batched_tokens": 8000}
    duty = np.diff(_ttfts(_spec(**one), arrivals, 8000), prepend=0.0)
    held = np.diff(_ttfts(_spec(gpu_clock="sustained", **one), arrivals, 8000), prepend=0.0)
    fast = np.diff(_ttfts(_at_keep(1.0, **one), arrivals, 8000), prepend=0.0)
    assert fast[0] < duty[0] < held[0]
    assert duty[-1] == pytest.approx(held[-1], rel=1e-12)
    assert np.all(np.diff(duty) >= -1e-12)  # the clock only falls while prompts run

    def finish(spec: DeploymentSpec) -> float:
        req = RequestArrays.build([0.0], [4096], [200], models=(MODEL,))
        engine = build_engine(spec, "e0", req, RecordArrays.empty(1, ["e0"]), 0).engine
        drive(engine)
        assert isinstance(engine, ContinuousEngine)
        return float(engine.records.finished_at[0] - engine.records.first_token_at[0])

    assert finish(_spec()) == pytest.approx(finish(_at_keep(1.0)), rel=1e-12)


def test_the_mean_squared_duty_through_a_piece_of_work() -> None:
    """The closed form against the mean of ``D(t) ** 2`` sampled through the piece."""
    for d0, share, seconds in (
        (0.0, 1.0, 0.228),
        (0.5, 1.0, 0.05),
        (1.0, 0.2, 0.3),
        (0.3, 0.3, 1.0),
    ):
        t = np.linspace(0.0, seconds, 200_001)
        d = share + (d0 - share) * np.exp(-t / TAU_S)
        sampled = float(np.trapezoid(d**2, t) / seconds)
        assert mean_square_duty(d0, share, seconds) == pytest.approx(sampled, rel=1e-9)
    assert mean_square_duty(0.7, 1.0, 0.0) == pytest.approx(0.49)


def test_where_the_clock_is_held() -> None:
    """No levels for a GPU without a measured ratio (A100: 1), for ``gpu_clock:
    sustained``, or for a step model other than the roofline; an H100 has them, with its
    ridge (bf16 peak over HBM bandwidth) and ratio."""

    def levels(spec: DeploymentSpec) -> ClockLevels | None:
        dep = deployment_of(spec, MODEL, "t")
        return clock_levels_of(spec, dep, step_model_of(spec, dep, "t"), "t")

    h100 = levels(_spec())
    assert h100 is not None
    assert h100.ratio == pytest.approx(0.878) and h100.ridge_tokens == pytest.approx(
        989 / 3.35, rel=0.02
    )
    assert levels(DeploymentSpec(model=MODEL, accelerator="A100-80GB")) is None
    assert levels(_spec(gpu_clock="sustained")) is None
    set_ratio = {"params": {"sustained_compute_ratio": 0.9}}
    a100 = levels(DeploymentSpec(model=MODEL, accelerator="A100-80GB", step_model=set_ratio))
    assert a100 is not None and a100.ratio == pytest.approx(0.9)  # a set ratio: the clock too
    fit = {"alpha_ms": 5.0, "beta_ms": 0.1, "gamma_ms": 10.0, "delta_ms": 0.05}
    inferno = DeploymentSpec(
        model=MODEL, accelerator="H100-SXM", step_model={"kind": "inferno", "params": fit}
    )
    assert levels(inferno) is None  # not the roofline


@pytest.mark.parametrize("exact", [False, True])
def test_repeated_chunks_price_as_single_iterations(exact: bool) -> None:
    """A 30,000-token prompt at 2,048 tokens an iteration beside running decodes, on an
    H100: one piece of repeated chunks (each iteration at the level its start finds) gives
    exactly the records of one piece per iteration (``exact_loads``), and its later chunks
    run slower than its first as the clock falls."""
    arrivals, prompts, outputs = [0.0, 0.0, 0.05], [300, 500, 30_000], [400, 300, 5]
    req = RequestArrays.build(arrivals, prompts, outputs, models=("llama-3.1-8b",))
    spec = DeploymentSpec(
        model="llama-3.1-8b", accelerator="H100-SXM", engine={"max_num_batched_tokens": 2048}
    )

    def records(exact_loads: bool) -> RecordArrays:
        built = build_engine(spec, "e0", req, RecordArrays.empty(3, ["e0"]), 0)
        engine = built.engine
        assert isinstance(engine, ContinuousEngine) and engine.clock is not None
        engine.configure(exact_loads=exact_loads)
        drive(engine)
        return engine.records

    pieces, one_each = records(exact), records(True)
    for col in ("first_token_at", "finished_at", "output_tokens"):
        np.testing.assert_array_equal(getattr(pieces, col), getattr(one_each, col))
    sustained = DeploymentSpec(
        model="llama-3.1-8b", accelerator="H100-SXM",
        engine={"max_num_batched_tokens": 2048, "gpu_clock": "sustained"},
    )  # fmt: skip
    held = build_engine(sustained, "e0", req, RecordArrays.empty(3, ["e0"]), 0).engine
    drive(held)
    assert pieces.first_token_at[2] < held.records.first_token_at[2]
