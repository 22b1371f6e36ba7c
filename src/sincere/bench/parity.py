"""Simulation vs live: one trace through the simulator and through gateway + emulators.

DESIGN.md's central claim is that the same policy objects and engine model run in
simulation and on the wall clock. :func:`parity` checks it: it simulates a
:class:`~sincere.sim.config.SimulationConfig`, then starts one emulated engine per
simulated instance (same model, accelerator, step-time model and engine limits)
and sincere's gateway with the same router in front of them, in this process, and
replays the same requests through the load generator. It compares, request by
request, which instance served it and the TTFT and E2E (relative difference
``(live - sim) / sim``).

Live timings carry HTTP, event-loop and timer jitter (about a millisecond here), so
use step times well above that (e.g. Llama-3-8B on an A100, 10-50 ms iterations).
Only iteration-level (``continuous``) engines can be emulated.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from sincere.bench.results import BenchResult
from sincere.bench.runner import BenchOptions, run_bench_async
from sincere.core.errors import ConfigError
from sincere.core.request import RequestArrays
from sincere.sim.api import SimulationResult, simulate
from sincere.sim.config import ContinuousConfig, SimulationConfig, load_config

FloatArray = npt.NDArray[np.float64]
QUANTILES = {"p10": 10.0, "p50": 50.0, "p90": 90.0}


@dataclass(eq=False)
class ParityResult:
    """The two runs and their per-request differences."""

    sim: SimulationResult
    live: BenchResult
    same_instance: npt.NDArray[np.bool_]  # live request went where the simulator sent it
    rel_ttft: FloatArray  # (live - sim) / sim TTFT, NaN where either is missing
    rel_e2e: FloatArray  # (live - sim) / sim E2E

    def summary(self) -> dict[str, Any]:
        """Share of identical routing decisions and quantiles of the relative differences."""
        out: dict[str, Any] = {
            "num_requests": len(self.same_instance),
            "num_compared": int(np.isfinite(self.rel_e2e).sum()),
            "same_instance_share": float(self.same_instance.mean()),
        }
        for name, rel in (("rel_ttft", self.rel_ttft), ("rel_e2e", self.rel_e2e)):
            finite = rel[np.isfinite(rel)]
            out[name] = {
                k: float(np.percentile(finite, q)) if len(finite) else None
                for k, q in QUANTILES.items()
            }
            out[name]["median_abs"] = float(np.median(np.abs(finite))) if len(finite) else None
        return out


def _emulator_configs(config: SimulationConfig, ids: list[str]) -> list[Any]:
    from sincere.serve.emulator_config import EmulatorConfig

    configs = []
    expanded = [inst for inst in config.instances for _ in range(inst.count)]
    for inst, name in zip(expanded, ids, strict=True):
        if not isinstance(inst.engine, ContinuousConfig) or inst.model is None:
            raise ConfigError(
                "only single-model continuous engines can be emulated",
                where=f"instance {name}",
                value=inst.engine.kind,
                allowed="engine.kind: continuous",
            )
        fields = ("model", "accelerator", "precision", "kv_precision", "tp", "pp", "cc")
        settings = {f: getattr(inst, f) for f in fields}
        configs.append(
            EmulatorConfig(
                name=name,
                step_model=inst.step_model,
                engine=inst.engine,
                max_num_requests=1 << 20,
                **settings,
            )
        )
    return configs


def _gateway_config(config: SimulationConfig, servers: list[Any], models: list[str]) -> Any:
    from sincere.serve.config import parse_config

    backends = [
        {"name": s.config.name, "url": s.url, "models": [m], "max_in_flight": 1 << 20}
        for s, m in zip(servers, models, strict=True)
    ]
    return parse_config(
        {
            "port": 0,
            "router": {"name": config.router.name, "params": config.router.params},
            "backends": backends,
            "scrape": {"enabled": False},
            "admission": {"enabled": False},
            "queue": {"max_len": 1 << 20, "timeout_s": 3600.0},
            "admin": False,
        }
    )


async def live_run(
    config: SimulationConfig, requests: RequestArrays, instance_ids: list[str]
) -> BenchResult:
    """Replay ``requests`` through gateway + emulated engines built from ``config``."""
    from sincere.serve.emulator import start_emulators, stop_emulators
    from sincere.serve.gateway import Gateway

    emulators = _emulator_configs(config, instance_ids)
    servers = await start_emulators(emulators)
    try:
        models = [str(s.config.served_model_name or s.config.model) for s in servers]
        async with Gateway(_gateway_config(config, servers, models)) as gateway:
            horizon = float(requests.arrival_at[-1]) + 300.0
            options = BenchOptions(time_limit_s=horizon)
            return await run_bench_async(gateway.url, requests, options)
    finally:
        await stop_emulators(servers)


def compare(sim: SimulationResult, live: BenchResult) -> ParityResult:
    """Per-request routing agreement and relative TTFT / E2E differences."""
    s, m = sim.requests, live.requests
    same = np.asarray(s.column("instance").to_pylist(), dtype=object) == np.asarray(
        m.column("instance").to_pylist(), dtype=object
    )

    def rel(column: str) -> FloatArray:
        a = s.column(column).to_numpy(zero_copy_only=False).astype(np.float64)
        b = m.column(column).to_numpy(zero_copy_only=False).astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            diff: FloatArray = (b - a) / a
        return diff

    return ParityResult(sim, live, same, rel("ttft_s"), rel("e2e_s"))


def parity(
    config: SimulationConfig | dict[str, Any] | str, seed: int | None = None
) -> ParityResult:
    """Simulate ``config`` and replay its requests live on the wall clock; compare the two."""
    cfg = config if isinstance(config, SimulationConfig) else load_config(config)
    sim = simulate(cfg, seed)
    live = asyncio.run(live_run(sim.config, sim.requests_in, list(sim.records.instances)))
    return compare(sim, live)
