"""``fit_kernels``: the roofline's kernel families come back from measured vLLM kernels."""

from __future__ import annotations

import itertools
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

import sincere.cli.fit  # noqa: F401  (registers the command)
from sincere.catalog import get_accelerator, get_model
from sincere.catalog.specs import PRECISION_BYTES
from sincere.cli.app import app
from sincere.core.errors import ConfigError
from sincere.fit.kernels import (
    COLUMNS,
    FAMILY_TABLES,
    FamilyFit,
    allreduce_predict,
    alltoall_predict,
    decode_kv_bytes,
    family_rows,
    fit_allreduce,
    fit_alltoall,
    fit_decode_attention,
    fit_gdn,
    fit_gemm,
    fit_mla_decode,
    fit_moe,
    fit_prefill_attention,
    fit_quant_gemm,
    fit_quant_moe,
    fused_delta_rule,
    gated_experts,
    gdn_decode_bytes,
    gdn_rows,
    gemm_predict,
    moe_features,
    moe_predict,
    moe_rows,
    out_of_l2,
    predict_family,
    unaligned_widths,
    widened,
)
from sincere.perf import Batch, Deployment, Roofline
from sincere.perf.arch_step import ArchStep, MoEParams
from sincere.perf.calibration import default_roofline_params, kernel_fits
from sincere.perf.kernel_tables import KernelTable, find_table, gpu_folder, read_table
from sincere.perf.roofline import RooflineParams, allreduce_terms
from sincere.perf.shape_grid import ShapeGrid

runner = CliRunner()
H100 = get_accelerator("H100-SXM")
B200 = get_accelerator("B200")
DATABASE = Path(__file__).resolve().parents[3] / "shared" / "data" / "kernels" / "aiconfigurator"
needs_data = pytest.mark.skipif(
    not (DATABASE / "h100_sxm").is_dir(), reason="the kernel database is not here"
)


def _table(name: str, **columns: Any) -> KernelTable:
    arrays = {k: np.asarray(v) for k, v in columns.items()}
    return KernelTable(name, Path(f"/synthetic/h100_sxm/{name}/vllm/0.0/t.parquet"), "0.0", arrays)


def test_fit_recovers_a_synthetic_gemm_roofline() -> None:
    """GEMM rows made by the roofline's own form fit back to its constants, errors ~0."""
    rng = np.random.default_rng(7)
    m = rng.choice([1, 4, 16, 40, 100, 300, 1000, 3000, 10000], 600).astype(float)
    n = rng.choice([1024, 4096, 8192, 14336], 600).astype(float)
    k = rng.choice([2048, 4096, 8192], 600).astype(float)
    truth = np.array([0.74, 0.83, 4e-6, 2.5])
    peak, hbm = H100.peak_tflops("bf16") * 1e12, H100.hbm_bandwidth_gbps * 1e9
    ms = gemm_predict(m, n, k, truth, 64, peak, hbm, 2.0) * 1e3
    table = _table(
        "gemm", gemm_dtype=["bfloat16"] * 600, kernel_source=["torch.nn.functional.linear"] * 600,
        m=m, n=n, k=k, latency=ms,
    )  # fmt: skip
    fam = fit_gemm(table, H100, Path("/synthetic"))
    assert fam.params["mfu_efficiency"] == pytest.approx(0.74, rel=0.02)
    assert fam.params["bw_efficiency"] == pytest.approx(0.83, rel=0.02)
    assert fam.params["token_tile"] == 64
    assert fam.mean_error < 0.01 and not fam.notes


def test_fit_recovers_a_synthetic_nvfp4_gemm_on_the_fp4_peak() -> None:
    """NVFP4 GEMM rows made from known constants at B200's fp4 peak with 0.5625-byte weights
    (quantisation cost and bytes included) fit back to them, bf16's bw, p and tile shared;
    the bf16 rows beside them are not taken."""
    rng = np.random.default_rng(11)
    m = rng.choice([1, 4, 16, 40, 100, 300, 1000, 3000, 10000], 600).astype(float)
    n = rng.choice([1024, 4096, 8192, 14336], 600).astype(float)
    k = rng.choice([2048, 4096, 8192], 600).astype(float)
    bf16 = {"bw_efficiency": 0.8, "_gemm_kernel_s": 3e-6, "overlap_exponent": 2.5,
            "token_tile": 64, "mfu_efficiency": 0.7}  # fmt: skip
    act_s = 3.0 / (B200.hbm_bandwidth_gbps * 1e9 * 0.8)  # 3 B an element at bf16's rate
    truth = np.array([0.45, 0.8, 3e-6 + 5e-6, 2.5, act_s])  # mfu, bw, kernels, p, act s
    peak, hbm = B200.peak_tflops("nvfp4") * 1e12, B200.hbm_bandwidth_gbps * 1e9
    ms = gemm_predict(m, n, k, truth, 64, peak, hbm, 0.5625) * 1e3
    table = _table(
        "gemm", gemm_dtype=["nvfp4"] * 600 + ["bfloat16"] * 600,
        kernel_source=["FlashInferCuteDslNvFp4LinearKernel"] * 600 + ["linear"] * 600,
        m=np.tile(m, 2), n=np.tile(n, 2), k=np.tile(k, 2), latency=np.append(ms, ms * 10),
    )  # fmt: skip
    shared = FamilyFit("gemm_bf16", bf16, 600, 0.0, 0.0, 0.0, "t", "0.0")
    fam = fit_quant_gemm("gemm_nvfp4", table, B200, shared, Path("/synthetic"))
    weights = n * k * 0.5625  # (few-token calls over 2-256 MB of weights: L2's, left out)
    assert fam.rows == 600 - int(((m <= 64) & (weights > 2e6) & (weights < 256e6)).sum())
    assert fam.params["nvfp4_mfu_efficiency"] == pytest.approx(0.45, rel=0.02)
    assert fam.params["nvfp4_gemm_kernel_s"] == pytest.approx(5e-6, rel=0.05)
    assert fam.params["nvfp4_act_s"] == pytest.approx(act_s, rel=0.1)
    assert fam.mean_error < 0.01
    params = {**bf16, **fam.params}
    rows = family_rows("gemm_nvfp4", table)
    pred = predict_family("gemm_nvfp4", rows, B200, params)
    assert pred == pytest.approx(rows.num("latency") * 1e-3, rel=0.02)


