"""The face the control plane sees of the data plane: a :class:`Fleet` of instances.

The controller adds and removes backends, lists the instances (of a model, or all) with
their health, and reads the observed load; the pool of several models
(:mod:`~sincere.serve.control.pool`) also puts instances to sleep in routing and wakes
them, counts the requests held and is told of each -- nothing else. The gateway
(:class:`~sincere.serve.gateway.server.Gateway`) implements this protocol without
importing it (structural typing); :mod:`sincere.serve.app` hands the gateway to the
controller as a ``Fleet``, where the type checker verifies that it fits.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from typing import Protocol

from sincere.optimize.scaling import LoadSummary
from sincere.serve.backends.config import BackendConfig

__all__ = ["Fleet", "Instance"]


class Instance(Protocol):
    """What the control plane reads of one instance."""

    @property
    def name(self) -> str: ...

    @property
    def emulated(self) -> bool:
        """Whether the controller started it (only those are stopped by a plan)."""
        ...

    @property
    def url(self) -> str: ...

    @property
    def models(self) -> Collection[str]:
        """The public model names it serves."""
        ...

    @property
    def kind(self) -> str:
        """Its API kind (``openai``, ``ollama``)."""
        ...

    @property
    def num_in_flight(self) -> int: ...

    @property
    def last_done_at(self) -> float | None:
        """Loop time it last finished a request (None: never)."""
        ...


class Fleet(Protocol):
    """The data plane, as the control plane may act on it."""

    def add_backend(self, config: BackendConfig, *, emulated: bool = False) -> Instance:
        """Put a backend into routing (``emulated``: started by the controller)."""
        ...

    async def remove_backend(self, name: str) -> Instance:
        """Take a backend out of routing once its requests in flight are done."""
        ...

    def set_routable(self, name: str, routable: bool) -> None:
        """Take an instance out of routing, its models still served (their requests wait
        in the gateway's queue), or put it back (the queue drains into it)."""
        ...

    def num_queued(self, model: str) -> int:
        """Requests of ``model`` waiting in the gateway's queue."""
        ...

    def on_held(self, listener: Callable[[str], None]) -> None:
        """Call ``listener`` with the model of every request the gateway queues."""
        ...

    def instances_of(self, model: str | None = None) -> Sequence[Instance]:
        """The instances serving ``model`` (every instance when None), in the order added."""
        ...

    def instance_health(self) -> dict[str, str]:
        """Each instance's circuit-breaker state (``closed``, ``open``, ``half_open``)."""
        ...

    def observed_load(self) -> list[LoadSummary]:
        """Load per (model, tier) over the observation window ending now."""
        ...
