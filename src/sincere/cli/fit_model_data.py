"""``sincere fit model-data MODEL --accelerator A``: Inferno's model data from the step model.

Times decode and prefill iterations of one deployment with a step-time model (the
roofline by default), fits Inferno's lines (decode ``alpha + beta · batch``, prefill
``gamma + delta · tokens``, ms) over the batch range the planner uses, prints the fit's
error and writes the ``model-data.json`` entry (``--out``: appended to that file's
``models`` list, replacing an entry of the same name and accelerator). A
mixture-of-experts model's decode time bends at small batches; the error says how much
the line misses there (:mod:`sincere.optimize.derive`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from sincere.cli.fit import fit_app


@fit_app.command("model-data")
def model_data_command(
    model: Annotated[str, typer.Argument(help="catalog model")],
    accelerator: Annotated[str, typer.Option(help="catalog accelerator")],
    in_tokens: Annotated[int, typer.Option(min=1, help="mean prompt tokens")] = 512,
    out_tokens: Annotated[int, typer.Option(min=1, help="mean output tokens")] = 256,
    tp: Annotated[int, typer.Option(min=1, help="tensor-parallel degree")] = 1,
    ep: Annotated[int, typer.Option(min=1, help="expert-parallel degree (divides tp)")] = 1,
    precision: Annotated[str, typer.Option(help="weight precision")] = "bf16",
    step_model: Annotated[str, typer.Option(help="step-time model kind")] = "roofline",
    max_batch: Annotated[
        int | None, typer.Option(min=1, help="largest batch (default: what the KV cache holds)")
    ] = None,
    name: Annotated[str | None, typer.Option(help="model name in the planner's files")] = None,
    acc_name: Annotated[
        str | None, typer.Option(help="accelerator name in the planner's files")
    ] = None,
    out: Annotated[Path | None, typer.Option(help="model-data.json to add the entry to")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the entry and errors")] = False,
) -> None:
    """Derive Inferno's model data of MODEL on ACCELERATOR from a step-time model."""
    from sincere.catalog import get_accelerator, get_model
    from sincere.optimize.derive import derive_model_data
    from sincere.perf.base import Deployment
    from sincere.perf.factory import StepModelConfig

    dep = Deployment(
        get_model(model), get_accelerator(accelerator), precision=precision, tp=tp, ep=ep
    )
    built = StepModelConfig(kind=step_model).build(dep)
    derived = derive_model_data(
        dep,
        built,
        in_tokens=in_tokens,
        out_tokens=out_tokens,
        max_batch=max_batch,
        name=name,
        acc_name=acc_name,
    )
    errors = {
        "decode": _errors(derived.decode.max_rel_error, derived.decode.mean_rel_error,
                          derived.decode.low_max_rel_error, derived.decode.x_range),
        "prefill": _errors(derived.prefill.max_rel_error, derived.prefill.mean_rel_error,
                           derived.prefill.low_max_rel_error, derived.prefill.x_range),
    }  # fmt: skip
    if out is not None:
        _add_entry(out, derived.entry)
    if as_json:
        typer.echo(json.dumps({"entry": derived.entry, "fit_error": errors}, indent=2))
        return
    console = Console()
    console.print(json.dumps(derived.entry, indent=2), highlight=False)
    for what, err in errors.items():
        lo, hi = err["range"]
        console.print(
            f"{what} line over {lo}..{hi}: max error {100 * err['max']:.1f} %, mean "
            f"{100 * err['mean']:.1f} %, max over the first quarter {100 * err['low_max']:.1f} %",
            highlight=False,
        )
    if out is not None:
        console.print(f"added to {out}", highlight=False)


def _errors(max_rel: float, mean_rel: float, low: float, rng: tuple[int, int]) -> dict[str, Any]:
    return {"max": max_rel, "mean": mean_rel, "low_max": low, "range": list(rng)}


def _add_entry(path: Path, entry: dict[str, Any]) -> None:
    """Add ``entry`` to ``path``'s ``models`` (a new file when absent)."""
    doc: dict[str, Any] = {"models": []}
    if path.exists():
        doc = json.loads(path.read_text())
    models = [
        m
        for m in doc.get("models", [])
        if (m.get("name"), m.get("acc")) != (entry["name"], entry["acc"])
    ]
    models.append(entry)
    doc["models"] = models
    path.write_text(json.dumps(doc, indent=2) + "\n")
