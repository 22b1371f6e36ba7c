"""``sincere keys``: create, list and revoke the gateway's API keys.

Keys live in a store file (``--store``, or ``$SINCERE_KEYS``; SQLite for ``.db``, a
JSON keys file for ``.json``) as salted digests; ``create`` prints the new key's token
once, on standard output, and never again. Every change is appended to the audit log
beside the store (``STORE.audit.jsonl``) with the acting user (``cli:<user>``). See
:mod:`sincere.serve.security.keystore` and docs/security.md.
"""

from __future__ import annotations

import getpass
import json
import os
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from sincere.cli.app import verb_group
from sincere.cli.tables import print_table
from sincere.core.errors import ConfigError

if TYPE_CHECKING:
    from sincere.serve.security.keys import KeyRecord
    from sincere.serve.security.keystore import KeyStore

keys_app = verb_group(
    "keys", "Create, list and revoke API keys (client keys with limits and budgets; admin keys)."
)

StoreOption = Annotated[
    Path,
    typer.Option(
        "--store",
        envvar="SINCERE_KEYS",
        help="Key store: SQLite (.db, .sqlite) or a JSON keys file (.json). Env: SINCERE_KEYS.",
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


def _actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return f"cli:uid{os.getuid()}"


def _expiry(in_days: float | None, at: str | None, now: float) -> float | None:
    if in_days is not None and at is not None:
        raise ConfigError("give --expires-in-days or --expires-at, not both")
    if in_days is not None:
        if not in_days > 0:
            raise ConfigError("bad expiry", where="--expires-in-days", value=in_days, allowed="> 0")
        return now + in_days * 86400.0
    if at is None:
        return None
    try:
        when = datetime.fromisoformat(at)
    except ValueError:
        raise ConfigError(
            "bad date", where="--expires-at", value=at, allowed="ISO 8601, e.g. 2030-01-31T00:00Z"
        ) from None
    return (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()


def check_tier(tier: str, config: Path | None) -> None:
    """Raise unless ``tier`` is one the gateway of ``config`` serves (a gateway whose config
    names no tiers serves only ``default``), naming the tiers allowed."""
    from sincere.serve.gateway.config import GatewayConfig, load_config

    tiers = sorted((load_config(config) if config is not None else GatewayConfig()).tiers)
    if tier in tiers:
        return
    source = f"the gateway config {config}" if config is not None else "a gateway whose config"
    served = "serves" if config is not None else "names no tiers serves"
    hint = "" if config is not None else "; pass --config GATEWAY.yaml to allow its tiers"
    raise ConfigError(
        f"{source} {served} no tier {tier!r}{hint}", where="--tier", value=tier, allowed=tiers
    )


@keys_app.command("create")
def create_command(
    name: Annotated[str, typer.Option(help="Tenant (client key) or operator (admin key) name.")],
    store: StoreOption = Path("keys.db"),
    admin: Annotated[bool, typer.Option("--admin", help="An admin key (admin API only).")] = False,
    metrics: Annotated[
        bool, typer.Option("--metrics", help="A metrics key (reads /metrics only).")
    ] = False,
    model: Annotated[
        list[str] | None, typer.Option("--model", help="A model the key may use; repeatable.")
    ] = None,
    tier: Annotated[
        str | None,
        typer.Option(help="Tier its requests get: one the gateway serves (see --config)."),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            help="The gateway's config, whose tiers --tier must name (without it: the tiers "
            "a gateway serves when its config has no tiers: default).",
        ),
    ] = None,
    priority_ceiling: Annotated[
        int | None, typer.Option(help="Most important priority allowed (smaller is sooner).")
    ] = None,
    rpm: Annotated[int | None, typer.Option(help="Requests per minute (sliding).", min=1)] = None,
    tpm: Annotated[
        int | None, typer.Option(help="Tokens (prompt + max_tokens) per minute.", min=1)
    ] = None,
    budget_usd: Annotated[float | None, typer.Option(help="Spend allowed, USD.", min=0)] = None,
    expires_in_days: Annotated[float | None, typer.Option(help="Expire after days.")] = None,
    expires_at: Annotated[str | None, typer.Option(help="Expire at (ISO 8601).")] = None,
    as_json: JsonOption = False,
) -> None:
    """Create a key and print its token (shown this once)."""
    from sincere.serve.security.keys import KeySpec
    from sincere.serve.security.keystore import KeyStore

    if tier is not None:
        check_tier(tier, config)
    if admin and metrics:
        raise ConfigError(
            "a key is of one kind", where="--admin / --metrics", allowed="one of them, or neither"
        )
    now = time.time()
    spec = KeySpec(
        kind="admin" if admin else "metrics" if metrics else "client",
        name=name,
        models=frozenset(model) if model else None,
        tier=tier,
        priority_ceiling=priority_ceiling,
        max_requests_per_min=rpm,
        max_tokens_per_min=tpm,
        budget_usd=budget_usd,
        expires_at=_expiry(expires_in_days, expires_at, now),
    )
    keystore = KeyStore.open(store)
    try:
        token, record = keystore.create(spec, actor=_actor(), now=now)
    finally:
        keystore.close()
    if as_json:
        typer.echo(json.dumps({"token": token, "key_id": record.key_id, "kind": record.kind}))
    else:
        typer.echo(token)
    Console(stderr=True).print(
        f"created {record.kind} key {record.key_id} for {record.name!r} in {store}; "
        "the token above is shown only now: store it safely",
        highlight=False,
    )


@keys_app.command("list")
def list_command(store: StoreOption = Path("keys.db"), as_json: JsonOption = False) -> None:
    """List every key: limits, usage and state (never secrets)."""
    from sincere.serve.security.keystore import KeyStore

    if not store.exists():
        raise ConfigError("key store not found", where=store, allowed="a file made by keys create")
    keystore = KeyStore.open(store)
    now = time.time()
    rows = [_row(keystore, r, now) for r in keystore.records()]
    keystore.close()
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    table = Table(title=f"API keys in {store}")
    for column in ("id", "kind", "name", "state", "models", "limits", "spent / budget USD"):
        table.add_column(column)
    for row in rows:
        limits = [f"{row[k]} {k}" for k in ("rpm", "tpm") if row[k] is not None]
        limits += [f"tier {row['tier']}"] if row["tier"] is not None else []
        limits += [f"until {str(row['expires'])[:10]}"] if row["expires"] is not None else []
        budget = "-" if row["budget_usd"] is None else f"{row['budget_usd']:g}"
        table.add_row(
            str(row["key_id"]), str(row["kind"]), str(row["name"]), str(row["state"]),
            str(row["models"] or "any"), ", ".join(limits) or "-",
            f"{row['spent_usd']:g} / {budget}",
        )  # fmt: skip
    print_table(table)


def _row(keystore: KeyStore, record: KeyRecord, now: float) -> dict[str, object]:
    spec, totals = record.spec, keystore.totals(record.key_id)
    expires = spec.expires_at
    return {
        "key_id": record.key_id,
        "kind": record.kind,
        "name": record.name,
        "state": record.state(now),
        "models": None if spec.models is None else ",".join(sorted(spec.models)),
        "tier": spec.tier,
        "priority_ceiling": spec.priority_ceiling,
        "rpm": spec.max_requests_per_min,
        "tpm": spec.max_tokens_per_min,
        "budget_usd": spec.budget_usd,
        "spent_usd": round(totals.spent_usd, 6),
        "requests": totals.num_requests,
        "expires": None if expires is None else datetime.fromtimestamp(expires, UTC).isoformat(),
        "created_by": record.created_by,
    }


@keys_app.command("revoke")
def revoke_command(
    key_id: Annotated[str, typer.Argument(help="The key's id (from keys list).")],
    store: StoreOption = Path("keys.db"),
) -> None:
    """Revoke a key at once (a running gateway sees it at its next refresh)."""
    from sincere.serve.security.keystore import KeyStore

    if not store.exists():
        raise ConfigError("key store not found", where=store, allowed="a file made by keys create")
    keystore = KeyStore.open(store)
    try:
        record = keystore.revoke(key_id, actor=_actor(), now=time.time())
    finally:
        keystore.close()
    typer.echo(f"revoked {record.key_id} ({record.name})")