def test_fit_recovers_synthetic_attention_and_allreduce() -> None:
    """Prefill, decode and all-reduce rows made from known constants fit back to them
    (prefill over several head shapes, so the head-dim offset and KV-head work show)."""
    b = np.repeat([1.0, 4.0, 16.0], 8)
    s = np.tile([16.0, 64.0, 256.0, 512.0, 1024.0, 2048.0, 4096.0, 8192.0], 3)
    heads, hd = np.full(24, 32.0), np.full(24, 128.0)
    peak = H100.peak_tflops("bf16") * 1e12
    shapes = [(8, 1, 64), (32, 8, 128), (32, 32, 128), (64, 8, 256), (16, 16, 64)]
    pb, ps = np.tile(b, len(shapes)), np.tile(s, len(shapes))
    ph, pkv, phd = (np.repeat([sh[i] for sh in shapes], 24).astype(float) for i in range(3))
    work = 4 * (ph * (phd + 40.0) + 0.8 * pkv * phd)
    pre_ms = 1e3 * (12e-6 + work * (pb * ps * (ps + 1) / 2 + 300 * pb * ps) / (peak * 0.9))
    num = len(pb)
    prefill = _table(
        "context_attention", batch_size=pb, isl=ps, num_key_value_heads=pkv,
        kv_cache_dtype=["bfloat16"] * num, window_size=np.zeros(num), latency=pre_ms,
        kernel_source=["fa"] * num, num_heads=ph, head_dim=phd,
    )  # fmt: skip
    fam = fit_prefill_attention(prefill, H100, Path("/synthetic"))
    assert fam.params["attn_mfu_efficiency"] == pytest.approx(0.9, rel=0.02)
    assert fam.params["attn_query_pairs"] == pytest.approx(300, rel=0.05)
    assert fam.params["attn_head_dim_offset"] == pytest.approx(40, rel=0.05)
    assert fam.params["attn_kv_head_work"] == pytest.approx(0.8, rel=0.05)
    common = dict(kernel_source=["fa"] * 24, num_heads=heads, head_dim=hd)
    kvh = np.full(24, 8.0)
    moved = b * (s + 100) * 2 * kvh * hd * 2
    dec_ms = 1e3 * (10e-6 + moved / (H100.hbm_bandwidth_gbps * 1e9 * 0.9))
    decode = _table(
        "generation_attention", batch_size=b, isl=np.ones(24), step=s - 1,
        num_key_value_heads=kvh, kv_cache_dtype=["bfloat16"] * 24, window_size=np.zeros(24),
        latency=dec_ms, **common,
    )  # fmt: skip
    fam = fit_decode_attention(decode, H100, 0.6, Path("/synthetic"))
    assert fam.params["attn_bw_efficiency"] == pytest.approx(0.9, rel=0.02)
    assert fam.params["attn_decode_seq_tokens"] == pytest.approx(100, rel=0.05)
    gpus = np.repeat([2.0, 4.0, 8.0], 20)
    size = np.tile(2.0 ** np.arange(7, 27, 1.0), 3)
    eager = np.tile([0.0, 1.0], 30)
    x = np.array([4e-6, 5e-6, 6e-6, 0.5, 0.6, 0.7, 3e-6, 20e-6])
    link = H100.interconnect_gbps_per_direction * 1e9
    ar_ms = 1e3 * allreduce_predict(gpus, size * 2, eager, x, [2, 4, 8], link)
    backend = np.where(eager > 0, "vllm_eager", "vllm_graph")
    table = _table(
        "custom_allreduce", num_gpus=gpus, message_size=size, backend=backend, latency=ar_ms
    )
    fam = fit_allreduce(table, H100, Path("/synthetic"))
    assert fam.params["allreduce_efficiencies"] == pytest.approx([0.5, 0.6, 0.7], rel=0.02)
    assert fam.params["allreduce_eager_s"] == pytest.approx(3e-6, rel=0.05)
    assert fam.params["allreduce_eager_floor_s"] == pytest.approx(20e-6, rel=0.05)


def test_decode_attention_leaves_out_the_calls_l2_serves() -> None:
    """Calls reading 2-256 MB of KV made twice as fast as HBM allows (the collector's
    repeats keep such a cache in L2) neither pull the fit nor are judged; the note says
    how many were left out, and the calls under 2 MB and over 256 MB remain."""
    b = np.repeat([1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0], 9)
    s = np.tile(2.0 ** np.arange(6, 15), 7)  # 64 to 16,384 tokens of context
    num, kvh, hd = len(b), np.full(63, 8.0), np.full(63, 128.0)
    moved = b * (s + 100) * 2 * kvh * hd * 2
    dec_ms = 1e3 * (10e-6 + moved / (H100.hbm_bandwidth_gbps * 1e9 * 0.9))
    kv = b * s * 2 * kvh * hd * 2
    in_l2 = (kv > 2e6) & (kv < 256e6)
    dec_ms = np.where(in_l2, 1e3 * 10e-6 + (dec_ms - 1e3 * 10e-6) / 2.0, dec_ms)
    decode = _table(
        "generation_attention", batch_size=b, isl=np.ones(num), step=s - 1,
        num_key_value_heads=kvh, kv_cache_dtype=["bfloat16"] * num, window_size=np.zeros(num),
        latency=dec_ms, kernel_source=["fa"] * num, num_heads=np.full(num, 32.0), head_dim=hd,
    )  # fmt: skip
    assert 10 < in_l2.sum() < num - 10
    rows = family_rows("decode_attention", decode)
    assert rows.num_rows == num - in_l2.sum()
    assert not ((decode_kv_bytes(rows) > 2e6) & (decode_kv_bytes(rows) < 256e6)).any()
    fam = fit_decode_attention(decode, H100, 0.6, Path("/synthetic"))
    assert fam.rows == rows.num_rows
    assert fam.params["attn_bw_efficiency"] == pytest.approx(0.9, rel=0.02)
    assert fam.mean_error < 0.01
    assert any(f"{in_l2.sum()} calls reading 2-256 MB of KV left out" in n for n in fam.notes)


def test_decode_attention_fits_the_second_fixed_cost_of_grouped_calls() -> None:
    """Calls of two or more sequences at two or more KV heads made 4 us dearer (as
    FlashAttention-2's are on A100, L40S and RTX PRO 6000) give that cost back; the same
    rows without it give exactly 0 (not a float on the bound), and the grouped test is
    two or more of both."""
    b = np.repeat([1.0, 2.0, 4.0, 16.0], 16)
    s = np.tile(2.0 ** np.arange(1, 9), 8)  # 2 to 256 tokens: the calls' fixed cost
    kvh = np.tile(np.repeat([1.0, 8.0], 8), 4)
    num, hd = len(b), np.full(64, 128.0)
    moved = b * (s + 20) * 2 * kvh * hd * 2
    base_ms = 1e3 * (9e-6 + moved / (H100.hbm_bandwidth_gbps * 1e9 * 0.8))
    grouped = (b >= 2) & (kvh >= 2)
    for extra, expected in ((4e-6, 4e-6), (0.0, 0.0)):
        decode = _table(
            "generation_attention", batch_size=b, isl=np.ones(num), step=s - 1,
            num_key_value_heads=kvh, kv_cache_dtype=["bfloat16"] * num,
            window_size=np.zeros(num), latency=base_ms + 1e3 * extra * grouped,
            kernel_source=["fa"] * num, num_heads=np.full(num, 32.0), head_dim=hd,
        )  # fmt: skip
        fam = fit_decode_attention(decode, H100, 0.6, Path("/synthetic"))
        assert fam.params["attn_decode_grouped_s"] == pytest.approx(expected, abs=1e-7)
        assert fam.params["attn_decode_kernel_s"] == pytest.approx(9e-6, rel=0.02)
        assert fam.mean_error < 0.01
        params = {**fam.params, "attn_mfu_efficiency": 0.6}
        predicted = predict_family("decode_attention", decode, H100, params)
        assert predicted == pytest.approx(base_ms * 1e-3 + extra * grouped, rel=0.02)
    assert fam.params["attn_decode_grouped_s"] == 0.0


def test_fit_recovers_a_synthetic_all_to_all() -> None:
    """NCCL all-to-all rows made from known latencies, link shares and protocol step (at 2, 4
    and 8 GPUs, 256 to 256 Mi elements) fit back to them; other collectives are ignored."""
    gpus = np.repeat([2.0, 4.0, 8.0], 21)
    size = np.tile(2.0 ** np.arange(8, 29, 1.0), 3)
    x = np.array([6e-6, 7e-6, 8e-6, 0.55, 0.6, 0.65, 7e-6, 3e4])
    link = H100.interconnect_gbps_per_direction * 1e9
    ms = 1e3 * alltoall_predict(gpus, size * 2, x, [2, 4, 8], link)
    table = _table(
        "nccl", op_name=np.r_[["alltoall"] * 63, ["all_gather"] * 3],
        nccl_dtype=["half"] * 66, num_gpus=np.r_[gpus, [2.0, 4.0, 8.0]],
        message_size=np.r_[size, [1e6, 1e6, 1e6]], latency=np.r_[ms, [9.0, 9.0, 9.0]],
    )  # fmt: skip
    fam = fit_alltoall(table, H100, Path("/synthetic"))
    assert fam.rows == 63
    assert fam.params["alltoall_efficiencies"] == pytest.approx([0.55, 0.6, 0.65], rel=0.02)
    assert fam.params["alltoall_latencies_s"] == pytest.approx([6e-6, 7e-6, 8e-6], rel=0.05)
    assert fam.params["alltoall_protocol_s"] == pytest.approx(7e-6, rel=0.05)
    assert fam.mean_error < 0.01


