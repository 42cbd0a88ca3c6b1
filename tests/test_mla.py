"""`mla` mixer: parity with HF `DeepseekV3Attention`, absorbed == naive, prefill/decode splits,
latent-only cache, gradients, spec errors."""

from __future__ import annotations

import pytest
import torch
from torch.func import functional_call
from transformers import DeepseekV3Config, DynamicCache
from transformers.masking_utils import create_causal_mask
from transformers.models.deepseek_v3.modeling_deepseek_v3 import (
    DeepseekV3Attention,
    DeepseekV3RotaryEmbedding,
)

from attnlab.archs.families import build_mixer, resolve_spec
from attnlab.archs.mla import MlaSpec
from attnlab.archs.state import LatentState

HIDDEN = 48
DIMS = dict(num_heads=4, kv_lora_rank=20, qk_nope_head_dim=8, qk_rope_head_dim=6, v_head_dim=10)
TOL = dict(rtol=1e-5, atol=1e-5)


def make_mla(q_lora_rank=24, rope_interleave=True, dtype=torch.float32, seed=0):
    torch.manual_seed(seed)
    spec = resolve_spec(
        {"type": "mla", "q_lora_rank": q_lora_rank, "rope_interleave": rope_interleave, **DIMS}, {}, "mla"
    )
    mixer = build_mixer(spec, layer_idx=0, num_layers=1, hidden_size=HIDDEN).to(dtype)
    # Non-trivial norm weights, so a mix-up between the two norms would show.
    with torch.no_grad():
        for name, p in mixer.named_parameters():
            if "layernorm" in name:
                p.uniform_(0.5, 1.5)
    return mixer


def make_hf(mixer):
    """A tiny DeepseekV3Attention with the same shapes as `mixer` and its weights copied in."""
    spec = mixer.spec
    cfg = DeepseekV3Config(
        vocab_size=32,
        hidden_size=HIDDEN,
        num_hidden_layers=1,
        num_attention_heads=spec.num_heads,
        num_key_value_heads=spec.num_heads,
        q_lora_rank=spec.q_lora_rank or None,
        kv_lora_rank=spec.kv_lora_rank,
        qk_nope_head_dim=spec.qk_nope_head_dim,
        qk_rope_head_dim=spec.qk_rope_head_dim,
        v_head_dim=spec.v_head_dim,
        rope_interleave=spec.rope_interleave,
        rope_parameters={"rope_type": "default", "rope_theta": spec.rope_theta},
        attn_implementation="eager",
    )
    hf = DeepseekV3Attention(cfg, layer_idx=0)
    hf.load_state_dict(mixer.state_dict(), strict=True)  # same names and layouts, 1:1
    return hf, DeepseekV3RotaryEmbedding(cfg), cfg


def hf_forward(hf, rotary, cfg, x, start=0, cache=None):
    """HF's attention the way DeepseekV3Model drives it: its rotary module and its causal mask."""
    b, t, _ = x.shape
    positions = torch.arange(start, start + t).expand(b, t)
    mask = create_causal_mask(
        config=cfg, inputs_embeds=x, attention_mask=None, cache=cache, position_ids=positions
    )
    out, weights = hf(x, position_embeddings=rotary(x, positions), attention_mask=mask, cache=cache)
    return out, weights


@pytest.mark.parametrize("rope_interleave", [True, False])
@pytest.mark.parametrize("q_lora_rank", [24, 0], ids=["q_lora", "direct_q"])
def test_matches_hf_deepseek_v3_attention(q_lora_rank, rope_interleave):
    mixer = make_mla(q_lora_rank, rope_interleave)
    hf, rotary, cfg = make_hf(mixer)
    x = torch.randn(2, 9, HIDDEN)
    expected, _ = hf_forward(hf, rotary, cfg, x)
    for path in ("naive", "absorbed"):
        mixer.path = path
        y, _ = mixer(x)
        torch.testing.assert_close(y, expected, **TOL)


