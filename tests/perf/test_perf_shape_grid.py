"""A kernel family's factor by shape: interpolation, its fit, and how GEMMs take it."""

from __future__ import annotations

import itertools
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import yaml

from sincere.catalog import get_accelerator, get_model
from sincere.core.errors import ConfigError
from sincere.fit.kernel_grids import GEMM_GRID_AXES, fit_shape_grid, grid_log_factors
from sincere.fit.output import write_params
from sincere.perf import Batch, Deployment, Roofline
from sincere.perf.calibration import default_roofline_params
from sincere.perf.factory import make_step_model
from sincere.perf.gemm import gemm_s
from sincere.perf.roofline import RooflineParams
from sincere.perf.shape_grid import GridAxis, ShapeGrid

H100 = get_accelerator("H100-SXM")
TWO_AXES = (GridAxis(0.0, 4.0, 3), GridAxis(8.0, 10.0, 2))  # nodes 1, 4, 16 and 256, 1024


def test_factor_is_the_node_value_at_a_node_and_linear_in_log2_between() -> None:
    """At a node the factor is exp of its value; halfway (in log2) between two nodes of one
    axis it is exp of their mean; beyond the outer nodes it stays at theirs."""
    grid = ShapeGrid(TWO_AXES, (0.0, 0.2, 0.1, -0.1, 0.3, 0.5))  # rows: tokens 1, 4, 16
    assert grid.factor((4, 256)) == pytest.approx(math.exp(0.1))
    assert grid.factor((16, 1024)) == pytest.approx(math.exp(0.5))
    assert grid.log_factor((2, 256)) == pytest.approx(0.05)  # log2 2 = 1: halfway to 4
    assert grid.log_factor((4, 512)) == pytest.approx(0.0)  # halfway between 0.1 and -0.1
    assert grid.log_factor((8, 512)) == pytest.approx(0.25 * (0.1 - 0.1 + 0.3 + 0.5))
    assert grid.factor((0.25, 64)) == grid.factor((1, 256))  # clamped below
    assert grid.factor((1e6, 1e9)) == grid.factor((16, 1024))  # and above


def test_lowest_ahead_lowers_a_bump_to_the_cost_of_a_larger_node() -> None:
    """A cost ``(fixed + slope * s) * factor`` with a bump at s = 4 (factor e^0.5 there, 1 at
    16): under a flat form (100 + s) it pays at 4 no more than at 16, as a factor of its own
    form 116 / 104; at 16, where nothing larger is cheaper, and with nothing bumped, the
    factor is the grid's own; under a steep form (1 + s) the larger node is dearer for all
    its lower factor and the bump stays. What is asked once is kept."""
    grid = ShapeGrid(TWO_AXES, (0.0, 0.0, 0.5, 0.0, 0.0, 0.0))
    assert grid.factor((4, 256)) == pytest.approx(math.exp(0.5))
    assert grid.lowest_ahead((4, 256), 100.0, 1.0) == pytest.approx(116.0 / 104.0)
    assert grid.lowest_ahead((16, 256), 100.0, 1.0) == pytest.approx(1.0)
    assert grid.lowest_ahead((4, 1024), 100.0, 1.0) == pytest.approx(1.0)
    assert grid.lowest_ahead((4, 256), 1.0, 1.0) == pytest.approx(math.exp(0.5))
    sizes = np.geomspace(1, 16, 33)
    costs = [(100 + s) * grid.lowest_ahead((s, 256), 100.0, 1.0) for s in sizes]
    assert all(b >= a - 1e-9 for a, b in itertools.pairwise(costs))
    assert (4.0, 256.0, 100.0, 1.0) in grid._ahead


def test_vectorised_factors_match_the_scalar_ones() -> None:
    """:func:`grid_log_factors` (the fit's, over many rows) agrees with
    :meth:`ShapeGrid.log_factor` (the step model's, one GEMM at a time)."""
    rng = np.random.default_rng(0)
    grid = ShapeGrid(GEMM_GRID_AXES, tuple(rng.normal(0.0, 0.2, 225)))
    sizes = [rng.integers(1, 2**17, 500).astype(float) for _ in range(3)]
    sizes[1] = rng.integers(64, 2**18, 500).astype(float)
    vector = grid_log_factors(grid, sizes)
    scalar = [grid.log_factor(row) for row in zip(*sizes, strict=True)]
    assert np.allclose(vector, scalar, rtol=0, atol=1e-12)


