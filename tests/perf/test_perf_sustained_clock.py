"""Compute under sustained load: the measured clock ratio slows compute-bound work only."""

from __future__ import annotations

from dataclasses import replace

import pytest

from sincere.catalog import get_accelerator, get_model
from sincere.core.errors import DataError
from sincere.perf import Batch, Deployment, Roofline, make_step_model
from sincere.perf.arch_step import ArchStep
from sincere.perf.calibration import (
    default_roofline_params,
    read_sustained_clocks,
    roofline_defaults,
    sustained_clocks,
)

H200 = get_accelerator("H200")


def test_measured_gpus_take_their_ratio_and_say_where_it_came_from() -> None:
    """H100-SXM and H200 carry the ratio measured on them; a GPU not measured keeps the
    kernel benchmark's rate and says so (no transfer between GPUs of other power limits)."""
    clocks = sustained_clocks()
    assert set(clocks) >= {"H100-SXM", "H200"}
    for name in ("H100-SXM", "H200"):
        defaults = roofline_defaults(get_accelerator(name))
        assert defaults.params["sustained_compute_ratio"] == clocks[name]["ratio"] < 1.0
        assert defaults.parts["sustained_clock"].startswith("measured:")
        assert "clock-depth/depth.json" in defaults.parts["sustained_clock"]
    for name in ("B200", "A100-80GB", "L40S", "H100-PCIe"):
        defaults = roofline_defaults(get_accelerator(name))
        assert "sustained_compute_ratio" not in defaults.params
        assert defaults.parts["sustained_clock"].startswith("not measured")
        assert default_roofline_params(get_accelerator(name)).sustained_compute_ratio == 1.0


def test_the_ratio_slows_compute_bound_work_by_its_inverse_and_leaves_decodes() -> None:
    """An 8,192-token prefill of Llama-3.1-8B is compute-bound: its GEMMs and attention take
    1/ratio of the time at the kernel rate (within the overlap with memory traffic, < 1 %);
    a one-sequence decode reads weights and KV (memory-bound) and moves by under 1 %."""
    dep = Deployment(get_model("llama-3.1-8b"), H200)
    burst = default_roofline_params(H200, {"sustained_compute_ratio": 1.0})
    ratio = 0.8
    loaded = replace(burst, sustained_compute_ratio=ratio)
    prefill = Batch.of(prefill=[(8192, 0)])
    fast, slow = Roofline(dep, burst).parts(prefill), Roofline(dep, loaded).parts(prefill)
    linear_fixed = Roofline(dep, burst).kernels.fixed_and_elementwise_s(8192) * 32
    gemms = (fast.linear_s - linear_fixed, slow.linear_s - linear_fixed)
    assert gemms[1] / gemms[0] == pytest.approx(1 / ratio, rel=0.01)
    assert slow.attention_s / fast.attention_s == pytest.approx(1 / ratio, rel=0.01)
    decode = Batch.of(decode=[512])
    one, two = Roofline(dep, burst).parts(decode), Roofline(dep, loaded).parts(decode)
    assert two.linear_s / one.linear_s < 1.01
    assert two.attention_s / one.attention_s < 1.01


def test_mixture_of_experts_compute_takes_the_ratio_too() -> None:
    """A large prefill's routed experts (compute-bound) slow by about 1/ratio."""
    dep = Deployment(get_model("qwen3-30b-a3b"), H200)
    burst = default_roofline_params(H200, {"sustained_compute_ratio": 1.0})
    loaded = replace(burst, sustained_compute_ratio=0.8)
    prefill = Batch.of(prefill=[(8192, 0)])
    fast, slow = ArchStep(dep, burst).parts(prefill), ArchStep(dep, loaded).parts(prefill)
    assert 1.15 < slow.experts_s / fast.experts_s <= 1 / 0.8 + 1e-9
    assert slow.linear_s > fast.linear_s


def test_the_default_step_model_prices_h200_under_load() -> None:
    """The simulator's default roofline on H200 takes the measured ratio: its prefill is
    slower than at the kernel benchmark's rate, an override of 1 gives the burst time back."""
    dep = Deployment(get_model("llama-3.1-8b"), H200)
    prefill = Batch.of(prefill=[(4096, 0)])
    loaded = make_step_model("roofline", dep).iteration_s(prefill)
    burst = make_step_model("roofline", dep, {"sustained_compute_ratio": 1.0}).iteration_s(prefill)
    assert loaded > 1.1 * burst


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("H200: {ratio: 1.2, measured: x}", "in \\(0, 1\\]"),
        ("H200: {ratio: 0, measured: x}", "in \\(0, 1\\]"),
        ("H200: {ratio: true, measured: x}", "in \\(0, 1\\]"),
        ("H200: {ratio: 0.8}", "where it was measured"),
        ("NoSuchGPU: {ratio: 0.8, measured: x}", "not a catalog accelerator"),
        ("- 0.8", "maps GPUs"),
    ],
)
def test_a_bad_sustained_clock_file_is_named(text: str, match: str) -> None:
    """Each kind of bad entry is refused with the file and the value."""
    with pytest.raises(DataError, match=match) as info:
        read_sustained_clocks(text, "clocks.yaml")
    assert "clocks.yaml" in str(info.value)


def test_a_file_entry_resolves_aliases_to_catalog_names() -> None:
    """A GPU named by an alias is keyed by its catalog name, and keeps its source."""
    out = read_sustained_clocks("h200: {ratio: 0.9, measured: here}", "f.yaml")
    assert out == {"H200": {"ratio": 0.9, "measured": "here", "file": "f.yaml"}}
