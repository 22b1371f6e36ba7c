"""The built-in pd-study: its grid, goodput per GPU by hand, the table and the figure."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from sincere.experiment import apply_quick, builtin_names, expand, resolve_spec
from sincere.experiment.pd_study import (
    goodput_per_gpu,
    is_pd_study,
    pd_ratio_figure,
    pd_rows,
    pd_table,
)
from sincere.experiment.report import write_report
from sincere.experiment.results import load_results
from sincere.sim.config import load_config

RATES = [2.0, 4.0, 8.0]
# attainment per deployment over RATES, the same for every mix and link
ATTAINMENT = {
    "colocated": {"tight": [1.0, 0.95, 0.5], "loose": [1.0, 1.0, 1.0]},
    "2P2D": {"tight": [1.0, 1.0, 0.8], "loose": [1.0, 1.0, 0.9]},
}
INSTANCES = {
    "colocated": [{"model": "llama-3-8b", "accelerator": "H100-SXM", "count": 4}],
    "2P2D": [
        {"model": "llama-3-8b", "accelerator": "H100-SXM", "role": "prefill", "count": 1, "tp": 2},
        {"model": "llama-3-8b", "accelerator": "H100-SXM", "role": "decode", "count": 2},
    ],
}


def test_pd_study_grid() -> None:
    """3 mixes x 5 deployments x 2 links x 14 rates x 2 seeds; quick keeps 2 deployments, 2
    links, 6 rates, 1 seed; colocated cells have no disaggregation section (so the links'
    colocated cells are twins, simulated once), xPyD cells the axis' link."""
    assert "pd-study" in builtin_names()
    spec = resolve_spec("pd-study")
    cells = expand(spec)
    assert len(cells) == 3 * 5 * 2 * 14 * 2
    assert len({c.config_hash for c in cells}) == 3 * (2 + 3 * 2) * 14 * 2
    assert len(expand(apply_quick(spec))) == 3 * 2 * 2 * 6
    by = {(c.coords["deploy"], c.coords["link"]): c for c in cells}
    colocated = load_config(by[("colocated", "10gbe")].config)
    assert colocated.disaggregation is None
    split = load_config(by[("1P3D", "10gbe")].config)
    assert split.disaggregation is not None
    assert split.disaggregation.kv_link.bandwidth_gbps == 1.25
    assert [(i.role, i.count) for i in split.instances] == [("prefill", 1), ("decode", 3)]
    assert {sum(i.count * i.tp for i in load_config(c.config).instances) for c in cells} == {4}


def test_goodput_per_gpu_by_hand() -> None:
    """Attainment 1.0, 0.95, 0.5 at 2, 4, 8 req/s crosses 90 % at 4 + 0.05 / 0.45 x 4; a
    sweep that always passes gives its top load (a bound), one that never passes 0."""
    found = goodput_per_gpu(RATES, [1.0, 0.95, 0.5], 4)
    assert found.per_gpu == pytest.approx((4 + 0.05 / 0.45 * 4) / 4) and found.bound == ""
    top = goodput_per_gpu(RATES, [1.0, 1.0, 0.95], 4)
    assert top.per_gpu == pytest.approx(2.0) and top.bound == ">="
    none = goodput_per_gpu(RATES, [0.5, 0.2, 0.1], 4)
    assert none.per_gpu == 0.0 and none.bound == "<"


def _folder(tmp_path: Path) -> Path:
    """A synthetic pd-study folder: results rows and each cell's config.yaml."""
    rows: list[dict[str, Any]] = []
    for deploy, tiers in ATTAINMENT.items():
        for link in ("nvlink", "10gbe"):
            for k, rate in enumerate(RATES):
                cell_id = f"{deploy}-{link}-{rate}"
                folder = tmp_path / "cells" / cell_id
                folder.mkdir(parents=True)
                config = {"instances": INSTANCES[deploy]}
                (folder / "config.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
                row = {"cell_id": cell_id, "status": "ok", "mix": "long-long", "deploy": deploy}
                row |= {"link": link, "rate": rate, "seed": 1}
                row |= {f"tier.{t}.slo_attainment": a[k] for t, a in tiers.items()}
                rows.append(row)
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "results.parquet")
    axes = {"mix": ["long-long"], "deploy": list(ATTAINMENT), "link": ["nvlink", "10gbe"]}
    axes["rate"] = RATES
    roles = {"strategy": "deploy", "traffic": "mix", "load": "rate", "env": "link"}
    manifest = {"name": "pd", "axes": axes, "roles": roles}
    (tmp_path / "experiment.json").write_text(json.dumps(manifest), encoding="utf-8")
    return tmp_path


def test_the_table_compares_goodput_per_gpu(tmp_path: Path) -> None:
    """Tight: colocated 4.444 / 4 GPUs, 2P2D (1 x TP2 + 2 = 4 GPUs) crosses 90 % at
    4 + 0.1 / 0.2 x 4 = 6 -> 1.5 / GPU, ratio 1.35; loose: 2P2D meets 90 % at 8 exactly
    and colocated is a lower bound of 8."""
    results = load_results(_folder(tmp_path))
    assert is_pd_study(results)
    rows = {(r.tier, r.env): r for r in pd_rows(results)}
    tight = rows[("tight", "nvlink")]
    colocated = (4 + 0.05 / 0.45 * 4) / 4
    assert tight.goodput["colocated"].per_gpu == pytest.approx(colocated)
    assert tight.goodput["2P2D"].per_gpu == pytest.approx(1.5)
    assert tight.best_split == "2P2D" and tight.ratio == pytest.approx(1.5 / colocated)
    loose = rows[("loose", "10gbe")]
    assert loose.goodput["colocated"].bound == ">=" and loose.ratio == pytest.approx(1.0)
    table = pd_table(results)
    assert table is not None and len(table.rows) == 4
    assert table.rows[0][0] == ["long-long", "tight", "nvlink", "2P2D"]


