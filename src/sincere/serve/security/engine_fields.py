"""Request fields only a front end may set on an engine, never a client.

``kv_transfer_params`` is vLLM's P/D connector protocol: on a decode engine it names the
host to pull a prompt's KV from and makes the engine skip computing the prompt; on a
prefill engine it asks the engine to hold the KV for a remote decode. A client that sets
it could make an engine fetch from a host of its choosing, or hold engine slots and
blocks it is never charged for. The gateway's P/D relay
(:mod:`sincere.serve.gateway.pd_relay`) and the seal proxy
(:mod:`sincere.serve.security.seal_proxy`, after opening a sealed body) drop them from
every client body; the P/D relay then sets its own.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

ENGINE_ONLY_FIELDS = frozenset({"kv_transfer_params"})
"""Top-level body fields a client may not send to an engine."""


def engine_fields_in(body: Mapping[str, Any]) -> frozenset[str]:
    """The engine-only fields ``body`` sets (empty for a clean body)."""
    return ENGINE_ONLY_FIELDS.intersection(body)


def without_engine_fields(body: Mapping[str, Any]) -> dict[str, Any]:
    """``body`` without its engine-only fields."""
    return {k: v for k, v in body.items() if k not in ENGINE_ONLY_FIELDS}
