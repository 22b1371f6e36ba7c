"""``sincere step``: one iteration's time and its parts, from the command line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from tests.conftest import NEW_MODELS
from typer.testing import CliRunner

import sincere.cli.step  # noqa: F401  (registers the command)
from sincere.catalog import get_accelerator, get_model
from sincere.cli.app import app
from sincere.core.errors import ConfigError
from sincere.perf import Batch, Deployment, Roofline
from sincere.perf.execution import PRESETS, execution_params, with_execution

runner = CliRunner()
KERNELS = Path(__file__).resolve().parents[2] / "src/sincere/data/perf/kernels"


def test_json_gives_the_iteration_and_its_parts() -> None:
    """`--json` prints {"iteration_s", "parts", "constants"}; parts sum to the iteration, and
    it is the default A100 roofline's time of that batch as today's engine runs it (vLLM V1,
    256 sequences on an A100: this mixed batch of 512 tokens pads to no larger graph)."""
    args = [
        "step",
        "llama-3-8b",
        "--accelerator",
        "A100",
        "--prefill",
        "480@500",
        "--decode",
        "32@1200",
        "--json",
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert set(out) == {"iteration_s", "parts", "constants", "execution"}
    assert out["execution"]["preset"] == "vllm-v1"  # today's engine unless --preset
    assert out["constants"]["linear"].startswith("fitted:")  # A100's fit to Vidur's kernels
    assert set(out["parts"]) == {"linear", "attention", "communication", "lm_head", "overhead"}
    assert sum(out["parts"].values()) == pytest.approx(out["iteration_s"])
    dep = Deployment(get_model("llama-3-8b"), get_accelerator("A100-80GB"))
    batch = Batch.of(prefill=[(480, 500)], decode=[1200] * 32)
    v1 = with_execution(Roofline(dep), execution_params("vllm-v1", {}), 256)
    assert out["iteration_s"] == pytest.approx(v1.iteration_s(batch))


def test_a_preset_hides_the_cpu_and_pads_to_the_captured_graph() -> None:
    """Under vllm-v1 (the default), 5 decodes run the graph of 8 and the CPU hides under the
    GPU; --preset eager puts it in series, unpadded."""
    args = ["step", "llama-3.1-70b", "--accelerator", "B200", "--precision", "fp8",
            "--tp", "8", "--decode", "5@1000", "--json"]  # fmt: skip
    eager = json.loads(runner.invoke(app, [*args, "--preset", "eager"]).output)
    assert eager["execution"]["preset"] == "eager"
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    v1 = json.loads(result.output)
    assert v1["execution"]["preset"] == "vllm-v1"
    assert v1["parts"]["overhead"] == 0.0 < eager["parts"]["overhead"]
    assert v1["parts"]["linear"] > eager["parts"]["linear"]  # three padded slots
    assert v1["iteration_s"] < eager["iteration_s"]
    bad = runner.invoke(app, [*args, "--preset", "vllm"])
    assert isinstance(bad.exception, ConfigError) and "vllm-v1" in str(bad.exception)


def test_tensorrt_llms_preset_prices_its_own_all_reduce_and_says_so() -> None:
    """--preset trtllm takes its share of the fitted all-reduce latency (a note says so);
    vllm-v1 keeps vLLM's measured one and no note."""
    args = ["step", "llama-3.1-70b", "--accelerator", "B200", "--precision", "fp8",
            "--tp", "8", "--decode", "4@1500", "--json"]  # fmt: skip
    trt = json.loads(runner.invoke(app, [*args, "--preset", "trtllm"]).output)
    vllm = json.loads(runner.invoke(app, args).output)
    assert 0.0 < trt["parts"]["communication"] < 0.5 * vllm["parts"]["communication"]
    assert trt["parts"]["linear"] == pytest.approx(vllm["parts"]["linear"])
    share = PRESETS["trtllm"].allreduce_latency_share
    assert any(f"all-reduce latency at {share:g}" in note for note in trt["notes"])
    assert not any("all-reduce latency" in note for note in vllm.get("notes", []))


def test_tensor_parallelism_adds_communication() -> None:
    """At TP 4 the all-reduces show up as their own part (at TP 2 llama-2-70b's bf16 weights
    leave no room for this batch's KV cache on 80 GB GPUs)."""
    args = [
        "step",
        "llama-2-70b",
        "--accelerator",
        "A100",
        "--tp",
        "4",
        "--decode",
        "64@1024",
        "--json",
    ]
    out = json.loads(runner.invoke(app, args).output)
    assert out["parts"]["communication"] > 0


