"""An engine's execution settings: the named presets, their fields and how a config
overrides them (:class:`ExecutionParams`, :class:`FrontEnd`, :func:`execution_params`).

What the settings mean, and the model that applies them to a step-time model's iterations,
are :mod:`sincere.perf.execution`'s. The two live apart so that the model can be compiled
with the simulator's hot modules (:mod:`sincere.native`) while the settings stay plain
Python: their checks raise :class:`~sincere.core.errors.ConfigError` naming the setting,
the value and what is allowed, where a compiled frozen class would stop at its own type
check first.
"""

from __future__ import annotations

import dataclasses
import heapq
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from sincere.core.errors import ConfigError
from sincere.core.types import Seconds

GRAPH_MODES = ("full_and_piecewise", "full_decode_only", "piecewise", "none")
"""``full_and_piecewise``: full graphs for decode-only iterations, piecewise (padded in
tokens) for mixed ones (vLLM V1's default); ``full_decode_only``: graphs for decode-only
iterations, mixed ones eager (SGLang, TensorRT-LLM); ``piecewise``: every iteration up
to the largest size padded in tokens; ``none``: eager (``enforce_eager``)."""


def _check_whole(name: str, value: object, unit: str, least: int, allowed: str) -> None:
    """Refuse ``value`` unless it is a whole number (not a bool) of at least ``least``."""
    if isinstance(value, bool) or not (isinstance(value, int) and value >= least):
        raise ConfigError(
            f"{name} must be a whole number of {unit} >= {least}", value=value, allowed=allowed
        )


@dataclass(frozen=True)
class FrontEnd:
    """The time a client sees beyond the engine, per request and per output token.

    ``first_chunk_tokens``: tokens a request's first streamed chunk holds. SGLang 0.5 streams
    a request's output when its token count is a multiple of ``--stream-interval``, so with
    an interval of ``k`` the client's first token arrives with the engine's ``k``-th (with
    the last, for a shorter answer); TensorRT-LLM 1.1-1.2 behaves so with its
    ``stream_interval`` in InferenceX's measurements. vLLM sends the first token at once
    whatever its stream interval: 1 here.

    ``intake_servers``: the API processes that work a request's intake, each one request
    at a time in the order they were sent (vLLM's ``--api-server-count``): a request sent
    while they are all busy waits its turn (:class:`IntakeQueue`). 0: every request's
    intake runs at once, however many are sent together."""

    request_s: float = 0.0  # HTTP hop, parsing and the hand-over to the engine
    prompt_token_s: float = 0.0  # tokenisation, per prompt token
    output_s: float = 0.0  # detokenise and stream one token to the client
    first_chunk_tokens: int = 1  # the client's first token is the engine's k-th
    intake_servers: int = 0  # processes taking requests' intake one at a time (0: no queue)

    def __post_init__(self) -> None:
        for name in ("request_s", "prompt_token_s", "output_s"):
            value = getattr(self, name)
            if not value >= 0.0:
                raise ConfigError(
                    f"front-end time {name} must be a non-negative number of seconds",
                    value=value,
                    allowed=">= 0",
                )
        _check_whole(
            "front-end first_chunk_tokens",
            self.first_chunk_tokens,
            "tokens",
            1,
            "1 (every token streamed as made), SGLang's --stream-interval",
        )
        _check_whole(
            "front-end intake_servers",
            self.intake_servers,
            "processes",
            0,
            "0 (every intake at once) or the API processes working them one at a time",
        )

    @property
    def is_zero(self) -> bool:
        """No front end: the client sees the engine's times."""
        return (
            self.request_s == 0.0
            and self.prompt_token_s == 0.0
            and self.output_s == 0.0
            and self.first_chunk_tokens == 1
        )

    def intake_s(self, prompt_tokens: int) -> float:
        """From the client's send to the engine's queue."""
        return self.request_s + self.prompt_token_s * prompt_tokens

    def scaled(self, factor: float) -> FrontEnd:
        """These times multiplied by ``factor`` (a time-compressed replay's clock); the
        first chunk's size is a count and stays."""
        if factor == 1.0:
            return self
        return dataclasses.replace(
            self,
            request_s=self.request_s * factor,
            prompt_token_s=self.prompt_token_s * factor,
            output_s=self.output_s * factor,
        )


