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
            "router state and queues. Per-key limits and budgets are per process unless "
            "--redis (state.redis) keeps them in Redis, shared by every worker and gateway "
            "(see docs/gateway.md)."
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
    from sincere.serve.gateway.server import exit_process

    def announce(gw: Any) -> None:
        typer.echo(start_line(gw.url, cfg, workers))

    serve_gateway(cfg, workers=workers, ready=announce, decisions=decisions)
    exit_process(0)  # every worker has stopped and flushed: skip the interpreter's teardown


def start_line(url: str, cfg: Any, workers: int) -> str:
    """What is serving: address, workers, backends, router, key store and where the keys'
    limits and budgets live (a Redis address without its password)."""
    keys = cfg.security.keys
    auth = f"keys {keys}" if keys is not None else "no keys (no authentication)"
    redis = cfg.state.redis
    if redis is not None:
        state = f"limits and budgets in Redis {redis_address(redis)}, shared by every worker"
    elif keys is not None:
        state = "limits and budgets in each worker process"
    else:
        state = ""
    plural = "s" if workers != 1 else ""
    parts = [f"{workers} worker{plural}", f"{len(cfg.backends)} backends"]
    parts += [f"router {cfg.router.name}", auth] + ([state] if state else [])
    return f"sincere gateway on {url} ({', '.join(parts)})"


def redis_address(url: str) -> str:
    """``redis://user:secret@host:6379/0`` -> ``redis://host:6379/0`` (no credentials)."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.scheme == "unix":  # a socket path: nothing secret before it
        return f"unix://{parts.path}"
    host = parts.hostname or ""
    netloc = f"[{host}]" if ":" in host else host
    if parts.port is not None:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


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
