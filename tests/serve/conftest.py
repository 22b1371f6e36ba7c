"""The gateway's tests run on both event loops it supports: asyncio's and uvloop's (``fast``).

Every test in a ``test_gateway_*`` or ``test_security_gateway*`` module is run twice,
once per loop: the tests call :func:`asyncio.run`, which takes its loop from the loop
policy this fixture sets. Without uvloop installed the uvloop case is skipped.

``redis_url``: a real ``redis-server`` of the test's own, on a free port of 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import time
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


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real redis-server of this test's own on 127.0.0.1 (no persistence), stopped by PID."""
    pytest.importorskip("redis", reason="the redis package (gateway shared state) is missing")
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed (scripts/setup_redis.sh installs it)")
    workdir = tmp_path_factory.mktemp("redis")
    port = _free_port()
    args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    args += ["--dir", str(workdir)]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_for_redis(port, proc)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


def _wait_for_redis(port: int, proc: subprocess.Popen[bytes]) -> None:
    import redis

    client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=0.5)
    try:
        for _ in range(100):
            if proc.poll() is not None:
                raise RuntimeError(f"redis-server exited with status {proc.returncode}")
            try:
                if client.ping():
                    return
            except redis.RedisError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not answer within 5 s")
    finally:
        client.close()
