"""Probe registry: a new probe is one file with `@register_probe` plus one line in PROBE_MODULES."""

from __future__ import annotations

import importlib

PROBE_MODULES = [
    "attnlab.probes.retrieval",
    "attnlab.probes.induction",
    "attnlab.probes.previous_token",
    "attnlab.probes.duplicate",
    "attnlab.probes.prefix_matching",
    "attnlab.probes.kv_retrieval",
]

_PROBES: dict[str, type] = {}


def register_probe(cls: type) -> type:
    assert cls.name and cls.name not in _PROBES, f"probe name {cls.name!r} missing or taken"
    _PROBES[cls.name] = cls
    return cls


def _load() -> None:
    for module in PROBE_MODULES:
        importlib.import_module(module)


def probe_names() -> list[str]:
    """In PROBE_MODULES order, whatever order the modules happened to be imported in."""
    _load()
    return sorted(_PROBES, key=lambda name: PROBE_MODULES.index(_PROBES[name].__module__))


def get_probe(name: str):
    _load()
    if name not in _PROBES:
        raise ValueError(f"unknown probe {name!r}; allowed: {', '.join(probe_names())}")
    return _PROBES[name]()
