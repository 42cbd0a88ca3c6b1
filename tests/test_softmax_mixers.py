"""Softmax families (`full`, `swa`): parity with HF's public modules and the mixer invariants.

Parity targets (transformers' own modules): `GptOssAttention` (sliding window + sinks, attention bias) and
`Qwen3NextAttention` (sigmoid output gate, zero-centred QK RMSNorm, partial rotary 0.25, GQA).
The HF modules run with eager attention on masks built the way their models build them
(`create_causal_mask` / `create_sliding_window_causal_mask`) and position embeddings from their
own rotary modules. Everything is fp32 on CPU with small shapes.
"""

from __future__ import annotations

import pytest
import torch
from torch.func import functional_call
from transformers import DynamicCache, GptOssConfig, Qwen3NextConfig
from transformers.masking_utils import create_causal_mask, create_sliding_window_causal_mask
from transformers.models.gpt_oss.modeling_gpt_oss import GptOssAttention, GptOssRotaryEmbedding
from transformers.models.qwen3_next.modeling_qwen3_next import Qwen3NextAttention, Qwen3NextRotaryEmbedding

from attnlab.archs.families import build_mixer, resolve_spec
from attnlab.archs.rope import rope_cos_sin
from attnlab.kernels import causal_window_mask

HIDDEN = 32
DEFAULTS = {"num_heads": 4, "head_dim": 8, "rope_theta": 10000.0}
WINDOW = 4
SEQ = 13
ATOL = 1e-5


def make_mixer(spec: dict, hidden: int = HIDDEN, defaults: dict = DEFAULTS, seed: int = 0):
    """Build a mixer from a user spec and give every parameter (sinks, norms too) random values."""
    mixer = build_mixer(resolve_spec(spec, defaults, "layers[0]"), 0, 1, hidden)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in mixer.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
    return mixer.eval()


def positions(b: int, start: int, end: int) -> torch.Tensor:
    return torch.arange(start, end)[None].expand(b, end - start)


# --- GPT-OSS parity --------------------------------------------------------------------------


def gpt_oss_config(window: int) -> GptOssConfig:
    # Plain RoPE: GptOssConfig defaults to YaRN (factor 32), which attnlab's RoPE does not model.
    cfg = GptOssConfig(
        hidden_size=HIDDEN,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=8,
        sliding_window=window,
        num_hidden_layers=2,  # layer 0 sliding, layer 1 full (GPT-OSS's alternation)
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
        vocab_size=16,
        intermediate_size=16,
        num_local_experts=2,
        num_experts_per_tok=1,
    )
    cfg._attn_implementation = "eager"
    return cfg


def gpt_oss_pair(layer_type: str, seed: int = 0):
    """-> (HF config, HF attention, our mixer with the same weights) for a sliding or full layer."""
    cfg = gpt_oss_config(WINDOW)
    layer_idx = cfg.layer_types.index(layer_type)
    torch.manual_seed(seed)
    hf = GptOssAttention(cfg, layer_idx).eval()
    with torch.no_grad():
        for p in hf.parameters():
            p.normal_(0.0, 0.3)
    spec = {"type": "full", "num_kv_heads": 2, "sinks": True, "bias": True}
    if layer_type == "sliding_attention":
        spec.update(type="swa", window=cfg.sliding_window)
    ours = build_mixer(resolve_spec(spec, DEFAULTS, "layers[0]"), 0, 1, HIDDEN).eval()
    ours.load_state_dict(hf.state_dict())  # q/k/v/o_proj (weight, bias) and sinks
    return cfg, hf, ours


def gpt_oss_forward(cfg, hf, x, start=0, cache=None):
    pos = positions(x.shape[0], start, start + x.shape[1])
    cos_sin = GptOssRotaryEmbedding(cfg)(x, pos)
    make_mask = create_sliding_window_causal_mask if hf.sliding_window else create_causal_mask
    mask = make_mask(config=cfg, inputs_embeds=x, attention_mask=None, cache=cache, position_ids=pos)
    return hf(x, cos_sin, mask, cache=cache)  # (out, probs without the sink column)


