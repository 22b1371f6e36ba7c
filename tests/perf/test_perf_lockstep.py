"""Iterations of attention ranks stepping together (sincere.perf.lockstep), by hand on a toy
split step and against the roofline's parts."""

from __future__ import annotations

import pytest

from sincere.catalog import get_accelerator, get_model
from sincere.core.errors import ConfigError
from sincere.perf.base import Batch, Deployment, StepParts, StepTimeBase
from sincere.perf.execution import PRESETS, ExecutedStepModel, ExecutionParams, with_execution
from sincere.perf.lockstep import LockstepTiming
from sincere.perf.roofline import Roofline
from sincere.perf.speculation import SpeculationParams, SpeculativeDecode, SpeculativeStepModel

MS = 1e-3


class Split(StepTimeBase):
    """One rank of a group of ``ranks``: dense work 1 ms + 10 µs a token; the experts 50 µs
    per token of the group, priced as ``ranks`` times this rank's tokens (as the roofline's
    attention DP does); ``cpu`` seconds of CPU an iteration."""

    def __init__(self, ranks: int = 2, cpu: float = 0.0) -> None:
        super().__init__()
        self.ranks = ranks
        self.cpu = cpu

    def parts(self, batch: Batch) -> StepParts:
        n = batch.num_tokens
        if n == 0:
            return StepParts()
        return StepParts(
            linear_s=1 * MS + 0.01 * MS * n,
            experts_s=0.05 * MS * self.ranks * n,
            overhead_s=self.cpu,
        )

    def iteration_s(self, batch: Batch) -> float:
        return self.parts(batch).total_s

    def cpu_step_s(self, num_seqs: int) -> float:
        return self.cpu


PREFILL = Batch(1, 100, 0, 5050.0, 0, 0)  # a 100-token prompt
DECODE_10 = Batch(num_decode_seqs=10, decode_ctx_tokens=1000)
DECODE_3 = Batch(num_decode_seqs=3, decode_ctx_tokens=300)
DECODE_20 = Batch(num_decode_seqs=20, decode_ctx_tokens=2000)


def _graphed(model: Split, asynchronous: bool = False) -> ExecutedStepModel:
    params = ExecutionParams(
        name="t", graph_mode="full_and_piecewise", graph_sizes=(8, 16),
        async_scheduling=asynchronous,
    )  # fmt: skip
    return ExecutedStepModel(model, params)


def test_unpadded_ranks_share_the_experts_of_their_summed_tokens() -> None:
    """No graphs: each rank runs its own tokens (dense 2 ms for the prompt, 1.1 ms for the
    decodes), the experts the group's 110 tokens (55 a rank, 5.5 ms): 2 + 5.5 ms. A rank
    working alone: its experts see its own 100 tokens (7 ms), not the 200 that the
    symmetric model prices (12 ms)."""
    timing = LockstepTiming(Split(), 2)
    assert timing.iteration_s([PREFILL, DECODE_10]) == pytest.approx(7.5 * MS)
    assert timing.iteration_s([PREFILL, Batch()]) == pytest.approx(7.0 * MS)
    assert Split().iteration_s(PREFILL) == pytest.approx(12.0 * MS)
    assert timing.iteration_s([Batch(), Batch()]) == 0.0


def test_graphed_ranks_pad_to_the_largest_captured_size() -> None:
    """Decodes of 3 and 10 (graphed at 8 and 16): both ranks run 16 tokens (1.16 ms dense)
    and the experts see 2 x 16 (1.6 ms). A rank of 20 sequences runs eagerly, so nobody
    pads: dense 1.2 ms, experts of ceil(23 / 2) = 12 a rank (1.2 ms)."""
    timing = LockstepTiming(_graphed(Split()), 2)
    assert timing.iteration_s([DECODE_3, DECODE_10]) == pytest.approx(2.76 * MS)
    assert timing.iteration_s([DECODE_3, Batch()]) == pytest.approx(1.08 * MS + 0.8 * MS)
    assert timing.iteration_s([DECODE_3, DECODE_20]) == pytest.approx(2.4 * MS)


