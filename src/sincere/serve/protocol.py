"""The OpenAI wire format that sincere's gateway and emulator speak.

Requests. :func:`parse_request` validates the JSON body of ``POST /v1/completions``
(``kind="completion"``) or ``POST /v1/chat/completions`` (``kind="chat"``) as OpenAI
defines them and vLLM reads them: ``model``; ``prompt`` (a string or token ids, or, with
``multi``, a list of either: a batch) or ``messages`` (``role`` + ``content``, a string
or parts: text, and ``image_url`` counted per image, see :mod:`sincere.serve.content`);
``max_tokens`` (chat also ``max_completion_tokens``); ``n`` / ``best_of`` (above 1 only
with ``multi``); ``stream`` and ``stream_options.include_usage``. Sampling fields
(``temperature``, ``top_p``, ``stop``, ``seed``, ...) are type-checked and otherwise
ignored: times do not depend on them. Scalars are read as leniently as vLLM's pydantic
models read them (``"seed": "42"``, ``"max_tokens": 2.0``; :mod:`sincere.serve.lax`).
Unknown fields are ignored, as vLLM does. The client's bytes are kept
(``CompletionRequest.raw``) so the gateway can forward them unchanged when it has
nothing to patch.

sincere's extension (all optional) rides in a ``sincere`` object of the body or in
headers; the body wins where both are given:

====================  =========================  ===========================================
body ``sincere.*``    header                     meaning
====================  =========================  ===========================================
``tier``              ``x-sincere-tier``         SLA tier / service class name
``priority``          ``x-sincere-priority``     integer, smaller is more important
``deadline_s``        ``x-sincere-deadline-s``   end-to-end deadline after arrival, seconds
``budget_usd``        ``x-sincere-budget-usd``   most the client pays for the request, USD
``output_tokens``     ``x-sincere-output-tokens``  tokens an emulator generates (ground truth)
====================  =========================  ===========================================

Errors. Bad input raises :class:`ProtocolError`, carrying the HTTP status (400
malformed JSON, wrong types, missing fields, values out of range, a prompt and
``max_tokens`` over the context (``context_length_exceeded``, :func:`check_context`);
404 unknown model; 413 body too large) and OpenAI's error body
``{"error": {"message", "type", "param", "code"}}`` (``code`` is never null); the
message names the field, the value and what is allowed.

Responses. Builders for non-streamed completion / chat objects (with ``usage``), the
chunks of a stream, and Server-Sent Events framing (``data: {...}\\n\\n``, ending with
``data: [DONE]\\n\\n``). Prompt tokens are counted with the requested model's own tokenizer
when it is at hand (``tokenizers`` installed, its ``tokenizer.json`` in the local Hugging
Face cache), else tiktoken's cl100k_base when it is installed, else at ~4 characters per
token, as :mod:`sincere.workload` does.

The hot path is plain dict checks (a few microseconds a request), no pydantic.
"""

from __future__ import annotations

import json
import math
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from functools import cache
from typing import Any, Literal

from sincere.core.errors import SincereError
from sincere.serve.content import (
    DEFAULT_IMAGE_TOKENS,
    ImageTokens,
    image_placeholder,
    image_tokens_rule,
)
from sincere.serve.lax import lax_bool, lax_int, lax_number
from sincere.workload.tabular import (
    CHARS_PER_TOKEN,
    count_tokens,
    model_encoder,
    tokenizer_name,
)

Kind = Literal["completion", "chat"]
PATHS = {"completion": "/v1/completions", "chat": "/v1/chat/completions"}
"""The OpenAI-compatible path of each request kind."""

MAX_BODY_BYTES = 4 * 1024 * 1024
"""Default cap on a request body (413 above it)."""

SSE_DONE = b"data: [DONE]\n\n"
"""The event that ends every OpenAI stream."""

_MAX_SHOWN = 60  # characters of a bad value quoted in an error message
_DEFAULT_IMAGE_RULE = image_tokens_rule(None, DEFAULT_IMAGE_TOKENS)


class ProtocolError(SincereError):
    """A request the OpenAI API would refuse, with its HTTP status and error body."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        type: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.type = type or ("server_error" if status >= 500 else "invalid_request_error")

    def body(self) -> dict[str, Any]:
        """OpenAI's error object: ``{"error": {"message", "type", "param", "code"}}``."""
        return error_body(self.message, type=self.type, param=self.param, code=self.code)

    def to_bytes(self) -> bytes:
        """The error body as JSON bytes (ASCII: a quoted bad value is always encodable)."""
        return json.dumps(self.body(), separators=(",", ":")).encode()