class IntakeQueue:
    """A front end's intake as its API processes work it (:class:`FrontEnd`): each request
    in the order sent, on the first process free, for ``request_s + prompt_token_s x
    prompt tokens``; without processes (``intake_servers`` 0) every request at once. Either
    way a request never reaches the engine before the one sent before it."""

    def __init__(self, front: FrontEnd) -> None:
        self.front = front
        self._free = [-math.inf] * front.intake_servers  # a heap: when each process is free
        self._last = -math.inf  # when the request sent last reaches the engine

    def done_at(self, sent: float, prompt_tokens: int) -> float:
        """When a request of ``prompt_tokens`` sent at ``sent`` reaches the engine (this
        books its process: one call per request, in the order sent)."""
        return self.take(sent, self.front.intake_s(prompt_tokens))

    def take(self, sent: float, intake: float) -> float:
        """:meth:`done_at` of a request whose intake takes ``intake`` seconds."""
        free = self._free
        if free:
            done = (sent if sent > free[0] else free[0]) + intake
            heapq.heapreplace(free, done)  # the process is busy until its own end
        else:
            done = sent + intake
        if done < self._last:  # it does not overtake the request sent before it
            done = self._last
        self._last = done
        return done


@dataclass(frozen=True)
class ExecutionParams:
    """One engine's execution model (module docstring); :data:`PRESETS` names them."""

    name: str = "custom"
    graph_mode: str = "none"  # one of GRAPH_MODES
    graph_sizes: tuple[int, ...] = ()  # captured batch sizes (sequences / tokens)
    graph_max_share_of_seqs: float = 0.0  # largest size <= share x max_num_seqs (0: no cap)
    async_scheduling: bool = False  # overlap the CPU of step n+1 with the GPU of step n
    serial_s: float = 0.0  # per-iteration CPU time that never overlaps (async only)
    cpu_overlap: float = 1.0  # share of the GPU time the CPU work can hide under (async only)
    recv_interval: int = 1  # decode-only iterations between polls of the input queue
    batch_wait_iters: int = 0  # iterations new prompts are held to batch them (0: none)
    mixed_prefill: bool = True  # prefill chunks share iterations with the running decodes
    # attention-DP balance of a lockstep group (TensorRT-LLM's attention_dp_config): new
    # prompts wait until every rank has one, at most ``balance_timeout_iters`` iterations
    # (0: no balance), then up to ``balance_batching_iters`` more while every rank decodes
    balance_timeout_iters: int = 0
    balance_batching_iters: int = 0
    # the engine's all-reduce latency as a share of vLLM's custom all-reduce (the kernel
    # fit's): priced inside the roofline (StepModelConfig.for_engine), 1 for vLLM's kernel
    allreduce_latency_share: float = 1.0
    frontend: FrontEnd = field(default_factory=FrontEnd)
    source: str = ""  # where the defaults come from

    def __post_init__(self) -> None:
        if self.graph_mode not in GRAPH_MODES:
            raise ConfigError(
                "unknown CUDA-graph mode", value=self.graph_mode, allowed=list(GRAPH_MODES)
            )
        sizes = self.graph_sizes
        if any(s < 1 for s in sizes) or list(sizes) != sorted(set(sizes)):
            raise ConfigError(
                "graph_sizes must be increasing positive batch sizes without repeats",
                value=list(sizes),
                allowed="e.g. [1, 2, 4, 8, 16, 24, 32]",
            )
        if self.graph_mode != "none" and not sizes:
            raise ConfigError(
                f"graph_mode {self.graph_mode!r} needs graph_sizes (or graph_mode: none)",
                value=list(sizes),
            )
        _check_whole(
            "recv_interval", self.recv_interval, "iterations", 1, "1 (every iteration), 10, 30, ..."
        )
        if self.recv_interval > 1 and not self.async_scheduling:
            raise ConfigError(
                "recv_interval above 1 is modelled for an asynchronously scheduling engine "
                "only (async_scheduling: true)",
                value=self.recv_interval,
                allowed="1",
            )
        wait = self.batch_wait_iters
        _check_whole("batch_wait_iters", wait, "iterations", 0, "0 (no wait), 20, 40, ...")
        if wait and (self.recv_interval > 1 or not self.async_scheduling):
            raise ConfigError(
                "batch_wait_iters is modelled for an asynchronously scheduling engine that "
                "polls its queue every iteration (async_scheduling: true, recv_interval: 1)",
                value={"batch_wait_iters": wait, "recv_interval": self.recv_interval,
                       "async_scheduling": self.async_scheduling},
                allowed="batch_wait_iters: 0",
            )  # fmt: skip
        for name in ("balance_timeout_iters", "balance_batching_iters"):
            _check_whole(name, getattr(self, name), "iterations", 0, "0 (off), 50, 60, ...")
        if self.balance_batching_iters and not self.balance_timeout_iters:
            raise ConfigError(
                "balance_batching_iters is part of the attention-DP balance, which "
                "balance_timeout_iters turns on (TensorRT-LLM's enable_balance)",
                value={"balance_timeout_iters": 0,
                       "balance_batching_iters": self.balance_batching_iters},
                allowed="balance_timeout_iters >= 1, or balance_batching_iters: 0",
            )  # fmt: skip
        if not isinstance(self.mixed_prefill, bool):
            raise ConfigError(
                "mixed_prefill must be true (prefill chunks beside the decodes) or false "
                "(prefill batches alone, as SGLang runs them)",
                value=self.mixed_prefill,
                allowed=[True, False],
            )
        if not 0.0 < self.cpu_overlap <= 1.0:
            raise ConfigError(
                "cpu_overlap is the share of an iteration's GPU time the CPU work hides under",
                value=self.cpu_overlap,
                allowed="0 < cpu_overlap <= 1 (1: all of it)",
            )
        if not 0.0 <= self.allreduce_latency_share <= 1.0:
            raise ConfigError(
                "allreduce_latency_share is the engine's all-reduce latency as a share of "
                "vLLM's custom all-reduce",
                value=self.allreduce_latency_share,
                allowed="0 <= allreduce_latency_share <= 1 (1: vLLM's kernel)",
            )
        if not self.serial_s >= 0.0 or not self.graph_max_share_of_seqs >= 0.0:
            raise ConfigError(
                "serial_s and graph_max_share_of_seqs must be non-negative",
                value=(self.serial_s, self.graph_max_share_of_seqs),
                allowed=">= 0",
            )

    def for_engine(self, max_num_seqs: int) -> ExecutionParams:
        """These settings with the captured sizes an engine of ``max_num_seqs`` keeps."""
        if self.graph_max_share_of_seqs <= 0.0 or not self.graph_sizes:
            return self
        cap = self.graph_max_share_of_seqs * max_num_seqs
        sizes = tuple(s for s in self.graph_sizes if s <= cap) or self.graph_sizes[:1]
        return dataclasses.replace(self, graph_sizes=sizes)


