"""``sincere step MODEL --accelerator A --prefill 512@1024 --decode 32@1200``: one iteration.

Times one continuous-batching iteration of a catalog model on a catalog accelerator
with any step-time model (default: the roofline with the accelerator's default
constants) and breaks it into parts -- the layers' linear work, attention and
communication, the LM head, and the CPU's overhead -- where the model can
(``roofline``, ``profiled``). ``--prefill TOKENS[@CACHED]`` adds a prefill chunk of
``TOKENS`` tokens after ``CACHED`` cached ones; ``--decode N@CTX`` adds ``N`` decoding
sequences with ``CTX`` tokens of context each; both repeat. ``--json`` prints
``{"iteration_s": …, "parts": {…}}`` (seconds).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from sincere.cli.app import app
from sincere.cli.tables import print_table
from sincere.core.errors import ConfigError

if TYPE_CHECKING:
    from sincere.perf.base import StepParts

console = Console()


def parse_prefill(text: str) -> tuple[int, int]:
    """``"512"`` -> (512, 0); ``"512@1024"`` -> (512, 1024): chunk tokens and cached tokens."""
    chunk, _, cached = text.partition("@")
    try:
        pair = int(chunk), int(cached or 0)
    except ValueError:
        raise typer.BadParameter(f"{text!r}: expected TOKENS or TOKENS@CACHED (integers)") from None
    if pair[0] < 1 or pair[1] < 0:
        raise typer.BadParameter(f"{text!r}: TOKENS must be >= 1 and CACHED >= 0")
    return pair


def parse_decode(text: str) -> tuple[int, int]:
    """``"32@1200"`` -> (32, 1200): sequences and context tokens per sequence."""
    count, sep, ctx = text.partition("@")
    try:
        pair = int(count), int(ctx)
    except ValueError:
        raise typer.BadParameter(f"{text!r}: expected N@CTX (integers)") from None
    if not sep or pair[0] < 1 or pair[1] < 1:
        raise typer.BadParameter(f"{text!r}: expected N@CTX with N >= 1 and CTX >= 1")
    return pair


def _parts_table(parts: StepParts) -> Table:
    table = Table()
    table.add_column("part")
    table.add_column("ms", justify="right")
    table.add_column("share", justify="right")
    total = parts.total_s
    for name, seconds in parts.as_dict().items():
        share = seconds / total if total > 0 else 0.0
        table.add_row(name, f"{1e3 * seconds:.3f}", f"{100 * share:.1f} %")
    table.add_row("[bold]iteration[/bold]", f"[bold]{1e3 * total:.3f}[/bold]", "100.0 %")
    return table


@app.command("step")
def step_command(
    model: Annotated[str, typer.Argument(help="catalog model (sincere catalog models)")],
    accelerator: Annotated[str, typer.Option(help="catalog accelerator")],
    tp: Annotated[int, typer.Option(min=1, help="tensor-parallel degree")] = 1,
    precision: Annotated[
        str, typer.Option(help="weight precision (bf16, fp16, fp8, int8, …)")
    ] = "bf16",
    step_model: Annotated[
        str,
        typer.Option(
            help="step-time model kind: roofline, inferno, profiled, ... (a wrong name lists "
            "them all)"
        ),
    ] = "roofline",
    params: Annotated[
        Path | None, typer.Option(help="parameter file of the step model (e.g. from `sincere fit`)")
    ] = None,
    prefill: Annotated[
        list[str] | None,
        typer.Option(help="a prefill chunk TOKENS[@CACHED] (repeatable)"),
    ] = None,
    decode: Annotated[
        list[str] | None,
        typer.Option(help="N decoding sequences at CTX tokens: N@CTX (repeatable)"),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help='print {"iteration_s": …, "parts": {…}}')
    ] = False,
) -> None:
    """Time one iteration and break it into parts (linear, attention, communication, …)."""
    from sincere.catalog.loader import default_catalog
    from sincere.engine.build import check_parallelism
    from sincere.perf.base import Batch, Deployment, StepBreakdown
    from sincere.perf.calibration import roofline_defaults
    from sincere.perf.factory import StepModelConfig

    chunks = [parse_prefill(p) for p in prefill or []]
    decodes = [parse_decode(d) for d in decode or []]
    if not chunks and not decodes:
        raise ConfigError("nothing to time: give at least one --prefill or --decode")
    catalog = default_catalog()
    try:
        check_parallelism(catalog.model(model), tp, 1)
    except ConfigError as exc:
        raise ConfigError(str(exc), where="--tp") from None
    dep = Deployment(
        catalog.model(model), catalog.accelerator(accelerator), precision=precision, tp=tp
    )
    built = StepModelConfig(kind=step_model, params_file=params).build(dep)
    batch = Batch.of(prefill=chunks, decode=[ctx for n, ctx in decodes for _ in range(n)])
    seconds = built.iteration_s(batch)
    parts = built.parts(batch) if isinstance(built, StepBreakdown) else None
    if as_json:
        typer.echo(json.dumps({"iteration_s": seconds, "parts": parts.as_dict() if parts else {}}))
        return
    what = (
        f"{dep.model.name} on {dep.accelerator.name} (tp {tp}, {precision}), {step_model}: "
        f"{batch.num_tokens} tokens, {batch.num_seqs} sequences"
    )
    if parts is None:
        console.print(f"{what}: {1e3 * seconds:.3f} ms (this step model gives no breakdown)")
    else:
        console.print(what, highlight=False)
        print_table(_parts_table(parts))
    if step_model == "roofline" and params is None:
        console.print(f"constants: {roofline_defaults(dep.accelerator).origin}", highlight=False)
