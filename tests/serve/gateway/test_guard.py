"""The guard stage driven alone, no HTTP: admit (keys, limits, reservation, admission), settle.

A gateway object is built but never started (nothing listens); its guard is called with
parsed requests and headers as the request handler would call it.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from tests.serve.security.test_gateway import PRICE_OUT_PER_1M, bearer, gateway_config, make_keys

from sincere.serve.gateway.dispatch import RefusalError
from sincere.serve.gateway.guard import Admitted, Refused
from sincere.serve.gateway.server import Gateway
from sincere.serve.protocol import CompletionRequest, ProtocolError, parse_request
from sincere.serve.security.keys import KeyRecord, KeySpec
from sincere.serve.security.policy import Refusal

UPSTREAM = "http://127.0.0.1:9"  # never contacted: nothing is relayed here


def run_with(cfg: Any, body: Callable[[Gateway], Awaitable[None]]) -> None:
    """``body`` on an unstarted gateway of ``cfg`` (inside a loop), which is closed after."""

    async def main() -> None:
        gw = Gateway(cfg)
        try:
            await body(gw)
        finally:
            await gw.stop()

    asyncio.run(asyncio.wait_for(main(), 30))


def completion(**fields: Any) -> CompletionRequest:
    """A parsed completion request for model ``m`` with ``fields`` added."""
    raw = json.dumps({"model": "m", "prompt": "hello there", **fields})
    return parse_request(raw, "completion")


def key_of(gw: Gateway, token: str) -> KeyRecord:
    key = gw.guard.authenticate(bearer(token))
    assert isinstance(key, KeyRecord)
    return key


def test_admit_without_keys_builds_the_request_to_relay() -> None:
    """No keys: admitted with no grant, the client's id, deadline and tier on the pending."""

    async def body(gw: Gateway) -> None:
        assert gw.guard.authenticate({}) is None
        headers = {"x-request-id": "abc-1"}
        creq = completion(max_tokens=5, sincere={"deadline_s": 2.5, "tier": "default"})
        got = await gw.guard.admit(None, creq, None, headers)
        assert isinstance(got, Admitted)
        assert got.grant is None and got.tier == "default" and got.request is creq
        pending = got.pending
        assert pending.client_id == "abc-1" and pending.request.max_tokens == 5
        assert pending.deadline_at == pytest.approx(pending.request.arrival_at + 2.5)
        assert pending.decision is not None  # admission has answered
        await gw.guard.settle(got)  # nothing to charge without keys

    run_with(gateway_config(UPSTREAM, None), body)


def test_a_key_without_a_token_is_refused_before_the_body(tmp_path: Path) -> None:
    """With keys: no Authorization header is a 401 refusal from the headers alone."""
    keys = tmp_path / "keys.db"
    make_keys(keys, acme=KeySpec(name="acme"))

    async def body(gw: Gateway) -> None:
        got = gw.guard.authenticate({})
        assert isinstance(got, Refusal) and got.status == 401

    run_with(gateway_config(UPSTREAM, keys), body)


def chat(**fields: Any) -> CompletionRequest:
    """A parsed chat request for model ``m`` with ``fields`` added."""
    raw = json.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}], **fields})
    return parse_request(raw, "chat")


def test_admit_caps_the_answer_at_the_context_room_and_reserves_it(tmp_path: Path) -> None:
    """A keyed chat without max_tokens is capped at what its context leaves (as vLLM, not a
    small default), reserves that worst case and says the cap in x-sincere-max-tokens."""
    keys = tmp_path / "keys.db"
    tokens = make_keys(keys, acme=KeySpec(name="acme", budget_usd=1000.0))

    async def body(gw: Gateway) -> None:
        key = key_of(gw, tokens["acme"])
        creq = chat()
        got = await gw.guard.admit(key, creq, None, {})
        assert isinstance(got, Admitted) and got.grant is not None
        cap = 1000 - creq.prompt_tokens  # the context's room, above default_max_tokens
        assert got.request.max_tokens == cap and b'"max_tokens":%d' % cap in got.request.raw
        assert ("x-sincere-max-tokens", str(cap)) in got.pending.headers
        assert got.pending.request.max_tokens is None  # policies see what the client sent
        store = gw.auth.store
        assert store is not None and store.num_open == 1
        held = cap * PRICE_OUT_PER_1M / 1e6
        assert store.remaining_usd(key.key_id) == pytest.approx(1000.0 - held, abs=1e-3)
        await gw.guard.settle(got)  # no instance answered: nothing charged, all released
        assert store.num_open == 0 and store.remaining_usd(key.key_id) == pytest.approx(1000.0)

    cfg = gateway_config(UPSTREAM, keys, limits={"default_max_tokens": 50})
    backend = cfg.backends[0].model_copy(update={"max_model_len": 1000})
    run_with(cfg.model_copy(update={"backends": [backend]}), body)


