"""Lightning ops beyond the shared backend sweep (test_kernels_ops.py): packed batches against a
per-sequence loop, the hand-written chunked backward (gradcheck, state-only losses, any chunk
size), and fla's naive code as an independent implementation."""

from __future__ import annotations

import pytest
import torch

from attnlab.kernels import lightning_prefill, lightning_recurrent, registry
from attnlab.kernels.lightning.torch_chunk import LightningChunkFunction
from attnlab.kernels.tensors import relative_rmse

SLOPE = torch.tensor([0.9, 0.1, 0.0])  # fast, slow, and no decay at all
H, D = 3, 8


def qkv(b: int, t: int, seed: int = 0, dtype=torch.float32):
    gen = torch.Generator().manual_seed(seed)
    return [(torch.randn(b, t, H, D, generator=gen) * 0.4).to(dtype) for _ in range(3)]


def grads_of(fn, tensors, weights):
    """Gradients of sum(out_i * w_i) over fn's outputs w.r.t. `tensors`."""
    leaves = [t.detach().clone().requires_grad_() for t in tensors]
    outs = fn(*leaves)
    loss = sum((o * w).sum() for o, w in zip(outs, weights, strict=True) if w is not None)
    grads = torch.autograd.grad(loss, leaves, allow_unused=True)  # q is unused by a state-only loss
    return [o.detach() for o in outs], [
        torch.zeros_like(x) if g is None else g for x, g in zip(leaves, grads, strict=True)
    ]


PACK_BACKENDS = [
    n for n, s in registry.solutions("lightning_prefill").items()
    if s.available(torch.device("cpu")) is None and s.supports({"cu_seqlens": torch.zeros(1)}) is None
]  # fmt: skip


