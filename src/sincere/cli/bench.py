"""``sincere bench URL --out DIR``: measure any OpenAI-compatible endpoint, open-loop.

The workload is a YAML file (a ``workload:`` section as in a simulation config, or a
whole simulation config), a trace file (any format ``sincere trace`` reads), or a
Poisson process given by ``--rate`` with fixed lengths. Writes requests.parquet
(the simulator's columns plus ``sent_at`` and ``lateness_s``), itl.parquet,
summary.json (the simulator's keys plus ``client``) and bench.json.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from sincere.cli.app import app
from sincere.core.errors import ConfigError

if TYPE_CHECKING:
    from sincere.core.request import RequestArrays

_HELP = (
    "Send a workload open-loop to an OpenAI-compatible URL and measure every request.\n\n"
    "URL is a server root (http://host:port), its /v1, or a full /v1/completions or "
    "/v1/chat/completions endpoint. The workload comes from --workload (a YAML workload "
    "section or simulation config, or a trace file) or from --rate with --num-requests "
    "and/or --duration-s (Poisson arrivals, fixed --prompt-tokens / --output-tokens).\n\n"
    "Units: times in seconds, rates in requests/s, lengths in tokens.\n\n"
    "Writes into --out: requests.parquet, itl.parquet (every inter-token gap), "
    "summary.json (the simulator's summary plus a 'client' section with the generator's "
    "lateness and reject reasons) and bench.json (the settings).\n\n"
    "--num-requests and --duration-s also cut a --workload to its first requests. Before "
    "sending anything the command checks that the URL's host and port accept "
    "connections. Exit status: 0 when at least one request completed, 1 when none did "
    "(the outputs are still written), 2 on bad input or an unreachable URL."
)


def load_requests(
    workload: Path | None,
    rate: float | None,
    num_requests: int | None,
    duration_s: float | None,
    lengths: tuple[int, int],
    seed: int,
    concurrency: int | None = None,
) -> RequestArrays:
    """The requests to send: from a workload YAML, a trace, or a Poisson rate (or, with
    ``concurrency`` and no rate, fixed lengths for a closed loop)."""
    from sincere.workload import generate, load_workload_config, read_trace

    if workload is not None:
        if rate is not None:
            raise ConfigError("give --workload or --rate, not both", value=str(workload))
        if workload.suffix.lower() in (".yaml", ".yml"):
            requests = generate(workload, seed)
        else:
            requests = read_trace(workload)
        return first_requests(requests, num_requests, duration_s)
    if concurrency is not None and rate is None:
        if num_requests is None:
            raise ConfigError("--concurrency without --workload needs --num-requests")
        arrival: dict[str, Any] = {"kind": "closed", "concurrency": concurrency}
    elif rate is None:
        raise ConfigError(
            "give --workload FILE, --rate R or --concurrency C",
            allowed="--workload, --rate, --concurrency",
        )
    elif num_requests is None and duration_s is None:
        raise ConfigError("--rate needs --num-requests and/or --duration-s")
    else:
        arrival = {"kind": "poisson", "rate": rate}
    config: dict[str, Any] = {
        "arrival": arrival,
        "lengths": {
            "prompt": {"kind": "fixed", "tokens": lengths[0]},
            "output": {"kind": "fixed", "tokens": lengths[1]},
        },
        "num_requests": num_requests,
        "duration_s": duration_s,
    }
    return generate(load_workload_config(config, "command line"), seed)


def first_requests(
    requests: RequestArrays, num: int | None, duration_s: float | None
) -> RequestArrays:
    """The requests among the first ``num`` that arrive before ``duration_s``."""
    if num is not None and num < 1:
        raise ConfigError("--num-requests must be >= 1", value=num)
    if duration_s is not None and not duration_s > 0:
        raise ConfigError("--duration-s must be > 0", value=duration_s)
    keep = len(requests) if num is None else min(num, len(requests))
    if duration_s is not None:
        keep = min(keep, int((requests.arrival_at < duration_s).sum()))
    if keep == len(requests):
        return requests
    return requests.head(keep)


@app.command("bench", help=_HELP)
def bench_command(
    url: Annotated[str, typer.Argument(help="Server root, its /v1, or a full endpoint URL.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder (created).")],
    model: Annotated[
        str | None, typer.Option("--model", "-m", help="Model name sent with every request.")
    ] = None,
    workload: Annotated[
        Path | None, typer.Option("--workload", "-w", help="Workload YAML or trace file.")
    ] = None,
    rate: Annotated[float | None, typer.Option(help="Poisson arrival rate (req/s).")] = None,
    num_requests: Annotated[int | None, typer.Option(help="Most requests to send.")] = None,
    duration_s: Annotated[float | None, typer.Option(help="Arrival window (s).")] = None,
    prompt_tokens: Annotated[int, typer.Option(help="Prompt length with --rate.")] = 128,
    output_tokens: Annotated[int, typer.Option(help="Output length with --rate.")] = 64,
    stream: Annotated[bool, typer.Option(help="Stream tokens (TTFT/ITL).")] = True,
    api: Annotated[str, typer.Option(help="completions or chat.")] = "completions",
    max_concurrency: Annotated[int | None, typer.Option(help="Calls in flight.")] = None,
    concurrency: Annotated[
        int | None,
        typer.Option(
            help="Closed loop: C clients, each sending its next request when its last ended "
            "(default: a --workload's closed arrival; otherwise open loop)."
        ),
    ] = None,
    think_time_s: Annotated[
        float | None, typer.Option(help="Closed loop: each client's pause between requests (s).")
    ] = None,
    timeout: Annotated[float | None, typer.Option(help="Per-request timeout (s).")] = None,
    time_limit_s: Annotated[
        float | None, typer.Option(help="Global deadline (s); default last arrival + 60.")
    ] = None,
    sincere_ext: Annotated[
        bool, typer.Option(help="Send sincere.output_tokens (exact lengths on emulators).")
    ] = True,
    ignore_eos: Annotated[
        bool, typer.Option(help="Send vLLM's ignore_eos / min_tokens (exact output lengths).")
    ] = False,
    seed: Annotated[int, typer.Option(help="Seed of the workload draw.")] = 0,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress, no table.")] = False,
) -> None:
    """Run one benchmark and write its outputs."""
    import asyncio

    from sincere.bench import BenchOptions, probe

    closed = closed_arrival(workload, concurrency, think_time_s)
    requests = load_requests(
        workload, rate, num_requests, duration_s, (prompt_tokens, output_tokens), seed,
        concurrency,
    )  # fmt: skip
    if not len(requests):
        raise ConfigError("the workload has no requests", value=str(workload or rate))
    if api not in ("completions", "chat"):
        raise ConfigError("unknown --api", value=api, allowed=("chat", "completions"))
    last = float(requests.arrival_at[-1])
    options = BenchOptions(
        api="chat" if api == "chat" else "completions",
        model=model,
        stream=stream,
        max_concurrency=max_concurrency,
        timeout_s=timeout,
        time_limit_s=time_limit_s or (last + 60.0 if closed is None else CLOSED_LIMIT_S),
        sincere_extension=sincere_ext,
        ignore_eos=ignore_eos,
        concurrency=None if closed is None else closed[0],
        think_time_s=0.0 if closed is None else closed[1],
    )
    asyncio.run(probe(url))
    if not _run_and_report(url, requests, options, out, quiet):
        raise typer.Exit(1)


CLOSED_LIMIT_S = 600.0  # a closed loop's default deadline (it has no last arrival)


def closed_arrival(
    workload: Path | None, concurrency: int | None, think_time_s: float | None
) -> tuple[int, float] | None:
    """The closed loop to run, ``(clients, think time)``: the options', else a workload
    YAML's ``arrival: {kind: closed}`` (constant think time); None: open loop."""
    if concurrency is None and workload is not None and workload.suffix in (".yaml", ".yml"):
        from sincere.workload.config import as_workload_config

        arrival = as_workload_config(workload)[0].arrival
        if arrival is not None and arrival.kind == "closed":
            spec = arrival.params  # checked on load
            think = spec.get("think_time_s", 0.0)
            if not isinstance(think, int | float):
                raise ConfigError(
                    "bench runs constant think times only", value=think, allowed="seconds"
                )
            concurrency = int(spec["concurrency"])
            think_time_s = think_time_s if think_time_s is not None else float(think)
    if concurrency is None:
        if think_time_s is not None:
            raise ConfigError("--think-time-s needs --concurrency", value=think_time_s)
        return None
    return concurrency, think_time_s or 0.0