def test_window_convention_matches_hf_sliding_mask():
    """HF sliding_window=W: a query sees W keys including itself (kv > q - W), as ours does."""
    cfg = gpt_oss_config(WINDOW)
    x = torch.zeros(1, SEQ, HIDDEN)
    hf_mask = create_sliding_window_causal_mask(
        config=cfg, inputs_embeds=x, attention_mask=None, cache=None, position_ids=positions(1, 0, SEQ)
    )
    hf_allowed = hf_mask[0, 0] == 0  # additive mask: 0 where allowed, dtype-min elsewhere
    assert hf_allowed.sum(-1).max().item() == WINDOW
    assert torch.equal(causal_window_mask(SEQ, SEQ, 0, 0, WINDOW, x.device), hf_allowed)


def test_rope_matches_gpt_oss_rotary_embedding():
    """GPT-OSS returns half-width cos/sin and rotates (first, second) halves: rotate-half RoPE."""
    cfg = gpt_oss_config(WINDOW)
    pos = positions(2, 0, SEQ)
    hf_cos, hf_sin = GptOssRotaryEmbedding(cfg)(torch.zeros(1), pos)  # [B, T, D/2]
    cos, sin = rope_cos_sin(pos, 8, 10000.0, torch.float32)  # [B, T, D] = both halves repeated
    torch.testing.assert_close(cos, torch.cat([hf_cos, hf_cos], -1), rtol=0, atol=1e-6)
    torch.testing.assert_close(sin, torch.cat([hf_sin, hf_sin], -1), rtol=0, atol=1e-6)


def test_swa_with_sinks_matches_gpt_oss_sliding_layer():
    cfg, hf, ours = gpt_oss_pair("sliding_attention")
    x = torch.randn(2, SEQ, HIDDEN)  # SEQ > window: the window really cuts
    ref, _ = gpt_oss_forward(cfg, hf, x)
    y, _ = ours(x)
    torch.testing.assert_close(y, ref, rtol=0, atol=ATOL)


def test_full_with_sinks_matches_gpt_oss_full_layer():
    cfg, hf, ours = gpt_oss_pair("full_attention")
    x = torch.randn(2, SEQ, HIDDEN)
    ref, _ = gpt_oss_forward(cfg, hf, x)
    y, _ = ours(x)
    torch.testing.assert_close(y, ref, rtol=0, atol=ATOL)


@pytest.mark.parametrize("layer_type", ["sliding_attention", "full_attention"])
def test_attention_map_matches_gpt_oss_eager_probs(layer_type):
    """HF's eager path returns the probabilities with the sink column dropped: our probe map."""
    cfg, hf, ours = gpt_oss_pair(layer_type)
    x = torch.randn(2, SEQ, HIDDEN)
    _, ref_probs = gpt_oss_forward(cfg, hf, x)
    torch.testing.assert_close(ours.attention_map(x), ref_probs, rtol=0, atol=ATOL)


@pytest.mark.parametrize("layer_type", ["sliding_attention", "full_attention"])
def test_chunked_prefill_and_decode_match_gpt_oss_with_dynamic_cache(layer_type):
    cfg, hf, ours = gpt_oss_pair(layer_type)
    x = torch.randn(2, SEQ, HIDDEN)
    cache, state = DynamicCache(config=cfg), ours.new_state(2, torch.float32)
    for start, end in [(0, 6), (6, 7), (7, 11), (11, 12), (12, 13)]:
        ref, _ = gpt_oss_forward(cfg, hf, x[:, start:end], start, cache)
        y, state = ours(x[:, start:end], state)
        torch.testing.assert_close(y, ref, rtol=0, atol=ATOL)