def _vllm_graph_sizes() -> tuple[int, ...]:
    """vLLM V1's default capture list: 1, 2, 4, then by 8 to 256, by 16 to 512."""
    return (1, 2, 4, *range(8, 257, 8), *range(272, 513, 16))


def _sglang_graph_sizes() -> tuple[int, ...]:
    """SGLang's default capture list: 1, 2, 4, 8, 12, then by 8 to 256."""
    return (1, 2, 4, 8, 12, *range(16, 257, 8))


def _trtllm_graph_sizes() -> tuple[int, ...]:
    """TensorRT-LLM's (PyTorch backend) default: 1, 2, 4, then by 8 to 128."""
    return (1, 2, 4, *range(8, 129, 8))


VLLM_IN_PROCESS_FRONTEND = FrontEnd(request_s=0.002)
"""vLLM 0.19 driven in-process (``AsyncLLM.generate`` with the prompts' token ids: no HTTP,
no tokenisation), as the four published per-request runs were. A request's ``queued_ts``
is stamped when the engine core takes it from its input queue, between two iterations (for
72-263 of each run's 300 requests it falls within 0.01 ms of another request's step
event), so ``queued_ts`` less the arrival is mostly the wait for the iteration in flight to
end (a median of 15-22 ms, 111 ms in the TP-2 run of long prefills), which the engine's own
timing already holds (and, scheduling asynchronously, one iteration more:
:mod:`sincere.engine.async_intake`). What is left is the front end proper: the request that
found each run's engine idle reached its queue 0.5-2.1 ms after the run's fastest one,
taken as 2 ms (the fastest one's own time is not in the runs). Detokenisation and
streaming run in the API process beside the engine and are not seen in per-token times."""

