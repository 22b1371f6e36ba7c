"""The gateway's tests run on both event loops it supports: asyncio's and uvloop's (``fast``).

Every test of the gateway's modules (``gateway/``, but the real-vLLM ones, the
controller's through the gateway in ``control/``, and ``security/test_gateway*``) is run
twice, once per loop: the tests call :func:`asyncio.run`, which takes its loop from the loop
policy this fixture sets. Without uvloop installed the uvloop case is skipped.

``redis_url``: a real ``redis-server`` of the test's own, on a free port of 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

LOOPS = ("asyncio", "uvloop")
_ON_BOTH = (
    "gateway.test_",
    "control.test_controller",
    "control.test_admin_audit",
    "security.test_gateway",
)
_ONE_LOOP = ("gateway.test_vllm",)  # real vLLM engines: one loop is enough


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Parametrise the gateway modules' tests over both event loops."""
    name = ".".join(metafunc.module.__name__.split(".")[-2:])  # folder.module
    on_both = name.startswith(_ON_BOTH) and not name.startswith(_ONE_LOOP)
    if "event_loop_kind" in metafunc.fixturenames and on_both:
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


class RedisServer:
    """A redis-server of a test's own on 127.0.0.1 (no persistence unless asked), by PID.

    It can be killed, restarted (empty, or from a snapshot its ``save`` wrote), stalled
    (``pause``: SIGSTOP) and resumed (SIGCONT) -- the faults the shared books must survive.
    """

    def __init__(self, binary: str, workdir: Path) -> None:
        self.binary, self.workdir, self.port = binary, workdir, _free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        args = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
        args += ["--appendonly", "no", "--dir", str(self.workdir)]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _wait_for_redis(self.port, self.proc)

    def kill(self) -> None:
        """SIGKILL: whatever was not saved is gone."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=5)

    def restart(self, *, from_snapshot: bool = False) -> None:
        """Kill and start again: empty, or loading the snapshot ``save`` wrote."""
        self.kill()
        snapshot = self.workdir / "dump.rdb"
        if not from_snapshot:
            snapshot.unlink(missing_ok=True)
        self.start()

    def save(self) -> None:
        """Write a snapshot (RDB) of what Redis holds now."""
        self.client().save()

    def pause(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGCONT)

    def client(self) -> Any:
        import redis

        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=5)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.kill(self.proc.pid, signal.SIGCONT)
        self.proc.terminate()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)


@pytest.fixture
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A real redis-server of this test's own that the test may kill, stall or restore."""
    pytest.importorskip("redis", reason="the redis package (gateway shared state) is missing")
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed (scripts/setup_redis.sh installs it)")
    server = RedisServer(binary, tmp_path_factory.mktemp("redis"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """A real redis-server of this test's own on 127.0.0.1 (no persistence), stopped by PID."""
    return redis_server.url


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
