"""Routed experts priced from the measured kernel of the deployment's own MoE layer
(:mod:`sincere.perf.measured_moe`, the roofline's ``kernel_tables``)."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

import sincere.cli.step
import sincere.cli.validate  # noqa: F401
from sincere.catalog import get_accelerator, get_model
from sincere.cli.app import app
from sincere.core.errors import ConfigError
from sincere.perf import Batch, Deployment
from sincere.perf.arch_step import ArchStep
from sincere.perf.calibration import default_roofline_params
from sincere.perf.factory import make_step_model
from sincere.perf.measured_moe import MEASURED_ROUTING, MeasuredCurve

B200 = get_accelerator("B200")
MINIMAX = get_model("minimax-m2.5")  # 3,072 wide, 256 experts of 1,536, top 8
SHARED = Path(__file__).resolve().parents[3] / "shared" / "data" / "kernels" / "aiconfigurator"
LAYER = {"hidden_size": 3072, "inter_size": 1536, "topk": 8, "num_experts": 256}
CURVE = {1: 0.040, 16: 0.160, 64: 0.300, 1024: 0.600}  # tokens -> ms, MiniMax's layer at TP 2


def _row(tokens: int, ms: float, **changes: object) -> dict[str, object]:
    row: dict[str, object] = {
        "kernel_source": "main_kernel", "moe_dtype": "fp8_block", "num_tokens": tokens,
        **LAYER, "moe_tp_size": 2, "moe_ep_size": 1, "distribution": MEASURED_ROUTING,
        "latency": ms,
    }  # fmt: skip
    row.update(changes)
    return row


def _write(root: Path, release: str, rows: list[dict[str, object]]) -> None:
    folder = root / "b200_sxm" / "moe" / "vllm" / release
    folder.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows), folder / "moe_perf.parquet")


@pytest.fixture
def tables(tmp_path: Path) -> Path:
    """Release 0.19.0 measures MiniMax's layer at TP 2 (with rows that must not be read:
    balanced routing, expert parallelism, a kernel measured less often, another shape);
    0.24.0 measures it twice as fast."""
    rows = [_row(t, ms) for t, ms in CURVE.items()]
    rows += [_row(t, 10 * ms, distribution="balanced") for t, ms in CURVE.items()]
    rows += [_row(t, 10 * ms, moe_ep_size=2) for t, ms in CURVE.items()]
    rows += [_row(t, 10 * CURVE[t], kernel_source="rare_kernel") for t in (1, 64)]
    rows += [_row(t, 10 * ms, hidden_size=4096) for t, ms in CURVE.items()]
    _write(tmp_path, "0.19.0", rows)
    _write(tmp_path, "0.24.0", [_row(t, ms / 2) for t, ms in CURVE.items()])
    return tmp_path


def _experts_s(
    tables: Path | None, batch: Batch, *, tp: int = 2, ep: int = 1, release: str | None = None
) -> float:
    dep = Deployment(MINIMAX, B200, tp=tp, ep=ep, precision="fp8")
    params = default_roofline_params(B200)
    if tables is not None:
        params = replace(params, kernel_tables=str(tables), kernel_release=release)
    return ArchStep(dep, params).parts(batch).experts_s


def test_the_measured_layer_is_priced_from_its_rows(tables: Path) -> None:
    """Each MoE layer of a 64-sequence decode takes the measured 0.300 ms of the release's
    most measured kernel under the skewed routing; between two measured counts the time is
    linear in log-log, below the smallest the smallest's, above the largest scaled."""
    layers = MINIMAX.num_moe_layers
    decode = Batch.of(decode=[1000] * 64)
    assert _experts_s(tables, decode, release="0.19.0") == pytest.approx(layers * 0.300e-3)
    assert _experts_s(tables, decode) == pytest.approx(layers * 0.150e-3)  # the newest release
    between = 0.300 * (0.600 / 0.300) ** (math.log(200 / 64) / math.log(1024 / 64))
    assert _experts_s(tables, Batch.of(prefill=[(200, 0)]), release="0.19.0") == pytest.approx(
        layers * between * 1e-3
    )
    beyond = _experts_s(tables, Batch.of(prefill=[(4096, 0)]), release="0.19.0")
    assert beyond == pytest.approx(layers * 0.600e-3 * 4)
    fitted = _experts_s(None, decode)
    assert fitted != pytest.approx(layers * 0.300e-3, rel=0.01)  # the rows changed the price


def test_unmeasured_layers_keep_the_fitted_formula(tables: Path) -> None:
    """Another split (TP 4), expert parallelism and a folder without the GPU price the
    experts exactly as no folder does."""
    decode = Batch.of(decode=[1000] * 64)
    assert _experts_s(tables, decode, tp=4) == _experts_s(None, decode, tp=4)
    assert _experts_s(tables, decode, tp=2, ep=2) == _experts_s(None, decode, tp=2, ep=2)
    empty = tables / "none"
    empty.mkdir()
    assert _experts_s(empty, decode) == _experts_s(None, decode)


