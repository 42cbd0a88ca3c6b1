"""Config errors a user can cause raise ValueError naming the field and what is allowed."""

from __future__ import annotations

import pytest

from attnlab import AttnLabConfig
from attnlab.archs.presets import PRESETS, preset


def make(**kw):
    base = dict(hidden_size=32, num_attention_heads=4, num_hidden_layers=2)
    base.update(kw)
    return AttnLabConfig(**base)


@pytest.mark.parametrize(
    "kwargs, words",
    [
        (
            {"layers": [{"type": "mamba"}, {"type": "full"}]},
            ["layers[0].type", "'mamba'", "full", "lightning", "mla", "swa", "intra"],
        ),
        ({"mixers": {"X": {"type": "retnet"}}, "layers": "X"}, ["layers[0].type", "allowed"]),
        ({"layers": "LLF"}, ["length 3", "num_hidden_layers = 2"]),
        ({"layers": "FQ"}, ["letter(s) ['Q']", "allowed letters"]),
        ({"layers": [{"type": "full"}]}, ["1 specs", "num_hidden_layers = 2"]),
        ({"num_attention_heads": 3}, ["num_attention_heads = 3", "hidden_size = 32"]),
        ({"num_key_value_heads": 3}, ["num_key_value_heads = 3", "num_attention_heads = 4"]),
        ({"layers": "S", "mixers": {"S": {"type": "swa", "window": 0}}}, ["window = 0", "positive integer"]),
        (
            {"layers": "S", "mixers": {"S": {"type": "swa", "window": -4}}},
            ["window = -4", "positive integer"],
        ),
        ({"layers": "F", "mixers": {"F": {"type": "full", "window": 8}}}, ["window", "swa"]),
        (
            {"layers": "F", "mixers": {"F": {"type": "full", "num_kv_heads": 3}}},
            ["num_kv_heads = 3", "num_heads = 4"],
        ),
        (
            {"layers": "F", "mixers": {"F": {"type": "full", "windw": 8}}},
            ["unknown field", "windw", "allowed"],
        ),
        ({"layers": "M", "mixers": {"M": {"type": "mla", "kv_lora_rank": 0}}}, ["kv_lora_rank"]),
        ({"layers": "M", "mixers": {"M": {"type": "mla", "qk_rope_head_dim": -2}}}, ["qk_rope_head_dim"]),
        ({"layers": "L", "mixers": {"L": {"type": "lightning", "block_size": 0}}}, ["block_size"]),
        (
            {"layers": "I", "mixers": {"I": {"type": "intra", "parts": [{"type": "full", "heads": 4}]}}},
            ["parts", "at least two"],
        ),
        (
            {
                "layers": "I",
                "mixers": {"I": {"type": "intra", "parts": [{"type": "full"}, {"type": "swa", "heads": 2}]}},
            },
            ["parts[0]", "heads"],
        ),
        ({"ffn": "conv"}, ["ffn = 'conv'", "dense", "moe"]),
        ({"ffn": "moe", "num_experts": 2, "num_experts_per_tok": 3}, ["num_experts_per_tok = 3", "1..2"]),
        ({"layers": 7}, ["layers must be a pattern string or a list"]),
    ],
)
def test_bad_config_raises_value_error_naming_the_field(kwargs, words):
    with pytest.raises(ValueError) as err:
        make(**kwargs)
    for w in words:
        assert w in str(err.value), (w, str(err.value))


def test_pattern_repeats_to_fill_layers():
    cfg = make(num_hidden_layers=8, layers="LLLLLLLF")
    assert [s.type for s in cfg.layer_specs] == ["lightning"] * 7 + ["full"]
    cfg = make(num_hidden_layers=6, layers="SF")
    assert [s.type for s in cfg.layer_specs] == ["swa", "full"] * 3


def test_mixers_override_default_letters_and_add_new_ones():
    cfg = make(
        layers="SX", mixers={"S": {"type": "swa", "window": 7}, "X": {"type": "full", "qk_norm": True}}
    )
    assert cfg.layer_specs[0].window == 7 and cfg.layer_specs[1].qk_norm


@pytest.mark.parametrize(
    "name, expected",
    [
        ("minimax01", "LLLLLLLF"),
        ("gpt-oss", "SF"),
        ("gemma3", "SSSSSF"),
        ("qwen3-next", "LLLF"),
        ("deepseek-v3", "M"),
    ],
)
def test_presets_express_published_layouts(name, expected):
    spec = preset(name)
    assert spec["layers"] == expected
    cfg = make(num_hidden_layers=len(expected) * 2, **spec)
    letters = {"full": "F", "swa": "S", "lightning": "L", "mla": "M"}
    assert "".join(letters[s.type] for s in cfg.layer_specs) == expected * 2


def test_unknown_preset_lists_the_allowed_names():
    with pytest.raises(ValueError, match="allowed: " + ", ".join(sorted(PRESETS))):
        preset("llama")
