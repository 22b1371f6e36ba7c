"""Queueing theory checks of the whole loop: Pollaczek-Khinchine and Little's law."""

from __future__ import annotations

import numpy as np
import pytest

from sincere.core.records import RecordArrays, latencies
from sincere.core.request import RequestArrays
from sincere.engine.continuous import ContinuousEngine, EngineLimits
from sincere.engine.instance import InstanceInfo
from sincere.perf.base import Batch, StepTimeBase
from sincere.policy.schedulers import make_scheduler
from sincere.sim.cluster import Cluster
from sincere.sim.runner import RunLog, run_events


class Affine(StepTimeBase):
    """5 ms per iteration + 0.1 ms per prompt token + 0.2 ms per decode + ctx term."""

    def iteration_s(self, batch: Batch) -> float:
        return (
            0.005
            + 1e-4 * batch.prefill_tokens
            + 2e-4 * batch.num_decode_seqs
            + 1e-8 * batch.decode_ctx_tokens
        )


def run_single(
    req: RequestArrays, max_num_seqs: int, scheduler: str = "fcfs"
) -> tuple[RecordArrays, RunLog]:
    """One engine behind a cluster, driven by the simulator's event loop."""
    records = RecordArrays.empty(len(req), ["e0"])
    limits = EngineLimits(num_kv_blocks=1 << 20, max_num_seqs=max_num_seqs)
    engine = ContinuousEngine("e0", req, records, 0, Affine(), make_scheduler(scheduler), limits)
    info = InstanceInfo("e0", ("default",), "x", num_gpus=1, gpu_price_per_hour_usd=1.0)
    cluster = Cluster(req, records, [engine], [info], None, req.max_tokens.copy())
    return records, run_events(cluster)


def service_times(req: RequestArrays) -> np.ndarray:
    """Exact service time of each request alone on the engine (one prefill chunk)."""
    model = Affine()
    out = np.empty(len(req))
    for i, (p, n) in enumerate(
        zip(req.prompt_tokens.tolist(), req.output_tokens.tolist(), strict=True)
    ):
        prefill = model.iteration_s(Batch.of([(p, 0)]))
        out[i] = prefill + model.decode_steps_s(1, p + 1, n - 1)
    return out


def lindley_waits(arrival: np.ndarray, service: np.ndarray) -> np.ndarray:
    """Waits of a FIFO single server: W[k+1] = max(0, W[k] + S[k] - (A[k+1] - A[k]))."""
    waits = np.zeros(len(arrival))
    gaps = np.diff(arrival).tolist()
    s = service.tolist()
    w = 0.0
    for k, gap in enumerate(gaps):
        w = max(0.0, w + s[k] - gap)
        waits[k + 1] = w
    return waits


def test_mg1_mean_wait_matches_pollaczek_khinchine() -> None:
    """max_num_seqs=1, Poisson arrivals: mean queueing delay = λE[S²]/(2(1-ρ)) within 3 %."""
    rng = np.random.default_rng(0)
    n, rate = 100_000, 1.5
    prompts = rng.integers(1, 500, n)  # one prefill chunk each
    outs = rng.integers(1, 120, n)  # any service distribution: here uniform decodes
    req = RequestArrays.build(np.cumsum(rng.exponential(1 / rate, n)), prompts, outs)
    s = service_times(req)
    rho = rate * s.mean()
    assert 0.45 < rho < 0.55
    expected = rate * np.mean(s**2) / (2 * (1 - rho))
    records, _ = run_single(req, max_num_seqs=1)
    queue = latencies(req, records)["queue_s"]
    assert float(np.mean(queue)) == pytest.approx(expected, rel=0.03)
    # stronger: every wait is the FIFO single-server (Lindley) wait, and every
    # request's time in service is exactly its service time
    np.testing.assert_allclose(queue, lindley_waits(req.arrival_at, s), rtol=1e-9, atol=1e-8)
    np.testing.assert_allclose(
        records.finished_at - records.first_scheduled_at, s, rtol=1e-9, atol=1e-8
    )


@pytest.mark.parametrize("scheduler", ["fcfs", "sarathi", "srpf"])
def test_littles_law_holds_for_the_tracked_occupancy(scheduler: str) -> None:
    """Time-average requests in system (tracked by the loop) = λ · mean time in system."""
    rng = np.random.default_rng(11)
    n = 4000
    req = RequestArrays.build(
        np.cumsum(rng.exponential(1 / 12.0, n)), rng.integers(1, 2000, n), rng.integers(1, 300, n)
    )
    records, log = run_single(req, max_num_seqs=48, scheduler=scheduler)
    e2e = latencies(req, records)["e2e_s"]
    assert log.num_unfinished == 0
    throughput = n / log.end_at
    assert log.num_in_system_area / log.end_at == pytest.approx(throughput * e2e.mean(), rel=1e-9)
    assert log.num_in_system_area / log.end_at > 1.0  # a loaded system, not a trivial one
