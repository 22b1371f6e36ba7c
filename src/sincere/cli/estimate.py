"""``sincere estimate``: latency and memory of a deployment from fingerprints (MaverIQ).

``sincere estimate MODEL --tp --pp --dtype --kv-int8 --batch --output-len --fingerprints
FILE`` prints one configuration's TTFT, TPOT, latency and memory with the inputs used;
``sincere estimate --fingerprints FILE --configs CSV --out CSV`` predicts every row of a
CSV in MaverIQ's columns. A model without fingerprints (or no ``--fingerprints``) is
estimated by the catalog roofline, and the output says so. ``sincere estimate fit --data
DIR --out FILE`` fits the parallelism-law exponents.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from sincere.cli.app import VerbGroup, verb_group
from sincere.cli.tables import print_table
from sincere.core.errors import ConfigError, DataError

if TYPE_CHECKING:
    from sincere.estimate.estimator import Estimate, FingerprintBank
    from sincere.estimate.fingerprint import ConfigKey

MOE_NOTE = (
    "MaverIQ's method cannot estimate this model: it is a mixture of experts and no MoE "
    "fingerprints exist (the published ones are of dense models); the roofline prices its "
    "experts instead"
)


def no_moe_fingerprints(model: str) -> bool:
    """``model`` is a catalog mixture-of-experts model (MaverIQ has no fingerprints of any)."""
    from sincere.catalog import default_catalog

    catalog = default_catalog()
    return catalog.has_model(model) and catalog.model(model).is_moe


CONFIG_COLUMNS = ("Model", "TP", "PP", "DTYPE", "INT8_KV_Cache", "Output_Lenght", "Batch_Size")
OUT_COLUMNS = ("Predicted_Latency (s)", "Predicted_Memory (GB)", "Estimate_Source")


class _PredictByDefault(VerbGroup):
    """``sincere estimate MODEL ...`` runs ``predict``; ``fit`` stays a subcommand."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h"):
            args = ["predict", *args]
        return super().parse_args(ctx, args)


estimate_app = verb_group(
    "estimate",
    "Estimate latency (s) and memory (GB, all GPUs) of a model deployment from "
    "MaverIQ-style fingerprints (1- and 2-layer profiles); roofline when there are none. "
    "`sincere estimate MODEL [options]`, `sincere estimate --configs CSV --out CSV`, "
    "`sincere estimate fit --data DIR --out FILE`.",
    cls=_PredictByDefault,
)


def _bank(fingerprints: list[Path], exponents: Path | None, mode: str) -> FingerprintBank | None:
    if not fingerprints:
        return None
    from sincere.estimate.estimator import FingerprintBank
    from sincere.estimate.law import load_exponents

    table = load_exponents(exponents)
    return FingerprintBank.from_files(fingerprints, table, mode=mode)


def _precision(bank: FingerprintBank | None, model: str, dtype: str | None) -> str:
    """``--dtype`` as given; else the weight precision of ``model``'s fingerprints when
    they have one (``sincere profile local`` writes bfloat16), else fp16."""
    from sincere.estimate.fingerprint import parse_precision

    if dtype is not None:
        return parse_precision(dtype)
    have = sorted({w for w, _ in bank.precisions(model)}) if bank is not None else []
    if not have or "fp16" in have:
        return "fp16"
    if len(have) == 1:
        return have[0]
    raise ConfigError(
        f"{model}'s fingerprints have several precisions and no fp16; pick one with --dtype",
        allowed=have,
    )


def _estimate(
    bank: FingerprintBank | None, key: ConfigKey, out: int, accelerator: str, prompt: int
) -> Estimate:
    from sincere.estimate.estimator import roofline_estimate

    _check_parallelism(key)
    if bank is not None and bank.has_model(key.model):
        return bank.estimate(key, out)
    return roofline_estimate(key, out, accelerator=accelerator, prompt_tokens=prompt)


def _check_parallelism(key: ConfigKey) -> None:
    """Raise when a catalog model's heads (or layers) do not split by ``key``'s TP (PP)."""
    from sincere.catalog import get_model
    from sincere.engine.build import check_parallelism

    try:
        arch = get_model(key.model)
    except ConfigError:
        return  # a model known only from its fingerprints: no shape to check against
    try:
        check_parallelism(arch, key.tp, key.pp)
    except ConfigError as exc:
        option = "--pp" if str(exc).startswith("pp=") else "--tp"
        raise ConfigError(str(exc), where=option) from None


