"""Strict JSON for results: NaN and infinities become ``null``.

Summaries hold NaN where a metric is undefined (no request finished, say); Python's
``json`` would write the non-standard ``NaN`` token, which other tools reject.
"""

from __future__ import annotations

import json
import math
from typing import Any


def json_safe(value: Any) -> Any:
    """``value`` with every non-finite float (nested in dicts, lists, tuples) as ``None``."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


def dumps(value: Any) -> str:
    """Indented strict JSON text of ``value``, ending with a newline."""
    return json.dumps(json_safe(value), indent=2) + "\n"