def reasons_text(reasons: dict[str, int]) -> str:
    """``http_500 3, timeout 1`` (most first), or ``none``: reject reasons as words."""
    ranked = sorted(reasons.items(), key=lambda item: (-item[1], item[0]))
    return ", ".join(f"{reason} {count:,}" for reason, count in ranked) or "none"


def _run_and_report(
    url: str, requests: RequestArrays, options: Any, out: Path, quiet: bool
) -> bool:
    """Run, write the outputs and report; False when no request completed."""
    from rich.console import Console

    from sincere.bench import run_bench
    from sincere.cli.progress import count_bar
    from sincere.cli.simulate import summary_table
    from sincere.cli.tables import print_table

    console = Console(stderr=True)
    if quiet:
        result = run_bench(url, requests, options)
    else:
        with count_bar(console) as bar:
            task = bar.add_task("requests answered", total=len(requests))
            result = run_bench(
                url, requests, options, lambda done, _n: bar.update(task, completed=done)
            )
    result.write(out)
    if result.summary["num_completed"] == 0:
        reasons = reasons_text(result.summary["client"]["reject_reasons"])
        console.print(
            f"[red]error:[/red] none of the {len(requests):,} requests completed "
            f"(reject reasons: {reasons}); records in {out}",
            highlight=False,
        )
        return False
    if quiet:
        return True
    table = summary_table(result.summary)
    table.title = f"benchmark of {result.settings['url']}"
    print_table(table)
    client = result.summary["client"]
    lateness = client["lateness_s"]
    console.print(
        f"generator lateness p50 {lateness['p50'] or 0.0:.4f} s, max {lateness['max'] or 0.0:.4f}"
        f" s; rejects {reasons_text(client['reject_reasons'])}; outputs in {out}",
        highlight=False,
    )
    if not client["kept_up"]:
        console.print(
            f"[yellow]warning:[/yellow] the generator fell behind its schedule "
            f"({client['num_late']} requests later than {client['late_after_s']} s): "
            "latencies include client-side delay; lower the rate or use a faster client."
        )
    if client["num_coalesced_streams"]:
        console.print(
            f"[yellow]warning:[/yellow] {client['num_coalesced_streams']} streams carried "
            "several tokens in one chunk (the server reported more tokens than chunks): "
            "their TTFT and ITL as seen here are later and fewer than the engine's."
        )
    return True
