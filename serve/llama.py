"""A full-attention attnlab model as a Hugging Face Llama with the same weights (the peer that
serving benchmarks compare against, and a way to hand attnlab weights to other engines)."""

from __future__ import annotations

from transformers import LlamaConfig, LlamaForCausalLM

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


__all__ = ["to_llama"]