def test_admit_without_a_known_context_caps_at_the_token_limit(tmp_path: Path) -> None:
    """With no context known, a keyed chat is capped at limits.max_tokens (said in a header);
    a completion at vLLM's default of 16 tokens."""
    keys = tmp_path / "keys.db"
    tokens = make_keys(keys, acme=KeySpec(name="acme", budget_usd=1000.0))

    async def body(gw: Gateway) -> None:
        got = await gw.guard.admit(key_of(gw, tokens["acme"]), chat(), None, {})
        assert isinstance(got, Admitted) and got.request.max_tokens == 700
        assert ("x-sincere-max-tokens", "700") in got.pending.headers
        await gw.guard.settle(got)
        got = await gw.guard.admit(key_of(gw, tokens["acme"]), completion(), None, {})
        assert isinstance(got, Admitted) and got.request.max_tokens == 16
        await gw.guard.settle(got)

    run_with(gateway_config(UPSTREAM, keys, limits={"max_tokens": 700}), body)


def test_admit_reserves_every_choice_and_every_prompt(tmp_path: Path) -> None:
    """n = 3 over a batch of 2 prompts reserves 6 answers' worth of output tokens."""
    keys = tmp_path / "keys.db"
    tokens = make_keys(keys, acme=KeySpec(name="acme", budget_usd=1000.0))

    async def body(gw: Gateway) -> None:
        key = key_of(gw, tokens["acme"])
        raw = json.dumps({"model": "m", "prompt": ["a b", "c d"], "n": 3, "max_tokens": 10})
        creq = parse_request(raw, "completion", multi=True)
        got = await gw.guard.admit(key, creq, None, {})
        assert isinstance(got, Admitted) and gw.auth.store is not None
        held = 6 * 10 * PRICE_OUT_PER_1M / 1e6
        left = gw.auth.store.remaining_usd(key.key_id)
        assert left == pytest.approx(1000.0 - held, abs=1e-6)
        assert got.pending.request.output_tokens == 60
        assert got.pending.request.prompt_tokens == creq.prompt_tokens > 1
        await gw.guard.settle(got)

    run_with(gateway_config(UPSTREAM, keys), body)


def test_admit_refuses_a_spent_budget_and_holds_nothing(tmp_path: Path) -> None:
    """A budget below the request's worst case is a 402 refusal counted in its tier."""
    keys = tmp_path / "keys.db"
    tokens = make_keys(keys, acme=KeySpec(name="acme", budget_usd=3.0, tier="interactive"))

    async def body(gw: Gateway) -> None:
        key = key_of(gw, tokens["acme"])
        got = await gw.guard.admit(key, completion(max_tokens=10), None, {})
        assert isinstance(got, Refused) and got.tier == "interactive"
        assert isinstance(got.refusal, Refusal) and got.refusal.status == 402
        assert gw.auth.store is not None and gw.auth.store.num_open == 0

    run_with(gateway_config(UPSTREAM, keys), body)


def test_an_admission_refusal_releases_the_reservation(tmp_path: Path) -> None:
    """Refused by the front door (no instance may take a plain body): 503, nothing held."""
    keys = tmp_path / "keys.db"
    tokens = make_keys(keys, acme=KeySpec(name="acme", budget_usd=100.0))
    sealed_only = {"sealed_backends": ["b0"]}  # the only instance opens sealed bodies only

    async def body(gw: Gateway) -> None:
        key = key_of(gw, tokens["acme"])
        got = await gw.guard.admit(key, completion(max_tokens=10), None, {})
        assert isinstance(got, Refused) and isinstance(got.refusal, RefusalError)
        assert got.refusal.status == 503 and got.refusal.code == "no_instance"
        store = gw.auth.store
        assert store is not None and store.num_open == 0
        assert store.remaining_usd(key.key_id) == pytest.approx(100.0)

    run_with(gateway_config(UPSTREAM, keys, security=sealed_only), body)


def test_settle_charges_what_was_relayed_at_the_serving_instance(tmp_path: Path) -> None:
    """Settling after 3 tokens were relayed charges 3 tokens' price and frees the rest."""
    keys = tmp_path / "keys.db"
    tokens = make_keys(keys, acme=KeySpec(name="acme", budget_usd=100.0))

    async def body(gw: Gateway) -> None:
        key = key_of(gw, tokens["acme"])
        got = await gw.guard.admit(key, completion(max_tokens=10), None, {})
        assert isinstance(got, Admitted)
        got.pending.instance, got.pending.output_tokens = "b0", 3  # what the relay leaves
        gw.guard.settle_now(got)
        store = gw.auth.store
        assert store is not None and store.num_open == 0
        spent = 3 * PRICE_OUT_PER_1M / 1e6
        assert store.remaining_usd(key.key_id) == pytest.approx(100.0 - spent)
        assert store.totals(key.key_id).num_completion_tokens == 3

    run_with(gateway_config(UPSTREAM, keys), body)


def test_admit_refuses_a_tier_the_client_may_not_ask_for() -> None:
    """A more important tier than the client's default is a 403 protocol error."""

    async def body(gw: Gateway) -> None:
        with pytest.raises(ProtocolError) as err:
            await gw.guard.admit(None, completion(sincere={"tier": "interactive"}), None, {})
        assert err.value.status == 403

    run_with(gateway_config(UPSTREAM, None), body)
