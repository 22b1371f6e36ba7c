"""A graceful stop that hangs says where: SIGTERM arms a report of every thread's stack."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

HANGING_STOP = textwrap.dedent(
    """
    import os, signal, time
    from sincere.serve.gateway import server

    server.STOP_REPORT_S = {report_s}
    server.stop_on_sigterm()

    def flush_keys_slowly():
        time.sleep({stop_s})

    try:
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(30)  # never reached: the signal interrupts this process
    except KeyboardInterrupt:
        flush_keys_slowly()
    print("stopped", flush=True)
    """
)


def _run(code: str) -> subprocess.CompletedProcess[str]:
    """``code`` in a Python process of its own (its signal handlers and faulthandler apart)."""
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env={"PYTHONPATH": str(ROOT / "src"), "PATH": "/usr/bin:/bin"},
    )


def _stop(report_s: float, stop_s: float) -> subprocess.CompletedProcess[str]:
    return _run(HANGING_STOP.format(report_s=report_s, stop_s=stop_s))


def test_a_stop_running_past_the_report_time_writes_where_it_waits() -> None:
    done = _stop(report_s=0.3, stop_s=1.5)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "stopped"  # the report does not end the stop
    assert "most recent call first" in done.stderr
    assert "flush_keys_slowly" in done.stderr, done.stderr


def test_a_prompt_stop_writes_no_report() -> None:
    done = _stop(report_s=5.0, stop_s=0.0)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "stopped"
    assert "most recent call first" not in done.stderr


SIGTERM_IN_A_TRANSPORT_CALLBACK = textwrap.dedent(
    """
    import asyncio, os, signal
    from sincere.serve.gateway import server

    server.STOP_REPORT_S = 30.0
    server.stop_on_sigterm()

    class PeerGone(asyncio.Protocol):
        def eof_received(self):
            os.kill(os.getpid(), signal.SIGTERM)  # the handler runs inside this callback

    async def main():
        loop = asyncio.get_running_loop()
        listener = await loop.create_server(PeerGone, "127.0.0.1", 0)
        port = listener.sockets[0].getsockname()[1]
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write_eof()
        await asyncio.sleep(3.0)
        print("still serving", flush=True)

    try:
        server.run_on_fast_loop(main())
    except KeyboardInterrupt:
        print("stopped", flush=True)
    """
)


def test_sigterm_landing_in_a_transport_callback_still_stops_the_loop() -> None:
    """A SIGTERM whose handler runs inside a connection's callback (a peer's EOF) stops the
    server: raised there, uvloop took the interrupt for that connection's error and ran on
    (a gateway of the fleet tests then did not stop in 20 s). Runs on the process's fast
    loop (uvloop with the ``fast`` extra), as the gateway does."""
    done = _run(SIGTERM_IN_A_TRANSPORT_CALLBACK)
    assert done.stdout.strip() == "stopped", (done.stdout, done.stderr)
