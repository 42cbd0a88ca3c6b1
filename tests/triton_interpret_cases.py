"""Triton kernels on CPU under TRITON_INTERPRET=1, tiny fp32 shapes, against the torch references.

Not collected by the main run (the name does not match test_*.py): test_kernels_triton.py runs
this file in a subprocess with TRITON_INTERPRET=1, which must be set before triton is imported and
would otherwise leak into every other test. The interpreter is exact for fp32 dots (and wrong for
bf16 ones), so only fp32 is checked here; bf16 speed and accuracy need a GPU (`attnlab bench kernels`).
"""

from __future__ import annotations

import os

import pytest

if os.environ.get("TRITON_INTERPRET") != "1":
    pytest.skip("run through test_kernels_triton.py (needs TRITON_INTERPRET=1)", allow_module_level=True)

import torch  # noqa: E402

from attnlab.kernels import (  # noqa: E402
    lightning_decode,
    lightning_prefill,
    lightning_recurrent,
    paged_attn_decode,
    swa_prefill,
)

SLOPE = torch.tensor([0.9, 0.05])


def rand(*shape, seed=0, scale=1.0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)) * scale


def with_grads(fn, tensors, weights):
    leaves = [t.detach().clone().requires_grad_() for t in tensors]
    outs = fn(*leaves)
    loss = sum((o * w).sum() for o, w in zip(outs, weights, strict=True))
    return [o.detach() for o in outs], torch.autograd.grad(loss, leaves)


def assert_all_close(xs, ys):
    for x, y in zip(xs, ys, strict=True):
        torch.testing.assert_close(x, y, atol=2e-5, rtol=2e-5)


@pytest.mark.parametrize("t, dk, dv", [(37, 16, 16), (16, 12, 20)])  # odd length; head dims off powers of 2
def test_lightning_prefill_forward_and_backward(t, dk, dv):
    q, k, v = (
        rand(2, t, 2, dk, seed=1, scale=0.4),
        rand(2, t, 2, dk, seed=2, scale=0.4),
        rand(2, t, 2, dv, seed=3),
    )
    h0 = rand(2, 2, dk, dv, seed=4, scale=0.3)
    weights = [rand(2, t, 2, dv, seed=5), rand(2, 2, dk, dv, seed=6)]

    def tri(q, k, v, h0):
        return lightning_prefill(q, k, v, SLOPE, h0, True, chunk_size=16, backend="triton")

    def ref(q, k, v, h0):
        return lightning_recurrent(q, k, v, SLOPE, h0)

    outs, grads = with_grads(tri, [q, k, v, h0], weights)
    ref_outs, ref_grads = with_grads(ref, [q, k, v, h0], weights)
    assert_all_close(outs, ref_outs)
    assert_all_close(grads, ref_grads)  # dq, dk, dv and the initial-state gradient


def test_lightning_prefill_pack_matches_per_sequence_loop():
    cu = torch.tensor([0, 5, 5, 42, 43])  # lengths 5, 0 (empty), 37, 1
    q, k, v = (rand(1, 43, 2, 16, seed=s, scale=0.4) for s in (7, 8, 9))
    h0 = rand(4, 2, 16, 16, seed=10, scale=0.3)
    w_o, w_s = rand(1, 43, 2, 16, seed=11), rand(4, 2, 16, 16, seed=12)

    def tri(q, k, v, h0):
        return lightning_prefill(q, k, v, SLOPE, h0, True, cu_seqlens=cu, chunk_size=16, backend="triton")

    def loop(q, k, v, h0):
        outs, finals = [], []
        for i, (a, b) in enumerate(zip(cu[:-1].tolist(), cu[1:].tolist(), strict=True)):
            if a == b:
                finals.append(h0[i : i + 1])
                continue
            o, s = lightning_recurrent(q[:, a:b], k[:, a:b], v[:, a:b], SLOPE, h0[i : i + 1])
            outs.append(o)
            finals.append(s)
        return torch.cat(outs, 1), torch.cat(finals)

    outs, grads = with_grads(tri, [q, k, v, h0], [w_o, w_s])
    ref_outs, ref_grads = with_grads(loop, [q, k, v, h0], [w_o, w_s])
    assert_all_close(outs, ref_outs)
    assert_all_close(grads, ref_grads)


