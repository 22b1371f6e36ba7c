"""Sleep mode, as vLLM's development API (``VLLM_SERVER_DEV_MODE=1``) has it.

Routes: ``POST /sleep?level=1|2`` (default 1), ``POST /wake_up``, ``GET /is_sleeping``
(``{"is_sleeping": bool}``). vLLM's level 1 moves the weights to host memory and drops
the KV cache; level 2 drops both (a wake then needs the weights loaded again). No GPU
memory is freed here: what is emulated is the *time* a wake takes and what the server
answers meanwhile.

* **Wake time**, per level: ``sleep.level1_wake_s`` / ``sleep.level2_wake_s`` when
  given, else one GPU's share of the weight bytes over ``sleep.host_gbps`` (level 1: a
  copy back from host memory) or ``sleep.load_gbps`` (level 2: a load from storage,
  the simulator's default load bandwidth). ``POST /wake_up`` answers once awake;
  ``is_sleeping`` stays true until then.
* **Generation while asleep or waking**: ``503`` naming the state. vLLM itself has no
  guard (a request sent to a sleeping vLLM server has been reported to crash it with a
  CUDA error), so the emulator refuses with an error a client or gateway retries on
  another instance rather than holding the request.
* **Refused changes** (``409``): sleeping with requests in flight (vLLM would drop their
  KV cache under them), sleeping while a wake is under way. Sleeping again at a level
  already reached is a no-op, as is waking an awake engine. A ``level`` other than 1 or
  2 is ``400``, as are wake ``tags`` (vLLM's partial wake is not emulated).

The emulator keeps its prefix-cache contents across a sleep (vLLM forgets them at
both levels); with no request in flight its KV cache holds nothing else.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from sincere.serve.protocol import ProtocolError

__all__ = ["DEFAULT_HOST_GBPS", "DEFAULT_LOAD_GBPS", "SleepConfig", "SleepMode", "wake_times"]

DEFAULT_HOST_GBPS = 20.0
"""Host-to-GPU copy bandwidth per GPU (GB/s) of a level-1 wake: pinned memory over
PCIe 4.0 x16 (about 25 GB/s peak, less in practice)."""

DEFAULT_LOAD_GBPS = 5.0
"""Weight load bandwidth per GPU (GB/s) of a level-2 wake: the simulator's default for a
model load (``autoscaling.load_gbps``): a local NVMe or page-cache read."""

LEVELS = (1, 2)


class SleepConfig(BaseModel):
    """How long an emulated engine takes to wake (see the module docstring)."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)
    level1_wake_s: float | None = Field(None, ge=0, le=86_400)  # None: weights / host_gbps
    level2_wake_s: float | None = Field(None, ge=0, le=86_400)  # None: weights / load_gbps
    host_gbps: float = Field(DEFAULT_HOST_GBPS, gt=0, le=1e5)  # per GPU, host -> GPU copy
    load_gbps: float = Field(DEFAULT_LOAD_GBPS, gt=0, le=1e5)  # per GPU, storage -> GPU


def wake_times(config: SleepConfig, weight_bytes_per_gpu: float) -> dict[int, float]:
    """Seconds a wake takes after a sleep at each level."""
    level1, level2 = config.level1_wake_s, config.level2_wake_s
    if level1 is None:
        level1 = weight_bytes_per_gpu / (config.host_gbps * 1e9)
    if level2 is None:
        level2 = weight_bytes_per_gpu / (config.load_gbps * 1e9)
    return {1: level1, 2: level2}


class SleepMode:
    """One engine's sleep state and its three routes.

    ``num_in_flight`` counts the engine's requests (none may be in flight to sleep);
    ``on_change`` is told the new level (None: awake), e.g. to set the metrics' gauge.
    """

    def __init__(
        self,
        wake_s: dict[int, float],
        num_in_flight: Callable[[], int],
        on_change: Callable[[int | None], None],
    ) -> None:
        self.wake_s = wake_s
        self.num_in_flight = num_in_flight
        self.on_change = on_change
        self.level: int | None = None  # None: awake
        self._waking: asyncio.Task[None] | None = None

    @property
    def is_sleeping(self) -> bool:
        """Asleep, or waking (as vLLM reports it until the wake is done)."""
        return self.level is not None

    def check_awake(self) -> None:
        """Raise ``503`` while asleep or waking (a generation request is refused)."""
        if self.level is None:
            return
        state = "waking up" if self._waking is not None else f"asleep (level {self.level})"
        raise ProtocolError(503, f"the engine is {state}; retry after POST /wake_up has answered")

    def add_routes(self, app: web.Application) -> None:
        """Mount ``/sleep``, ``/wake_up`` and ``/is_sleeping`` on ``app``."""
        app.router.add_post("/sleep", self._sleep)
        app.router.add_post("/wake_up", self._wake_up)
        app.router.add_get("/is_sleeping", self._is_sleeping)

    async def _sleep(self, request: web.Request) -> web.Response:
        raw = request.query.get("level", "1")
        if raw not in {str(level) for level in LEVELS}:
            return _error(400, f"level must be 1 or 2; got {raw!r}", "level")
        level = int(raw)
        if self._waking is not None:
            return _error(409, "the engine is waking up; sleep after the wake has answered")
        num = self.num_in_flight()
        if num:
            return _error(409, f"{num} request(s) in flight; sleep when none is")
        if self.level is None or level > self.level:  # level 2 after 1 drops the weights too
            self.level = level
            self.on_change(level)
        return web.Response(status=200)

    async def _wake_up(self, request: web.Request) -> web.Response:
        if "tags" in request.query:
            return _error(400, "a partial wake (tags) is not emulated; wake without tags", "tags")
        if self.level is not None and self._waking is None:
            self._waking = asyncio.get_running_loop().create_task(self._wake(self.level))
        if self._waking is not None:
            await asyncio.shield(self._waking)
        return web.Response(status=200)

    async def _wake(self, level: int) -> None:
        try:
            await asyncio.sleep(self.wake_s[level])
            self.level = None
            self.on_change(None)
        finally:
            self._waking = None

    async def _is_sleeping(self, request: web.Request) -> web.Response:
        return web.json_response({"is_sleeping": self.is_sleeping})


def _error(status: int, message: str, param: str | None = None) -> web.Response:
    """vLLM's error body."""
    kind = "BadRequestError" if status == 400 else "ConflictError"
    body = {"error": {"message": message, "type": kind, "param": param, "code": status}}
    return web.json_response(body, status=status)
