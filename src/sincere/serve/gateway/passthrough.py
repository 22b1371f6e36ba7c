"""vLLM's ``POST /tokenize`` and ``POST /detokenize``, relayed to an instance of the model.

vLLM's OpenAI server tokenizes with the model's own tokenizer at these two paths
(``vllm bench serve`` and some clients ask for them); the gateway has no tokenizer of
every model, so it relays the body to one healthy instance of the body's ``model``
(the first in routing order whose breaker is not open), with the model renamed to the
instance's own name, and passes its answer back unchanged. Nothing is generated, so
nothing is charged or admitted; with keys on a client key that may use the model is
needed (401 / 403 as for a completion). A model served only by Ollama instances (whose
API has no such path) is answered 501; an engine without the path answers its own 404,
passed on. Bad input is the usual 400 / 404 / 413 with OpenAI's error object.
"""

from __future__ import annotations

import asyncio

import aiohttp
from aiohttp import web

from sincere.serve.gateway.auth import GatewayAuth
from sincere.serve.gateway.config import LimitsConfig
from sincere.serve.gateway.dispatch import Dispatcher
from sincere.serve.gateway.edge import EdgeLimits, read_body
from sincere.serve.gateway.instances import InstanceState
from sincere.serve.protocol import ProtocolError, dumps, error_body, loads
from sincere.serve.security.policy import Refusal

__all__ = ["Passthrough"]


class Passthrough:
    """Relays ``/tokenize`` and ``/detokenize`` to an instance of the body's model."""

    def __init__(
        self, auth: GatewayAuth, dispatcher: Dispatcher, limits: LimitsConfig, edge: EdgeLimits
    ) -> None:
        self.auth = auth
        self.dispatcher = dispatcher
        self.limits = limits
        self.edge = edge

    async def handle(self, http_req: web.Request) -> web.Response:
        """Check the key and the body, relay it, pass the instance's answer back."""
        key = self.auth.authenticate(http_req.headers)
        if isinstance(key, Refusal):
            return _json(key.status, dumps(key.body()), dict(key.headers))
        try:
            body = await self._body(http_req)
            model = str(body["model"])  # checked: a served model's name
            if key is not None and key.spec.models is not None and model not in key.spec.models:
                raise ProtocolError(
                    403, f"model: got {model!r}; this API key may not use it",
                    param="model", code="model_not_allowed", type="permission_error",
                )  # fmt: skip
            state = self._instance(model)
            body["model"] = state.backend.models.get(model, model)
            return await _relay(state, http_req.path, dumps(body))
        except ProtocolError as exc:
            return _json(exc.status, exc.to_bytes())

    async def _body(self, http_req: web.Request) -> dict[str, object]:
        """The JSON body, with a served ``model`` (400 / 404 / 413 otherwise)."""
        raw = await read_body(http_req, self.limits, self.edge)
        try:
            body = loads(raw)
        except (ValueError, RecursionError):
            raise ProtocolError(
                400, "request body is not valid JSON; allowed: a JSON object"
            ) from None
        if not isinstance(body, dict):
            raise ProtocolError(400, "request body: allowed: a JSON object", param="body")
        model = body.get("model")
        served = self.dispatcher.served
        if not isinstance(model, str) or model not in served:
            raise ProtocolError(
                404 if isinstance(model, str) else 400,
                f"model: got {model!r}; allowed: {', '.join(sorted(served)) or 'none yet'}",
                param="model", code="model_not_found",
            )  # fmt: skip
        return body

    def _instance(self, model: str) -> InstanceState:
        """The first instance of ``model`` that speaks the OpenAI API and is not open."""
        now = asyncio.get_running_loop().time()
        states = [
            s for s in self.dispatcher.by_model.get(model, ()) if s.backend.config.kind == "openai"
        ]
        if not states:
            raise ProtocolError(
                501, f"model {model!r} is served by Ollama instances only, whose API has no "
                "tokenize / detokenize; allowed: a model served by an OpenAI-compatible engine",
                code="unsupported_by_backend",
            )  # fmt: skip
        healthy = [s for s in states if s.breaker.state(now).value != "open"]
        if not healthy:
            raise ProtocolError(
                503, f"every instance of {model!r} is unavailable", code="no_instance"
            )
        return healthy[0]


async def _relay(state: InstanceState, path: str, payload: bytes) -> web.Response:
    """POST ``payload`` to ``state``'s ``path``; its answer as it is, or a 502 naming why."""
    backend = state.backend
    timeout = aiohttp.ClientTimeout(total=backend.config.read_timeout_s)
    try:
        post = backend.session.post(
            backend.url + path, data=payload, headers=backend.headers, timeout=timeout
        )
        async with post as response:
            answer = await response.read()
            return _json(response.status, answer)
    except (TimeoutError, aiohttp.ClientError, OSError) as exc:
        message = f"{state.name}: {path} failed ({type(exc).__name__})"
        return _json(502, dumps(error_body(message, type="server_error", code="upstream_error")))


def _json(status: int, body: bytes, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(status=status, body=body, content_type="application/json", headers=headers)
