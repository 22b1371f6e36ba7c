"""The run figure: its occupancy series is exact, and the CLI / API write the PNG."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from sincere.cli.app import _register, app
from sincere.core.records import RecordArrays
from sincere.core.request import RequestArrays
from sincere.sim import simulate
from sincere.sim.frontend import engine_arrivals, front_end_of
from sincere.sim.plots import occupancy

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _config(name: str, num_requests: int) -> dict[str, Any]:
    raw: dict[str, Any] = yaml.safe_load((EXAMPLES / f"{name}.yaml").read_text())
    raw["workload"]["num_requests"] = num_requests
    return raw


def test_occupancy_of_hand_made_records() -> None:
    """Three requests with known times give the step functions by hand."""
    req = RequestArrays.build(np.array([0.0, 1.0, 2.0]), np.ones(3, np.int64), np.ones(3, np.int64))
    rec = RecordArrays.empty(3)
    rec.first_scheduled_at[:] = [0.5, 1.0, 4.0]
    rec.finished_at[:] = [3.0, 2.0, 5.0]
    occ = occupancy(req, rec)
    # events: 0 arr, 0.5 sched, 1 arr+sched, 2 arr and finish, 3 finish, 4 sched, 5 finish
    assert occ.times.tolist() == [0.0, 0.5, 1.0, 2.0, 3.0, 4.0, 5.0]
    assert occ.in_system.tolist() == [1, 1, 2, 2, 1, 1, 0]
    assert occ.waiting.tolist() == [1, 0, 0, 1, 1, 0, 0]
    # exact mean over [0, 5]: areas 1 + 2 + 2 + 2 = 7 request-seconds
    assert occ.time_average_in_system(5.0) == pytest.approx(7.0 / 5.0)


@pytest.mark.parametrize(("name", "preset"), [("w1", None), ("hetero", "eager"), ("hetero", None)])
def test_occupancy_matches_the_loops_own_integral(name: str, preset: str | None) -> None:
    """Rebuilt from the records, the time-average in the system equals the event loop's;
    under a front end (hetero's default vllm-v1: vLLM's HTTP server) the records are the
    client's, a request's time in the front end (its intake and its wait for an API
    process, and the output delay) longer in the system than the engines' count."""
    raw = _config(name, 1500)
    if preset is not None:
        for inst in raw["instances"]:
            inst.setdefault("engine", {})["preset"] = preset
    result = simulate(raw)
    occ = occupancy(result.requests_in, result.records)
    mean = occ.time_average_in_system(result.log.end_at)
    front = front_end_of(result.config)
    if front.is_zero:
        assert mean == pytest.approx(result.summary["mean_num_in_system"], rel=1e-9)
    else:  # the engines' count plus the requests' time in the front end, on average
        reached = engine_arrivals(result.requests_in, front).arrival_at  # (an open loop)
        ahead = float((reached - result.requests_in.arrival_at).sum())
        extra = (ahead + len(reached) * front.output_s) / result.log.end_at
        assert front.intake_servers > 0 and ahead > len(reached) * front.request_s
        assert mean == pytest.approx(result.summary["mean_num_in_system"] + extra, rel=1e-6)
    assert occ.in_system[-1] == 0 and occ.waiting[-1] == 0
    assert np.all(occ.waiting <= occ.in_system)
    assert occ.in_system.max() >= 2


def test_cli_plot_and_api_plot_write_pngs(tmp_path: Path) -> None:
    """`sincere simulate --plot` and `SimulationResult.plot` both write a PNG."""
    cfg_path = tmp_path / "w1.yaml"
    cfg_path.write_text(yaml.safe_dump(_config("w1", 400)), encoding="utf-8")
    _register()
    res = CliRunner().invoke(app, ["simulate", str(cfg_path), "--out", str(tmp_path), "--plot"])
    assert res.exit_code == 0, res.output
    png = tmp_path / "simulation.png"
    assert png.read_bytes()[:8] == PNG_MAGIC and png.stat().st_size > 20_000
    again = simulate(cfg_path).plot(tmp_path / "api.png", title="w1")
    assert again.read_bytes()[:8] == PNG_MAGIC
