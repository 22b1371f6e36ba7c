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
) -> None:
    """Load CONFIG, bind, and serve until interrupted (Ctrl-C)."""
    from sincere.serve.gateway.config import load_config

    cfg = load_config(config)
    updates: dict[str, Any] = {}
    if host is not None:
        updates["host"] = host
    if port is not None:
        updates["port"] = port
    if updates:
        cfg = cfg.model_copy(update=updates)
    from sincere.serve.gateway.server import serve_gateway

    def announce(gw: Any) -> None:
        typer.echo(
            f"sincere gateway on {gw.url} ({len(cfg.backends)} backends, router {cfg.router.name})"
        )

    serve_gateway(cfg, workers=workers, ready=announce, decisions=decisions)
