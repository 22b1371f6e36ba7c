"""The gateway's read-only pages, each showing a caller only what it may see.

* ``GET /v1/models`` -- the union of the instances' models; with keys, a client key's
  allowed ones (401 without a key);
* ``GET /health`` -- ``ok`` while an instance's breaker is not open, else ``degraded``;
  instance states (and ``spec_acceptance``: a speculating engine's observed acceptance
  rate, from its scraped ``vllm:spec_decode_*`` counters; ``spec_decode``: those counters,
  the mean acceptance length and the acceptance its router estimate uses,
  :mod:`.spec_decode`) to admin keys only when keys are on; the shared state store's
  health when there is one (unhealthy: ``degraded``);
* ``GET /metrics`` -- the gateway's Prometheus text (:mod:`.metrics`) and, with keys, the
  tenants' (:mod:`sincere.serve.security.metrics`): an admin or metrics key's, or open
  without tenant labels under ``security.metrics_access: aggregate``; with each
  speculating instance's measured acceptance gauges (:mod:`.spec_decode`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web

from sincere.serve.gateway.auth import GatewayAuth, refusal_response
from sincere.serve.gateway.breaker import STATE_CODES
from sincere.serve.gateway.config import GatewayConfig
from sincere.serve.gateway.dispatch import Dispatcher
from sincere.serve.gateway.edge import EdgeLimits
from sincere.serve.gateway.metrics import GatewayMetrics
from sincere.serve.gateway.spec_decode import SpecCounts, spec_metrics_lines
from sincere.serve.protocol import models_response
from sincere.serve.security.policy import Refusal


class StatusPages:
    """The handlers of ``/v1/models``, ``/health`` and ``/metrics``."""

    def __init__(
        self,
        config: GatewayConfig,
        dispatcher: Dispatcher,
        auth: GatewayAuth,
        metrics: GatewayMetrics,
        edge: EdgeLimits,
        refused: Callable[[Refusal, str], web.Response],
        now: Callable[[], float],
    ) -> None:
        self.config = config
        self.dispatcher = dispatcher  # instances, their breakers and queues
        self.auth = auth  # who the caller is
        self.metrics = metrics
        self.edge = edge  # connections open and refused
        self.refused = refused  # a key check's refusal as the client's (counted) answer
        self.now = now  # the gateway's clock (loop time)
        # more of the page, rendered at each scrape (e.g. the control plane's autoscaler)
        self.extra_metrics: list[Callable[[], str]] = []

    def instance_health(self) -> dict[str, str]:
        """Each instance's circuit-breaker state now."""
        now = self.now()
        return {s.name: s.breaker.state(now).value for s in self.dispatcher.instances.values()}

    def spec_counts(self) -> dict[str, SpecCounts]:
        """Each speculating instance's vLLM counters as last scraped; instances without a
        fresh reading are left out."""
        now, out = self.now(), {}
        for s in self.dispatcher.instances.values():
            sample = s.fresh_sample(now, self.dispatcher.max_age_s)
            if sample is not None and sample.spec is not None:
                out[s.name] = sample.spec
        return out

    def spec_acceptance(self) -> dict[str, float]:
        """Each speculating instance's observed acceptance rate (accepted / drafted tokens,
        its vLLM counters as last scraped); instances without a fresh reading are left out."""
        rates = {name: c.acceptance_rate for name, c in self.spec_counts().items()}
        return {name: rate for name, rate in rates.items() if rate is not None}

    def spec_decode(self) -> dict[str, dict[str, Any]]:
        """``/health``'s ``spec_decode``: each speculating instance's measured figures and
        the acceptance its step-time estimate runs at (``declared`` or ``measured``;
        ``none`` without a declared deployment that speculates)."""
        out: dict[str, dict[str, Any]] = {}
        instances = self.dispatcher.instances
        for name, counts in self.spec_counts().items():
            estimate = instances[name].acceptance if name in instances else None
            used = "none" if estimate is None else "measured" if estimate.measured else "declared"
            out[name] = {**counts.as_json(), "estimate_acceptance": used}
        return out

    async def models(self, http_req: web.Request) -> web.Response:
        """The models served; with keys, a client key's only (401 without one)."""
        names = self.dispatcher.served
        key = self.auth.authenticate(http_req.headers)
        if isinstance(key, Refusal):
            return self.refused(key, self.config.default_tier)
        if key is not None and key.spec.models is not None:
            names = names & key.spec.models
        return web.json_response(models_response(sorted(names), int(time.time())))

    def _is_admin(self, http_req: web.Request) -> bool:
        """Whether the caller may see the gateway's internals (always without keys)."""
        return not isinstance(self.auth.admin(http_req.headers, ""), Refusal)

    async def health(self, http_req: web.Request) -> web.Response:
        """Up or degraded; instance states to admins only when keys are on."""
        states = self.instance_health()
        ok = any(v != "open" for v in states.values())
        out: dict[str, Any] = {"status": "ok" if ok else "degraded"}
        if self.auth.store is None or self._is_admin(http_req):
            out["instances"] = states
            rates = self.spec_acceptance()
            if rates:
                out["spec_acceptance"] = rates
                out["spec_decode"] = self.spec_decode()
        state = await asyncio.to_thread(self.auth.state_health) if self.auth.shared else None
        if state is not None:
            out["state"] = state
            if not state["ok"]:
                out["status"] = "degraded"
        return web.json_response(out)

    async def metrics_page(self, http_req: web.Request) -> web.Response:
        """Prometheus text; with keys an admin or metrics key's (``aggregate``: tenant-free)."""
        tenants, every_tenant = True, False
        if self.auth.store is not None:
            grant = self.auth.metrics_reader(http_req.headers)
            if isinstance(grant, Refusal):
                if self.config.security.metrics_access != "aggregate":
                    return refusal_response(grant)
                tenants = False
            else:  # ?tenants=all: an admin's page without the tenant cap
                wants_all = http_req.query.get("tenants") == "all"
                every_tenant = wants_all and grant.actor.startswith("admin:")
        now = self.now()
        d = self.dispatcher
        text = self.metrics.render(
            {m: len(q) for m, q in d.queues.items()},
            {s.name: s.num_in_flight for s in d.instances.values()},
            {s.name: STATE_CODES[s.breaker.state(now)] for s in d.instances.values()},
            self.edge.refused,
            self.edge.num_open,
        ) + (self.auth.metrics_text(every_tenant) if tenants else "")
        text += spec_metrics_lines(self.spec_counts().items())
        text += "".join(render() for render in self.extra_metrics)
        return web.Response(text=text, content_type="text/plain", charset="utf-8")
