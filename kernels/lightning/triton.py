"""`triton` backend of the lightning ops: launchers and the autograd Function around
`triton_kernels.py` (prefill forward and backward, decode step).

The forward keeps only q, k, v and the initial state; the backward recomputes the per-chunk
states (fla does the same): storing them would cost [chunks, H, K, V] fp32, 2 GiB at T = 32K,
H = 64, D = 128, while recomputing is one cheap sequential pass.

On a GPU, fp32 inputs run their dots in TF32 (Triton's default, as in fla); the harness's fp32
tolerance allows for it. Under TRITON_INTERPRET=1 (CPU correctness checks) the dots are exact.
"""

from __future__ import annotations

import torch

from ..registry import register_solution
from ..triton_support import HALF_AND_FULL, TRITON_SOLUTION, next_pow2
from .checkpoints import with_checkpoints
from .ops import DECODE, PREFILL

DEFAULT_CHUNK = 64
MAX_HEAD_DIM = 256  # one [K, V] state tile per program


def _chunk(hint: int | None) -> int:
    """The chunk_size hint if Triton can tile it (a power of two in [16, 128]), else the default."""
    if hint is not None and 16 <= hint <= 128 and hint & (hint - 1) == 0:
        return hint
    return DEFAULT_CHUNK


def _chunk_tables(cu_seqlens: torch.Tensor, bt: int):
    """cu_seqlens [N+1] -> chunk_offsets [N] (first global chunk of each sequence),
    chunk_indices [C, 2] ((sequence, chunk within it) per global chunk), C."""
    lens = cu_seqlens.diff()
    counts = (lens + bt - 1) // bt
    offsets = torch.cumsum(counts, 0) - counts
    seq = torch.repeat_interleave(torch.arange(lens.numel(), device=lens.device), counts)
    within = torch.arange(seq.numel(), device=lens.device) - offsets[seq]
    return (
        offsets.to(torch.int32),
        torch.stack([seq, within], 1).to(torch.int32).contiguous(),
        int(seq.numel()),
    )


