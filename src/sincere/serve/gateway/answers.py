"""How the gateway answers what it refuses, as OpenAI's and vLLM's clients expect.

* **Retry hints.** Every refusal of the gateway's own (429, 502, 503, 504) carries
  ``Retry-After`` (seconds): the time after which a retry may succeed. A refusal that no
  quick retry can turn around -- admission's ``deadline_unreachable`` (the request cannot
  meet its deadline at the current load), a client's own deadline passed
  (``deadline_exceeded``), a spent budget (``insufficient_quota``, or a request's own
  ``sincere.budget_usd`` too small: ``budget_exceeded``) -- also carries
  ``x-should-retry: false``, the header the official OpenAI SDKs obey instead of their own
  retry rule, and a longer ``Retry-After`` for clients that only read that one.
* **Budgets.** A key whose budget cannot cover a request is answered **429** with type and
  code ``insufficient_quota``, as OpenAI answers a spent quota (``security.budget_status:
  402`` keeps the older Payment Required answer).
* **Unknown paths and methods** get OpenAI's error object as JSON (404 naming the paths
  served, 405 naming the methods allowed), never aiohttp's text page.
* **CORS.** With ``allowed_origins`` (as vLLM's ``--allowed-origins``) a browser page
  from one of those origins may call the API: preflight ``OPTIONS`` requests are
  answered, and answers carry ``Access-Control-Allow-Origin``.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Collection

from aiohttp import web
from aiohttp.typedefs import Middleware

from sincere.serve.gateway.dispatch import RefusalError
from sincere.serve.protocol import dumps, error_body
from sincere.serve.security.policy import Refusal

SHOULD_RETRY_HEADER = "x-should-retry"
"""Read by the official OpenAI SDKs: ``false`` stops their automatic retries."""

NO_QUICK_RETRY = frozenset(
    {"deadline_unreachable", "deadline_exceeded", "insufficient_quota", "budget_exceeded"}
)
"""Refusal codes no quick retry can turn around."""

SLOW_RETRY_AFTER_S = 30.0
"""``Retry-After`` of a refusal in :data:`NO_QUICK_RETRY`."""

SERVED_PATHS = (
    "POST /v1/completions",
    "POST /v1/chat/completions",
    "GET /v1/models",
    "POST /tokenize",
    "POST /detokenize",
    "GET /health",
    "GET /metrics",
)
"""What the gateway serves (plus ``/admin`` with the controller), named in its 404s."""

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def retry_headers(code: str, retry_after_s: float) -> dict[str, str]:
    """``Retry-After`` (whole seconds, at least 1) and, for codes in :data:`NO_QUICK_RETRY`,
    ``x-should-retry: false`` with :data:`SLOW_RETRY_AFTER_S`."""
    if code in NO_QUICK_RETRY:
        return {
            "Retry-After": str(math.ceil(SLOW_RETRY_AFTER_S)),
            SHOULD_RETRY_HEADER: "false",
        }
    return {"Retry-After": str(max(1, math.ceil(retry_after_s)))}


def refusal_answer(exc: RefusalError, cooldown_s: float) -> web.Response:
    """The gateway's own refusal (429/502/503/504) as OpenAI's error object with retry hints:
    a retry may succeed in a second, or (no instance up) once a breaker's ``cooldown_s``
    has passed."""
    kind = "rate_limit_error" if exc.status == 429 else "server_error"
    body = error_body(exc.message, type=kind, code=exc.code)
    wait_s = cooldown_s if exc.code == "no_instance" else 1.0
    return web.Response(
        status=exc.status,
        body=dumps(body),
        content_type="application/json",
        headers=retry_headers(exc.code, wait_s),
    )


def openai_app(max_body_bytes: int, allowed_origins: Collection[str]) -> web.Application:
    """An aiohttp app whose own errors are OpenAI JSON, with CORS for ``allowed_origins``."""
    middlewares = [json_errors()]
    if allowed_origins:
        middlewares.append(cors_preflight(allowed_origins))
    app = web.Application(client_max_size=max_body_bytes + 1, middlewares=middlewares)
    if allowed_origins:
        app.on_response_prepare.append(cors_headers(allowed_origins))
    return app


def key_refusal_answer(refusal: Refusal, budget_status: int = 429) -> web.Response:
    """A key check's refusal as the client's answer, a spent budget as ``budget_status``
    (429 ``insufficient_quota`` by default, as OpenAI; or 402)."""
    body = refusal.body()
    headers = dict(refusal.headers)
    status = refusal.status
    if status == 402:
        status = budget_status
        body["error"]["type"] = body["error"]["code"] = "insufficient_quota"
        headers.update(retry_headers("insufficient_quota", 0.0))
    return web.Response(
        status=status, body=dumps(body), content_type="application/json", headers=headers
    )


def json_errors(served: Collection[str] = SERVED_PATHS) -> Middleware:
    """Middleware: aiohttp's own 404 / 405 answers as OpenAI error JSON."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except web.HTTPNotFound as exc:
            if exc.content_type == "application/json":  # a handler's own JSON 404
                raise
            message = (
                f"{request.method} {request.path}: not served here; allowed: {', '.join(served)}"
            )
            return _error(404, message, "not_found")
        except web.HTTPMethodNotAllowed as exc:
            allowed = ", ".join(sorted(exc.allowed_methods))
            message = f"{request.method} {request.path}: method not allowed; allowed: {allowed}"
            return _error(405, message, "method_not_allowed", {"Allow": allowed})

    return middleware


def _error(
    status: int, message: str, code: str, headers: dict[str, str] | None = None
) -> web.Response:
    body = error_body(message, code=code)
    return web.Response(
        status=status, body=dumps(body), content_type="application/json", headers=headers
    )


_CORS_HEADERS = {
    "Access-Control-Allow-Methods": "GET, POST, OPTIONS",
    "Access-Control-Allow-Headers": "Authorization, Content-Type, x-request-id, x-session-id",
    "Access-Control-Max-Age": "600",
}


def cors_preflight(allowed_origins: Collection[str]) -> Middleware:
    """Middleware: answer CORS preflights (``OPTIONS``) for ``allowed_origins`` (``*``: any)."""
    allowed = frozenset(allowed_origins)

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.method != "OPTIONS" or "Access-Control-Request-Method" not in request.headers:
            return await handler(request)
        origin = request.headers.get("Origin")
        if not _allowed(origin, allowed):
            return _error(403, f"Origin: got {origin!r}; not allowed", "origin_not_allowed")
        return web.Response(status=204, headers=_cors_for(origin))

    return middleware


def cors_headers(
    allowed_origins: Collection[str],
) -> Callable[[web.Request, web.StreamResponse], Awaitable[None]]:
    """``on_response_prepare`` hook: CORS headers on every answer (streams included) to an
    allowed origin."""
    allowed = frozenset(allowed_origins)

    async def on_prepare(request: web.Request, response: web.StreamResponse) -> None:
        origin = request.headers.get("Origin")
        if _allowed(origin, allowed):
            response.headers.update(_cors_for(origin))

    return on_prepare


def _allowed(origin: str | None, allowed: frozenset[str]) -> bool:
    return origin is not None and ("*" in allowed or origin in allowed)


def _cors_for(origin: str | None) -> dict[str, str]:
    return {"Access-Control-Allow-Origin": origin or "*", "Vary": "Origin", **_CORS_HEADERS}
