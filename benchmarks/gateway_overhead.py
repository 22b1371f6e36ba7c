"""Gateway overhead: added latency and highest sustainable rate of sincere's gateway.

Targets, all in front of the same fast mock upstream (an aiohttp server answering a
fixed chat completion at once, or streaming it as 16 chunks), measured in one run:

* ``direct``   -- the upstream itself (no proxy);
* ``bare``     -- a bare async pass-through proxy written here (the floor);
* ``sincere``  -- sincere's gateway (``sincere.serve.gateway.server``), round-robin, one backend;
* ``litellm``  -- the LiteLLM proxy (its own venv, see benchmarks/README.md), 2 workers;

and with ``--security`` three more, for the cost of keys and confidential mode:

* ``sincere+auth``   -- the gateway with a key store (SQLite): every call carries a client
  key with requests/tokens-per-minute limits and a budget (all far from reached), priced
  instances, spend settled and flushed behind -- as LiteLLM is run with its master key;
* ``seal``           -- the ``sincere seal`` proxy alone in front of the upstream, sealed calls;
* ``sincere+auth+sealed`` -- the gateway with keys routing sealed calls to that proxy;

and with ``--redis-workers 1,2,4`` the gateway with keys whose limits, reservations and
spend live in a redis-server this script starts (``state.redis``), in 1, 2 and 4 worker
processes (``sincere+auth+redis wN``).

A sealed call's latency includes the client's work (sealing the request with HPKE and
opening the answer, with :class:`~sincere.serve.security.confidential_client.ConfidentialClient`);
``wrk`` replays one sealed body (the proxy opens it every time), so its rate leaves out
the client's sealing.

Single-client latency: one client in this process sends ``--latency-requests``
sequential calls to each target (after a warm-up), interleaved target by target so
that every target meets the same load on a shared machine, and times each to the end
of the answer; the added latency of a proxy is its p50 / p99 minus the direct one. Sustainable rate:
``wrk`` (a C load generator, closed loop, ``--connections`` connections for
``--duration-s``) saturates each target; the rate is what it completes, with the
count of failed calls. Generator, proxy and upstream share this machine's cores.

    python benchmarks/gateway_overhead.py                  # all targets
    python benchmarks/gateway_overhead.py --no-litellm     # without LiteLLM
    python benchmarks/gateway_overhead.py --base-src ../base/src   # also another checkout's gateway
    #   (with --redis-workers, its gateway with keys on Redis too, on a redis-server of its own)
    python benchmarks/gateway_overhead.py --security       # also keys on, and confidential mode
    python benchmarks/gateway_overhead.py --security --redis-workers 1,2,4   # keys on Redis
    python benchmarks/gateway_overhead.py --security --redis-workers 1 --no-litellm \
        --only 'bare,sincere+auth,sincere+auth+redis w1' --head-to-head 6   # those alone

The last one records, in one run, direct, the gateway with keys in memory, with keys on
Redis in 1, 2 and 4 workers, and LiteLLM (found in ``$LITELLM_VENV``, default
``/tmp/litellm-venv``; skipped with a note when it is not there), and prints each
gateway target's rate as a multiple of LiteLLM's.

Servers bind 127.0.0.1 and are stopped by the PIDs this script started.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
from aiohttp import web

MODEL = "mock"
NUM_CHUNKS = 16
LITELLM_PY = Path(os.environ.get("LITELLM_VENV", "/tmp/litellm-venv")) / "bin" / "litellm"
MASTER_KEY = "sk-bench-1234"


# ---------------------------------------------------------------- servers (child processes)
def _chunk(i: int, last: bool) -> bytes:
    choice = {"index": 0, "delta": {"content": "" if last else " tok"}}
    choice["finish_reason"] = "stop" if last else None
    payload = {
        "id": "cmpl-1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": MODEL,
        "choices": [choice],
    }
    return b"data: " + json.dumps(payload).encode() + b"\n\n"


_STREAM = b"".join(_chunk(i, False) for i in range(NUM_CHUNKS)) + _chunk(0, True)
_FULL = json.dumps(
    {
        "id": "cmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": MODEL,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": " tok" * NUM_CHUNKS},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 8, "completion_tokens": NUM_CHUNKS, "total_tokens": 24},
    }
).encode()


async def _upstream(request: web.Request) -> web.StreamResponse:
    body = await request.json()
    if not body.get("stream"):
        return web.Response(body=_FULL, content_type="application/json")
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await resp.prepare(request)
    for i in range(NUM_CHUNKS):
        await resp.write(_chunk(i, False))
    await resp.write(_chunk(0, True) + b"data: [DONE]\n\n")
    return resp


async def _models(_: web.Request) -> web.Response:
    return web.json_response({"object": "list", "data": [{"id": MODEL, "object": "model"}]})


def serve_upstream(port: int) -> None:
    """The mock upstream: fixed chat completions, streamed as 16 chunks or whole."""
    app = web.Application()
    app.router.add_post("/v1/chat/completions", _upstream)
    app.router.add_post("/v1/completions", _upstream)
    app.router.add_get("/v1/models", _models)
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)


def serve_bare_proxy(port: int, upstream: str) -> None:
    """The floor: forward the body, stream the answer back chunk by chunk."""
    state: dict[str, aiohttp.ClientSession] = {}

    async def start(_: web.Application) -> None:
        state["s"] = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))

    async def stop(_: web.Application) -> None:
        await state["s"].close()

    async def forward(request: web.Request) -> web.StreamResponse:
        data = await request.read()
        headers = {"Content-Type": "application/json"}
        async with state["s"].post(upstream + request.path, data=data, headers=headers) as up:
            ctype = up.headers.get("Content-Type", "application/json")
            if not ctype.startswith("text/event-stream"):
                return web.Response(body=await up.read(), status=up.status, content_type=ctype)
            resp = web.StreamResponse(status=up.status, headers={"Content-Type": ctype})
            await resp.prepare(request)
            async for piece in up.content.iter_any():
                await resp.write(piece)
            return resp

    app = web.Application()
    app.on_startup.append(start)
    app.on_cleanup.append(stop)
    app.router.add_post("/v1/chat/completions", forward)
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)


def serve_sincere(port: int, upstream: str) -> None:
    """sincere's gateway with one backend (the upstream), round-robin, no scraping."""
    try:
        from sincere.serve.app import serve_gateway
    except ImportError:  # a --base-src checkout from before sincere.serve.app
        from sincere.serve.gateway.server import (  # type: ignore[attr-defined, no-redef, unused-ignore]
            serve_gateway,
        )
    from sincere.serve.gateway.config import parse_config

    config = parse_config(
        {
            "host": "127.0.0.1",
            "port": port,
            "router": {"name": "round-robin"},
            "backends": [{"name": "up", "url": upstream, "models": [MODEL], "max_in_flight": 4096}],
            "scrape": {"enabled": False},
            "admission": {"enabled": False},
            "admin": False,
        }
    )
    serve_gateway(config)  # uvloop when the `fast` extra is installed