@dataclass(frozen=True, slots=True)
class SincereFields:
    """sincere's extension fields of one request (``None``: not given)."""

    tier: str | None = None  # SLA tier / service class name
    priority: int | None = None  # smaller is more important
    deadline_s: float | None = None  # end-to-end deadline after arrival, seconds
    budget_usd: float | None = None  # most the client pays, USD
    output_tokens: int | None = None  # tokens an emulator generates (ground truth)


@dataclass(frozen=True, slots=True)
class CompletionRequest:
    """A validated completion or chat request."""

    kind: Kind  # "completion" (/v1/completions) or "chat" (/v1/chat/completions)
    model: str  # model name as the client wrote it
    prompt_tokens: int  # prompt length in tokens (counted, or the token ids given)
    max_tokens: int | None  # the client's cap on generated tokens; None: server default
    stream: bool  # answer as Server-Sent Events
    include_usage: bool  # stream_options.include_usage: a final chunk with usage
    sincere: SincereFields  # extension fields
    prompt: str | None = None  # prompt text (chat: the rendered messages); None for token ids
    body: dict[str, Any] = field(default_factory=dict, compare=False)  # the parsed JSON body
    raw: bytes = field(default=b"", compare=False, repr=False)  # the client's bytes; b"": none
    num_choices: int = 1  # sequences generated per prompt (``n``, or ``best_of`` when larger)
    num_prompts: int = 1  # prompts of a batched /v1/completions (each gets num_choices)
    max_prompt_tokens: int = 0  # the longest prompt's tokens (0: prompt_tokens, one prompt)
    num_images: int = 0  # image parts of a chat's messages (counted in prompt_tokens)

    @property
    def num_sequences(self) -> int:
        """Sequences the engine generates for this request: every choice of every prompt."""
        return self.num_choices * self.num_prompts

    @property
    def longest_prompt(self) -> int:
        """Tokens of the longest prompt: what must fit the context with ``max_tokens``."""
        return self.max_prompt_tokens or self.prompt_tokens


# ----------------------------------------------------------------------------- helpers


