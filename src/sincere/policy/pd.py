"""Prefill/decode disaggregation as one clock-free policy: decide, then route each phase.

For a request of a model served by prefill and decode instances, :class:`PDFrontDoor`
answers in three steps, from read-only views as every policy here:

1. **Decide** (:class:`Decider`): disaggregate or not. ``always`` and ``never`` need no
   input. ``threshold`` is llm-d's prefix-based P/D decider: the decode front door picks
   the decode instance first, and the prompt tokens not expected in *that* instance's
   prefix cache are compared with ``min_uncached_tokens``; below it the request is served
   whole on that decode instance (:class:`Local`: a mostly cached prompt is cheaper to
   prefill where it decodes, and it is cached there). The expected hit is the longest
   prefix of the prompt's block keys that instance prefilled itself before (the
   approximate :class:`~sincere.policy.routers._prefix_index.PrefixIndex` prefix-aware
   routers keep), so the decision needs no engine round trip. KV received from a prefill
   instance is not counted: the engines do not cache it.
2. **Prefill**: the prefill front door (a :class:`~sincere.policy.front_door.FrontDoor`
   with the prefill router; prefix-aware by default) picks among the prefill instances.
3. **Decode**: the decode front door picks among the decode instances (for ``threshold``
   before step 1).

Each phase's router is told its outcome (:meth:`PDFrontDoor.observe_prefill`, the time
to the first token on the prefill instance; :meth:`PDFrontDoor.observe_decode`, the whole
request on the decode instance), so routers that learn do so from both pools.

A request not disaggregated by ``always`` / ``never`` goes the colocated way (the
driver's own front door); one kept by ``threshold`` goes to its :class:`Local` instance.
While no prefill instance is healthy (a live pool whose breakers are open: simulated
instances are always healthy) every request goes the colocated way.

Roles. Every instance has one of :data:`ROLES`: ``prefill`` or ``decode`` (a phase of
disaggregated requests) or ``both`` (whole requests; the default). The rules every path
applies, the simulator and the gateway alike: a model with instances of one phase role
needs instances of the other (:func:`missing_phase`), and the colocated way serves a
request on its model's ``both`` instances, else on its decode ones, which then prefill it
too, as llm-d's decode pods do (:func:`colocated_role`).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import Literal, TypeAlias

from sincere.core.errors import ConfigError
from sincere.core.request import Request
from sincere.core.types import Seconds
from sincere.policy.front_door import FrontDoor, Hold, Reject, Route, build_front_door
from sincere.policy.front_door_config import AdmissionConfig
from sincere.policy.pd_config import DeciderConfig, PDRoutingConfig
from sincere.policy.reads import Reads
from sincere.policy.router_base import InstanceView, Outcome
from sincere.policy.routers._prefix_index import PrefixIndex, prompt_keys

DECIDER_INDEX_TOKENS = 1 << 25
"""Prompt tokens per decode instance the decider's prefix index remembers."""

Role: TypeAlias = Literal["prefill", "decode", "both"]
ROLES: tuple[Role, ...] = ("prefill", "decode", "both")
"""An instance's part: one phase of disaggregated requests, or whole requests (``both``)."""
PHASE_ROLES: frozenset[str] = frozenset(("prefill", "decode"))
"""The roles of a disaggregated model's two pools."""


def missing_phase(roles: Collection[str]) -> Role | None:
    """The phase role a model whose instances have ``roles`` lacks (it has the other one);
    None when it has both phases or neither (then it is served whole)."""
    if "prefill" in roles and "decode" not in roles:
        return "decode"
    if "decode" in roles and "prefill" not in roles:
        return "prefill"
    return None


def colocated_role(roles: Iterable[str]) -> Role:
    """The role of the instances a request is served whole on, among a model's instances
    of ``roles``: ``both`` when it has any, else ``decode`` (which then prefill it too)."""
    return "both" if "both" in roles else "decode"


@dataclass(frozen=True, slots=True)
class Decider:
    """Whether to disaggregate a request, from its uncached prompt tokens."""

    name: str  # always, never or threshold
    min_uncached_tokens: int = 0

    def disaggregate(self, uncached_prompt_tokens: int) -> bool:
        """The decision for a prompt with ``uncached_prompt_tokens`` to compute."""
        if self.name == "always":
            return True
        if self.name == "never":
            return False
        return uncached_prompt_tokens >= self.min_uncached_tokens


def build_decider(config: DeciderConfig) -> Decider:
    """The decider of ``config`` (the schema already limited the names)."""
    return Decider(config.name, config.min_uncached_tokens)