def test_the_fit_recovers_a_factor_the_grid_can_express() -> None:
    """Rows whose log residual is a grid's own interpolation (no noise) give back that
    grid's nodes under a vanishing ridge; the default ridge only shrinks them toward 0,
    most where few rows reach (the corners)."""
    rng = np.random.default_rng(1)
    truth = ShapeGrid(GEMM_GRID_AXES, tuple(rng.normal(0.0, 0.15, 225)))
    sizes = [2.0 ** rng.uniform(0, 16, 20_000), 2.0 ** rng.uniform(8, 16, 20_000)]
    sizes.append(2.0 ** rng.uniform(8, 16, 20_000))
    target = grid_log_factors(truth, sizes)
    exact = fit_shape_grid(sizes, target, GEMM_GRID_AXES, ridge=1e-9)
    assert np.allclose(exact.log_factors, truth.log_factors, atol=1e-6)
    shrunk = np.asarray(fit_shape_grid(sizes, target, GEMM_GRID_AXES).log_factors)
    assert np.all(np.abs(shrunk) <= np.abs(truth.log_factors) + 0.05)
    assert np.sqrt(np.mean((grid_log_factors(ShapeGrid(GEMM_GRID_AXES, tuple(shrunk)), sizes)
                            - target) ** 2)) < 0.02  # fmt: skip


def test_a_node_no_row_reaches_stays_at_one() -> None:
    """The ridge pulls a node without data to a factor of 1 (log 0)."""
    sizes = [np.full(50, 1.0), np.full(50, 256.0), np.full(50, 256.0)]  # one corner only
    grid = fit_shape_grid(sizes, np.full(50, 0.3), GEMM_GRID_AXES)
    assert grid.log_factors[0] == pytest.approx(0.3, abs=0.01)
    assert all(v == 0.0 for v in grid.log_factors[1:])


def test_bad_grids_are_refused_with_what_was_wrong() -> None:
    """Wrong counts, unknown keys, non-finite factors and degenerate axes say so."""
    with pytest.raises(ConfigError, match="one log factor per node"):
        ShapeGrid(TWO_AXES, (0.0,) * 5)
    with pytest.raises(ConfigError, match="must be finite"):
        ShapeGrid(TWO_AXES, (0.0,) * 5 + (math.nan,))
    with pytest.raises(ConfigError, match="hi > lo"):
        GridAxis(4.0, 4.0, 3)
    with pytest.raises(ConfigError, match="gemm_bf16_grid must be a mapping"):
        ShapeGrid.from_mapping({"axes": [[0, 4, 3]], "values": [0, 0, 0]}, "gemm_bf16_grid")
    with pytest.raises(ConfigError, match="triples"):
        ShapeGrid.from_mapping({"axes": [[0, 4]], "log_factors": [0, 0]}, "g")
    # interpreted, the params' own check names the field; compiled (ShapeGrid is a native
    # class there), the constructor's type check stops it first, naming the type wanted
    with pytest.raises((ConfigError, TypeError), match=r"shape grid|shape_grid\.ShapeGrid"):
        RooflineParams(gemm_bf16_grid={"axes": [[0, 4, 3]], "log_factors": [0, 0, 0]})  # type: ignore[arg-type]


def test_round_trip_through_a_fit_file() -> None:
    """:meth:`ShapeGrid.as_dict` is what :meth:`ShapeGrid.from_mapping` reads back."""
    grid = ShapeGrid(TWO_AXES, (0.0, 0.25, -0.5, 0.125, 1.0, -1.0))
    assert ShapeGrid.from_mapping(grid.as_dict(), "g") == grid


def test_a_gemm_takes_its_factor_whole() -> None:
    """:func:`gemm_s` with a grid is the form's time times the factor at (tokens, n, k)."""
    params = RooflineParams(mfu_efficiency=0.8, bw_efficiency=0.9, overlap_exponent=2.0)
    grid = ShapeGrid(GEMM_GRID_AXES, tuple(0.01 * i for i in range(225)))
    rates = (989e12, 3.35e12)
    for tokens in (1, 37, 512, 8192):
        form = gemm_s(params, 4096, 14336, 2.0, tokens, rates, (3e-6, 8.0, 1))
        corrected = gemm_s(params, 4096, 14336, 2.0, tokens, rates, (3e-6, 8.0, 1), grid)
        assert corrected == pytest.approx(form * grid.factor((tokens, 14336, 4096)))


