"""The probes: a new probe is one file whose class is registered with `@register_probe`, plus one
line in PROBES' module list (the project's one registration idiom, attnlab.common.Registry).
This module imports no torch, so `attnlab probe --help` can list the names cheaply."""

from __future__ import annotations

from ..common import Registry

PROBES: Registry[type] = Registry(
    "probe",
    modules=[
        f"attnlab.probes.{module}"
        for module in (
            "retrieval",
            "induction",
            "previous_token",
            "duplicate",
            "prefix_matching",
            "kv_retrieval",
        )
    ],
)


def register_probe(cls: type) -> type:
    assert cls.name, f"probe class {cls.__name__} has no name"
    return PROBES.register(cls.name, cls)


def probe_names() -> list[str]:
    """In PROBES' module order, whatever order the modules happened to be imported in."""
    order = {module: i for i, module in enumerate(PROBES.modules)}
    return sorted(PROBES.names(), key=lambda name: order[PROBES.get(name).__module__])


def get_probe(name: str):
    if name not in PROBES:
        raise ValueError(f"unknown probe {name!r}; allowed: {', '.join(probe_names())}")
    return PROBES.get(name)()