@pytest.mark.parametrize("seq_len", [1, WINDOW - 1, WINDOW, SEQ])
def test_window_state_holds_as_many_tokens_as_hf_sliding_cache(seq_len):
    cfg, hf, ours = gpt_oss_pair("sliding_attention")
    x = torch.randn(1, seq_len, HIDDEN)
    cache = DynamicCache(config=cfg)
    gpt_oss_forward(cfg, hf, x, cache=cache)
    hf_layer = cache.layers[hf.layer_idx]
    hf_bytes = sum(t.numel() * t.element_size() for t in (hf_layer.keys, hf_layer.values))
    _, state = ours(x, ours.new_state(1, torch.float32))
    assert state.nbytes() == hf_bytes
    assert ours.state_bytes(seq_len, torch.float32) == hf_bytes


# --- Qwen3-Next parity -----------------------------------------------------------------------


def qwen3_next_pair(seed: int = 0):
    cfg = Qwen3NextConfig(
        hidden_size=HIDDEN,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        num_hidden_layers=4,  # layer 3 is the full (gated) attention layer
        vocab_size=16,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.25},
    )
    cfg._attn_implementation = "eager"
    layer_idx = cfg.layer_types.index("full_attention")
    torch.manual_seed(seed)
    hf = Qwen3NextAttention(cfg, layer_idx).eval()
    with torch.no_grad():
        for p in hf.parameters():
            p.normal_(0.0, 0.3)
    spec = {
        "type": "full",
        "num_kv_heads": 2,
        "head_dim": 16,
        "output_gate": True,
        "qk_norm": True,
        "partial_rotary_factor": 0.25,
        "rms_norm_eps": cfg.rms_norm_eps,
    }
    ours = build_mixer(resolve_spec(spec, DEFAULTS, "layers[0]"), 0, 1, HIDDEN).eval()
    weights = hf.state_dict()
    # Qwen3-Next's RMSNorm scales by (1 + weight), weight initialised at 0; ours scales by weight.
    for name in ("q_norm.weight", "k_norm.weight"):
        weights[name] = 1.0 + weights[name]
    ours.load_state_dict(weights)
    return cfg, hf, ours


def qwen3_next_forward(cfg, hf, x):
    pos = positions(x.shape[0], 0, x.shape[1])
    cos_sin = Qwen3NextRotaryEmbedding(cfg)(x, pos)
    mask = create_causal_mask(config=cfg, inputs_embeds=x, attention_mask=None, cache=None, position_ids=pos)
    return hf(x, cos_sin, mask)


def test_partial_rope_matches_qwen3_next_rotary_embedding():
    cfg, _, _ = qwen3_next_pair()
    pos = positions(2, 0, SEQ)
    hf_cos, hf_sin = Qwen3NextRotaryEmbedding(cfg)(torch.zeros(1), pos)  # [B, T, 16 * 0.25]
    cos, sin = rope_cos_sin(pos, 4, 10000.0, torch.float32)
    torch.testing.assert_close(cos, hf_cos, rtol=0, atol=1e-6)
    torch.testing.assert_close(sin, hf_sin, rtol=0, atol=1e-6)


def test_gated_full_matches_qwen3_next_attention():
    cfg, hf, ours = qwen3_next_pair()
    x = torch.randn(2, SEQ, HIDDEN)
    ref, _ = qwen3_next_forward(cfg, hf, x)
    y, _ = ours(x)
    torch.testing.assert_close(y, ref, rtol=0, atol=ATOL)


def test_attention_map_matches_qwen3_next_eager_probs():
    cfg, hf, ours = qwen3_next_pair()
    x = torch.randn(2, SEQ, HIDDEN)
    _, ref_probs = qwen3_next_forward(cfg, hf, x)
    torch.testing.assert_close(ours.attention_map(x), ref_probs, rtol=0, atol=ATOL)


# --- invariants ------------------------------------------------------------------------------

SPECS = {
    "full_mha": {"type": "full"},
    "full_gqa_sinks": {"type": "full", "num_kv_heads": 2, "sinks": True},
    "full_gated_qknorm_partial_gqa": {
        "type": "full",
        "num_kv_heads": 2,
        "output_gate": True,
        "qk_norm": True,
        "partial_rotary_factor": 0.25,
    },
    "swa": {"type": "swa", "window": WINDOW},
    "swa_sinks_gqa": {"type": "swa", "window": WINDOW, "sinks": True, "num_kv_heads": 2, "bias": True},
    "swa_window1_sinks": {"type": "swa", "window": 1, "sinks": True},
}
ALL = pytest.mark.parametrize("name", list(SPECS))