def test_a_vllm_release_prices_the_step_with_its_kernels() -> None:
    """`--vllm-version 0.19.0` on the RTX PRO 6000 takes that release's kernels and says so:
    Qwen3-32B's TP-2 all-reduces cost about 2.5x what 0.24's do; another kind refuses it."""
    args = ["step", "qwen3-32b", "--accelerator", "RTX-PRO-6000", "--tp", "2"]
    args += ["--decode", "128@700", "--json"]
    newest = json.loads(runner.invoke(app, args).output)
    old = json.loads(runner.invoke(app, [*args, "--vllm-version", "0.19.0"]).output)
    assert "by-version/RTX-PRO-6000-vllm-0.19.0.yaml" in old["constants"]["communication"]
    assert "vLLM 0.19.0 (tables 0.19.0, 0.24.0)" in old["constants"]["communication"]
    assert old["parts"]["communication"] > 2.0 * newest["parts"]["communication"]
    other = runner.invoke(app, [*args, "--step-model", "inferno", "--vllm-version", "0.19.0"])
    assert other.exit_code != 0 and "vllm_version" in str(other.exception)


def test_table_names_where_the_constants_come_from() -> None:
    """The human output is a table of parts plus the origin of the roofline's constants."""
    result = runner.invoke(
        app,
        ["step", "llama-3-8b", "--accelerator", "H100", "--prefill", "2048"],
        env={"COLUMNS": "200"},
    )
    assert result.exit_code == 0, result.output
    assert "attention" in result.output and "iteration" in result.output
    assert "constants: fitted" in result.output and "H100-SXM.yaml" in result.output
    h200 = runner.invoke(
        app,
        ["step", "llama-3-8b", "--accelerator", "H200", "--decode", "8@1024"],
        env={"COLUMNS": "200"},
    )
    assert h200.exit_code == 0, h200.output
    assert "constants: fitted: measured vLLM" in h200.output
    assert "decode_attention: fitted: measured vLLM" in h200.output
    assert "elementwise: transferred:" in h200.output


def test_step_shows_the_provenance_of_moe_tp8_and_fp8_parts() -> None:
    """A MoE model shows where its experts' constants come from, a TP-8 model its all-reduce's,
    an fp8 model its fp8 GEMMs'; all from the GPU's measured vLLM kernels."""
    moe = _step_json("qwen3-30b-a3b", "--accelerator", "H100-SXM", "--decode", "8@512")
    tp8 = _step_json("llama-3-70b", "--accelerator", "H100-SXM", "--tp", "8", "--decode", "8@512")
    fp8 = _step_json("llama-3-8b", "--accelerator", "L40S", "--precision", "fp8", "--prefill", "64")
    assert "kernels/H100-SXM.yaml" in moe["constants"]["experts"]  # type: ignore[index]
    assert "kernels/H100-SXM.yaml" in tp8["constants"]["communication"]  # type: ignore[index]
    assert "kernels/L40S.yaml" in fp8["constants"]["linear_fp8"]  # type: ignore[index]
    assert "communication" not in moe["constants"]  # type: ignore[operator]
    prior = _step_json("llama-3-8b", "--accelerator", "A6000", "--decode", "8@512")
    assert prior["constants"]["linear"].startswith("prior:")  # type: ignore[index]


def test_step_names_where_an_l4s_fp8_experts_come_from() -> None:
    """An fp8 MoE model on L4, which has no kernel rows of its own, says its quantised
    experts' constants are the L40S's and RTX PRO 6000's, averaged, and why."""
    out = _step_json("qwen3-30b-a3b", "--accelerator", "L4", "--precision", "fp8", "--tp", "2",
                     "--decode", "8@512")  # fmt: skip
    line = out["constants"]["quantised_experts"]  # type: ignore[index]
    assert line.startswith("prior: the fp8, MXFP4 and INT4 experts of the L40S and RTX-PRO-6000")
    assert "warp-level MMA" in line