@pytest.mark.parametrize(("asynchronous", "expected_ms"), [(False, 5.76), (True, 3.0)])
def test_each_rank_hides_its_cpu_as_its_execution_model_says(
    asynchronous: bool, expected_ms: float
) -> None:
    """3 ms of CPU a rank beside 2.76 ms on the GPU: in series 5.76 ms; scheduled
    asynchronously the CPU is the longer part, 3 ms."""
    timing = LockstepTiming(_graphed(Split(cpu=3 * MS), asynchronous), 2)
    assert timing.iteration_s([DECODE_3, DECODE_10]) == pytest.approx(expected_ms * MS)


def test_a_time_scale_multiplies_the_group_iteration() -> None:
    timing = LockstepTiming(Split(), 2, factor=0.5)
    assert timing.iteration_s([PREFILL, DECODE_10]) == pytest.approx(3.75 * MS)


def test_a_model_without_parts_is_refused() -> None:
    class Whole(StepTimeBase):
        def iteration_s(self, batch: Batch) -> float:
            return MS

    with pytest.raises(ConfigError, match="roofline") as err:
        LockstepTiming(Whole(), 2)
    assert "Whole" in str(err.value)
    with pytest.raises(ConfigError, match="at least one rank"):
        LockstepTiming(Split(), 0)


def test_on_the_roofline_a_busy_rank_alone_costs_its_own_experts() -> None:
    """Qwen3-30B-A3B on two H100s (EP 2, attention DP 2), a 2,048-token chunk on one rank
    with the other idle: the group's iteration is the rank's symmetric time less the experts
    and exchange of the idle rank's share (what the symmetric model prices: every rank a
    2,048-token chunk). Two equal batches under no graphs cost the symmetric time."""
    dep = Deployment(get_model("qwen3-30b-a3b"), get_accelerator("H100-SXM"), ep=2, attention_dp=2)
    roof = Roofline(dep)
    step = with_execution(roof, ExecutionParams(name="t"), 256)  # eager: no graphs
    chunk = Batch(1, 2048, 0, 2048 * 2049 / 2.0, 0, 0)
    timing = LockstepTiming(step, 2)
    symmetric = roof.parts(chunk)
    half = roof.parts(Batch(num_decode_seqs=1024, decode_ctx_tokens=0))
    alone = (
        symmetric.total_s
        - (symmetric.experts_s + symmetric.all_to_all_s)
        + (half.experts_s + half.all_to_all_s)
    )
    assert timing.iteration_s([chunk, Batch()]) == pytest.approx(alone)
    assert timing.iteration_s([chunk, Batch()]) < roof.iteration_s(chunk)
    assert timing.iteration_s([chunk, chunk]) == pytest.approx(roof.iteration_s(chunk))


def test_speculating_ranks_take_the_slowest_ranks_speculative_step() -> None:
    """Ranks that speculate (EAGLE, 2 drafts): the group's iteration is the slowest rank's
    own speculative step (drafts and verify, or a chunk beside them), as its speculating
    step model prices it; an idle rank adds nothing; a time scale multiplies it."""
    dep = Deployment(get_model("qwen3-30b-a3b"), get_accelerator("H100-SXM"), ep=2, attention_dp=2)
    step = with_execution(Roofline(dep), PRESETS["vllm-v1"], 256)
    params = SpeculationParams("eagle", 2, (0.7,))
    spec = SpeculativeStepModel(SpeculativeDecode(step, params, dep.model.num_layers))
    timing = LockstepTiming(spec, 2)
    mixed = Batch(1, 512, 0, 512 * 513 / 2.0, 10, 1000)
    assert timing.iteration_s([DECODE_10, DECODE_3]) == pytest.approx(
        max(spec.iteration_s(DECODE_10), spec.iteration_s(DECODE_3))
    )
    assert timing.iteration_s([DECODE_3, mixed]) == pytest.approx(spec.iteration_s(mixed))
    assert timing.iteration_s([Batch(), DECODE_3]) == pytest.approx(spec.iteration_s(DECODE_3))
    assert spec.iteration_s(DECODE_10) > step.iteration_s(DECODE_10)  # drafts and verify
    scaled = LockstepTiming(spec, 2, factor=0.5)
    assert scaled.iteration_s([DECODE_10]) == pytest.approx(0.5 * spec.iteration_s(DECODE_10))
