"""Shared type aliases. Times are always seconds (float) unless a name says ``_ms``."""

from typing import TypeAlias

Seconds: TypeAlias = float
RequestId: TypeAlias = int
InstanceId: TypeAlias = str
ModelName: TypeAlias = str
