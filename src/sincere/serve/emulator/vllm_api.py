"""What vLLM 0.32.0's OpenAI server refuses, and the request fields that shape its answer.

The shared parser (:mod:`sincere.serve.protocol`) checks what the gateway needs (types,
the model, the prompt's length); an emulated engine must also refuse what a vLLM server
refuses, with vLLM's status (400) and error body, and honour the fields that change the
answer. The rules are those of vLLM 0.32.0 (``SamplingParams._verify_args``,
``_validate_logprobs``, the request models' validators in
``vllm/entrypoints/openai/{completion,chat_completion}/protocol.py``) for a server started
without ``--tool-call-parser`` and with the default ``--max-logprobs 20``:

* ``temperature`` in [0, 2]; ``top_p`` in (0, 1]; ``top_k`` -1, 0 or >= 1; ``min_p`` in
  [0, 1]; ``presence_penalty`` and ``frequency_penalty`` in [-2, 2];
  ``repetition_penalty`` > 0; ``min_tokens`` >= 0 and at most ``max_tokens``;
* ``stop``: a string or at most 4 non-empty strings;
* ``logprobs`` (completions) / ``top_logprobs`` (chat, with ``logprobs: true``) at most
  20; ``prompt_logprobs`` at most 20 and never streamed;
* ``stream_options`` only with ``stream: true``; a non-empty ``prompt``;
* ``response_format``: ``text``, ``json_object``, ``json_schema`` (with its
  ``json_schema``) or ``structural_tag``;
* ``tools``: not empty; ``tool_choice`` needs ``tools``; ``"auto"`` (the default once tools
  are given), ``"required"`` and a named function need a tool-call parser, which this
  server (as vLLM's default) has not: 400. ``tool_choice: "none"`` answers in text.
* ``n`` > 1 only when sampling: with ``temperature`` 0 (greedy) ``n`` must be 1.
  ``best_of`` is not a field of vLLM 0.32.0's requests: it is ignored, as there.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sincere.serve.lax import lax_int
from sincere.serve.protocol import Kind, ProtocolError

MAX_LOGPROBS = 20
"""vLLM's default ``--max-logprobs``."""

MAX_STOP_STRINGS = 4
"""vLLM's ``VLLM_MAX_STOP_STRINGS``."""

RESPONSE_FORMATS = ("text", "json_object", "json_schema", "structural_tag")


@dataclass(frozen=True, slots=True)
class Shaping:
    """The fields of one request that shape the emulated answer (not its timing)."""

    stop: tuple[str, ...] = ()  # stop strings: the text ends before the first one
    include_stop_str: bool = False  # keep the stop string in the text
    min_tokens: int = 0  # stop strings are not looked for before this many tokens
    logprobs: int | None = None  # alternatives per token; None: no logprobs asked
    echo: bool = False  # completions: the prompt leads the text
    continuous_usage: bool = False  # every streamed chunk carries usage so far
    json_schema: dict[str, Any] | None = None  # the answer is a JSON value of this schema


def _bad(message: str, param: str | None) -> ProtocolError:
    """vLLM's 400 for a request it refuses."""
    return ProtocolError(400, message, param=param, type="BadRequestError")


def _number(body: dict[str, Any], name: str) -> float | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _bad(f"{name} must be a number, got {value!r}.", name)
    return float(value)


def _finite(v: float) -> bool:
    return math.isfinite(v)


_RANGES: tuple[tuple[str, Callable[[float], bool], str], ...] = (
    ("temperature", lambda v: _finite(v) and 0.0 <= v <= 2.0, "in [0, 2]"),
    ("top_p", lambda v: 0.0 < v <= 1.0, "in (0, 1]"),
    ("min_p", lambda v: 0.0 <= v <= 1.0, "in [0, 1]"),
    ("presence_penalty", lambda v: -2.0 <= v <= 2.0, "in [-2, 2]"),
    ("frequency_penalty", lambda v: -2.0 <= v <= 2.0, "in [-2, 2]"),
    ("repetition_penalty", lambda v: _finite(v) and v > 0.0, "greater than zero"),
    ("top_k", lambda v: v == int(v) and v >= -1, "0 (disable), or at least 1"),
)
"""SamplingParams' ranges: (field, test, what is allowed)."""


def _check_ranges(body: dict[str, Any]) -> None:
    """The numeric ranges of ``SamplingParams``."""
    for name, ok, allowed in _RANGES:
        value = _number(body, name)
        if value is not None and not ok(value):
            raise _bad(f"{name} must be {allowed}, got {body[name]}.", name)


def _stop(body: dict[str, Any]) -> tuple[str, ...]:
    stop = body.get("stop")
    if stop is None:
        return ()
    strings = [stop] if isinstance(stop, str) else stop
    if len(strings) > MAX_STOP_STRINGS:
        raise _bad(
            f"stop: got {len(strings)} strings; allowed: at most {MAX_STOP_STRINGS}.", "stop"
        )
    if any(not s for s in strings):
        raise _bad("stop cannot contain an empty string.", "stop")
    return tuple(strings)