@pytest.mark.parametrize(
    "cu, points",
    [
        (None, [0, 19, 15, 16, 7, 7, 20, 39, 36]),  # B=2 x T=20: first, last, chunk edge, inside, repeats
        ([0, 5, 5, 6, 40], [0, 4, 5, 6, 21, 22, 39, 21, 30]),  # empty and one-token sequences
    ],
)
@pytest.mark.parametrize("with_h0", [True, False])
def test_lightning_prefill_state_checkpoints(cu, points, with_h0):
    """Segment chaining over the Triton kernel (kernels/lightning/checkpoints.py) against the
    recurrence run per sequence, keeping the state after every token."""
    b, t = (2, 20) if cu is None else (1, 40)
    q, k, v = (rand(b, t, 2, 16, seed=s, scale=0.4) for s in (51, 52, 53))
    n = b if cu is None else len(cu) - 1
    h0 = rand(n, 2, 16, 16, seed=54, scale=0.3) if with_h0 else None
    cu_t = None if cu is None else torch.tensor(cu)
    o, final, states = lightning_prefill(
        q, k, v, SLOPE, h0, True, cu_t, 16, state_checkpoints=torch.tensor(points), backend="triton"
    )
    bounds = (
        [(i * t, (i + 1) * t) for i in range(b)] if cu is None else list(zip(cu[:-1], cu[1:], strict=True))
    )
    flat = [x.reshape(1, b * t, 2, 16) for x in (q, k, v)]
    after, outs, finals = {}, [], []
    for i, (lo, hi) in enumerate(bounds):
        s = torch.zeros(1, 2, 16, 16) if h0 is None else h0[i : i + 1]
        for j in range(lo, hi):  # one token at a time: the state after each
            o_j, s = lightning_recurrent(*(x[:, j : j + 1] for x in flat), SLOPE, s)
            outs.append(o_j)
            after[j] = s[0]
        finals.append(s)
    assert_all_close([states, o.reshape(1, b * t, 2, 16), final],
                     [torch.stack([after[i] for i in points]), torch.cat(outs, 1), torch.cat(finals)])  # fmt: skip
    o_plain, _ = lightning_prefill(q, k, v, SLOPE, h0, True, cu_t, 16, backend="triton")
    assert_all_close([o], [o_plain])


@pytest.mark.parametrize("with_state", [True, False])
def test_lightning_decode_step(with_state):
    q, k, v = rand(3, 2, 16, seed=13), rand(3, 2, 16, seed=14), rand(3, 2, 16, seed=15)
    state = rand(3, 2, 16, 16, seed=16) if with_state else None
    o, s = lightning_decode(q, k, v, SLOPE, state, backend="triton")
    o_ref, s_ref = lightning_recurrent(q[:, None], k[:, None], v[:, None], SLOPE, state)
    assert_all_close([o, s], [o_ref[:, 0], s_ref])


@pytest.mark.parametrize(
    "tq, tk, window, sinks",
    [(37, 37, 5, True), (37, 37, None, False), (9, 50, 8, True), (1, 20, 4, False), (70, 70, None, True)],
)
def test_swa_prefill_with_sinks(tq, tk, window, sinks):
    q, k, v = rand(2, tq, 4, 16, seed=17), rand(2, tk, 2, 16, seed=18), rand(2, tk, 2, 16, seed=19)
    s = rand(4, seed=20) if sinks else None
    o = swa_prefill(q, k, v, window=window, sinks=s, backend="triton")
    assert_all_close([o], [swa_prefill(q, k, v, window=window, sinks=s, backend="torch")])


