"""Softmax ops against hand computations, for every backend that runs here: window semantics,
GPT-OSS sinks in their post-hoc form, paged decode against the un-paged sequence, MLA's absorbed
form against explicit per-head attention."""

from __future__ import annotations

import pytest
import torch

from attnlab.kernels import mla_decode, paged_attn_decode, registry, swa_prefill

CPU = torch.device("cpu")


def backends(op: str) -> list[str]:
    return [
        n for n, s in registry.solutions(op).items() if s.unusable_reason(CPU, torch.float32, False) is None
    ]


def rand(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("backend", backends("swa_prefill"))
def test_window_of_one_returns_own_value_scaled_by_the_sink(backend):
    # With W = 1 a query sees only its own key: softmax over {own logit, sink} gives weight
    # sigmoid(logit - sink) to its own value (GQA: query head h reads kv head h // 2).
    q, k, v, sinks = (
        rand(2, 9, 4, 8, seed=1),
        rand(2, 9, 2, 8, seed=2),
        rand(2, 9, 2, 8, seed=3),
        rand(4, seed=4),
    )
    o = swa_prefill(q, k, v, 0.5, window=1, sinks=sinks, backend=backend)
    kh, vh = k.repeat_interleave(2, dim=2), v.repeat_interleave(2, dim=2)
    logit = (q * kh).sum(-1) * 0.5  # [B, T, H]
    expected = vh * torch.sigmoid(logit - sinks)[..., None]
    torch.testing.assert_close(o, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("backend", backends("swa_prefill"))
def test_sinks_equal_the_post_hoc_form(backend):
    # GPT-OSS sinks: softmax over keys + sink == (softmax over keys) * sigmoid(lse - sink).
    q, k, v, sinks = (
        rand(1, 20, 2, 8, seed=5),
        rand(1, 20, 2, 8, seed=6),
        rand(1, 20, 2, 8, seed=7),
        rand(2, seed=8),
    )
    logits = torch.einsum("bqhd,bkhd->bhqk", q, k) * 8**-0.5
    pos = torch.arange(20)
    allowed = (pos[None, :] <= pos[:, None]) & (pos[:, None] - pos[None, :] < 6)
    logits = logits.masked_fill(~allowed, float("-inf"))
    plain = torch.einsum("bhqk,bkhd->bqhd", torch.softmax(logits, -1), v)
    gate = torch.sigmoid(torch.logsumexp(logits, -1) - sinks[:, None]).transpose(1, 2)[
        ..., None
    ]  # [B, T, H, 1]
    o = swa_prefill(q, k, v, window=6, sinks=sinks, backend=backend)
    torch.testing.assert_close(o, plain * gate, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("backend", backends("swa_prefill"))
def test_query_chunk_over_a_cache_equals_the_tail_of_the_full_pass(backend):
    q, k, v = rand(1, 30, 4, 8, seed=9), rand(1, 30, 2, 8, seed=10), rand(1, 30, 2, 8, seed=11)
    full = swa_prefill(q, k, v, window=7, backend="torch")
    tail = swa_prefill(q[:, 23:], k, v, window=7, backend=backend)
    torch.testing.assert_close(tail, full[:, 23:], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("backend", backends("paged_attn_decode"))
def test_paged_decode_equals_attention_over_the_unpaged_sequence(backend):
    page, lens = 4, [6, 13, 1]
    gen = torch.Generator().manual_seed(12)
    seqs_k = [torch.randn(t, 2, 8, generator=gen) for t in lens]  # [len, Hkv, D] per sequence
    seqs_v = [torch.randn(t, 2, 8, generator=gen) for t in lens]
    q, sinks = torch.randn(3, 4, 8, generator=gen), torch.randn(4, generator=gen)
    # Scatter each sequence into randomly chosen physical pages (the serving engine's job).
    num_pages = 10
    perm = torch.randperm(num_pages, generator=gen).tolist()
    k_cache, v_cache = torch.zeros(num_pages, page, 2, 8), torch.zeros(num_pages, page, 2, 8)
    table = torch.zeros(3, 4, dtype=torch.int32)
    for n, t in enumerate(lens):
        for p in range(-(-t // page)):
            phys = perm.pop()
            table[n, p] = phys
            rows = slice(p * page, min(t, (p + 1) * page))
            k_cache[phys, : rows.stop - rows.start] = seqs_k[n][rows]
            v_cache[phys, : rows.stop - rows.start] = seqs_v[n][rows]
    o = paged_attn_decode(q, k_cache, v_cache, table, torch.tensor(lens, dtype=torch.int32), sinks=sinks,
                          backend=backend)  # fmt: skip
    for n in range(len(lens)):
        # the decode query is the sequence's last position: it sees every key
        expected = swa_prefill(
            q[n, None, None], seqs_k[n][None], seqs_v[n][None], sinks=sinks, backend="torch"
        )
        torch.testing.assert_close(o[n], expected[0, 0], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("backend", backends("mla_decode"))
def test_mla_decode_equals_explicit_attention_with_one_shared_key_head(backend):
    q_lat, q_pe = rand(2, 3, 4, 16, seed=13), rand(2, 3, 4, 4, seed=14)
    c_kv, k_pe = rand(2, 10, 16, seed=15), rand(2, 10, 4, seed=16)
    o = mla_decode(q_lat, q_pe, c_kv, k_pe, 0.2, backend=backend)
    expected = torch.empty_like(o)
    for b in range(2):
        for t in range(3):
            visible = 10 - 3 + t + 1  # query t sits at position 7 + t
            for h in range(4):
                scores = (c_kv[b, :visible] @ q_lat[b, t, h] + k_pe[b, :visible] @ q_pe[b, t, h]) * 0.2
                expected[b, t, h] = torch.softmax(scores, 0) @ c_kv[b, :visible]
    torch.testing.assert_close(o, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: swa_prefill(rand(1, 5, 3, 8), rand(1, 5, 2, 8), rand(1, 5, 2, 8)), "kv heads must divide"),
        (lambda: swa_prefill(rand(1, 6, 2, 8), rand(1, 5, 2, 8), rand(1, 5, 2, 8)), "Tq = 6 > Tk = 5"),
        (lambda: swa_prefill(rand(1, 5, 2, 8), rand(1, 5, 2, 8), rand(1, 5, 2, 8), window=0), "window = 0"),
        (
            lambda: swa_prefill(rand(1, 5, 2, 8), rand(1, 5, 2, 8), rand(1, 5, 2, 8), sinks=rand(3)),
            "sinks must be",
        ),
    ],
)
def test_bad_inputs_are_named(call, message):
    with pytest.raises(ValueError, match=message):
        call()


@pytest.mark.parametrize(
    "tq,tk,window,sinks", [(700, 700, 100, False), (600, 1100, 300, True), (520, 520, 256, True)]
)
def test_sdpa_swa_prefill_in_query_blocks_equals_the_reference(tq, tk, window, sinks):
    """Past max(window, 256) queries the sdpa backend reads only each block's window of keys; the
    result must equal the masked full-square reference (forward and gradients)."""
    from attnlab.kernels.attention.ops import swa_reference
    from attnlab.kernels.attention.sdpa import swa_prefill_sdpa

    gen = torch.Generator().manual_seed(0)
    q = torch.randn(2, tq, 4, 16, generator=gen, requires_grad=True)
    k = torch.randn(2, tk, 2, 16, generator=gen, requires_grad=True)
    v = torch.randn(2, tk, 2, 8, generator=gen, requires_grad=True)
    s = torch.randn(4, generator=gen) if sinks else None
    got = swa_prefill_sdpa(q, k, v, 0.25, window, s)
    want = swa_reference(q, k, v, 0.25, window, s)
    assert (got - want).abs().max().item() < 1e-5
    g = torch.randn_like(got)
    grads = torch.autograd.grad(got, (q, k, v), g)
    refs = torch.autograd.grad(want, (q, k, v), g)
    assert all((a - b).abs().max().item() < 1e-4 for a, b in zip(grads, refs, strict=True))