def _table(est: Estimate, accelerator: str, prompt: int) -> Table:
    k = est.key
    table = Table(title=f"{k.model} estimate", header_style="bold")
    table.add_column("")
    table.add_column("value", justify="right")
    rows = [
        ("model", k.model),
        ("TP x PP (GPUs)", f"{k.tp} x {k.pp} ({est.num_gpus})"),
        ("weights / KV cache", f"{k.precision} / {k.kv_precision}"),
        ("batch size", str(k.batch_size)),
        ("output tokens", str(est.output_tokens)),
        ("TTFT (s)", _seconds(est.ttft_s)),
        ("TPOT (s)", _seconds(est.tpot_s)),
        ("latency (s)", _seconds(est.latency_s)),
        ("memory (GB, all GPUs)", f"{est.memory_gb:.2f}"),
        ("source", est.source),
    ]
    if est.source == "roofline":
        rows.append(("roofline inputs", f"{accelerator}, prompt {prompt} tokens"))
    for name, value in rows:
        table.add_row(name, value)
    return table


def _seconds(value: float) -> str:
    """Four significant digits, so milliseconds on a CPU profile do not print as 0.0000."""
    return f"{value:.4g}"


def _key_from_row(row: dict[str, str], path: Path, line: int) -> tuple[ConfigKey, int]:
    from sincere.estimate.fingerprint import KV_FLAGS, ConfigKey, canonical_model, parse_precision

    try:
        flag = row["INT8_KV_Cache"].strip().lower()
        if flag not in KV_FLAGS:
            raise ValueError(flag)
        key = ConfigKey(
            canonical_model(row["Model"].strip()),
            parse_precision(row["DTYPE"].strip()),
            KV_FLAGS[flag],
            int(row["TP"]),
            int(row["PP"]),
            int(row["Batch_Size"]),
        )
        return key, int(row["Output_Lenght"])
    except (KeyError, ValueError, TypeError, ConfigError) as exc:
        raise DataError(f"bad configuration row ({exc})", path=path, line=line) from None


def _run_batch(
    bank: FingerprintBank | None, configs: Path, out: Path, accelerator: str, prompt: int
) -> int:
    from sincere.estimate.fingerprint import read_csv_rows

    fields, rows = read_csv_rows(configs, CONFIG_COLUMNS)
    results: list[dict[str, Any]] = []
    for line, row in enumerate(rows, start=2):
        key, num_out = _key_from_row(row, configs, line)
        try:
            est = _estimate(bank, key, num_out, accelerator, prompt)
        except ConfigError as exc:
            raise DataError(str(exc).split(": ", 1)[-1], path=configs, line=line) from None
        results.append(
            {
                **row,
                OUT_COLUMNS[0]: f"{est.latency_s:.6f}",
                OUT_COLUMNS[1]: f"{est.memory_gb:.4f}",
                OUT_COLUMNS[2]: est.source,
            }
        )
    with out.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=[*fields, *OUT_COLUMNS], extrasaction="ignore")
        writer.writeheader()
        writer.writerows(results)
    return len(results)


FingerprintsOpt = Annotated[
    list[Path] | None,
    typer.Option("--fingerprints", "-f", help="Fingerprint CSV (MaverIQ columns); repeatable."),
]