@pytest.mark.parametrize("kv_heads, sinks", [(2, True), (4, False), (1, True)])
def test_paged_decode(kv_heads, sinks):
    page, lens = 4, [5, 1, 16, 9]
    gen = torch.Generator().manual_seed(21)
    num_pages = 16  # each sequence owns 4 distinct, shuffled physical pages
    table = torch.randperm(num_pages, generator=gen).view(4, 4).to(torch.int32)
    q = rand(4, 4, 16, seed=22)
    k_cache, v_cache = (
        rand(num_pages, page, kv_heads, 16, seed=23),
        rand(num_pages, page, kv_heads, 16, seed=24),
    )
    s = rand(4, seed=25) if sinks else None
    args = (q, k_cache, v_cache, table, torch.tensor(lens, dtype=torch.int32))
    o = paged_attn_decode(*args, sinks=s, backend="triton")
    assert_all_close([o], [paged_attn_decode(*args, sinks=s, backend="torch")])


@pytest.mark.parametrize("window", [1, 6])
def test_paged_decode_window_skips_freed_pages(window):
    """Pages wholly behind the window are -1 in the table (freed by the serving engine) and hold NaN
    in the cache: the kernel must neither read them nor let them reach the output."""
    page, lens = 4, [5, 1, 16, 9]
    gen = torch.Generator().manual_seed(31)
    table = torch.randperm(16, generator=gen).view(4, 4).to(torch.int32)
    k_cache, v_cache = rand(16, page, 2, 16, seed=32), rand(16, page, 2, 16, seed=33)
    for n, length in enumerate(lens):
        for p in range(max(0, length - window) // page):  # wholly before the first visible key
            k_cache[table[n, p]] = float("nan")
            v_cache[table[n, p]] = float("nan")
            table[n, p] = -1
    args = (rand(4, 4, 16, seed=34), k_cache, v_cache, table, torch.tensor(lens, dtype=torch.int32))
    o = paged_attn_decode(*args, window=window, backend="triton")
    assert not o.isnan().any()
    assert_all_close([o], [paged_attn_decode(*args, window=window, backend="torch")])


def test_paged_decode_mla_views_of_one_latent_buffer():
    """MLA's absorbed decode: one shared key head [c_kv | k_pe] whose value is its first R channels,
    both strided views of one page buffer [P, page, R + Dr]."""
    latent = rand(12, 4, 24, seed=41)  # R 16 + Dr 8
    table = torch.randperm(12, generator=torch.Generator().manual_seed(42)).view(3, 4).to(torch.int32)
    args = (rand(3, 4, 24, seed=43), latent[:, :, None, :], latent[:, :, None, :16], table,
            torch.tensor([7, 16, 2], dtype=torch.int32))  # fmt: skip
    o = paged_attn_decode(*args, scale=0.3, backend="triton")
    assert_all_close([o], [paged_attn_decode(*args, scale=0.3, backend="torch")])


@pytest.mark.parametrize(
    "dtype, rounding, group",
    [("bf16", "nearest", None), ("bf16", "stochastic", None), ("fp16", "nearest", None),
     ("fp16", "stochastic", None), ("int8", "nearest", (1, 24)), ("int8", "stochastic", (4, 8))],
)  # fmt: skip
def test_state_store_and_load_equal_the_reference_bit_for_bit(dtype, rounding, group):
    from attnlab.kernels import state_load, state_store

    # K = 12, V = 24 (off powers of two); rows of very different magnitude, one beyond fp16's range.
    x = rand(3, 2, 12, 24, seed=7) * torch.exp(rand(3, 2, 12, 1, seed=8) * 2)
    x[0, 0, 0, 0] = 1e5
    ref = state_store(x, dtype, rounding, group, 99, backend="torch")
    out = state_store(x, dtype, rounding, group, 99, backend="triton")
    assert torch.equal(out[0].view(torch.uint8), ref[0].view(torch.uint8))
    assert (ref[1] is None and out[1] is None) or torch.equal(out[1], ref[1])
    loaded = state_load(*out, group, backend="triton")
    assert torch.equal(loaded, state_load(*ref, group, backend="torch"))
