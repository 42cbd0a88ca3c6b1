"""The quantization scheme: what is quantized and how, as a train config's `quant:` section, as
`attnlab quantize`'s flags, and as `config.attnlab_quant` in a saved model (the record of how it
was trained, which `attnlab quantize --method qat-convert` reads back).

    weights: int4        the only format built: INT4 weights, 16-bit activations (W4A16)
    group_size: 32       inputs per scale (Kimi K2: 32); must divide every quantized in_features
    symmetric: true      the only mapping built: scale = absmax / 7.5, no zero point
    qat: true            train with torchao's fake quant (train config); false: plain training
    start_step: 0        the optimizer step from which fake quant is on (off before it)
    modules: [model.layers.*]                          which nn.Linear modules, as name patterns
    skip: [lm_head, embed_tokens, norms, router]       excluded, as name patterns

A pattern matches a module's dotted name as a glob (`model.layers.*`, `*.mixer.*`) or one of the
name's parts (`router`, `experts`, `q_proj`, `*_proj`); `norms` stands for `*norm` (every RMSNorm
of the model). Only nn.Linear modules are ever quantized, so `embed_tokens` and `norms` in `skip`
state the rule more than they change the selection; `router` keeps each MoE router in full
precision, `lm_head` the output projection. Torch-free: train configs load it without torch.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field

from ..common import check_bool, check_choice, fail, is_int

WEIGHT_FORMATS = ("int4",)
DEFAULT_MODULES = ("model.layers.*",)
DEFAULT_SKIP = ("lm_head", "embed_tokens", "norms", "router")

Label = Callable[[str], str]  # field name -> how the user wrote it ("quant.group_size", "--group-size")


def section_label(section: str) -> Label:
    return lambda name: f"{section}.{name}"


def quant_field(name: str) -> str:
    """A field as the train config spells it: quant.group_size."""
    return f"quant.{name}"


def flag_label(name: str) -> str:
    """A field as `attnlab quantize` spells it: --group-size."""
    return "--" + name.replace("_", "-")


@dataclass
class QuantScheme:
    weights: str = "int4"
    group_size: int = 32
    symmetric: bool = True
    qat: bool = False
    start_step: int = 0
    modules: list[str] = field(default_factory=lambda: list(DEFAULT_MODULES))
    skip: list[str] = field(default_factory=lambda: list(DEFAULT_SKIP))

    def check(self, label: Label = quant_field) -> QuantScheme:
        """Raises ValueError naming the field (as `label` spells it) and what it may be."""
        check_choice(self.weights, WEIGHT_FORMATS, label("weights"))
        if self.symmetric is not True:
            fail(
                label("symmetric"),
                self.symmetric,
                "only symmetric INT4 is built (scale = absmax / 7.5, no zero point); allowed: true",
            )
        if not is_int(self.group_size) or self.group_size < 2:
            fail(label("group_size"), self.group_size, "must be an integer >= 2 (inputs per scale)")
        check_bool(self.qat, label("qat"))
        if not is_int(self.start_step) or self.start_step < 0:
            fail(label("start_step"), self.start_step, "must be a non-negative integer (an optimizer step)")
        check_patterns(self.modules, label("modules"), allow_empty=False)
        check_patterns(self.skip, label("skip"), allow_empty=True)
        return self

    def to_dict(self) -> dict:
        """The fields of the scheme only (a subclass's extra state stays out)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(QuantScheme)}

    @classmethod
    def from_dict(cls, values: dict, where: str) -> QuantScheme:
        """A recorded scheme (config.attnlab_quant) back; `where` names it in errors."""
        if not isinstance(values, dict):
            raise ValueError(f"{where} = {values!r}: must be a mapping of quantization fields")
        known = {f.name for f in dataclasses.fields(QuantScheme)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"{where} has unknown field(s) {unknown}; allowed: {', '.join(sorted(known))}")
        return QuantScheme(**values).check(section_label(where))


def check_patterns(value, where: str, allow_empty: bool) -> None:
    ok = isinstance(value, list) and all(isinstance(p, str) and p for p in value)
    if not ok or (not value and not allow_empty):
        fail(
            where,
            value,
            "must be a " + ("" if allow_empty else "non-empty ") + "list of module name patterns",
        )