@estimate_app.command("predict")
def predict_cmd(
    model: Annotated[str | None, typer.Argument(help="Catalog model (single mode).")] = None,
    tp: Annotated[int, typer.Option(help="Tensor-parallel degree.")] = 1,
    pp: Annotated[int, typer.Option(help="Pipeline stages.")] = 1,
    dtype: Annotated[
        str | None,
        typer.Option(
            help="Weights: fp16, bf16, int8, int4, int4-gptq (MaverIQ's float16 / bfloat16 "
            "/ int4_gptq too). Default: the fingerprints' only precision, else fp16."
        ),
    ] = None,
    kv_int8: Annotated[bool, typer.Option("--kv-int8", help="int8 KV cache.")] = False,
    batch: Annotated[int, typer.Option(help="Requests per batch.")] = 1,
    output_len: Annotated[int, typer.Option(help="Output tokens per request.")] = 100,
    fingerprints: FingerprintsOpt = None,
    exponents: Annotated[
        Path | None, typer.Option(help="Exponent YAML (default: the shipped fit).")
    ] = None,
    mode: Annotated[str, typer.Option(help="law (3 reference fingerprints) or direct.")] = "law",
    configs: Annotated[Path | None, typer.Option(help="Batch mode: configurations CSV.")] = None,
    out: Annotated[Path | None, typer.Option(help="Batch mode: output CSV.")] = None,
    accelerator: Annotated[str, typer.Option(help="Roofline fallback: accelerator.")] = "A6000",
    prompt_len: Annotated[int, typer.Option(help="Roofline fallback: prompt tokens.")] = 128,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON, not a table.")] = False,
) -> None:
    """Estimate one configuration (MODEL) or every row of --configs into --out."""
    from sincere.estimate.fingerprint import ConfigKey, canonical_model

    bank = _bank(fingerprints or [], exponents, mode)
    console = Console()
    if configs is not None or out is not None:
        if configs is None or out is None or model is not None:
            raise ConfigError("batch mode needs --configs and --out and no MODEL")
        n = _run_batch(bank, configs, out, accelerator, prompt_len)
        console.print(f"wrote {n} estimates to {out}")
        return
    if model is None:
        raise ConfigError("give a MODEL, or --configs CSV --out CSV")
    name = canonical_model(model)
    precision = _precision(bank, name, dtype)
    key = ConfigKey(name, precision, "int8" if kv_int8 else "fp16", tp, pp, batch)
    est = _estimate(bank, key, output_len, accelerator, prompt_len)
    noise = bank.below_noise(key) if bank is not None and est.source != "roofline" else []
    no_moe = no_moe_fingerprints(key.model)
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "model": key.model,
                    "tp": tp,
                    "pp": pp,
                    "precision": key.precision,
                    "kv_precision": key.kv_precision,
                    "batch_size": batch,
                    "output_tokens": output_len,
                    "ttft_s": est.ttft_s,
                    "tpot_s": est.tpot_s,
                    "latency_s": est.latency_s,
                    "memory_gb": est.memory_gb,
                    "source": est.source,
                    "below_noise": noise,
                    "notes": [MOE_NOTE] if est.source == "roofline" and no_moe else [],
                },
                indent=2,
            )
        )
        return
    if est.source == "roofline":
        why = "no fingerprints given" if bank is None else f"no fingerprint of {key.model}"
        console.print(f"[yellow]{why}: roofline estimate from the catalog[/yellow]")
        if no_moe_fingerprints(key.model):
            console.print(f"[yellow]{MOE_NOTE}[/yellow]")
    print_table(_table(est, accelerator, prompt_len), console)
    for note in noise:
        console.print(
            f"[yellow]warning: {key.model}'s fingerprint {note}: its 1- and 2-layer timings "
            "differ by less than their noise, so it is shown as 0; profile with more "
            "repeats or longer prompts[/yellow]"
        )


@estimate_app.command("fit")
def fit_cmd(
    data: Annotated[Path, typer.Option(help="Folder with fingerprint_data_collection*.csv.")],
    out: Annotated[Path, typer.Option(help="Exponent YAML to write.")],
    target: Annotated[
        str,
        typer.Option(
            help="Fit target: auto, fingerprint or measured (auto: the folder's full-model "
            "runs when it has full_model_data_collection*.csv, else the fingerprints)."
        ),
    ] = "auto",
    pp_reference: Annotated[str, typer.Option(help="same-depth or fingerprint.")] = "same-depth",
    per_precision: Annotated[
        bool, typer.Option("--per-precision", help="Also fit one set per precision.")
    ] = False,
) -> None:
    """Fit the law's decode overhead per TP degree and its exponents; write them to --out."""
    from sincere.estimate.fit import fit_from_dir, write_exponents

    table, fits = fit_from_dir(data, target, pp_reference=pp_reference, per_precision=per_precision)
    write_exponents(table, out)
    view = Table(title="parallelism-law exponents", header_style="bold")
    for col in ("precision", "alpha", "beta", "gamma", "delta", "mean rel. error", "samples"):
        view.add_column(col, justify="right" if col != "precision" else "left")
    for name, fit in fits.items():
        view.add_row(
            name,
            *(f"{v:.3f}" for v in fit.exponents.as_tuple()),
            f"{fit.loss:.3f}",
            str(fit.num_samples),
        )
    console = Console()
    print_table(view, console)
    decode = ", ".join(f"TP {t}: {v * 1e3:.4g} ms" for t, v in table.decode_s_per_layer.items())
    console.print(f"decode overhead per layer and token: {decode or 'none (no TP > 1 data)'}")
    console.print(f"wrote {out}")
