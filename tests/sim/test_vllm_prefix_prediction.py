"""benchmarks/vllm_prefix_prediction.py: the simulated vLLM-CPU prefix pattern, checked by hand."""

from __future__ import annotations

from types import ModuleType

import pytest
import yaml
from tests.conftest import benchmark_script


def _script() -> ModuleType:
    return benchmark_script("vllm_prefix_prediction")


def test_inferno_prediction_is_its_prefill_formula_on_the_uncached_tokens() -> None:
    """Cold = γ + δ·753 ms, warm = γ + δ·113 ms (5 cached 128-token blocks), 2,560 hits."""
    script = _script()
    params = yaml.safe_load((script.PROFILES / "inferno.yaml").read_text())["params"]
    gamma, delta = params["gamma_ms"], params["delta_ms"]
    got = script.predict("inferno")
    assert got["hit_tokens"] == 4 * 640
    assert got["cold_s"] == pytest.approx((gamma + delta * 753) / 1e3, rel=1e-6)
    assert got["warm_s"] == pytest.approx((gamma + delta * (753 - 640)) / 1e3, rel=1e-6)
