"""Spec dataclasses shared by the mixer families (their field checks live in common/validators.py)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ..common import check_bool, check_fraction, check_positive, check_positive_int


@dataclass
class MixerSpec:
    """Base of every family's spec. `build` fills, validates, and returns an instance."""

    type: str = ""

    @classmethod
    def build(cls, values: dict, where: str):
        spec = cls(**values)
        spec.validate(where)
        return spec

    def validate(self, where: str) -> None:  # overridden per family
        pass

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass
class SoftmaxSpec(MixerSpec):
    """Softmax attention (full or windowed): MHA/GQA, RoPE (partial allowed), QK-norm, output gate, sinks."""

    num_heads: int = 4
    num_kv_heads: int | None = None
    head_dim: int = 32
    rope_theta: float = 10000.0
    partial_rotary_factor: float = 1.0
    qk_norm: bool = False
    output_gate: bool = False
    sinks: bool = False
    bias: bool = False
    window: int | None = None
    rms_norm_eps: float = 1e-6

    def validate(self, where: str) -> None:
        check_positive_int(self.num_heads, f"{where}.num_heads")
        if self.num_kv_heads is None:
            self.num_kv_heads = self.num_heads
        check_positive_int(self.num_kv_heads, f"{where}.num_kv_heads")
        if self.num_heads % self.num_kv_heads:
            raise ValueError(
                f"{where}.num_kv_heads = {self.num_kv_heads} must divide num_heads = {self.num_heads}"
            )
        check_positive_int(self.head_dim, f"{where}.head_dim")
        check_fraction(self.partial_rotary_factor, f"{where}.partial_rotary_factor")
        rotary = int(self.head_dim * self.partial_rotary_factor)
        if rotary % 2:
            raise ValueError(
                f"{where}.partial_rotary_factor = {self.partial_rotary_factor} gives an odd rotary dim "
                f"{rotary} of head_dim {self.head_dim}; the rotary dim must be even"
            )
        check_positive(self.rope_theta, f"{where}.rope_theta")
        for name in ("qk_norm", "output_gate", "sinks", "bias"):
            check_bool(getattr(self, name), f"{where}.{name}")
        if self.window is not None:
            check_positive_int(self.window, f"{where}.window")

    @property
    def rotary_dim(self) -> int:
        return int(self.head_dim * self.partial_rotary_factor)
