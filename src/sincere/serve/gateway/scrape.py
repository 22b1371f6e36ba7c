"""Reading the engines' load in the background: what the gateway's views are built from.

Every ``scrape.interval_ms`` the gateway asks each instance that has a load source for
its load: sincere's JSON engine load (``load_path``: the emulator's ``/sincere/load``,
every field of the load record) or a vLLM ``/metrics`` page (``metrics_path``: running,
waiting and KV usage only; the rest stays unknown). A failed read keeps the previous
sample, which then goes stale (:mod:`sincere.serve.gateway.instances`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable

from sincere.serve.gateway.config import ScrapeConfig
from sincere.serve.gateway.instances import (
    InstanceState,
    LoadSample,
    parse_engine_load,
    parse_vllm_metrics,
)

Parser = Callable[[str, float], LoadSample | None]


def load_source(state: InstanceState) -> tuple[str, Parser] | None:
    """Where ``state``'s load is read and how it is parsed (None: nowhere)."""
    cfg = state.backend.config
    if cfg.load_path is not None:
        return cfg.load_path, parse_engine_load
    if cfg.metrics_path is not None:
        return cfg.metrics_path, parse_vllm_metrics
    return None


class LoadScraper:
    """Reads every instance's load into its ``sample``, on the gateway's clock."""

    def __init__(
        self,
        config: ScrapeConfig,
        instances: Callable[[], Iterable[InstanceState]],
        clock: Callable[[], float],
    ) -> None:
        self.config = config
        self.instances = instances  # the instances now (they come and go)
        self.clock = clock

    async def run(self) -> None:
        """Scrape every instance with a load source, then sleep; until cancelled."""
        interval_s = self.config.interval_ms / 1000.0
        while True:
            states = [s for s in self.instances() if load_source(s)]
            await asyncio.gather(*(self.scrape(s) for s in states))
            await asyncio.sleep(interval_s)

    async def scrape(self, state: InstanceState) -> None:
        """Read one engine's load into ``state.sample`` (failures keep the old one)."""
        source = load_source(state)
        if source is None:
            return
        path, parse = source
        try:
            text = await state.backend.get_text(path, self.config.timeout_s)
        except Exception:  # any failure: keep the previous sample, which will go stale
            return
        sample = parse(text, self.clock())
        if sample is not None:
            state.take_sample(sample)