def test_fp8_gemms_step_at_their_own_token_tile() -> None:
    """H100's fp8 GEMMs were fitted with a token tile of their own (256: its fp8 kernels'
    time steps just above multiples of 256 tokens, its bf16 ones' do not): a compute-bound
    fp8 GEMM of 257 tokens pays for 512, its bf16 twin for 257; without the fp8 tile the
    bf16 one's applies."""
    from sincere.perf.roofline import quantisation_terms

    params = replace(default_roofline_params(H100), shape_corrections=False)
    assert params.fp8_token_tile == 256 and params.token_tile == 1
    quant = quantisation_terms(params, "fp8")
    assert quant is not None and quant[2] == 256
    rates = (1979e12, 3.35e12)

    def fp8(tokens: int, q: tuple[float, float, int]) -> float:
        return gemm_s(params, 8192, 28672, 1.0, tokens, rates, q)

    step = fp8(257, quant) - fp8(256, quant)
    assert step > 0.5 * (fp8(512, quant) - fp8(256, quant))  # a whole tile more at 257
    untiled = quantisation_terms(replace(params, fp8_token_tile=None), "fp8")
    assert untiled is not None and untiled[2] == 1
    assert fp8(257, untiled) - fp8(256, untiled) < 0.05 * step


def test_the_shipped_h100_fit_prices_gemms_with_its_grids() -> None:
    """H100's defaults carry the bf16 and fp8 GEMM grids and prefill attention's; a step
    with them differs from the form alone by the GEMMs' factors and, where it prefills, by
    prefill attention's (decode attention and the rest untouched), and
    ``shape_corrections: false`` in a step-model block gives the form alone."""
    params = default_roofline_params(H100)
    assert isinstance(params.gemm_bf16_grid, ShapeGrid)
    assert isinstance(params.gemm_fp8_grid, ShapeGrid) and params.gemm_nvfp4_grid is None
    assert isinstance(params.prefill_attention_grid, ShapeGrid)
    dep = Deployment(get_model("llama-3.1-8b"), H100)
    decode = Batch.of(decode=[2048] * 24)
    on = Roofline(dep, params).parts(decode)
    off = Roofline(dep, replace(params, shape_corrections=False)).parts(decode)
    assert on.attention_s == off.attention_s and on.linear_s != off.linear_s
    batch = Batch.of(decode=[2048] * 24, prefill=[(512, 0)])
    on = Roofline(dep, params).parts(batch)
    off = Roofline(dep, replace(params, shape_corrections=False)).parts(batch)
    assert on.attention_s != off.attention_s
    block = make_step_model("roofline", dep, {"shape_corrections": False})
    assert block.iteration_s(batch) == Roofline(
        dep, replace(params, shape_corrections=False)
    ).iteration_s(batch)


def test_a_kernel_fit_file_with_grids_drives_the_step_model(tmp_path: Path) -> None:
    """A parameter file as ``sincere fit kernels`` writes it (grids as mappings) is read
    through the step-model block: the grid it holds is the one the GEMMs take."""
    grid = ShapeGrid(GEMM_GRID_AXES, (0.5,) * 225)  # every GEMM 1.65x the form
    path = write_params({"kind": "roofline", "params": {"gemm_bf16_grid": grid.as_dict()}},
                        tmp_path / "fit.yaml")  # fmt: skip
    assert yaml.safe_load(path.read_text())["params"]["gemm_bf16_grid"]["axes"][0] == [0.0, 16.0, 9]
    dep = Deployment(get_model("llama-3.1-8b"), H100)
    params = yaml.safe_load(path.read_text())["params"]
    model = make_step_model("roofline", dep, params)
    form = Roofline(dep, replace(default_roofline_params(H100), shape_corrections=False))
    gemm = form.kernels.gemm_s(form.kernels.gemms[2], 64)
    assert model.kernels.gemm_s(model.kernels.gemms[2], 64) == pytest.approx(gemm * math.exp(0.5))


