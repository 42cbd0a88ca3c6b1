"""`swa`: sliding-window softmax attention, window W (W keys including the query's own), with
optional learned per-head sinks (GPT-OSS: even layers window 128, sinks on every layer).
Its cache keeps at most W-1 tokens (`WindowState`).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..common import check_positive_int
from .families import register_mixer
from .full import SoftmaxAttention
from .specs import SoftmaxSpec


@dataclass
class SwaSpec(SoftmaxSpec):
    type: str = "swa"
    window: int | None = 128

    def validate(self, where: str) -> None:
        check_positive_int(self.window, f"{where}.window")
        super().validate(where)


@register_mixer("swa", SwaSpec)
class SlidingWindowAttention(SoftmaxAttention):
    pass
