"""The mixer families: a family is one file that registers its class and spec dataclass with
`@register_mixer("name", Spec)`, plus one line in MIXERS' module list (the project's one
registration idiom, attnlab.common.Registry)."""

from __future__ import annotations

import dataclasses
from typing import Any

from ..common import Registry
from .specs import MixerSpec

# type name -> (mixer class, spec dataclass)
MIXERS: Registry[tuple[type, type]] = Registry(
    "mixer type",
    modules=[f"attnlab.archs.{family}" for family in ("full", "swa", "mla", "lightning", "intra")],
)


def register_mixer(name: str, spec_cls: type):
    """Class decorator: registers a mixer class and its spec dataclass under `name`."""

    def wrap(cls):
        MIXERS.register(name, (cls, spec_cls))
        cls.mixer_type = name
        return cls

    return wrap


def mixer_types() -> list[str]:
    return sorted(MIXERS.names())


def _lookup(type_name: Any, where: str) -> tuple[type, type]:
    if type_name not in MIXERS:
        raise ValueError(
            f"{where}.type = {type_name!r} is not a mixer type; allowed: {', '.join(mixer_types())}"
        )
    return MIXERS.get(type_name)


def resolve_spec(spec: dict | Any, defaults: dict, where: str):
    """Turn a user's spec dict into the family's validated spec dataclass.

    `defaults` carries model-wide values (heads, head_dim, rope_theta, …) used for fields the
    spec leaves unset; `where` names the spec in error messages (e.g. "layers[3]").
    """
    if isinstance(spec, MixerSpec):
        spec = spec.to_dict()
    if not isinstance(spec, dict):
        raise ValueError(f"{where} must be a dict with a 'type' key, got {type(spec).__name__}")
    if "type" not in spec:
        raise ValueError(f"{where} has no 'type'; allowed types: {', '.join(mixer_types())}")
    _, spec_cls = _lookup(spec["type"], where)
    fields = {f.name for f in dataclasses.fields(spec_cls)}
    unknown = sorted(set(spec) - fields)
    if unknown:
        raise ValueError(
            f"{where} ({spec['type']}) has unknown field(s) {unknown}; allowed: {', '.join(sorted(fields))}"
        )
    values = {k: v for k, v in defaults.items() if k in fields}
    values.update({k: v for k, v in spec.items() if v is not None})
    return spec_cls.build(values, where)


def build_mixer(spec, layer_idx: int, num_layers: int, hidden_size: int, output_projection: bool = True):
    mixer_cls, _ = _lookup(spec.type, "spec")
    return mixer_cls(
        spec,
        layer_idx=layer_idx,
        num_layers=num_layers,
        hidden_size=hidden_size,
        output_projection=output_projection,
    )
