"""Synthetic planning problems: fleets of any size for benchmarks and property tests.

Accelerator types get a speed factor and a price that grows a little slower than
speed; models scale the decode / prefill parameters of Inferno's granite-13b sample
on A100 (α 20.58, β 0.41 ms; γ 164.64, δ 0.0128 ms). Every draw comes from the
numpy ``Generator`` passed in, so a seed fixes the problem.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from sincere.optimize.data import (
    AcceleratorSpec,
    CurrentAlloc,
    Load,
    ModelPerf,
    OptimizerSpec,
    Problem,
    Server,
    ServiceClass,
)
from sincere.optimize.queueing import DecodePrefillParams
from sincere.optimize.sizing import Targets

CLASS_TARGETS = {
    "Premium": (1, 1000.0, 80.0),
    "Bronze": (2, 2000.0, 160.0),
    "Free": (3, 4000.0, 320.0),
}
"""Inferno's sample classes: priority, TTFT and ITL targets (ms)."""


def synthetic_problem(
    num_servers: int,
    num_accelerators: int,
    rng: np.random.Generator,
    *,
    num_models: int = 4,
    capacity_share: float | None = None,
    optimizer: OptimizerSpec | None = None,
) -> Problem:
    """A random fleet; ``capacity_share`` limits each type to that share of total need."""
    accs = _accelerators(num_accelerators, rng)
    models = _models(num_models, accs, rng)
    classes = {
        name: ServiceClass(name, prio, {f"m{m}": Targets(ttft, itl) for m in range(num_models)})
        for name, (prio, ttft, itl) in CLASS_TARGETS.items()
    }
    names = list(CLASS_TARGETS)
    servers = []
    for i in range(num_servers):
        cls, model = names[rng.integers(len(names))], f"m{rng.integers(num_models)}"
        load = Load(
            float(rng.uniform(10, 600)),
            float(rng.choice([128, 256, 512])),
            float(rng.choice([128, 256, 512, 1024])),
        )
        servers.append(Server(f"s{i}-{cls}-{model}", cls, model, CurrentAlloc(load)))
    spec = optimizer or OptimizerSpec()
    capacity: dict[str, int] = {}
    if capacity_share is not None:
        spec = dataclasses.replace(spec, unlimited=False)  # the rest as the caller set it
        per_type = max(1, int(capacity_share * num_servers * 6 / num_accelerators))
        capacity = {a.type: per_type for a in accs.values()}
    return Problem(accs, models, classes, tuple(servers), capacity, spec)


def _accelerators(num: int, rng: np.random.Generator) -> dict[str, AcceleratorSpec]:
    out = {}
    for i in range(num):
        speed = float(rng.uniform(0.5, 2.5))
        cost = round(40.0 * speed**0.85 * float(rng.uniform(0.8, 1.2)), 2)
        out[f"acc{i}"] = AcceleratorSpec(f"acc{i}", f"acc{i}", 1, 80.0 * speed, cost)
    return out


def _models(
    num: int, accs: dict[str, AcceleratorSpec], rng: np.random.Generator
) -> dict[tuple[str, str], ModelPerf]:
    out = {}
    for m in range(num):
        size = float(rng.uniform(0.4, 1.6))
        for name, acc in accs.items():
            speed = acc.mem_gb / 80.0  # memory grows with speed here (80 GB at speed 1)
            scale = size / speed
            params = DecodePrefillParams(
                20.58 * scale, 0.41 * scale, 164.64 * scale, 0.0128125 * scale
            )
            batch = int(np.clip(48 * speed / size, 4, 128))
            out[(f"m{m}", name)] = ModelPerf(f"m{m}", name, 1, batch, 512, params)
    return out
