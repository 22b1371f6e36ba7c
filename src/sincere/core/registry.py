"""Name -> class registries for pluggable policies.

Adding a policy is one class and one ``@REGISTRY.register("name")`` line. Lookups of
unknown names and duplicate registrations raise, listing the valid names.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from sincere.core.errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """A named collection of policy classes (or factories)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator adding ``obj`` under ``name``; a taken name raises ``ConfigError``."""

        def add(obj: T) -> T:
            if name in self._entries:
                raise ConfigError(f"{self.kind} {name!r} is already registered")
            self._entries[name] = obj
            return obj

        return add

    def get(self, name: str) -> T:
        """The entry called ``name``; an unknown name raises, listing the known ones."""
        try:
            return self._entries[name]
        except KeyError:
            raise ConfigError(
                f"unknown {self.kind}", value=name, allowed=sorted(self._entries)
            ) from None

    def names(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