def test_step_names_where_an_a100s_bf16_experts_come_from() -> None:
    """A bf16 MoE model on A100 (whose kernel fit, fitted on skewed routings alone, is not its
    default) says its experts' constants are the L40S's and RTX PRO 6000's, averaged, and why;
    on four A6000s GPT-OSS-120B's experts off the kernels' alignment are priced by that
    class's factor, and the note says so."""
    out = _step_json("qwen3-30b-a3b", "--accelerator", "A100-80GB", "--tp", "2",
                     "--decode", "16@1024")  # fmt: skip
    line = out["constants"]["experts"]  # type: ignore[index]
    assert line.startswith("prior: the bf16 experts (the fused MoE without expert parallelism) "
                           "of the L40S and RTX-PRO-6000 kernel fits averaged")  # fmt: skip
    assert "warp-level MMA" in line
    assert "quantised_experts" not in out["constants"]  # type: ignore[operator]
    notes = _step_json("gpt-oss-120b", "--accelerator", "A6000", "--tp", "8",
                       "--decode", "8@512")["notes"]  # fmt: skip
    assert any("the bf16 fused-MoE kernels of A6000's class were, averaged," in n
               for n in notes)  # type: ignore[union-attr]  # fmt: skip


def test_step_notes_experts_off_the_kernels_alignment() -> None:
    """GPT-OSS-120B in bf16 over 8 GPUs holds experts 360 wide on each, off a multiple of 16:
    the step says what that costs on the GPU's bf16 expert kernel as its fit measured it
    (H100 about twice the time, L40S none to speak of); over 4 GPUs (720 wide) or in MXFP4
    (another kernel) it says nothing."""
    for gpu in ("H100-SXM", "L40S"):
        args = ["--accelerator", gpu, "--precision", "bf16", "--decode", "8@512"]
        params = yaml.safe_load(KERNELS.joinpath(f"{gpu}.yaml").read_text())["params"]
        assert _step_json("gpt-oss-120b", *args, "--tp", "8")["notes"] == [  # type: ignore[index]
            f"experts 360 wide on each GPU, off a multiple of 16: "
            f"x{params['moe_unaligned_factor']:.2f}, as {gpu}'s bf16 fused-MoE kernel was "
            "measured at such widths"
        ]
        if gpu == "H100-SXM":  # (on four L40S the weights do not fit)
            assert "notes" not in _step_json("gpt-oss-120b", *args, "--tp", "4")
    mxfp4 = ["--accelerator", "H100-SXM", "--precision", "mxfp4", "--decode", "8@512", "--tp", "8"]
    notes = _step_json("gpt-oss-120b", *mxfp4)["notes"]
    assert not any("wide" in n for n in notes)  # type: ignore[union-attr]


def test_other_step_models_and_params_files(tmp_path: Path) -> None:
    """`--step-model inferno --params FILE` times the batch with that model (no breakdown)."""
    params = tmp_path / "inferno.yaml"
    params.write_text(
        yaml.safe_dump(
            {
                "kind": "inferno",
                "params": {"alpha_ms": 10, "beta_ms": 1, "gamma_ms": 5, "delta_ms": 0.1},
            }
        )
    )
    args = [
        "step",
        "llama-3-8b",
        "--accelerator",
        "A100",
        "--step-model",
        "inferno",
        "--params",
        str(params),
        "--decode",
        "4@100",
        "--json",
    ]
    out = json.loads(runner.invoke(app, args).output)
    assert out == {"iteration_s": pytest.approx(0.014), "parts": {},
                   "execution": {"preset": "eager", "source": PRESETS["eager"].source}}  # fmt: skip


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--prefill", "12x"], "TOKENS or TOKENS@CACHED"),
        (["--decode", "32"], "N@CTX"),
        (["--decode", "0@10"], "N >= 1"),
    ],
)
def test_malformed_batches_are_usage_errors(args: list[str], message: str) -> None:
    """Malformed --prefill / --decode values exit 2 naming the expected form."""
    result = runner.invoke(
        app, ["step", "llama-3-8b", "--accelerator", "A100", *args], env={"COLUMNS": "200"}
    )
    assert result.exit_code == 2
    assert message in result.output


def test_an_empty_batch_is_refused() -> None:
    """Without --prefill or --decode there is nothing to time."""
    result = runner.invoke(app, ["step", "llama-3-8b", "--accelerator", "A100"])
    assert isinstance(result.exception, ConfigError)
    assert "at least one --prefill or --decode" in str(result.exception)


