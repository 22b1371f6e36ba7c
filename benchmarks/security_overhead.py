"""Per-request cost of the gateway's security pieces, in process (microseconds).

Measured in one run, beside a peer the gateway already pays per request (parsing the
same chat body with ``sincere.serve.protocol.parse_request``), so figures compare as
ratios on any machine:

* key check + limits + budget reservation (``authorize_request``) and its ``settle``,
  with 1 and 1,000 keys in the store (requests spread over the keys, 50 tenants,
  per-tenant Prometheus counters on);
* the key check alone: a token seen before (one dict lookup in the store's cache of
  verified tokens) and a token's first check (split + HMAC-SHA256 + constant-time compare);
* persistence: a write-behind flush of 1,000 keys' usage, against writing each
  settle through to SQLite (one commit per request), the option the store avoids;
* confidential mode: sealing a request on the client and opening it on the proxy
  (HPKE: one X25519 key agreement each side), and per streamed chunk sealing a frame
  and opening it (AES-128-GCM + base64 SSE framing).

    python benchmarks/security_overhead.py            # ~20 s
    python benchmarks/security_overhead.py --quick    # fewer repetitions

Fixed seed (keys drawn from a seeded generator here, never in the product), a warm-up
before each timing; the medians are printed as a table and a one-line result.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from prometheus_client import CollectorRegistry

from sincere.serve.protocol import parse_request
from sincere.serve.security.envelope import (
    Declared,
    SealKeyPair,
    frame_of_sse,
    open_request,
    seal_request,
    sse_frame,
)
from sincere.serve.security.keys import KeySpec, Prices
from sincere.serve.security.keystore import KeyStore
from sincere.serve.security.metrics import TenantMetrics
from sincere.serve.security.policy import Grant, RequestFacts, authorize_request
from sincere.serve.security.storage import SqliteStorage, Totals

PRICES = Prices.per_million(0.5, 1.5)
CHUNK = (
    b'data: {"id":"chatcmpl-0000000000000001","object":"chat.completion.chunk","created":1,'
    b'"model":"llama-3-8b","choices":[{"index":0,"delta":{"content":" tok"},'
    b'"finish_reason":null}]}\n\n'
)


def _body(rng: random.Random) -> bytes:
    words = " ".join(rng.choice(["alpha", "beta", "gamma", "delta"]) for _ in range(200))
    messages = [{"role": "user", "content": words}]
    return json.dumps({"model": "llama-3-8b", "messages": messages, "max_tokens": 128}).encode()


def _time_us(fn: Callable[[int], object], repeats: int, warmup: int) -> float:
    """Median microseconds of ``fn(i)`` over ``repeats`` calls, after ``warmup`` calls."""
    for i in range(warmup):
        fn(i)
    samples = []
    for i in range(repeats):
        start = time.perf_counter_ns()
        fn(warmup + i)
        samples.append((time.perf_counter_ns() - start) / 1000)
    return statistics.median(samples)


def _store(folder: Path, num_keys: int, seed: int) -> tuple[KeyStore, list[str]]:
    rng = random.Random(seed)
    metrics = TenantMetrics(CollectorRegistry())  # as the gateway would pass its registry
    store = KeyStore(SqliteStorage(folder / f"keys-{num_keys}.db"), metrics=metrics)
    spec = KeySpec(
        name="tenant",
        models=frozenset({"llama-3-8b"}),
        max_requests_per_min=10**9,
        max_tokens_per_min=10**12,
        budget_usd=1e9,
    )
    tokens = []
    for i in range(num_keys):
        named = dataclasses.replace(spec, name=f"tenant-{i % 50}")
        token, _ = store.create(named, actor="bench", now=1e9, token_bytes=rng.randbytes)
        tokens.append(token)
    return store, tokens


def bench_keys(folder: Path, num_keys: int, repeats: int, seed: int) -> dict[str, float]:
    """authorize + settle, authorize alone, authenticate alone, at ``num_keys`` keys."""
    store, tokens = _store(folder, num_keys, seed)
    headers = [{"Authorization": f"Bearer {t}"} for t in tokens]
    facts = RequestFacts(model="llama-3-8b", prompt_tokens=200, max_tokens=128)

    def check_and_settle(i: int) -> None:
        grant = authorize_request(store, headers[i % num_keys], facts, PRICES, 1e9 + i * 1e-3)
        assert isinstance(grant, Grant)
        store.settle(grant.reservation, 200, 100, PRICES)

    held: list[Grant] = []

    def check_only(i: int) -> None:
        grant = authorize_request(store, headers[i % num_keys], facts, PRICES, 1e9 + i * 1e-3)
        assert isinstance(grant, Grant)
        held.append(grant)

    def authenticate(i: int) -> None:
        assert store.authenticate(tokens[i % num_keys]) is not None

    def first_check(i: int) -> None:  # a token not seen before: split + HMAC + compare
        assert store._verify(tokens[i % num_keys]) is not None

    out = {
        "check+settle": _time_us(check_and_settle, repeats, repeats // 10),
        "check": _time_us(check_only, repeats, repeats // 10),
        "authenticate": _time_us(authenticate, repeats, repeats // 10),
        "first authenticate": _time_us(first_check, repeats, repeats // 10),
    }
    for grant in held:
        store.settle(grant.reservation, 200, 100, PRICES)
    start = time.perf_counter()
    written = store.flush()
    out["flush_ms"] = (time.perf_counter() - start) * 1e3
    out["flushed_keys"] = written
    store.close()
    return out


def bench_write_through(folder: Path, repeats: int) -> float:
    """One SQLite commit per settle: the cost write-behind keeps off the request path."""
    storage = SqliteStorage(folder / "through.db")
    delta = {"0123456789ab": Totals(1e-4, 1, 200, 100)}
    us = _time_us(lambda i: storage.add_usage(delta), repeats, repeats // 10)
    storage.close()
    return us


def bench_confidential(repeats: int, seed: int) -> dict[str, float]:
    """Seal + open of a request, and of one streamed chunk."""
    rng = random.Random(seed)
    pair = SealKeyPair.generate()
    body = _body(rng)
    declared = Declared("chat", pair.key_id, "llama-3-8b", 200, 128, True)
    sealed_once = seal_request(pair.pinned, declared, body)
    _, sealer = open_request(pair, declared, sealed_once.body)
    opener = sealed_once.opener()

    def request_seal(i: int) -> None:
        seal_request(pair.pinned, declared, body)

    def request_open(i: int) -> None:
        open_request(pair, declared, sealed_once.body)

    def chunk_round_trip(i: int) -> None:
        event = sse_frame(sealer.seal(CHUNK))
        assert opener.open(frame_of_sse(event[6:].decode())) == CHUNK

    def chunk_seal(i: int) -> None:
        sse_frame(sealer.seal(CHUNK))

    out = {
        "request seal (client)": _time_us(request_seal, repeats, repeats // 10),
        "request open (proxy)": _time_us(request_open, repeats, repeats // 10),
        "chunk seal+open": _time_us(chunk_round_trip, repeats * 5, repeats),
    }
    out["chunk seal (proxy)"] = _time_us(chunk_seal, repeats * 5, repeats)
    out["frame bytes / chunk bytes"] = len(sse_frame(sealer.seal(CHUNK))) / len(CHUNK)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    repeats = 2000 if args.quick else 20000
    rng = random.Random(args.seed)
    body = _body(rng)
    peer = _time_us(lambda i: parse_request(body, "chat"), repeats, repeats // 10)
    rows: list[tuple[str, float]] = [("peer: parse_request of a 200-token chat body", peer)]
    with tempfile.TemporaryDirectory() as folder:
        for num_keys in (1, 1000):
            figures = bench_keys(Path(folder), num_keys, repeats, args.seed)
            for name in ("check+settle", "check", "authenticate", "first authenticate"):
                rows.append((f"keys={num_keys}: {name}", figures[name]))
            rows.append((f"keys={num_keys}: flush {figures['flushed_keys']:.0f} keys (ms)",
                         figures["flush_ms"]))  # fmt: skip
        rows.append(("write-through: one SQLite commit per settle", bench_write_through(
            Path(folder), max(repeats // 20, 200))))  # fmt: skip
    confidential = bench_confidential(max(repeats // 10, 200), args.seed)
    rows += list(confidential.items())
    print(f"{'what':58s} {'median us':>10s} {'x peer':>7s}")
    for name, value in rows:
        ratio = "" if "ms" in name or "bytes" in name else f"{value / peer:7.2f}"
        print(f"{name:58s} {value:10.2f} {ratio:>7s}")
    check = dict(rows)["keys=1000: check+settle"]
    chunk = confidential["chunk seal+open"]
    sealing = confidential["request seal (client)"]
    opening = confidential["request open (proxy)"]
    print(
        f"RESULT key check+limits+budget+settle {check:.1f} us at 1,000 keys "
        f"({check / peer:.2f}x parse_request); sealed request {sealing:.0f} + {opening:.0f} us; "
        f"{chunk:.1f} us per streamed chunk"
    )


if __name__ == "__main__":
    main()
