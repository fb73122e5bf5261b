"""A named registry per plug-in kind (extractors, heads)."""

from __future__ import annotations

from typing import Callable, Generic, TypeVar

from .errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names to classes; refuses duplicates and lists valid names on a miss."""

    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def decorate(obj: T) -> T:
            if name in self._items:
                raise ConfigError(f"{self.kind} {name!r} is already registered by {self._items[name]!r}")
            self._items[name] = obj
            obj.registered_name = name  # type: ignore[attr-defined]
            return obj

        return decorate

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            raise ConfigError(
                f"unknown {self.kind} {name!r}; valid names: {', '.join(sorted(self._items))}"
            ) from None

    def __contains__(self, name: str) -> bool:
        return name in self._items

    def names(self) -> list[str]:
        return sorted(self._items)
