"""The report's prefix-caching table and gain figure, on a small synthetic results table."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sincere.experiment.report import write_report
from sincere.experiment.results import load_results
from sincere.experiment.tables import prefix_cache_table

AXES = {
    "workload": ["conv", "control"],
    "router": ["least-outstanding", "prefix-aware"],
    "cache": ["off", "on"],
}
ROLES = {"strategy": "router", "traffic": "workload", "env": "cache", "baseline": "off"}


def _row(workload: str, router: str, cache: str, seed: int) -> dict[str, Any]:
    """A finished cell whose metrics are a known function of its coordinates."""
    on = cache == "on"
    hit = (0.6 if router == "prefix-aware" else 0.3) if on and workload == "conv" else 0.0
    return {
        "cell_id": f"{workload}-{router}-{cache}-{seed}",
        "status": "ok",
        "workload": workload,
        "router": router,
        "cache": cache,
        "seed": seed,
        "prefix_cache.hit_rate": hit if on else None,
        "ttft_s.p50": 1.0 - hit + 0.01 * seed,
        "ttft_s.p99": 3.0 - 2 * hit,
        "goodput_rps": 2.0 + 4 * hit + 0.1 * seed,
    }


def _folder(tmp_path: Path, with_hit_rate: bool = True) -> Path:
    rows = [
        _row(w, r, c, s)
        for w in AXES["workload"]
        for r in AXES["router"]
        for c in AXES["cache"]
        for s in (1, 2)
    ]
    if not with_hit_rate:
        rows = [{k: v for k, v in r.items() if k != "prefix_cache.hit_rate"} for r in rows]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "results.parquet")
    manifest = {"name": "synthetic", "axes": AXES, "roles": ROLES}
    (tmp_path / "experiment.json").write_text(json.dumps(manifest), encoding="utf-8")
    return tmp_path


def test_prefix_table_means_over_seeds(tmp_path: Path) -> None:
    """One row per workload x router x cache with the seed means of the four metrics."""
    table = prefix_cache_table(load_results(_folder(tmp_path)))
    assert table is not None and table.keys == ["workload", "router", "cache"]
    got = {tuple(k): v for k, v in table.rows}
    assert len(got) == 8
    assert got[("conv", "prefix-aware", "on")] == pytest.approx([0.6, 0.415, 1.8, 4.55])
    off = got[("conv", "prefix-aware", "off")]
    assert off[0] is None and off[3] == pytest.approx(2.15)


def test_report_prints_the_table_and_links_the_gain_figure(tmp_path: Path) -> None:
    """report.md carries the hit-rate table and a PNG gain figure; the HTML embeds it."""
    files = write_report(_folder(tmp_path))
    md = files.markdown.read_text(encoding="utf-8")
    assert "## Prefix caching: hit rate, TTFT and goodput" in md
    assert re.search(r"\| conv \| prefix-aware \| on \| 0\.6 \| 0\.415 \| 1\.8 \| 4\.55 \|", md)
    link = re.search(r"\!\[Gain from prefix caching[^]]*\]\((figures/prefix_cache_gain\.png)\)", md)
    assert link is not None
    png = files.markdown.parent / link.group(1)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png in files.figures
    assert "Prefix caching: hit rate" in files.html.read_text(encoding="utf-8")


def test_no_prefix_section_without_hit_rate(tmp_path: Path) -> None:
    """Results without the hit-rate column get neither the table nor the figure."""
    folder = _folder(tmp_path, with_hit_rate=False)
    assert prefix_cache_table(load_results(folder)) is None
    md = write_report(folder).markdown.read_text(encoding="utf-8")
    assert "Prefix caching" not in md and "prefix_cache_gain" not in md
