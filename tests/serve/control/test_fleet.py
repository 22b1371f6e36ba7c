"""The controller drives any Fleet: here an in-memory one, with no gateway and no HTTP."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import pytest

from sincere.core.errors import ConfigError
from sincere.optimize.scaling import LoadSummary
from sincere.serve.backends.config import BackendConfig
from sincere.serve.control.config import ControllerConfig, PlanningConfig
from sincere.serve.control.controller import ConflictError, Controller
from sincere.serve.control.fleet import Fleet


@dataclass
class Member:
    """One instance of the in-memory fleet."""

    name: str
    url: str
    models: tuple[str, ...]
    kind: str = "openai"
    emulated: bool = False
    num_in_flight: int = 0
    last_done_at: float | None = None
    routable: bool = True


@dataclass
class MemoryFleet:
    """A Fleet in a list: what the controller added, removed and read."""

    members: list[Member] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    loads: list[LoadSummary] = field(default_factory=list)

    def add_backend(self, config: BackendConfig, *, emulated: bool = False) -> Member:
        member = Member(config.name, config.url, tuple(config.models), emulated=emulated)
        self.members.append(member)
        return member

    async def remove_backend(self, name: str) -> Member:
        member = next(m for m in self.members if m.name == name)
        self.members.remove(member)
        self.removed.append(name)
        return member

    def instances_of(self, model: str | None = None) -> Sequence[Member]:
        return [m for m in self.members if model is None or model in m.models]

    def set_routable(self, name: str, routable: bool) -> None:
        next(m for m in self.members if m.name == name).routable = routable

    def num_queued(self, model: str) -> int:
        return 0

    def on_held(self, listener: Callable[[str], None]) -> None:
        pass

    def instance_health(self) -> dict[str, str]:
        return {m.name: "closed" for m in self.members}

    def observed_load(self) -> list[LoadSummary]:
        return list(self.loads)


def controller(fleet: MemoryFleet, **cfg: object) -> Controller:
    checked: Fleet = fleet  # the type checker verifies that it fits the protocol
    config = ControllerConfig.model_validate({"allowed_upstreams": ["127.0.0.1:*"], **cfg})
    return Controller(checked, config, PlanningConfig(), "default")


def test_a_plan_stops_only_emulated_replicas_newest_first() -> None:
    """apply() stops surplus emulated instances (newest first); a URL instance stays."""
    urls = {i: f"http://127.0.0.1:900{i}" for i in (1, 2, 3)}
    emulated = [Member(f"m-emu-{i}", url, ("m",), emulated=True) for i, url in urls.items()]
    fleet = MemoryFleet([Member("m-1", "http://127.0.0.1:8001", ("m",)), *emulated])
    c = controller(fleet)
    assert c.scaling({"m": 1}).stops == ("m-emu-3", "m-emu-2")
    actions = asyncio.run(c.apply({"m": 1}))
    assert actions == ["stopped m-emu-3", "stopped m-emu-2"]
    assert [m.name for m in fleet.members] == ["m-1", "m-emu-1"]


def test_deploy_by_url_adds_a_backend_through_the_fleet() -> None:
    """A deployed URL becomes one add_backend call; a second needs join, and a cap holds."""
    fleet = MemoryFleet()
    c = controller(fleet, max_instances=2)
    added = asyncio.run(c.deploy("m", "http://127.0.0.1:8001"))
    assert added.name == "m-1" and fleet.members[0].url == "http://127.0.0.1:8001"
    with pytest.raises(ConflictError, match="already served"):
        asyncio.run(c.deploy("m", "http://127.0.0.1:8002"))
    asyncio.run(c.deploy("m", "http://127.0.0.1:8002", join=True))
    with pytest.raises(ConflictError, match="max_instances"):
        asyncio.run(c.deploy("n", "http://127.0.0.1:8003"))


def test_loads_come_from_the_fleet_with_unseen_models_at_zero() -> None:
    """Observed load is the fleet's; a registered model never seen is planned at zero load."""
    seen = LoadSummary("m", "default", 12.0, 100.0, 50.0, 12)
    fleet = MemoryFleet(loads=[seen])
    c = controller(fleet)
    c.register("quiet")
    loads = c.loads()
    assert loads[0] == seen
    assert loads[1].model == "quiet" and loads[1].rate_per_min == 0.0
    with pytest.raises(ConfigError, match="unknown instance"):
        asyncio.run(c.remove("ghost"))
