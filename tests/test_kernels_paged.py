"""Paged attention ops (`paged_attn_decode`, `paged_attn_prefill`) for every backend that runs on this
CPU, against attention over the un-paged sequences: GQA, windows whose freed pages are -1 in the
block table, sinks, MLA's latent cache passed as two strided views of one buffer, ragged lengths,
shuffled pages. Physical pages no sequence owns hold NaN, so a backend that reads a freed or
foreign page fails loudly. Also: a hand-computed prefill, gradients, dispatch's default order, and
the C backend's build cache and errors."""

from __future__ import annotations

import math

import pytest
import torch

from attnlab.kernels import c_build, dispatch, paged_attn_decode, paged_attn_prefill, registry, swa_prefill
from attnlab.kernels.paged import c as paged_c
from attnlab.kernels.paged.cache import first_key

CPU = torch.device("cpu")


def backends(op: str) -> list[str]:
    """Backends that can run a forward fp32 call here (the C kernel included, Triton not)."""
    return [
        n for n, s in registry.solutions(op).items() if s.unusable_reason(CPU, torch.float32, False) is None
    ]


def test_the_cpu_backends_are_all_here():
    assert {"torch", "torch_chunk", "sdpa", "c"} <= set(backends("paged_attn_decode"))
    assert {"torch", "torch_chunk", "sdpa"} <= set(backends("paged_attn_prefill"))


