"""The emulated answer's text, planned before the request reaches the engine.

No model runs, so the text is made up: every token is the filler ``token_text``, except
that a ``response_format`` asking for JSON gets a JSON value of its schema, split over the
tokens. What vLLM does with the text is done for real on the made-up text:

* **stop strings** end it as vLLM's detokenizer does: after each token (past
  ``min_tokens``) the newest text is searched for each stop string in the request's
  order; the first found ends the answer there (``finish_reason: "stop"``,
  ``stop_reason``: the string), cut before the string unless
  ``include_stop_str_in_output``. The filler repeats, so a stop string that occurs in it
  is found at a token computed once; one that never occurs changes nothing.
* **logprobs**: each token is given an emulated distribution: the token itself at
  probability 0.9 (logprob ``ln 0.9``), then alternatives ``" alt1"``, ``" alt2"``, ... at
  ``0.1 / 2**k``; as many as the request asks.

The engine then generates exactly :attr:`TextPlan.num_tokens` tokens (or fewer when the
client leaves), so the timing of an answer cut by a stop string is that of its tokens.
"""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import dataclass
from typing import Any

from sincere.serve.emulator.vllm_api import Shaping

TOKEN_LOGPROB = math.log(0.9)
"""The emulated logprob of every generated token."""

_MAX_DEPTH = 16  # nesting followed in a JSON schema


@dataclass(frozen=True, slots=True)
class TextPlan:
    """What the answer says, token by token."""

    pieces: tuple[str, ...]  # the text each generated token adds; len = tokens to generate
    stop_reason: str | None = None  # the stop string that ends it; None: EOS or the cap

    @property
    def num_tokens(self) -> int:
        """Tokens the engine generates for it."""
        return len(self.pieces)

    def text(self, num_tokens: int | None = None) -> str:
        """The text of the first ``num_tokens`` tokens (all by default)."""
        return "".join(self.pieces[:num_tokens])


def plan_text(shaping: Shaping, token_text: str, num_tokens: int, at_cap: bool) -> TextPlan:
    """The text of an answer of ``num_tokens`` tokens (``at_cap``: cut by ``max_tokens``)."""
    if shaping.json_schema is not None:
        return TextPlan(_json_pieces(shaping.json_schema, token_text, num_tokens, at_cap))
    stop = _first_stop(shaping, token_text, num_tokens)
    if stop is None:
        return TextPlan((token_text,) * num_tokens)
    string, at_token, cut = stop
    full = (token_text * at_token)[:cut]
    return TextPlan(_split_even(full, at_token, len(token_text)), stop_reason=string)


def _first_stop(shaping: Shaping, token_text: str, limit: int) -> tuple[str, int, int] | None:
    """(stop string, the token that completes it, where the text ends) of the earliest stop
    within ``limit`` tokens; ties go to the string listed first (vLLM's order)."""
    best: tuple[str, int, int] | None = None
    step = len(token_text)
    for string in shaping.stop:
        first = _first_occurrence(string, token_text)
        if first is None:
            continue
        at = max(first, shaping.min_tokens + 1)
        if at > limit or (best is not None and at >= best[1]):
            continue
        text = token_text * at
        index = text.find(string, max(0, len(text) - step - len(string) + 1))
        best = (string, at, index + (len(string) if shaping.include_stop_str else 0))
    return best


def _first_occurrence(string: str, token_text: str) -> int | None:
    """The first token count whose filler text holds ``string`` (``None``: never)."""
    if not token_text:
        return None
    bound = len(string) // len(token_text) + 2  # past this the text only repeats
    for n in range(1, bound + 1):
        if string in token_text * n:
            return n
    return None


def _split_even(text: str, num_pieces: int, width: int) -> tuple[str, ...]:
    """``text`` as ``num_pieces`` pieces of ``width`` characters (the last ones may be
    short or empty)."""
    return tuple(text[k * width : (k + 1) * width] for k in range(num_pieces))


def split_text(text: str, num_pieces: int) -> tuple[str, ...]:
    """``text`` cut into ``num_pieces`` pieces of near-equal length (their join is ``text``)."""
    if num_pieces <= 0:
        return ()
    bounds = [round(k * len(text) / num_pieces) for k in range(num_pieces + 1)]
    return tuple(text[a:b] for a, b in itertools.pairwise(bounds))


def _json_pieces(
    schema: dict[str, Any], token_text: str, num_tokens: int, at_cap: bool
) -> tuple[str, ...]:
    """A JSON value of ``schema`` whose first string holds filler words, split over the
    tokens; cut short (its end missing) when the answer runs into ``max_tokens``."""
    words = " ".join([token_text.strip() or "tok"] * max(1, num_tokens - 4))
    fill = [words]
    document = json.dumps(_instance(schema, fill, 0), ensure_ascii=False)
    if at_cap:
        return split_text(document, num_tokens + 1)[:num_tokens]
    return split_text(document, num_tokens)


def _instance(schema: Any, fill: list[str], depth: int) -> Any:
    """A small value that ``schema`` accepts (the first string takes ``fill``)."""
    if not isinstance(schema, dict) or depth > _MAX_DEPTH:
        return _string(fill)
    if "const" in schema:
        return schema["const"]
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return schema["enum"][0]
    for key in ("anyOf", "oneOf", "allOf"):
        options = schema.get(key)
        if isinstance(options, list) and options:
            return _instance(options[0], fill, depth + 1)
    kind = schema.get("type", "object" if "properties" in schema else "string")
    if isinstance(kind, list):
        kind = kind[0] if kind else "string"
    return _of_type(kind, schema, fill, depth)


def _of_type(kind: Any, schema: dict[str, Any], fill: list[str], depth: int) -> Any:
    if kind == "object":
        props = schema.get("properties")
        props = props if isinstance(props, dict) else {}
        required = schema.get("required")
        names = required if isinstance(required, list) and required else list(props)
        if not names:
            return {"text": _string(fill)}
        return {str(n): _instance(props.get(n, {}), fill, depth + 1) for n in names}
    if kind == "array":
        count = schema.get("minItems", 1)
        count = count if isinstance(count, int) and 0 <= count <= 8 else 1
        return [_instance(schema.get("items", {}), fill, depth + 1) for _ in range(count)]
    values = {"integer": 0, "number": 0.0, "boolean": True, "null": None}
    return values[kind] if kind in values else _string(fill)


def _string(fill: list[str]) -> str:
    """The filler words for the first string asked for, then ``"tok"``."""
    return fill.pop() if fill else "tok"


def top_alternatives(count: int) -> list[tuple[str, float]]:
    """The emulated ``count`` alternatives after the token itself: (token, logprob)."""
    return [(f" alt{k}", math.log(0.1 / 2**k)) for k in range(1, count)]
