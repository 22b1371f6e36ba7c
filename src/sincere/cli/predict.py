"""``sincere predict``: train learned predictors from served records, evaluate, inspect.

``train KIND RECORDS... --out MODEL`` fits the LSTM latency model (``latency``; needs
torch, the ``ml`` extra) or the quantile output-length model (``length``) on
``requests.parquet`` files from ``sincere simulate`` or ``sincere bench``, or on decision
logs (``.jsonl``, ``--decisions`` of ``sincere serve`` / ``sincere simulate``). ``eval MODEL
RECORDS...`` replays held-out records and compares the model with the online
baselines (and the step-time model's prediction, given the run's simulation config).
``show MODEL`` prints a model file's header. torch is imported only by ``train latency``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from sincere.cli.app import verb_group
from sincere.cli.progress import counting
from sincere.cli.tables import print_table

predict_app = verb_group(
    "predict", "Train learned latency / output-length predictors from records; evaluate them."
)


@predict_app.command("train")
def train_cmd(
    kind: Annotated[str, typer.Argument(help="latency (LSTM, needs torch) or length.")],
    records: Annotated[
        list[Path],
        typer.Argument(help="requests.parquet files or decision logs (.jsonl), one per run."),
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Model file to write (.npz).")],
    seed: Annotated[int, typer.Option(help="Seed of initialisation and batch order.")] = 0,
    epochs: Annotated[int | None, typer.Option(help="Most passes over the data.")] = None,
    history: Annotated[
        int | None, typer.Option(help="latency: finished requests per window (16).")
    ] = None,
    hidden: Annotated[int | None, typer.Option(help="latency: LSTM state size (32).")] = None,
    hash_bits: Annotated[
        int | None, typer.Option(help="length: 2**bits hashed feature slots (14).")
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Train a predictor on served records and write it to --out."""
    from sincere.predict.offline import train_model

    options = {
        k: v for k, v in (("history", history), ("hidden", hidden), ("hash_bits", hash_bits))
        if v is not None
    }  # fmt: skip
    console = Console(stderr=True)
    if quiet:
        summary = train_model(kind, records, out, seed=seed, epochs=epochs, options=options)
    else:
        with counting(console, f"training {kind}") as update:

            def report(epoch: int, total: int, loss: float) -> None:
                update(epoch, total, f"training {kind} (loss {loss:.4f})")

            summary = train_model(
                kind, records, out, seed=seed, epochs=epochs, options=options, progress=report
            )
    derived = (
        f", load of {summary.num_derived_load:,} derived from timestamps"
        if summary.num_derived_load
        else ""
    )
    detail = ", ".join(f"{k} {_fmt(v)}" for k, v in summary.detail.items())
    console.print(
        f"trained {kind} on {summary.num_requests:,} served requests{derived} in "
        f"{summary.train_s:.1f} s ({detail}); wrote {summary.path}"
    )


@predict_app.command("eval")
def eval_cmd(
    model: Annotated[Path, typer.Argument(help="Model file from sincere predict train.")],
    records: Annotated[
        list[Path], typer.Argument(help="Held-out requests.parquet files or decision logs.")
    ],
    config: Annotated[
        Path | None,
        typer.Option(
            help="The runs' simulation config (their config.yaml): adds the step-model "
            "baseline and, from its tiers, the SLO-probability Brier score."
        ),
    ] = None,
    warmup: Annotated[
        float,
        typer.Option(help="Share of each file not scored (online baselines learn on it)."),
    ] = 0.1,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON, not a table.")] = False,
) -> None:
    """Errors of the model and its baselines on held-out records."""
    from dataclasses import asdict

    from sincere.predict.offline import evaluate_model

    facts = None if config is None else instance_facts(config)
    scores = evaluate_model(model, records, facts=facts, warmup=warmup)
    rows = [asdict(s) for s in scores]
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
    else:
        print_table(_score_table(rows, str(model)))


@predict_app.command("show")
def show_cmd(
    model: Annotated[Path, typer.Argument(help="Model file from sincere predict train.")],
) -> None:
    """Print a model file's kind, feature schema, parameters and provenance (JSON)."""
    from sincere.predict.saved import read_model

    header, arrays = read_model(model)
    data = json.loads(header.to_json())
    data["arrays"] = {name: list(a.shape) for name, a in arrays.items()}
    typer.echo(json.dumps(data, indent=2))


def instance_facts(config: Path) -> Any:
    """Step-time models, batch limits and tiers of a simulation config's instances.

    Builds the run's cluster (and workload, for its tiers) as ``sincere simulate`` would.
    """
    from sincere.predict.offline import InstanceFacts
    from sincere.sim.build import base_dir_of, build_cluster, canonical_requests
    from sincere.sim.config import load_config
    from sincere.workload.config import generate

    cfg = load_config(config)
    requests = canonical_requests(generate(cfg.workload, cfg.seed, base_dir=base_dir_of(cfg)))
    cluster = build_cluster(cfg, requests)
    infos = cluster.infos
    return InstanceFacts(
        step_models={i.id: i.step_model for i in infos if i.step_model is not None},
        max_num_seqs={i.id: i.max_num_seqs for i in infos},
        tiers={t.name: t for t in requests.tiers},
    )


_HEADINGS = {
    "name": ("predictor", 1.0, ""),
    "num_scored": ("scored", 1.0, ""),
    "ttft_mae_s": ("TTFT MAE ms", 1e3, ".1f"),
    "ttft_mape": ("TTFT MAPE %", 100.0, ".1f"),
    "tpot_mae_s": ("TPOT MAE ms", 1e3, ".2f"),
    "tpot_mape": ("TPOT MAPE %", 100.0, ".1f"),
    "ttft_coverage": ("TTFT in 10-90 %", 100.0, ".1f"),
    "slo_brier": ("SLO Brier", 1.0, ".4f"),
    "mae_tokens": ("MAE tokens", 1.0, ".1f"),
    "mape": ("MAPE %", 100.0, ".1f"),
    "coverage": ("in 10-90 %", 100.0, ".1f"),
}


def _fmt(value: Any, scale: float = 1.0, spec: str = ".4g") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
        return format(value * scale, spec or ".4g")
    return f"{value:,}" if isinstance(value, int) else str(value)


def _score_table(rows: list[dict[str, Any]], title: str) -> Table:
    table = Table(title=title, show_header=True, header_style="bold")
    keys = list(rows[0]) if rows else []
    for key in keys:
        if key == "name":
            table.add_column(_HEADINGS[key][0], no_wrap=True)
        else:
            table.add_column(_HEADINGS[key][0], justify="right")
    for row in rows:
        table.add_row(*(_fmt(row[k], _HEADINGS[k][1], _HEADINGS[k][2]) for k in keys))
    return table
