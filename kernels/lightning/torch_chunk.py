"""`torch_chunk` backend of `lightning_prefill`: the chunked matmul form with a hand-written backward.

Tokens are cut into chunks of C (default 64). Per chunk c, with S_c the state entering it
(MiniMax-01's lightning block form; fla's simple-GLA chunk algorithm with a constant decay):

    A_c     = (Q_c K_c^T) ⊙ M                    M_ij = exp(-s (i-j)) for i >= j, else 0
    O_c     = A_c V_c + (Q_c ⊙ qd) S_c            qd_i = exp(-s (i+1))
    S_{c+1} = bd_c S_c + (K_c ⊙ kd_c)^T V_c       kd_j = exp(-s (n_c-1-j)), bd_c = exp(-s n_c)

Every matmul runs for all chunks at once (one batched matmul each); only the state scan
S_{c+1} = bd_c S_c + U_c loops, once per chunk, on [N, H, K, V] tensors. The backward mirrors it:
G_c (gradient of the state entering chunk c) scans in reverse, G_c = bd_c G_{c+1} + (Q_c ⊙ qd)^T dO_c,
and every other gradient is a batched matmul:

    dA = (dO V^T) ⊙ M
    dQ = dA K + (dO S_c^T) ⊙ qd
    dK = dA^T Q + (V G_{c+1}^T) ⊙ kd
    dV = A^T dO + (K ⊙ kd) G_{c+1}

Autograd through the same forward keeps one graph node per elementwise op and re-materialises
broadcasts; writing the backward by hand fuses the additions into `baddbmm` and reuses A and the
states saved by the forward (benchmark in kernels/BENCH_RESULTS.md).

Layout: chunk-major [NC, N, H, C, D], so the states of all chunks, [NC + 1, N, H, K, V], are one
contiguous buffer a batched matmul can write in place. Packed batches (`cu_seqlens`) are scattered
into N zero-padded rows; a padded chunk has length n_c = 0, so it keeps the state (bd = 1, no keys).

`state_checkpoints` (ops.py): the forward already holds S_c for every chunk, so the state after a
token at offset j of chunk c is d^(j+1) S_c + sum_{m <= j} d^(j-m) k_m^T v_m (d = exp(-s)), one
gathered matmul per checkpoint, in fp32 (`states_inside_chunks`); the call without checkpoints
runs exactly as before. That path is forward-only: a call that needs gradients chains the
autograd Function over segments instead (checkpoints.py), so gradients reach the states too.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..registry import register_solution
from ..tensors import compute_dtype
from .checkpoints import chain_segments, locate
from .ops import DECODE, PREFILL

DEFAULT_CHUNK = 64  # fastest on the CPU we measured (kernels/BENCH_RESULTS.md); any size is exact


class ChunkLayout:
    """Moves [B, T, H, D] (or a packed [1, T, H, D] + cu_seqlens) to chunk-major [NC, N, H, C, D] and back."""

    def __init__(self, b: int, t: int, cu_seqlens: torch.Tensor | None, chunk: int, device):
        self.t, self.chunk = t, chunk
        if cu_seqlens is None:
            self.n, lengths, self.index = b, torch.tensor([t], device=device), None
        else:
            cu = cu_seqlens.to(device=device, dtype=torch.int64)
            lengths = cu.diff()  # [N]
            self.n = lengths.numel()
            seq = torch.repeat_interleave(torch.arange(self.n, device=device), lengths)  # [T]
            self.index = None  # set below, once the padded length is known
        self.nc = max(1, -(-int(lengths.max()) // chunk)) if lengths.numel() else 1
        if cu_seqlens is not None:
            offset = torch.arange(t, device=device) - cu[seq]
            self.index = seq * (self.nc * chunk) + offset  # [T] row of each packed token, padded layout
        starts = torch.arange(self.nc, device=device)[:, None] * chunk
        self.chunk_lens = (lengths[None, :] - starts).clamp(0, chunk)  # [NC, N or 1]

    def to_chunks(self, x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """[B, T, H, D] -> [NC, N, H, C, D] contiguous, zero-padded, in `dtype`."""
        h, d = x.shape[2], x.shape[3]
        if self.index is None:
            pad = self.nc * self.chunk - self.t
            x = F.pad(x.to(dtype), (0, 0, 0, 0, 0, pad)) if pad else x.to(dtype)  # F.pad copies even for 0
        else:
            buf = x.new_zeros(self.n * self.nc * self.chunk, h, d, dtype=dtype)
            x = buf.index_copy_(0, self.index, x[0].to(dtype))
        return x.view(self.n, self.nc, self.chunk, h, d).permute(1, 0, 3, 2, 4).contiguous()

    def from_chunks(self, y: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """[NC, N, H, C, D] -> [B, T, H, D] in `dtype` (one copy, which also casts)."""
        _, n, h, c, d = y.shape
        out = torch.empty(n, self.nc, c, h, d, dtype=dtype, device=y.device)
        out.copy_(y.permute(1, 0, 3, 2, 4))
        out = out.view(n, self.nc * c, h, d)
        if self.index is None:
            return out[:, : self.t]
        return out.view(-1, h, d).index_select(0, self.index)[None]


class ChunkDecays:
    """Decay factors for slope [H] and chunk lengths [NC, N'] (N' = 1 when all sequences share them).

    qd [1, 1, H, C, 1], bd [NC, N', H, 1, 1], mask M [1, 1, H, C, C]. Key decays kd depend on each
    chunk's length, but only a sequence's last, partial chunk differs from a full one (padded and
    empty chunks hold zero keys), so keys are scaled by the full-chunk kd [1, 1, H, C, 1] with one
    broadcast and the few partial chunks are redone: a per-chunk kd tensor would make that
    broadcast several times slower. Every factor is a product of decays <= 1: nothing overflows,
    and far terms underflow to their true 0.
    """

    def __init__(self, slope: torch.Tensor, chunk_lens: torch.Tensor, chunk: int):
        idx = torch.arange(chunk, dtype=slope.dtype, device=slope.device)
        s = slope[:, None]  # [H, 1]
        self.qd = torch.exp(-s * (idx + 1))[None, None, :, :, None]
        self.kd = torch.exp(-s * (chunk - 1 - idx))[None, None, :, :, None]
        self.bd = torch.exp(-s * chunk_lens.to(slope.dtype)[:, :, None, None])[..., None]  # [NC, N', H, 1, 1]
        rel = idx[:, None] - idx[None, :]  # [C, C], i - j
        # clamp: exp of the masked (j > i) entries would overflow, and inf * 0 is nan.
        self.mask = (torch.exp(-s[..., None] * rel.clamp(min=0)) * (rel >= 0))[None, None]
        self.shared = chunk_lens.shape[1] == 1  # one set of lengths for every sequence
        self.partial = ((chunk_lens > 0) & (chunk_lens < chunk)).nonzero(as_tuple=True)  # (chunk, seq) pairs
        dist = chunk_lens[self.partial].to(slope.dtype)[:, None] - 1 - idx  # [P, C]
        self.kd_partial = (torch.exp(-s * dist[:, None].clamp(min=0)) * (dist[:, None] >= 0))[
            ..., None
        ]  # [P, H, C, 1]

    def scale_keys(self, x: torch.Tensor) -> torch.Tensor:
        """x [NC, N, H, C, D] (zero on padded rows) -> x ⊙ kd, each chunk by its own length."""
        out = x * self.kd
        if self.partial[0].numel():
            c, n = self.partial
            if self.shared:
                out[c] = x[c] * self.kd_partial[:, None]
            else:
                out[c, n] = x[c, n] * self.kd_partial
        return out


def _bmm_add_(out: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """out += a @ b over all leading dims, in place (one batched GEMM with beta = 1)."""
    out.view(-1, *out.shape[-2:]).baddbmm_(a.reshape(-1, *a.shape[-2:]), b.reshape(-1, *b.shape[-2:]))
    return out


def _chunk_forward(q, k, v, slope, initial_state, cu_seqlens, chunk):
    """The forward pass -> o [B, T, H, V], what the backward needs (q_, k_, v_, qq, kk, a, states
    [NC + 1, N, H, K, V]: the state entering each chunk, then the final one), decays, layout."""
    b, t, h, dk = q.shape
    dv = v.shape[-1]
    dtype = compute_dtype(q, k, v)
    layout = ChunkLayout(b, t, cu_seqlens, chunk, q.device)
    q_, k_, v_ = (layout.to_chunks(x, dtype) for x in (q, k, v))  # [NC, N, H, C, D]
    dec = ChunkDecays(slope.to(device=q.device, dtype=dtype), layout.chunk_lens, chunk)
    qq, kk = q_ * dec.qd, dec.scale_keys(k_)
    a = torch.matmul(q_, k_.transpose(-1, -2)).mul_(dec.mask)  # [NC, N, H, C, C]
    states = torch.empty(layout.nc + 1, layout.n, h, dk, dv, dtype=dtype, device=q.device)
    if initial_state is None:
        states[0].zero_()
    else:
        states[0].copy_(initial_state)
    torch.matmul(kk.transpose(-1, -2), v_, out=states[1:])  # U_c, then scanned into S_{c+1}
    for c in range(layout.nc):
        states[c + 1].addcmul_(states[c], dec.bd[c])
    o = _bmm_add_(torch.matmul(qq, states[:-1]), a, v_)  # [NC, N, H, C, V]
    return layout.from_chunks(o, v.dtype), (q_, k_, v_, qq, kk, a, states), dec, layout


class LightningChunkFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, slope, initial_state, cu_seqlens, chunk):
        o, saved, dec, layout = _chunk_forward(q, k, v, slope, initial_state, cu_seqlens, chunk)
        ctx.save_for_backward(*saved)
        ctx.decays = dec
        ctx.layout = layout
        ctx.dtypes = (q.dtype, k.dtype, v.dtype, None if initial_state is None else initial_state.dtype)
        final = saved[-1][-1].clone()
        return o, final

    @staticmethod
    def backward(ctx, do, dfinal):
        q_, k_, v_, qq, kk, a, states = ctx.saved_tensors
        layout, dec = ctx.layout, ctx.decays
        do_ = layout.to_chunks(do, q_.dtype)  # [NC, N, H, C, V]
        grads = torch.empty_like(states)  # G_c, c = 0..NC: gradient of the state entering chunk c
        if dfinal is None:
            grads[-1].zero_()
        else:
            grads[-1].copy_(dfinal)
        torch.matmul(qq.transpose(-1, -2), do_, out=grads[:-1])
        for c in reversed(range(layout.nc)):
            grads[c].addcmul_(grads[c + 1], dec.bd[c])
        g_next = grads[1:]  # gradient of the state each chunk leaves behind
        da = torch.matmul(do_, v_.transpose(-1, -2)).mul_(dec.mask)  # [NC, N, H, C, C]
        dq = _bmm_add_(torch.matmul(do_, states[:-1].transpose(-1, -2)).mul_(dec.qd), da, k_)
        dk = _bmm_add_(dec.scale_keys(torch.matmul(v_, g_next.transpose(-1, -2))), da.transpose(-1, -2), q_)
        dv = _bmm_add_(torch.matmul(kk, g_next), a.transpose(-1, -2), do_)
        q_dtype, k_dtype, v_dtype, h0_dtype = ctx.dtypes
        dh0 = None if h0_dtype is None else grads[0].to(h0_dtype)
        dq, dk, dv = (layout.from_chunks(g, dt) for g, dt in ((dq, q_dtype), (dk, k_dtype), (dv, v_dtype)))
        return dq, dk, dv, None, dh0, None, None


def matmul_shapes(
    n: int, t: int, h: int, dk: int, dv: int, chunk: int = DEFAULT_CHUNK, backward: bool = True
):
    """The batched matmuls this backend runs, as (batch, m, k, n) for an [m, k] x [k, n] product:
    the FLOP count of the benchmark and the shapes of its torch.bmm yardstick."""
    c = chunk
    b = -(-t // c) * n * h  # every chunk of every sequence and head
    fwd = [(b, c, dk, c), (b, dk, c, dv), (b, c, dk, dv), (b, c, c, dv)]  # QK^T, (K kd)^T V, (Q qd) S, A V
    bwd = [
        (b, dk, c, dv),  # (Q qd)^T dO   state gradients
        (b, c, dv, c),  # dO V^T        dA
        (b, c, dv, dk),  # dO S^T       dQ (inter)
        (b, c, c, dk),  # dA K          dQ (intra)
        (b, c, dv, dk),  # V G^T        dK (inter)
        (b, c, c, dk),  # dA^T Q        dK (intra)
        (b, c, dk, dv),  # (K kd) G     dV (inter)
        (b, c, c, dv),  # A^T dO        dV (intra)
    ]
    return fwd + (bwd if backward else [])


def _plain_prefill(
    q, k, v, slope, initial_state=None, output_final_state=False, cu_seqlens=None, chunk_size=None
):
    o, final = LightningChunkFunction.apply(
        q, k, v, slope, initial_state, cu_seqlens, chunk_size or DEFAULT_CHUNK
    )
    return o, (final if output_final_state else None)


def states_inside_chunks(state_checkpoints, states, k_, v_, slope, t, cu_seqlens, chunk):
    """The state after each checkpoint token, from the state entering its chunk -> [P, H, K, V].

    For token i at offset j of chunk c (sequence n):  S_i = d^(j+1) S_c + sum_{m <= j} d^(j-m) k_m^T v_m,
    d = exp(-s); only the P chunks that hold a checkpoint are read (a [P, H, C, K] gather)."""
    if not state_checkpoints.numel():
        return states.new_zeros(0, *states.shape[2:])
    seq, pos = locate(state_checkpoints, t, cu_seqlens)  # [P], [P]
    c, j = pos // chunk, pos % chunk
    s = slope.to(device=k_.device, dtype=k_.dtype)[None, :, None]  # [1, H, 1]
    rel = (j[:, None] - torch.arange(chunk, device=j.device)).to(k_.dtype)[:, None, :]  # [P, 1, C], j - m
    # clamp: m > j would be exp of a positive number (overflow; those keys come after the token).
    weight = torch.exp(-s * rel.clamp(min=0)) * (rel >= 0)  # [P, H, C]
    carried = torch.exp(-s * (j[:, None, None] + 1).to(k_.dtype))[..., None]  # [P, H, 1, 1]
    keys = k_[c, seq] * weight[..., None]  # [P, H, C, K]
    return torch.baddbmm(  # [P, H, K, V]
        (carried * states[c, seq]).flatten(0, 1),
        keys.transpose(-1, -2).flatten(0, 1),
        v_[c, seq].flatten(0, 1),
    ).unflatten(0, (len(seq), -1))


def lightning_prefill_chunk(
    q, k, v, slope, initial_state=None, output_final_state=False, cu_seqlens=None, chunk_size=None,
    state_checkpoints=None,
):  # fmt: skip
    """Without checkpoints, the autograd Function. With them and no gradients needed, one forward
    pass that also reads the checkpoint states off its chunk states; a call that needs gradients
    chains the Function over segments (checkpoints.py), which differentiates through the states."""
    if state_checkpoints is None:
        return _plain_prefill(q, k, v, slope, initial_state, output_final_state, cu_seqlens, chunk_size)
    needs_grad = torch.is_grad_enabled() and any(
        x is not None and x.requires_grad for x in (q, k, v, initial_state)
    )
    if needs_grad:
        o, final, states = chain_segments(
            _plain_prefill, q, k, v, slope, initial_state, cu_seqlens, chunk_size, state_checkpoints
        )
        return o, (final if output_final_state else None), states
    chunk = chunk_size or DEFAULT_CHUNK
    with torch.no_grad():
        o, saved, _, _ = _chunk_forward(q, k, v, slope, initial_state, cu_seqlens, chunk)
        k_, v_, states = saved[1], saved[2], saved[-1]
        at = states_inside_chunks(state_checkpoints, states, k_, v_, slope, q.shape[1], cu_seqlens, chunk)
    return o, (states[-1].clone() if output_final_state else None), at


register_solution(
    PREFILL,
    "torch_chunk",
    lightning_prefill_chunk,
    language="pytorch",
    target_hardware=["cpu", "cuda"],
    backward=True,
    description=f"chunked matmul form (C={DEFAULT_CHUNK}), hand-written chunked backward",
)


def lightning_decode_step(q, k, v, slope, state=None):
    """One token per sequence in a few fused ops (the reference loops and stacks for one step):
    S' = exp(-s) S + k^T v, o = q S'. q, k [N, H, K], v [N, H, V], state [N, H, K, V]."""
    dtype = compute_dtype(q, k, v, state)
    kv = k.to(dtype)[..., :, None] * v.to(dtype)[..., None, :]  # [N, H, K, V]
    if state is not None:
        decay = torch.exp(-slope.to(dtype))[None, :, None, None]  # [1, H, 1, 1]
        kv = torch.addcmul(kv, state.to(dtype), decay)
    o = torch.matmul(q.to(dtype)[..., None, :], kv)[..., 0, :]  # [N, H, V]
    return o.to(v.dtype), kv


register_solution(
    DECODE,
    "torch_chunk",
    lightning_decode_step,
    language="pytorch",
    target_hardware=["cpu", "cuda"],
    backward=True,
    description="one fused state update (addcmul) and one batched matvec",
)