@needs_data
@pytest.mark.parametrize(
    "name",
    [
        "gemm_bf16", "prefill_attention", "decode_attention", "allreduce", "moe_fp8",
        "moe_mxfp4", "gdn_prefill", "gdn_decode",
    ],
)  # fmt: skip
def test_shipped_h100_fit_reproduces_its_rows_in_aggregate(name: str) -> None:
    """The shipped H100 constants reproduce the measured H100 rows of each family: the summed
    time within 5 % and the median row within 3 % (rows scatter more one by one)."""
    doc = yaml.safe_load(
        (
            Path(__file__).resolve().parents[2] / "src/sincere/data/perf/kernels/H100-SXM.yaml"
        ).read_text()
    )
    params = {**doc["params"], "_gemm_kernel_s": doc["fit"]["gemm_kernel_s"]}
    table_name = FAMILY_TABLES[name]
    table = read_table(DATABASE / "h100_sxm", table_name, COLUMNS[table_name])
    assert table is not None
    rows = family_rows(name, table)
    measured = rows.num("latency") * 1e-3
    ratio = predict_family(name, rows, H100, params) / measured
    assert abs(float(np.median(ratio)) - 1.0) < 0.03
    assert abs(float(np.mean(ratio)) - 1.0) < 0.05


@needs_data
def test_linear_attention_decode_is_fitted_on_calls_whose_state_is_not_in_l2() -> None:
    """The L40S's decode calls whose state fits its 96 MB L2 run up to 12x faster than the
    next size up (the collector reuses one state); fitted on the calls that read HBM or are
    launch-bound, its rows come back within a few percent at a bandwidth share below 1."""
    table = read_table(DATABASE / "l40s", "gdn", COLUMNS["gdn"])
    assert table is not None
    everything = gdn_rows(table, "generation")
    kept = family_rows("gdn_decode", table)
    moved = gdn_decode_bytes(kept)
    assert kept.num_rows < everything.num_rows
    assert bool(np.all((moved < 2e6) | (moved > 256e6)))
    fam = fit_gdn("gdn_decode", table, get_accelerator("L40S"), DATABASE)
    assert fam.mean_error < 0.05
    assert 0.5 < fam.params["gdn_decode_bw_efficiency"] < 0.95


@needs_data
def test_the_triton_delta_rule_spills_its_intermediates_past_the_l2() -> None:
    """L40S runs vLLM's Triton delta rule: fitted with its intermediates through HBM once a
    call's outgrow the 96 MB L2, its prefill rows come back within 12 % on average (47 %
    without), the time per token growing with the call as measured; H100's rows (FlashInfer's
    fused kernel) are fitted without that term."""
    l40s = read_table(DATABASE / "l40s", "gdn", COLUMNS["gdn"])
    h100 = read_table(DATABASE / "h100_sxm", "gdn", COLUMNS["gdn"])
    assert l40s is not None and h100 is not None
    assert not fused_delta_rule(l40s) and fused_delta_rule(h100)
    acc = get_accelerator("L40S")
    fam = fit_gdn("gdn_prefill", l40s, acc, DATABASE)
    assert fam.mean_error < 0.12
    assert 1000.0 < fam.params["gdn_spill_bytes"] < 20000.0
    rows = family_rows("gdn_prefill", l40s)
    one = rows.where((rows.num("batch_size") == 1) & (rows.num("num_v_heads") == 16))
    assert one.num_rows > 10
    pred = predict_family("gdn_prefill", one, acc, fam.params)
    order = np.argsort(one.num("seq_len"))
    per_token = (pred / one.num("num_tokens"))[order]
    assert per_token[-1] > 1.5 * float(np.min(per_token))  # slower a token past the L2
    hopper = fit_gdn("gdn_prefill", h100, H100, DATABASE)
    assert "gdn_spill_bytes" not in hopper.params


def test_allreduce_grows_with_message_size_and_gpu_count() -> None:
    """The shipped H100 all-reduce: longer for larger messages and for more GPUs, eager
    (above the CUDA-graph sizes) dearer than in a graph (the measured 8 MB all-reduces over 8
    GPUs: 59 us eager, 51 in a graph), and far under the old fixed 32 us."""
    params = default_roofline_params(H100)
    for tp in (2, 4, 8):
        latency, _ = allreduce_terms(params, tp)
        assert latency < 10e-6
    model = get_model("llama-3-70b")
    comm = {
        (tp, n): Roofline(Deployment(model, H100, tp=tp)).parts(Batch.of(decode=[512] * n))
        for tp in (2, 4, 8)
        for n in (8, 256)
    }
    assert (
        comm[(2, 8)].communication_s < comm[(4, 8)].communication_s < comm[(8, 8)].communication_s
    )
    for tp in (2, 4, 8):
        assert comm[(tp, 8)].communication_s < comm[(tp, 256)].communication_s
    small = Roofline(Deployment(model, H100, tp=8)).parts(Batch.of(prefill=[(512, 0)]))
    eager = Roofline(Deployment(model, H100, tp=8)).parts(Batch.of(prefill=[(513, 0)]))
    added = eager.communication_s - small.communication_s  # 8.4 MB messages: above the floor
    assert added > 80 * 2 * 5e-6


@needs_data
def test_allreduce_follows_its_calls_and_a_step_pays_no_bump() -> None:
    """B200's all-reduce over 8 GPUs in a CUDA graph: the affine form misses its calls by 12 %
    on average and prices 256 KB at about a third of the 26 us measured; the factor by message
    size follows the calls within about 1 % on average, that one included. A step pays it
    under its monotone envelope: 16 sequences of an 8,192-wide model (262 KB a call) pay no
    more than 64 (1 MB, 17 us measured), as an engine that picks its algorithm by size runs
    them, yet more than the form; the communication grows with the batch, and ``shape_corrections:
    false`` gives the form."""
    table = read_table(DATABASE / "b200_sxm", "custom_allreduce", COLUMNS["custom_allreduce"])
    fam = fit_allreduce(table, B200, DATABASE)
    assert fam.form_error is not None and fam.form_error > 0.1 and fam.mean_error < 0.02
    grid = ShapeGrid.from_mapping(fam.params["allreduce_grid"], "allreduce_grid")
    assert grid.factor((256 * 1024, 8, 1)) > 2.0  # in a graph
    assert grid.factor((64 * 1024, 8, 1)) == pytest.approx(1.0, abs=0.1)
    params = default_roofline_params(B200)
    llama = Deployment(get_model("llama-3-70b"), B200, tp=8)
    with_grid = Roofline(llama, params)
    form = Roofline(llama, replace(params, shape_corrections=False))
    comm = {n: with_grid.parts(Batch.of(decode=[1024] * n)).communication_s for n in (8, 16, 64)}
    affine = form.parts(Batch.of(decode=[1024] * 16)).communication_s
    assert params.allreduce_grid is not None
    bumped = affine * params.allreduce_grid.factor_at((16 * 8192 * 2.0, 8, 1.0))
    assert comm[8] < comm[16] <= comm[64] * (1 + 1e-9)
    assert affine * 1.3 < comm[16] < bumped * 0.8
    dep = Deployment(get_model("deepseek-v3"), B200, tp=8, precision="fp8")
    batch = Batch.of(decode=[1024] * 16)
    assert (
        ArchStep(dep, params).parts(batch).communication_s
        > ArchStep(dep, replace(params, shape_corrections=False)).parts(batch).communication_s
    )


