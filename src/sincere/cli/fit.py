"""``sincere fit``: fit step-time models to profiles.

* ``sincere fit profile PROFILE.csv --model roofline|inferno|niyama|table --out params.yaml``
  (also ``sincere fit PROFILE.csv …``, the original form: a first argument that names no
  subcommand goes to ``profile``) fits a step-time model to a ``sincere profile local`` or
  ``profile http`` CSV and writes a parameter file that ``simulate`` / ``experiment``
  configs accept as ``step_model: {kind: <kind>, params_file: params.yaml}``; for
  ``inferno`` the file also holds the model-data entry ``sincere plan`` reads. The model
  and accelerator are the profile's own (its ``model`` and ``device`` columns) unless
  ``--arch`` / ``--accelerator`` say otherwise. Prints R², the mean and median relative
  error, and with ``--verbose`` every point.
* ``sincere fit gpu-profiles DIR --accelerator A`` fits the roofline's constants to one
  accelerator's operator profiles (Vidur's layout) and writes them as a roofline
  parameter file with their provenance.
* ``sincere fit sincere-runs DIR`` (``cli/fit_sincere_runs.py``) calibrates the
  request-level engine on SINCERE's real runs.

Other modules add subcommands with ``@fit_app.command("name")``.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from sincere.cli.app import VerbGroup, verb_group
from sincere.cli.progress import count_bar
from sincere.cli.tables import print_table
from sincere.core.errors import ConfigError

if TYPE_CHECKING:
    from sincere.fit.gpu_check import IterationCheck
    from sincere.fit.gpu_profiles import GpuProfileFit
    from sincere.fit.quality import FitQuality

console = Console()
PROFILE_COMMAND = "profile"
# Named here, not read from sincere.fit, so that --help imports nothing heavy;
# tests/cli/test_cli_help.py checks them against FITTERS and DEFAULT_BIN_EDGES.
FITTER_NAMES = ("inferno", "niyama", "roofline", "table")
DEFAULT_BINS = "64,512,2048"


class _DefaultToProfile(VerbGroup):
    """A group whose unknown first argument goes to the ``profile`` command."""

    def resolve_command(self, ctx: Any, args: list[str]) -> Any:  # typer's vendored click
        """Put the default command first when the first argument names no subcommand."""
        if args and args[0] not in self.commands and not args[0].startswith("-"):
            args = [PROFILE_COMMAND, *args]
        return super().resolve_command(ctx, args)


fit_app = verb_group(
    "fit",
    "Fit models to measurements: `sincere fit PROFILE.csv` (a step-time model, the "
    "default), `sincere fit gpu-profiles DIR` or `sincere fit sincere-runs DIR`.",
    cls=_DefaultToProfile,
)


def _points_table(quality: FitQuality) -> Table:
    table = Table(title="per point")
    for col in ("sample", "measured (ms)", "predicted (ms)", "error"):
        table.add_column(col, justify="left" if col == "sample" else "right")
    for p in quality.points:
        table.add_row(
            p.label,
            f"{1e3 * p.measured_s:.3f}",
            f"{1e3 * p.predicted_s:.3f}",
            f"{100 * p.relative_error:.1f} %",
        )
    return table


def _bins(text: str) -> tuple[float, ...]:
    return tuple(float(v) for v in text.split(",") if v.strip())


@fit_app.command(PROFILE_COMMAND)
def fit_profile_command(
    profile: Annotated[Path, typer.Argument(help="profile CSV from `sincere profile`")],
    model: Annotated[
        str, typer.Option("--model", "-m", help=f"what to fit: {', '.join(FITTER_NAMES)}")
    ] = "inferno",
    out: Annotated[Path, typer.Option("--out", "-o", help="parameter file (.yaml/.json)")] = Path(
        "params.yaml"
    ),
    arch: Annotated[
        str | None, typer.Option(help="catalog model profiled (default: the profile's model)")
    ] = None,
    accelerator: Annotated[
        str | None,
        typer.Option(help="catalog accelerator (default: the profile's device, if it names one)"),
    ] = None,
    precision: Annotated[
        str | None, typer.Option(help="weight precision (default: the profile's dtype, else bf16)")
    ] = None,
    tp: Annotated[int, typer.Option(min=1, help="tensor-parallel degree profiled")] = 1,
    pp: Annotated[int, typer.Option(min=1, help="pipeline-parallel degree profiled")] = 1,
    bins: Annotated[
        str, typer.Option(help="niyama: token-count bin edges, comma-separated")
    ] = DEFAULT_BINS,
    max_batch_size: Annotated[
        int | None, typer.Option(help="inferno: maxBatchSize (default: largest profiled)")
    ] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="per-point table")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print the summary as JSON")] = False,
) -> None:
    """Fit a step-time model to a profile and report its goodness of fit."""
    from sincere.fit.models import FITTERS, FitContext
    from sincere.fit.output import fit_profile, params_document, profile_deployment, write_params
    from sincere.profile.csvio import read_profile_csv

    FITTERS.get(model)  # an unknown name stops here, before the profile is read
    rows = read_profile_csv(profile)
    dep = profile_deployment(
        profile, arch=arch, accelerator=accelerator, precision=precision, tp=tp, pp=pp, rows=rows
    )
    ctx = FitContext(dep, _bins(bins), max_batch_size)
    result, quality, _ = fit_profile(profile, model, ctx, rows)
    document = params_document(result, quality, profile, ctx)
    write_params(document, out)
    if as_json:
        typer.echo(json.dumps({"out": str(out), **document["fit"], "params": result.params}))
        return
    if verbose:
        print_table(_points_table(quality))
    console.print(
        f"{model} → kind {result.kind} for {dep.model.name} on {dep.accelerator.name} "
        f"(tp {dep.tp}, pp {dep.pp}, {dep.precision}): R² {quality.r2:.4f}, relative error "
        f"mean {100 * quality.mean_relative_error:.1f} %, median "
        f"{100 * quality.median_relative_error:.1f} % over {len(quality.points)} points; "
        f"wrote {out}"
    )
    for note in document["fit"].get("notes", []):
        console.print(f"[yellow]warning:[/yellow] {note}")


def _constants_table(fit: GpuProfileFit) -> Table:
    table = Table(title=f"roofline constants fitted for {fit.accelerator.name}")
    for col, justify in (("part", "left"), ("constant", "left"), ("value", "right")):
        table.add_column(col, justify=justify)  # type: ignore[arg-type]
    table.add_column("rows", justify="right")
    table.add_column("error mean / max", justify="right")
    for part in fit.parts:
        shown = {k: v for k, v in part.params.items() if not k.startswith("_")}
        for i, (name, value) in enumerate(shown.items()):
            first = i == 0
            table.add_row(
                part.name if first else "",
                name,
                f"{value:.4g}",
                str(part.num_rows) if first else "",
                f"{100 * part.mean_relative_error:.1f} / {100 * part.max_relative_error:.0f} %"
                if first
                else "",
            )
    return table


def _print_checks(check: IterationCheck | None, warnings: list[str]) -> None:
    """The fit against whole iterations, then every warning."""
    if check is not None:
        console.print(
            f"whole iterations (iterations.csv, {check.num_rows} rows): error mean "
            f"{100 * check.mean_relative_error:.1f} %, max {100 * check.max_relative_error:.0f} %"
            f" ({check.worst})",
            highlight=False,
            soft_wrap=True,
        )
    _print_warnings(warnings)


def _print_warnings(warnings: list[str]) -> None:
    """Each warning on stderr in bold red, then what to do about them."""
    loud = Console(stderr=True)
    for line in warnings:
        loud.print(f"[bold red]WARNING:[/bold red] {line}", highlight=False, soft_wrap=True)
    if warnings:
        loud.print(
            "[bold red]WARNING:[/bold red] check this fit before using it (profile on the "
            "target GPU, more sizes, or --borrow-from a fit you trust)",
            highlight=False,
            soft_wrap=True,
        )


def _command_line(directory: Path, accelerator: str, out: Path, **options: Any) -> list[str]:
    """The command that reproduces this fit (kept in the file's provenance)."""
    argv = ["sincere", "fit", "gpu-profiles", str(directory), "--accelerator", accelerator]
    for name, value in options.items():
        if value:
            argv += [f"--{name.replace('_', '-')}", str(value)]
    return [*argv, "--out", str(out)]


def _reference_fit(name: str, fitting: str, catalog: Any) -> dict[str, Any] | None:
    """The fit document ``--borrow-from`` names (None for 'none' or the chip being fitted)."""
    from sincere.perf.calibration import shipped_fits
    from sincere.perf.factory import load_params_file

    if name.lower() == "none":
        return None
    if Path(name).is_file():
        return {"params": load_params_file(name, "roofline"), "fit": {"accelerator": name}}
    fits = shipped_fits()
    if not catalog.has_accelerator(name) or catalog.accelerator(name).name not in fits:
        raise ConfigError(
            "--borrow-from names no shipped fit or parameter file",
            value=name,
            allowed=[*sorted(fits), "a roofline parameter file", "none"],
        )
    chosen = catalog.accelerator(name).name
    return None if chosen == fitting else dict(fits[chosen])


@fit_app.command("gpu-profiles")
def fit_gpu_profiles_command(
    directory: Annotated[
        Path, typer.Argument(help="operator profiles: one accelerator's folder or the one above")
    ],
    accelerator: Annotated[
        str, typer.Option(help="catalog accelerator (also the profile folder's name, any case)")
    ],
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="parameter file (.yaml/.json)")
    ] = None,
    all_reduce: Annotated[
        str | None,
        typer.Option(
            help="all-reduce topology file to fit (default: one named *dgx*, else the first)"
        ),
    ] = None,
    models: Annotated[
        str | None, typer.Option(help="fit the linear work on these models only (comma-separated)")
    ] = None,
    catalog_file: Annotated[
        list[Path] | None,
        typer.Option("--catalog", help="extra catalog file (models, accelerators)"),
    ] = None,
    borrow_from: Annotated[
        str,
        typer.Option(
            help="fit (catalog accelerator with a shipped fit, or a parameter file) whose "
            "attention / CPU terms fill the parts the profiles lack; 'none' to leave them out"
        ),
    ] = "A100-80GB",
    as_json: Annotated[bool, typer.Option("--json", help="print the document as JSON")] = False,
) -> None:
    """Fit the roofline's constants to one accelerator's operator profiles."""
    from sincere.catalog.loader import default_catalog, load_catalog
    from sincere.fit.gpu_check import fit_warnings, iteration_check
    from sincere.fit.gpu_profiles import fit_document, fit_gpu_profiles
    from sincere.fit.output import write_params
    from sincere.perf.operators import accelerator_folder, read_operator_profiles

    catalog = load_catalog(catalog_file or []) if catalog_file else default_catalog()
    acc = catalog.accelerator(accelerator)
    folder = accelerator_folder(directory, accelerator)
    out = out or Path(f"roofline-{acc.name}.yaml")
    chosen = [m.strip() for m in models.split(",") if m.strip()] if models else None
    with count_bar(console) as bar:
        task = bar.add_task("reading profiles", total=5)
        profiles = read_operator_profiles(folder, catalog)
        bar.update(task, advance=1)
        names = [catalog.model(m).name for m in chosen] if chosen else None
        fit = fit_gpu_profiles(
            profiles,
            acc,
            models=names,
            topology=all_reduce,
            progress=lambda part: bar.update(task, advance=1, description=f"fitting {part}"),
            borrow_from=_reference_fit(borrow_from, acc.name, catalog),
        )
    argv = _command_line(
        directory, accelerator, out, all_reduce=all_reduce, models=models, borrow_from=borrow_from
    )
    document = fit_document(fit, profiles, argv, all_reduce)
    check = iteration_check(fit, folder, catalog, acc)
    warnings = fit_warnings(fit, check)
    if check is not None:
        document["fit"]["iterations"] = check.as_dict()
    if warnings:
        document["fit"]["warnings"] = warnings
    write_params(document, out)
    if as_json:
        typer.echo(json.dumps({"out": str(out), **document}))
        _print_warnings(warnings)  # on stderr: the JSON on stdout stays whole
        return
    print_table(_constants_table(fit))
    for note in fit.notes:
        console.print(f"[yellow]note:[/yellow] {note}")
    _print_checks(check, warnings)
    console.print(f"from {len(profiles.files)} files of {folder}; wrote {out}")
    console.print(f"reproduce: {shlex.join(argv)}", highlight=False, soft_wrap=True)


