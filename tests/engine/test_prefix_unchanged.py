"""Prefix caching changes nothing where no prompt shares content: pinned summary.json bytes.

The SHA-256 values are those of ``summary.json`` written by ``sincere simulate`` for each
shipped example before prefix caching existed (the H100-SXM examples with the roofline fitted to
H100 kernels, which moved them once, and again when H100's GEMM, attention, all-reduce and
fused-MoE constants came from its measured vLLM kernels, and when prefill attention's
work per pair took the head-dim offset and KV-head term and the eager all-reduce its
floor, and when an engine block without a preset came to run today's vLLM V1 with its
limits for the GPU, and when H100-SXM and H200 took the compute rate they were measured to
keep under sustained load (``sustained_clock.yaml``: the vllm example's mean TTFT 72.9 ->
84.1 ms, mean TPOT 10.5 -> 11.6 ms), and when GEMMs took the factor by shape fitted to
the measured ones (``gemm_*_grid``: 84.1 -> 84.4 ms, 11.59 -> 11.62 ms); W1 (which names
the eager engine) and SINCERE's
study are A100 / request-level and never moved). With caching off, and with it on (the
default) for these workloads (their requests carry no block ids), the bytes must not move.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest
import yaml

from sincere.sim import simulate

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

PINNED = {
    "w1": "b89ca563fb17e486fbf0ad479ad7aba9558f0e05a234765acb8e2e627879f00c",
    "hetero": "d016c449c0b90de6c198334e82fbddfd1a27e8c746741963b4f8116e247ba14d",
    "hetero-explore": "d66fac03830fb4678cbe877729193fe4484642237874e7653d21d779ea7843bb",
    "niyama": "18a9ba99516012d287c68745150d805aca1f1e61d1f9c470f7ec132f1507a35b",
    "sincere": "3ab15ad72eff7ccb31e8cce25708beb0ccd67b24e9b7ff774291602186a0c09c",
    "vllm": "1af683ffd52b3e707e0ff3c2f1d18c3c1af5f19c0e5eaf47761a1e06de53e3bc",
}


def _config(name: str, caching: bool | None) -> dict[str, Any]:
    config: dict[str, Any] = yaml.safe_load((EXAMPLES / f"{name}.yaml").read_text())
    if caching is not None:
        for inst in config["instances"]:
            engine = inst.setdefault("engine", {})
            if engine.get("kind", "continuous") == "continuous":
                engine["enable_prefix_caching"] = caching
    return config


def _summary_sha(config: dict[str, Any], out: Path) -> str:
    simulate(config).write(out)
    return hashlib.sha256((out / "summary.json").read_bytes()).hexdigest()


@pytest.mark.parametrize("caching", [False, True])
def test_w1_summary_is_byte_identical_caching_off_and_on(tmp_path: Path, caching: bool) -> None:
    """W1's summary.json is the pinned one with enable_prefix_caching false and true."""
    assert _summary_sha(_config("w1", caching), tmp_path) == PINNED["w1"]


@pytest.mark.parametrize("name", sorted(set(PINNED) - {"w1"}))
def test_shipped_examples_summary_is_byte_identical(tmp_path: Path, name: str) -> None:
    """Every shipped simulate example (caching on by default) writes the pinned summary.json."""
    assert _summary_sha(_config(name, None), tmp_path) == PINNED[name]
