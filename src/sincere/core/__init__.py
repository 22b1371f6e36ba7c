"""Types shared by every layer: requests, tiers, result records, errors.

The request classes (which need NumPy) load on first use, so importing
``sincere.core.errors`` stays cheap for the command line.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sincere.core.errors import ConfigError, DataError, SincereError
from sincere.core.types import InstanceId, ModelName, RequestId, Seconds

if TYPE_CHECKING:
    from sincere.core.request import Request, RequestArrays, Tier

_LAZY = frozenset({"Request", "RequestArrays", "Tier"})


def __getattr__(name: str) -> object:
    if name in _LAZY:
        from sincere.core import request

        return getattr(request, name)
    raise AttributeError(f"module 'sincere.core' has no attribute {name!r}")


__all__ = [
    "ConfigError",
    "DataError",
    "InstanceId",
    "ModelName",
    "Request",
    "RequestArrays",
    "RequestId",
    "Seconds",
    "SincereError",
    "Tier",
]
