"""The GPU's clock under an engine's recent work: how much of its compute rate it keeps.

An H100 or H200 lowers its SM clock to stay within its 700 W limit once compute-bound
kernels run back to back; the step model's ``sustained_compute_ratio`` is the share of
the kernel benchmark's compute rate kept then (:mod:`sincere.perf.calibration`). A
serving engine alternates compute-bound iterations (prefills, mixed iterations) with
memory-bound decodes, and the clock follows that mix with a lag. Measured on whole
iterations of a Llama-3.1-8B shard on an H100 and an H200 (``benchmarks/gpu_clock.py``,
docs/perf.md "Compute under sustained load"):

- a prefill after an idle pause runs at the burst clock; prefills back to back fall to
  the sustained rate within about 0.3 s;
- a prefill between ``k`` decodes keeps far more than the sustained rate: at a compute
  share of 0.5 it loses a quarter of what back-to-back prefills lose, at 0.3 a tenth;
- once prefills stop, the clock is back within about 0.1 s of decodes.

Model. ``D`` is the recent compute duty: each piece of work pulls it towards its busy
share ``b`` with weight ``1 - exp(-duration / TAU_S)``, and idle time decays it towards
0. ``b`` is an iteration's tokens over the GPU's ridge (dense peak FLOP/s over HBM
bytes/s: the tokens at which a 16-bit GEMM turns compute-bound), at most 1. The compute
terms then run at ``1 - (1 - r) * D ** EXPONENT`` of the burst rate, ``r`` the GPU's
sustained ratio. Fitted on both GPUs' patterns (burst, back-to-back, prefills among 1-63
decodes, recovery), the same two constants reproduce every prefill within about 2 % mean
error, bias under 1 % (a constant ratio: 8 % too slow among decodes).

The kept share is quantised to :data:`LEVELS` steps from ``r`` to 1; each level is a
step model of the deployment built once, on first use, and shared by the replicas of a
spec (:class:`ClockLevels`). Each prefill or mixed iteration runs at the level of the mean
of ``D ** 2`` through itself (:func:`mean_square_duty`; its length at the level its start
finds): a prefill as long as ``TAU_S`` slows within itself, as measured (a lone 8,192-token
prefill of the 8B on an idle H100, 228 ms, ran only 3.5-5.5 % faster than back to back).
A run of repeated chunks is priced iteration by iteration. ``r`` is fitted on whole
prefills of four shards (``benchmarks/gpu_clock.py depth``). Decode runs are
priced at the burst clock: they are memory-bound, and they run when no prompt is waiting,
the stretches in which the clock comes back (a decode of 256 sequences back to back kept
0.98-1.00 of its burst rate). So a closed-form decode run stays one step model's exact
answer, and work cut into single iterations (a router reading the engines between any
two) gives the same times and the same duty as work in longer pieces.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from sincere.engine.runs import IterationTime, Run, RunPlanner
from sincere.perf.base import StepTimeModel

TAU_S = 0.1  # seconds over which the clock follows the compute duty
EXPONENT = 2.0  # the kept share falls with the duty squared (mean_square_duty's power)
LEVELS = 8  # steps of the kept share between the sustained ratio and 1


def mean_square_duty(d0: float, share: float, seconds: float, tau: float = TAU_S) -> float:
    """The mean of ``D ** 2`` over a piece of work of ``seconds`` at busy share ``share``
    that starts at duty ``d0`` (``D`` moves from ``d0`` towards ``share`` with the time
    constant ``tau``): how far the clock falls through the piece, in closed form."""
    x = seconds / tau
    if x < 1e-9:
        return d0 * d0
    a = d0 - share
    e1 = -math.expm1(-x) / x
    e2 = -math.expm1(-2.0 * x) / (2.0 * x)
    return share * share + 2.0 * a * share * e1 + a * a * e2


def level_of(mean_square: float) -> int:
    """The level (0 to :data:`LEVELS`) of a mean squared duty."""
    return round(LEVELS * mean_square)


class ClockLevels:
    """One deployment's step models at each level of kept compute rate (module docstring).

    Level ``LEVELS`` is ``base`` itself, at the sustained ratio ``ratio``; level 0 is the
    burst clock. ``build(keep)`` makes the model whose compute keeps ``keep``.
    """

    def __init__(
        self,
        base: StepTimeModel,
        ratio: float,
        ridge_tokens: float,
        build: Callable[[float], StepTimeModel],
    ) -> None:
        if not 0.0 < ratio < 1.0:
            raise ValueError(f"a clock needs a sustained ratio in (0, 1), got {ratio}")
        self.ratio = ratio
        self.ridge_tokens = ridge_tokens
        self._build = build
        self._models: list[StepTimeModel | None] = [None] * LEVELS + [base]

    def keep(self, level: int) -> float:
        """The share of the burst compute rate kept at ``level``."""
        return 1.0 - (1.0 - self.ratio) * level / LEVELS

    def model(self, level: int) -> StepTimeModel:
        """The step model at ``level`` (built on first use)."""
        model = self._models[level]
        if model is None:
            model = self._models[level] = self._build(self.keep(level))
        return model


class EngineClock:
    """One engine's clock state over :class:`ClockLevels` (module docstring).

    The duty is kept as a segment of constant busy share in progress (its start, end, share
    and the duty it began with) over the duty folded before it. A decode run that carries on
    the one before it (no pause, the same sequences) extends the segment instead of
    starting one, so a decode run cut into single iterations (a router reading the engines
    between any two) folds into exactly the same duty as the run in one piece.
    """

    __slots__ = (
        "_at",
        "_begin",
        "_d0",
        "_decodes",
        "_end",
        "_levels",
        "_ridge",
        "_share",
        "_tuned",
    )

    def __init__(self, levels: ClockLevels) -> None:
        self._levels = levels
        self._ridge = levels.ridge_tokens
        self._d0 = 0.0  # the duty when the segment began
        self._begin = self._end = 0.0  # the segment's span (none yet: empty)
        self._share = 0.0  # its busy share
        self._decodes = -1  # its decode sequences if a decode run, else -1
        self._at = 0.0  # the duty where the work being planned starts
        self._tuned = False  # whether the planner prices prefills by this clock yet

    def duty_at(self, now: float) -> float:
        """D at ``now`` (at or after the last piece of work's end)."""
        w = math.exp(-(self._end - self._begin) / TAU_S)
        d = self._share + (self._d0 - self._share) * w
        return d * math.exp(-max(0.0, now - self._end) / TAU_S)

    def level_at(self, now: float) -> int:
        """The level at ``now``: where a prefill starting then begins, before its own
        length counts (:meth:`iteration_s`)."""
        d = self.duty_at(now)
        return level_of(d * d)

    def model(self, level: int) -> StepTimeModel:
        """The step model of ``level``."""
        return self._levels.model(level)

    def tune(self, planner: RunPlanner, now: float) -> None:
        """Have ``planner`` price the prefill work starting at ``now`` by this clock (the
        engine's planner calls it first thing when it plans a piece of work)."""
        self._at = self.duty_at(now)
        if not self._tuned:
            self._tuned = True
            planner.price_prefills(self.iteration_s, self.chunk_pricer)

    def iteration_s(
        self, seqs: int, tokens: int, cached: int, pairs: float, num_decode: int, ctx: int
    ) -> float:
        """One prefill or mixed iteration starting where :meth:`tune` (or a chunk pricer)
        left the duty: priced at the level of the mean squared duty through the iteration,
        its length taken at the level its start finds (a long prefill after a pause falls
        from the burst clock within itself)."""
        d0 = self._at
        levels = self._levels
        start = level_of(d0 * d0)
        t = levels.model(start).iteration_s_fast(seqs, tokens, cached, pairs, num_decode, ctx)
        share = min(1.0, (tokens + num_decode) / self._ridge)
        level = level_of(mean_square_duty(d0, share, t))
        if level == start:
            return t
        return levels.model(level).iteration_s_fast(seqs, tokens, cached, pairs, num_decode, ctx)

    def share(self, tokens: float) -> float:
        """The busy share of an iteration of ``tokens`` tokens."""
        return min(1.0, tokens / self._ridge)

    def ran(self, run: Run) -> None:
        """Account a finished piece of work: the pause before it, then its busy share
        (a prefill piece iteration by iteration, as if each were its own piece)."""
        if not run.chunks:
            n = run.num_decode
            if n == self._decodes and run.start_at == self._end:
                self._end = run.end_at  # the same decode run, carried on
                return
            self._begin_segment(run.start_at, run.end_at, self.share(n), n)
            return
        share = self.share(run.num_decode + run.prefill_tokens / max(1, run.steps))
        at = run.start_at
        for dur in run.durations:
            end = at + dur
            self._begin_segment(at, end, share, -1)
            at = end

    def chunk_pricer(self, tokens: float) -> Callable[[float], IterationTime]:
        """For a run of repeated prefill iterations of ``tokens`` tokens each: called with
        each iteration's start, in turn, the iteration time of the level it starts at, the
        duty carried from one to the next as :meth:`ran` will fold it (so the run prices
        as its iterations would one piece each)."""
        probe = EngineClock(self._levels)
        probe._d0, probe._share = self._d0, self._share
        probe._begin, probe._end, probe._decodes = self._begin, self._end, self._decodes
        share = self.share(tokens)
        last: list[float] = []

        def price(at: float) -> IterationTime:
            if last:
                probe._begin_segment(last[0], at, share, -1)
                last[0] = at
            else:
                last.append(at)
            probe._at = probe.duty_at(at)
            return probe.iteration_s

        return price

    def _begin_segment(self, begin: float, end: float, share: float, decodes: int) -> None:
        self._d0 = self.duty_at(begin)
        self._share = share
        self._begin, self._end, self._decodes = begin, end, decodes