def dumps(obj: Any) -> bytes:
    """Compact JSON bytes."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


def loads(raw: bytes | str) -> Any:
    """Decode JSON (the standard library's reading); malformed input raises ``ValueError``.

    orjson was measured here: on request-sized bodies it saves ~2 us of ~300 us a
    request, and it reads some documents differently (integers over 64 bits become
    floats, NaN is refused), so the gateway keeps one reading.
    """
    return json.loads(raw)


def dumps_compact(obj: Any) -> bytes:
    """Compact UTF-8 JSON bytes (the body patched for an upstream)."""
    return dumps(obj)


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= _MAX_SHOWN else text[: _MAX_SHOWN - 3] + "..."


def _bad(param: str, value: Any, allowed: str, status: int = 400) -> ProtocolError:
    """``param`` has a bad ``value``; say what is allowed (400, as vLLM answers)."""
    return ProtocolError(
        status, f"{param}: got {_shown(value)}; allowed: {allowed}", param=param,
        code="invalid_value",
    )  # fmt: skip


def _missing(param: str, allowed: str) -> ProtocolError:
    return ProtocolError(
        400, f"{param} is required; allowed: {allowed}", param=param, code="missing_field"
    )


INT64_MAX = (1 << 63) - 1
"""Largest integer accepted in any field: engines read integers as signed 64-bit."""


def _is_int(value: Any) -> bool:
    """An integer (not a boolean) that fits in signed 64 bits."""
    return type(value) is int and -INT64_MAX - 1 <= value <= INT64_MAX


def _is_number(value: Any) -> bool:
    """A finite float, or an integer that fits in signed 64 bits (never ``inf`` or ``nan``)."""
    if type(value) is float:
        return math.isfinite(value)
    return _is_int(value)


def count_prompt_tokens(text: str, model: str | None = None) -> int:
    """Tokens in ``text``: ``model``'s own tokenizer when it is at hand (installed and in the
    local Hugging Face cache), else tiktoken cl100k_base when installed, else ~4 characters a
    token (:func:`~sincere.workload.tabular.tokenizer_name` says which)."""
    if model is not None and model_encoder(model) is not None:
        return int(count_tokens([text], model)[0])
    if _approximate_tokens():
        return max(1, math.ceil(len(text) / CHARS_PER_TOKEN))  # count_tokens' rule, scalar
    return int(count_tokens([text])[0])


@cache
def _approximate_tokens() -> bool:
    """Whether :func:`count_tokens` falls back to the characters-per-token rule."""
    return not tokenizer_name().startswith("tiktoken")


# ----------------------------------------------------------------------------- parsing


def check_body_size(num_bytes: int, max_body_bytes: int = MAX_BODY_BYTES) -> None:
    """Raise 413 when a body of ``num_bytes`` exceeds ``max_body_bytes``."""
    if num_bytes > max_body_bytes:
        raise ProtocolError(
            413,
            f"request body: got {num_bytes} bytes; allowed: at most {max_body_bytes} bytes",
            code="body_too_large",
        )


def parse_request(
    raw: bytes | str,
    kind: Kind,
    *,
    headers: Mapping[str, str] | None = None,
    models: Collection[str] | None = None,
    max_context: int | None = None,
    max_body_bytes: int = MAX_BODY_BYTES,
    multi: bool = False,
    image_tokens: ImageTokens | None = None,
) -> CompletionRequest:
    """Validate one request body; raise :class:`ProtocolError` on anything wrong.

    ``models``: the names served (404 for another; ``None`` accepts any).
    ``max_context``: the model's context window, for the context-length check
    (:func:`check_context`). ``headers``: request headers (any mapping; names looked up
    lower-case) for the ``x-sincere-*`` extension. ``multi``: accept ``n`` > 1 and batched
    prompts (a server that generates one sequence per request leaves it off and refuses
    them). ``image_tokens``: prompt tokens per image part by model (default
    :data:`~sincere.serve.content.DEFAULT_IMAGE_TOKENS`).
    """
    check_body_size(len(raw), max_body_bytes)
    try:
        body = loads(raw)
    except (ValueError, RecursionError) as exc:
        raise ProtocolError(
            400, f"request body is not valid JSON ({exc}); allowed: a JSON object"
        ) from None
    if not isinstance(body, dict):
        raise _bad("body", type(body).__name__, "a JSON object")
    if _may_hold_surrogates(raw):
        check_text(body)
    raw_bytes = raw.encode() if isinstance(raw, str) else raw
    return parse_body(
        body, kind, headers=headers, models=models, max_context=max_context, raw=raw_bytes,
        multi=multi, image_tokens=image_tokens,
    )  # fmt: skip


def _may_hold_surrogates(raw: bytes | str) -> bool:
    """Whether ``raw`` may decode to a string with a lone UTF-16 surrogate (a quick scan).

    UTF-8 cannot carry surrogates, so in bytes they come only as ``\\uD8xx``-style
    escapes; a ``str`` may also hold them directly.
    """
    if isinstance(raw, bytes):
        return b"\\ud" in raw or b"\\uD" in raw
    try:
        raw.encode()
    except UnicodeEncodeError:
        return True
    return "\\ud" in raw or "\\uD" in raw


def check_text(body: Any) -> None:
    """Raise 400 naming the first string (a key or a value) with a lone UTF-16 surrogate.

    Such a string decodes from JSON but cannot be encoded again, so it could never be
    forwarded. Walks the document with a stack (bodies may nest deeply).
    """
    stack: list[tuple[str, Any]] = [("body", body)]
    while stack:
        where, value = stack.pop()
        if isinstance(value, str):
            if not _encodable(value):
                raise _bad(where, value, "text without lone UTF-16 surrogates")
        elif isinstance(value, dict):
            for key, item in value.items():
                path = str(key) if where == "body" else _child(where, f".{key}")
                if not _encodable(str(key)):
                    raise _bad(path, key, "field names without lone UTF-16 surrogates")
                stack.append((path, item))
        elif isinstance(value, list):
            stack.extend((_child(where, f"[{k}]"), item) for k, item in enumerate(value))


def _child(where: str, part: str) -> str:
    """``where`` + ``part``, the path cut short (with ``...``) once it is long."""
    if len(where) < _MAX_SHOWN:
        return where + part
    return where if where.endswith("...") else where + "..."


def _encodable(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def parse_body(
    body: dict[str, Any],
    kind: Kind,
    *,
    headers: Mapping[str, str] | None = None,
    models: Collection[str] | None = None,
    max_context: int | None = None,
    raw: bytes = b"",
    multi: bool = False,
    image_tokens: ImageTokens | None = None,
) -> CompletionRequest:
    """:func:`parse_request` on an already decoded JSON object (``raw``: its bytes, if kept)."""
    model = _model(body, models)
    num_images = 0
    prompt: str | None
    if kind == "chat":
        prompt, num_images = _chat_prompt(body)
        tokens = count_prompt_tokens(prompt, model) if prompt else 1
        tokens += num_images * (image_tokens or _DEFAULT_IMAGE_RULE)(model)
        prompts = [tokens]
    else:
        prompt, prompts = _completion_prompts(body, model, multi)
        tokens = sum(prompts)
    num_choices = _check_sampling(body, multi)
    stream = _lax_field(body, "stream", lax_bool, "true or false")
    creq = CompletionRequest(
        kind=kind,
        model=model,
        prompt_tokens=tokens,
        max_tokens=_max_tokens(body, kind),
        stream=bool(stream),
        include_usage=_include_usage(body),
        sincere=parse_sincere(body.get("sincere"), headers),
        prompt=prompt,
        body=body,
        raw=raw,
        num_choices=num_choices,
        num_prompts=len(prompts),
        max_prompt_tokens=max(prompts) if len(prompts) > 1 else 0,
        num_images=num_images,
    )
    if max_context is not None:
        check_context(creq, max_context)
    return creq


def _model(body: dict[str, Any], models: Collection[str] | None) -> str:
    model = body.get("model")
    if model is None:
        raise _missing("model", "a served model name")
    if not isinstance(model, str) or not model:
        raise _bad("model", model, "a non-empty string")
    if models is not None and model not in models:
        allowed = ", ".join(sorted(models)) or (
            "none yet: no instance serves a model (a registered model is served once an "
            "instance of it is added or planned)"
        )
        raise ProtocolError(
            404, f"model: got {_shown(model)}; allowed: {allowed}", param="model",
            code="model_not_found",
        )  # fmt: skip
    return model


_PROMPT_ALLOWED = (
    "a string, a list of token ids (64-bit integers >= 0), or a list of either "
    "(a batch: one answer per prompt)"
)
MAX_PROMPTS = 1024
"""Most prompts one batched /v1/completions request may carry (vLLM's default limit,
``VLLM_MAX_COMPLETION_PROMPTS``)."""


def _completion_prompts(
    body: dict[str, Any], model: str | None, multi: bool
) -> tuple[str | None, list[int]]:
    """The first prompt's text (``None`` for token ids) and each prompt's token count."""
    prompt = body.get("prompt")
    if prompt is None:
        raise _missing("prompt", _PROMPT_ALLOWED)
    if isinstance(prompt, list) and prompt and isinstance(prompt[0], str | list):
        if len(prompt) > 1 and not multi:
            raise _bad("prompt", prompt, "one prompt per request here (a string or token ids)")
        if len(prompt) > MAX_PROMPTS:
            raise _bad("prompt", f"{len(prompt)} prompts", f"at most {MAX_PROMPTS} prompts")
        counted = [_one_prompt(p, model, f"prompt[{k}]") for k, p in enumerate(prompt)]
        return counted[0][0], [n for _, n in counted]
    text, tokens = _one_prompt(prompt, model, "prompt")
    return text, [tokens]


def _one_prompt(prompt: Any, model: str | None, where: str) -> tuple[str | None, int]:
    """One prompt's text (``None`` for token ids) and its token count."""
    if isinstance(prompt, str):
        return prompt, (count_prompt_tokens(prompt, model) if prompt else 1)
    if isinstance(prompt, list) and prompt and all(_is_int(t) and t >= 0 for t in prompt):
        return None, len(prompt)
    raise _bad(where, prompt, _PROMPT_ALLOWED)