def serve_sincere_auth(
    port: int, upstream: str, keys: str, sealed: str = "", redis: str = "", workers: str = "1"
) -> None:
    """The gateway with a key store, priced instances and (``sealed``) a seal proxy behind;
    ``redis``: its limits and spend in that Redis; ``workers``: processes on the port."""
    from sincere.serve.app import serve_gateway
    from sincere.serve.gateway.config import parse_config

    backend = {
        "name": "up",
        "url": sealed or upstream,
        "models": [MODEL],
        "max_in_flight": 4096,
        "price_in_per_1m_usd": 0.1,
        "price_out_per_1m_usd": 0.4,
    }
    security: dict[str, Any] = {"keys": keys}
    if sealed:
        security["sealed_backends"] = ["up"]
    config = parse_config(
        {
            "host": "127.0.0.1",
            "port": port,
            "router": {"name": "round-robin"},
            "backends": [backend],
            "scrape": {"enabled": False},
            "admission": {"enabled": False},
            "admin": False,
            "security": security,
            "state": {"redis": redis or None},
        }
    )
    serve_gateway(config, workers=int(workers))


def serve_seal(port: int, upstream: str, key_file: str) -> None:
    """``sincere seal serve`` in front of the upstream."""
    from sincere.serve.gateway.server import run_on_fast_loop
    from sincere.serve.security.envelope import load_keypair
    from sincere.serve.security.seal_proxy import SealProxy

    async def forever() -> None:
        # wrk replays one sealed body: the replay window is off for the benchmark
        async with SealProxy(load_keypair(key_file), upstream, port=port, replay_window_s=0.0):
            await asyncio.Event().wait()

    run_on_fast_loop(forever())


