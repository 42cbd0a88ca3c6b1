"""`lightning` (MiniMax-01 lightning attention): kernels and mixer.

Independent references: fla's naive simple-GLA implementations (MiniMax lightning is simple GLA
with a constant log-decay g = -slope and scale 1), HF's `MiniMaxLightningAttention` given the
same weights, and the token-by-token recurrence. Everything runs fp32 (gradcheck float64) on CPU
with small shapes.
"""

from __future__ import annotations

import pytest
import torch
from transformers import MiniMaxConfig
from transformers.models.minimax.modeling_minimax import MiniMaxCache, MiniMaxLightningAttention

from attnlab.archs.config import AttnLabConfig
from attnlab.archs.families import build_mixer, resolve_spec
from attnlab.archs.lightning import minimax_slopes
from attnlab.kernels import lightning_chunked, lightning_implied_map, lightning_recurrent

ATOL = 1e-5
# A spread of decays, including none at all (the last layer of a deep MiniMax stack is ~1e-5).
SLOPE = torch.tensor([0.5, 0.1, 0.01, 0.0])
H, D = 4, 8


def qkvs(b: int, t: int, seed: int = 0, h: int = H, d: int = D, dtype=torch.float32):
    """Random q, k, v [B, T, H, D] and initial state [B, H, D, D], scaled so outputs are O(1)."""
    gen = torch.Generator().manual_seed(seed)

    def r(*shape):
        return (torch.randn(*shape, generator=gen) * 0.4).to(dtype)

    return r(b, t, h, d), r(b, t, h, d), r(b, t, h, d), r(b, h, d, d)


# --- kernels --------------------------------------------------------------------------------


@pytest.mark.parametrize("t, block_size", [(1, 4), (7, 4), (16, 4), (33, 8), (20, 64), (13, 1)])
@pytest.mark.parametrize("with_state", [False, True])
def test_chunked_matches_recurrent(t, block_size, with_state):
    q, k, v, h0 = qkvs(2, t)
    h0 = h0 if with_state else None
    o_ref, s_ref = lightning_recurrent(q, k, v, SLOPE, h0)
    o, s = lightning_chunked(q, k, v, SLOPE, h0, block_size=block_size)
    assert o.shape == (2, t, H, D) and s.shape == (2, H, D, D) and s.dtype == torch.float32
    torch.testing.assert_close(o, o_ref, atol=ATOL, rtol=0)
    torch.testing.assert_close(s, s_ref, atol=ATOL, rtol=0)


def test_chunked_gradients_match_recurrent():
    q, k, v, h0 = qkvs(2, 19, seed=1)
    gen = torch.Generator().manual_seed(2)
    w_o, w_s = torch.randn(2, 19, H, D, generator=gen), torch.randn(2, H, D, D, generator=gen)

    def grads(fn, **kw):
        inputs = [x.clone().requires_grad_() for x in (q, k, v, h0)]
        o, s = fn(*inputs[:3], SLOPE, inputs[3], **kw)
        ((o * w_o).sum() + (s * w_s).sum()).backward()  # gradients through the output and the state
        return [x.grad for x in inputs]

    for name, g, g_ref in zip(
        "q k v initial_state".split(),
        grads(lightning_chunked, block_size=4),
        grads(lightning_recurrent),
        strict=True,
    ):
        torch.testing.assert_close(g, g_ref, atol=ATOL, rtol=0, msg=lambda m, name=name: f"d{name}: {m}")


@pytest.mark.parametrize("fn", [lightning_chunked, lightning_recurrent])
def test_gradcheck_float64(fn):
    q, k, v, h0 = (x.requires_grad_() for x in qkvs(1, 5, seed=3, h=2, d=3, dtype=torch.float64))
    slope = torch.tensor([0.7, 0.05], dtype=torch.float64)
    kw = {"block_size": 2} if fn is lightning_chunked else {}
    assert torch.autograd.gradcheck(lambda q, k, v, h0: fn(q, k, v, slope, h0, **kw), (q, k, v, h0))