def _chat_prompt(body: dict[str, Any]) -> tuple[str, int]:
    """The messages rendered as ``role: content`` lines (what the token count reads), and
    the number of image parts among them."""
    messages = body.get("messages")
    allowed = "a non-empty list of {role: string, content: string or content parts}"
    if messages is None:
        raise _missing("messages", allowed)
    if not isinstance(messages, list) or not messages:
        raise _bad("messages", messages, allowed)
    lines, num_images = [], 0
    for k, msg in enumerate(messages):
        if not isinstance(msg, dict):
            raise _bad(f"messages[{k}]", msg, allowed)
        role = msg.get("role")
        if not isinstance(role, str) or not role:
            raise _bad(f"messages[{k}].role", role, "a string such as system, user, assistant")
        text, images = _content(msg.get("content"), k)
        lines.append(f"{role}: {text}")
        num_images += images
    return "\n".join(lines), num_images


def _content(content: Any, k: int) -> tuple[str, int]:
    """A message's text and its image count: a string, null, or a list of parts
    (``{type: text, text}``; ``{type: image_url, image_url: {url}}`` as a placeholder)."""
    if content is None or isinstance(content, str):
        return content or "", 0
    allowed = "a string, null, or a list of {type, text} / {type: image_url, image_url} parts"
    if not isinstance(content, list):
        raise _bad(f"messages[{k}].content", content, allowed)
    texts, num_images = [], 0
    for part in content:
        if not isinstance(part, dict) or not isinstance(part.get("type"), str):
            raise _bad(f"messages[{k}].content", part, allowed)
        if part["type"] == "image_url":
            texts.append(image_placeholder(_image_url(part.get("image_url"), k)))
            num_images += 1
            continue
        text = part.get("text", "")
        if not isinstance(text, str):
            raise _bad(f"messages[{k}].content.text", text, "a string")
        texts.append(text)
    return "".join(texts), num_images


