"""Reading request fields as leniently as vLLM's OpenAI server does.

vLLM validates requests with pydantic models in lax mode, so a client that sends
``"seed": "42"``, ``"max_tokens": 2.0`` or ``"stream": "true"`` is served there. The
gateway reads the same values the same way: an integer field takes an integer, a
boolean, a float without a fraction, or a string holding one of those; a number field
a finite number, a boolean or a numeric string; a boolean field ``true`` / ``false``,
``0`` / ``1`` or pydantic's words for them. Each reader returns ``None`` for a value
pydantic would refuse, so the caller can say what was wrong.
"""

from __future__ import annotations

import math
from typing import Any

INT64_MIN, INT64_MAX = -(1 << 63), (1 << 63) - 1
"""Integers are read as signed 64-bit, as engines read them."""

_MAX_NUMERIC_CHARS = 40  # a longer string is not a number anyone meant
_TRUE = frozenset({"1", "on", "t", "true", "y", "yes"})
_FALSE = frozenset({"0", "off", "f", "false", "n", "no"})


def lax_int(value: Any) -> int | None:
    """``value`` as pydantic's lax mode reads an ``int``; None when it would refuse it."""
    if type(value) is bool:
        return int(value)
    if type(value) is int:
        return value if INT64_MIN <= value <= INT64_MAX else None
    if type(value) is float:
        return _integral(value)
    if isinstance(value, str) and len(value) <= _MAX_NUMERIC_CHARS:
        text = value.strip()
        if text.lstrip("+-").isdigit():
            return lax_int(int(text))
        number = _float_of(text)
        return None if number is None else _integral(number)
    return None


def lax_number(value: Any) -> float | None:
    """``value`` as pydantic's lax mode reads a ``float`` (finite only); else None."""
    if type(value) is bool:
        return float(value)
    if type(value) is int:
        return float(value) if INT64_MIN <= value <= INT64_MAX else None
    if type(value) is float:
        return value if math.isfinite(value) else None
    if isinstance(value, str) and len(value) <= _MAX_NUMERIC_CHARS:
        return _float_of(value.strip())
    return None


def lax_bool(value: Any) -> bool | None:
    """``value`` as pydantic's lax mode reads a ``bool``; None when it would refuse it."""
    if type(value) is bool:
        return value
    if type(value) is int and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        word = value.strip().lower()
        if word in _TRUE:
            return True
        if word in _FALSE:
            return False
    return None


def _integral(number: float) -> int | None:
    """A finite float with no fraction, as an int within 64 bits; else None."""
    if not math.isfinite(number) or not number.is_integer():
        return None
    whole = int(number)
    return whole if INT64_MIN <= whole <= INT64_MAX else None


def _float_of(text: str) -> float | None:
    """A finite float written in ``text`` (no ``inf`` / ``nan``); else None."""
    try:
        number = float(text)
    except ValueError:
        return None
    return number if math.isfinite(number) else None
