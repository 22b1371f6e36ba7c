"""Observed load per (model, tier): what the planner sizes the fleet for.

Every finished request adds ``(finished_at, prompt_tokens, output_tokens)`` to its
(model, tier) window; :meth:`ObservedLoad.summary` gives, over the last ``window_s``
seconds, the arrival rate (requests per minute, Inferno's unit) and the mean prompt
and output lengths (:class:`~sincere.core.load.LoadSummary`, what the scaling decision
of :mod:`sincere.optimize.scaling` takes). Old entries are dropped as new ones come, so
memory is bounded by the traffic of one window.
"""

from __future__ import annotations

from collections import deque

from sincere.core.load import LoadSummary

__all__ = ["LoadSummary", "ObservedLoad"]


class ObservedLoad:
    """Sliding windows of finished requests, one per (model, tier)."""

    def __init__(self, window_s: float, started_at: float) -> None:
        self.window_s = window_s
        self.started_at = started_at
        self._windows: dict[tuple[str, str], deque[tuple[float, int, int]]] = {}

    def restart(self, started_at: float) -> None:
        """Forget every window; the observation starts (again) at ``started_at``."""
        self.started_at = started_at
        self._windows.clear()

    def record(self, model: str, tier: str, at: float, prompt: int, output: int) -> None:
        """Add one finished request."""
        window = self._windows.get((model, tier))
        if window is None:
            window = self._windows[(model, tier)] = deque()
        window.append((at, prompt, output))
        cutoff = at - self.window_s
        while window and window[0][0] < cutoff:
            window.popleft()

    def summary(self, now: float) -> list[LoadSummary]:
        """Rates and mean lengths per (model, tier) over the window ending at ``now``."""
        span = max(1e-9, min(self.window_s, now - self.started_at))
        out = []
        for (model, tier), window in sorted(self._windows.items()):
            recent = [e for e in window if e[0] >= now - self.window_s]
            n = len(recent)
            avg_in = sum(e[1] for e in recent) / n if n else 0.0
            avg_out = sum(e[2] for e in recent) / n if n else 0.0
            out.append(LoadSummary(model, tier, 60.0 * n / span, avg_in, avg_out, n))
        return out