@dataclass(frozen=True, slots=True)
class PDRoute:
    """Prefill on ``prefill``, then decode on ``decode``."""

    prefill: Route
    decode: Route
    uncached_prompt_tokens: int  # what the decider read


@dataclass(frozen=True, slots=True)
class Local:
    """Not disaggregated: prefill and decode on the decode instance ``route`` chose."""

    route: Route
    uncached_prompt_tokens: int  # what the decider read, against that instance's cache


class PDFrontDoor:
    """The decider and the two per-phase front doors (see the module docstring)."""

    def __init__(self, decider: Decider, prefill: FrontDoor, decode: FrontDoor) -> None:
        self.decider = decider
        self.prefill = prefill
        self.decode = decode
        self.index = PrefixIndex(DECIDER_INDEX_TOKENS)

    def uncached_tokens(self, request: Request, decode_instance: str) -> int:
        """Prompt tokens not expected in ``decode_instance``'s prefix cache."""
        keys = prompt_keys(request)
        if not keys:
            return request.prompt_tokens
        best = self.index.matched_blocks(decode_instance, keys)
        return request.prompt_tokens - best * request.block_tokens

    def decide(
        self,
        request: Request,
        prefill: Sequence[InstanceView],
        decode: Sequence[InstanceView],
        now: Seconds,
    ) -> PDRoute | Local | Reject | Hold | None:
        """Both phases' instances, the decode instance to serve it whole (:class:`Local`),
        a phase's rejection or hold (no room in it: the driver queues the request, as for
        :class:`~sincere.policy.front_door.Hold`), or ``None``: serve it colocated -- the
        decider's answer, or no prefill instance healthy (a prefill pool that is down does
        not hold requests its decode pool can serve whole)."""
        if not decode or not any(v.healthy for v in prefill) or self.decider.name == "never":
            return None  # nowhere to prefill: a decode instance prefills it itself
        if self.decider.name == "always":
            return self._split(request, prefill, decode, now, request.prompt_tokens)
        second = self.decode.decide(request, decode, now)
        if not isinstance(second, Route):
            return second
        uncached = self.uncached_tokens(request, second.instance)
        if not self.decider.disaggregate(uncached):
            keys = prompt_keys(request)
            self.index.add(second.instance, keys, request.block_tokens)  # prefilled there
            return Local(second, uncached)
        first = self.prefill.decide(request, prefill, now)
        if not isinstance(first, Route):
            return first
        return PDRoute(first, second, uncached)

    def _split(
        self,
        request: Request,
        prefill: Sequence[InstanceView],
        decode: Sequence[InstanceView],
        now: Seconds,
        uncached: int,
    ) -> PDRoute | Reject | Hold:
        """Prefill, then decode instance (``always``)."""
        first = self.prefill.decide(request, prefill, now)
        if not isinstance(first, Route):
            return first
        second = self.decode.decide(request, decode, now)
        if not isinstance(second, Route):
            return second
        return PDRoute(first, second, uncached)

    @property
    def reads(self) -> Reads:
        """What either phase's decision depends on."""
        return self.prefill.reads | self.decode.reads

    @property
    def learns_from_outcomes(self) -> bool:
        """Whether a phase's router learns from outcomes (drivers may skip them if not)."""
        return self.prefill.router.learns_from_outcomes or self.decode.router.learns_from_outcomes

    def observe_prefill(self, outcome: Outcome) -> None:
        """A disaggregated request's prefill ended on ``outcome.instance``: its first token
        (``e2e_s`` is the time to it, ``output_tokens`` 1); the prefill router learns."""
        if self.prefill.wants_outcome(outcome.request.id):
            self.prefill.observe(outcome)

    def observe_decode(self, outcome: Outcome) -> None:
        """A disaggregated request finished on its decode instance ``outcome.instance``
        (TTFT and E2E of the whole request); the decode router learns."""
        if self.decode.wants_outcome(outcome.request.id):
            self.decode.observe(outcome)


def build_pd_front_door(config: PDRoutingConfig, seed: int) -> PDFrontDoor:
    """The P/D policy of ``config``; each phase's router draws from its own stream."""
    off = AdmissionConfig()
    doors = []
    for k, (where, router) in enumerate(
        (("prefill_router", config.prefill_router), ("decode_router", config.decode_router))
    ):
        try:
            doors.append(build_front_door(router, off, seed + 1 + k))
        except ConfigError as exc:
            raise ConfigError(str(exc), where=f"disaggregation.{where}") from None
    return PDFrontDoor(build_decider(config.decider), doors[0], doors[1])
