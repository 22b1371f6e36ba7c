"""The emulated engine's front end: the API process between a client and the engine.

An engine preset's :class:`~sincere.perf.execution.FrontEnd` is the time a client sees
beyond the engine; the simulator adds it to its figures (:mod:`sincere.sim.frontend`), the
emulator waits it out on the wall clock, so that the two agree under the same preset:

* :class:`Intake` -- a request reaches the engine ``request_s + prompt_token_s x prompt
  tokens`` after the emulator received it, in the order received (a request never
  overtakes the one received before it); with ``intake_servers``, after its turn on the
  API processes as well, which take one request at a time
  (:class:`~sincere.perf.execution.IntakeQueue`, as the simulator);
* :class:`Output` -- every token and every end of a request reaches its client
  ``output_s`` after the engine handed it out, in the order handed out (one timer for the
  whole engine, so a token never overtakes another).

No preset (``eager``) means no front end: both pass everything through at once. The HTTP
server itself is real; its own time (a millisecond or so) comes on top, as it would.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable

from sincere.perf.execution import FrontEnd, IntakeQueue


class Intake:
    """The wait between receiving a request and giving it to the engine."""

    def __init__(self, front: FrontEnd) -> None:
        self.front = front
        self._queue = IntakeQueue(front)  # the order received and the API processes

    def due_at(self, prompt_tokens: int, now: float) -> float:
        """Loop time a request of ``prompt_tokens`` received at loop time ``now`` reaches
        the engine (this books its turn: one call per request)."""
        return self._queue.done_at(now, prompt_tokens)

    async def wait(self, prompt_tokens: int) -> None:
        """Return once a request of ``prompt_tokens`` received now may reach the engine."""
        if self.front.request_s == 0.0 and self.front.prompt_token_s == 0.0:
            return
        now = asyncio.get_running_loop().time()
        delay = self.due_at(prompt_tokens, now) - now
        if delay > 0.0:
            await asyncio.sleep(delay)


class Output:
    """Calls that tell a client of its tokens and its end, each ``delay_s`` late, in order."""

    def __init__(self, delay_s: float, loop: asyncio.AbstractEventLoop) -> None:
        self.delay_s = delay_s
        self._loop = loop
        self._due: deque[tuple[float, Callable[[], None]]] = deque()  # (loop time, call)
        self._timer: asyncio.TimerHandle | None = None
        self._closed = False

    def call(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` ``delay_s`` from now, after every call made before it (at once when
        there is no delay or once closed)."""
        if self.delay_s == 0.0 or self._closed:
            fn()
            return
        self._due.append((self._loop.time() + self.delay_s, fn))
        if self._timer is None:
            self._timer = self._loop.call_at(self._due[0][0], self._run)

    def close(self) -> None:
        """Run every pending call now; later ones run at once (the engine has stopped)."""
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        while self._due:
            self._due.popleft()[1]()

    def _run(self) -> None:
        """Run the calls that are due, then wait for the next."""
        self._timer = None
        due = self._due
        if not due:
            return
        now = max(self._loop.time(), due[0][0])  # the timer may fire a hair early
        while due and due[0][0] <= now:
            due.popleft()[1]()
        if due:
            self._timer = self._loop.call_at(due[0][0], self._run)