@pytest.mark.parametrize("gpu", ["H100-SXM", "H200", "A100-80GB", "L40S", "B200", "RTX-PRO-6000"])
def test_a_decode_steps_all_reduces_grow_with_the_batch_on_every_fitted_gpu(gpu: str) -> None:
    """On every GPU whose all-reduce is fitted by message size, a dense decode step's
    communication never falls as the batch grows (1-256 sequences, TP 2, 4 and 8): no
    measured bump makes a smaller batch dearer than a larger one (the envelope)."""
    accelerator = get_accelerator(gpu)
    params = default_roofline_params(accelerator)
    assert params.allreduce_grid is not None
    for tp in (2, 4, 8):
        step = Roofline(Deployment(get_model("llama-3.1-8b"), accelerator, tp=tp), params)
        comm = [step.parts(Batch.of(decode=[512] * n)).communication_s for n in range(1, 257)]
        drops = [n + 1 for n, (a, b) in enumerate(itertools.pairwise(comm)) if b < a * (1 - 1e-9)]
        assert drops == [], f"{gpu} TP {tp}: communication falls at {drops[:5]} sequences"


def test_moe_price_follows_skewed_routing_as_measured() -> None:
    """Qwen3-30B-A3B's experts under Zipf-skewed routing (s = 1.2): a 16-token batch touches
    fewer experts and is cheaper (H100's fused-MoE rows: x0.70 of balanced at 16 tokens), and
    the busiest expert's tail makes a large batch dearer than it would be without it."""
    dep = Deployment(get_model("qwen3-30b-a3b"), H100)
    params = default_roofline_params(H100)
    assert params.moe_tail_share > 0.0
    skew = MoEParams(routing_skew=1.2)
    decode = Batch.of(decode=[512] * 16)
    balanced = ArchStep(dep, params).parts(decode).experts_s
    assert ArchStep(dep, params, skew).parts(decode).experts_s < 0.9 * balanced
    prefill = Batch.of(prefill=[(4096, 0)])
    tailed = ArchStep(dep, params, skew).parts(prefill).experts_s
    untailed = replace(params, moe_tail_share=0.0)
    assert ArchStep(dep, untailed, skew).parts(prefill).experts_s < tailed
    more = ArchStep(dep, params).parts(Batch.of(prefill=[(8192, 0)])).experts_s
    assert more > ArchStep(dep, params).parts(prefill).experts_s


def test_fp8_gemms_take_their_own_efficiency_and_quantisation() -> None:
    """An fp8 deployment's GEMMs run at the fitted fp8 share of the fp8 peak plus the
    activation quantisation; bf16 ones are untouched by the fp8 constants."""
    dep = Deployment(get_model("llama-3-8b"), H100, precision="fp8")
    params = default_roofline_params(H100)
    assert params.fp8_mfu_efficiency is not None and params.fp8_act_s > 0
    fitted = Roofline(dep, params).parts(Batch.of(prefill=[(4096, 0)])).linear_s
    plain = replace(params, fp8_mfu_efficiency=None, fp8_act_s=0.0, fp8_gemm_kernel_s=0.0)
    assert fitted > Roofline(dep, plain).parts(Batch.of(prefill=[(4096, 0)])).linear_s
    bf16 = Deployment(get_model("llama-3-8b"), H100)
    assert Roofline(bf16, params).iteration_s(Batch.of(prefill=[(4096, 0)])) == Roofline(
        bf16, plain
    ).iteration_s(Batch.of(prefill=[(4096, 0)]))


def test_bad_allreduce_table_lengths_are_refused() -> None:
    """The per-GPU-count lists must line up; a mismatch names the fields."""
    with pytest.raises(ConfigError, match="one entry per GPU count"):
        RooflineParams(allreduce_gpus=(2, 4), allreduce_latencies_s=(1e-6,))


def test_unknown_gpu_folder_is_named(tmp_path: Path) -> None:
    """A database without the GPU's folder says which folders it has."""
    (tmp_path / "h100_sxm").mkdir()
    with pytest.raises(ConfigError, match="no kernel folder"):
        gpu_folder(tmp_path, "B200")
    result = runner.invoke(app, ["fit", "kernels", str(tmp_path), "--gpu", "nope"])
    assert result.exit_code != 0 and "--gpu names no kernel folder" in str(result.exception)


