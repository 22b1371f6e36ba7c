"""A fleet on one Redis: two `sincere serve --workers 2` processes, four workers, one budget.

Real processes (the CLI), a real redis-server (the ``redis_url`` fixture), a fake
upstream on a thread of this process. Racing requests over both gateways hold one
budget and one requests-per-minute window; after ``kill -9`` of one gateway (its
workers with it) the other writes what it left unwritten (mirrored in Redis), the spend
in Redis equals the durable record's, and the budget the killed gateway held in flight
is released when its leases run out.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from tests.serve.conftest import _free_port
from tests.serve.security.test_gateway import bearer, make_keys

from sincere.serve.backends.fake_upstream import FakeUpstream
from sincere.serve.security.keys import KeySpec
from sincere.serve.security.keystore import KeyStore
from sincere.serve.security.shared import RedisState
from sincere.serve.security.storage import open_storage

ROOT = Path(__file__).resolve().parents[3]
ENTRY = "import sys; sys.argv[0] = 'sincere'; from sincere.cli import main; main()"
BODY = {"model": "m", "prompt": "hello there", "max_tokens": 4}  # 4 USD at 1 USD a token
LEASE_S = 2.0  # a killed gateway's leases and heartbeat run out after this
refused: list[str] = []  # the bodies of answers other than 200/429, for failure messages


@contextlib.contextmanager
def upstream_thread(ttft_s: float = 0.0) -> Iterator[str]:
    """A fake upstream served by an event loop on a thread of its own; its URL."""
    loop = asyncio.new_event_loop()
    up = FakeUpstream(num_tokens=4, ttft_s=ttft_s)
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(up.start(), loop).result(10)
    try:
        yield up.url
    finally:
        asyncio.run_coroutine_threadsafe(up.stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def gateway_process(
    tmp_path: Path, name: str, upstream: str, keys: Path, redis: str, flush_s: float
) -> tuple[subprocess.Popen[bytes], str]:
    """`sincere serve --workers 2` in a new process group; the process and its URL."""
    port = _free_port()
    config = {
        "port": port,
        "backends": [{"name": "b0", "url": upstream, "models": ["m"], "metrics_path": None,
                      "price_out_per_1m_usd": 1_000_000.0}],
        "scrape": {"enabled": False},
        "admission": {"enabled": False},
        "security": {"flush_interval_s": flush_s},
        "state": {"lease_s": LEASE_S, "renew_s": LEASE_S / 4},
    }  # fmt: skip
    path = tmp_path / f"{name}.yaml"
    path.write_text(json.dumps(config))
    args = ["serve", str(path), "--workers", "2", "--keys", str(keys), "--redis", redis]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), *sys.path])}
    proc = subprocess.Popen(
        [sys.executable, "-c", ENTRY, *args],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=(tmp_path / f"{name}.log").open("w"),
        start_new_session=True,  # its own process group: its workers go with it
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        with contextlib.suppress(OSError), urllib.request.urlopen(url + "/health", timeout=2) as r:
            if r.status == 200:
                time.sleep(1.0)  # the second worker binds after the first answers
                return proc, url
        time.sleep(0.1)
    proc.kill()
    pytest.fail(f"gateway {name} did not start: {(tmp_path / f'{name}.log').read_text()[-500:]}")


async def race(urls: list[str], token: str, n: int) -> list[int]:
    """``n`` requests at once, alternating over ``urls`` (new connections): their statuses."""

    async def one(k: int) -> int:
        async with aiohttp.ClientSession() as s:
            url = urls[k % len(urls)] + "/v1/completions"
            async with s.post(url, json=BODY, headers=bearer(token)) as r:
                body = await r.read()
                if r.status not in (200, 429):
                    refused.append(f"{r.status} {body[:300]!r}")
                return r.status

    return list(await asyncio.gather(*(one(k) for k in range(n))))


def wait_written(keys: Path, name: str, spent_usd: float, limit_s: float) -> None:
    """Wait (at most ``limit_s``) until the key store records ``spent_usd`` for key ``name``."""
    storage = open_storage(keys)
    try:
        (record,) = [r for r in storage.load()[0] if r.name == name]
        deadline = time.monotonic() + limit_s
        while time.monotonic() < deadline:
            if storage.usage(record.key_id).spent_usd >= spent_usd:
                return
            time.sleep(0.2)
    finally:
        storage.close()


def wait_reserved(redis_url: str, keys: Path, usd: float, limit_s: float) -> None:
    """Wait (at most ``limit_s``) until Redis holds ``usd`` reserved for the only key."""
    import redis

    storage = open_storage(keys)
    (record,) = storage.load()[0]
    storage.close()
    client = redis.Redis.from_url(redis_url)
    try:
        deadline = time.monotonic() + limit_s
        while time.monotonic() < deadline:
            token = client.hget("sincere:instance", "token")
            if token is not None:
                key = f"sincere:{token.decode()}:{record.key_id}:money"
                if float(client.hget(key, "reserved") or 0.0) >= usd:
                    return
            time.sleep(0.1)
    finally:
        client.close()


def hold(urls: list[str], token: str, n: int) -> None:
    """:func:`race` on a thread, its requests cut off when their gateway is killed."""
    with contextlib.suppress(aiohttp.ClientError):
        asyncio.run(race(urls, token, n))


def stop_group(proc: subprocess.Popen[bytes], sig: signal.Signals, log: Path | None = None) -> None:
    """Send ``sig`` to the process group of ``proc`` (a gateway and its workers); reap it.
    A group still there 20 s later is killed (nothing is left behind) and the test fails
    with the end of its ``log`` (a stop running 10 s writes its threads' stacks there).
    A graceful stop is SIGTERM, a supervisor's: a gateway started from a background job has
    SIGINT ignored (the shell sets it so and Python keeps it), as ``nohup`` users expect."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired as exc:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        tail = log.read_text(errors="replace")[-8000:] if log is not None else "(no log)"
        message = f"the gateway did not stop within 20 s; its log ends:\n{tail}"
        raise AssertionError(message) from exc


@pytest.mark.slow
def test_two_gateways_four_workers_share_budget_limits_and_spend(
    tmp_path: Path, redis_url: str
) -> None:
    """40 racing requests on a budget for 5 -> exactly 5 served; RPM 7 -> 7 of 20; after
    kill -9 of one gateway the spend in Redis equals the durable record's, per key."""
    keys = tmp_path / "keys.db"
    tokens = make_keys(
        keys,
        budget=KeySpec(name="budget", budget_usd=5 * 4.0),
        rpm=KeySpec(name="rpm", max_requests_per_min=7),
        spend=KeySpec(name="spend", budget_usd=1000.0),
    )
    with upstream_thread() as upstream:
        a, url_a = gateway_process(tmp_path, "a", upstream, keys, redis_url, 30.0)  # no flush
        b, url_b = gateway_process(tmp_path, "b", upstream, keys, redis_url, 0.1)
        try:
            by_budget = asyncio.run(race([url_a, url_b], tokens["budget"], 40))
            by_rpm = asyncio.run(race([url_a, url_b], tokens["rpm"], 20))
            through_a = asyncio.run(race([url_a], tokens["spend"], 10))
            time.sleep(1.0)  # A's settlements reach Redis within state.settle_within_s (0.05 s)
            stop_group(a, signal.SIGKILL)  # A flushed nothing: its usage is mirrored in Redis
            wait_written(keys, "spend", 40.0, LEASE_S + 20)  # A's heartbeat ran out: B wrote it
        finally:
            stop_group(a, signal.SIGKILL)
            stop_group(b, signal.SIGTERM, tmp_path / "b.log")
    assert by_budget.count(200) == 5 and by_budget.count(429) == 35, refused
    assert by_rpm.count(200) == 7 and by_rpm.count(429) == 13, refused
    assert through_a == [200] * 10, refused
    store, shared = KeyStore.open(keys), RedisState(redis_url)
    try:
        for record in store.records():
            durable = store.totals(record.key_id).spent_usd
            assert durable == pytest.approx(shared.spent_usd(record.key_id)), record.name
        spend = next(r for r in store.records() if r.name == "spend")
        assert store.totals(spend.key_id).spent_usd == 40.0
    finally:
        store.close()
        shared.close()


@pytest.mark.slow
def test_budget_held_by_a_killed_gateway_is_released_when_its_leases_run_out(
    tmp_path: Path, redis_url: str
) -> None:
    """A budget for 5; gateway A holds 4 answers in flight (a slow upstream) and is killed
    (kill -9): gateway B serves the 1 left at once, and the other 4 once A's leases ran out."""
    keys = tmp_path / "keys.db"
    tokens = make_keys(keys, acme=KeySpec(name="acme", budget_usd=5 * 4.0))
    with upstream_thread(ttft_s=60.0) as slow, upstream_thread() as fast:
        a, url_a = gateway_process(tmp_path, "a", slow, keys, redis_url, 0.1)
        b, url_b = gateway_process(tmp_path, "b", fast, keys, redis_url, 0.1)
        try:
            hung = threading.Thread(target=hold, args=([url_a], tokens["acme"], 4))
            hung.start()
            wait_reserved(redis_url, keys, 16.0, 20.0)  # 4 admitted, on the slow upstream
            stop_group(a, signal.SIGKILL)
            at_once = asyncio.run(race([url_b], tokens["acme"], 5))
            time.sleep(LEASE_S + 1.0)
            later = asyncio.run(race([url_b], tokens["acme"], 10))
            hung.join(30)
        finally:
            stop_group(a, signal.SIGKILL)
            stop_group(b, signal.SIGTERM, tmp_path / "b.log")
    assert at_once.count(200) == 1 and at_once.count(429) == 4, at_once
    assert later.count(200) == 4 and later.count(429) == 6, later


@pytest.mark.slow
@pytest.mark.parametrize("end", ["killed", "stopped"])
def test_a_gateway_stalled_past_its_lease_loses_no_spend(
    tmp_path: Path, redis_url: str, end: str
) -> None:
    """Gateway A (flushing every 30 s) serves 5 requests and stalls (SIGSTOP) past its
    lease: B takes it for dead and writes its mirrored usage. A resumes, serves 5 more
    into the same flush batch, and is then killed (B writes the batch again: only what it
    grew by) or stopped (A writes the whole batch itself: only what B had not): the key
    store and Redis both hold all 10 requests, once."""
    keys = tmp_path / "keys.db"
    tokens = make_keys(keys, spend=KeySpec(name="spend", budget_usd=1000.0))
    with upstream_thread() as upstream:
        a, url_a = gateway_process(tmp_path, "a", upstream, keys, redis_url, 30.0)
        b, _ = gateway_process(tmp_path, "b", upstream, keys, redis_url, 0.1)
        try:
            before = asyncio.run(race([url_a], tokens["spend"], 5))
            time.sleep(1.0)  # A's settlements reach Redis (and its mirror)
            os.killpg(a.pid, signal.SIGSTOP)
            wait_written(keys, "spend", 20.0, LEASE_S + 20)  # B took A for dead
            stalled = read_spend(keys, "spend")
            os.killpg(a.pid, signal.SIGCONT)
            after = asyncio.run(race([url_a], tokens["spend"], 5))
            time.sleep(1.0)
            stop_group(a, signal.SIGKILL if end == "killed" else signal.SIGTERM, tmp_path / "a.log")
            wait_written(keys, "spend", 40.0, LEASE_S + 20)
            time.sleep(2 * LEASE_S)  # anything written twice would show by now
        finally:
            stop_group(a, signal.SIGKILL)
            stop_group(b, signal.SIGTERM, tmp_path / "b.log")
    assert before == after == [200] * 5, refused
    assert stalled == 20.0
    store, shared = KeyStore.open(keys), RedisState(redis_url)
    try:
        (record,) = store.records()
        assert store.totals(record.key_id).spent_usd == 40.0
        assert store.totals(record.key_id).num_requests == 10
        assert shared.spent_usd(record.key_id) == pytest.approx(40.0)
    finally:
        store.close()
        shared.close()


def read_spend(keys: Path, name: str) -> float:
    """The spend the key store records now for key ``name``."""
    storage = open_storage(keys)
    try:
        (record,) = [r for r in storage.load()[0] if r.name == name]
        return storage.usage(record.key_id).spent_usd
    finally:
        storage.close()