def full_forward(mixer, x):
    return mixer(x)[0]


@ALL
def test_causal_future_tokens_do_not_change_past_outputs(name):
    mixer = make_mixer(SPECS[name])
    x = torch.randn(2, SEQ, HIDDEN)
    cut = 7
    x_changed = x.clone()
    x_changed[:, cut:] = torch.randn(2, SEQ - cut, HIDDEN)
    y, y_changed = full_forward(mixer, x), full_forward(mixer, x_changed)
    torch.testing.assert_close(y_changed[:, :cut], y[:, :cut], rtol=0, atol=1e-6)
    assert (y_changed[:, cut:] - y[:, cut:]).abs().max() > 1e-3  # the test can see a change


@ALL
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_prefill_chunks_equal_full_forward(name, seed):
    mixer = make_mixer(SPECS[name])
    x = torch.randn(2, SEQ, HIDDEN)
    gen = torch.Generator().manual_seed(seed)
    n_cuts = int(torch.randint(1, 5, (), generator=gen))
    cuts = sorted(torch.randperm(SEQ - 1, generator=gen)[:n_cuts].add(1).tolist())
    state, outs = mixer.new_state(2, torch.float32), []
    for start, end in zip([0, *cuts], [*cuts, SEQ], strict=True):
        y, state = mixer(x[:, start:end], state)
        outs.append(y)
    assert state.seq_len == SEQ
    torch.testing.assert_close(torch.cat(outs, 1), full_forward(mixer, x), rtol=0, atol=ATOL)


@ALL
def test_token_by_token_decode_equals_full_forward(name):
    mixer = make_mixer(SPECS[name])
    x = torch.randn(2, SEQ, HIDDEN)
    state, outs = mixer.new_state(2, torch.float32), []
    for t in range(SEQ):
        y, state = mixer(x[:, t : t + 1], state)
        outs.append(y)
    torch.testing.assert_close(torch.cat(outs, 1), full_forward(mixer, x), rtol=0, atol=ATOL)


@ALL
@pytest.mark.parametrize("seq_len", [1, WINDOW - 1, WINDOW, SEQ])
@pytest.mark.parametrize("chunk", [None, 1, 3])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_state_bytes_equals_bytes_held_after_prefill(name, seq_len, chunk, dtype):
    mixer = make_mixer(SPECS[name]).to(dtype)
    x = torch.randn(1, seq_len, HIDDEN, dtype=dtype)
    state = mixer.new_state(1, dtype)
    step = chunk or seq_len
    for start in range(0, seq_len, step):
        _, state = mixer(x[:, start : start + step], state)
    assert mixer.state_bytes(seq_len, dtype) == state.nbytes()


@ALL
@pytest.mark.parametrize("seq_len", [1, WINDOW - 1, WINDOW, SEQ])
def test_state_bytes_counts_k_and_v_of_kept_tokens(name, seq_len):
    """Hand count: full keeps every token; a window cache keeps min(T, W - 1) tokens."""
    spec = resolve_spec(SPECS[name], DEFAULTS, "layers[0]")
    kept = seq_len if spec.window is None else min(seq_len, spec.window - 1)
    expected = 2 * kept * spec.num_kv_heads * spec.head_dim * 4  # k and v, fp32
    assert make_mixer(SPECS[name]).state_bytes(seq_len, torch.float32) == expected


@pytest.mark.parametrize("name", ["full_mha", "full_gated_qknorm_partial_gqa", "swa"])
def test_attention_map_rows_sum_to_one_without_sinks(name):
    probs = make_mixer(SPECS[name]).attention_map(torch.randn(2, SEQ, HIDDEN))
    torch.testing.assert_close(probs.sum(-1), torch.ones(2, 4, SEQ), rtol=0, atol=1e-6)


