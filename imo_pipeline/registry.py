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


def declared_names(package: str, decorator: str) -> list[str]:
    """Names registered in ``package``'s modules with ``@decorator("name")``, read from the source without
    importing it (for `--help` texts, so that `imo` starts without importing torch). A test keeps this
    equal to the imported registry."""
    import importlib.util
    import re
    from pathlib import Path

    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return []
    pattern = re.compile(rf"^@{decorator}\(\s*[\"']([^\"']+)[\"']", re.M)   # decorators at the start of a line
    return sorted({name for folder in spec.submodule_search_locations for f in Path(folder).glob("*.py")
                   for name in pattern.findall(f.read_text(encoding="utf-8"))})