def test_attention_map_matches_hf_attention_weights():
    mixer = make_mla()
    hf, rotary, cfg = make_hf(mixer)
    x = torch.randn(2, 7, HIDDEN)
    _, expected = hf_forward(hf, rotary, cfg, x)  # [B, H, T, T], eager softmax probabilities
    probs = mixer.attention_map(x)
    assert probs.shape == (2, DIMS["num_heads"], 7, 7)
    torch.testing.assert_close(probs, expected, **TOL)
    torch.testing.assert_close(probs.sum(-1), torch.ones(2, DIMS["num_heads"], 7))
    assert torch.all(probs.triu(1) == 0)


def test_cached_decode_matches_hf_cached_decode():
    mixer = make_mla()
    hf, rotary, cfg = make_hf(mixer)
    x = torch.randn(2, 8, HIDDEN)
    cache, state = DynamicCache(config=cfg), mixer.new_state(2, torch.float32)
    for start, stop in [(0, 5), (5, 6), (6, 7), (7, 8)]:  # prefill, then decode (absorbed path)
        expected, _ = hf_forward(hf, rotary, cfg, x[:, start:stop], start=start, cache=cache)
        y, state = mixer(x[:, start:stop], state)
        torch.testing.assert_close(y, expected, **TOL)


def test_absorbed_path_equals_naive_path():
    mixer = make_mla()
    x = torch.randn(2, 10, HIDDEN)
    outs = {}
    for path in ("naive", "absorbed"):
        mixer.path = path
        state = mixer.new_state(2, torch.float32)
        prefill, state = mixer(x[:, :7], state)
        decode = [mixer(x[:, t : t + 1], state)[0] for t in range(7, 10)]
        outs[path] = torch.cat([prefill, *decode], dim=1)
    torch.testing.assert_close(outs["absorbed"], outs["naive"], **TOL)


def test_auto_path_uses_absorbed_only_for_cached_single_token(monkeypatch):
    mixer = make_mla()
    used = []
    for name in ("_naive", "_absorbed"):
        real = getattr(mixer, name)
        monkeypatch.setattr(mixer, name, lambda *a, _n=name, _f=real: used.append(_n) or _f(*a))
    x = torch.randn(1, 4, HIDDEN)
    mixer(x)  # full sequence
    mixer(x[:, :1])  # one token, no cache: still a full forward
    state = mixer.new_state(1, torch.float32)
    mixer(x[:, :3], state)  # prefill
    mixer(x[:, 3:], state)  # decode
    assert used == ["_naive", "_naive", "_naive", "_absorbed"]


def test_unknown_path_is_rejected():
    mixer = make_mla()
    mixer.path = "fast"
    with pytest.raises(ValueError, match="auto, naive, absorbed"):
        mixer(torch.randn(1, 2, HIDDEN))


@pytest.mark.parametrize("q_lora_rank", [24, 0], ids=["q_lora", "direct_q"])
def test_full_forward_equals_chunked_prefill_equals_token_decode(q_lora_rank):
    mixer = make_mla(q_lora_rank)
    b, t = 2, 13
    x = torch.randn(b, t, HIDDEN)
    full, _ = mixer(x)

    gen = torch.Generator().manual_seed(1)
    cuts = sorted(torch.randperm(t - 1, generator=gen)[:4].add(1).tolist())
    state, chunks = mixer.new_state(b, torch.float32), []
    for start, stop in zip([0, *cuts], [*cuts, t], strict=True):
        y, state = mixer(x[:, start:stop], state)
        chunks.append(y)
    torch.testing.assert_close(torch.cat(chunks, dim=1), full, **TOL)

    state = mixer.new_state(b, torch.float32)
    steps = [mixer(x[:, i : i + 1], state)[0] for i in range(t)]
    torch.testing.assert_close(torch.cat(steps, dim=1), full, **TOL)
    assert state.seq_len == t