def _step_json(*args: str) -> dict[str, object]:
    result = runner.invoke(app, ["step", *args, "--json"])
    assert result.exit_code == 0, result.output
    out: dict[str, object] = json.loads(result.output)
    return out


@pytest.mark.parametrize("model", NEW_MODELS)
def test_every_new_model_steps(model: str) -> None:
    """Each new catalog model times a mixed batch on eight H200s in its published precision
    (DeepSeek's bf16 upcast would not fit them); MoE ones show their parts."""
    precision = get_model(model).native_precision
    args = ("--accelerator", "H200", "--tp", "8", "--precision", precision, "--decode", "8@512")
    out = _step_json(model, *args)
    parts = out["parts"]
    assert isinstance(parts, dict)
    assert sum(parts.values()) == pytest.approx(out["iteration_s"])
    assert ("experts" in parts) == get_model(model).is_moe


def test_qwen3_moe_decode_grows_with_the_distinct_experts() -> None:
    """`--decode 1@512` vs `64@512`: the experts part grows with the experts read (8 -> 125.9 a
    layer) over the fused kernel's fixed cost: as H100's measured fused-MoE kernel does at that
    shape (0.049 -> 0.432 ms, x8.8), far more than a dense model's step does."""
    one = _step_json("qwen3-30b-a3b", "--accelerator", "H100-SXM", "--decode", "1@512")
    many = _step_json("qwen3-30b-a3b", "--accelerator", "H100-SXM", "--decode", "64@512")
    ratio = many["parts"]["experts"] / one["parts"]["experts"]  # type: ignore[index]
    assert 0.432 / 0.049 * 0.75 < ratio < 0.432 / 0.049 * 1.25


