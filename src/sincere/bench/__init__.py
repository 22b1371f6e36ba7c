"""Load generator: measure any OpenAI-compatible endpoint in the simulator's schema.

``run_bench(url, requests, options) -> BenchResult`` sends a workload open-loop
(arrival times from :mod:`sincere.workload` or a trace) and records TTFT, ITL, TPOT
and E2E per request, so measured and simulated runs compare directly. See
docs/bench.md.
"""

from sincere.bench.client import CallTiming
from sincere.bench.prompts import endpoint_url, request_body, synthetic_prompt
from sincere.bench.results import BenchResult
from sincere.bench.runner import BenchOptions, probe, run_bench, run_bench_async

__all__ = [
    "BenchOptions",
    "BenchResult",
    "CallTiming",
    "endpoint_url",
    "probe",
    "request_body",
    "run_bench",
    "run_bench_async",
    "synthetic_prompt",
]
