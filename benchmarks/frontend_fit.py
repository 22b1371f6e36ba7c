"""Where the ``vllm-v1`` and ``trtllm`` presets' front ends come from: InferenceX's
colocated vLLM and TensorRT-LLM points.

Usage: ``python benchmarks/frontend_fit.py [FILE] [--jobs J] [--backend trtllm|sglang]`` (default
``../shared/data/serving-runs/inferencex/blackwell_operating_points.csv`` beside the
checkout; 2 jobs). Four passes over every colocated vLLM point the simulator represents,
seed 0, the default step model, each point as ``validate inferencex`` runs it but for its
front end:

1. **in-process** (vLLM driven with token ids: a 2 ms intake, no queue, the front end of
   the four per-request runs); on the points of at most 4 clients, where nothing queues in
   front of the engine, the missing mean TTFT is fitted to a line in the mean prompt
   (least absolute deviations: a few odd points do not move it);
2. **the line's times, one API process** (the intake ``2 ms + line``, worked one request
   at a time) and the line refitted on what is still missing at most 4 clients;
3. **the preset** (``vllm-v1``'s front end as shipped);
4. **the preset's times, every intake at once** (``intake_servers: 0``).

Printed: the fitted lines, and per pass the mean TTFT's and TPOT's median APE (bias) over
all points and the TTFT by band of clients; the points of more than 4 clients are those
the fit did not see, where a line of one process and times taken at once part ways.

``--backend trtllm``: the colocated TensorRT-LLM points instead, in four passes: the
in-process 2 ms (the line is printed, and the missing time's median at most 4 clients, a
constant's least absolute deviations: the line's slope is negative, so the front end is a
constant); that constant with every intake at once; the same one request at a time; the
``trtllm`` preset as shipped. ``--backend sglang``: the same passes over the colocated SGLang
points (the last one the ``sglang`` preset as shipped).
"""

from __future__ import annotations

import math
import statistics
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from sincere.experiment.inferencex import RANGE_RATIO, PointResult, score_points
from sincere.perf.execution_settings import TRTLLM_HTTP_FRONTEND, VLLM_HTTP_FRONTEND
from sincere.workload.inferencex import (
    OperatingPoint,
    parse_filter,
    read_operating_points,
    select_points,
)

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_FILE = (
    ROOT.parent
    / "shared"
    / "data"
    / "serving-runs"
    / "inferencex"
    / ("blackwell_operating_points.csv")
)
LOW_LOAD = 4  # clients at most: nothing queues in front of the engine
BANDS = ((1, 8), (9, 32), (33, 128), (129, 1 << 20))


def least_absolute_line(x: Sequence[float], y: Sequence[float]) -> tuple[float, float]:
    """(intercept, slope) minimising the sum of absolute deviations (iteratively
    reweighted least squares; a few hundred points converge in well under 100 rounds)."""
    xs, ys = np.asarray(x, float), np.asarray(y, float)
    design = np.column_stack([np.ones_like(xs), xs])
    weights = np.ones_like(xs)
    beta = np.zeros(2)
    for _ in range(200):
        root = np.sqrt(weights)
        beta = np.linalg.lstsq(design * root[:, None], ys * root, rcond=None)[0]
        weights = 1.0 / np.maximum(np.abs(ys - design @ beta), 1e-6)
    return float(beta[0]), float(beta[1])


def _run(
    points: list[OperatingPoint], frontend: Mapping[str, float], jobs: int
) -> list[PointResult]:
    board = score_points(points, jobs=jobs, frontend=frontend)
    return [r for r in board.results if math.isfinite(r.sim_ttft_ms)]


def _error(real: float, sim: float) -> float:
    return (sim - real) / real


def _line_of(results: list[PointResult]) -> tuple[float, float]:
    """The missing mean TTFT (s) at most LOW_LOAD clients as a line in the mean prompt."""
    low = [r for r in results if r.spec.clients <= LOW_LOAD]
    prompts = [(1 + RANGE_RATIO) / 2 * r.spec.point.isl for r in low]  # the lengths' mean
    missing = [(r.spec.point.ttft_ms - r.sim_ttft_ms) / 1e3 for r in low]
    print(f"  fitted on {len(low)} points of at most {LOW_LOAD} clients")
    return least_absolute_line(prompts, missing)


def _report(name: str, results: list[PointResult]) -> None:
    ttft = [_error(r.spec.point.ttft_ms, r.sim_ttft_ms) for r in results]
    tpot = [_error(r.spec.point.tpot_ms, r.sim_tpot_ms) for r in results]

    def cell(errors: list[float]) -> str:
        ape = statistics.median(abs(e) for e in errors)
        return f"{100 * ape:.1f} ({100 * statistics.median(errors):+.1f})"

    bands = []
    for lo, hi in BANDS:
        sel = [e for e, r in zip(ttft, results, strict=True) if lo <= r.spec.clients <= hi]
        bands.append(f"{cell(sel)} [{len(sel)}]" if sel else "-")
    print(f"| {name} | {len(results)} | {cell(ttft)} | {cell(tpot)} | " + " | ".join(bands) + " |")


