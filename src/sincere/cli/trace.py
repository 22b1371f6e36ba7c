"""``sincere trace``: inspect and convert request traces.

``stats FILE`` prints rate, duration, inter-arrival CV and length percentiles (a rich
table, or JSON with ``--json``) and can draw a PNG; ``stats --sample`` does the same for
a generated trace (Poisson arrivals, lengths from the shipped Azure conversation
table) so it runs without any data file. ``convert IN OUT`` rewrites a trace in
another format.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from sincere.cli.app import verb_group
from sincere.core.errors import ConfigError

if TYPE_CHECKING:
    from rich.table import Table

    from sincere.core.request import RequestArrays
    from sincere.workload.stats import TraceStats

trace_app = verb_group("trace", "Inspect and convert request traces.")

_FORMATS = "see `sincere trace formats` (default: from the extension and header)"


def token_counters(requests: RequestArrays) -> dict[str, str]:
    """Model -> the token counter used on its requests' text, for a trace whose lengths were
    counted from text (ShareGPT, SINCERE's prompts); empty for one that gives counts."""
    from sincere.workload.tabular import tokenizer_name

    if not any(p is not None for p in requests.prompts):
        return {}
    return {model: tokenizer_name(model) for model in requests.models}


def _sample(num_requests: int, rate: float, seed: int) -> RequestArrays:
    from sincere.workload.config import generate, load_workload_config

    config = load_workload_config(
        {
            "num_requests": num_requests,
            "arrival": {"kind": "poisson", "rate": rate},
            "lengths": {"source": "azure-conv-2023"},
        },
        "--sample",
    )
    return generate(config, seed)


def _table(stats: TraceStats, title: str) -> Table:
    from rich.table import Table

    table = Table(title=title, show_header=True, header_style="bold")
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_row("requests", f"{stats.num_requests:,}")
    untimed = "– (no arrival times in the trace)"
    for name, value, spec in (
        ("duration (s)", stats.duration_s, ",.1f"),
        ("mean rate (req/s)", stats.mean_rate, ".3f"),
        ("inter-arrival CV", stats.cv_interarrival, ".3f"),
    ):
        table.add_row(name, untimed if value is None else format(value, spec))
    for name, ls in (("prompt tokens", stats.prompt), ("output tokens", stats.output)):
        table.add_row(
            name,
            f"mean {ls.mean:.1f}  p50 {ls.p50:.0f}  p90 {ls.p90:.0f}  "
            f"p99 {ls.p99:.0f}  max {ls.max}",
        )
    for model, count in stats.num_per_model.items():
        table.add_row(f"model {model}", f"{count:,}")
    if stats.prefix_reuse_ratio is not None:
        table.add_row("prefix reuse (unbounded cache)", f"{100 * stats.prefix_reuse_ratio:.1f} %")
        for point in stats.reuse_curve:
            name = f"prefix reuse, LRU {point.capacity_tokens:,} tokens"
            table.add_row(name, f"{100 * point.hit_rate:.1f} %")
    return table


@trace_app.command("stats")
def stats_cmd(
    file: Annotated[Path | None, typer.Argument(help="Trace file (see --format).")] = None,
    format: Annotated[
        str | None, typer.Option("--format", "-f", help=f"Trace format: {_FORMATS}.")
    ] = None,
    plot: Annotated[Path | None, typer.Option(help="Write a PNG summary here.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON, not a table.")] = False,
    sample: Annotated[
        bool, typer.Option(help="Use a generated trace (Poisson, Azure conv lengths).")
    ] = False,
    num_requests: Annotated[int, typer.Option(help="Requests of --sample.")] = 5000,
    rate: Annotated[float, typer.Option(help="Arrival rate of --sample (req/s).")] = 5.0,
    seed: Annotated[int, typer.Option(help="Seed of --sample.")] = 0,
) -> None:
    """Rate, duration, inter-arrival CV and token-length percentiles of a trace; with block
    ids (Mooncake's hash_ids), its prefix reuse ratio and reuse against cache capacity (--plot
    also writes PLOT-prefix-reuse.png)."""
    from rich.console import Console

    from sincere.cli.tables import print_table
    from sincere.core.jsonsafe import json_safe
    from sincere.workload.stats import plot_reuse, plot_trace, trace_stats
    from sincere.workload.traces import NoArrivalTimesError, read_lengths, read_trace

    if (file is None) != sample:
        raise ConfigError("give a trace FILE or --sample (not both)", value=str(file))
    timed = True
    if file is None:
        requests = _sample(num_requests, rate, seed)
    else:
        try:
            requests = read_trace(file, format)
        except NoArrivalTimesError:  # a length-only trace: its lengths, and no rate
            requests, timed = read_lengths(file, format), False
    if plot is not None and not timed:
        raise ConfigError("--plot needs arrival times; this trace has lengths only", where=file)
    title = "sample (Poisson, azure-conv-2023 lengths)" if file is None else str(file)
    stats = trace_stats(requests, timed=timed)
    counters = token_counters(requests)
    if as_json:
        extra = {"token_counters": counters} if counters else {}
        typer.echo(json.dumps(json_safe({**stats.to_dict(), **extra}), indent=2))
    else:
        print_table(_table(stats, title))
        for model, counter in counters.items():
            Console(stderr=True).print(
                f"tokens of {model} counted from its text with: {counter}", highlight=False
            )
    if plot is not None:
        plot_trace(requests, plot, title="sample" if file is None else file.name)
        written = [plot]
        if stats.prefix_reuse_ratio is not None:
            curve = plot.with_name(f"{plot.stem}-prefix-reuse{plot.suffix}")
            plot_reuse(stats, curve, title="sample" if file is None else file.name)
            written.append(curve)
        if not as_json:
            Console().print("wrote " + ", ".join(str(p) for p in written))


@trace_app.command("convert")
def convert_cmd(
    source: Annotated[Path, typer.Argument(help="Input trace.")],
    target: Annotated[Path, typer.Argument(help="Output file.")],
    from_format: Annotated[
        str | None, typer.Option("--from", help=f"Input format: {_FORMATS}.")
    ] = None,
    to_format: Annotated[
        str | None,
        typer.Option("--to", help="Output format: see `sincere trace formats`."),
    ] = None,
) -> None:
    """Rewrite a trace in another format (default: ours, by extension .csv / .parquet)."""
    from rich.console import Console

    from sincere.workload.traces import output_format, read_trace, write_trace

    to_format = output_format(target, to_format)  # a bad target is refused before reading
    requests = read_trace(source, from_format)
    write_trace(requests, target, to_format)
    Console().print(f"wrote {len(requests):,} requests to {target}")


@trace_app.command("formats")
def formats_cmd() -> None:
    """The trace formats sincere reads and writes."""
    from rich.table import Table

    from sincere.cli.tables import print_table
    from sincere.workload.traces import TRACE_READERS, TRACE_WRITERS

    table = Table(title="trace formats", show_header=True, header_style="bold")
    for column in ("format", "read", "write", "what it is"):
        table.add_column(column)
    for name in sorted({*TRACE_READERS.names(), *TRACE_WRITERS.names()}):
        reader = TRACE_READERS.get(name) if name in TRACE_READERS else None
        doc = (reader.__doc__ or "").strip().splitlines()[0].replace("``", "") if reader else ""
        table.add_row(
            name,
            "yes" if reader else "-",
            "yes" if name in TRACE_WRITERS else "-",
            doc,
        )
    print_table(table)
