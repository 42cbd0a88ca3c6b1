"""MiniMax-01 lightning attention: linear attention with a constant per-head decay (arXiv 2501.08313).

    S_t = exp(-s) S_{t-1} + k_t^T v_t        S [K, V] per (batch, head), S_0 = initial_state
    o_t = q_t S_t                            no 1/sqrt(D) scale, no normalisation

Conventions follow fla: q, k [B, T, H, K], v [B, T, H, V], `slope` [H] (the decay per step is
exp(-slope)), `initial_state` [B, H, K, V] or None; every function returns
(o [B, T, H, V] in v's dtype, final_state [B, H, K, V]). The arithmetic and the state are fp32
(float64 stays float64, so gradcheck works): with bf16 states the decayed sums drift over long
contexts (vLLM keeps MiniMax's state fp32; FlashInfer #739).

In fla terms this is `simple_gla` with `g_gamma = -slope` and `scale = 1.0`. fla's own
`chunk_lightning_attn` is *not* this op: it uses TransNormerLLM's decay and a 1/sqrt(D) scale.
"""

from __future__ import annotations

import torch

from ..tensors import compute_dtype


def _start_state(initial_state, b, h, dk, dv, dtype, device) -> torch.Tensor:
    if initial_state is None:
        return torch.zeros(b, h, dk, dv, dtype=dtype, device=device)
    assert initial_state.shape == (b, h, dk, dv), f"initial_state {tuple(initial_state.shape)}"
    return initial_state.to(dtype)


def lightning_recurrent(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    slope: torch.Tensor,
    initial_state: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Token-by-token reference (and the decode path): one state update per token."""
    o, state, _ = lightning_recurrent_kept(q, k, v, slope, initial_state)
    return o, state


def lightning_recurrent_kept(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    slope: torch.Tensor,
    initial_state: torch.Tensor | None = None,
    keep: tuple[int, ...] = (),
) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
    """`lightning_recurrent` that also keeps the state after each token position in `keep`
    (-> o, final, [state [B, H, K, V] per entry of keep]): the reference of `state_checkpoints`."""
    b, t, h, dk = q.shape
    dv = v.shape[-1]
    dtype, out_dtype = compute_dtype(q, k, v), v.dtype
    q, k, v = q.to(dtype), k.to(dtype), v.to(dtype)
    decay = torch.exp(-slope.to(dtype))[None, :, None, None]  # [1, H, 1, 1]
    state = _start_state(initial_state, b, h, dk, dv, dtype, q.device)  # [B, H, K, V]
    outs, kept, wanted = [], {}, set(keep)
    for i in range(t):
        state = decay * state + k[:, i, :, :, None] * v[:, i, :, None, :]  # [B, H, K, V]
        outs.append(torch.einsum("bhk,bhkv->bhv", q[:, i], state))
        if i in wanted:  # only the kept states stay alive (all of them would be [T, B, H, K, V])
            kept[i] = state
    o = torch.stack(outs, dim=1)  # [B, T, H, V]
    return o.to(out_dtype), state, [kept[i] for i in keep]


def _block_decays(slope: torch.Tensor, n: int):
    """Decay factors of one block of n tokens, positions i, j = 0..n-1 inside the block.

    -> q_decay [H, n, 1] = exp(-s (i+1))      carries the incoming state to query i
       k_decay [H, n, 1] = exp(-s (n-1-j))    carries key j to the block's end
       intra   [H, n, n] = exp(-s (i-j)) for j <= i, else 0
       block   [H, 1, 1] = exp(-s n)          carries the state across the whole block
    Every factor is a product of decays <= 1, so nothing is divided and nothing overflows;
    far-apart terms underflow to 0, which is their true value in fp32.
    """
    idx = torch.arange(n, dtype=slope.dtype, device=slope.device)
    s = slope[:, None]  # [H, 1]
    q_decay = torch.exp(-s * (idx + 1))[..., None]
    k_decay = torch.exp(-s * (n - 1 - idx))[..., None]
    rel = idx[:, None] - idx[None, :]  # [n, n], i - j
    # clamp: exp of the masked (j > i) entries would overflow, and inf * 0 in backward is nan.
    intra = torch.exp(-s[..., None] * rel.clamp(min=0)) * (rel >= 0)
    block = torch.exp(-slope * n)[:, None, None]
    return q_decay, k_decay, intra, block


def lightning_chunked(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    slope: torch.Tensor,
    initial_state: torch.Tensor | None = None,
    block_size: int = 256,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Block form (MiniMax-01 / HF): the loop runs over blocks, never over tokens.

    Per block of n tokens:  o = ((Q K^T) ⊙ intra) V  +  (Q ⊙ q_decay) S
                            S <- block S + (K ⊙ k_decay)^T V
    The last block may be shorter than `block_size`; its factors use its own length n.
    """
    assert block_size > 0
    b, t, h, dk = q.shape
    dv = v.shape[-1]
    dtype = compute_dtype(q, k, v)
    # [B, H, T, D]: per-head matmuls over the time axis.
    q_, k_, v_ = (x.to(dtype).transpose(1, 2) for x in (q, k, v))
    slope = slope.to(dtype=dtype, device=q.device)
    state = _start_state(initial_state, b, h, dk, dv, dtype, q.device)  # [B, H, K, V]
    decays = {}  # at most two block lengths: block_size and the tail
    outs = []
    for start in range(0, t, block_size):
        n = min(block_size, t - start)
        if n not in decays:
            decays[n] = _block_decays(slope, n)
        q_decay, k_decay, intra, block = decays[n]
        qb, kb, vb = (x[:, :, start : start + n] for x in (q_, k_, v_))  # [B, H, n, D]
        o_intra = ((qb @ kb.transpose(-1, -2)) * intra) @ vb  # [B, H, n, V]
        o_inter = (qb * q_decay) @ state  # [B, H, n, V]
        outs.append(o_intra + o_inter)
        state = block * state + (kb * k_decay).transpose(-1, -2) @ vb
    o = torch.cat(outs, dim=2).transpose(1, 2)  # [B, T, H, V]
    return o.to(v.dtype), state


def lightning_implied_map(q: torch.Tensor, k: torch.Tensor, slope: torch.Tensor) -> torch.Tensor:
    """q, k [B, T, H, K] -> A [B, H, T, T], A_ij = (q_i · k_j) exp(-s (i-j)) for j <= i, else 0.

    The map of a zero initial state: o = A @ v exactly. It is *unnormalised and signed* (rows do
    not sum to 1, entries can be negative, and magnitudes grow with q·k), so it is not a
    probability distribution: probes that take an argmax read the largest positive weight, and a
    large negative weight (strong anti-retrieval) is invisible to that argmax.
    """
    t = q.shape[1]
    dtype = compute_dtype(q, k)
    slope = slope.to(dtype=dtype, device=q.device)
    scores = torch.einsum("bihd,bjhd->bhij", q.to(dtype), k.to(dtype))  # [B, H, T, T]
    _, _, intra, _ = _block_decays(slope, t)  # [H, T, T]: the whole sequence as one block
    return scores * intra
