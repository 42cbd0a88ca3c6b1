"""A two-layer attnlab model whose heads are known by construction (weights set by hand).

Residual stream, 3 × V dims: TOK (the token, one-hot), PREV (the previous token, written by layer 0),
OUT (the copied token, read by the LM head). FFNs are zero, so only attention moves information.

    layer 0 head 0  previous-token head: constant q and k on the rotary dims, k pre-rotated by one
                    position, so q_i · k_j = a b Σ_d w_d cos((j - i + 1) θ_d), largest at j = i - 1;
                    copies TOK of j into PREV.
    layer 0 head 1  current-token head (same, k not pre-rotated: largest at j = i); writes nothing.
    layer 1 head 0  induction head: q = TOK_i, k = PREV_j on the content dims, so it attends to the
                    position right after an earlier copy of the current token; copies TOK_j into OUT,
                    which the LM head reads: on a NIAH prompt it copies the needle's value.
    layer 1 head 1  current-token head; writes nothing.

Token 0 is BOS (config.bos_token_id), so probes put it at position 0: position 0 has no previous
token and its PREV slot holds its own token, which is BOS and never queried.
"""

from __future__ import annotations

import torch

from attnlab import AttnLabConfig, AttnLabForCausalLM
from attnlab.archs.rope import apply_rope, rope_cos_sin

V = 64
HEAD_DIM = 128
ROTARY = 32  # partial_rotary_factor 0.25: dims [0, 32) rotate, [32, 128) carry content
ROPE_THETA = 100.0  # sharper position selectivity than 1e4 at this small rotary dim
TOK, PREV, OUT = 0, V, 2 * V
PREV_HEAD, SELF0_HEAD, INDUCTION_HEAD, SELF1_HEAD = (0, 0), (0, 1), (1, 0), (1, 1)


def config() -> AttnLabConfig:
    spec = {"type": "full", "partial_rotary_factor": ROTARY / HEAD_DIM, "rope_theta": ROPE_THETA}
    return AttnLabConfig(
        vocab_size=V,
        hidden_size=3 * V,
        num_hidden_layers=2,
        num_attention_heads=2,
        head_dim=HEAD_DIM,
        layers=[spec, spec],
        intermediate_size=16,
        rope_theta=ROPE_THETA,
        max_position_embeddings=128,
        bos_token_id=0,
        eos_token_id=None,
        pad_token_id=None,
    )


def _rotary_unit(shift: int) -> torch.Tensor:
    """A unit vector on the rotary dims (equal weight per frequency), rotated by `shift` positions."""
    u = torch.zeros(1, 1, 1, HEAD_DIM)
    u[..., :ROTARY] = ROTARY**-0.5
    cos, sin = rope_cos_sin(torch.tensor([[shift]]), ROTARY, ROPE_THETA, torch.float32)
    return apply_rope(u, cos, sin)[0, 0, 0]  # [HEAD_DIM]


@torch.no_grad()
def build() -> AttnLabForCausalLM:
    torch.manual_seed(0)
    model = AttnLabForCausalLM(config()).eval()
    for p in model.parameters():
        p.zero_()
    d = 3 * V
    model.model.embed_tokens.weight[:, TOK : TOK + V] = torch.eye(V)
    for block in model.model.layers:
        block.input_norm.weight.fill_(1.0)
        block.post_mixer_norm.weight.fill_(1.0)
    model.model.norm.weight.fill_(1.0)
    model.lm_head.weight[:, OUT : OUT + V] = torch.eye(V)

    # RMSNorm scales a residual of n unit one-hots to sqrt(d / n) per one-hot.
    c0, c1 = (d / 1) ** 0.5, (d / 2) ** 0.5
    pos_strength = 52.0  # a = b: logit gap to the runner-up position ≈ a b · 0.0677 / sqrt(128) ≈ 16
    content_strength = 16.0  # match logit a b / sqrt(128) ≈ 22

    def positional_head(attn, head: int, shift: int, norm: float) -> None:
        rows = slice(head * HEAD_DIM, (head + 1) * HEAD_DIM)
        q = pos_strength * _rotary_unit(0)
        k = pos_strength * _rotary_unit(shift)
        # Every token one-hot in TOK maps to the same q / k: position alone decides.
        attn.q_proj.weight[rows, TOK : TOK + V] = q[:, None] / norm
        attn.k_proj.weight[rows, TOK : TOK + V] = k[:, None] / norm

    layer0 = model.model.layers[0].mixer
    positional_head(layer0, 0, 1, c0)  # previous token
    positional_head(layer0, 1, 0, c0)  # current token
    head0 = slice(0, HEAD_DIM)
    layer0.v_proj.weight[head0][:V, TOK : TOK + V] = torch.eye(V) / c0  # v_j = TOK one-hot of j
    layer0.o_proj.weight[PREV : PREV + V, head0][:, :V] = torch.eye(V)  # -> PREV

    layer1 = model.model.layers[1].mixer
    content = slice(ROTARY, ROTARY + V)
    layer1.q_proj.weight[head0][content, TOK : TOK + V] = content_strength * torch.eye(V) / c1
    layer1.k_proj.weight[head0][content, PREV : PREV + V] = content_strength * torch.eye(V) / c1
    layer1.v_proj.weight[head0][:V, TOK : TOK + V] = torch.eye(V) / c1
    layer1.o_proj.weight[OUT : OUT + V, head0][:, :V] = torch.eye(V)  # -> OUT, read by lm_head
    positional_head(layer1, 1, 0, c1)  # current token
    return model