class _Plan:
    """Launch geometry shared by forward and backward."""

    def __init__(self, q, v, cu_seqlens, chunk):
        b, t, h, k = q.shape
        self.b, self.t, self.h, self.k, self.v = b, t, h, k, v.shape[-1]
        self.bt, self.bk = chunk, next_pow2(k)
        self.bv = min(64, next_pow2(self.v))
        self.varlen = cu_seqlens is not None
        if self.varlen:
            self.cu = cu_seqlens.to(torch.int32).contiguous()
            self.offsets, self.indices, self.chunks = _chunk_tables(cu_seqlens, chunk)
            self.n = cu_seqlens.numel() - 1
        else:
            self.cu = self.offsets = self.indices = q  # unused placeholders (pointers must be tensors)
            self.n, self.chunks = b, b * -(-t // chunk)

    def states(self, k, v, slope, h0):
        """-> hs [chunks, H, K, V] (state entering each chunk), final [N, H, K, V], both fp32."""
        from . import triton_kernels as kern

        hs = k.new_empty(self.chunks, self.h, self.k, self.v, dtype=torch.float32)
        final = k.new_empty(self.n, self.h, self.k, self.v, dtype=torch.float32)
        grid = (-(-self.v // self.bv), self.n * self.h)
        kern.states_fwd[grid](
            k, v, slope, k if h0 is None else h0, hs, final, self.cu, self.offsets, self.t,
            H=self.h, K=self.k, V=self.v, BT=self.bt, BK=self.bk, BV=self.bv,
            USE_H0=h0 is not None, VARLEN=self.varlen,
        )  # fmt: skip
        return hs, final


class LightningTritonFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, slope, initial_state, cu_seqlens, chunk):
        from . import triton_kernels as kern

        q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
        slope = slope.to(device=q.device, dtype=torch.float32).contiguous()
        h0 = None if initial_state is None else initial_state.float().contiguous()
        plan = _Plan(q, v, cu_seqlens, chunk)
        hs, final = plan.states(k, v, slope, h0)
        o = torch.empty_like(v)
        grid = (-(-plan.v // plan.bv), plan.chunks, plan.h)
        kern.output_fwd[grid](
            q, k, v, slope, hs, o, plan.cu, plan.indices, plan.t,
            H=plan.h, K=plan.k, V=plan.v, BT=plan.bt, BK=plan.bk, BV=plan.bv, VARLEN=plan.varlen,
        )  # fmt: skip
        ctx.save_for_backward(q, k, v, slope, h0)
        ctx.plan = plan
        ctx.h0_dtype = None if initial_state is None else initial_state.dtype
        return o, final

    @staticmethod
    def backward(ctx, do, dfinal):
        from . import triton_kernels as kern

        q, k, v, slope, h0 = ctx.saved_tensors
        plan = ctx.plan
        do = do.contiguous()
        hs, _ = plan.states(k, v, slope, h0)
        dhs = torch.empty_like(hs)
        dh0 = None if h0 is None else torch.empty_like(h0)
        kern.dstates_bwd[(-(-plan.v // plan.bv), plan.n * plan.h)](
            q, do, slope, q if dfinal is None else dfinal.float().contiguous(), dhs, q if dh0 is None else dh0,
            plan.cu, plan.offsets, plan.t,
            H=plan.h, K=plan.k, V=plan.v, BT=plan.bt, BK=plan.bk, BV=plan.bv,
            USE_DHT=dfinal is not None, STORE_DH0=dh0 is not None, VARLEN=plan.varlen,
        )  # fmt: skip
        dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
        kern.dqkv_bwd[(plan.chunks, plan.h)](
            q, k, v, do, slope, hs, dhs, dq, dk, dv, plan.cu, plan.indices, plan.t,
            H=plan.h, K=plan.k, V=plan.v, BT=plan.bt, BK=plan.bk, BV=next_pow2(plan.v), VARLEN=plan.varlen,
            num_warps=8 if max(plan.k, plan.v) > 64 else 4,  # two [K, V] fp32 tiles live at once
        )  # fmt: skip
        dh0 = None if dh0 is None else dh0.to(ctx.h0_dtype)
        return dq, dk, dv, None, dh0, None, None


def prefill_triton(
    q, k, v, slope, initial_state=None, output_final_state=False, cu_seqlens=None, chunk_size=None
):
    o, final = LightningTritonFunction.apply(q, k, v, slope, initial_state, cu_seqlens, _chunk(chunk_size))
    return o, (final if output_final_state else None)


def decode_triton(q, k, v, slope, state=None):
    from . import triton_kernels as kern

    n, h, dk = q.shape
    dv = v.shape[-1]
    q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
    o = torch.empty_like(v)
    new_state = q.new_empty(n, h, dk, dv, dtype=torch.float32)
    bv = min(64, next_pow2(dv))
    kern.decode_step[(-(-dv // bv), n * h)](
        q, k, v, slope.to(device=q.device, dtype=torch.float32).contiguous(),
        new_state if state is None else state.float().contiguous(), o, new_state,
        H=h, K=dk, V=dv, BK=next_pow2(dk), BV=bv, USE_STATE=state is not None,
    )  # fmt: skip
    return o, new_state


def _head_dims_fit(call: dict) -> str | None:
    k, v = call["q"].shape[-1], call["v"].shape[-1]
    if max(k, v) > MAX_HEAD_DIM:
        return f"head dims K = {k}, V = {v}: the Triton kernels hold one state tile, K, V <= {MAX_HEAD_DIM}"
    return None


_kw = {**TRITON_SOLUTION, "supports": _head_dims_fit, "dtypes": HALF_AND_FULL}
register_solution(
    PREFILL,
    "triton",
    with_checkpoints(prefill_triton),  # state_checkpoints: chained over segments (checkpoints.py)
    backward=True,
    description="chunked, fla-style 4 kernels",
    **_kw,
)
register_solution(
    DECODE, "triton", decode_triton, description="one fused state update per (seq, head)", **_kw
)
