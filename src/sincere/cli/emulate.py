"""``sincere emulate``: run emulated inference engines (OpenAI-compatible servers, no GPU).

Either one kind of engine from flags (``--model``, ``--accelerator``, ``--count`` on
consecutive ports from ``--port``) or a YAML list of instances (``sincere emulate FILE``
or ``--config FILE``); see :mod:`sincere.serve.emulator.server` and docs/emulator.md.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from sincere.cli.app import app
from sincere.cli.tables import print_table
from sincere.core.errors import ConfigError

_HELP = (
    "Run EMULATED inference engines: real OpenAI-compatible HTTP servers whose timings come "
    "from sincere's engine and step-time models. No weights run and no GPU is used; every "
    "generated token is the same filler text.\n\n"
    "Endpoints: POST /v1/completions, POST /v1/chat/completions (SSE streaming or not), "
    "GET /v1/models, GET /health, GET /metrics (Prometheus, vLLM's metric names), "
    "GET /sincere/load.\n\n"
    "Either flags (one model, --count replicas on ports --port, --port+1, ...) or a config "
    "FILE (`sincere emulate FILE` or --config FILE): a YAML list of instances with the "
    "simulator's instance fields (model, accelerator, precision, kv_precision, tp, pp, ep, cc, "
    "step_model, engine) plus port, count, seed, output_lengths and failures; see "
    "docs/emulator.md.\n\n"
    "Units: times in seconds, lengths in tokens, probabilities in [0, 1]. Stop with Ctrl-C."
)


@app.command("emulate", help=_HELP)
def emulate_command(
    file: Annotated[
        Path | None,
        typer.Argument(
            metavar="FILE", help="YAML list of emulated instances (the same as --config FILE)."
        ),
    ] = None,
    config: Annotated[
        Path | None, typer.Option("--config", "-c", help="YAML list of emulated instances.")
    ] = None,
    model: Annotated[str, typer.Option(help="Catalog model to emulate.")] = "llama-3-8b",
    accelerator: Annotated[str, typer.Option(help="Catalog accelerator.")] = "H100-SXM",
    precision: Annotated[str, typer.Option(help="Weight precision.")] = "bf16",
    tp: Annotated[int, typer.Option(help="Tensor-parallel degree.", min=1)] = 1,
    ep: Annotated[
        int,
        typer.Option(
            help="Expert-parallel degree (mixture-of-experts models; divides --tp): the experts "
            "spread over this many of the TP group's GPUs.",
            min=1,
        ),
    ] = 1,
    count: Annotated[int, typer.Option(help="Replicas, on consecutive ports.", min=1)] = 1,
    host: Annotated[str, typer.Option(help="Address to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="First port (0: the OS picks).", min=0)] = 8100,
    step_model: Annotated[
        str, typer.Option("--step-model", help="Step-time model kind (roofline, inferno, ...).")
    ] = "roofline",
    params_file: Annotated[
        Path | None, typer.Option(help="Step-model parameter file (e.g. from `sincere fit`).")
    ] = None,
    scheduler: Annotated[str, typer.Option(help="Engine scheduler (fcfs, sarathi, ...).")] = "fcfs",
    max_num_seqs: Annotated[int, typer.Option(help="Sequences per iteration.", min=1)] = 256,
    seed: Annotated[int, typer.Option(help="Seed of lengths and failure draws.")] = 0,
    error_rate: Annotated[float, typer.Option(help="Share of requests answered 500.")] = 0.0,
    stall_probability: Annotated[
        float, typer.Option(help="Chance after each iteration to pause the engine.")
    ] = 0.0,
    stall_s: Annotated[float, typer.Option(help="Length of one pause, seconds.")] = 0.0,
    crash_after: Annotated[
        int | None, typer.Option(help="Requests served before the server dies.")
    ] = None,
    role: Annotated[
        str, typer.Option(help="P/D disaggregation role: prefill, decode or both.")
    ] = "both",
) -> None:
    """Start the emulators and serve until interrupted."""
    import asyncio
    import contextlib

    from sincere.serve.emulator.config import expand, load_emulator_configs, parse_emulator_config
    from sincere.serve.emulator.server import serve_forever

    config = _config_file(file, config)
    if config is not None:
        configs = load_emulator_configs(config)
    else:
        data: dict[str, Any] = {
            "name": model, "model": model, "accelerator": accelerator, "precision": precision,
            "tp": tp, "ep": ep, "count": count, "host": host, "port": port, "seed": seed,
            "role": role,
            "step_model": {"kind": step_model, "params_file": params_file},
            "engine": {"scheduler": scheduler, "max_num_seqs": max_num_seqs},
            "failures": {"error_rate": error_rate, "stall_probability": stall_probability,
                         "stall_s": stall_s, "crash_after": crash_after},
        }  # fmt: skip
        configs = expand(parse_emulator_config(data, "command line", prefix=""))
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve_forever(configs, announce=_announce))


def _config_file(file: Path | None, option: Path | None) -> Path | None:
    """The config file, given as FILE or as --config (not both)."""
    if file is not None and option is not None:
        raise ConfigError(
            "config file given twice, as FILE and with --config; give it once",
            value=f"{file} and {option}",
        )
    return file if file is not None else option


def _announce(servers: list[Any]) -> None:
    from sincere.serve.gateway.server import freeze_startup_heap

    freeze_startup_heap()  # bound and about to serve: what exists now lives as long
    table = Table(title="sincere emulate: emulated engines (timings from a model, no weights)")
    for column in ("name", "model", "accelerator", "role", "url"):
        table.add_column(column)
    for s in servers:
        table.add_row(s.name, s.model_name, s.config.accelerator, s.config.role, s.url)
    print_table(table, Console(stderr=True))