def _table_head() -> None:
    bands = " | ".join(f"TTFT {lo}-{hi if hi < 1 << 20 else 'max'} clients" for lo, hi in BANDS)
    print()
    print(f"| front end | points | mean TTFT: median APE % (bias) | mean TPOT | {bands} |")
    print("|---|---:|---:|---:|" + "---:|" * len(BANDS))


def constant_passes(points: list[OperatingPoint], jobs: int, backend: str) -> None:
    """The ``--backend trtllm`` and ``--backend sglang`` passes (module docstring)."""
    in_process = {"request_s": 0.002, "prompt_token_s": 0.0, "intake_servers": 0}
    base = _run(points, in_process, jobs)
    a, b = _line_of(base)
    low = [r for r in base if r.spec.clients <= LOW_LOAD]
    constant = statistics.median((r.spec.point.ttft_ms - r.sim_ttft_ms) / 1e3 for r in low)
    print(f"missing TTFT in-process as a line: {1e3 * a:.2f} ms + {1e6 * b:.2f} us a token")
    print(
        f"as a constant: {1e3 * constant:.1f} ms, in all {1e3 * (0.002 + constant):.1f} ms "
        f"(TensorRT-LLM's preset: {1e3 * TRTLLM_HTTP_FRONTEND.request_s:.0f} ms, "
        f"{TRTLLM_HTTP_FRONTEND.intake_servers} processes: every intake at once)"
    )
    fitted = {"request_s": 0.002 + constant, "prompt_token_s": 0.0}
    at_once = _run(points, {**fitted, "intake_servers": 0}, jobs)
    in_turn = _run(points, {**fitted, "intake_servers": 1}, jobs)
    shipped = _run(points, {}, jobs)
    _table_head()
    _report("in-process (2 ms)", base)
    _report("the constant, every intake at once", at_once)
    _report("the constant, one process", in_turn)
    _report(f"the preset ({backend})", shipped)


def main(argv: list[str]) -> None:
    args = [a for a in argv if not a.startswith("--")]
    for option in ("--jobs", "--backend"):
        if option in argv:
            args.remove(argv[argv.index(option) + 1])
    jobs = int(argv[argv.index("--jobs") + 1]) if "--jobs" in argv else 2
    backend = argv[argv.index("--backend") + 1] if "--backend" in argv else "vllm"
    if backend not in ("vllm", "trtllm", "sglang"):
        sys.exit(f"frontend_fit.py: --backend {backend!r}; allowed: vllm, trtllm, sglang")
    path = Path(args[0]) if args else DEFAULT_FILE
    points = select_points(read_operating_points(path), parse_filter(f"mode=agg,backend={backend}"))
    started = time.perf_counter()
    if backend in ("trtllm", "sglang"):
        constant_passes(points, jobs, backend)
        print(f"\nwall_s={time.perf_counter() - started:.0f}", file=sys.stderr)
        return
    in_process = {"request_s": 0.002, "prompt_token_s": 0.0, "intake_servers": 0}
    base = _run(points, in_process, jobs)
    a, b = _line_of(base)
    print(f"missing TTFT in-process: {1e3 * a:.2f} ms + {1e6 * b:.2f} us a prompt token")
    line = {"request_s": 0.002 + a, "prompt_token_s": b, "intake_servers": 1}
    lined = _run(points, line, jobs)
    a2, b2 = _line_of(lined)
    print(
        f"still missing with it: {1e3 * a2:.2f} ms + {1e6 * b2:.2f} us a token; in all "
        f"{1e3 * (0.002 + a + a2):.1f} ms + {1e6 * (b + b2):.2f} us a token "
        f"(the preset: {1e3 * VLLM_HTTP_FRONTEND.request_s:.0f} ms + "
        f"{1e6 * VLLM_HTTP_FRONTEND.prompt_token_s:.0f} us, "
        f"{VLLM_HTTP_FRONTEND.intake_servers} process)"
    )
    preset = {
        "request_s": VLLM_HTTP_FRONTEND.request_s,
        "prompt_token_s": VLLM_HTTP_FRONTEND.prompt_token_s,
        "intake_servers": VLLM_HTTP_FRONTEND.intake_servers,
    }
    shipped = _run(points, preset, jobs)
    at_once = _run(points, {**preset, "intake_servers": 0}, jobs)
    _table_head()
    _report("in-process (2 ms)", base)
    _report("the line, one process", lined)
    _report("the preset (vllm-v1)", shipped)
    _report("the preset's times, every intake at once", at_once)
    print(f"\nwall_s={time.perf_counter() - started:.0f}", file=sys.stderr)


if __name__ == "__main__":
    main(sys.argv[1:])
