"""``sincere catalog``: list the accelerators and models sincere knows.

Both verbs read the shipped catalog, the files in ``$SINCERE_CATALOG`` and any
``--file`` given, and print a table (or, with ``--json``, the full records including
each figure's source).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from sincere.cli.app import verb_group
from sincere.cli.tables import print_table

if TYPE_CHECKING:
    from sincere.catalog.loader import Catalog
    from sincere.catalog.specs import Accelerator, ModelArch

catalog_app = verb_group(
    "catalog", "List the accelerators and models sincere knows (with public sources)."
)

FileOption = Annotated[
    list[Path] | None,
    typer.Option(
        "--file",
        "-f",
        help="Extra catalog file (YAML or JSON, same layout as the shipped ones); repeatable.",
    ),
]
JsonOption = Annotated[
    bool, typer.Option("--json", help="Print the records as JSON instead of a table.")
]


def _load(files: Sequence[Path] | None) -> Catalog:
    from sincere.catalog.loader import load_catalog

    return load_catalog(list(files or []))


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:g}"


def _record(r: Accelerator | ModelArch) -> dict[str, object]:
    """The record's fields; a model's also its active parameters per token (billions)."""
    out = dataclasses.asdict(r)
    if hasattr(r, "active_params_b"):
        out["active_params_b"] = round(r.active_params_b(), 3)
    return out


def _print_json(records: Sequence[Accelerator | ModelArch]) -> None:
    typer.echo(json.dumps([_record(r) for r in records], indent=2))


ACCELERATOR_COLUMNS = [
    "name",
    "vendor",
    "mem_GB",
    "mem_GB/s",
    "bf16_TF",
    "fp8_TF",
    "int8_TOPS",
    "link_GB/s",
    "host_GB/s",
    "USD/h",
    "W",
    "CC",
]
MODEL_COLUMNS = [
    "name",
    "params_B",
    "active_B",
    "experts",
    "layers",
    "hidden",
    "heads",
    "kv_heads",
    "head_dim",
    "vocab",
    "context",
    "KV_B/tok",
    "precisions",
    "aliases",
]
_TEXT_COLUMNS = {"name", "vendor", "precisions", "aliases"}


def _accelerator_row(a: Accelerator) -> list[str]:
    figures = (a.memory_gb, a.hbm_bandwidth_gbps, a.bf16_tflops, a.fp8_tflops, a.int8_tops)
    links = (a.interconnect_gbps, a.host_link_gbps)
    return [
        a.name,
        a.vendor,
        *(_num(v) for v in (*figures, *links)),
        f"{a.price_per_hour_usd:.2f}",
        _num(a.power_w),
        "yes" if a.cc_supported else "no",
    ]


def _experts(m: ModelArch) -> str:
    """``"128 (8/token)"``, ``"+1 shared"`` when there are; ``"-"`` for a dense model."""
    if not m.is_moe:
        return "-"
    shared = f" +{m.num_shared_experts} shared" if m.num_shared_experts else ""
    return f"{m.num_experts} ({m.experts_per_token}/token){shared}"


def _model_row(m: ModelArch) -> list[str]:
    shape = (m.num_layers, m.hidden_size, m.num_heads, m.num_kv_heads, m.head_size)
    return [
        m.name,
        _num(m.num_params_b),
        f"{m.active_params_b():.3g}",
        _experts(m),
        *(str(v) for v in (*shape, m.vocab_size, m.max_context)),
        f"{m.kv_bytes_per_token():.0f}",
        ", ".join(m.precisions),
        ", ".join(a for a in m.aliases if "/" not in a),  # Hugging Face ids left out
    ]


def _print_table(title: str, columns: Sequence[str], rows: Sequence[list[str]]) -> None:
    table = Table(title=title)
    for col in columns:
        label = col.replace("_", " ")
        table.add_column(label, justify="left" if col in _TEXT_COLUMNS else "right")
    for row in rows:
        table.add_row(*row)
    print_table(table)


@catalog_app.command("accelerators")
def accelerators(files: FileOption = None, as_json: JsonOption = False) -> None:
    """Accelerators: memory (GB), bandwidth (GB/s), dense TFLOP/s, price (USD/h), power (W)."""
    records = _load(files).accelerators()
    if as_json:
        _print_json(records)
        return
    title = "Accelerators (dense peaks; link = device-to-device, both directions)"
    _print_table(title, ACCELERATOR_COLUMNS, [_accelerator_row(a) for a in records])


@catalog_app.command("models")
def models(files: FileOption = None, as_json: JsonOption = False) -> None:
    """Model architectures: parameters (billions, all and active per token), experts, shape,
    context, KV bytes per token."""
    records = _load(files).models()
    if as_json:
        _print_json(records)
        return
    title = (
        "Models (active B = parameters one token passes through; experts = routed experts, "
        "picked per token; KV B/tok = fp16 KV-cache bytes per token)"
    )
    _print_table(title, MODEL_COLUMNS, [_model_row(m) for m in records])