def _image_url(value: Any, k: int) -> str:
    """The URL of an ``image_url`` part: ``{url: ...}`` (OpenAI's form) or a bare string."""
    url = value.get("url") if isinstance(value, dict) else value
    if not isinstance(url, str) or not url:
        allowed = "{url: an http(s) or data: URL}"
        raise _bad(f"messages[{k}].content.image_url", value, allowed)
    return url


_NUMBERS = ("temperature", "top_p", "frequency_penalty", "presence_penalty", "repetition_penalty")
_INTS = ("seed", "top_k", "logprobs", "top_logprobs")
_SAMPLING_FIELDS = frozenset((*_NUMBERS, *_INTS, "n", "best_of", "stop"))
"""Every field :func:`_check_sampling` reads."""
MAX_CHOICES = 16384
"""Most choices (``n``, ``best_of``) one request may ask for (vLLM's default limit,
``VLLM_MAX_N_SEQUENCES``)."""


def _lax_field(body: dict[str, Any], name: str, read: Any, allowed: str) -> Any:
    """Field ``name`` read leniently (:mod:`sincere.serve.lax`); 400 when it cannot be."""
    value = body.get(name)
    if value is None:
        return None
    got = read(value)
    if got is None:
        raise _bad(name, value, allowed)
    return got


def _check_sampling(body: dict[str, Any], multi: bool) -> int:
    """Type-check the sampling fields times do not depend on (their values are ignored);
    return the sequences generated per prompt (``n``, or ``best_of`` when larger)."""
    if _SAMPLING_FIELDS.isdisjoint(body):  # none of them (most requests): nothing to check
        return 1
    for name in _NUMBERS:
        _lax_field(body, name, lax_number, "a finite number")
    for name in _INTS:
        _lax_field(body, name, lax_int, "a 64-bit integer")
    counts = []
    for name in ("n", "best_of"):
        value = _lax_field(body, name, lax_int, f"an integer in [1, {MAX_CHOICES}]")
        if value is not None and not 1 <= value <= (MAX_CHOICES if multi else 1):
            allowed = f"an integer in [1, {MAX_CHOICES}]" if multi else "1 (one choice here)"
            raise _bad(name, body[name], allowed)
        counts.append(1 if value is None else value)
    stop = body.get("stop")
    ok = stop is None or isinstance(stop, str)
    ok = ok or (isinstance(stop, list) and all(isinstance(s, str) for s in stop))
    if not ok:
        raise _bad("stop", stop, "a string or a list of strings")
    return max(counts)


def _max_tokens(body: dict[str, Any], kind: Kind) -> int | None:
    """The client's answer cap (chat: ``max_completion_tokens`` wins), read leniently."""
    name = "max_tokens"
    if kind == "chat" and body.get("max_completion_tokens") is not None:
        name = "max_completion_tokens"
    value: int | None = _lax_field(body, name, lax_int, "an integer >= 1")
    if value is not None and value < 1:
        raise _bad(name, body[name], "an integer >= 1")
    return value


