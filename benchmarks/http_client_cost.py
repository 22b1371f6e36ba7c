"""Client CPU per inference request: aiohttp's ``ClientSession`` against the gateway's own
HTTP/1.1 client (``sincere.serve.backends.http1``).

One mock upstream (``gateway_overhead.py``'s, its own process) answers a chat completion
(non-streamed, and streamed as 16 events); this process sends ``--requests`` POSTs one
after another over one kept-alive connection through each client in turn, ``--rounds``
times, and prints the client process's CPU time per request (``time.process_time``: user +
system of this process only, so the upstream's work is not counted) on uvloop when
installed. Sequential requests measure the client's own cost per request; under
concurrency the event loop's per-wakeup costs are shared and both figures fall.

    python benchmarks/http_client_cost.py [--requests 3000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))
import gateway_overhead as g

from sincere.serve.backends.http1 import Http1Pool

HEADERS = {"Content-Type": "application/json"}


def body(stream: bool) -> bytes:
    request = {"model": g.MODEL, "messages": [{"role": "user", "content": "hello"}],
               "max_tokens": 16, "stream": stream}  # fmt: skip
    return json.dumps(request).encode()


async def with_aiohttp(url: str, data: bytes, n: int) -> float:
    """CPU seconds per request through one aiohttp session (kept-alive connection)."""
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        started = time.process_time()
        for _ in range(n):
            async with session.post(url, data=data, headers=HEADERS) as response:
                async for _piece in response.content.iter_any():
                    pass
        return (time.process_time() - started) / n


async def with_http1(url: str, data: bytes, n: int) -> float:
    """CPU seconds per request through the gateway's client (one pooled connection)."""
    base = url.split("/v1/")[0]
    pool = Http1Pool(base, connect_timeout_s=2.0, read_timeout_s=10.0, keepalive_s=30.0)
    started = time.process_time()
    for _ in range(n):
        response = await pool.post("/v1/chat/completions", data, HEADERS)
        while await response.content.readany():
            pass
        response.release()
    cpu = (time.process_time() - started) / n
    pool.close()
    return cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    try:
        import uvloop

        uvloop.install()
        loop_name = "uvloop"
    except ImportError:
        loop_name = "asyncio"
    port = g.free_port()
    upstream = g.start([sys.executable, g.__file__, "--serve", "upstream", str(port)])
    try:
        time.sleep(3.0)
        url = f"http://127.0.0.1:{port}/v1/chat/completions"
        print(f"loop: {loop_name}; {args.requests} sequential requests a cell")
        for stream in (False, True):
            data = body(stream)
            old, new = [], []
            for _ in range(args.rounds):
                old.append(asyncio.run(with_aiohttp(url, data, args.requests)))
                new.append(asyncio.run(with_http1(url, data, args.requests)))
            a, b = statistics.median(old), statistics.median(new)
            kind = "streamed (16 events)" if stream else "non-streamed"
            pairs = zip(old, new, strict=True)
            rounds = ", ".join(f"{x * 1e6:.0f}/{y * 1e6:.0f}" for x, y in pairs)
            print(f"{kind:22s} aiohttp {a * 1e6:6.1f} us CPU/request, "
                  f"gateway client {b * 1e6:6.1f} us ({b / a:.2f}x); rounds {rounds}")  # fmt: skip
    finally:
        g.stop(upstream)


if __name__ == "__main__":
    main()
