"""The engines' front end in a simulated run: client times from engine times.

An engine preset's :class:`~sincere.perf.execution.FrontEnd` is what a client sees beyond
the engine: the intake (HTTP hop, parsing, tokenisation) before a request reaches the
engine's queue, and the output delay (detokenisation, streaming) between the engine's token
and the client's. The run itself works on the engine's clock:

* **open loop**: a request sent at ``arrival_at`` reaches the engine at
  ``arrival_at + intake``; the front end takes requests in order (one API process), so a
  request never overtakes the one sent before it;
* **closed loop**: each client's first request reaches the engine after its intake, and a
  client's next request after the last one's output delay, the think time and the next
  request's intake;
* with ``intake_servers`` (the API processes), a request's intake starts when a process is
  free, the requests taken in the order sent (a closed loop's sends go on the loop's event
  queue and through a process as they are taken: ``sincere.sim.runner``), and none reaches
  the engine before the one sent before it: a wave of requests sent together waits in line,
  as it does in front of one API process.

After the run, :func:`to_client_times` puts every figure on the client's clock: the send
time as the arrival, the first token and the finish each ``output_s`` later; with
``first_chunk_tokens`` ``k > 1`` the client's first token is the engine's ``k``-th
(:func:`first_chunk_at`). TTFT, ITL-based
TPOT and end-to-end latency are then what ``sincere bench`` or vLLM's benchmark measure.
All instances of a run share the front end (the first instance's; a different one on
another instance is refused); a request goes through it before it is routed, so the
instances' API processes are one pool (:func:`front_end_of`).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import numpy.typing as npt

from sincere.core.errors import ConfigError
from sincere.core.records import RecordArrays
from sincere.core.request import RequestArrays
from sincere.engine.spec import ContinuousConfig
from sincere.perf.execution import FrontEnd, IntakeQueue
from sincere.sim.config import SimulationConfig

FloatArray = npt.NDArray[np.float64]


def intake_s(requests: RequestArrays, front: FrontEnd) -> FloatArray:
    """Each request's time from its send to the engine's queue."""
    return front.request_s + front.prompt_token_s * requests.prompt_tokens.astype(np.float64)


def engine_arrivals(requests: RequestArrays, front: FrontEnd) -> RequestArrays:
    """``requests`` as the engines see them: each arrival after its intake, in order (with
    ``intake_servers``, after its turn on the API processes as well)."""
    if front.is_zero or len(requests) == 0:
        return requests
    intake = intake_s(requests, front)
    sent = requests.arrival_at
    if front.intake_servers == 1:
        # one process: done_i = max(sent_i, done_(i-1)) + intake_i, which unrolls to the
        # intakes' running sum plus the running maximum of each send less the sum before it
        total = np.cumsum(intake)
        at = total + np.maximum.accumulate(sent - (total - intake))
    elif front.intake_servers > 1:
        queue = IntakeQueue(front)
        tokens = requests.prompt_tokens.tolist()
        at = np.fromiter(map(queue.done_at, sent.tolist(), tokens), np.float64, len(tokens))
    else:
        at = np.maximum.accumulate(sent + intake)
    return dataclasses.replace(requests, arrival_at=at)


def closed_loop_delays(
    requests: RequestArrays, front: FrontEnd, concurrency: int, think_s: list[float]
) -> tuple[list[float], list[float]]:
    """A closed loop's first arrivals and think times on the engine's clock.

    The ``j``-th request to end frees a client whose next request is the ``C + j``-th sent:
    its think time grows by the output delay and that request's intake.
    """
    intake = intake_s(requests, front)
    n = len(requests)
    first = [float(intake[i]) for i in range(min(concurrency, n))]
    thinks = [
        t + front.output_s + (float(intake[concurrency + j]) if concurrency + j < n else 0.0)
        for j, t in enumerate(think_s)
    ]
    return first, thinks


def to_client_times(
    requests: RequestArrays, records: RecordArrays, front: FrontEnd, sent: FloatArray | None
) -> None:
    """Put ``requests`` and ``records`` on the client's clock in place (module docstring).

    ``sent``: the requests' send times when known (open loop, or a closed loop through API
    processes, which writes them down); None for a closed loop without, whose sends are the
    run's engine arrivals less each intake.
    """
    if front.is_zero:
        return
    if sent is None:
        sent = requests.arrival_at - intake_s(requests, front)
    requests.arrival_at[:] = sent
    if front.first_chunk_tokens > 1:
        records.first_token_at[:] = first_chunk_at(records, front.first_chunk_tokens)
    records.first_token_at[:] = records.first_token_at + front.output_s
    records.finished_at[:] = records.finished_at + front.output_s


def first_chunk_at(records: RecordArrays, tokens: int) -> FloatArray:
    """When each request's engine made its ``tokens``-th token (its last when it made fewer):
    its first token plus ``tokens - 1`` of its own mean gaps between tokens, the gaps taken
    even (the run records each request's first and last token, not the ones between).
    Unfinished requests keep their first token's time."""
    first, done = records.first_token_at, records.finished_at
    made = records.output_tokens.astype(np.float64)
    share = np.where(made > 1, (np.minimum(tokens, made) - 1) / np.maximum(made - 1, 1), 0.0)
    later = first + share * (done - first)
    out: FloatArray = np.where(np.isfinite(done), later, first)
    return out


def front_end_of(config: SimulationConfig) -> FrontEnd:
    """The front end of a run's instances (they must agree; request-level engines have none).

    Each instance's server brings its own API processes, and the run takes every request
    through one pool of them before routing it (module docstring): ``intake_servers`` is
    the instances' sum (each group's ``count`` times its own), so a fleet's front ends do
    not become one line. A pooled line waits a little less than separate ones would when
    the router spreads the requests unevenly."""
    continuous = [inst for inst in config.instances if isinstance(inst.engine, ContinuousConfig)]
    fronts = [inst.front_end() for inst in continuous]
    if not fronts:
        return FrontEnd()
    first = fronts[0]
    for pos, other in enumerate(fronts[1:], start=1):
        if other != first:
            raise ConfigError(
                "instances of one run must share their engines' front end (engine preset "
                "or execution.frontend)",
                where=f"instances[{pos}].engine",
                value=dataclasses.asdict(other),
                allowed=dataclasses.asdict(first),
            )
    if not first.intake_servers:
        return first
    pooled = first.intake_servers * sum(inst.count for inst in continuous)
    return dataclasses.replace(first, intake_servers=pooled)
