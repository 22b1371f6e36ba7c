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

Prints one line: microseconds per request each way, per PING, and their ratios.
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


async def pairs(store: KeyStore, n: int, deferred: bool) -> float:
    """Seconds per admit + settle over ``n`` sequential requests (settlement deferred or
    awaited)."""
    (record,) = store.records()
    began = time.perf_counter()
    for _ in range(n):
        got = await store.admit_async(record, 100, 50, PRICES, time.time())
        assert isinstance(got, Reservation), got
        if deferred:
            store.settle(got, 100, 50, PRICES)
        else:
            await store.settle_async(got, 100, 50, PRICES)
    return (time.perf_counter() - began) / n


async def pings(url: str, n: int) -> float:
    """Seconds per PING over ``n`` sequential round trips (the same asyncio client kind)."""
    import redis.asyncio

    client = redis.asyncio.Redis.from_url(url)
    try:
        began = time.perf_counter()
        for _ in range(n):
            await client.ping()
        return (time.perf_counter() - began) / n
    finally:
        await client.aclose()


async def measure(store: KeyStore, url: str, n: int, rounds: int = 4) -> tuple[float, ...]:
    """Seconds per request awaited, per request deferred, per PING: ``rounds`` alternated
    rounds of ``n // rounds`` each, the median round of each."""
    await pairs(store, n // 10, deferred=False)  # warm-up: connections, scripts, the key
    await pairs(store, n // 10, deferred=True)
    await pings(url, n // 10)
    times: dict[str, list[float]] = {"awaited": [], "deferred": [], "ping": []}
    for r in range(rounds):
        order = ("awaited", "deferred") if r % 2 == 0 else ("deferred", "awaited")
        for way in order:
            times[way].append(await pairs(store, n // rounds, deferred=way == "deferred"))
        times["ping"].append(await pings(url, n // rounds))
    await store.drain()
    return tuple(float(statistics.median(times[k])) for k in ("awaited", "deferred", "ping"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=3000)
    n = parser.parse_args().pairs
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
        store.create(KeySpec(name="bench", budget_usd=1e9), actor="bench", now=0.0)
        awaited, deferred, ping = asyncio.run(measure(store, url, n))
        store.close()
    finally:
        server.terminate()
        server.wait(10)
    print(
        f"shared books: {awaited * 1e6:.0f} us per request with the settlement awaited "
        f"({awaited / ping:.1f}x PING), {deferred * 1e6:.0f} us deferred ({deferred / ping:.1f}x "
        f"PING; {deferred / awaited:.2f}x awaited), {ping * 1e6:.0f} us per PING; {n} "
        "sequential requests each way"
    )


if __name__ == "__main__":
    main()
