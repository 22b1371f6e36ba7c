"""What every server of sincere shares: binding its socket, ``async with``, stopping tasks.

A failed bind becomes one :class:`~sincere.core.errors.ConfigError` line saying why
(port in use, no permission) and what is allowed, so ``sincere serve`` and ``sincere
emulate`` exit with one clear line instead of a traceback. :func:`bound_port` reads the
port a runner listens on (the one the OS picked for port 0). :class:`Served` gives the
gateway, the emulator, the seal proxy and the test upstream one ``async with`` protocol.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
from collections.abc import Iterable
from types import TracebackType
from typing import Any, Self

from aiohttp import web

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


def bound_port(runner: web.BaseRunner, asked: int = 0) -> int:
    """The TCP port ``runner`` listens on (``asked`` when it reports no TCP address)."""
    for address in runner.addresses:
        if isinstance(address, tuple) and len(address) >= 2:
            return int(address[1])
    return asked


class Served:
    """A server used as ``async with server:``: started on entry, stopped on exit.

    Subclasses implement :meth:`start` and :meth:`stop`; :meth:`close` is :meth:`stop`.
    """

    async def start(self) -> None:
        """Bind and serve."""
        raise NotImplementedError

    async def stop(self) -> None:
        """Stop serving and release what :meth:`start` took."""
        raise NotImplementedError

    async def close(self) -> None:
        """The same as :meth:`stop`."""
        await self.stop()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()


async def cancel_and_wait(tasks: Iterable[asyncio.Task[Any]]) -> None:
    """Cancel background ``tasks`` (all told first, so they stop side by side) and wait
    until each has ended."""
    tasks = list(tasks)
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task