@fit_app.command("kernels")
def fit_kernels_command(
    directory: Annotated[
        Path, typer.Argument(help="the kernel database: one GPU's folder or the one above")
    ],
    gpu: Annotated[
        str, typer.Option(help="the GPU: its folder (h100_sxm) or catalog accelerator (H100-SXM)")
    ],
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="parameter file (.yaml/.json)")
    ] = None,
    default: Annotated[
        bool,
        typer.Option(
            help="mark the fit as the GPU's default constants (--no-default: --params only)"
        ),
    ] = True,
    vllm_version: Annotated[
        str | None,
        typer.Option(
            help="fit for this vLLM release: each table from the newest version at or below it "
            "(default: the newest tables)"
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the document as JSON")] = False,
) -> None:
    """Fit the roofline's kernel families to one GPU's measured vLLM kernels."""
    from sincere.catalog.loader import default_catalog
    from sincere.fit.kernels import fit_kernels, kernel_document
    from sincere.fit.output import write_params
    from sincere.perf.kernel_tables import GPU_FOLDERS, gpu_folder

    by_folder = {folder: name for name, folder in GPU_FOLDERS.items()}
    catalog = default_catalog()
    name = by_folder.get(gpu.lower(), gpu)
    if not catalog.has_accelerator(name):
        raise ConfigError(
            "--gpu names no kernel folder or catalog accelerator",
            value=gpu,
            allowed=sorted(by_folder),
        )
    acc = catalog.accelerator(name)
    folder = gpu_folder(directory, acc.name)
    out = out or Path(f"kernels-{acc.name}.yaml")
    with console.status(f"fitting {folder.name}'s kernels"):
        fit = fit_kernels(folder, acc, vllm_version)
    argv = ["sincere", "fit", "kernels", str(directory), "--gpu", gpu, "--out", str(out)]
    if not default:
        argv.insert(-2, "--no-default")
    if vllm_version is not None:
        argv[-2:-2] = ["--vllm-version", vllm_version]
    document = kernel_document(fit, argv, default)
    write_params(document, out)
    if as_json:
        typer.echo(json.dumps({"out": str(out), **document}))
        return
    table = Table(title=f"{acc.name}: kernel families fitted to {folder}")
    for col in ("family", "rows", "mean / max error", "bias", "form alone", "constants"):
        table.add_column(col, justify="left" if col in ("family", "constants") else "right")
    for fam in fit.families:
        shown = ", ".join(
            f"{k} {_shown(v)}" for k, v in fam.params.items() if not k.startswith("_")
        )
        form = "" if fam.form_error is None else f"{100 * fam.form_error:.1f} %"
        table.add_row(
            fam.name,
            str(fam.rows),
            f"{100 * fam.mean_error:.1f} / {100 * fam.max_error:.0f} %",
            f"{100 * fam.bias:+.1f} %",
            form,
            shown,
        )
    print_table(table)
    for fam in fit.families:
        for note in fam.notes:
            console.print(f"[yellow]note:[/yellow] {fam.name}: {note}")
    for line in fit.missing:
        console.print(f"[yellow]not fitted:[/yellow] {line}")
    console.print(f"wrote {out}")


def _shown(value: Any) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(_shown(v) for v in value) + "]"
    if isinstance(value, dict) and "log_factors" in value:  # a factor by shape
        logs = value["log_factors"]
        return f"grid of {len(logs)} nodes (factors {min(logs):+.2f} to {max(logs):+.2f} in log)"
    return f"{value:.4g}"