def _check_logprob_count(name: str, value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise _bad(f"`{name}` must be an integer.", name)
    if value < -1:
        raise _bad(f"`{name}` must be a positive value or -1.", name)
    if value == -1 or value > MAX_LOGPROBS:
        shown = "the vocabulary" if value == -1 else value
        raise _bad(
            f"Requested {name} of {shown}, which is greater than max allowed: {MAX_LOGPROBS}",
            name,
        )
    return value


def _logprobs(body: dict[str, Any], kind: Kind) -> int | None:
    """Alternatives per generated token (``None``: no logprobs)."""
    prompt = _check_logprob_count("prompt_logprobs", body.get("prompt_logprobs"))
    if prompt and body.get("stream"):
        raise _bad("`prompt_logprobs` are not available when `stream=True`.", "prompt_logprobs")
    if kind == "completion":
        return _check_logprob_count("logprobs", body.get("logprobs"))
    wanted = body.get("logprobs")
    if wanted is not None and not isinstance(wanted, bool):
        raise _bad(f"logprobs must be true or false, got {wanted!r}.", "logprobs")
    top = _check_logprob_count("top_logprobs", body.get("top_logprobs"))
    if top and not wanted:
        raise _bad("when using `top_logprobs`, `logprobs` must be set to true.", "top_logprobs")
    return (top or 0) if wanted else None


def _min_tokens(body: dict[str, Any]) -> int:
    value = body.get("min_tokens", 0)
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise _bad(f"min_tokens must be greater than or equal to 0, got {value!r}.", "min_tokens")
    cap = body.get("max_completion_tokens") or body.get("max_tokens")
    if isinstance(cap, int) and value > cap:
        raise _bad(
            f"min_tokens must be less than or equal to max_tokens={cap}, got {value}.",
            "min_tokens",
        )
    return value


def _json_schema(body: dict[str, Any]) -> dict[str, Any] | None:
    """The schema the answer follows (``json_object``: any object), from ``response_format``."""
    fmt = body.get("response_format")
    if fmt is None:
        return None
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if kind not in RESPONSE_FORMATS:
        raise _bad(
            f"response_format.type: got {kind!r}; allowed: {', '.join(RESPONSE_FORMATS)}.",
            "response_format",
        )
    if kind == "json_object":
        return {"type": "object"}
    if kind != "json_schema":
        return None
    spec = fmt.get("json_schema")
    if not isinstance(spec, dict):
        raise _bad(
            "When response_format type is 'json_schema', the 'json_schema' field must be provided.",
            "response_format",
        )
    schema = spec.get("schema", spec.get("json_schema"))
    return schema if isinstance(schema, dict) else {"type": "object"}


def _check_tools(body: dict[str, Any]) -> None:
    """``tools`` / ``tool_choice`` as a vLLM server without a tool-call parser takes them."""
    tools = body.get("tools")
    if tools == []:
        raise _bad(
            "`tools` must not be an empty array. Either provide at least one tool or omit "
            "the field entirely.",
            "tools",
        )
    choice = body.get("tool_choice", "auto" if tools else None)
    if choice is None or choice == "none":
        return
    if tools is None:
        raise _bad("When using `tool_choice`, `tools` must be set.", "tool_choice")
    if choice == "auto":
        raise _bad(
            '"auto" tool choice requires --enable-auto-tool-choice and --tool-call-parser '
            "to be set",
            "tool_choice",
        )
    if choice == "required":
        raise _bad('tool_choice="required" requires --tool-call-parser to be set', "tool_choice")
    function = choice.get("function") if isinstance(choice, dict) else None
    name = function.get("name") if isinstance(function, dict) else None
    if not isinstance(name, str) or not name:
        raise _bad(
            f'Invalid value for `tool_choice`: {choice!r}! Only named tools, "none", '
            '"auto" or "required" are supported.',
            "tool_choice",
        )
    names = [t.get("function", {}).get("name") for t in tools if isinstance(t, dict)]
    if name not in names:
        raise _bad(
            "The tool specified in `tool_choice` does not match any of the specified `tools`",
            "tool_choice",
        )
    raise _bad(f'tool_choice=function "{name}" requires --tool-call-parser to be set', None)


SAMPLING_EPS = 1e-5
"""vLLM's ``_SAMPLING_EPS``: a temperature below it is greedy sampling."""


def num_choices(body: dict[str, Any]) -> int:
    """The choices generated per prompt: ``n`` (read leniently, as vLLM's pydantic model;
    its range is the shared parser's check); ``best_of`` is not read, as vLLM 0.32.0."""
    n = lax_int(body.get("n"))
    return 1 if n is None else n


def _check_choices(body: dict[str, Any]) -> None:
    """Greedy sampling makes one answer: vLLM refuses ``n`` > 1 with ``temperature`` 0."""
    n = num_choices(body)
    temperature = body.get("temperature")
    greedy = isinstance(temperature, int | float) and temperature < SAMPLING_EPS
    if n > 1 and greedy:
        raise _bad(f"n must be 1 when using greedy sampling, got {n}.", "n")


def check_request(body: dict[str, Any], kind: Kind) -> Shaping:
    """Refuse (400, as vLLM 0.32.0) what vLLM refuses; return what shapes the answer."""
    if kind == "completion" and body.get("prompt") == "":
        raise _bad("Either prompt or prompt_embeds must be provided and non-empty.", "prompt")
    if body.get("stream_options") and not body.get("stream"):
        raise _bad("Stream options can only be defined when `stream=True`.", "stream_options")
    _check_ranges(body)
    _check_choices(body)
    stop = _stop(body)
    logprobs = _logprobs(body, kind)
    min_tokens = _min_tokens(body)
    schema = _json_schema(body)
    if kind == "chat":
        _check_tools(body)
    options = body.get("stream_options")
    continuous = isinstance(options, dict) and bool(
        options.get("include_usage") and options.get("continuous_usage_stats")
    )
    return Shaping(
        stop=stop,
        include_stop_str=body.get("include_stop_str_in_output") is True,
        min_tokens=min_tokens,
        logprobs=logprobs,
        echo=kind == "completion" and body.get("echo") is True,
        continuous_usage=continuous,
        json_schema=schema,
    )
