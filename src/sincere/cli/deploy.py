"""``sincere deploy MODEL``: choose a deployment configuration and place it (MaverIQ).

Enumerates TP, PP, weight and KV precision, filters by accuracy floor, free GPU memory
and SLO, ranks by the cost type and places the winner on the GPU pool; prints the
choice, its placement and the runners-up (or JSON with ``--json``).

A configuration whose relative accuracy the catalog has no figure for (``acc %`` shows
``unknown``, ``null`` in JSON) ranks by its cost like any other -- the cost type is what
was asked for -- and the output says so under the table: such a choice may lose accuracy
nobody measured. ``--min-accuracy`` above 0 keeps measured configurations only.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from sincere.cli.app import app
from sincere.cli.tables import print_table

if TYPE_CHECKING:
    from sincere.optimize.deploy import DeployDecision, RankedChoice

# Named here, not read from the registries, so that --help imports nothing heavy;
# tests/cli/test_cli_help.py checks that they are the registered names.
COST_TYPE_NAMES = ("min_lat", "min_mem", "min_cost", "min_gpu_cost")
STRATEGY_NAMES = ("hybrid", "llf", "packing")

_HELP = (
    "Choose TP, PP, weight and KV-cache precision (and EP for a mixture-of-experts model) for "
    "MODEL on a GPU pool and place it.\n\n"
    "--gpus is a shorthand NxACCEL[:used_gb,...] (e.g. 8xA6000 or 4xA6000:10,0,0,30) or a "
    "YAML/JSON file ({accelerator, count} or {accelerator, gpus: [{used_gb}]}). Latency in "
    "seconds for --output-len tokens, memory in GB over all GPUs, accuracy in % of fp16. "
    "Without --fingerprints (or for a model not in them) the catalog roofline estimates."
)


def _choice_dict(c: RankedChoice) -> dict[str, Any]:
    k = c.estimate.key
    return {
        "tp": k.tp,
        "pp": k.pp,
        "ep": k.ep,
        "attention_dp": k.attention_dp,
        "precision": k.precision,
        "kv_precision": k.kv_precision,
        "batch_size": k.batch_size,
        "latency_s": c.estimate.latency_s,
        "memory_gb": c.estimate.memory_gb,
        "num_gpus": c.estimate.num_gpus,
        "accuracy": c.accuracy,
        "score": c.score,
        "meets_slo": c.meets_slo,
        "source": c.estimate.source,
        "gpus": list(c.placement.gpus),
        "layer_split": list(c.placement.layer_split),
    }


def dropped_text(dropped: dict[str, int]) -> str:
    """``"memory 63, slo 2"``: the reasons that dropped configurations (``"none"``)."""
    shown = [f"{reason} {count}" for reason, count in dropped.items() if count]
    return ", ".join(shown) or "none"


def unmeasured_note(decision: DeployDecision) -> str | None:
    """A warning when configurations shown have no measured accuracy (None when all do)."""
    shown = [c for c in (decision.chosen, *decision.runners_up) if c is not None]
    unknown = sorted({c.estimate.key.precision for c in shown if c.accuracy is None})
    if not unknown:
        return None
    chosen = decision.chosen
    which = "the chosen configuration" if chosen and chosen.accuracy is None else "some rows"
    return (
        f"accuracy unknown for {', '.join(unknown)} weights of {decision.request.model} "
        f"({which}): the catalog has no measured figure, so the ranking ignores the "
        "accuracy these may lose; --min-accuracy N keeps measured configurations only"
    )


def _view(decision: DeployDecision) -> Table:
    table = Table(
        title=f"{decision.request.model}: {decision.request.cost_type}", header_style="bold"
    )
    for col in (
        "rank",
        "TPxPP (DP, EP)",
        "weights/KV",
        "latency s",
        "memory GB",
        "acc %",
        "score",
        "GPUs",
        "layers/stage",
    ):
        table.add_column(col, justify="right")
    assert decision.chosen is not None
    for i, c in enumerate((decision.chosen, *decision.runners_up), start=1):
        k = c.estimate.key
        table.add_row(
            "chosen" if i == 1 else str(i),
            f"{k.tp}x{k.pp}"
            + (f" dp{k.attention_dp}" if k.attention_dp > 1 else "")
            + (f" ep{k.ep}" if k.ep > 1 else ""),
            f"{k.precision}/{k.kv_precision}",
            f"{c.estimate.latency_s:.3f}",
            f"{c.estimate.memory_gb:.1f}",
            "unknown" if c.accuracy is None else f"{c.accuracy:.1f}",
            f"{c.score:.4g}",
            ",".join(map(str, c.placement.gpus)),
            "/".join(map(str, c.placement.layer_split)),
        )
    return table


@app.command("deploy", help=_HELP)
def deploy_cmd(
    model: Annotated[str, typer.Argument(help="Catalog model name or alias.")],
    output_len: Annotated[int, typer.Option(help="Output tokens per request.")],
    cost_type: Annotated[str, typer.Option(help=f"One of: {', '.join(COST_TYPE_NAMES)}.")] = (
        "min_cost"
    ),
    slo: Annotated[float | None, typer.Option(help="Latency SLO, seconds.")] = None,
    fp16_only: Annotated[bool, typer.Option("--fp16-only", help="fp16 weights and KV only.")] = (
        False
    ),
    strategy: Annotated[str, typer.Option(help=f"Placement: {', '.join(STRATEGY_NAMES)}.")] = "llf",
    batch_size: Annotated[int, typer.Option(help="Requests per batch.")] = 1,
    min_accuracy: Annotated[
        float,
        typer.Option(
            help="Relative accuracy floor, % of fp16 (above 0 also drops configurations "
            "whose accuracy the catalog has not measured)."
        ),
    ] = 0.0,
    gpus: Annotated[str, typer.Option(help="GPU pool (see above).")] = "8xA6000",
    fingerprints: Annotated[
        list[Path] | None, typer.Option("--fingerprints", "-f", help="Fingerprint CSV(s).")
    ] = None,
    exponents: Annotated[Path | None, typer.Option(help="Exponent YAML.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON, not tables.")] = False,
) -> None:
    """Choose and place a deployment of MODEL."""
    from sincere.catalog import get_model
    from sincere.estimate.estimator import FingerprintBank
    from sincere.estimate.law import load_exponents
    from sincere.optimize.deploy import (
        DeployRequest,
        FingerprintCosts,
        RooflineCosts,
        choose_deployment,
        parse_pool,
    )

    req = DeployRequest(
        model, output_len, cost_type, slo, fp16_only, strategy, batch_size, min_accuracy
    )
    pool = parse_pool(gpus)
    accelerator = pool[0].accelerator
    if fingerprints:
        bank = FingerprintBank.from_files(fingerprints, load_exponents(exponents))
        costs: Any = FingerprintCosts(bank, RooflineCosts(accelerator))
    else:
        costs = RooflineCosts(accelerator)
    decision = choose_deployment(req, pool, costs)
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "chosen": None if decision.chosen is None else _choice_dict(decision.chosen),
                    "runners_up": [_choice_dict(c) for c in decision.runners_up],
                    "slo_fallback": decision.slo_fallback,
                    "considered": decision.num_considered,
                    "dropped": decision.dropped,
                    "notes": [n for n in (unmeasured_note(decision),) if n is not None],
                },
                indent=2,
            )
        )
        return
    console = Console()
    if decision.chosen is None:
        console.print(
            f"[red]no configuration fits[/red] (dropped: {dropped_text(decision.dropped)})",
            highlight=False,
        )
        console.print(
            f"options: more GPUs or larger ones than {gpus}"
            + (", a lower precision" if not fp16_only else ", drop --fp16-only")
            + (" (model lists: " + ", ".join(get_model(model).precisions) + ")"),
            highlight=False,
        )
        raise typer.Exit(1)
    if decision.slo_fallback:
        console.print("[yellow]no configuration meets the SLO: lowest latency chosen[/yellow]")
    print_table(_view(decision), console)
    note = unmeasured_note(decision)
    if note is not None:
        console.print(f"[yellow]note:[/yellow] {note}", highlight=False, soft_wrap=True)
    console.print(
        f"considered {decision.num_considered}, dropped {dropped_text(decision.dropped)}; "
        f"estimates: {decision.chosen.estimate.source}",
        highlight=False,
    )