def check_context(creq: CompletionRequest, max_context: int) -> None:
    """Raise 400 ``context_length_exceeded`` when the longest prompt and ``max_tokens``
    (when given) do not fit ``max_context``, naming the prompt's tokens, the cap asked
    for and the largest cap that would fit (OpenAI's and vLLM's wording, which clients
    such as LiteLLM recognise)."""
    prompt = creq.longest_prompt
    asked = creq.max_tokens or 0
    if prompt + asked <= max_context and prompt < max_context:
        return
    where = "messages" if creq.kind == "chat" else "prompt"
    room = max_context - prompt
    fits = (
        f"max_tokens at most {room} fits"
        if room >= 1
        else "no max_tokens fits: shorten the " + where
    )
    message = (
        f"This model's maximum context length is {max_context} tokens. However, you requested "
        f"{prompt + asked} tokens ({prompt} in the {where}, {asked} in the completion). "
        f"Please reduce the length of the {where} or completion ({fits})."
    )
    raise ProtocolError(400, message, param=where, code="context_length_exceeded")


def _include_usage(body: dict[str, Any]) -> bool:
    options = body.get("stream_options")
    if options is None:
        return False
    if not isinstance(options, dict):
        raise _bad("stream_options", options, "an object such as {include_usage: true}")
    usage = options.get("include_usage", False)
    if usage is not None and not isinstance(usage, bool):
        raise _bad("stream_options.include_usage", usage, "true or false")
    return bool(usage)


# ------------------------------------------------------------------ sincere extension

_HEADER = "x-sincere-"

MAX_BUDGET_USD = 1e6
"""Largest budget one request may carry, USD."""


def parse_sincere(value: Any, headers: Mapping[str, str] | None = None) -> SincereFields:
    """The extension fields from the body's ``sincere`` object and ``x-sincere-*`` headers."""
    if value is not None and not isinstance(value, dict):
        raise _bad("sincere", value, "an object with tier, priority, deadline_s, budget_usd")
    given: dict[str, Any] = _from_headers(headers) if headers else {}
    given.update(value or {})
    if not given:
        return _NO_FIELDS
    tier = given.get("tier")
    if tier is not None and (not isinstance(tier, str) or not tier):
        raise _bad("sincere.tier", tier, "a non-empty tier name")
    priority = given.get("priority")
    if priority is not None and not _is_int(priority):
        raise _bad("sincere.priority", priority, "a 64-bit integer (smaller is more important)")
    deadline = _positive("deadline_s", given.get("deadline_s"), "a number of seconds > 0")
    budget = given.get("budget_usd")
    if budget is not None and not (_is_number(budget) and 0 <= budget <= MAX_BUDGET_USD):
        raise _bad("sincere.budget_usd", budget, f"a number of USD in [0, {MAX_BUDGET_USD:g}]")
    out = given.get("output_tokens")
    if out is not None and not (_is_int(out) and out >= 1):
        raise _bad("sincere.output_tokens", out, "a 64-bit integer >= 1")
    return SincereFields(
        tier=tier,
        priority=priority,
        deadline_s=deadline,
        budget_usd=None if budget is None else float(budget),
        output_tokens=out,
    )


_NO_FIELDS = SincereFields()


def _positive(name: str, value: Any, allowed: str) -> float | None:
    if value is None:
        return None
    if not (_is_number(value) and value > 0):
        raise _bad(f"sincere.{name}", value, allowed)
    return float(value)


_HEADER_KINDS: dict[str, type] = {
    "tier": str,
    "priority": int,
    "deadline-s": float,
    "budget-usd": float,
    "output-tokens": int,
}


def _from_headers(headers: Mapping[str, str]) -> dict[str, Any]:
    """``x-sincere-*`` headers converted to the body fields' names and types."""
    found: dict[str, Any] = {}
    for suffix, cast in _HEADER_KINDS.items():
        text = headers.get(_HEADER + suffix)
        if text is None:
            continue
        try:
            found[suffix.replace("-", "_")] = cast(text.strip())
        except ValueError:
            name = "an integer" if cast is int else "a number"
            raise _bad(_HEADER + suffix, text, name if cast is not str else "text") from None
    return found


