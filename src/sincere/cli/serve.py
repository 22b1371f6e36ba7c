"""``sincere serve CONFIG``: run the OpenAI-compatible gateway in front of engines."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from sincere.cli.app import app

HELP = """Run the OpenAI-compatible gateway described by CONFIG (YAML).

Serves /v1/completions, /v1/chat/completions (SSE streaming), /v1/models, /health,
/metrics (Prometheus) and the controller API under /admin. Requests are routed by the
configured router over the backends (OpenAI-compatible servers or Ollama), queued at
the gateway when every instance is full, and refused early (429) when they cannot meet
their deadline or budget.

Security (docs/gateway.md, "Deploying it"): with --keys every request needs an API key
(`sincere keys create`) and /admin an admin key; without it the gateway listens on
loopback only unless --insecure-no-auth. --tls-cert/--tls-key serve HTTPS.

Units in CONFIG: durations in seconds (*_s) or milliseconds (*_ms), prices in USD per
1M tokens, body sizes in bytes. See docs/gateway.md and examples/serve/.
"""


@app.command("serve", help=HELP)
def serve(
    config: Annotated[Path, typer.Argument(help="Gateway config (YAML).", exists=True)],
    host: Annotated[
        str | None, typer.Option(help="Address to bind (overrides listen host; default 127.0.0.1).")
    ] = None,
    port: Annotated[int | None, typer.Option(help="Port to bind (overrides the config).")] = None,
    workers: Annotated[
        int,
        typer.Option(
            help="Gateway processes sharing the port (SO_REUSEPORT); each keeps its own "
            "router state, queues and limits (see docs/gateway.md)."
        ),
    ] = 1,
    decisions: Annotated[
        Path | None,
        typer.Option(
            "--decisions",
            help="Append every routing decision (request, candidate instances' load, chosen "
            "instance, reason, estimates) and outcome to this file, one JSON line each.",
        ),
    ] = None,
    keys: Annotated[
        Path | None,
        typer.Option(
            "--keys",
            help="Key store made by `sincere keys create` (SQLite .db or .json): every request "
            "then needs a client key and /admin an admin key (overrides security.keys).",
        ),
    ] = None,
    insecure_no_auth: Annotated[
        bool,
        typer.Option(
            "--insecure-no-auth",
            help="Allow listening on a non-loopback address without --keys (anyone who can "
            "reach the port may use and reconfigure the gateway).",
        ),
    ] = False,
    tls_cert: Annotated[
        Path | None, typer.Option("--tls-cert", help="Serve HTTPS with this PEM certificate.")
    ] = None,
    tls_key: Annotated[
        Path | None, typer.Option("--tls-key", help="The PEM private key of --tls-cert.")
    ] = None,
    redis: Annotated[
        str | None,
        typer.Option(
            "--redis",
            help="Keep every key's limits, reservations and spend in this Redis "
            "(redis://HOST:PORT/DB), shared by all workers and gateways on it "
            "(overrides state.redis; needs --keys).",
        ),
    ] = None,
) -> None:
    """Load CONFIG, bind, and serve until interrupted (Ctrl-C)."""
    from sincere.serve.gateway.config import load_config

    cfg = load_config(config)
    updates: dict[str, Any] = {}
    if host is not None:
        updates["host"] = host
    if port is not None:
        updates["port"] = port
    security = _security(cfg.security, keys, insecure_no_auth, tls_cert, tls_key)
    if security is not None:
        updates["security"] = security
    if redis is not None:
        updates["state"] = _state(cfg.state, redis)
    if updates:
        cfg = cfg.model_copy(update=updates)
    from sincere.serve.gateway.auth import check_bind

    check_bind(cfg.host, cfg.security)  # before anything starts: one line naming the flag
    from sincere.serve.app import serve_gateway

    def announce(gw: Any) -> None:
        typer.echo(
            f"sincere gateway on {gw.url} ({len(cfg.backends)} backends, router {cfg.router.name})"
        )

    serve_gateway(cfg, workers=workers, ready=announce, decisions=decisions)


def _security(
    base: Any, keys: Path | None, insecure: bool, cert: Path | None, key: Path | None
) -> Any:
    """``base`` (the config's security section) with the flags given; None: no flag given."""
    if keys is None and not insecure and cert is None and key is None:
        return None
    flags = {"keys": keys, "tls_cert": cert, "tls_key": key}
    updates: dict[str, Any] = {name: value for name, value in flags.items() if value is not None}
    updates["insecure_no_auth"] = base.insecure_no_auth or insecure
    merged = base.model_copy(update=updates)
    if (merged.tls_cert is None) != (merged.tls_key is None):
        from sincere.core.errors import ConfigError

        raise ConfigError("--tls-cert and --tls-key go together: give both or neither")
    return merged


def _state(base: Any, redis: str) -> Any:
    """``base`` (the config's state section) with ``--redis`` set, validated."""
    from pydantic import ValidationError

    from sincere.core.errors import ConfigError
    from sincere.serve.gateway.config import StateConfig

    try:
        return StateConfig.model_validate({**base.model_dump(), "redis": redis})
    except ValidationError:
        raise ConfigError(
            "--redis: not a Redis URL",
            value=redis,
            allowed="redis://HOST:PORT/DB, rediss://... (TLS) or unix:///path/to/socket",
        ) from None