VLLM_HTTP_FRONTEND = FrontEnd(request_s=0.020, prompt_token_s=4.0e-6, intake_servers=1)
"""vLLM's OpenAI-compatible server (``vllm serve``, one API process) with a client that
sends text and streams (vLLM's benchmark, InferenceX, GuideLLM): 20 ms a request and 4 µs
a prompt token, one request at a time. Fitted (least absolute deviations of the missing
mean TTFT on the mean prompt) on InferenceX's 131 colocated vLLM points of at most 4
clients, where nothing queues in front; the one process taking requests in turn is what
the points of more clients show: with it the mean TTFT's median error per band of clients
(up to 8, 9-32, 33-128, 129-512) is +0.4, -5.8, +0.2, +5.0 %, with the same times taken by
every request at once -0.6, -8.8, -14.6, -20.2 %, the shortfall growing with the clients
(benchmarks/README.md, "vLLM's API process")."""


TRTLLM_ALLREDUCE_SHARE = 0.3
"""TensorRT-LLM's all-reduce latency as a share of vLLM's custom all-reduce. TensorRT-LLM
fuses each tensor-parallel all-reduce with the residual add and RMSNorm after it and runs
small messages in one shot over NVLink; its kernels were not measured, so the share is
fitted on what it does to whole steps: on InferenceX's TensorRT-LLM points of Llama-3.1-70B
(fp8, NVFP4) and GPT-OSS-120B at TP 1-8 and at most 64 clients, priced with vLLM's
all-reduce, the measured TPOT over the simulated one falls 4.5 % a doubling of TP (the
same points of vLLM: flat), and a share of 0.3 leaves no trend (benchmarks/README.md,
"TensorRT-LLM's fused all-reduce")."""


TRTLLM_HTTP_FRONTEND = FrontEnd(request_s=0.024)
"""TensorRT-LLM's OpenAI-compatible server (``trtllm-serve``) with a client that sends text
and streams (InferenceX's benchmark): 24 ms a request, every request's at once. Fitted as
vLLM's was (least absolute deviations of the missing mean TTFT, here a constant) on
InferenceX's 69 colocated TensorRT-LLM points of at most 4 clients, with the engine's
all-reduce at :data:`TRTLLM_ALLREDUCE_SHARE`. No slope in the prompt: the missing time
falls with it (+25 ms at 1k-token prompts, −21 ms at 8k: TensorRT-LLM's long prefills are
quicker than vLLM's kernels price them, which a front end cannot carry). Worked by one
process in turn, as vLLM's is, the points of more clients come out long (TTFT median
17.3 %, bias +10.6, against 14.2 %, +1.7, with every intake at once: ``python
benchmarks/frontend_fit.py --backend trtllm``; benchmarks/README.md, "TensorRT-LLM's
front end")."""


def _decode_graphs_engine(
    name: str,
    graph_sizes: tuple[int, ...],
    defaults: str,
    mixed_prefill: bool = True,
    allreduce_latency_share: float = 1.0,
    frontend: tuple[FrontEnd, str] | None = None,
) -> ExecutionParams:
    """An engine with an overlap scheduler and CUDA graphs for decode only, at its documented
    ``defaults``; ``frontend`` is its own front end and where it comes from, else vLLM
    0.19's in-process intake stands in (vLLM's HTTP front end, tried on InferenceX's SGLang
    points with their own low-load fits, did not fit them: docs/engine.md)."""
    if frontend is None:
        frontend = (VLLM_IN_PROCESS_FRONTEND, "not measured: vLLM 0.19's in-process intake")
    return ExecutionParams(
        name=name,
        graph_mode="full_decode_only",
        graph_sizes=graph_sizes,
        async_scheduling=True,
        mixed_prefill=mixed_prefill,
        allreduce_latency_share=allreduce_latency_share,
        frontend=frontend[0],
        source=f"{defaults}; front end {frontend[1]}",
    )


VLLM_CPU_OVERLAP = 0.4
"""The share of an iteration's GPU time under which vLLM V1's CPU work (scheduling, input
preparation, output processing, the roofline's ``overhead_s + overhead_per_seq_s`` per
sequence) hides. Fitted on InferenceX's vLLM points of 129-512 clients (their TPOT was
17 % short: the CPU of hundreds of sequences fully hidden under a fast GPU's step); below
about 100 sequences the CPU stays under it and nothing moves (benchmarks/README.md, "The
CPU of a large batch under a fast GPU")."""

