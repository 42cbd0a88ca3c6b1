"""Tiny model configurations covering every mixer family and the published hybrid layouts."""

from __future__ import annotations

from attnlab import AttnLabConfig

# name -> (layers, mixers, num_hidden_layers)
VARIANTS: dict[str, tuple] = {
    "full": ("F", {}, 2),
    "full-gated": (
        "F",
        {"F": {"type": "full", "output_gate": True, "qk_norm": True, "partial_rotary_factor": 0.5}},
        2,
    ),
    "swa": ("S", {"S": {"type": "swa", "window": 4}}, 2),
    "swa-sinks": ("S", {"S": {"type": "swa", "window": 4, "sinks": True}}, 2),
    "mla": ("M", {}, 2),
    "lightning": ("L", {"L": {"type": "lightning", "block_size": 4}}, 2),
    "intra-swa-full": (
        "I",
        {
            "I": {
                "type": "intra",
                "parts": [{"type": "swa", "heads": 2, "window": 3}, {"type": "full", "heads": 2}],
            }
        },
        2,
    ),
    "intra-lightning-full": (
        "I",
        {
            "I": {
                "type": "intra",
                "parts": [{"type": "lightning", "heads": 2, "block_size": 4}, {"type": "full", "heads": 2}],
            }
        },
        2,
    ),
    "hybrid-7to1": ("LLLLLLLF", {"L": {"type": "lightning", "block_size": 4}}, 8),
    "hybrid-1to1": (
        "SF",
        {"S": {"type": "swa", "window": 4, "sinks": True}, "F": {"type": "full", "sinks": True}},
        2,
    ),
}


def tiny_config(name: str, **overrides) -> AttnLabConfig:
    layers, mixers, n = VARIANTS[name]
    kwargs = dict(
        vocab_size=64,
        hidden_size=32,
        num_hidden_layers=n,
        num_attention_heads=4,
        num_key_value_heads=2,
        layers=layers,
        mixers=mixers,
        intermediate_size=64,
    )
    kwargs.update(overrides)
    return AttnLabConfig(**kwargs)
