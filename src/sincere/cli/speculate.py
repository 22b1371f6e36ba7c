"""``sincere speculate MODEL --accelerator A --method eagle --acceptance 0.8,0.7,0.6``.

Prices speculative decoding on a deployment's step model (:mod:`sincere.perf.speculation`)
and prints, per decode batch size, the plain decode step, the speculative step (draft plus
verify), the tokens a sequence gains per step, the time per output token of both and the
speed-up, then the smallest batch at which speculation stops paying. ``--context`` is each
sequence's context in tokens; ``--max-batch`` switches speculation off above that batch, as
engines do. ``--json`` prints the same rows.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from sincere.cli.app import app
from sincere.cli.tables import print_table
from sincere.core.errors import ConfigError

if TYPE_CHECKING:
    from collections.abc import Callable

    from sincere.perf.base import StepTimeModel
    from sincere.perf.speculation import SpeculationParams, SpeculativeDecode

console = Console()
BATCHES = (1, 2, 4, 8, 16, 32, 64, 128, 256)


def parse_rates(text: str | None) -> list[float] | None:
    """``0.8`` or ``0.9,0.8,0.7`` as rates; None stays None."""
    if text is None:
        return None
    try:
        return [float(v) for v in text.split(",")]
    except ValueError:
        raise ConfigError(
            "--acceptance must be rates in [0, 1], comma-separated",
            value=text,
            allowed="e.g. 0.8 or 0.9,0.8,0.7",
        ) from None


def params_of_options(
    method: str,
    draft_tokens: int | None,
    acceptance: str | None,
    max_batch: int | None,
    verify_tokens: int | None = None,
) -> SpeculationParams:
    """The speculation settings of the command-line options (``speculate``, ``step``)."""
    from sincere.perf.speculation import speculation_params

    return speculation_params(
        method, num_draft_tokens=draft_tokens, acceptance=parse_rates(acceptance),
        max_batch=max_batch, verify_tokens=verify_tokens,
    )  # fmt: skip


def speculative_decode(
    target: StepTimeModel,
    params: SpeculationParams,
    num_layers: int,
    draft_model: str | None,
    build_draft: Callable[[str], StepTimeModel],
) -> SpeculativeDecode:
    """``target`` speculating with ``params``; ``build_draft`` times ``draft_model``, which
    method ``draft-model`` needs, and only it."""
    from sincere.perf.speculation import SpeculativeDecode

    if (params.method == "draft-model") != (draft_model is not None):
        raise ConfigError("--draft-model is needed with --method draft-model, and only then",
                          value=draft_model)  # fmt: skip
    draft = build_draft(draft_model) if draft_model else None
    return SpeculativeDecode(target, params, num_layers, draft)


@app.command("speculate")
def speculate_command(
    model: Annotated[str, typer.Argument(help="catalog model (sincere catalog models)")],
    accelerator: Annotated[str, typer.Option(help="catalog accelerator")],
    method: Annotated[str, typer.Option(help="eagle, mtp, draft-model or ngram")] = "eagle",
    draft_tokens: Annotated[
        int | None, typer.Option(min=1, help="tokens drafted per step (default: one per rate)")
    ] = None,
    acceptance: Annotated[
        str | None,
        typer.Option(help="acceptance rate(s) per drafted position, e.g. 0.8 or 0.9,0.8,0.7"),
    ] = None,
    draft_model: Annotated[
        str | None, typer.Option(help="catalog model drafting (method draft-model)")
    ] = None,
    max_batch: Annotated[
        int | None, typer.Option(min=1, help="speculate only up to this many sequences")
    ] = None,
    verify_tokens: Annotated[
        int | None,
        typer.Option(min=2, help="positions verified per sequence (a tree's; default k + 1)"),
    ] = None,
    context: Annotated[int, typer.Option(min=0, help="each sequence's context, tokens")] = 2048,
    tp: Annotated[int, typer.Option(min=1, help="tensor-parallel degree")] = 1,
    ep: Annotated[int, typer.Option(min=1, help="expert-parallel degree (MoE models)")] = 1,
    precision: Annotated[str, typer.Option(help="weight precision")] = "bf16",
    preset: Annotated[
        str | None,
        typer.Option(
            help="engine execution model: vllm-v1 (default), sglang, trtllm, eager (CPU in series)"
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the rows as JSON")] = False,
) -> None:
    """Time per output token with and without speculative decoding, by batch size."""
    from sincere.catalog.loader import default_catalog
    from sincere.engine.defaults import default_preset
    from sincere.perf.base import Deployment
    from sincere.perf.execution import execution_params, with_execution
    from sincere.perf.factory import StepModelConfig

    catalog = default_catalog()
    params = params_of_options(method, draft_tokens, acceptance, max_batch, verify_tokens)
    if preset is None:
        preset = default_preset("roofline", False, catalog.accelerator(accelerator))
    execution = execution_params(preset, {})

    def built(name: str, moe_ep: int) -> StepTimeModel:
        dep = Deployment(catalog.model(name), catalog.accelerator(accelerator),
                         precision=precision, tp=tp, ep=moe_ep)  # fmt: skip
        inner = StepModelConfig(kind="roofline").for_engine(execution).build(dep)
        return with_execution(inner, execution, max(BATCHES))

    target = built(model, ep)
    spec = speculative_decode(target, params, catalog.model(model).num_layers, draft_model,
                              lambda name: built(name, 1))  # fmt: skip
    rows = [_row(spec, b, context) for b in BATCHES]
    even = spec.break_even_batch(context, largest=max(BATCHES))
    if as_json:
        typer.echo(json.dumps({"method": params.method, "draft_tokens": params.num_draft_tokens,
                               "acceptance": list(params.acceptance), "source": params.source,
                               "tokens_per_step": params.tokens_per_step(),
                               "break_even_batch": even, "rows": rows}))  # fmt: skip
        return
    console.print(
        f"{model} on {accelerator} (tp {tp}, {precision}, {execution.name}): {method}, "
        f"{params.num_draft_tokens} drafted, acceptance {list(params.acceptance)} "
        f"({params.source}): {params.tokens_per_step():.2f} tokens per step; "
        f"context {context} tokens",
        highlight=False,
    )
    print_table(_table(rows))
    pays = "throughout" if even is None else f"below {even} sequences"
    console.print(f"speculation pays {pays} (batch sizes up to {max(BATCHES)})", highlight=False)


def _row(spec: SpeculativeDecode, batch: int, context: int) -> dict[str, float | int]:
    ctx = batch * context
    return {
        "batch": batch,
        "decode_ms": 1e3 * spec.decode_s(batch, ctx),
        "spec_step_ms": 1e3 * spec.step_s(batch, ctx),
        "tokens_per_step": spec.tokens_per_step(batch),
        "tpot_spec_ms": 1e3 * spec.per_token_s(batch, ctx),
        "speedup": spec.speedup(batch, ctx),
    }


def _table(rows: list[dict[str, float | int]]) -> Table:
    table = Table("batch", "decode step ms", "spec step ms", "tokens/step", "TPOT spec ms",
                  "speed-up")  # fmt: skip
    for r in rows:
        table.add_row(str(r["batch"]), f"{r['decode_ms']:.2f}", f"{r['spec_step_ms']:.2f}",
                      f"{r['tokens_per_step']:.2f}", f"{r['tpot_spec_ms']:.2f}",
                      f"{r['speedup']:.2f}x")  # fmt: skip
    return table