@pytest.mark.parametrize("backend", PACK_BACKENDS)
def test_pack_matches_per_sequence_loop(backend):
    lengths = [7, 0, 70, 1, 33]  # an empty and a one-token sequence; chunks straddle boundaries
    cu = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()])
    q, k, v = qkv(1, int(cu[-1]), seed=1)
    h0 = torch.randn(len(lengths), H, D, D, generator=torch.Generator().manual_seed(2)) * 0.3
    gen = torch.Generator().manual_seed(3)
    w_o, w_s = (
        torch.randn(1, int(cu[-1]), H, D, generator=gen),
        torch.randn(len(lengths), H, D, D, generator=gen),
    )

    def packed(q, k, v, h0):
        return lightning_prefill(q, k, v, SLOPE, h0, output_final_state=True, cu_seqlens=cu, backend=backend)

    (o, final), grads = grads_of(packed, [q, k, v, h0], [w_o, w_s])
    for i, (a, b) in enumerate(zip(cu[:-1].tolist(), cu[1:].tolist(), strict=True)):
        if a == b:  # an empty sequence keeps its state, and its state's gradient is the cotangent
            torch.testing.assert_close(final[i], h0[i], atol=0, rtol=0)
            torch.testing.assert_close(grads[3][i], w_s[i], atol=1e-6, rtol=0)
            continue

        def one(q, k, v, h0, a=a, b=b, i=i):
            return lightning_recurrent(q[:, a:b], k[:, a:b], v[:, a:b], SLOPE, h0[i : i + 1])

        (o_i, s_i), g_i = grads_of(one, [q, k, v, h0], [w_o[:, a:b], w_s[i : i + 1]])
        torch.testing.assert_close(o[:, a:b], o_i, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(final[i : i + 1], s_i, atol=1e-5, rtol=1e-5)
        for g, g_ref in zip(grads[:3], g_i[:3], strict=True):
            torch.testing.assert_close(g[:, a:b], g_ref[:, a:b], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(grads[3][i], g_i[3][i], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("chunk", [1, 3, 16, 64, 200])
def test_chunk_size_changes_nothing(chunk):
    q, k, v = qkv(2, 45, seed=4)
    h0 = torch.randn(2, H, D, D, generator=torch.Generator().manual_seed(5)) * 0.3
    o, s = lightning_prefill(q, k, v, SLOPE, h0, True, chunk_size=chunk, backend="torch_chunk")
    o_ref, s_ref = lightning_recurrent(q, k, v, SLOPE, h0)
    torch.testing.assert_close(o, o_ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(s, s_ref, atol=1e-5, rtol=1e-5)


def test_hand_written_backward_passes_gradcheck():
    gen = torch.Generator().manual_seed(6)
    q, k, v = (
        torch.randn(1, 11, 2, 3, generator=gen, dtype=torch.float64).requires_grad_() for _ in range(3)
    )
    h0 = torch.randn(1, 2, 3, 3, generator=gen, dtype=torch.float64).requires_grad_()
    slope = torch.tensor([0.7, 0.05], dtype=torch.float64)
    for cu in (None, torch.tensor([0, 4, 11])):
        h = h0 if cu is None else h0.detach().expand(2, -1, -1, -1).clone().requires_grad_()
        assert torch.autograd.gradcheck(
            lambda q, k, v, h, cu=cu: LightningChunkFunction.apply(q, k, v, slope, h, cu, 4), (q, k, v, h)
        )


def test_gradient_through_the_final_state_alone():
    q, k, v = qkv(1, 30, seed=7)
    h0 = torch.randn(1, H, D, D, generator=torch.Generator().manual_seed(8)) * 0.3
    w_s = torch.randn(1, H, D, D, generator=torch.Generator().manual_seed(9))

    def chunk(q, k, v, h0):
        return lightning_prefill(q, k, v, SLOPE, h0, True, chunk_size=8, backend="torch_chunk")

    def ref(q, k, v, h0):
        return lightning_recurrent(q, k, v, SLOPE, h0)

    _, g = grads_of(chunk, [q, k, v, h0], [None, w_s])
    _, g_ref = grads_of(ref, [q, k, v, h0], [None, w_s])
    for a, b in zip(g, g_ref, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_torch_chunk_matches_fla_naive_chunk():
    naive = pytest.importorskip("fla.ops.simple_gla.naive")
    q, k, v = qkv(2, 50, seed=10)
    h0 = torch.randn(2, H, D, D, generator=torch.Generator().manual_seed(11)) * 0.3
    o, s = lightning_prefill(q, k, v, SLOPE, h0, True, backend="torch_chunk")
    g = (-SLOPE).expand(2, 50, H)  # fla's per-token log-decay
    o_ref, s_ref = naive.naive_chunk_simple_gla(
        q, k, v, g, initial_state=h0, output_final_state=True, scale=1.0
    )
    assert relative_rmse(o_ref, o) < 1e-6 and relative_rmse(s_ref, s) < 1e-6


def test_bf16_inputs_keep_an_fp32_state():
    q, k, v = qkv(1, 20, seed=12, dtype=torch.bfloat16)
    o, s = lightning_prefill(q, k, v, SLOPE, None, True, backend="torch_chunk")
    assert o.dtype == torch.bfloat16 and s.dtype == torch.float32


def test_no_final_state_unless_asked():
    q, k, v = qkv(1, 5)
    for backend in ("torch", "torch_chunk"):
        assert lightning_prefill(q, k, v, SLOPE, backend=backend)[1] is None


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"slope": torch.ones(2)}, "slope must be"),
        ({"initial_state": torch.zeros(1, H, D, D)}, "initial_state must be"),
        ({"cu_seqlens": torch.tensor([0.0, 4.0])}, "cu_seqlens needs B = 1"),
    ],
)
def test_bad_inputs_are_named(kwargs, message):
    q, k, v = qkv(2, 4)
    args = {"slope": SLOPE, **kwargs}
    with pytest.raises(ValueError, match=message):
        lightning_prefill(q, k, v, **args)
