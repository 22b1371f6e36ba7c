"""``sincere seal``: confidential mode's engine-side proxy and its keys.

``keygen`` writes a key pair file for the proxy (mode 0600) and the public key file
clients pin; ``serve`` runs the proxy in front of an engine's OpenAI endpoint: it opens
HPKE-sealed requests, checks them against their declared headers, forwards them and
seals the answers (streams chunk by chunk). See
:mod:`sincere.serve.security.seal_proxy` and docs/security.md. No TEE attestation:
clients trust the public key file they were given.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from sincere.cli.app import verb_group

seal_app = verb_group(
    "seal", "Confidential mode: the seal proxy in front of an engine, and its HPKE keys."
)


@seal_app.command("keygen")
def keygen_command(
    out: Annotated[Path, typer.Option(help="Key pair file for the proxy (kept private).")] = Path(
        "seal.key"
    ),
    public: Annotated[Path, typer.Option(help="Public key file for clients to pin.")] = Path(
        "seal.pub"
    ),
) -> None:
    """Make a fresh X25519 key pair; refuses to overwrite existing files."""
    from sincere.core.errors import ConfigError
    from sincere.serve.security.envelope import SealKeyPair, write_keypair, write_public_key

    for path in (out, public):
        if path.exists():
            raise ConfigError("file exists; not overwriting a key", where=path)
    pair = SealKeyPair.generate()
    write_keypair(pair, out)
    write_public_key(pair.pinned, public)
    typer.echo(f"key {pair.key_id}: private {out} (mode 0600), public {public}")


@seal_app.command("serve")
def serve_command(
    upstream: Annotated[str, typer.Option(help="The engine's base URL (OpenAI API).")],
    key: Annotated[Path, typer.Option(help="Key pair file from `sincere seal keygen`.")] = Path(
        "seal.key"
    ),
    host: Annotated[str, typer.Option(help="Address to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port (0: the OS picks).", min=0)] = 8200,
    prompt_slack: Annotated[
        float, typer.Option(help="Share a prompt may exceed its declared tokens.", min=0)
    ] = 0.1,
    tls_cert: Annotated[Path | None, typer.Option(help="PEM certificate (serve HTTPS).")] = None,
    tls_key: Annotated[Path | None, typer.Option(help="PEM private key for --tls-cert.")] = None,
    upstream_key_env: Annotated[
        str | None, typer.Option(help="Variable holding the engine's API key, if it needs one.")
    ] = None,
    upstream_key_file: Annotated[
        Path | None, typer.Option(help="File whose first line is the engine's API key.")
    ] = None,
    inbound_key_env: Annotated[
        str | None,
        typer.Option(
            help="Variable holding the key callers (the gateway) must send as "
            "Authorization: Bearer (the gateway's upstream_keys entry for this backend)."
        ),
    ] = None,
    inbound_key_file: Annotated[
        Path | None, typer.Option(help="File whose first line is that inbound key.")
    ] = None,
    replay_window_s: Annotated[
        float,
        typer.Option(
            help="A sealed body seen again within this many seconds, or sealed longer ago: "
            "409 (0: off).",
            min=0,
        ),
    ] = 600.0,
    replay_redis: Annotated[
        str | None,
        typer.Option(
            help="Redis URL where accepted sealed bodies are remembered, shared by every proxy "
            "of this key pair given the same URL. Without it replay protection is per process: "
            "proxies sharing a key pair each accept the same bytes once.",
        ),
    ] = None,
    header_timeout_s: Annotated[
        float, typer.Option(help="A request head must be complete this long after its first byte.")
    ] = 10.0,
    max_connections: Annotated[int, typer.Option(help="Connections held at most.", min=1)] = 1024,
) -> None:
    """Serve sealed requests for one engine until interrupted."""
    from sincere.core.errors import ConfigError
    from sincere.serve.security.credentials import SecretRef
    from sincere.serve.security.envelope import load_keypair
    from sincere.serve.security.seal_proxy import SealProxy
    from sincere.serve.security.tls import server_context

    if (tls_cert is None) != (tls_key is None):
        raise ConfigError("give both --tls-cert and --tls-key, or neither")
    if not upstream.startswith(("http://", "https://")):
        raise ConfigError("bad URL", where="--upstream", value=upstream, allowed="http(s)://...")
    context = None if tls_cert is None or tls_key is None else server_context(tls_cert, tls_key)
    if upstream_key_env is not None and upstream_key_file is not None:
        raise ConfigError("give --upstream-key-env or --upstream-key-file, not both")
    secret = None
    if upstream_key_env is not None or upstream_key_file is not None:
        secret = SecretRef(env=upstream_key_env, file=upstream_key_file).resolve()
    if inbound_key_env is not None and inbound_key_file is not None:
        raise ConfigError("give --inbound-key-env or --inbound-key-file, not both")
    inbound = None
    if inbound_key_env is not None or inbound_key_file is not None:
        inbound = SecretRef(env=inbound_key_env, file=inbound_key_file).resolve()
    proxy = SealProxy(
        load_keypair(key),
        upstream,
        host=host,
        port=port,
        prompt_slack=prompt_slack,
        ssl_context=context,
        upstream_key=secret,
        inbound_key=inbound,
        replay_window_s=replay_window_s,
        replay_redis=replay_redis,
        header_timeout_s=header_timeout_s,
        max_connections=max_connections,
        max_connections_per_client=max_connections,
    )

    async def main() -> None:
        async with proxy:
            replays = "shared through Redis" if proxy.replays.shared else "this process only"
            if replay_window_s <= 0:
                replays = "off"
            Console(stderr=True).print(
                f"sincere seal: key {proxy.pair.key_id} at {proxy.url} -> {upstream}; "
                f"replay protection: {replays} (no TEE attestation; Ctrl-C to stop)",
                highlight=False,
            )
            await asyncio.Event().wait()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())
