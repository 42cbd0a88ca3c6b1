"""Which nn.Linear modules a scheme quantizes: the `modules` patterns minus the `skip` patterns
(scheme.py says how a pattern matches), checked against the model so that a bad choice fails
before anything is trained or written: a `modules` pattern that matches no Linear, a selection
that `skip` empties, a group size that does not divide a selected in_features, a selected weight
tied to another (lm_head tied to the embeddings)."""

from __future__ import annotations

from fnmatch import fnmatchcase

from torch import nn

from .scheme import Label, QuantScheme, quant_field

ALIASES = {"norms": "*norm"}


def matches(name: str, pattern: str) -> bool:
    """A glob over the whole dotted name, or over any one of its parts."""
    pattern = ALIASES.get(pattern, pattern)
    return fnmatchcase(name, pattern) or any(fnmatchcase(part, pattern) for part in name.split("."))


def linear_modules(model: nn.Module) -> dict[str, nn.Linear]:
    """Every nn.Linear (torchao's FakeQuantizedLinear included: it subclasses it), by name."""
    return {name: m for name, m in model.named_modules() if isinstance(m, nn.Linear)}


def select_linears(model: nn.Module, scheme: QuantScheme, label: Label = quant_field) -> list[str]:
    """Names of the nn.Linear modules `scheme` quantizes, in model order."""
    linears = linear_modules(model)
    for pattern in scheme.modules:
        if not any(matches(name, pattern) for name in linears):
            examples = ", ".join(list(linears)[:4])
            raise ValueError(
                f"{label('modules')} pattern {pattern!r} matches no nn.Linear of the model "
                f"(its Linear modules are named like {examples})"
            )
    chosen = [
        name
        for name in linears
        if any(matches(name, p) for p in scheme.modules) and not any(matches(name, p) for p in scheme.skip)
    ]
    if not chosen:
        raise ValueError(
            f"{label('skip')} {scheme.skip} excludes every module {label('modules')} {scheme.modules} "
            f"selects; nothing is left to quantize"
        )
    for name in chosen:
        k = linears[name].in_features
        if k % scheme.group_size:
            raise ValueError(
                f"{label('group_size')} = {scheme.group_size} does not divide in_features = {k} of {name}; "
                f"allowed: a group size that divides the in_features of every quantized module "
                f"(or add {name} to {label('skip')})"
            )
    check_untied(model, chosen, label)
    return chosen


def check_untied(model: nn.Module, chosen: list[str], label: Label) -> None:
    """A quantized weight must be its own: a tied one (lm_head = embed_tokens) would be stored twice
    in two formats, or the embedding would silently become INT4."""
    owners: dict[int, list[str]] = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        owners.setdefault(id(p), []).append(name)
    for name in chosen:
        shared = owners.get(id(model.get_submodule(name).weight), [])
        if len(shared) > 1:
            raise ValueError(
                f"{name} shares its weight with {[s for s in shared if not s.startswith(name + '.')]} "
                f"(tied); add {name} to {label('skip')}"
            )
