"""attnlab full attention <-> Hugging Face Llama, same weights both ways.

`to_llama`: the peer that serving benchmarks compare against, and a way to hand attnlab weights to
other engines (vLLM serves the saved folder). `from_llama`: Llama-architecture checkpoints become
attnlab models that attnlab can probe, evaluate and serve. `attnlab convert` runs either on folders.
"""

from __future__ import annotations

from transformers import LlamaConfig, LlamaForCausalLM

from .config import AttnLabConfig
from .model import AttnLabForCausalLM

# attnlab name -> Llama name, inside `model.layers.{i}.`
LAYER_NAMES = {
    "input_norm": "input_layernorm",
    "mixer.q_proj": "self_attn.q_proj",
    "mixer.k_proj": "self_attn.k_proj",
    "mixer.v_proj": "self_attn.v_proj",
    "mixer.o_proj": "self_attn.o_proj",
    "post_mixer_norm": "post_attention_layernorm",
    "ffn.gate_proj": "mlp.gate_proj",
    "ffn.up_proj": "mlp.up_proj",
    "ffn.down_proj": "mlp.down_proj",
}


def llama_config(model) -> LlamaConfig:
    cfg = model.config
    specs = cfg.layer_specs
    bad = [
        i for i, s in enumerate(specs) if s.type != "full" or s.qk_norm or s.output_gate or s.sinks or s.bias
    ]
    if bad or cfg.ffn != "dense" or any(s.partial_rotary_factor != 1 for s in specs):
        raise ValueError(
            "only plain full-attention attnlab models (type 'full' without qk_norm, output_gate, sinks, "
            f"bias or partial rotary; dense FFN) convert to Llama; layers {bad or 'all'} do not qualify"
        )
    s = specs[0]
    return LlamaConfig(
        vocab_size=cfg.vocab_size,
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_hidden_layers,
        num_attention_heads=s.num_heads,
        num_key_value_heads=s.num_kv_heads,
        head_dim=s.head_dim,
        rms_norm_eps=cfg.rms_norm_eps,
        rope_theta=s.rope_theta,
        max_position_embeddings=cfg.max_position_embeddings,
        tie_word_embeddings=False,
        attention_bias=False,
        mlp_bias=False,
    )


def to_llama(model) -> LlamaForCausalLM:
    """-> LlamaForCausalLM holding `model`'s weights (same dtype, eval mode)."""
    llama = LlamaForCausalLM(llama_config(model)).to(model.dtype).eval()
    ours = model.state_dict()
    theirs = {}
    for name, tensor in ours.items():
        if name.startswith("model.layers."):
            _, _, i, rest = name.split(".", 3)
            module, leaf = rest.rsplit(".", 1)
            theirs[f"model.layers.{i}.{LAYER_NAMES[module]}.{leaf}"] = tensor
        else:
            theirs[name] = tensor
    missing, unexpected = llama.load_state_dict(theirs, strict=False)
    assert not unexpected and all("rotary" in m for m in missing), (missing, unexpected)
    return llama


def from_llama(llama: LlamaForCausalLM) -> AttnLabForCausalLM:
    """-> an attnlab model of 'full' layers holding `llama`'s weights (same dtype, eval mode)."""
    cfg = llama.config
    rope = dict(getattr(cfg, "rope_parameters", None) or {})
    theta = rope.get("rope_theta", getattr(cfg, "rope_theta", None))
    problems = []
    if rope.get("rope_type", "default") != "default":
        problems.append(f"rope_type {rope.get('rope_type')!r} (only 'default' RoPE)")
    if getattr(cfg, "attention_bias", False) or getattr(cfg, "mlp_bias", False):
        problems.append("attention_bias/mlp_bias")
    if getattr(cfg, "hidden_act", "silu") != "silu":
        problems.append(f"hidden_act {cfg.hidden_act!r} (only silu)")
    if problems:
        raise ValueError(f"this Llama checkpoint does not convert to attnlab: {'; '.join(problems)}")
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    ours = AttnLabConfig(
        vocab_size=cfg.vocab_size,
        hidden_size=cfg.hidden_size,
        num_hidden_layers=cfg.num_hidden_layers,
        num_attention_heads=cfg.num_attention_heads,
        num_key_value_heads=cfg.num_key_value_heads,
        head_dim=head_dim,
        layers="F",
        mixers={"F": {"type": "full"}},
        intermediate_size=cfg.intermediate_size,
        rope_theta=float(theta if theta is not None else 10000.0),
        rms_norm_eps=cfg.rms_norm_eps,
        max_position_embeddings=cfg.max_position_embeddings,
        tie_word_embeddings=bool(getattr(cfg, "tie_word_embeddings", False)),
        bos_token_id=cfg.bos_token_id,
        eos_token_id=cfg.eos_token_id,
        pad_token_id=cfg.pad_token_id,
    )
    model = AttnLabForCausalLM(ours).to(llama.dtype).eval()
    back = {v: k for k, v in LAYER_NAMES.items()}
    state = {}
    for name, tensor in llama.state_dict().items():
        if "rotary" in name:
            continue
        if name.startswith("model.layers."):
            _, _, i, rest = name.split(".", 3)
            module, leaf = rest.rsplit(".", 1)
            name = f"model.layers.{i}.{back[module]}.{leaf}"
        state[name] = tensor
    missing, unexpected = model.load_state_dict(state, strict=False)
    tied = {"lm_head.weight"} if ours.tie_word_embeddings else set()
    assert not unexpected and set(missing) <= tied, (missing, unexpected)
    return model


__all__ = ["from_llama", "to_llama"]