@needs_data
def test_cli_writes_a_fit_with_its_provenance(tmp_path: Path) -> None:
    """`sincere fit kernels DIR --gpu h100_sxm` writes the constants, the tables, the vLLM
    version, the rows and each family's error, and the file drives the roofline."""
    out = tmp_path / "h100.yaml"
    result = runner.invoke(
        app, ["fit", "kernels", str(DATABASE), "--gpu", "h100_sxm", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    doc = yaml.safe_load(out.read_text())
    assert doc["kind"] == "roofline" and doc["fit"]["versions"] == ["0.24.0"]
    families = doc["fit"]["families"]
    assert set(families) == {
        "gemm_bf16", "gemm_fp8", "prefill_attention", "decode_attention", "allreduce",
        "alltoall", "moe", "moe_ep", "moe_fp8", "moe_mxfp4", "moe_int4", "gdn_prefill",
        "gdn_decode", "mla_decode",
    }  # fmt: skip
    assert families["moe_fp8"]["notes"][0] == "fp8_block experts"
    assert families["alltoall"]["table"].endswith("comm/nccl/2.29.2/nccl_perf.parquet")
    assert doc["fit"]["nccl_versions"] == ["2.29.2"]
    assert families["gemm_bf16"]["table"].endswith("gemm/vllm/0.24.0/gemm_perf.parquet")
    assert all(f["rows"] > 0 and "bias" in f for f in families.values())
    assert "Apache-2.0" in doc["fit"]["source"]
    assert families["gemm_bf16"]["mean_error"] < families["gemm_bf16"]["form_mean_error"]
    params = {k: tuple(v) if isinstance(v, list) else v for k, v in doc["params"].items()}
    grids = {k: ShapeGrid.from_mapping(v, k) for k, v in params.items() if k.endswith("_grid")}
    assert set(grids) == {
        "gemm_bf16_grid", "gemm_fp8_grid", "prefill_attention_grid", "allreduce_grid"
    }  # fmt: skip
    prefill = families["prefill_attention"]
    assert prefill["mean_error"] < prefill["form_mean_error"]
    assert Roofline(Deployment(get_model("llama-3-8b"), H100), RooflineParams(**params | grids))


def _moe_rows(dtypes: list[str]) -> dict[str, Any]:
    """Fused-MoE rows of two shapes at 1 to 8k tokens, balanced and skewed, per dtype (wide
    enough that few calls fall in the L2 window :func:`out_of_l2` leaves out)."""
    tokens = np.tile(2.0 ** np.arange(0, 14, 1.0), 4)
    shape = np.repeat([0, 1], 28)
    dist = np.tile(np.repeat(["balanced", "power_law_1.2"], 14), 2)
    cols: dict[str, Any] = dict(
        num_tokens=tokens, hidden_size=np.where(shape, 16384.0, 8192.0),
        inter_size=np.where(shape, 1536.0, 768.0), topk=np.full(56, 8.0),
        num_experts=np.where(shape, 64.0, 128.0), moe_tp_size=np.ones(56),
        moe_ep_size=np.ones(56), distribution=dist, kernel_source=np.full(56, "fused"),
    )  # fmt: skip
    return {k: np.concatenate([v] * len(dtypes)) for k, v in cols.items()} | {
        "moe_dtype": np.repeat(dtypes, 56)
    }


def _tp_rows(shape: tuple[int, int, int, int], tps: list[int], dtype: str) -> dict[str, Any]:
    """Balanced fused-MoE rows of one ``(hidden, inter, experts, top-k)`` shape at 1 to 8k
    tokens over each of ``tps`` GPUs."""
    n = 14 * len(tps)
    hidden, inter, experts, topk = (np.full(n, float(v)) for v in shape)
    return dict(
        num_tokens=np.tile(2.0 ** np.arange(0, 14, 1.0), len(tps)), hidden_size=hidden,
        inter_size=inter, topk=topk, num_experts=experts,
        moe_tp_size=np.repeat(np.asarray(tps, dtype=float), 14), moe_ep_size=np.ones(n),
        distribution=np.full(n, "balanced"), kernel_source=np.full(n, "triton"),
        moe_dtype=np.full(n, dtype),
    )  # fmt: skip


def test_fit_recovers_narrow_and_unaligned_experts() -> None:
    """bf16 experts 1,856 wide over 1-16 GPUs, made with a narrow-expert offset of 100 and
    twice the time where the width per GPU is off a multiple of 16 (232 and 116 at 8 and
    16 GPUs), fit back to both; a table with every width aligned fits no factor."""
    cols = _tp_rows((8192, 1856, 128, 6), [1, 2, 4, 8, 16], "bfloat16")
    probe = _table("moe", latency=np.ones(70), **cols)
    unaligned = unaligned_widths(probe)
    assert list(np.floor(1856 / cols["moe_tp_size"][unaligned])) == [232.0] * 14 + [116.0] * 14
    peak, hbm = H100.peak_tflops("bf16") * 1e12, H100.hbm_bandwidth_gbps * 1e9
    x = np.array([0.6, 0.85, 25e-6, 0.0, 0.1e-6])
    seconds = moe_predict(widened(moe_features(probe), probe, 100.0), x, peak, hbm, 2.0, 2.5)
    seconds = np.where(unaligned, 2.0 * seconds, seconds)
    fam = fit_moe(_table("moe", latency=seconds * 1e3, **cols), H100, 2.5, Path("/s"))
    assert fam.mean_error < 0.01
    assert fam.params["moe_width_offset"] == pytest.approx(100.0, rel=0.05)
    assert fam.params["moe_unaligned_factor"] == pytest.approx(2.0, rel=0.02)
    keep = ~unaligned
    aligned = _table("moe", latency=seconds[keep] * 1e3, **{k: v[keep] for k, v in cols.items()})
    assert "moe_unaligned_factor" not in fit_moe(aligned, H100, 2.5, Path("/s")).params


def test_quantised_experts_fit_their_own_width_offset() -> None:
    """fp8 experts 2,048 wide over 1-32 GPUs, made as if 150 wider than they are, fit that
    offset back beside their efficiencies, whatever the bf16 fit's offset was."""
    cols = _tp_rows((7168, 2048, 256, 8), [1, 2, 4, 8, 16, 32], "fp8_block")
    probe = _table("moe", latency=np.ones(84), **cols)
    peak, hbm = H100.peak_tflops("fp8") * 1e12, H100.hbm_bandwidth_gbps * 1e9
    x = np.array([0.35, 0.8, 30e-6, 0.0, 0.1e-6])
    seconds = moe_predict(widened(moe_features(probe), probe, 150.0), x, peak, hbm, 1.0, 2.5)
    table = _table("moe", latency=seconds * 1e3, **cols)
    bf16 = {"moe_tail_share": 0.0, "overlap_exponent": 2.5, "moe_width_offset": 40.0}
    fam = fit_quant_moe("moe_fp8", table, H100, bf16, Path("/s"))
    assert fam.mean_error < 0.01
    assert fam.params["moe_fp8_width_offset"] == pytest.approx(150.0, rel=0.05)
    assert fam.params["moe_fp8_mfu_efficiency"] == pytest.approx(0.35, rel=0.02)


def test_relu2_experts_are_two_matrices_where_the_layer_itself_was_timed() -> None:
    """Nemotron 3 Nano's expert shape (2688 wide, 128 experts of 1856, top 6: relu2 experts)
    reads two matrices an expert when timed through the model's own layer, three through the
    older collections' gated harness; every other shape three."""
    cols: dict[str, Any] = dict(
        num_tokens=[1.0] * 3, hidden_size=[2688.0, 2688.0, 2048.0],
        inter_size=[1856.0, 1856.0, 768.0], topk=[6.0] * 3, num_experts=[128.0] * 3,
        moe_tp_size=[1.0] * 3, moe_ep_size=[1.0] * 3, distribution=["balanced"] * 3,
        kernel_source=["vllm_unquantizedfusedmoe_triton_tritonexperts", "vllm_fused_moe",
                       "vllm_unquantizedfusedmoe_triton_tritonexperts"],
    )  # fmt: skip
    rows = _table("moe", latency=np.ones(3), **cols)
    assert list(gated_experts(rows)) == [False, True, True]
    weights = moe_features(rows)[2]
    assert weights[0] == pytest.approx(6 * 2688 * 2 * 1856)
    assert weights[1] == pytest.approx(6 * 2688 * 3 * 1856)


def test_fused_moe_calls_in_l2_are_left_out() -> None:
    """Calls of at most 64 tokens an active expert whose active experts' weights take 2-256 MB
    are left out (the collector's repeats keep them in L2); larger weights, tinier ones and
    busier experts stay."""
    cols: dict[str, Any] = dict(
        num_tokens=[1.0, 1.0, 1.0, 4096.0], hidden_size=[4096.0, 4096.0, 128.0, 4096.0],
        inter_size=[1024.0, 16384.0, 128.0, 1024.0], topk=[8.0] * 4,
        num_experts=[128.0] * 4, moe_tp_size=[1.0] * 4, moe_ep_size=[1.0] * 4,
        distribution=["balanced"] * 4, kernel_source=["triton"] * 4,
    )  # fmt: skip
    rows = _table("moe", latency=np.ones(4), **cols)
    weights_mb = moe_features(rows)[2] * 2.0 / 1e6
    assert 2 < weights_mb[0] < 256 and weights_mb[1] > 256 and weights_mb[2] < 2
    kept = out_of_l2(rows, 2.0)
    assert list(kept.num("num_tokens")) == [1.0, 1.0, 4096.0]
    assert list(kept.num("inter_size")) == [16384.0, 128.0, 1024.0]


def test_bf16_experts_all_in_l2_refuse_with_the_reason() -> None:
    """A table whose bf16 calls all sit in the L2 window leaves too few rows to fit: the
    family says why instead of fitting nothing."""
    cols = _tp_rows((2048, 768, 128, 8), [1], "bfloat16")
    few = {k: v[:6] for k, v in cols.items()}  # 1-32 tokens: 2-256 MB of weights each
    with pytest.raises(ConfigError, match="outside the L2 window"):
        moe_rows(_table("moe", latency=np.ones(6), **few))


def test_fit_recovers_synthetic_fp8_and_mxfp4_experts() -> None:
    """fp8 experts (block-scaled rows preferred over per-tensor ones) at the fp8 rate with 1 B
    weights, and MXFP4 experts at the bf16 rate with 4.25-bit weights, made from known
    efficiencies and kernel cost, fit back to them; the file notes which rows were used."""
    cols = _moe_rows(["fp8_block", "fp8", "w4a16_mxfp4", "bfloat16"])
    bf16 = {"moe_tail_share": 0.1, "overlap_exponent": 2.5}
    truth = {"fp8_block": (0.3, 0.7, 40e-6), "w4a16_mxfp4": (0.45, 0.6, 30e-6)}
    probe = _table("moe", latency=np.ones(224), **cols)
    latency = np.full(224, 1.0)  # other dtypes' rows: far off, so picking them would show
    hbm = H100.hbm_bandwidth_gbps * 1e9
    for dtype, (mfu, bw, kernel) in truth.items():
        keep = cols["moe_dtype"] == dtype
        peak = H100.peak_tflops("fp8" if dtype == "fp8_block" else "bf16") * 1e12
        wbytes = 1.0 if dtype == "fp8_block" else 0.53125
        feat = moe_features(probe.where(keep))
        x = np.array([mfu, bw, kernel, 0.1])
        latency[keep] = 1e3 * moe_predict(feat, x, peak, hbm, wbytes, 2.5)
    table = _table("moe", latency=latency, **cols)
    for name, dtype in (("moe_fp8", "fp8_block"), ("moe_mxfp4", "w4a16_mxfp4")):
        fam = fit_quant_moe(name, table, H100, bf16, Path("/synthetic"))
        mfu, bw, kernel = truth[dtype]
        balanced = table.where(
            table.equals("moe_dtype", dtype) & table.equals("distribution", "balanced")
        )
        wbytes = 1.0 if dtype == "fp8_block" else 0.53125
        assert fam.rows == out_of_l2(balanced, wbytes).num_rows  # the balanced rows out of L2
        assert fam.notes[0] == f"{dtype} experts"
        assert fam.params[f"{name}_mfu_efficiency"] == pytest.approx(mfu, rel=0.02)
        assert fam.params[f"{name}_bw_efficiency"] == pytest.approx(bw, rel=0.02)
        assert fam.params[f"{name}_kernel_s"] == pytest.approx(kernel, rel=0.05)
    no_quant = _table("moe", latency=latency[-56:], **_moe_rows(["bfloat16"]))
    with pytest.raises(ConfigError, match="fp8_block or fp8 experts"):
        fit_quant_moe("moe_fp8", no_quant, H100, bf16, Path("/synthetic"))


BLACKWELL_EXPERTS = [
    # family, its rows' dtype, the other dtype beside them, the peak's precision, weight bytes
    ("moe_nvfp4", "nvfp4", "bfloat16", "nvfp4", 0.5625),
    ("moe_mxfp4_mxfp8", "w4a8_mxfp4_mxfp8", "w4a16_mxfp4", "fp8", 0.53125),
]


@pytest.mark.parametrize(("name", "dtype", "beside", "rate", "wbytes"), BLACKWELL_EXPERTS)
def test_fit_recovers_synthetic_blackwell_experts(
    name: str, dtype: str, beside: str, rate: str, wbytes: float
) -> None:
    """NVFP4 experts at B200's fp4 peak with 4.5-bit weights, and MXFP4 experts against MXFP8
    activations at its fp8 peak with 4.25-bit weights, made from known constants (0.3 us per
    active expert among them) fit back to them; the rows of the other dtype beside them are
    not taken."""
    cols = _moe_rows([dtype, beside])
    probe = _table("moe", latency=np.ones(112), **cols)
    keep = cols["moe_dtype"] == dtype
    peak, hbm = B200.peak_tflops(rate) * 1e12, B200.hbm_bandwidth_gbps * 1e9
    truth = {"mfu_efficiency": 0.45, "bw_efficiency": 0.65, "kernel_s": 25e-6, "expert_s": 0.3e-6}
    x = np.array([truth["mfu_efficiency"], truth["bw_efficiency"], truth["kernel_s"], 0.1])
    x = np.append(x, truth["expert_s"])
    latency = np.full(112, 1.0)
    latency[keep] = 1e3 * moe_predict(moe_features(probe.where(keep)), x, peak, hbm, wbytes, 2.5)
    table = _table("moe", latency=latency, **cols)
    bf16 = {"moe_tail_share": 0.1, "overlap_exponent": 2.5}
    fam = fit_quant_moe(name, table, B200, bf16, Path("/synthetic"))
    balanced = table.where(keep & table.equals("distribution", "balanced"))
    assert fam.rows == out_of_l2(balanced, wbytes).num_rows  # the balanced rows out of L2
    assert fam.notes[0] == f"{dtype} experts"
    for constant, value in truth.items():
        assert fam.params[f"{name}_{constant}"] == pytest.approx(value, rel=0.05), constant


def test_experts_are_fitted_on_balanced_rows_where_a_table_has_them() -> None:
    """The skewed rows beside the balanced ones are left out (their skew is not the step
    model's Zipf popularity): rows made 3x off under power-law routing do not move the fit.
    A table of skewed rows only is fitted on them, and the family says so."""
    cols = _moe_rows(["int4_wo"])
    probe = _table("moe", latency=np.ones(56), **cols)
    balanced = cols["distribution"] == "balanced"
    peak, hbm = H100.peak_tflops("bf16") * 1e12, H100.hbm_bandwidth_gbps * 1e9
    x = np.array([0.4, 0.7, 30e-6, 0.1, 0.2e-6])
    latency = 1e3 * moe_predict(moe_features(probe), x, peak, hbm, 0.5, 2.5)
    latency[~balanced] *= 3.0
    bf16 = {"moe_tail_share": 0.1, "overlap_exponent": 2.5}
    table = _table("moe", latency=latency, **cols)
    fam = fit_quant_moe("moe_int4", table, H100, bf16, Path("/s"))
    wbytes = PRECISION_BYTES["int4"]
    assert fam.rows == out_of_l2(table.where(balanced), wbytes).num_rows
    assert fam.notes == ("int4_wo experts", *fam.notes[1:])
    assert fam.params["moe_int4_bw_efficiency"] == pytest.approx(0.7, rel=0.05)
    assert fam.mean_error < 0.02 and not any("skewed" in note for note in fam.notes)
    skewed = {k: v[~balanced] for k, v in cols.items()}
    fam = fit_quant_moe("moe_int4", _table("moe", latency=latency[~balanced], **skewed), H100,
                        bf16, Path("/s"))  # fmt: skip
    assert fam.rows == out_of_l2(table.where(~balanced), wbytes).num_rows
    assert "no balanced rows: fitted on the skewed routings" in fam.notes
    bf16_rows = _moe_rows(["bfloat16"])
    assert set(moe_rows(_table("moe", latency=np.ones(56), **bf16_rows)).columns[
        "distribution"]) == {"balanced"}  # fmt: skip


def test_unused_kernel_sources_are_not_fitted_and_too_few_rows_refuse() -> None:
    """INT4 rows of ``vllm_marlin_int4_moe`` (UNUSED_SOURCES: 3-5x off the other tables'
    Marlin rows) are not fitted even when they are the most measured; with no other rows the
    family refuses, and so it does on fewer rows than its four constants need."""
    cols = _moe_rows(["int4_wo", "int4_wo"])
    cols["kernel_source"] = np.repeat(["vllm_marlin_int4_moe", "vllm_marlin_moe"], 56)
    cols["kernel_source"][:60] = "vllm_marlin_int4_moe"  # the unused source is the commoner
    probe = _table("moe", latency=np.ones(112), **cols)
    peak, hbm = H100.peak_tflops("bf16") * 1e12, H100.hbm_bandwidth_gbps * 1e9
    latency = 1e3 * moe_predict(moe_features(probe), np.array([0.4, 0.7, 30e-6, 0.1]), peak,
                                hbm, 0.5, 2.5)  # fmt: skip
    unused = cols["kernel_source"] == "vllm_marlin_int4_moe"
    latency[unused] *= 4.0
    bf16 = {"moe_tail_share": 0.1, "overlap_exponent": 2.5}
    fam = fit_quant_moe("moe_int4", _table("moe", latency=latency, **cols), H100, bf16, Path("/s"))
    assert fam.mean_error < 0.02 and fam.rows == int((~unused & (cols["distribution"] ==
                                                                 "balanced")).sum())  # fmt: skip
    only = {k: v[unused] for k, v in cols.items()}
    with pytest.raises(ConfigError, match="no fused-MoE rows without EP of int4_wo experts"):
        fit_quant_moe("moe_int4", _table("moe", latency=latency[unused], **only), H100, bf16,
                      Path("/s"))  # fmt: skip
    few = {k: v[~unused][:10] for k, v in cols.items()}
    with pytest.raises(ConfigError, match="too few fused-MoE rows of moe_int4"):
        fit_quant_moe("moe_int4", _table("moe", latency=latency[~unused][:10], **few), H100,
                      bf16, Path("/s"))  # fmt: skip


def test_fp8_and_mxfp4_experts_take_their_own_kernel_constants() -> None:
    """Qwen3-30B-A3B in fp8 on H100 prices its experts with the fp8-expert constants (a
    change of moe_fp8_kernel_s moves the experts part by it on each of 48 layers), GPT-OSS-20B
    in MXFP4 with the MXFP4 ones; a bf16 deployment is untouched by either."""
    params = default_roofline_params(H100)
    assert params.moe_fp8_mfu_efficiency is not None
    assert params.moe_mxfp4_mfu_efficiency is not None
    batch = Batch.of(decode=[512] * 16)
    cases = (
        ("qwen3-30b-a3b", "fp8", "moe_fp8_kernel_s"),
        ("gpt-oss-20b", "mxfp4", "moe_mxfp4_kernel_s"),
    )
    for model, precision, field in cases:
        dep = Deployment(get_model(model), H100, precision=precision)
        base = ArchStep(dep, params).parts(batch).experts_s
        moved = replace(params, **{field: getattr(params, field) + 1e-5})
        layers = get_model(model).num_moe_layers
        assert ArchStep(dep, moved).parts(batch).experts_s == pytest.approx(base + layers * 1e-5)
        bf16 = Deployment(get_model(model), H100)
        assert ArchStep(bf16, moved).parts(batch) == ArchStep(bf16, params).parts(batch)
    with pytest.raises(ConfigError, match="moe_fp8_kernel_s"):
        RooflineParams(moe_fp8_kernel_s=-1.0)


def test_a_version_takes_each_table_at_or_below_it(tmp_path: Path) -> None:
    """Asked for a release, each table comes from the newest version at or below it, else
    the oldest above; unasked, the newest; NCCL's own versions are not vLLM's."""
    for version in ("0.14.0", "0.19.0", "0.24.0"):
        folder = tmp_path / "comm" / "vllm" / version
        folder.mkdir(parents=True)
        (folder / "custom_allreduce_perf.parquet").write_bytes(b"")
    gemm = tmp_path / "gemm" / "vllm" / "0.22.0"
    gemm.mkdir(parents=True)
    (gemm / "gemm_perf.parquet").write_bytes(b"")
    picked = {v: find_table(tmp_path, "custom_allreduce", version=v) for v in ("0.20.1", None)}
    assert {v: p[1] for v, p in picked.items() if p} == {"0.20.1": "0.19.0", None: "0.24.0"}
    assert find_table(tmp_path, "gemm", version="0.19.0") == (gemm / "gemm_perf.parquet", "0.22.0")
    assert find_table(tmp_path, "moe", version="0.19.0") is None


@needs_data
def test_cli_fits_an_older_vllm_release(tmp_path: Path) -> None:
    """`--vllm-version 0.19.0` fits the RTX PRO 6000's 0.19 tables and says so: its
    two-GPU all-reduce is 2-3x slower than 0.24's over PCIe, and the fit shows it."""
    out = tmp_path / "rtx.yaml"
    argv = ["fit", "kernels", str(DATABASE), "--gpu", "rtx_pro_6000_server"]
    result = runner.invoke(app, [*argv, "--vllm-version", "0.19.0", "--out", str(out)])
    assert result.exit_code == 0, result.output
    doc = yaml.safe_load(out.read_text())
    assert doc["fit"]["engine_version"] == "0.19.0"
    # MXFP4 / NVFP4 experts were not measured under 0.19: the newest rows, beside 0.19's fits
    assert doc["fit"]["versions"] == ["0.19.0", "0.24.0"]
    families = doc["fit"]["families"]
    assert families["moe_mxfp4"]["table"].endswith("moe/vllm/0.24.0/moe_perf.parquet")
    assert families["gemm_bf16"]["table"].endswith("gemm/vllm/0.19.0/gemm_perf.parquet")
    assert "--vllm-version 0.19.0" in doc["fit"]["command"]
    newest = kernel_fits()["RTX-PRO-6000"]["params"]
    assert doc["params"]["allreduce_gpus"] == [2]
    assert doc["params"]["allreduce_efficiencies"][0] < 0.5 * newest["allreduce_efficiencies"][0]
    assert doc["fit"]["families"]["allreduce"]["mean_error"] < 0.15


def test_gemm_rows_leave_out_few_token_calls_over_weights_l2_holds() -> None:
    """At most 64 tokens over 2-256 MB of weights (the collector's repeats keep such
    weights in L2) are left out; more tokens, or weights past 256 MB, stay."""
    m = np.array([16.0, 64.0, 65.0, 16.0, 16.0])
    n = np.array([4096.0, 4096.0, 4096.0, 28672.0, 8192.0])
    k = np.array([4096.0, 4096.0, 4096.0, 8192.0, 8192.0])  # 32, 32, 32, 448, 128 MB
    table = _table(
        "gemm", gemm_dtype=["bfloat16"] * 5, kernel_source=["torch.nn.functional.linear"] * 5,
        m=m, n=n, k=k, latency=np.ones(5),
    )  # fmt: skip
    kept = family_rows("gemm_bf16", table)
    assert sorted(zip(kept.num("m").tolist(), kept.num("n").tolist(), strict=True)) == [
        (16.0, 28672.0),
        (65.0, 4096.0),
    ]


def _mla_rows(levels: bool) -> KernelTable:
    """MLA decode module rows made from known constants: the context's part of
    :func:`mla_context_s` at (mfu 0.6, bf16 latent 0.8, fp8 0.7, 1.5 lone sequences), each
    series on a level of its own (the module's projections) when ``levels``."""
    heads, batch, ctx = [1.0, 16.0, 128.0], [1.0, 8.0, 64.0, 512.0], 2.0 ** np.arange(1, 18)
    h, b, c, fp8 = (a.ravel() for a in np.meshgrid(heads, batch, ctx, [0.0, 1.0], indexing="ij"))
    peak, hbm = B200.peak_tflops("bf16") * 1e12, B200.hbm_bandwidth_gbps * 1e9
    compute = 2 * h * (2 * 512 + 64) * b * c / (peak * 0.6)
    memory = (b + 1.5) * c * 576 * np.where(fp8 > 0, 1.0, 2.0) / (hbm * np.where(fp8 > 0, 0.7, 0.8))
    level = 30e-6 + 0.1e-6 * b + 0.2e-6 * h if levels else np.full(len(h), 30e-6)
    num = len(h)
    return _table(
        "mla_generation", kernel_source=["FLASHINFER_MLA"] * num, batch_size=b, step=c,
        num_heads=h, kv_cache_dtype=np.where(fp8 > 0, "fp8", "bfloat16"),
        gemm_type=["bfloat16"] * num, latency=1e3 * (level + np.maximum(compute, memory)),
    )  # fmt: skip


def test_fit_recovers_synthetic_mla_decode_under_each_series_level() -> None:
    """MLA decode rows made from known constants fit back to them, whatever level each
    (heads, batch) series starts from; the context's part is followed to the row."""
    fam = fit_mla_decode(_mla_rows(levels=True), B200, Path("/synthetic"))
    assert fam.params["mla_decode_mfu_efficiency"] == pytest.approx(0.6, rel=0.03)
    assert fam.params["mla_decode_bw_efficiency"] == pytest.approx(0.8, rel=0.02)
    assert fam.params["mla_decode_fp8_bw_efficiency"] == pytest.approx(0.7, rel=0.02)
    assert fam.params["mla_decode_lone_seqs"] == pytest.approx(1.5, rel=0.05)
    assert fam.mean_error < 0.01
    note = next(n for n in fam.notes if n.startswith("the context's part"))
    assert "misses by 0.0 %" in note or "misses by 0.1 %" in note


def test_mla_decode_without_fp8_rows_takes_the_bf16_efficiency() -> None:
    """A table without fp8 latent rows fits one efficiency and says so."""
    rows = _mla_rows(levels=False)
    bf16 = rows.where(rows.equals("kv_cache_dtype", "bfloat16"))
    fam = fit_mla_decode(bf16, B200, Path("/synthetic"))
    p = fam.params
    assert p["mla_decode_fp8_bw_efficiency"] == p["mla_decode_bw_efficiency"]
    assert p["mla_decode_bw_efficiency"] == pytest.approx(0.8, rel=0.02)
    assert any("no fp8 latent-cache rows" in n for n in fam.notes)


@needs_data
def test_mla_decode_prices_deepseek_from_its_measured_modules() -> None:
    """DeepSeek-V3's decode attention on B200 and H100 takes the constants fitted to vLLM's
    MLA modules: the step's attention is the fitted terms (an fp8 latent its own share of
    HBM); a GPU without MLA rows (A100) takes the mean of the GPUs running its MLA kernel
    (vLLM's Triton one: L40S and RTX PRO 6000)."""
    model = get_model("deepseek-v3")
    batch = Batch.of(decode=[4096] * 64)
    for acc in (B200, H100):
        params = default_roofline_params(acc)
        assert params.mla_decode_bw_efficiency is not None
        assert params.mla_decode_mfu_efficiency is not None
        fitted = ArchStep(Deployment(model, acc, tp=8), params).parts(batch).attention_s
        plain = replace(params, mla_decode_mfu_efficiency=None, mla_decode_bw_efficiency=None)
        before = ArchStep(Deployment(model, acc, tp=8), plain).parts(batch).attention_s
        assert fitted != pytest.approx(before, rel=0.01)
        bf16 = ArchStep(Deployment(model, acc, tp=8), params)
        fp8 = ArchStep(Deployment(model, acc, tp=8, kv_precision="fp8"), params)
        assert bf16._mla is not None and fp8._mla is not None
        hbm = acc.hbm_bandwidth_gbps * 1e9
        assert bf16._mla[1] == pytest.approx(576 * 2 / (hbm * params.mla_decode_bw_efficiency))
        assert params.mla_decode_fp8_bw_efficiency is not None
        assert fp8._mla[1] == pytest.approx(576 / (hbm * params.mla_decode_fp8_bw_efficiency))
    a100 = default_roofline_params(get_accelerator("A100-80GB"))
    triton = [default_roofline_params(get_accelerator(n)) for n in ("L40S", "RTX-PRO-6000")]
    assert a100.mla_decode_bw_efficiency == pytest.approx(
        sum(p.mla_decode_bw_efficiency or 0.0 for p in triton) / 2
    )
    assert ArchStep(Deployment(model, get_accelerator("A100-80GB"), tp=8), a100)._mla is not None
    amd = get_accelerator("MI300X")
    assert default_roofline_params(amd).mla_decode_mfu_efficiency is None  # no class: none


def _ep_rows(eps: list[int]) -> dict[str, Any]:
    """Balanced bf16 rows of Qwen3-235B's layer (4,096 hidden, 1,536 wide, 128 experts, top
    8) at 1 to 8k tokens, the experts spread over each of ``eps`` GPUs."""
    n = 14 * len(eps)
    cols = _tp_rows((4096, 1536, 128, 8), [1] * len(eps), "bfloat16")
    return (
        cols
        | {"moe_ep_size": np.repeat(np.asarray(eps, dtype=float), 14)}
        | {"kernel_source": np.full(n, "triton")}
    )


def test_expert_parallel_rows_fit_the_pass_over_other_gpus_pairs() -> None:
    """Rows of one GPU of 2-64 under EP, made as the bf16 experts price that GPU's own pairs
    plus 1.6 times the other GPUs' pairs' bytes beyond half the L2 at HBM speed plus 12 us a
    call, fit all three back, and the step model prices an EP deployment with them: a TP-8
    group with EP 8 and no attention DP gains exactly that pass and cost per MoE layer (a
    call whose pass fits in the L2 share, the cost alone); without EP, or with attention DP
    (whose all-to-all sends each GPU its own pairs), nothing changes."""
    from sincere.fit.kernels import fit_moe_ep, foreign_bytes
    from sincere.perf.moe import foreign_pair_bytes

    experts = {"moe_mfu_efficiency": 0.6, "moe_bw_efficiency": 0.85, "moe_kernel_s": 25e-6,
               "moe_tail_share": 0.0, "moe_expert_s": 0.1e-6, "overlap_exponent": 2.5}  # fmt: skip
    cols = _ep_rows([2, 4, 8, 16, 64])
    probe = _table("moe", latency=np.ones(70), **cols)
    hbm = H100.hbm_bandwidth_gbps * 1e9
    own = predict_family("moe", probe, H100, experts)
    assert (np.diff(own.reshape(5, 14)[:, -1]) < 0).all()  # at 8k tokens: 1/ep of the pairs
    l2 = 0.5 * H100.l2_cache_mb * 1e6
    assert (foreign_bytes(probe) < l2).any() and (foreign_bytes(probe) > 2 * l2).any()
    seconds = own + 1.6 * np.maximum(foreign_bytes(probe) - l2, 0.0) / hbm + 12e-6
    table = _table("moe", latency=seconds * 1e3, **cols)
    fam = fit_moe_ep(table, H100, experts, Path("/s"))
    assert fam.params["moe_ep_foreign_factor"] == pytest.approx(1.6, rel=0.01)
    assert fam.params["moe_ep_kernel_s"] == pytest.approx(12e-6, rel=0.02)
    assert fam.params["moe_ep_onchip_share"] == pytest.approx(0.5, rel=0.02)
    assert fam.mean_error < 0.01 and fam.notes[0] == "triton under EP"
    fitted = {**experts, **fam.params}
    assert np.allclose(predict_family("moe_ep", table, H100, fitted), seconds)
    one = _table("moe", latency=np.ones(14), **_tp_rows((4096, 1536, 128, 8), [1], "bfloat16"))
    assert not foreign_bytes(one).any()  # one GPU holding every expert: no other GPU's pairs
    # a whole TP-8 group with EP 8 prices the pass per GPU over every token it holds
    model = get_model("qwen3-235b-a22b")
    base = default_roofline_params(H100)
    params = replace(base, moe_ep_foreign_factor=1.6, moe_ep_kernel_s=12e-6, moe_ep_onchip_share=0)
    none = replace(base, moe_ep_foreign_factor=0.0, moe_ep_kernel_s=0.0, moe_ep_onchip_share=0)
    tokens = 4096
    with_ep = Deployment(model, H100, "bf16", tp=8, ep=8)
    added = (
        ArchStep(with_ep, params).layer_linear(tokens)[2]
        - ArchStep(with_ep, none).layer_linear(tokens)[2]
    )
    width = model.expert_intermediate_size
    pass_s = 1.6 * foreign_pair_bytes(tokens, 8, model.hidden_size, width, True, 8, 2.0) / hbm
    want = pass_s + 12e-6
    moe_share = model.num_moe_layers / model.num_layers  # layer_linear averages the layers
    assert added == pytest.approx(want * moe_share, rel=1e-9)
    # with an L2 share the pass is priced beyond it: a small call's fits, the cost alone
    kept = replace(params, moe_ep_onchip_share=0.5)
    for n, cost in ((4096, want - 1.6 * 0.5 * H100.l2_cache_mb * 1e6 / hbm), (16, 12e-6)):
        gained = (
            ArchStep(with_ep, kept).layer_linear(n)[2] - ArchStep(with_ep, none).layer_linear(n)[2]
        )
        assert gained == pytest.approx(cost * moe_share, rel=1e-9)
    for dep in (Deployment(model, H100, "bf16", tp=8),
                Deployment(model, H100, "bf16", tp=1, ep=8, attention_dp=8)):  # fmt: skip
        a, b = ArchStep(dep, params), ArchStep(dep, none)
        assert a.layer_linear(tokens) == b.layer_linear(tokens)
    for name in ("moe_ep_foreign_factor", "moe_ep_kernel_s", "moe_ep_onchip_share"):
        with pytest.raises(ConfigError, match=name):
            RooflineParams(**{name: -1.0})
