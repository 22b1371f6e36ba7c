"""The xPyD plan, simulated, meets its SLOs; ``sincere plan FILE`` reports both plans."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

import sincere.cli.plan  # noqa: F401  (registers the command)
from sincere.catalog import get_accelerator
from sincere.cli.app import app
from sincere.core.errors import ConfigError
from sincere.optimize.pd_check import check, colocated_sim_config, pd_sim_config
from sincere.optimize.pd_input import compare, load_plan_input
from sincere.optimize.simsize import SimSettings
from sincere.perf.calibration import default_roofline_params

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "plan" / "pd"
LONG = EXAMPLE / "llama8b-long-prompts.yaml"


def test_simulated_xpyd_meets_its_slos_and_matches_the_plan() -> None:
    """The planned 1P1D of the example, simulated (150 requests), meets both mean targets,
    and its mean TTFT (as a client sees it: from the decode side, the engines' front end
    included) and TPOT are within 15 % of the planner's; the end of the prefill (on the
    client's clock too) is within 15 % of the prefill pool's TTFT plus that front end, where
    the planner prices compute at the sustained ratio and the simulated engines follow the
    GPU's clock (engine/clock.py): at this light load the prefill runs up to 1/ratio
    faster, so the band's lower end is the ratio times the planner's figure."""
    inp = load_plan_input(LONG)
    plan = compare(inp).disaggregated
    assert plan is not None
    sim = check(inp, pd_sim_config(inp, plan, num_requests=150))
    assert sim.finished == 1.0 and sim.meets(inp)
    assert sim.ttft_ms == pytest.approx(plan.client_ttft_ms, rel=0.15)
    assert sim.tpot_ms == pytest.approx(plan.client_tpot_ms, rel=0.15)
    assert plan.front_end_ms > 0  # the default engine (vllm-v1): vLLM's HTTP server
    ratio = default_roofline_params(
        get_accelerator(plan.prefill.candidate.accelerator)
    ).sustained_compute_ratio
    planned = plan.ttft_ms + plan.front_end_ms
    assert ratio * planned * 0.85 <= sim.prefill_ttft_ms <= planned * 1.15
    handoff = plan.prefill.predicted.handoff_ms
    assert plan.client_ttft_ms >= plan.ttft_ms + handoff


def test_sim_configs_carry_the_plan() -> None:
    """The simulated cluster has the planned counts, roles, batch and link."""
    inp = load_plan_input(LONG)
    cmp = compare(inp)
    assert cmp.disaggregated is not None and cmp.colocated is not None
    cfg = pd_sim_config(inp, cmp.disaggregated, num_requests=10)
    pre, dec = cfg["instances"]
    assert (pre["role"], pre["count"]) == ("prefill", cmp.disaggregated.prefill.count)
    assert (dec["role"], dec["count"]) == ("decode", cmp.disaggregated.decode.count)
    assert dec["engine"]["max_num_seqs"] == cmp.disaggregated.decode.batch
    assert cfg["disaggregation"]["kv_link"]["kind"] == "rdma"
    colo = colocated_sim_config(inp, cmp.colocated, num_requests=10)["instances"][0]
    assert colo["count"] == cmp.colocated.count and "role" not in colo


def test_cli_reports_both_plans_and_the_winner(tmp_path: Path) -> None:
    """``sincere plan FILE.yaml`` prints a row per pool, the verdict, and writes JSON."""
    out = tmp_path / "pd.json"
    res = CliRunner().invoke(app, ["plan", str(LONG), "--out", str(out), "--no-verify"])
    assert res.exit_code == 0, res.output
    assert "colocated" in res.output and "prefill" in res.output and "decode" in res.output
    assert "wins" in res.output or "tie" in res.output
    data = json.loads(out.read_text())
    assert data["winner"] in ("colocated", "disaggregated", "tie")
    assert data["disaggregated"]["prefill"]["predicted"]["tpot_ms"] is None  # NaN -> null


def test_cli_refuses_directory_options_with_a_plan_file(tmp_path: Path) -> None:
    """Inferno-directory options given with a YAML plan input are an error naming them."""
    res = CliRunner().invoke(
        app, ["plan", str(LONG), "--out", str(tmp_path / "x.json"), "--solver", "milp"]
    )
    assert res.exit_code != 0
    assert "--solver" in str(res.exception) or "--solver" in res.output


def test_simulated_colocated_sizing_holds_in_simulation(tmp_path: Path) -> None:
    """``--sizing simulate``'s colocated plan, simulated, meets the SLOs; an unknown sizing
    is refused with the allowed names."""
    inp = load_plan_input(LONG)
    settings = SimSettings(num_requests=150, min_attainment=0.0, cache_dir=tmp_path)
    cmp = compare(inp, "simulate", settings)
    assert cmp.colocated is not None
    assert check(inp, colocated_sim_config(inp, cmp.colocated, num_requests=150)).meets(inp)
    with pytest.raises(ConfigError, match="analyzer"):
        compare(inp, "guess")
