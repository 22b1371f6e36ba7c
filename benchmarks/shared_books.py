"""Time of one keyed request's shared-state work: an admission and its settlement in Redis.

One key store on a redis-server this script starts (127.0.0.1, a free port, no
persistence), one key, requests one after another (no concurrency: the figure is the
client-side and round-trip cost of the scripts, the part the gateway's event loop pays
per keyed request), in two ways, alternated round by round on the same store:

* *awaited*: admission, then the settlement sent and awaited (``settle_async``): two
  round trips;
* *deferred*: admission, then the settlement deferred (``settle``, as the gateway does): it
  rides the next admission, one round trip per request;

beside a bare ``PING`` round trip measured the same way, so that the figures compare as
ratios on any machine:

    python benchmarks/shared_books.py              # 3,000 requests each way, 300 of warm-up
    python benchmarks/shared_books.py --pairs 500
    python benchmarks/shared_books.py --limits --step-s 0.03   # a busy key with limits

The key has a budget only, unless ``--limits``: then requests- and tokens-per-minute limits
too (never reached), as the key of ``benchmarks/gateway_overhead.py`` has, and every
admission checks and counts both windows. Each request's clock is the wall clock, so a run
of a few seconds fills a few of the windows' buckets; with ``--step-s S`` it advances ``S``
seconds a request instead (0.03: a minute every 2,000 requests), so the windows hold every
bucket, as those of a key in steady use do. With ``--gap-ms G`` every request and PING
comes after ``G`` ms idle (not counted), as a lone client's does: the figures then include
waking a redis-server that went idle.

Prints one line: microseconds per request each way, per PING, their ratios, and the time
Redis itself spent per script call (``INFO commandstats``: admissions and settlements).
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import socket
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from sincere.serve.security.keys import KeySpec, Prices
from sincere.serve.security.keystore import KeyStore, Reservation
from sincere.serve.security.shared import RedisState

PRICES = Prices(1e-6, 2e-6)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Clock:
    """The requests' ``now``: the wall clock, or one advancing ``step_s`` a request."""

    def __init__(self, step_s: float) -> None:
        self.step_s = step_s
        self.now = time.time()

    def __call__(self) -> float:
        if not self.step_s:
            return time.time()
        self.now += self.step_s
        return self.now


async def pairs(store: KeyStore, n: int, deferred: bool, clock: Clock, gap_s: float = 0.0) -> float:
    """Seconds per admit + settle over ``n`` sequential requests (settlement deferred or
    awaited), each after ``gap_s`` idle (not counted)."""
    (record,) = store.records()
    spent = 0.0
    for _ in range(n):
        if gap_s:
            await asyncio.sleep(gap_s)
        began = time.perf_counter()
        got = await store.admit_async(record, 100, 50, PRICES, clock())
        assert isinstance(got, Reservation), got
        if deferred:
            store.settle(got, 100, 50, PRICES)
        else:
            await store.settle_async(got, 100, 50, PRICES)
        spent += time.perf_counter() - began
    return spent / n


async def pings(url: str, n: int, gap_s: float = 0.0) -> float:
    """Seconds per PING over ``n`` sequential round trips (the same asyncio client kind),
    each after ``gap_s`` idle (not counted)."""
    import redis.asyncio

    client = redis.asyncio.Redis.from_url(url)
    try:
        spent = 0.0
        for _ in range(n):
            if gap_s:
                await asyncio.sleep(gap_s)
            began = time.perf_counter()
            await client.ping()
            spent += time.perf_counter() - began
        return spent / n
    finally:
        await client.aclose()


async def measure(
    store: KeyStore, url: str, n: int, step_s: float = 0.0, gap_s: float = 0.0, rounds: int = 4
) -> tuple[float, ...]:
    """Seconds per request awaited, per request deferred, per PING: ``rounds`` alternated
    rounds of ``n // rounds`` each, the median round of each."""
    clock = Clock(step_s)
    await pairs(store, n // 10, deferred=False, clock=clock)  # warm-up: connections, scripts
    await pairs(store, n // 10, deferred=True, clock=clock)
    await pings(url, n // 10)
    times: dict[str, list[float]] = {"awaited": [], "deferred": [], "ping": []}
    for r in range(rounds):
        order = ("awaited", "deferred") if r % 2 == 0 else ("deferred", "awaited")
        for way in order:
            got = await pairs(store, n // rounds, way == "deferred", clock, gap_s)
            times[way].append(got)
        times["ping"].append(await pings(url, n // rounds, gap_s))
    await store.drain()
    return tuple(float(statistics.median(times[k])) for k in ("awaited", "deferred", "ping"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=3000)
    parser.add_argument("--limits", action="store_true", help="rpm and tpm limits too")
    parser.add_argument("--step-s", type=float, default=0.0, help="clock step a request")
    parser.add_argument("--gap-ms", type=float, default=0.0, help="idle before each request")
    opts = parser.parse_args()
    n = opts.pairs
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is not installed (scripts/setup_redis.sh)")
    port, folder = free_port(), tempfile.mkdtemp()
    args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", folder]
    server = subprocess.Popen(args, stdout=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    try:
        time.sleep(0.5)
        store = KeyStore.open(Path(folder) / "keys.db", shared=RedisState(url))
        limits = (10**9, 10**12) if opts.limits else (None, None)
        spec = KeySpec(
            name="bench", max_requests_per_min=limits[0], max_tokens_per_min=limits[1],
            budget_usd=1e9,
        )  # fmt: skip
        store.create(spec, actor="bench", now=0.0)
        got = asyncio.run(measure(store, url, n, opts.step_s, opts.gap_ms / 1e3))
        awaited, deferred, ping = got
        store.close()
        inside = script_us(url)
    finally:
        server.terminate()
        server.wait(10)
    print(
        f"shared books: {awaited * 1e6:.0f} us per request with the settlement awaited "
        f"({awaited / ping:.1f}x PING), {deferred * 1e6:.0f} us deferred ({deferred / ping:.1f}x "
        f"PING; {deferred / awaited:.2f}x awaited), {ping * 1e6:.0f} us per PING; {n} "
        f"sequential requests each way; {inside:.0f} us per script call inside Redis"
    )


def script_us(url: str) -> float:
    """Microseconds Redis spent per script call by hash (``INFO commandstats``)."""
    import redis

    client = redis.Redis.from_url(url)
    try:
        stats = client.info("commandstats").get("cmdstat_evalsha", {})
        return float(stats.get("usec_per_call", 0.0))
    finally:
        client.close()


if __name__ == "__main__":
    main()
