"""Named layouts of published hybrid models, scaled by the caller (gpt-fast style presets).

    AttnLabConfig(**preset("minimax01"), hidden_size=128, num_hidden_layers=8)

Each entry gives `layers` (pattern) and `mixers` (letter -> spec); the pattern repeats to fill
`num_hidden_layers`, which must be a multiple of its length. Each entry's comment says which
published model (its HF config / report) the ratio and windows come from.
"""

from __future__ import annotations

import copy

PRESETS: dict[str, dict] = {
    # MiniMax-01: one softmax layer after every 7 lightning layers.
    "minimax01": {"layers": "LLLLLLLF", "mixers": {"L": {"type": "lightning"}, "F": {"type": "full"}}},
    # GPT-OSS: even layers sliding window 128, odd layers full; learned sinks on every layer.
    "gpt-oss": {
        "layers": "SF",
        "mixers": {"S": {"type": "swa", "window": 128, "sinks": True}, "F": {"type": "full", "sinks": True}},
    },
    # Gemma 3: 5 local : 1 global ((i+1) % 6 == 0 is global), window 512, local RoPE base 1e4,
    # global 1e6, QK-norm.
    "gemma3": {
        "layers": "SSSSSF",
        "mixers": {
            "S": {"type": "swa", "window": 512, "rope_theta": 10000.0, "qk_norm": True},
            "F": {"type": "full", "rope_theta": 1000000.0, "qk_norm": True},
        },
    },
    # Qwen3-Next-style: 3 linear : 1 gated full ((i+1) % 4 == 0 is full). Qwen3-Next's linear layers
    # are Gated DeltaNet; lightning stands in for the linear family here.
    "qwen3-next": {
        "layers": "LLLF",
        "mixers": {
            "L": {"type": "lightning"},
            "F": {"type": "full", "output_gate": True, "qk_norm": True, "partial_rotary_factor": 0.25},
        },
    },
    # DeepSeek-V3: MLA on every layer.
    "deepseek-v3": {"layers": "M", "mixers": {"M": {"type": "mla"}}},
}


def preset(name: str) -> dict:
    if name not in PRESETS:
        raise ValueError(f"preset {name!r} is unknown; allowed: {', '.join(sorted(PRESETS))}")
    return copy.deepcopy(PRESETS[name])
