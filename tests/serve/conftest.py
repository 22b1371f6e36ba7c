"""The gateway's tests run on both event loops it supports: asyncio's and uvloop's (``fast``).

Every test in a ``test_gateway_*`` or ``test_security_gateway*`` module is run twice,
once per loop: the tests call :func:`asyncio.run`, which takes its loop from the loop
policy this fixture sets. Without uvloop installed the uvloop case is skipped.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

LOOPS = ("asyncio", "uvloop")
_ON_BOTH = ("test_gateway_", "test_security_gateway", "test_gateway")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Parametrise the gateway modules' tests over both event loops."""
    name = metafunc.module.__name__.rsplit(".", 1)[-1]
    if "event_loop_kind" in metafunc.fixturenames and name.startswith(_ON_BOTH):
        metafunc.parametrize("event_loop_kind", LOOPS, indirect=True)


@pytest.fixture(autouse=True)
def event_loop_kind(request: pytest.FixtureRequest) -> Iterator[str]:
    """The event loop ``asyncio.run`` uses in this test: asyncio's, or uvloop's."""
    kind: str = getattr(request, "param", "asyncio")
    if kind == "asyncio":
        yield kind
        return
    uvloop = pytest.importorskip("uvloop", reason="uvloop (extra 'fast') is not installed")
    old = asyncio.get_event_loop_policy()
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    try:
        yield kind
    finally:
        asyncio.set_event_loop_policy(old)
