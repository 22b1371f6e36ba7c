"""``benchmarks/step_fit.py`` fits every kernel family the fit knows, each with its own fitter
(the script once called a fitter that had been renamed and stopped at the fp8 GEMMs)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from tests.conftest import benchmark_script

from sincere.fit import kernels as kf

FITTERS = (
    "fit_gemm",
    "fit_quant_gemm",
    "fit_prefill_attention",
    "fit_decode_attention",
    "fit_allreduce",
    "fit_alltoall",
    "fit_moe",
    "fit_moe_ep",
    "fit_quant_moe",
    "fit_gdn",
    "fit_mla_decode",
)
EXPECTED = {
    "gemm_bf16": "fit_gemm",
    "gemm_fp8": "fit_quant_gemm",
    "gemm_nvfp4": "fit_quant_gemm",
    "prefill_attention": "fit_prefill_attention",
    "decode_attention": "fit_decode_attention",
    "allreduce": "fit_allreduce",
    "alltoall": "fit_alltoall",
    "moe": "fit_moe",
    "moe_ep": "fit_moe_ep",
    "moe_fp8": "fit_quant_moe",
    "moe_mxfp4": "fit_quant_moe",
    "moe_nvfp4": "fit_quant_moe",
    "moe_mxfp4_mxfp8": "fit_quant_moe",
    "moe_int4": "fit_quant_moe",
    "mla_decode": "fit_mla_decode",
    "gdn_prefill": "fit_gdn",
    "gdn_decode": "fit_gdn",
}


def test_every_family_of_the_fit_reaches_its_own_fitter(monkeypatch: pytest.MonkeyPatch) -> None:
    assert set(EXPECTED) == set(kf.FAMILY_TABLES)  # a new family needs a line here
    script = benchmark_script("step_fit")
    called: list[tuple[str, str | None]] = []
    for fitter in FITTERS:

        def record(*args: Any, _name: str = fitter) -> str:
            called.append((_name, args[0] if isinstance(args[0], str) else None))
            return _name

        monkeypatch.setattr(kf, fitter, record)
    context = {
        "_bf16": object(),
        "attn_head_dim_offset": 0.0,
        "attn_kv_head_work": 1.0,
        "attn_mfu_efficiency": 1.0,
        "overlap_exponent": 2.0,
    }
    for family, fitter in EXPECTED.items():
        called.clear()
        assert script.fit_one(family, "table", "acc", context, Path(".")) == fitter, family
        (reached, named) = called[0]
        assert reached == fitter
        if fitter in ("fit_quant_gemm", "fit_quant_moe", "fit_gdn"):  # told which family
            assert named == family
