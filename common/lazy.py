"""Public names that load on first use (PEP 562), so importing a folder — and `attnlab --help` —
does not import torch, transformers or every module of the folder."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable


def lazy_exports(package: str, table: dict[str, str]) -> Callable[[str], object]:
    """A module `__getattr__` for `package`: `table` maps each public name to the module (within
    the package) that defines it, or to "module:attribute" when the public name differs."""

    def __getattr__(name: str):
        if name not in table:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        module, _, attribute = table[name].partition(":")
        value = getattr(importlib.import_module(f"{package}.{module}"), attribute or name)
        setattr(sys.modules[package], name, value)  # later lookups skip this function
        return value

    return __getattr__
