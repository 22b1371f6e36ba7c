"""Types shared by every layer: requests, tiers, result records, errors."""

from sincere.core.errors import ConfigError, DataError, SincereError
from sincere.core.request import Request, RequestArrays, Tier
from sincere.core.types import InstanceId, ModelName, RequestId, Seconds

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
