"""Adding a load-aware router is one file plus its docs row; both paths then drive it."""

from __future__ import annotations

import re
import sys
from collections.abc import Sequence
from pathlib import Path

import sincere.policy.routers as routers_pkg
from sincere.core import Request
from sincere.core.types import Seconds
from sincere.policy.front_door import Route
from sincere.policy.router_base import ROUTERS, InstanceView, RouteDecision, Router
from sincere.serve.gateway.config import parse_config
from sincere.serve.gateway.dispatch import front_door_of
from sincere.sim import simulate

DOCS = Path(__file__).resolve().parents[2] / "docs" / "routers.md"


@ROUTERS.register("test-least-kv")
class LeastKvRouter(Router):
    """Least KV usage; by outstanding requests where a backend does not report it."""

    def choose(
        self, request: Request, candidates: Sequence[InstanceView], now: Seconds
    ) -> RouteDecision:
        """The candidate with the least KV usage (unknown anywhere: fewest outstanding)."""
        if any(v.kv_usage is None for v in candidates):
            best = min(candidates, key=lambda v: v.num_outstanding)
            return RouteDecision(best.id, reason="kv_usage unknown, by outstanding")
        best = min(candidates, key=lambda v: v.kv_usage or 0.0)
        return RouteDecision(best.id, reason=f"kv_usage={best.kv_usage:.3f}")


def test_a_router_defined_in_one_module_runs_in_the_simulator_and_the_gateway() -> None:
    """Registered by name in one module, the router serves a simulation and a gateway's
    front door, with no enum, config class or factory to edit."""
    config = {
        "seed": 1,
        "workload": {
            "num_requests": 200,
            "arrival": {"kind": "poisson", "rate": 20.0},
            "models": {"llama-3-8b": 1.0},
            "lengths": {"prompt": {"kind": "fixed", "tokens": 2000},
                        "output": {"kind": "fixed", "tokens": 100}},
        },
        "instances": [{"model": "llama-3-8b", "accelerator": "A100-80GB", "count": 2}],
        "router": {"name": "test-least-kv"},
    }  # fmt: skip
    result = simulate(config)
    assert result.summary["num_completed"] == 200
    shares = [v["num_generated_tokens"] for v in result.summary["instances"].values()]
    assert min(shares) > 0.3 * sum(shares)  # it balances by KV usage
    gateway = parse_config(
        {"router": {"name": "test-least-kv"},
         "backends": [{"name": n, "url": "http://127.0.0.1:9", "models": ["m"]} for n in "ab"]}
    )  # fmt: skip
    door = front_door_of(gateway)
    views = [InstanceView("a", "m", "x", kv_usage=None, num_outstanding=2),
             InstanceView("b", "m", "x", kv_usage=None, num_outstanding=1)]  # fmt: skip
    decision = door.decide(Request(0, 0.0, "m", 10, 5, max_tokens=5), views, 0.0)
    assert decision == Route("b", None, "kv_usage unknown, by outstanding")


def test_every_module_of_the_routers_package_is_imported() -> None:
    """A router module added to sincere.policy.routers registers without an import line."""
    folder = Path(routers_pkg.__file__).parent
    modules = [p.stem for p in folder.glob("*.py") if not p.stem.startswith("_")]
    assert modules and all(f"sincere.policy.routers.{m}" in sys.modules for m in modules)


def test_every_shipped_router_has_a_row_in_the_docs_table() -> None:
    """docs/routers.md's table lists every router the package registers, and no other."""
    text = DOCS.read_text(encoding="utf-8")
    table = text.split("## The routers", 1)[1].split("\n## ", 1)[0]
    rows = set(re.findall(r"^\| `([a-z0-9-]+)` \|", table, re.M))
    shipped = {
        name
        for name in ROUTERS.names()
        if ROUTERS.get(name).__module__.startswith("sincere.policy.routers")
    }
    assert rows == shipped