def test_the_factor_along_the_first_axis_is_the_same_number() -> None:
    """:meth:`ShapeGrid.factor_along` (a GEMM's kept line) equals :meth:`ShapeGrid.factor`
    at every token count, nodes, between them and beyond the outer ones."""
    rng = np.random.default_rng(2)
    grid = ShapeGrid(GEMM_GRID_AXES, tuple(rng.normal(0.0, 0.2, 225)))
    for n, k in ((6144, 4096), (300, 70_000), (65_536, 256)):
        for tokens in (0.5, 1, 3, 4, 37, 512, 4096, 65_536, 10**6):
            assert grid.factor_along(tokens, (n, k)) == pytest.approx(
                grid.factor((tokens, n, k)), rel=1e-12
            )


def test_prefill_attention_takes_its_factor_at_the_chunks_shape() -> None:
    """A prefill's attention kernel is the form's times the grid at (mean query tokens per
    chunk, chunks, the GPU's query heads, its query heads per KV head), in the engines' fast
    path and in the parts alike; Llama-3.1-70B at TP 8 (8 heads a GPU over one KV head)
    prefilling one 1,024-token prompt alone is slower than the form says (few blocks for
    the SMs), and an MLA model takes no factor."""
    from sincere.perf.shape_grid import prefill_factor

    params = default_roofline_params(H100)
    grid = params.prefill_attention_grid
    assert grid is not None
    dep = Deployment(get_model("llama-3.1-70b"), H100, tp=8)
    model = Roofline(dep, params)
    assert model.kernels.coef.q_heads == 8
    assert model.kernels.coef.kv_group == 8.0
    form = Roofline(dep, replace(params, shape_corrections=False))
    one = Batch.of(prefill=[(1024, 0)])
    factor = grid.factor((1024, 1, 8, 8))
    coef = model.kernels.coef
    assert prefill_factor(coef.prefill_grid, coef.q_heads, 1024, 1, coef.kv_group) == pytest.approx(
        factor, rel=1e-12
    )
    assert factor > 1.2
    attn = model.kernels.prefill_attn_s(1.0, 1, 1024, 0, one.prefill_attn_pairs)
    plain = form.kernels.prefill_attn_s(1.0, 1, 1024, 0, one.prefill_attn_pairs)
    assert attn == pytest.approx(plain * factor, rel=1e-12)
    mixed = Batch.of(prefill=[(700, 300), (300, 0)], decode=[900] * 5)
    assert model.iteration_s(mixed) == pytest.approx(model.parts(mixed).total_s, rel=1e-12)
    mla = Deployment(get_model("deepseek-v3"), get_accelerator("H200"), tp=8)
    assert Roofline(mla, default_roofline_params(mla.accelerator)).kernels.coef.prefill_grid is None


def test_prefill_factor_reads_the_kv_group_and_old_grids_without_it() -> None:
    """The shipped H100 grid tells MHA from GQA at the same query heads (its fourth axis);
    a grid of three axes, as fits before that axis wrote, is read at its three sizes
    whatever the group."""
    from sincere.perf.shape_grid import kv_group, prefill_factor

    grid = default_roofline_params(H100).prefill_attention_grid
    assert grid is not None and len(grid.axes) == 4
    mha = prefill_factor(grid, 32, 4096, 4, kv_group(32, 32))
    gqa = prefill_factor(grid, 32, 4096, 4, kv_group(32, 4))
    assert mha == pytest.approx(grid.factor((1024, 4, 32, 1)), rel=1e-12)
    assert gqa == pytest.approx(grid.factor((1024, 4, 32, 8)), rel=1e-12)
    assert mha != pytest.approx(gqa, rel=1e-3)
    assert kv_group(8, 16) == 1.0  # more KV heads than query heads (replicated): 1
    old = ShapeGrid(grid.axes[:3], tuple(0.01 * i for i in range(8 * 5 * 4)))
    assert prefill_factor(old, 32, 4096, 4, 1.0) == prefill_factor(old, 32, 4096, 4, 8.0)
    assert prefill_factor(old, 32, 4096, 4, 8.0) == pytest.approx(
        old.factor((1024, 4, 32)), rel=1e-12
    )