@pytest.mark.parametrize("name", ["full_gqa_sinks", "swa_sinks_gqa", "swa_window1_sinks"])
def test_attention_map_rows_sum_below_one_with_sinks(name):
    probs = make_mixer(SPECS[name]).attention_map(torch.randn(2, SEQ, HIDDEN))
    row_sums = probs.sum(-1)
    assert (row_sums < 1).all() and (row_sums > 0).all()


@pytest.mark.parametrize("name", ["full_gqa_sinks", "swa_sinks_gqa"])
def test_sinks_only_rescale_rows_of_the_sinkless_map(name):
    """The sink absorbs mass and adds no value: renormalised rows equal the map without sinks."""
    with_sinks = make_mixer(SPECS[name])
    without = make_mixer({**SPECS[name], "sinks": False})
    without.load_state_dict({k: v for k, v in with_sinks.state_dict().items() if k != "sinks"})
    x = torch.randn(2, SEQ, HIDDEN)
    probs = with_sinks.attention_map(x)
    torch.testing.assert_close(
        probs / probs.sum(-1, keepdim=True), without.attention_map(x), rtol=0, atol=1e-6
    )


@pytest.mark.parametrize("name", ["full_mha", "swa", "swa_sinks_gqa", "swa_window1_sinks"])
def test_attention_map_is_zero_exactly_outside_causal_window(name):
    window = SPECS[name].get("window")
    probs = make_mixer(SPECS[name]).attention_map(torch.randn(2, SEQ, HIDDEN))
    for i in range(SEQ):
        for j in range(SEQ):
            visible = j <= i and (window is None or i - j < window)
            cell = probs[:, :, i, j]
            assert (cell > 0).all() if visible else (cell == 0).all(), (i, j)


@pytest.mark.parametrize("name", ["full_gqa_sinks", "full_gated_qknorm_partial_gqa", "swa_sinks_gqa", "swa"])
def test_gradients_pass_gradcheck_in_float64(name):
    tiny = {"num_heads": 2, "head_dim": 4, "rope_theta": 10000.0}
    spec = {**SPECS[name], **({"window": 3} if "window" in SPECS[name] else {})}
    if spec.get("num_kv_heads"):
        spec["num_kv_heads"] = 1
    if spec.get("partial_rotary_factor"):
        spec["partial_rotary_factor"] = 0.5  # 2 of 4 channels rotate (0.25 would give an odd dim)
    mixer = make_mixer(spec, hidden=8, defaults=tiny).double()
    names = [n for n, _ in mixer.named_parameters()]
    params = [p.detach().clone().requires_grad_() for p in mixer.parameters()]
    x = torch.randn(1, 5, 8, dtype=torch.float64, requires_grad=True)

    def run(x, *params):
        return functional_call(mixer, dict(zip(names, params, strict=True)), (x,))[0]

    assert torch.autograd.gradcheck(run, (x, *params), eps=1e-6, atol=1e-5, fast_mode=True)


# --- spec errors -----------------------------------------------------------------------------


@pytest.mark.parametrize("window", [0, -2, 2.5])
def test_swa_window_must_be_a_positive_integer(window):
    with pytest.raises(ValueError, match=r"layers\[0\]\.window"):
        resolve_spec({"type": "swa", "window": window}, DEFAULTS, "layers[0]")


@pytest.mark.parametrize("family", ["full", "swa"])
def test_num_kv_heads_must_divide_num_heads(family):
    with pytest.raises(ValueError, match=r"layers\[0\]\.num_kv_heads"):
        resolve_spec({"type": family, "num_kv_heads": 3}, DEFAULTS, "layers[0]")


def test_unknown_spec_field_is_named():
    with pytest.raises(ValueError, match=r"layers\[0\].*unknown field.*'windw'"):
        resolve_spec({"type": "swa", "windw": 8}, DEFAULTS, "layers[0]")


def test_full_rejects_a_window():
    with pytest.raises(ValueError, match=r"layers\[0\]\.window.*'full'"):
        resolve_spec({"type": "full", "window": 8}, DEFAULTS, "layers[0]")