def make_security(folder: Path) -> tuple[str, str, Path]:
    """A key store with one client key (limits and budget far from reached), a seal key pair.

    Returns the store's path, the client token and the key pair's file.
    """
    from sincere.serve.security.envelope import SealKeyPair, write_keypair
    from sincere.serve.security.keys import KeySpec
    from sincere.serve.security.keystore import KeyStore

    store = KeyStore.open(folder / "keys.db")
    spec = KeySpec(
        name="bench",
        models=frozenset({MODEL}),
        max_requests_per_min=10_000_000,
        max_tokens_per_min=1_000_000_000,
        budget_usd=1e9,
    )
    token, _ = store.create(spec, actor="bench", now=time.time())
    store.close()
    pair_file = folder / "seal.key"
    write_keypair(SealKeyPair.generate(), pair_file)
    return str(folder / "keys.db"), token, pair_file


# ---------------------------------------------------------------- driver
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start(args: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """A server in its own process group (so its workers stop with it)."""
    return subprocess.Popen(
        args,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        env={**os.environ, **(env or {})},
    )


def stop(proc: subprocess.Popen[bytes]) -> None:
    """Stop a server this script started (its process group), then reap it."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


PINNED: dict[str, Any] = {}  # target name -> the seal proxy's public key (sealed targets)


def _body(stream: bool) -> dict[str, Any]:
    return {
        "model": MODEL,
        "messages": [{"role": "user", "content": "hello there"}],
        "stream": stream,
    }


async def call(
    s: aiohttp.ClientSession, name: str, url: str, headers: dict[str, str], stream: bool
) -> int:
    """One call to a target, its answer read (and, sealed, opened frame by frame); the status."""
    pinned = PINNED.get(name)
    if pinned is None:
        async with s.post(url, json=_body(stream), headers=headers) as r:
            await r.read()
            return r.status
    from sincere.serve.security.confidential_client import seal_for
    from sincere.serve.security.envelope import frame_of_sse

    sealed = seal_for(pinned, "chat", _body(stream))
    async with s.post(url, data=sealed.body, headers={**headers, **sealed.headers}) as r:
        payload = await r.read()
        if r.status != 200:
            return r.status
    opener = sealed.opener()
    if not stream:
        json.loads(opener.open(payload))
        return 200
    usage_next = False
    for line in payload.split(b"\n"):
        if line.startswith(b"event:"):
            usage_next = True
        elif line.startswith(b"data:"):
            if not usage_next:
                opener.open(frame_of_sse(line[5:].decode()))
            usage_next = False
    return 200 if opener.finished else 502


def wait_ready(name: str, url: str, headers: dict[str, str], limit_s: float) -> bool:
    """Poll a chat completion until the server answers 200 (or ``limit_s`` passes)."""

    async def probe() -> bool:
        end = time.monotonic() + limit_s
        async with aiohttp.ClientSession() as s:
            while time.monotonic() < end:
                try:
                    if await call(s, name, url, headers, False) == 200:
                        return True
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.3)
        return False

    return asyncio.run(probe())


async def _latencies(
    targets: list[tuple[str, str, dict[str, str]]], stream: bool, n: int
) -> dict[str, list[float]]:
    """Seconds per call of each target, calls interleaved target by target (50 warm-up)."""
    out: dict[str, list[float]] = {name: [] for name, _, _ in targets}
    async with aiohttp.ClientSession() as s:
        for i in range(n + 50):
            for name, url, headers in targets:
                t = time.perf_counter()
                status = await call(s, name, url, headers, stream)
                if status != 200:
                    raise RuntimeError(f"{url}: HTTP {status}")
                if i >= 50:  # warm-up
                    out[name].append(time.perf_counter() - t)
    return out


def _lua_bytes(data: bytes) -> str:
    """``data`` as a Lua string literal (decimal escapes: any byte)."""
    return '"' + "".join(f"\\{b}" for b in data) + '"'


def wrk_rate(
    name: str, url: str, headers: dict[str, str], stream: bool, conns: int, secs: float
) -> dict[str, float]:
    """Requests/s ``wrk`` completes (closed loop, ``conns`` connections) and its failures."""
    pinned = PINNED.get(name)
    sent = {"Content-Type": "application/json", **headers}
    if pinned is None:
        body = _lua_bytes(json.dumps(_body(stream)).encode())
    else:  # one sealed body, replayed: the proxy opens it on every call
        from sincere.serve.security.confidential_client import seal_for

        sealed = seal_for(pinned, "chat", _body(stream))
        body = _lua_bytes(sealed.body)
        sent.update(sealed.headers)
    lines = ['wrk.method = "POST"', f"wrk.body = {body}"]
    lines += [f'wrk.headers["{k}"] = "{v}"' for k, v in sent.items()]
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write("\n".join(lines) + "\n")
    cmd = ["wrk", "-t1", f"-c{conns}", f"-d{max(1, round(secs))}s", "-s", f.name, url]
    text = subprocess.run(cmd, capture_output=True, text=True, timeout=secs + 60).stdout
    os.unlink(f.name)
    rate = re.search(r"Requests/sec:\s+([\d.]+)", text)
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    errors = re.search(r"Socket errors:.*?timeout (\d+)", text)
    total = re.search(r"(\d+) requests in", text)
    return {
        "rps": float(rate.group(1)) if rate else float("nan"),
        "requests": float(total.group(1)) if total else float("nan"),
        "non_2xx": float(bad.group(1)) if bad else 0.0,
        "timeouts": float(errors.group(1)) if errors else 0.0,
    }


def measure(
    name: str,
    url: str,
    headers: dict[str, str],
    args: argparse.Namespace,
    latencies: dict[str, dict[str, list[float]]],
) -> dict[str, Any]:
    row: dict[str, Any] = {"target": name}
    for stream in (False, True):
        mode = "stream" if stream else "plain"
        lat = np.array(latencies[mode][name])
        row[f"{mode}_p50_ms"] = float(np.percentile(lat, 50) * 1e3)
        row[f"{mode}_p99_ms"] = float(np.percentile(lat, 99) * 1e3)
        row[f"{mode}_wrk"] = wrk_rate(name, url, headers, stream, args.connections, args.duration_s)
        print(
            f"  {name} {mode}: p50 {row[f'{mode}_p50_ms']:.2f} ms, "
            f"{row[f'{mode}_wrk']['rps']:.0f} req/s",
            file=sys.stderr,
        )
    return row


def litellm_config(upstream: str, path: Path) -> None:
    """LiteLLM's proxy config: one OpenAI-compatible deployment, a master key."""
    path.write_text(
        "model_list:\n"
        f"  - model_name: {MODEL}\n"
        "    litellm_params:\n"
        f"      model: openai/{MODEL}\n"
        f"      api_base: {upstream}/v1\n"
        "      api_key: none\n"
        "general_settings:\n"
        f"  master_key: {MASTER_KEY}\n"
        "litellm_settings:\n"
        "  telemetry: false\n"
    )


def table(rows: list[dict[str, Any]]) -> str:
    """The Markdown table: latency added over direct, and saturated rates."""
    base = rows[0]
    head = (
        "| target | +p50 ms plain | +p99 ms plain | req/s plain | +p50 ms stream "
        "| +p99 ms stream | streams/s | failed calls |\n|---|---|---|---|---|---|---|---|"
    )
    out = [head]
    for r in rows:
        cells = [r["target"]]
        for mode in ("plain", "stream"):
            for q in ("p50", "p99"):
                added = r[f"{mode}_{q}_ms"] - base[f"{mode}_{q}_ms"]
                cells.append(f"{r[f'{mode}_{q}_ms']:.2f}" if r is base else f"{added:+.2f}")
            cells.append(f"{r[f'{mode}_wrk']['rps']:.0f}")
        failed = sum(r[f"{m}_wrk"][k] for m in ("plain", "stream") for k in ("non_2xx", "timeouts"))
        cells.append(f"{failed:.0f}")
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--serve", nargs="+", help=argparse.SUPPRESS)
    parser.add_argument("--duration-s", type=float, default=5.0)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--latency-requests", type=int, default=300)
    parser.add_argument("--litellm-workers", type=int, default=2)
    parser.add_argument("--no-litellm", action="store_true")
    parser.add_argument(
        "--litellm-wait-s", type=float, default=180.0, help="how long LiteLLM may take to start"
    )
    parser.add_argument(
        "--security", action="store_true", help="also keys on, the seal proxy, sealed calls"
    )
    parser.add_argument(
        "--head-to-head",
        type=int,
        default=0,
        metavar="ROUNDS",
        help="with --security: also alternate wrk on each pair of PAIRS present (gateway vs "
        "+auth, +auth vs +sealed, bare and +auth vs +redis w1, +redis w1 base vs now)",
    )
    parser.add_argument(
        "--base-src", type=Path, help="also measure the gateway of another source tree (its src/)"
    )
    parser.add_argument(
        "--redis-workers",
        type=lambda text: [int(n) for n in text.split(",") if n],
        default=[],
        metavar="N,N,...",
        help="with --security: also the gateway with keys and its state in a redis-server of "
        "this script's own, in each of these worker counts (e.g. 1,2,4)",
    )
    parser.add_argument(
        "--only",
        type=lambda text: [name.strip() for name in text.split(",") if name.strip()],
        default=[],
        metavar="NAME,NAME,...",
        help="measure only these targets and direct, the reference (their names in the table; "
        "e.g. 'bare,sincere+auth,sincere+auth+redis w1'): more rounds fit in the same time",
    )
    parser.add_argument("--json", type=Path, help="also write the raw numbers here")
    args = parser.parse_args()
    if args.serve:
        kind, port, *rest = args.serve
        {
            "upstream": lambda: serve_upstream(int(port)),
            "bare": lambda: serve_bare_proxy(int(port), rest[0]),
            "sincere": lambda: serve_sincere(int(port), rest[0]),
            "sincere-auth": lambda: serve_sincere_auth(int(port), *rest),
            "redis": lambda: serve_redis(int(port), rest[0]),
            "seal": lambda: serve_seal(int(port), rest[0], rest[1]),
        }[kind]()
        return
    run_all(args)


def run_all(args: argparse.Namespace) -> None:
    me = [sys.executable, __file__, "--serve"]
    procs: list[subprocess.Popen[bytes]] = []
    rows: list[dict[str, Any]] = []
    try:
        up_port = free_port()
        procs.append(start([*me, "upstream", str(up_port)]))
        upstream = f"http://127.0.0.1:{up_port}"
        targets: list[tuple[str, str, dict[str, str]]] = [("direct", upstream, {})]
        for kind in ("bare", "sincere"):
            port = free_port()
            procs.append(start([*me, kind, str(port), upstream]))
            targets.append((kind, f"http://127.0.0.1:{port}", {}))
        if args.base_src is not None:  # the same gateway code path, from another checkout
            port = free_port()
            env = {"PYTHONPATH": str(args.base_src.resolve())}
            procs.append(start([*me, "sincere", str(port), upstream], env))
            targets.append(("sincere (base)", f"http://127.0.0.1:{port}", {}))
        if args.security:
            targets += start_security(me, upstream, procs, args.redis_workers, args.base_src)
        litellm = None if args.no_litellm else start_litellm(upstream, args.litellm_workers, procs)
        if litellm is not None:
            targets.append(litellm)
        if args.only:
            missing = sorted(set(args.only) - {name for name, _, _ in targets})
            if missing:
                known = ", ".join(name for name, _, _ in targets)
                raise SystemExit(f"--only: no target named {missing}; this run has: {known}")
            targets = [t for t in targets if t[0] == "direct" or t[0] in args.only]
        ready = []
        for name, root, headers in targets:
            url = root + "/v1/chat/completions"
            if not wait_ready(name, url, headers, args.litellm_wait_s if name == "litellm" else 20):
                print(f"{name}: did not become ready; skipped", file=sys.stderr)
                continue
            ready.append((name, url, headers))
        latencies = {
            "stream" if stream else "plain": asyncio.run(
                _latencies(ready, stream, args.latency_requests)
            )
            for stream in (False, True)
        }
        for name, url, headers in ready:
            rows.append(measure(name, url, headers, args, latencies))
        pairs = head_to_head(ready, args) if args.head_to_head else []
    finally:
        for p in procs:
            stop(p)
    print(table(rows))
    for line in [*litellm_ratios(rows), *pairs]:
        print(line)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


def litellm_ratios(rows: list[dict[str, Any]]) -> list[str]:
    """Each gateway target's saturated rate as a multiple of LiteLLM's (same run)."""
    litellm = next((r for r in rows if r["target"] == "litellm"), None)
    if litellm is None:
        return []
    out = []
    for r in rows:
        if not r["target"].startswith("sincere"):
            continue
        cells = []
        for mode, unit in (("plain", "req/s"), ("stream", "streams/s")):
            theirs = litellm[f"{mode}_wrk"]["rps"]
            ratio = r[f"{mode}_wrk"]["rps"] / theirs if theirs else float("inf")
            cells.append(f"{ratio:.1f}x {unit}")
        out.append(f"rate vs litellm: {r['target']}: " + ", ".join(cells))
    return out


PAIRS = (
    ("sincere", "sincere+auth"),
    ("sincere+auth", "sincere+auth+sealed"),
    ("bare", "sincere+auth+redis w1"),
    ("sincere+auth", "sincere+auth+redis w1"),
    ("sincere+auth+redis w1 (base)", "sincere+auth+redis w1"),
)


def head_to_head(
    ready: list[tuple[str, str, dict[str, str]]], args: argparse.Namespace
) -> list[str]:
    """Rates of each pair of :data:`PAIRS`, ``wrk`` runs alternated (ABBA), medians; one each.

    Sequential rate tests drift with the machine's load; alternating the two sides of a
    pair round by round lets the ratio hold while the load moves.
    """
    by_name = {name: (url, headers) for name, url, headers in ready}
    out = []
    for a, b in PAIRS:
        if a not in by_name or b not in by_name:
            continue
        for stream in (False, True):
            rates: dict[str, list[float]] = {a: [], b: []}
            for r in range(args.head_to_head):
                for name in (a, b) if r % 2 == 0 else (b, a):  # ABBA: no side always first
                    url, headers = by_name[name]
                    got = wrk_rate(name, url, headers, stream, args.connections, args.duration_s)
                    rates[name].append(got["rps"])
            ra, rb = (float(np.median(rates[n])) for n in (a, b))
            mode = "streams/s" if stream else "req/s plain"
            out.append(f"head to head, {mode}: {b} {rb:.0f} vs {a} {ra:.0f} ({rb / ra:.2f}x)")
    return out


def serve_redis(port: int, folder: str) -> None:
    """A redis-server on 127.0.0.1 without persistence (replaces this process)."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is not installed (scripts/setup_redis.sh)")
    args = ["--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    os.execv(binary, [binary, *args, "--dir", folder])


def start_redis_targets(
    me: list[str],
    upstream: str,
    keys: str,
    auth: dict[str, str],
    procs: list[subprocess.Popen[bytes]],
    workers: list[int],
    base_src: Path | None = None,
) -> list[tuple[str, str, dict[str, str]]]:
    """A redis-server, and the gateway with keys and its state there, in 1, 2, 4 workers;
    with ``base_src``, the same from that tree too (``(base)``, a redis-server of its own)."""
    if shutil.which("redis-server") is None:
        print("redis-server is not installed: Redis targets skipped", file=sys.stderr)
        return []
    trees: list[tuple[str, dict[str, str] | None]] = [("", None)]
    if base_src is not None:
        trees.append((" (base)", {"PYTHONPATH": str(base_src.resolve())}))
    out = []
    for suffix, env in trees:
        port = free_port()
        procs.append(start([*me, "redis", str(port), tempfile.mkdtemp()]))
        redis = f"redis://127.0.0.1:{port}/0"
        for n in workers:
            gw_port = free_port()
            cmd = [*me, "sincere-auth", str(gw_port), upstream, keys, "", redis, str(n)]
            procs.append(start(cmd, env))
            out.append((f"sincere+auth+redis w{n}{suffix}", f"http://127.0.0.1:{gw_port}", auth))
    return out


def start_security(
    me: list[str],
    upstream: str,
    procs: list[subprocess.Popen[bytes]],
    redis_workers: list[int] | None = None,
    base_src: Path | None = None,
) -> list[tuple[str, str, dict[str, str]]]:
    """The gateway with keys, the seal proxy, and the gateway with keys in front of the proxy
    (and with ``redis_workers``, the gateway with keys on Redis in that many workers)."""
    from sincere.serve.security.envelope import load_keypair

    keys, token, pair_file = make_security(Path(tempfile.mkdtemp()))
    auth = {"Authorization": f"Bearer {token}"}
    ports = [free_port() for _ in range(3)]
    seal_url = f"http://127.0.0.1:{ports[1]}"
    procs.append(start([*me, "sincere-auth", str(ports[0]), upstream, keys]))
    procs.append(start([*me, "seal", str(ports[1]), upstream, str(pair_file)]))
    procs.append(start([*me, "sincere-auth", str(ports[2]), upstream, keys, seal_url]))
    pinned = load_keypair(pair_file).pinned
    PINNED["seal"] = PINNED["sincere+auth+sealed"] = pinned
    targets = [
        ("sincere+auth", f"http://127.0.0.1:{ports[0]}", auth),
        ("seal", seal_url, {}),
        ("sincere+auth+sealed", f"http://127.0.0.1:{ports[2]}", auth),
    ]
    if redis_workers:
        targets += start_redis_targets(me, upstream, keys, auth, procs, redis_workers, base_src)
    return targets


def start_litellm(
    upstream: str, workers: int, procs: list[subprocess.Popen[bytes]]
) -> tuple[str, str, dict[str, str]] | None:
    """The LiteLLM proxy from its venv (None, with a note, when the venv is missing)."""
    if not LITELLM_PY.exists():
        print(
            f"{LITELLM_PY} not found: LiteLLM skipped (see benchmarks/README.md, "
            "'Gateway overhead', to make its venv; or set LITELLM_VENV)",
            file=sys.stderr,
        )
        return None
    port = free_port()
    cfg = Path(tempfile.mkdtemp()) / "litellm.yaml"
    litellm_config(upstream, cfg)
    env = {"LITELLM_TELEMETRY_DISABLED": "true", "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    cmd = [str(LITELLM_PY), "--config", str(cfg), "--host", "127.0.0.1", "--port", str(port)]
    procs.append(start([*cmd, "--num_workers", str(workers)], env))
    return ("litellm", f"http://127.0.0.1:{port}", {"Authorization": f"Bearer {MASTER_KEY}"})


if __name__ == "__main__":
    main()