def test_the_report_prints_the_table_and_draws_the_map(tmp_path: Path) -> None:
    """write_report adds the P/D table and the heatmap to a pd-study folder."""
    folder = _folder(tmp_path)
    files = write_report(folder)
    text = files.markdown.read_text(encoding="utf-8")
    assert "P/D disaggregation: goodput per GPU" in text and "best xPyD / colocated" in text
    assert any(p.name == "pd_goodput_ratio.png" for p in files.figures)


def test_other_studies_get_no_pd_table(tmp_path: Path) -> None:
    """Without a colocated and an xPyD label the table and the figure are left out."""
    folder = _folder(tmp_path)
    manifest = json.loads((folder / "experiment.json").read_text(encoding="utf-8"))
    manifest["roles"]["strategy"] = "link"
    (folder / "experiment.json").write_text(json.dumps(manifest), encoding="utf-8")
    results = load_results(folder)
    assert not is_pd_study(results)
    assert pd_table(results) is None and pd_ratio_figure(results, tmp_path / "x.png") is None


def _two_request_run(
    tmp_path: Path, tiers: list[dict[str, Any]], prefill_done_at: pa.Array | None = None
) -> tuple[Path, Path]:
    """A run folder's requests and config: two chat requests arriving at 0 with TTFT 0.1
    and 0.2 s, E2E 3.1 and 1.2 s, 101 tokens each; the config declares ``tiers``."""
    columns: dict[str, Any] = {
        "tier": ["chat", "chat"],
        "arrival_at": [0.0, 0.0],
        "ttft_s": [0.1, 0.2],
        "e2e_s": [3.1, 1.2],
        "output_tokens": [101, 101],
    }
    if prefill_done_at is not None:
        columns["prefill_done_at"] = prefill_done_at
    columns["rejected"] = [False, False]
    pq.write_table(pa.table(columns), tmp_path / "requests.parquet")
    config = yaml.safe_dump({"workload": {"tiers": tiers}})
    (tmp_path / "config.yaml").write_text(config, encoding="utf-8")
    return tmp_path / "requests.parquet", tmp_path / "config.yaml"


def test_first_token_at_the_prefills_end_by_hand(tmp_path: Path) -> None:
    """A disaggregated request whose prefill ended at 0.01 s and whose first token reached
    the client at 0.1 s (after the KV transfer and the wait for decode room) misses a
    0.05-s TTFT tier as the client sees it and meets it counted at the prefill's end; a
    colocated request (no prefill end) keeps its recorded TTFT (0.2 s: a miss both ways)."""
    from sincere.experiment.pd_study import tier_attainment

    done = pa.array([0.01, None], type=pa.float64())
    tiers = [{"name": "chat", "ttft_s": 1.0, "tbt_s": 0.05}, {"name": "quick", "ttft_s": 0.05}]
    requests, config = _two_request_run(tmp_path, tiers, done)
    assert tier_attainment(requests, config) == {"chat": 1.0, "quick": 0.0}
    assert tier_attainment(requests, config, at_prefill_end=True) == {"chat": 1.0, "quick": 0.5}


def test_every_tier_is_judged_on_every_request(tmp_path: Path) -> None:
    """A tier no request was drawn into is measured on all of them: TTFT 0.15 s passes the
    0.1-s request and fails the 0.2-s one (0.5); both meet chat's."""
    from sincere.experiment.pd_study import tier_attainment

    tiers = [{"name": "chat", "ttft_s": 1.0, "tbt_s": 0.05}, {"name": "fast", "ttft_s": 0.15}]
    requests, config = _two_request_run(tmp_path, tiers)
    assert tier_attainment(requests, config) == {"chat": 1.0, "fast": 0.5}


@pytest.mark.parametrize("deploy", ["colocated", "2P2D"])
def test_an_added_tier_changes_no_request_timing(deploy: str) -> None:
    """The study's policies ignore tiers: a pd-study cell without the strict tier serves
    every request at the same times as with it, so tiers are pure targets."""
    from sincere.sim.api import simulate

    spec = resolve_spec("pd-study")
    cell = next(
        c
        for c in expand(spec)
        if c.coords["mix"] == "long-short"
        and c.coords["deploy"] == deploy
        and c.coords["link"] == "nvlink"
        and c.coords["rate"] == 16
        and c.seed == 1
    )
    config = {**cell.config, "workload": {**cell.config["workload"], "duration_s": 3}}
    tiers = config["workload"]["tiers"]
    assert [t["name"] for t in tiers] == ["tight", "loose", "strict"]
    fewer = {**config, "workload": {**config["workload"], "tiers": tiers[:2]}}
    runs = [simulate(c).requests for c in (config, fewer)]
    columns = ["arrival_at", "first_token_at", "finished_at", "instance"]
    columns += ["decode_started_at"] if deploy != "colocated" else []
    for column in columns:
        assert runs[0].column(column).equals(runs[1].column(column))
    assert runs[0].num_rows > 20
