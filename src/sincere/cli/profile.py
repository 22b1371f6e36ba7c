"""``sincere profile http URL`` and ``sincere profile local ARCH``: measure real engines.

``http`` sweeps concurrency (SINCERE's batch-size ladder), prompt and output lengths
against any OpenAI-compatible server, streaming to time TTFT and every token gap.
``local`` times prefill and decode iterations of an eager transformers forward pass (as
a request-level engine such as SINCERE's pipeline runs it), MaverIQ fingerprints and
model save / load / unload of a random-weight PyTorch model built from the catalog.
``gpu`` times one GPU's tensor-parallel shard as an engine with CUDA graphs runs it and
writes Vidur's kernel layouts for ``sincere fit gpu-profiles`` (both need the ``ml``
extra). Both write CSVs in the published column layouts with the
monitor's CPU / memory / GPU columns, and show progress.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from sincere.cli.app import verb_group
from sincere.cli.progress import CountUpdate, counting
from sincere.core.errors import ConfigError

profile_app = verb_group(
    "profile", "Profile real engines (HTTP endpoints, local PyTorch models).", no_args_is_help=False
)
console = Console(stderr=True)


def _ints(text: str, name: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise ConfigError(f"{name} must be comma-separated integers", value=text) from None
    if not values:
        raise ConfigError(f"{name} is empty", value=text)
    return values


def _counting(label: str) -> AbstractContextManager[CountUpdate]:
    """The profile's progress bar (kept on screen when it ends)."""
    return counting(console, label, transient=False)


@profile_app.command("http")
def http_command(
    url: Annotated[str, typer.Argument(help="server base URL, e.g. http://127.0.0.1:8000")],
    out: Annotated[Path, typer.Option("--out", "-o", help="CSV to write")] = Path("profile.csv"),
    model: Annotated[str | None, typer.Option(help="model name (default: first served)")] = None,
    prompt_tokens: Annotated[str, typer.Option(help="prompt lengths, tokens")] = "128",
    output_tokens: Annotated[str, typer.Option(help="output lengths, tokens")] = "32",
    max_concurrency: Annotated[int, typer.Option(help="largest concurrency tried")] = 16,
    repeats: Annotated[int, typer.Option(help="batches per point")] = 1,
    timeout: Annotated[float, typer.Option(help="per-request limit, s")] = 120.0,
    max_duration: Annotated[float, typer.Option(help="whole-profile limit, s")] = 600.0,
    monitor_interval: Annotated[float, typer.Option(help="monitor sampling period, s")] = 0.5,
    vllm_extras: Annotated[
        bool, typer.Option(help="send vLLM's ignore_eos / min_tokens for exact output lengths")
    ] = True,
    api_key: Annotated[str | None, typer.Option(envvar="OPENAI_API_KEY", help="bearer")] = None,
) -> None:
    """Concurrency sweep of an OpenAI-compatible endpoint (streamed TTFT / TPOT / ITL)."""
    from sincere.profile.csvio import write_profile_csv
    from sincere.profile.http import LEADING_COLUMNS, HttpProfileConfig, profile_http
    from sincere.profile.monitor import Monitor

    headers = (("Authorization", f"Bearer {api_key}"),) if api_key else ()
    cfg = HttpProfileConfig(
        url=url,
        model=model,
        prompt_tokens=_ints(prompt_tokens, "--prompt-tokens"),
        output_tokens=_ints(output_tokens, "--output-tokens"),
        max_concurrency=max_concurrency,
        repeats=repeats,
        request_timeout_s=timeout,
        max_duration_s=max_duration,
        vllm_extras=vllm_extras,
        headers=headers,
    )
    with _counting("profile http") as update, Monitor(monitor_interval) as monitor:
        rows = profile_http(cfg, monitor, lambda done, total, _row: update(done, total))
    write_profile_csv(rows, out, LEADING_COLUMNS)
    failed = sum(1 for r in rows if r["num_errors"])
    console.print(f"{len(rows)} points ({failed} with errors) → {out}")


