"""Binding a server's listening socket: what both the gateway and the emulator report.

A failed bind becomes one :class:`~sincere.core.errors.ConfigError` line saying why
(port in use, no permission) and what is allowed, so ``sincere serve`` and ``sincere
emulate`` exit with one clear line instead of a traceback.
"""

from __future__ import annotations

import errno

from sincere.core.errors import ConfigError


def listen_error(host: str, port: int, exc: OSError) -> ConfigError:
    """One clear line for a failed bind (port in use, no permission, unknown address)."""
    if exc.errno == errno.EADDRINUSE:
        why = "the address is already in use (another server listens there)"
    elif exc.errno == errno.EACCES:
        why = "permission denied (ports below 1024 need privileges)"
    else:
        why = exc.strerror or type(exc).__name__
    return ConfigError(
        f"cannot listen on {host}:{port}: {why}",
        allowed="a free port (--port), or 0 for one the OS picks",
    )