@pytest.mark.parametrize("with_state", [False, True])
def test_matches_fla_naive_simple_gla(with_state):
    naive = pytest.importorskip("fla.ops.simple_gla.naive")
    t = 37
    q, k, v, h0 = qkvs(2, t, seed=4)
    h0 = h0 if with_state else None
    g = (-SLOPE).expand(2, t, H)  # fla's per-token log-decay [B, T, H]
    o, s = lightning_chunked(q, k, v, SLOPE, h0, block_size=16)
    # naive_recurrent's positional order is (q, k, v, g, scale, initial_state): keywords only.
    o_rec, s_rec = naive.naive_recurrent_simple_gla(
        q, k, v, g, scale=1.0, initial_state=h0, output_final_state=True
    )
    o_chk, s_chk = naive.naive_chunk_simple_gla(
        q, k, v, g, initial_state=h0, output_final_state=True, chunk_size=8, scale=1.0
    )
    for o_ref, s_ref in ((o_rec, s_rec), (o_chk, s_chk)):
        torch.testing.assert_close(o, o_ref, atol=ATOL, rtol=0)
        torch.testing.assert_close(s, s_ref, atol=ATOL, rtol=0)


def test_implied_map_matches_fla_parallel_and_reproduces_output():
    naive = pytest.importorskip("fla.ops.simple_gla.naive")
    q, k, v, _ = qkvs(2, 21, seed=5)
    a = lightning_implied_map(q, k, SLOPE)  # [B, H, T, T]
    _, a_ref = naive.naive_parallel_simple_gla(q, k, v, (-SLOPE).expand(2, 21, H), scale=1.0)
    torch.testing.assert_close(a, a_ref, atol=ATOL, rtol=0)
    assert torch.all(a.triu(1) == 0)
    o, _ = lightning_recurrent(q, k, v, SLOPE)
    torch.testing.assert_close(torch.einsum("bhij,bjhd->bihd", a, v), o, atol=ATOL, rtol=0)


def test_implied_map_hand_computed_entry():
    q, k, _, _ = qkvs(1, 6, seed=6)
    a = lightning_implied_map(q, k, SLOPE)
    i, j, h = 5, 2, 1
    expected = (q[0, i, h] @ k[0, j, h]) * torch.exp(-SLOPE[h] * (i - j))
    torch.testing.assert_close(a[0, h, i, j], expected, atol=1e-6, rtol=0)


# --- mixer ----------------------------------------------------------------------------------

HIDDEN = 32
LAYERS, LAYER_IDX = 6, 2  # a middle layer: its slopes carry the depth factor 1 - 2/5


def make_mixer(block_size: int = 5, layer_idx: int = LAYER_IDX, seed: int = 0):
    spec = resolve_spec(
        {"type": "lightning", "block_size": block_size},
        {"num_heads": H, "head_dim": D, "rms_norm_eps": 1e-6, "num_kv_heads": H},
        "layers[0]",
    )
    mixer = build_mixer(spec, layer_idx, LAYERS, HIDDEN)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in mixer.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
    return mixer.eval()


def hidden(b: int, t: int, seed: int = 7) -> torch.Tensor:
    return torch.randn(b, t, HIDDEN, generator=torch.Generator().manual_seed(seed))


def hf_lightning(layer_idx: int = LAYER_IDX, block_size: int = 16) -> MiniMaxLightningAttention:
    cfg = MiniMaxConfig(
        hidden_size=HIDDEN,
        num_attention_heads=H,
        num_key_value_heads=H,
        head_dim=D,
        num_hidden_layers=LAYERS,
        block_size=block_size,
        vocab_size=16,
        intermediate_size=16,
        num_local_experts=2,
    )
    return MiniMaxLightningAttention(cfg, layer_idx).eval()


def copy_weights(hf: MiniMaxLightningAttention, mixer) -> None:
    """1:1 copy; only the output projection's name differs (HF `out_proj`, ours `o_proj`)."""
    with torch.no_grad():
        for name, p in hf.named_parameters():
            mixer.get_parameter(name.replace("out_proj", "o_proj")).copy_(p)
    assert sum(p.numel() for p in mixer.parameters()) == sum(p.numel() for p in hf.parameters())


@pytest.mark.parametrize("layer_idx", range(LAYERS))
def test_slopes_match_hf(layer_idx):
    hf = hf_lightning(layer_idx)
    assert torch.equal(minimax_slopes(H, layer_idx, LAYERS), hf.slope_rate.flatten())


def test_parity_with_hf_minimax_lightning_attention():
    # HF block 16, ours 5: different blockings of a 41-token sequence must agree.
    hf, mixer = hf_lightning(block_size=16), make_mixer(block_size=5)
    copy_weights(hf, mixer)
    x = hidden(2, 41)
    with torch.no_grad():
        y_ref, state_ref = hf(x, position_embeddings=None, attention_mask=None)
        state = mixer.new_state(2, x.dtype)
        y, _ = mixer(x, state)
    torch.testing.assert_close(y, y_ref, atol=ATOL, rtol=0)
    torch.testing.assert_close(state.read(), state_ref, atol=ATOL, rtol=0)