@profile_app.command("gpu")
def gpu_command(
    arch: Annotated[str, typer.Argument(help="catalog model, or a directory / config.json")],
    out: Annotated[Path, typer.Option("--out", "-o", help="output directory")] = Path(
        "gpu-profile"
    ),
    device: Annotated[str, typer.Option(help="torch device: cuda, cuda:1 (cpu: a test run)")] = (
        "cuda"
    ),
    dtype: Annotated[str, typer.Option(help="float32, bfloat16 or float16")] = "bfloat16",
    tp: Annotated[str, typer.Option(help="tensor-parallel degrees whose shard is timed")] = "1",
    num_tokens: Annotated[
        str, typer.Option(help="token counts of the linear operators")
    ] = "1,2,4,8,16,32,64,128,256,512,1024,2048,4096",
    prefill_chunks: Annotated[str, typer.Option(help="prefill attention chunks")] = (
        "64,128,256,512,1024,2048"
    ),
    kv_sizes: Annotated[str, typer.Option(help="cached tokens before a prefill chunk")] = (
        "0,256,1024,2048,4096"
    ),
    decode_batches: Annotated[str, typer.Option(help="decode attention batch sizes")] = (
        "1,2,4,8,16,32,64,128,256"
    ),
    decode_contexts: Annotated[str, typer.Option(help="decode contexts, tokens")] = (
        "128,512,1024,2048,4096"
    ),
    batch_sizes: Annotated[str, typer.Option(help="whole iterations: sequences")] = "1,4,16,64",
    context_tokens: Annotated[str, typer.Option(help="whole iterations: tokens")] = "128,1024",
    replays: Annotated[int, typer.Option(help="timed replays per shape (median kept)")] = 20,
    graphs: Annotated[bool, typer.Option(help="capture each shape in a CUDA graph")] = True,
    fused: Annotated[
        bool | None,
        typer.Option(
            "--fused/--no-fused",
            help="whole iterations: torch.compile the norms, rotary embedding, activation "
            "and residual adds into fused kernels, as vLLM V1 compiles its models "
            "[default: on a CUDA device, off on a CPU]",
            show_default=False,
        ),
    ] = None,
    max_duration: Annotated[float, typer.Option(help="whole-profile limit, s")] = 1800.0,
    seed: Annotated[int, typer.Option(help="torch seed of the random weights")] = 0,
) -> None:
    """Kernel times as an engine with CUDA graphs sees them, in Vidur's CSV layouts.

    One GPU's TP shard (fused QKV and gate/up GEMMs, RoPE, RMSNorm, SDPA attention on a
    KV cache, LM head on each sequence's last token) is timed shape by shape: CUDA graph
    replays timed by CUDA events on a GPU, wall clock on a CPU (a test run). Writes
    mlp_<model>.csv, attention_<model>_tp<N>.csv, all_reduce_local.csv (more than one
    GPU), iterations.csv and series.csv; `sincere fit gpu-profiles OUT --accelerator A`
    fits them. Out-of-memory ends a series and is recorded in series.csv.
    """
    from sincere.profile.gpu import GpuProfileConfig, run_gpu_profile

    cfg = GpuProfileConfig(
        device=device,
        dtype=dtype,
        tp=_ints(tp, "--tp"),
        num_tokens=_ints(num_tokens, "--num-tokens"),
        prefill_chunks=_ints(prefill_chunks, "--prefill-chunks"),
        kv_sizes=_ints(kv_sizes, "--kv-sizes"),
        decode_batches=_ints(decode_batches, "--decode-batches"),
        decode_contexts=_ints(decode_contexts, "--decode-contexts"),
        batch_sizes=_ints(batch_sizes, "--batch-sizes"),
        context_tokens=_ints(context_tokens, "--context-tokens"),
        replays=replays,
        use_graphs=graphs,
        fused=fused,
        max_duration_s=max_duration,
        seed=seed,
    )
    with _counting("profile gpu") as update:
        paths = run_gpu_profile(arch, cfg, out, on_step=update)
    for kind, path in paths.items():
        console.print(f"{kind}: {path}")
    _print_series_summary(paths["series"], paths["iterations"])


def _print_series_summary(series: Path, iterations: Path) -> None:
    """Say which timer ran and which series stopped early (out of memory, time)."""
    from sincere.profile.csvio import read_profile_csv

    timers = sorted({str(r["timer"]) for r in read_profile_csv(iterations) if r.get("timer")})
    console.print(f"timer: {', '.join(timers) or 'none (no iteration measured)'}")
    for row in read_profile_csv(series):
        if row["status"] != "complete":
            console.print(
                f"[yellow]{row['series']}[/yellow]: {row['status']} at {row['stopped_at']} "
                f"(largest that ran: {row['largest_ok']})"
            )


@profile_app.command("local")
def local_command(
    arch: Annotated[str, typer.Argument(help="catalog model, or a directory / config.json")],
    out: Annotated[Path, typer.Option("--out", "-o", help="output directory")] = Path("profile"),
    device: Annotated[str, typer.Option(help="torch device: cpu, cuda, cuda:1")] = "cpu",
    dtype: Annotated[str, typer.Option(help="float32, bfloat16 or float16")] = "bfloat16",
    batch_sizes: Annotated[str, typer.Option(help="batch sizes")] = "1,2,4,8",
    context_tokens: Annotated[str, typer.Option(help="prompt / context lengths")] = "32,128",
    repeats: Annotated[int, typer.Option(help="timed repetitions per point")] = 3,
    output_lengths: Annotated[str, typer.Option(help="fingerprint output lengths")] = "10,20",
    swap_repeats: Annotated[int, typer.Option(help="save/load/unload repetitions")] = 3,
    seed: Annotated[int, typer.Option(help="torch seed of the random weights")] = 0,
    monitor_interval: Annotated[float, typer.Option(help="monitor sampling period, s")] = 0.5,
) -> None:
    """Eager transformers forward passes, fingerprints and load times of a random-weight model.

    What it measures: an eager Hugging Face forward pass (a kernel launch per operator,
    no CUDA graphs) -- meaningful for request-level engines such as SINCERE's pipeline,
    not for engines that replay CUDA graphs (use `sincere profile gpu` for those).
    Logits are computed for the last position only. Out-of-memory ends a batch-size
    series and is recorded in series.csv; every file is still written.
    """
    from sincere.profile.local import LocalProfileConfig, run_local_profile
    from sincere.profile.monitor import Monitor

    cfg = LocalProfileConfig(
        device=device,
        dtype=dtype,
        batch_sizes=_ints(batch_sizes, "--batch-sizes"),
        context_tokens=_ints(context_tokens, "--context-tokens"),
        repeats=repeats,
        output_lengths=_ints(output_lengths, "--output-lengths"),
        swap_repeats=swap_repeats,
        seed=seed,
    )
    with _counting("profile local") as update, Monitor(monitor_interval) as monitor:
        paths = run_local_profile(arch, cfg, out, monitor=monitor, on_step=update)
    for kind, path in paths.items():
        console.print(f"{kind}: {path}")
