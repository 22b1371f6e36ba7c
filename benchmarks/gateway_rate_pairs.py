"""Gateway top rate, paired: two source trees' gateways against the bare pass-through.

One mock upstream and the bare pass-through of ``gateway_overhead.py``; then, for this
tree and for ``--base-src`` (another checkout's ``src/``), the gateway three ways: without
keys (``sincere``), with keys in memory (``auth``) and with keys on Redis, one worker
(``redis``; each tree with a redis-server of its own). ``wrk -t1 -c32`` saturates every
target in turn for ``--duration-s``, round after round, the order reversed every other
round (no target always first), non-streamed chat completions. Prints each target's
median rate, its ratio to the bare pass-through, and per setup the ratio of this tree to
the base, round by round (sequential rates drift with a shared machine's load; the ratios
of one round do less).

    python benchmarks/gateway_rate_pairs.py --base-src /tmp/base/src --rounds 6

With ``--base-src`` this tree's own ``src/``, the two sides run the same code: the spread
of their ratio is what a change has to beat. Servers bind 127.0.0.1 and are stopped by the
PIDs this script started.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import gateway_overhead as g

SETUPS = ("sincere", "auth", "redis")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base-src", type=Path, required=True, help="the other tree's src/")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--duration-s", type=float, default=3.0)
    parser.add_argument("--connections", type=int, default=32)
    args = parser.parse_args()
    me = [sys.executable, str(Path(g.__file__).resolve()), "--serve"]
    procs: list[subprocess.Popen[bytes]] = []
    rates: dict[str, list[float]] = {}
    try:
        targets, auth = start_targets(me, args.base_src, procs)
        time.sleep(6.0)
        for name, url in targets.items():  # warm-up
            g.wrk_rate(name, url, auth, False, 4, 1)
        names = list(targets)
        rates = {name: [] for name in names}
        for r in range(args.rounds):
            for name in names if r % 2 == 0 else names[::-1]:
                url = targets[name]
                got = g.wrk_rate(name, url, auth, False, args.connections, args.duration_s)
                if got["non_2xx"] or got["timeouts"]:
                    print(f"{name}: {got['non_2xx']:.0f} failed, {got['timeouts']:.0f} timed out")
                rates[name].append(got["rps"])
            print(f"round {r}: " + ", ".join(f"{n} {v[-1]:.0f}" for n, v in rates.items()))
    finally:
        for proc in procs:
            g.stop(proc)
    report(rates)


def start_targets(
    me: list[str], base_src: Path, procs: list[subprocess.Popen[bytes]]
) -> tuple[dict[str, str], dict[str, str]]:
    """The upstream, bare, and each tree's three gateways; their URLs and the key's header."""
    keys, token, _ = g.make_security(Path(tempfile.mkdtemp()))
    up_port = g.free_port()
    procs.append(g.start([*me, "upstream", str(up_port)]))
    upstream = f"http://127.0.0.1:{up_port}"
    targets: dict[str, str] = {}
    port = g.free_port()
    procs.append(g.start([*me, "bare", str(port), upstream]))
    targets["bare"] = f"http://127.0.0.1:{port}"
    here = Path(__file__).resolve().parent.parent / "src"
    for tag, src in (("now", here), ("base", base_src.resolve())):
        env = {"PYTHONPATH": str(src)}
        redis_port = g.free_port()
        procs.append(g.start([*me, "redis", str(redis_port), tempfile.mkdtemp()]))
        redis = f"redis://127.0.0.1:{redis_port}/0"
        commands = {
            "sincere": ["sincere"],
            "auth": ["sincere-auth", keys],
            "redis": ["sincere-auth", keys, "", redis, "1"],
        }
        for setup in SETUPS:
            port = g.free_port()
            kind, *extra = commands[setup]
            procs.append(g.start([*me, kind, str(port), upstream, *extra], env))
            targets[f"{setup} {tag}"] = f"http://127.0.0.1:{port}"
    for name, url in targets.items():
        targets[name] = url + "/v1/chat/completions"
    return targets, {"Authorization": f"Bearer {token}"}


def report(rates: dict[str, list[float]]) -> None:
    """Medians, ratios to bare, and this tree over the base per setup."""
    if not rates or not rates.get("bare"):
        return
    med = {name: statistics.median(v) for name, v in rates.items()}
    for name, value in med.items():
        print(f"{name:14s} median {value:7.0f} req/s  {value / med['bare']:.2f}x bare")
    for setup in SETUPS:
        now, base = rates[f"{setup} now"], rates[f"{setup} base"]
        per_round = [a / b for a, b in zip(now, base, strict=True)]
        shown = " ".join(f"{x:.2f}" for x in per_round)
        print(f"{setup}: now / base per round {shown}; median {statistics.median(per_round):.2f}")


if __name__ == "__main__":
    main()