def test_a_missing_folder_is_refused_with_the_path(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="kernel_tables must be a folder") as err:
        _experts_s(tmp_path / "nowhere", Batch.of(decode=[1000]))
    assert "nowhere" in str(err.value)


def test_the_step_model_config_takes_the_folder_and_the_release(tables: Path) -> None:
    """``step_model: {kind: roofline, params: {kernel_tables, vllm_version}}`` prices the
    experts from that release's rows; `sincere step --params` does the same."""
    dep = Deployment(MINIMAX, B200, tp=2, precision="fp8")
    block = {"kernel_tables": str(tables), "vllm_version": "0.19.0"}
    model = make_step_model("roofline", dep, block)
    parts = model.parts(Batch.of(decode=[1000] * 64))
    assert parts.experts_s == pytest.approx(MINIMAX.num_moe_layers * 0.300e-3)
    params = tables / "params.json"
    params.write_text(json.dumps({"kernel_tables": str(tables)}))
    args = ["step", "minimax-m2.5", "--accelerator", "B200", "--tp", "2", "--precision", "fp8",
            "--decode", "64@1000", "--params", str(params), "--vllm-version", "0.19.0",
            "--json"]  # fmt: skip
    out = CliRunner().invoke(app, args)
    assert out.exit_code == 0, out.output
    experts = json.loads(out.output)["parts"]["experts"]
    assert experts == pytest.approx(MINIMAX.num_moe_layers * 0.300e-3)


def test_validate_refuses_a_kernel_folder_that_is_not_one(tmp_path: Path) -> None:
    points = tmp_path / "points.csv"
    points.write_text("id\n")
    args = ["validate", "inferencex", str(points), "--out", str(tmp_path / "out"),
            "--kernel-tables", str(tmp_path / "missing")]  # fmt: skip
    out = CliRunner().invoke(app, args)
    assert out.exit_code == 2
    assert "--kernel-tables" in out.output and "missing" in out.output


def test_curve_edges() -> None:
    curve = MeasuredCurve((0.0, math.log(8.0)), (math.log(1e-4), math.log(4e-4)), "test")
    assert curve.seconds(0) == 0.0
    assert curve.seconds(0.5) == pytest.approx(1e-4)
    assert curve.seconds(8) == pytest.approx(4e-4)
    assert curve.seconds(16) == pytest.approx(8e-4)


@pytest.mark.skipif(not SHARED.is_dir(), reason="needs ../shared/data beside the checkout")
def test_minimax_on_b200_under_vllm_0_19_reads_the_real_rows() -> None:
    """The real database: MiniMax-M2.5's fp8 layer at TP 2 under vLLM 0.19 (Triton's fused
    MoE) at 64 tokens is the mean of its measured skewed-routing rows, not the newest fit's
    (2 % off there; 5 % before the fused-MoE fits' narrow-expert and L2 terms)."""
    import pandas as pd

    frame = pd.read_parquet(SHARED / "b200_sxm" / "moe" / "vllm" / "0.19.0" / "moe_perf.parquet")
    rows = frame[
        (frame.hidden_size == 3072) & (frame.inter_size == 1536) & (frame.moe_tp_size == 2)
        & (frame.moe_ep_size == 1) & (frame.moe_dtype == "fp8_block")
        & (frame.distribution == MEASURED_ROUTING) & (frame.num_tokens == 64)
    ]  # fmt: skip
    assert len(rows) >= 1
    measured = rows.latency.mean() * 1e-3
    decode = Batch.of(decode=[1000] * 64)
    got = _experts_s(SHARED, decode, release="0.19.0") / MINIMAX.num_moe_layers
    assert got == pytest.approx(measured)
    fitted = _experts_s(None, decode) / MINIMAX.num_moe_layers
    assert fitted != pytest.approx(measured, rel=1e-3) and fitted == pytest.approx(got, rel=0.05)


@pytest.mark.parametrize(
    ("precision", "compute", "activations", "fmt"),
    [("int4", "bf16", "bf16", "int4"), ("int4-gptq", "bf16", "bf16", "int4"),
     ("mxfp4", "bf16", "mxfp8", "mxfp4_mxfp8"), ("mxfp4", "bf16", "bf16", "mxfp4"),
     ("fp8", "fp8", "bf16", "fp8"), ("fp8", "bf16", "bf16", "bf16"),
     ("nvfp4", "nvfp4", "bf16", "nvfp4"), ("bf16", "bf16", "bf16", "bf16")],
)  # fmt: skip
def test_each_weight_format_reads_its_own_measured_rows(
    precision: str, compute: str, activations: str, fmt: str
) -> None:
    """INT4 experts (either checkpoint kind) read the ``int4_wo`` rows, not bf16's; fp8
    dequantised to bf16 (A100) reads bf16's, as the fitted constants price them."""
    from sincere.perf.measured_moe import EXPERT_DTYPES, expert_format

    assert expert_format(precision, compute, activations) == fmt
    assert fmt in EXPERT_DTYPES
    if fmt == "int4":
        assert EXPERT_DTYPES[fmt] == ("int4_wo",)
