"""What the gateway knows of each served model's limits: its context and what its backends do.

**Context.** A backend's context window (``max_model_len`` in vLLM's words) is, in this
order: its config's ``max_model_len``; the ``engine.max_model_len`` of the deployment it
declares; the catalog's context length of that deployment's model. A model served by
several instances gets the smallest context among those that say one (a request must fit
wherever it is routed); with none known the gateway leaves the check to the engine. The
gateway checks a parsed request against it (:func:`~sincere.serve.protocol.check_context`)
before any limit, budget or admission, and a keyed request without ``max_tokens`` is
reserved and relayed with the cap vLLM would apply (:func:`answer_cap`: a chat the
context's room, a completion 16 tokens), named in the ``x-sincere-max-tokens`` header.

**Choices and batches.** ``n`` > 1, ``best_of`` and batched prompts are served when every
instance of the model speaks the OpenAI API (vLLM, SGLang and the like generate them in one
request); an Ollama instance generates one sequence per request, so a model with one is
refused them with a 400 naming the field (:func:`check_multi`).
"""

from __future__ import annotations

from collections.abc import Iterable

from sincere.core.errors import ConfigError
from sincere.serve.backends.config import BackendConfig
from sincere.serve.gateway.dispatch import Dispatcher
from sincere.serve.protocol import CompletionRequest, ProtocolError, check_context

MAX_TOKENS_HEADER = "x-sincere-max-tokens"
"""Response header: the answer cap the gateway applied to a request that named none."""


def context_of(config: BackendConfig) -> int | None:
    """The context window of one backend, tokens; None when nothing says it."""
    if config.max_model_len is not None:
        return config.max_model_len
    deployment = config.deployment
    if deployment is None:
        return None
    engine_len = getattr(deployment.engine, "max_model_len", None)
    if engine_len is not None:
        return int(engine_len)
    from sincere.catalog.loader import get_model

    try:
        return int(get_model(deployment.model_names[0]).max_context)
    except ConfigError:  # a model the catalog does not know: the engine will say
        return None


def model_contexts(configs: Iterable[BackendConfig]) -> dict[str, int]:
    """Each public model's context: the smallest its instances declare (see module text)."""
    out: dict[str, int] = {}
    for config in configs:
        context = context_of(config)
        if context is None:
            continue
        for model in config.models:
            out[model] = min(out.get(model, context), context)
    return out


def check_multi(creq: CompletionRequest, configs: Iterable[BackendConfig]) -> None:
    """Raise 400 when ``creq`` asks for several sequences and an instance of its model
    cannot generate them in one request (an Ollama backend)."""
    if creq.num_sequences == 1:
        return
    ollama = sorted(c.name for c in configs if c.kind == "ollama" and creq.model in c.models)
    if not ollama:
        return
    field = "prompt" if creq.num_prompts > 1 else "n"
    raise ProtocolError(
        400,
        f"{field}: model {creq.model!r} is served by Ollama instances ({', '.join(ollama)}), "
        "which generate one sequence per request; allowed: n = 1, best_of = 1 and one prompt "
        "per request for this model",
        param=field,
        code="unsupported_by_backend",
    )


COMPLETION_MAX_TOKENS = 16
"""vLLM's (and OpenAI's legacy) cap of a ``/v1/completions`` request without ``max_tokens``."""


def answer_cap(creq: CompletionRequest, context: int | None, max_tokens: int) -> int:
    """The cap a request without ``max_tokens`` is reserved and relayed with: what vLLM
    would generate up to -- a completion :data:`COMPLETION_MAX_TOKENS`, a chat the room its
    prompt leaves in the context -- at most ``max_tokens`` (``limits.max_tokens``; the cap
    of a chat whose context is unknown)."""
    if context is not None:
        check_context(creq, context)
    if creq.kind == "completion":
        return min(COMPLETION_MAX_TOKENS, max_tokens)
    if context is None:
        return max_tokens
    return max(1, min(max_tokens, context - creq.longest_prompt))


class ModelLimits:
    """The served models' contexts and capabilities, read from the instances in routing.

    Recomputed when the dispatcher's membership changes (its ``by_model`` index is rebuilt
    on every change, so its identity says whether the cache is current).
    """

    def __init__(self, dispatcher: Dispatcher, max_tokens: int) -> None:
        self.dispatcher = dispatcher
        self.max_tokens = max_tokens  # limits.max_tokens: the largest cap a client may ask
        self._seen: object = None  # the by_model index the cache was built from
        self._contexts: dict[str, int] = {}

    def context(self, model: str) -> int | None:
        """``model``'s context window, tokens (None: unknown)."""
        by_model = self.dispatcher.by_model
        if by_model is not self._seen:
            configs = [s.backend.config for s in self.dispatcher.instances.values()]
            self._contexts, self._seen = model_contexts(configs), by_model
        return self._contexts.get(model)

    def check(self, creq: CompletionRequest) -> None:
        """400 for a request its model cannot take: over the context, or several
        sequences where an instance cannot generate them."""
        context = self.context(creq.model)
        if context is not None:
            check_context(creq, context)
        if creq.num_sequences > 1:
            states = self.dispatcher.by_model.get(creq.model, ())
            check_multi(creq, [s.backend.config for s in states])

    def cap(self, creq: CompletionRequest) -> int:
        """The cap for a request without ``max_tokens`` (:func:`answer_cap`)."""
        return answer_cap(creq, self.context(creq.model), self.max_tokens)