def build(lens, q_lens, page, hkv, d, window, gen, mla=False, dv=None):
    """Random sequences scattered into shuffled pages -> (seqs_k, seqs_v, k_cache, v_cache, table).

    Pages wholly before a sequence's first visible key get no physical page (-1 in the table), as
    does the table's padding; every physical page no sequence owns is NaN. With `mla` the caches are
    views of one latent buffer [P, page, d]: k = latent[:, :, None, :], v = latent[:, :, None, :dv]."""
    counts = [-(-t // page) for t in lens]
    freed = [first_key(t, tq, window) // page for t, tq in zip(lens, q_lens, strict=True)]
    owned = sum(c - f for c, f in zip(counts, freed, strict=True))
    num_pages = owned + 4  # spare pages: NaN
    perm = torch.randperm(num_pages, generator=gen).tolist()
    kv_shape = (num_pages, page, 1, d) if mla else (num_pages, page, hkv, d)
    k_cache = torch.full(kv_shape, float("nan"))
    v_cache = k_cache if mla else torch.full((num_pages, page, hkv, dv or d), float("nan"))
    table = torch.full((len(lens), max(counts) + 1), -1, dtype=torch.int32)
    seqs_k, seqs_v = [], []
    for n, t in enumerate(lens):
        k = torch.randn(t, 1 if mla else hkv, d, generator=gen)
        v = k[..., :dv] if mla else torch.randn(t, hkv, dv or d, generator=gen)
        seqs_k.append(k)
        seqs_v.append(v)
        for p in range(freed[n], counts[n]):
            phys = perm.pop()
            table[n, p] = phys
            rows = slice(p * page, min(t, (p + 1) * page))
            k_cache[phys] = 0.0  # the unwritten tail of a last page: zeros, as a zero-filled cache holds
            k_cache[phys, : rows.stop - rows.start] = k[rows]
            if not mla:
                v_cache[phys] = 0.0
                v_cache[phys, : rows.stop - rows.start] = v[rows]
    if mla:
        latent = k_cache[:, :, 0]  # [P, page, d]
        k_cache, v_cache = latent[:, :, None, :], latent[:, :, None, :dv]
        assert not v_cache.is_contiguous()
    return seqs_k, seqs_v, k_cache, v_cache, table


def expected(q_rows, seqs_k, seqs_v, q_lens, window, sinks, scale=None):
    """The swa_prefill reference on each un-paged sequence -> [T, H, Dv]."""
    outs, start = [], 0
    for k, v, tq in zip(seqs_k, seqs_v, q_lens, strict=True):
        if tq:
            q = q_rows[start : start + tq][None]
            outs.append(swa_prefill(q, k[None], v[None], scale, window, sinks, backend="torch")[0])
        start += tq
    return torch.cat(outs)


# lens, heads, kv heads, page, window, sinks, mla
CASES = {
    "gqa-sinks": ([6, 13, 1, 16], 4, 2, 4, None, True, False),
    "window-freed-pages": ([1, 37, 100, 64, 9], 4, 2, 8, 16, True, False),
    "window-1": ([5, 12, 3], 2, 1, 4, 1, False, False),
    "window-wider-than-seqs": ([7, 30], 4, 4, 8, 64, True, False),
    "mla-views": ([3, 40, 17], 4, 1, 8, None, False, True),
    "mla-views-window": ([3, 40, 17], 4, 1, 8, 10, True, True),
    # the C kernel's own copies for head sizes 64 and 128; keys a page holds not a multiple of four
    "head-64": ([1, 5, 38, 70], 4, 2, 16, None, True, False),
    "head-128-window": ([3, 22, 61], 2, 1, 16, 13, False, False),
}
HEAD_DIM = {"head-64": 64, "head-128-window": 128}


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("backend", backends("paged_attn_decode"))
def test_decode_equals_attention_over_the_unpaged_sequences(backend, case):
    lens, h, hkv, page, window, with_sinks, mla = CASES[case]
    gen = torch.Generator().manual_seed(len(case))
    d, dv = (24, 16) if mla else (HEAD_DIM.get(case, 16),) * 2
    seqs_k, seqs_v, k_cache, v_cache, table = build(lens, [1] * len(lens), page, hkv, d, window, gen, mla, dv)
    q, sinks = (
        torch.randn(len(lens), h, d, generator=gen),
        torch.randn(h, generator=gen) if with_sinks else None,
    )
    o = paged_attn_decode(q, k_cache, v_cache, table, torch.tensor(lens, dtype=torch.int32), 0.3, sinks, window,
                          backend=backend)  # fmt: skip
    want = expected(q, seqs_k, seqs_v, [1] * len(lens), window, sinks, 0.3)
    torch.testing.assert_close(o, want, atol=1e-5, rtol=1e-5)


# lens, query counts (a first chunk, a chunk over a cached prefix, one token, none), heads, kv heads,
# page, window, sinks, mla
PREFILL_CASES = {
    "gqa-sinks": ([20, 33, 5, 8], [20, 7, 1, 0], 4, 2, 4, None, True, False),
    "window-freed-pages": ([70, 100, 9, 64], [70, 10, 2, 1], 4, 2, 8, 16, True, False),
    "window-1": ([12, 9], [12, 4], 2, 1, 4, 1, False, False),
    "mla-views-window": ([40, 17], [6, 17], 4, 1, 8, 10, True, True),
}


@pytest.mark.parametrize("case", list(PREFILL_CASES))
@pytest.mark.parametrize("backend", backends("paged_attn_prefill"))
def test_prefill_equals_attention_over_the_unpaged_sequences(backend, case):
    lens, q_lens, h, hkv, page, window, with_sinks, mla = PREFILL_CASES[case]
    gen = torch.Generator().manual_seed(len(case) + 100)
    d, dv = (24, 16) if mla else (16, 16)
    seqs_k, seqs_v, k_cache, v_cache, table = build(lens, q_lens, page, hkv, d, window, gen, mla, dv)
    q = torch.randn(sum(q_lens), h, d, generator=gen)
    sinks = torch.randn(h, generator=gen) if with_sinks else None
    cu = torch.tensor([0, *q_lens]).cumsum(0).to(torch.int32)
    o = paged_attn_prefill(q, k_cache, v_cache, table, cu, torch.tensor(lens, dtype=torch.int32), None, sinks,
                           window, backend=backend)  # fmt: skip
    assert o.shape == (sum(q_lens), h, dv)
    torch.testing.assert_close(o, expected(q, seqs_k, seqs_v, q_lens, window, sinks), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("backend", backends("paged_attn_prefill"))
def test_prefill_by_hand(backend):
    # D = 1, scale 1, one head with sink logit ln 4, window 2, page 2. Sequence 0: keys 0, 1, 2,
    # values 10, 20, 30, two queries (positions 1 and 2). Sequence 1: five keys, one query (position 4)
    # that sees keys 3 and 4 only, so its page 0 (keys 0, 1) is freed: -1 in the table.
    k_cache = torch.tensor([[0.0, 1.0], [2.0, 0.0], [9.0, 9.0], [5.0, 6.0], [7.0, 0.0]])[:, :, None, None]
    v_cache = torch.tensor([[10.0, 20.0], [30.0, 0.0], [9.0, 9.0], [1.0, 2.0], [3.0, 0.0]])[:, :, None, None]
    table = torch.tensor([[0, 1, -1], [-1, 3, 4]], dtype=torch.int32)
    q = torch.tensor([math.log(3.0), 1.0, 0.0])[:, None, None]  # [T=3, H=1, D=1]
    cu, lens = torch.tensor([0, 2, 3], dtype=torch.int32), torch.tensor([3, 5], dtype=torch.int32)
    sinks = torch.tensor([math.log(4.0)])
    o = paged_attn_prefill(q, k_cache, v_cache, table, cu, lens, 1.0, sinks, 2, backend=backend)
    e = math.e
    # query at 1: logits {0, ln 3} + sink ln 4 -> exp {1, 3, 4}; at 2: {1, 2} -> {e, e^2, 4};
    # sequence 1's query (q = 0): logits {0, 0} -> {1, 1, 4}, values 2 and 3.
    want = torch.tensor([(10 + 3 * 20) / 8, (20 * e + 30 * e**2) / (e + e**2 + 4), (2 + 3) / 6])
    torch.testing.assert_close(o[:, 0, 0], want, atol=1e-5, rtol=1e-5)


def grads(fn, tensors: dict, seed: int):
    leaves = {n: t.detach().clone().requires_grad_() for n, t in tensors.items()}
    out = fn(**leaves)
    loss = (out * torch.randn(out.shape, generator=torch.Generator().manual_seed(seed))).sum()
    return [out.detach(), *torch.autograd.grad(loss, list(leaves.values()))]


@pytest.mark.parametrize("backend", ["torch_chunk", "sdpa"])
def test_gradients_of_both_ops_match_the_reference_with_a_window(backend):
    gen = torch.Generator().manual_seed(7)
    lens, page = [9, 30], 4  # 9 and 3 queries
    table = torch.tensor([[3, 0, 5, -1, -1, -1, -1, -1], [-1, -1, -1, 1, 6, 2, 7, 4]], dtype=torch.int32)
    leaves = {"q": torch.randn(12, 4, 8, generator=gen), "k_cache": torch.randn(8, page, 2, 8, generator=gen),
              "v_cache": torch.randn(8, page, 2, 8, generator=gen), "sinks": torch.randn(4, generator=gen)}  # fmt: skip
    fixed = {"block_table": table, "cu_seqlens_q": torch.tensor([0, 9, 12], dtype=torch.int32),
             "seq_lens": torch.tensor(lens, dtype=torch.int32), "window": 5}  # fmt: skip

    def prefill(name):
        return lambda **kw: paged_attn_prefill(**kw, **fixed, backend=name)

    for a, b in zip(grads(prefill(backend), leaves, 0), grads(prefill("torch"), leaves, 0), strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    decode_fixed = {"block_table": table, "seq_lens": torch.tensor([9, 30], dtype=torch.int32), "window": 5}
    dec_leaves = {**leaves, "q": leaves["q"][:2]}

    def decode(name):
        return lambda **kw: paged_attn_decode(**kw, **decode_fixed, backend=name)

    for a, b in zip(
        grads(decode(backend), dec_leaves, 1), grads(decode("torch"), dec_leaves, 1), strict=True
    ):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    "op, entry",
    [
        (
            "paged_attn_decode",
            {
                "heads": 4,
                "kv_heads": 2,
                "head_dim": 16,
                "page": 8,
                "seq_lens": [1, 40, 17],
                "window": 12,
                "sinks": True,
            },
        ),  # fmt: skip
        (
            "paged_attn_prefill",
            {
                "heads": 4,
                "kv_heads": 2,
                "head_dim": 16,
                "page": 8,
                "seq_lens": [20, 40, 17],
                "q_lens": [20, 5, 0],
                "window": 12,
                "sinks": True,
            },
        ),  # fmt: skip
    ],
)
def test_workload_inputs_free_pages_and_every_backend_matches_the_reference(op, entry):
    defn = registry.definition(op)
    workload = defn.make_workload(entry, "test")
    inputs = defn.make_inputs(workload, CPU, torch.Generator().manual_seed(0))
    assert (inputs["block_table"] == -1).any() and inputs["window"] == 12
    ref = defn.reference(**inputs)
    for name in backends(op):
        torch.testing.assert_close(registry.solutions(op)[name].fn(**inputs), ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"cu_seqlens_q": torch.tensor([0, 2, 5], dtype=torch.int32)}, r"rise from 0 to T = 4"),
        ({"cu_seqlens_q": torch.tensor([0, 4, 4], dtype=torch.int32)}, r"query counts \[4, 0\] exceed"),
        ({"window": 0}, "window = 0"),
        ({"seq_lens": torch.tensor([3, 9], dtype=torch.int32)}, "exceed the block table"),
    ],
)
def test_bad_prefill_inputs_are_named(kwargs, message):
    call = {"q": torch.randn(4, 2, 8), "k_cache": torch.randn(4, 4, 1, 8), "v_cache": torch.randn(4, 4, 1, 8),
            "block_table": torch.tensor([[0, 1], [2, 3]], dtype=torch.int32),
            "cu_seqlens_q": torch.tensor([0, 1, 4], dtype=torch.int32),
            "seq_lens": torch.tensor([3, 5], dtype=torch.int32), **kwargs}  # fmt: skip
    with pytest.raises(ValueError, match=message):
        paged_attn_prefill(**call)


# --- dispatch -------------------------------------------------------------------------------------


@pytest.fixture
def private_cache(tmp_path, monkeypatch):
    """An empty ranking file: dispatch follows its default order."""
    monkeypatch.setenv("ATTNLAB_KERNEL_CACHE", str(tmp_path / "kernels.json"))
    dispatch.forget()
    yield
    dispatch.forget()


def decode_call(dtype=torch.float32, requires_grad=False):
    _, _, k_cache, v_cache, table = build([5, 9], [1, 1], 4, 2, 8, None, torch.Generator().manual_seed(3))
    q = torch.randn(2, 4, 8).to(dtype).requires_grad_(requires_grad)
    return {"q": q, "k_cache": k_cache.to(dtype), "v_cache": v_cache.to(dtype), "block_table": table,
            "seq_lens": torch.tensor([5, 9], dtype=torch.int32), "scale": None, "sinks": None, "window": None}  # fmt: skip


def test_dispatch_without_a_ranking_runs_c_for_fp32_cpu_decode_and_sdpa_otherwise(private_cache):
    assert dispatch.select("paged_attn_decode", decode_call()).name == "c"
    assert dispatch.select("paged_attn_decode", decode_call(torch.bfloat16)).name == "sdpa"
    assert (
        dispatch.select("paged_attn_decode", decode_call(requires_grad=True)).name == "sdpa"
    )  # c: no backward
    strided = decode_call()
    strided["k_cache"] = strided["k_cache"].transpose(-1, -2).contiguous().transpose(-1, -2)
    assert dispatch.select("paged_attn_decode", strided).name == "sdpa"  # c needs a contiguous last dim


def test_dispatch_without_a_ranking_runs_sdpa_for_prefill(private_cache):
    call = {**decode_call(), "cu_seqlens_q": torch.tensor([0, 1, 2], dtype=torch.int32)}
    assert dispatch.select("paged_attn_prefill", call).name == "sdpa"


def test_a_stored_ranking_overrides_the_default_order_only_when_ranked(private_cache):
    dispatch.write_ranking("cpu", "paged_attn_decode", "fwd", ["torch_chunk", "c"], {})
    assert dispatch.select("paged_attn_decode", decode_call()).name == "c"  # default: builtin
    with dispatch.kernel_choice(dispatch.parse_kernel_choice("default=ranked")):
        assert dispatch.select("paged_attn_decode", decode_call()).name == "torch_chunk"


# --- the C backend --------------------------------------------------------------------------------


def test_c_build_is_cached_by_content_and_leaves_no_temporary_files(tmp_path):
    path = c_build.build(tmp_path, paged_c.SOURCE)
    assert path.parent == tmp_path and path.name.startswith("paged_attention-") and path.suffix == ".so"
    stamp = path.stat().st_mtime_ns
    assert c_build.build(tmp_path, paged_c.SOURCE) == path and path.stat().st_mtime_ns == stamp  # not rebuilt
    assert [p.name for p in tmp_path.iterdir()] == [path.name]


def test_c_without_a_compiler_is_unavailable_with_the_reason(tmp_path, monkeypatch):
    monkeypatch.setattr(c_build, "COMPILER", "attnlab-no-such-compiler")
    monkeypatch.setenv("ATTNLAB_KERNEL_BUILD_DIR", str(tmp_path))
    paged_c.library.cache_clear()
    try:
        reason = paged_c.available(CPU)
        assert "no C compiler" in reason and "attnlab-no-such-compiler" in reason
        with pytest.raises(RuntimeError, match="cannot run paged_attn_decode on cpu here.*no C compiler"):
            paged_attn_decode(**decode_call(), backend="c")
    finally:
        paged_c.library.cache_clear()
    assert paged_c.available(torch.device("meta")) == "the C kernel runs on the CPU only"


@pytest.mark.parametrize(
    "table, lens, message",
    [
        ([[0, 1, 2], [-1, 3, 4]], [5, 9], "not a page of the cache"),  # -1 in sequence 1's visible pages
        ([[0, 1, 2], [3, 4, 99]], [5, 9], "not a page of the cache"),
        ([[0, 1, 2], [3, 4, 5]], [5, 13], "longer than its block table row"),
    ],
)
def test_c_rejects_a_bad_block_table(table, lens, message):
    call = {**decode_call(), "block_table": torch.tensor(table, dtype=torch.int32),
            "seq_lens": torch.tensor(lens, dtype=torch.int32)}  # fmt: skip
    with pytest.raises(ValueError, match=message):
        paged_attn_decode(**call, backend="c")