def test_future_tokens_do_not_change_past_outputs():
    mixer = make_mla()
    x = torch.randn(1, 8, HIDDEN)
    x2 = x.clone()
    x2[:, 5:] = torch.randn(1, 3, HIDDEN)
    for path in ("naive", "absorbed"):
        mixer.path = path
        torch.testing.assert_close(mixer(x2)[0][:, :5], mixer(x)[0][:, :5], rtol=0, atol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cache_holds_only_latent_and_rope_key(dtype):
    mixer = make_mla(dtype=dtype)
    b, t = 3, 6
    x = torch.randn(b, t, HIDDEN, dtype=dtype)
    state = mixer.new_state(b, dtype)
    assert isinstance(state, LatentState)
    mixer(x[:, :4], state)
    mixer(x[:, 4:5], state)
    mixer(x[:, 5:], state)
    r, dr = DIMS["kv_lora_rank"], DIMS["qk_rope_head_dim"]
    assert [tuple(s.shape) for s in state.tensors()] == [(b, t, r), (b, t, dr)]
    assert all(s.dtype == dtype for s in state.tensors())
    assert mixer.state_bytes(t, dtype) == t * (r + dr) * torch.finfo(dtype).bits // 8
    assert state.nbytes() == b * mixer.state_bytes(t, dtype)


def test_cached_latent_is_the_normalised_latent_and_rotated_rope_key():
    mixer = make_mla()
    hf, rotary, cfg = make_hf(mixer)
    x = torch.randn(2, 5, HIDDEN)
    state = mixer.new_state(2, torch.float32)
    mixer(x, state)
    cache = DynamicCache(config=cfg)
    hf_forward(hf, rotary, cfg, x, cache=cache)
    hf_c_kv, hf_k_pe = cache.layers[0].keys, cache.layers[0].values  # HF caches [B, 1, T, R], [B, 1, T, Dr]
    torch.testing.assert_close(state.c_kv, hf_c_kv[:, 0], **TOL)
    torch.testing.assert_close(state.k_pe, hf_k_pe[:, 0], **TOL)


@pytest.mark.parametrize("path", ["naive", "absorbed"])
def test_gradcheck_float64(path):
    torch.manual_seed(0)
    spec = resolve_spec(
        {
            "type": "mla",
            "num_heads": 2,
            "q_lora_rank": 5,
            "kv_lora_rank": 4,
            "qk_nope_head_dim": 3,
            "qk_rope_head_dim": 2,
            "v_head_dim": 3,
        },
        {},
        "mla",
    )
    mixer = build_mixer(spec, layer_idx=0, num_layers=1, hidden_size=6).double()
    mixer.path = path

    def run(prefix, x, w_kv_b):
        # A cached prefix, then a new chunk: gradients must flow through the cache into earlier
        # tokens, and into kv_b_proj, which the absorbed path reads as W_UK and W_UV.
        params = {"kv_b_proj.weight": w_kv_b}
        state = mixer.new_state(1, torch.float64)
        y0, state = functional_call(mixer, params, (prefix, state))
        y1, _ = functional_call(mixer, params, (x, state))
        return torch.cat([y0, y1], dim=1)

    prefix = torch.randn(1, 2, 6, dtype=torch.float64, requires_grad=True)
    x = torch.randn(1, 2, 6, dtype=torch.float64, requires_grad=True)
    w = mixer.kv_b_proj.weight.detach().clone().requires_grad_(True)
    assert torch.autograd.gradcheck(run, (prefix, x, w))


@pytest.mark.parametrize(
    "field, value",
    [
        ("kv_lora_rank", 0),
        ("kv_lora_rank", -8),
        ("q_lora_rank", -1),
        ("qk_nope_head_dim", 0),
        ("qk_rope_head_dim", -2),
        ("qk_rope_head_dim", 5),
        ("v_head_dim", 0),
        ("num_heads", 0),
        ("rope_theta", 0.0),
    ],
)
def test_bad_spec_raises_value_error_naming_the_field(field, value):
    with pytest.raises(ValueError, match=rf"layers\[2\]\.{field} = "):
        resolve_spec({"type": "mla", field: value}, {}, "layers[2]")


def test_q_lora_rank_zero_means_a_direct_query_projection():
    mixer = make_mla(q_lora_rank=0)
    assert hasattr(mixer, "q_proj") and not hasattr(mixer, "q_a_proj")
    assert mixer.q_proj.weight.shape == (DIMS["num_heads"] * (8 + 6), HIDDEN)


def test_spec_inherits_model_wide_defaults():
    spec = resolve_spec({"type": "mla"}, {"num_heads": 6, "head_dim": 64, "rope_theta": 5e5}, "layers[0]")
    assert isinstance(spec, MlaSpec)
    assert (spec.num_heads, spec.rope_theta, spec.q_lora_rank) == (6, 5e5, 64)
