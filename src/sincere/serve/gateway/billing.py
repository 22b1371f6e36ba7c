"""What a keyed request reserves and what it is charged, at the instances' prices.

A request's grant reserves its worst case at the dearest instance of its model (before
routing, so a key's budget can never be overspent by more than one request in flight);
when the request ends, whatever happened, :func:`settle` charges what it used at the
prices of the instance that served it, or nothing when no instance answered.

Every answer says how its prompt was counted, for the reservation and for a charge no
engine reported usage for, in ``x-sincere-token-counter`` (:func:`token_counter`): the
model's own tokenizer, ``tiktoken cl100k_base``, ``approximation: 4 characters per
token``, ``token ids`` (the client sent ids: exact) or ``declared`` (a sealed request's
``x-sincere-prompt-tokens``).
"""

from __future__ import annotations

from functools import cache

from sincere.serve.gateway.auth import FREE, GatewayAuth, dearest_prices
from sincere.serve.gateway.dispatch import Dispatcher, Pending
from sincere.serve.gateway.instances import InstanceState
from sincere.serve.protocol import CompletionRequest
from sincere.serve.security.keys import Prices
from sincere.serve.security.policy import Grant
from sincere.workload.tabular import tokenizer_name

TOKEN_COUNTER_HEADER = "x-sincere-token-counter"


def token_counter(creq: CompletionRequest, sealed: bool) -> tuple[str, str]:
    """The header naming what counted ``creq``'s prompt tokens (see the module's text)."""
    if sealed:
        return TOKEN_COUNTER_HEADER, "declared"
    if creq.prompt is None:
        return TOKEN_COUNTER_HEADER, "token ids"
    return TOKEN_COUNTER_HEADER, _counter_of(creq.model)


@cache
def _counter_of(model: str) -> str:
    """What :func:`~sincere.serve.protocol.count_prompt_tokens` counts ``model``'s text with."""
    return tokenizer_name(model).encode("ascii", "replace").decode()


def prices_of(state: InstanceState) -> Prices:
    """An instance's prices per prompt and per output token, USD."""
    backend = state.backend
    return Prices(backend.price_in_per_token_usd, backend.price_out_per_token_usd)


def reserve_prices(dispatcher: Dispatcher, model: str) -> Prices:
    """The dearest prices among ``model``'s instances: what a request reserves."""
    return dearest_prices(prices_of(s) for s in dispatcher.by_model.get(model, ()))


def settle(
    auth: GatewayAuth, grant: Grant, pending: Pending | None, dispatcher: Dispatcher
) -> None:
    """Charge what the request used at its instance's prices (nothing if none answered)."""
    auth.settle(grant, *charge(pending, dispatcher))


def charge(pending: Pending | None, dispatcher: Dispatcher) -> tuple[int, int, Prices]:
    """Prompt tokens, completion tokens and the prices to charge them at."""
    used = None if pending is None else pending.output_tokens
    if pending is None or used is None:
        return 0, 0, FREE
    state = dispatcher.instances.get(pending.instance)
    model = pending.request.model
    prices = reserve_prices(dispatcher, model) if state is None else prices_of(state)
    prompt = pending.prompt_tokens_used or pending.request.prompt_tokens
    return prompt, used, prices
