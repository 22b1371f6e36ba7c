"""Speed of prefix caching: W1 unchanged (paired with the code before it), Mooncake whole trace.

``w1``: the whole ``sincere simulate examples/w1.yaml`` process, in turn for the code before
prefix caching (``--baseline-src``: a ``src`` folder of that revision, e.g. from
``git archive <rev> src | tar -x -C /tmp/base``), this code with ``enable_prefix_caching``
false and this code with it true (the default), ``--repeat`` times; medians and the ratios
to the baseline pair by pair, so the comparison holds while the machine's speed drifts.
All three must write the same summary.json (checked).

``mooncake``: the whole ``sincere simulate CONFIG --trace mooncake_conversation_trace.jsonl``
process (12,031 requests, ~12k-token prompts) on 4 instances of Llama-3-8B on H100-SXM
behind least-outstanding routing, caching on; wall time and the hit rate.

    python benchmarks/prefix_cache_speed.py w1 --baseline-src /tmp/base/src --repeat 3
    python benchmarks/prefix_cache_speed.py mooncake
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from source_trees import compile_tree

ROOT = Path(__file__).resolve().parents[1]
SINCERE = Path(sys.executable).with_name("sincere")
MOONCAKE = ROOT.parent / "shared" / "data" / "traces" / "mooncake_conversation_trace.jsonl"


def run(config: Path, out: Path, src: Path, extra: list[str], native: bool) -> float:
    """Wall seconds of one ``sincere simulate`` process importing ``src``."""
    env = dict(os.environ, PYTHONPATH=str(src), SINCERE_NATIVE="1" if native else "0")
    started = time.perf_counter()
    subprocess.run(
        [str(SINCERE), "simulate", str(config), "--out", str(out), "--quiet", *extra],
        check=True,
        env=env,
    )
    return time.perf_counter() - started


def w1(baseline: Path, repeat: int, native: bool) -> None:
    """Paired W1 runs: before prefix caching, caching off, caching on."""
    data = yaml.safe_load((ROOT / "examples" / "w1.yaml").read_text())
    tmp = Path(tempfile.mkdtemp(prefix="prefix-w1-"))
    variants: dict[str, tuple[Path, Path]] = {"before": (ROOT / "examples" / "w1.yaml", baseline)}
    for name, flag in (("off", False), ("on", True)):
        config = tmp / f"w1-{name}.yaml"
        changed = json.loads(json.dumps(data))
        for inst in changed["instances"]:
            inst.setdefault("engine", {})["enable_prefix_caching"] = flag
        config.write_text(yaml.safe_dump(changed, sort_keys=False))
        variants[name] = (config, ROOT / "src")
    walls: dict[str, list[float]] = {name: [] for name in variants}
    for k in range(repeat):
        for name, (config, src) in variants.items():
            walls[name].append(run(config, tmp / f"{name}-{k}", src, [], native))
    sums = {(tmp / f"{name}-0" / "summary.json").read_bytes() for name in variants}
    assert len(sums) == 1, "the three variants wrote different summaries"
    before = walls["before"]
    for name, values in walls.items():
        ratios = [v / b for v, b in zip(values, before, strict=True)]
        runs = ", ".join(f"{v:.2f}" for v in values)
        print(
            f"W1 {name:>6}: median {statistics.median(values):.2f} s wall, "
            f"ratio to before {statistics.median(ratios):.3f} (runs {runs})"
        )


def mooncake(native: bool) -> None:
    """The whole Mooncake conversation trace on 4 instances."""
    tmp = Path(tempfile.mkdtemp(prefix="prefix-mooncake-"))
    config = tmp / "cluster.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "seed": 0,
                "workload": {
                    "num_requests": 1,
                    "arrival": {"kind": "poisson", "rate": 1.0},
                    "lengths": {"source": "azure-conv-2023"},
                    "models": {"llama-3-8b": 1.0},
                },
                "instances": [
                    {"model": "llama-3-8b", "accelerator": "H100-SXM", "count": 4},
                ],
                "router": {"name": "least-outstanding"},
            }
        )
    )
    wall = run(config, tmp / "out", ROOT / "src", ["--trace", str(MOONCAKE)], native)
    summary = json.loads((tmp / "out" / "summary.json").read_text())
    print(
        f"Mooncake conversation, {summary['num_requests']:,} requests on 4 instances: "
        f"{wall:.1f} s whole process; hit rate {summary['prefix_cache']['hit_rate']:.3f}, "
        f"TTFT p50 {summary['ttft_s']['p50']:.3f} s"
    )


def main() -> None:
    """Parse the arguments and run the chosen benchmark."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("which", choices=["w1", "mooncake"])
    parser.add_argument("--baseline-src", type=Path, help="src folder of the code before (w1)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--native", action="store_true", help="use the compiled modules")
    args = parser.parse_args()
    if args.which == "w1":
        if args.baseline_src is None:
            parser.error("w1 needs --baseline-src")
        for src in (args.baseline_src, ROOT / "src"):
            compile_tree(src)  # (no tree compiles its sources while timed)
        w1(args.baseline_src.resolve(), args.repeat, args.native)
    else:
        mooncake(args.native)


if __name__ == "__main__":
    main()