def test_parity_with_hf_prefill_then_decode():
    # HF's cached path: block prefill on an empty cache, then one token at a time.
    hf, mixer = hf_lightning(), make_mixer()
    copy_weights(hf, mixer)
    x = hidden(1, 24, seed=8)
    cache, state = MiniMaxCache(), mixer.new_state(1, x.dtype)
    with torch.no_grad():
        for start, end in ((0, 20), (20, 21), (21, 22), (22, 24)):
            y_ref, _ = hf(x[:, start:end], position_embeddings=None, attention_mask=None, cache=cache)
            y, _ = mixer(x[:, start:end], state)
            torch.testing.assert_close(y, y_ref, atol=ATOL, rtol=0)


def test_prefill_chunks_and_decode_match_full_forward():
    mixer, x = make_mixer(block_size=4), hidden(2, 29)
    gen = torch.Generator().manual_seed(9)
    cuts = sorted(torch.randperm(28, generator=gen)[:4].add(1).tolist())
    with torch.no_grad():
        y_full, _ = mixer(x)
        state = mixer.new_state(2, x.dtype)
        y_chunks = torch.cat(
            [mixer(x[:, a:b], state)[0] for a, b in zip([0, *cuts], [*cuts, 29], strict=True)], dim=1
        )
        assert state.seq_len == 29
        state = mixer.new_state(2, x.dtype)
        y_decode = torch.cat([mixer(x[:, i : i + 1], state)[0] for i in range(29)], dim=1)
    torch.testing.assert_close(y_chunks, y_full, atol=ATOL, rtol=0)
    torch.testing.assert_close(y_decode, y_full, atol=ATOL, rtol=0)


def test_causal():
    mixer, x = make_mixer(), hidden(1, 17)
    x2 = x.clone()
    x2[:, 11:] += 1.0
    with torch.no_grad():
        y, y2 = mixer(x)[0], mixer(x2)[0]
    torch.testing.assert_close(y[:, :11], y2[:, :11], atol=0, rtol=0)
    assert not torch.allclose(y[:, 11:], y2[:, 11:])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_state_bytes_equal_bytes_held(dtype):
    mixer = make_mixer().to(dtype)
    state = mixer.new_state(3, dtype)
    assert state.nbytes() == 3 * mixer.state_bytes(0, dtype) == 0
    with torch.no_grad():
        mixer(hidden(3, 13).to(dtype), state)
    held = state.read()
    # fp32 whatever the activations: the bf16 model still keeps an fp32 [B, H, D, D] state.
    assert held.dtype == torch.float32 and held.shape == (3, H, D, D)
    assert state.nbytes() == 3 * mixer.state_bytes(13, dtype) == 3 * H * D * D * 4
    assert mixer.state_bytes(10_000, dtype) == mixer.state_bytes(13, dtype)


def test_attention_map_is_the_implied_map():
    mixer, x = make_mixer(), hidden(2, 12)
    with torch.no_grad():
        a = mixer.attention_map(x)  # [B, H, T, T]
        q, k, v = mixer.project(x)
    slope = minimax_slopes(H, LAYER_IDX, LAYERS)
    assert a.shape == (2, H, 12, 12)
    o, _ = lightning_recurrent(q, k, v, slope)
    # Raw (pre-norm) outputs reach |o| ~ 40 here, so allow fp32 rounding relative to size too.
    torch.testing.assert_close(torch.einsum("bhij,bjhd->bihd", a, v), o, atol=ATOL, rtol=1e-6)


def test_config_fills_heads_and_eps():
    cfg = AttnLabConfig(
        hidden_size=48, num_attention_heads=6, num_hidden_layers=2, layers="L", rms_norm_eps=1e-5
    )
    spec = cfg.layer_specs[0]
    assert (spec.type, spec.num_heads, spec.head_dim, spec.rms_norm_eps, spec.block_size) == (
        "lightning",
        6,
        8,
        1e-5,
        256,
    )


@pytest.mark.parametrize(
    "field, value",
    [
        ("num_heads", 0),
        ("head_dim", -2),
        ("block_size", 2.5),
        ("block_size", True),
        ("rms_norm_eps", 0.0),
        ("rms_norm_eps", "small"),
    ],
)
def test_bad_spec_raises_naming_field(field, value):
    with pytest.raises(ValueError, match=rf"layers\[3\]\.{field} = .*must be a positive"):
        resolve_spec({"type": "lightning", field: value}, {"num_heads": 4, "head_dim": 8}, "layers[3]")