def test_ep_shows_all_to_all_and_a100_fp8_says_dequantised() -> None:
    """`--ep 8` over eight attention-DP ranks adds the all-to-all part (over one TP-8 group
    it is 0: every GPU holds every token); fp8 on A100 notes that it runs dequantised."""
    out = _step_json(
        "qwen3-235b-a22b", "--accelerator", "H200", "--tp", "8", "--ep", "8", "--decode", "64@512"
    )
    assert out["parts"]["all_to_all"] == 0  # type: ignore[index]
    out = _step_json(
        "qwen3-235b-a22b", "--accelerator", "H200", "--ep", "8", "--attention-dp", "8",
        "--decode", "8@512",
    )  # fmt: skip
    assert out["parts"]["all_to_all"] > 0  # type: ignore[index]
    result = runner.invoke(
        app,
        [
            "step",
            "qwen3-30b-a3b",
            "--accelerator",
            "A100",
            "--precision",
            "fp8",
            "--decode",
            "8@512",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "dequantised" in result.output
    bad = runner.invoke(
        app,
        [
            "step",
            "mixtral-8x7b",
            "--accelerator",
            "H100",
            "--tp",
            "4",
            "--ep",
            "3",
            "--decode",
            "1@8",
        ],
    )
    assert bad.exit_code != 0


def test_a_tp_that_does_not_split_the_heads_is_refused() -> None:
    """`--tp 3` on a 40-head model names the value and the TPs that split the heads."""
    args = ["step", "llama-2-13b", "--accelerator", "A100", "--tp", "3", "--decode", "2@100"]
    result = runner.invoke(app, args)
    assert isinstance(result.exception, ConfigError)
    assert "--tp: tp=3 does not split llama-2-13b's 40 attention heads" in str(result.exception)
    assert "allowed: 1, 2, 4, 5, 8, 10, 20, 40" in str(result.exception)


def test_attention_dp_with_ep_shows_the_exchange_and_its_nccl_provenance() -> None:
    """`--tp 1 --ep 2 --attention-dp 2` on Qwen3-30B-A3B times one of two ranks: its GPU holds
    half the experts for both ranks' tokens (a memory-bound decode reads fewer expert weights
    than the same batch alone at TP 1), attention is its own batch's, and the all-to-all part
    comes from the GPU's measured NCCL all-to-all; an EP not dividing the group is refused."""
    args = ("qwen3-30b-a3b", "--accelerator", "H100-SXM", "--decode", "64@1024")
    rank = _step_json(*args, "--ep", "2", "--attention-dp", "2")
    alone = _step_json(*args)
    assert rank["parts"]["all_to_all"] > 0  # type: ignore[index]
    assert rank["parts"]["experts"] < alone["parts"]["experts"]  # type: ignore[index]
    assert rank["parts"]["attention"] == alone["parts"]["attention"]  # type: ignore[index]
    origin = rank["constants"]["all_to_all"]  # type: ignore[index]
    assert "NCCL" in origin and "kernels/H100-SXM.yaml" in origin
    assert "all_to_all" not in alone["constants"]  # type: ignore[operator]
    bad = runner.invoke(app, ["step", *args, "--ep", "8", "--attention-dp", "2"])
    assert bad.exit_code != 0
    assert "ep must divide tp 1 x attention_dp 2 = 2" in str(bad.exception)


def test_a_hybrid_linear_attention_model_names_where_its_delta_rule_is_priced_from() -> None:
    """Qwen3.5 on B200 shows its Gated DeltaNet constants as fitted on B200's measured
    kernels; a dense model does not list the part."""
    args = ["step", "qwen3.5-397b-a17b", "--accelerator", "B200", "--tp", "4",
            "--precision", "fp8", "--decode", "64@2000", "--json"]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    constants = json.loads(result.output)["constants"]
    assert constants["linear_attention"].startswith("fitted: measured vLLM 0.24.0 kernels")
    dense = runner.invoke(
        app, ["step", "llama-3-8b", "--accelerator", "B200", "--decode", "8@500", "--json"]
    )
    assert dense.exit_code == 0, dense.output
    assert "linear_attention" not in json.loads(dense.output)["constants"]


def test_the_gemms_factor_by_shape_is_shown_where_the_gpu_has_one() -> None:
    """On H100 (measured GEMMs fitted) ``--json`` gives ``gemm_shape_factor``: the linear work
    and LM head with the factor over the same without it (``shape_corrections: false``), and
    the table says it; on A100 (its default fit has no grid) neither appears."""
    from dataclasses import replace

    from sincere.perf.calibration import default_roofline_params

    args = ["step", "llama-3.1-8b", "--accelerator", "H100-SXM", "--decode", "32@2048"]
    out = json.loads(runner.invoke(app, [*args, "--json"]).output)
    dep = Deployment(get_model("llama-3.1-8b"), get_accelerator("H100-SXM"))
    batch = Batch.of(decode=[2048] * 32)
    params = default_roofline_params(dep.accelerator)
    on = Roofline(dep, params).parts(batch)
    off = Roofline(dep, replace(params, shape_corrections=False)).parts(batch)
    expected = (on.linear_s + on.lm_head_s) / (off.linear_s + off.lm_head_s)
    assert out["gemm_shape_factor"] == pytest.approx(expected, rel=1e-12)
    assert out["gemm_shape_factor"] != 1.0
    assert "the roofline's form" in runner.invoke(app, args).output
    a100 = ["step", "llama-3.1-8b", "--accelerator", "A100-80GB", "--decode", "32@2048"]
    assert "gemm_shape_factor" not in json.loads(runner.invoke(app, [*a100, "--json"]).output)


def test_a_gpu_that_throttles_under_load_shows_both_clocks() -> None:
    """On an H200 (sustained ratio under 1) the step is priced under sustained load and
    also at the burst clock: a 2,048-token prefill is faster there, by less than 1/ratio
    (only its compute slows); `--json` gives both. An A100 (ratio 1) shows no such line."""
    args = ["step", "llama-3.1-8b", "--accelerator", "H200", "--prefill", "2048"]
    out = json.loads(runner.invoke(app, [*args, "--json"]).output)
    clock = out["gpu_clock"]
    assert 0.0 < clock["sustained_ratio"] < 1.0
    burst, loaded = clock["burst_iteration_s"], out["iteration_s"]
    assert loaded * clock["sustained_ratio"] < burst < loaded * 0.95
    table = " ".join(runner.invoke(app, args).output.split())
    assert "GPU clock:" in table and f"{1e3 * burst:.3f} ms at the burst clock" in table
    a100 = ["step", "llama-3.1-8b", "--accelerator", "A100", "--prefill", "2048"]
    shown = runner.invoke(app, a100)
    assert shown.exit_code == 0 and "GPU clock" not in shown.output
    assert "gpu_clock" not in json.loads(runner.invoke(app, [*a100, "--json"]).output)