# ---------------------------------------------------------------------------- responses


def error_body(
    message: str,
    *,
    type: str = "invalid_request_error",
    param: str | None = None,
    code: str | None = None,
) -> dict[str, Any]:
    """OpenAI's error object; ``code`` falls back to ``type`` (clients switch on it)."""
    code = type if code is None else code
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def usage(
    prompt_tokens: int, completion_tokens: int, cached_tokens: int | None = None
) -> dict[str, Any]:
    """The ``usage`` object; with ``cached_tokens`` (prompt tokens served from a prefix
    cache) OpenAI's ``prompt_tokens_details.cached_tokens`` too."""
    out: dict[str, Any] = {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }
    if cached_tokens is not None:
        out["prompt_tokens_details"] = {"cached_tokens": cached_tokens}
    return out


def response_id(kind: Kind, number: int) -> str:
    """A response id in OpenAI's style: ``cmpl-…`` or ``chatcmpl-…``."""
    return f"{'chatcmpl' if kind == 'chat' else 'cmpl'}-{number:016x}"


def full_response(
    req: CompletionRequest,
    id: str,
    created: int,
    text: str,
    finish_reason: str,
    completion_tokens: int,
    cached_tokens: int | None = None,
) -> dict[str, Any]:
    """A non-streamed completion (``text_completion``) or chat (``chat.completion``);
    ``cached_tokens``: see :func:`usage`."""
    if req.kind == "chat":
        choice: dict[str, Any] = {
            "index": 0,
            "message": {"role": "assistant", "content": text},
            "logprobs": None,
            "finish_reason": finish_reason,
        }
        obj = "chat.completion"
    else:
        choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": finish_reason}
        obj = "text_completion"
    return {
        "id": id,
        "object": obj,
        "created": created,
        "model": req.model,
        "choices": [choice],
        "usage": usage(req.prompt_tokens, completion_tokens, cached_tokens),
    }


def stream_chunk(
    req: CompletionRequest,
    id: str,
    created: int,
    text: str,
    finish_reason: str | None = None,
    *,
    first: bool = False,
) -> dict[str, Any]:
    """One chunk of a stream; chat's ``first`` chunk carries the assistant role."""
    if req.kind == "chat":
        delta: dict[str, Any] = (
            {"role": "assistant", "content": text} if first else {"content": text}
        )
        choice: dict[str, Any] = {"index": 0, "delta": delta, "finish_reason": finish_reason}
        obj = "chat.completion.chunk"
    else:
        choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": finish_reason}
        obj = "text_completion"
    chunk: dict[str, Any] = {
        "id": id,
        "object": obj,
        "created": created,
        "model": req.model,
        "choices": [choice],
    }
    if req.include_usage:
        chunk["usage"] = None
    return chunk


def usage_chunk(
    req: CompletionRequest,
    id: str,
    created: int,
    completion_tokens: int,
    cached_tokens: int | None = None,
) -> dict[str, Any]:
    """The final chunk of a stream with ``include_usage``: no choices, the usage."""
    obj = "chat.completion.chunk" if req.kind == "chat" else "text_completion"
    return {
        "id": id,
        "object": obj,
        "created": created,
        "model": req.model,
        "choices": [],
        "usage": usage(req.prompt_tokens, completion_tokens, cached_tokens),
    }


def sse_event(obj: Any) -> bytes:
    """One Server-Sent Event: ``data: <json>\\n\\n``."""
    return b"data: " + dumps(obj) + b"\n\n"


def parse_sse_data(line: bytes | str) -> dict[str, Any] | None:
    """The JSON of one ``data:`` line of a stream; ``None`` for ``[DONE]`` and non-data lines."""
    text = line.decode() if isinstance(line, bytes) else line
    text = text.strip()
    if not text.startswith("data:"):
        return None
    payload = text[5:].strip()
    if payload == "[DONE]":
        return None
    obj = json.loads(payload)
    if not isinstance(obj, dict):
        raise ValueError(f"SSE data is not a JSON object: {_shown(payload)}")
    return obj


def models_response(
    names: Collection[str], created: int, owned_by: str = "sincere"
) -> dict[str, Any]:
    """``GET /v1/models``: a list of model objects."""
    return {
        "object": "list",
        "data": [
            {"id": name, "object": "model", "created": created, "owned_by": owned_by}
            for name in names
        ],
    }
