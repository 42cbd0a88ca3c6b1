"""The one registration idiom: mixer families, kernel ops and backends, eval tasks and probes.

A registry is declared once, with the modules that fill it:

    PROBES = Registry("probe", modules=["attnlab.probes.retrieval", ...])

and each of those modules registers its entries with the decorator (or a direct call):

    @PROBES.register("retrieval")
    class RetrievalProbe: ...

Adding an entry = one module + one line in its registry's `modules`. The modules are imported on
the first lookup, not when the registry is declared, so importing a folder stays cheap and a
module whose optional library is missing can still load (it registers entries that report
themselves unavailable). The module list is data, not an import: the dependency arrows still
point from the entries to the registry only (docs/architecture.md).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Hashable, Iterator, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """name -> entry, in registration order (= `modules` order, then order within a module)."""

    def __init__(self, kind: str, modules: Sequence[str] = ()):
        self.kind = kind  # what an entry is, for error messages: "mixer type", "probe", ...
        self.modules = list(modules)
        self._entries: dict[Hashable, T] = {}
        self._loaded = False
        self._loading = False

    def register(self, name: Hashable, entry: T | None = None) -> Callable[[T], T] | T:
        """`@registry.register(name)` on a class or function, or `registry.register(name, entry)`."""
        if entry is not None:
            return self._add(name, entry)
        return lambda obj: self._add(name, obj)

    def _add(self, name: Hashable, entry: T) -> T:
        assert name not in self._entries, f"{self.kind} {name!r} registered twice"
        self._entries[name] = entry
        return entry

    def load(self) -> None:
        """Import every module of the registry once (each registers its entries)."""
        if self._loaded or self._loading:
            return
        self._loading = True
        try:
            for module in self.modules:
                importlib.import_module(module)
            self._loaded = True
        finally:
            self._loading = False

    def get(self, name: Hashable, where: str | None = None) -> T:
        """The entry, or a ValueError naming the field (`where`) and every allowed name."""
        self.load()
        if name not in self._entries:
            label = f"{where} = {name!r}" if where else f"{name!r}"
            raise ValueError(
                f"{label} is not a known {self.kind}; allowed: {', '.join(map(str, self.names()))}"
            )
        return self._entries[name]

    def names(self) -> list:
        self.load()
        return list(self._entries)

    def items(self) -> list[tuple[Hashable, T]]:
        self.load()
        return list(self._entries.items())

    def __contains__(self, name: object) -> bool:
        self.load()
        return name in self._entries

    def __iter__(self) -> Iterator:
        return iter(self.names())

    def __len__(self) -> int:
        self.load()
        return len(self._entries)