PRESETS: dict[str, ExecutionParams] = {
    "vllm-v1": ExecutionParams(
        name="vllm-v1",
        graph_mode="full_and_piecewise",
        graph_sizes=_vllm_graph_sizes(),
        graph_max_share_of_seqs=2.0,
        async_scheduling=True,
        serial_s=0.0,
        cpu_overlap=VLLM_CPU_OVERLAP,
        frontend=VLLM_HTTP_FRONTEND,
        source=(
            "vLLM 0.19 as resolved in the published runs' config (cudagraph_mode "
            "FULL_AND_PIECEWISE, capture sizes 1, 2, 4, 8..256 by 8, 272..512 by 16, at most "
            "2 x max_num_seqs; async_scheduling true, the CPU hidden under 0.4 of the GPU "
            "time); front end: vLLM's HTTP server, one API "
            "process, fitted on InferenceX's low-load vLLM points"
        ),
    ),
    "sglang": _decode_graphs_engine(
        "sglang",
        _sglang_graph_sizes(),
        "SGLang's documented defaults (overlap scheduler on, decode CUDA graphs up to "
        "cuda_graph_max_bs, prefill batches run alone: enable_mixed_chunk off)",
        mixed_prefill=False,
    ),
    "trtllm": _decode_graphs_engine(
        "trtllm",
        _trtllm_graph_sizes(),
        "TensorRT-LLM's PyTorch-backend defaults (overlap scheduler on, decode CUDA graphs; "
        f"its fused all-reduce at {TRTLLM_ALLREDUCE_SHARE} of vLLM's latency, fitted on "
        "InferenceX's TensorRT-LLM points)",
        allreduce_latency_share=TRTLLM_ALLREDUCE_SHARE,
        frontend=(
            TRTLLM_HTTP_FRONTEND,
            "trtllm-serve's: 24 ms a request, fitted on InferenceX's low-load points",
        ),
    ),
    "eager": ExecutionParams(
        name="eager",
        source="an eager engine of 2024 (vLLM V0 with enforce_eager): CPU in series, no graphs",
    ),
}
"""Named execution models; a deployment without a preset runs ``vllm-v1`` over the roofline
and ``eager`` over other step models (:mod:`sincere.engine.defaults`)."""


def execution_params(preset: str | None, overrides: Mapping[str, Any]) -> ExecutionParams:
    """The preset's settings with ``overrides`` applied (``frontend`` a mapping)."""
    name = preset or "eager"
    if name not in PRESETS:
        raise ConfigError("unknown engine preset", value=name, allowed=sorted(PRESETS))
    base = PRESETS[name]
    known = {f.name for f in dataclasses.fields(ExecutionParams)} - {"name", "source"}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ConfigError("unknown engine execution setting", value=unknown, allowed=sorted(known))
    changes: dict[str, Any] = {}
    for key, value in overrides.items():
        if key == "frontend":
            changes[key] = _frontend(base.frontend, value)
        elif key == "graph_sizes":
            changes[key] = tuple(int(v) for v in value)
        else:
            changes[key] = value
    if not changes:
        return base
    return dataclasses.replace(base, **changes, source=f"{base.source}; overridden: "
                               + ", ".join(sorted(changes)))  # fmt: skip


def _frontend(base: FrontEnd, value: Any) -> FrontEnd:
    if not isinstance(value, Mapping):
        raise ConfigError(
            "frontend must be a mapping of request_s, prompt_token_s, output_s, "
            "first_chunk_tokens, intake_servers",
            value=value,
        )
    known = {f.name for f in dataclasses.fields(FrontEnd)}
    unknown = sorted(set(value) - known)
    if unknown:
        raise ConfigError("unknown front-end setting", value=unknown, allowed=sorted(known))
    return dataclasses.replace(base, **{k: _front_value(k, v) for k, v in value.items()})


def _front_value(name: str, value: Any) -> Any:
    """A front-end setting as its field holds it: seconds as floats, the chunk as it came
    (checked by :class:`FrontEnd`)."""
    if name in ("first_chunk_tokens", "intake_servers"):
        return value
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ConfigError(
            f"front-end time {name} must be a number of seconds", value=value, allowed=">= 0"
        ) from None


@runtime_checkable
class SeparableCpu(Protocol):
    """A step-time model that can say how much of an iteration is CPU work."""

    def cpu_step_s(self, num_seqs: int) -> Seconds:
        """The CPU part of an iteration of ``num_seqs`` sequences (in its iteration time)."""
        ...
