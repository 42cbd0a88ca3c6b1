"""Ops `paged_attn_decode` and `paged_attn_prefill`: softmax attention over a paged KV cache.

`paged_attn_decode`: one query per sequence, q [N, H, D], over the cache as the serving engine
stores it (vLLM layout): k_cache [P, page, Hkv, D], v_cache [P, page, Hkv, Dv], block_table [N,
max_pages] (physical page of each logical page), seq_lens [N] (keys per sequence; the query's own
key is already in the cache, so it sits at position seq_len - 1). It sees key j when j <= seq_len - 1
and, with `window` W, seq_len - 1 - j < W. The caches may be non-contiguous views of one buffer
(MLA's latent cache as key and, cut to its first R channels, as value).

`paged_attn_prefill`: a packed batch of query chunks (chunked prefill).

    q [T, H, D]                      the new tokens of N sequences, packed (T = cu_seqlens_q[N])
    k_cache, v_cache, block_table    as above
    cu_seqlens_q [N+1] int32         sequence n's queries are q[cu[n]:cu[n+1]]
    seq_lens [N] int32               keys per sequence, the new tokens included (already in the cache)
    -> o [T, H, Dv]

Sequence n's queries are its last cu[n+1] - cu[n] key positions (bottom-right causal, as
`swa_prefill`): a first chunk (queries = keys), a later chunk over a cached prefix, or one decode
token. Query i sees key j when j <= i and, with `window` W, i - j < W; `sinks` [H] as GPT-OSS.

Table entries of pages wholly before a sequence's first visible key may be -1 (freed pages,
`cache.py`): no backend reads them. The references gather each sequence's pages and run the
`swa_prefill` reference; the fast prefill backends (`prefill_by_sequence`) gather only the pages
from the window start on, with index_select, and run their own `swa_prefill` on [1, S, Hkv, D].
"""

from __future__ import annotations

from collections.abc import Callable
from itertools import pairwise

import torch

from .. import dispatch
from ..attention.ops import check_heads, check_window, swa_reference
from ..definition import Definition, Workload
from ..registry import register_definition, register_solution
from ..tensors import random_tensor, torch_dtype
from ..workloads import HARNESS_DEFAULTS, dtype_input, harness_fields, short_dtype, take, window_and_sinks
from .cache import first_key, random_block_table, sequence_kv

PAGED, PREFILL = "paged_attn_decode", "paged_attn_prefill"


# --- paged_attn_decode ----------------------------------------------------------------------------


def paged_sequence_reference(q, k_cache, v_cache, table_row, seq_len, scale, window, sinks):
    """q [Tq, H, D]: the last Tq queries of one sequence -> [Tq, H, Dv]. Gathers the pages from the
    one holding the first visible key (earlier ones may be freed) and runs the swa reference."""
    page = k_cache.shape[1]
    lo = first_key(seq_len, q.shape[0], window) // page
    pages = table_row[lo : -(-seq_len // page)].long()
    k = k_cache[pages].flatten(0, 1)[: seq_len - lo * page]  # [S, Hkv, D]
    v = v_cache[pages].flatten(0, 1)[: seq_len - lo * page]
    return swa_reference(q[None], k[None], v[None], scale, window, sinks)[0]


def paged_reference(q, k_cache, v_cache, block_table, seq_lens, scale=None, sinks=None, window=None):
    outs = [
        paged_sequence_reference(q[n, None], k_cache, v_cache, block_table[n], length, scale, window, sinks)
        for n, length in enumerate(seq_lens.tolist())
    ]
    return torch.cat(outs)  # [N, H, Dv]


def check_paged_cache(op: str, q, k_cache, v_cache, sinks) -> None:
    if q.dim() != 3 or k_cache.dim() != 4 or v_cache.dim() != 4 or k_cache.shape[:3] != v_cache.shape[:3]:
        raise ValueError(
            f"{op}: q must be [N, H, D], k_cache [P, page, Hkv, D], v_cache [P, page, Hkv, Dv]; "
            f"got {tuple(q.shape)}, {tuple(k_cache.shape)}, {tuple(v_cache.shape)}"
        )
    if q.shape[-1] != k_cache.shape[-1]:
        raise ValueError(f"{op}: q has head dim {q.shape[-1]}, k_cache {k_cache.shape[-1]}")
    check_heads(op, q.shape[1], k_cache.shape[2], sinks)


def paged_attn_decode(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    block_table: torch.Tensor,
    seq_lens: torch.Tensor,
    scale: float | None = None,
    sinks: torch.Tensor | None = None,
    window: int | None = None,
    *,
    backend: str | None = None,
) -> torch.Tensor:
    """-> o [N, H, Dv]; `window=None` sees the whole sequence."""
    check_paged_cache(PAGED, q, k_cache, v_cache, sinks)
    check_window(PAGED, window)
    n = q.shape[0]
    if block_table.dim() != 2 or block_table.shape[0] != n or seq_lens.shape != (n,):
        raise ValueError(
            f"{PAGED}: block_table must be [N, max_pages] and seq_lens [N] with N = {n}; got "
            f"{tuple(block_table.shape)}, {tuple(seq_lens.shape)}"
        )
    return dispatch.call(
        PAGED,
        backend,
        q=q,
        k_cache=k_cache,
        v_cache=v_cache,
        block_table=block_table,
        seq_lens=seq_lens,
        scale=scale,
        sinks=sinks,
        window=window,
    )


def make_paged_inputs(workload: Workload, device, gen: torch.Generator) -> dict:
    ax, spec = workload.axes, workload.inputs
    dtype = torch_dtype(spec["q"]["dtype"])
    lens = spec["seq_lens"]["value"]
    n, h, hkv, d, page = len(lens), ax["H"], ax["Hkv"], ax["D"], ax["page"]
    window = spec.get("window", {}).get("value")
    table, num_pages = random_block_table(lens, [1] * n, page, window, gen)
    return {
        "q": random_tensor((n, h, d), dtype, gen, device),
        "k_cache": random_tensor((num_pages, page, hkv, d), dtype, gen, device),
        "v_cache": random_tensor((num_pages, page, hkv, d), dtype, gen, device),
        "block_table": table.to(device),
        "seq_lens": torch.tensor(lens, dtype=torch.int32, device=device),
        "scale": None,
        "sinks": random_tensor((h,), dtype, gen, device, 1.0) if "sinks" in spec else None,
        "window": window,
    }


def paged_workload(entry: dict, where: str) -> Workload:
    f = take(entry, where, {"heads": 8, "kv_heads": None, "head_dim": 64, "page": 16, "seq_lens": None,
                            "window": None, "sinks": False, "dtype": "float32", **HARNESS_DEFAULTS})  # fmt: skip
    lens = f["seq_lens"]
    if not isinstance(lens, list) or not lens or not all(isinstance(x, int) and x > 0 for x in lens):
        raise ValueError(
            f"{where}.seq_lens = {lens!r}: need a list of lists of positive lengths, e.g. [[7, 300]]"
        )
    h, hkv, d, page = f["heads"], f["kv_heads"] or f["heads"], f["head_dim"], f["page"]
    pages = [-(-t // page) for t in lens]
    inputs = {"q": dtype_input(f["dtype"]), "seq_lens": {"type": "scalar", "value": lens},
              "k_cache": dtype_input(f["dtype"]), "v_cache": dtype_input(f["dtype"]),
              "block_table": {"type": "generated", "how": "random permutation of pages"}}  # fmt: skip
    label = f"N{len(lens)} len≤{max(lens)} page{page} H{h}/{hkv} D{d}"
    label += window_and_sinks(f, inputs)
    axes = {"N": len(lens), "H": h, "Hkv": hkv, "D": d, "Dv": d, "P": sum(pages) + 3, "page": page,
            "max_pages": max(pages)}  # fmt: skip
    return Workload(axes=axes, inputs=inputs, label=f"{label} {short_dtype(f['dtype'])}",
                    source=entry.get("model", ""), **harness_fields(f, where))  # fmt: skip


register_definition(
    Definition(
        name=PAGED,
        op_type="attention",
        axes={k: {"type": "var"} for k in ("N", "H", "Hkv", "D", "Dv", "P", "page", "max_pages")},
        inputs={
            "q": {"shape": ["N", "H", "D"], "dtype": "any float"},
            "k_cache": {"shape": ["P", "page", "Hkv", "D"], "dtype": "q.dtype"},
            "v_cache": {"shape": ["P", "page", "Hkv", "Dv"], "dtype": "q.dtype"},
            "block_table": {"shape": ["N", "max_pages"], "dtype": "int32"},
            "seq_lens": {"shape": ["N"], "dtype": "int32"},
            "scale": {"shape": None, "dtype": "float", "optional": True},
            "sinks": {"shape": ["H"], "dtype": "q.dtype", "optional": True},
            "window": {"shape": None, "dtype": "int", "optional": True},
        },
        outputs={"o": {"shape": ["N", "H", "Dv"], "dtype": "q.dtype"}},
        reference=paged_reference,
        description="GQA decode over a paged KV cache (block table + lengths), optional window and sinks.",
        grad_inputs=("q", "k_cache", "v_cache", "sinks"),
        make_inputs=make_paged_inputs,
        make_workload=paged_workload,
    )
)

register_solution(PAGED, "torch", paged_reference, language="pytorch", target_hardware=["cpu", "cuda"],
                  backward=True, description="per-sequence gather + softmax")  # fmt: skip


# --- paged_attn_prefill ---------------------------------------------------------------------------


def _chunks(cu_seqlens_q: torch.Tensor, seq_lens: torch.Tensor):
    """-> (n, first query row, query count, seq_len) of every sequence with queries."""
    cu = cu_seqlens_q.tolist()
    for n, length in enumerate(seq_lens.tolist()):
        if cu[n + 1] > cu[n]:
            yield n, cu[n], cu[n + 1] - cu[n], length


def _join(outs: list[torch.Tensor], q: torch.Tensor, dv: int) -> torch.Tensor:
    return torch.cat(outs) if outs else q.new_zeros(q.shape[0], q.shape[1], dv)  # [T, H, Dv]


def paged_prefill_reference(
    q, k_cache, v_cache, block_table, cu_seqlens_q, seq_lens, scale=None, sinks=None, window=None
):
    outs = [
        paged_sequence_reference(
            q[a : a + tq], k_cache, v_cache, block_table[n], length, scale, window, sinks
        )
        for n, a, tq, length in _chunks(cu_seqlens_q, seq_lens)
    ]
    return _join(outs, q, v_cache.shape[-1])


def prefill_by_sequence(
    swa_fn: Callable, q, k_cache, v_cache, block_table, cu_seqlens_q, seq_lens, scale, sinks, window
) -> torch.Tensor:
    """Run a `swa_prefill` implementation per sequence on the keys its queries can see."""
    outs = []
    for n, a, tq, length in _chunks(cu_seqlens_q, seq_lens):
        k, v = sequence_kv(k_cache, v_cache, block_table[n], length, tq, window)  # [S, Hkv, D*]
        outs.append(swa_fn(q[None, a : a + tq], k[None], v[None], scale, window, sinks)[0])
    return _join(outs, q, v_cache.shape[-1])


def paged_attn_prefill(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    block_table: torch.Tensor,
    cu_seqlens_q: torch.Tensor,
    seq_lens: torch.Tensor,
    scale: float | None = None,
    sinks: torch.Tensor | None = None,
    window: int | None = None,
    *,
    backend: str | None = None,
) -> torch.Tensor:
    """-> o [T, H, Dv]; `scale` defaults to D^-1/2, `window=None` is full causal attention."""
    check_paged_cache(PREFILL, q, k_cache, v_cache, sinks)
    check_window(PREFILL, window)
    n = seq_lens.shape[0] if seq_lens.dim() == 1 else -1
    if block_table.dim() != 2 or block_table.shape[0] != n or cu_seqlens_q.shape != (n + 1,):
        raise ValueError(
            f"{PREFILL}: need seq_lens [N], block_table [N, max_pages], cu_seqlens_q [N+1]; got "
            f"{tuple(seq_lens.shape)}, {tuple(block_table.shape)}, {tuple(cu_seqlens_q.shape)}"
        )
    cu, lens = cu_seqlens_q.tolist(), seq_lens.tolist()
    q_lens = [b - a for a, b in pairwise(cu)]
    if cu[0] != 0 or cu[-1] != q.shape[0] or min(q_lens, default=0) < 0:
        raise ValueError(f"{PREFILL}: cu_seqlens_q = {cu} must rise from 0 to T = {q.shape[0]}")
    if any(tq > t for tq, t in zip(q_lens, lens, strict=True)):
        raise ValueError(
            f"{PREFILL}: query counts {q_lens} exceed seq_lens {lens}; queries are the last keys"
        )
    if max(lens, default=0) > block_table.shape[1] * k_cache.shape[1]:
        raise ValueError(f"{PREFILL}: seq_lens {lens} exceed the block table's {block_table.shape[1]} pages")
    return dispatch.call(PREFILL, backend, q=q, k_cache=k_cache, v_cache=v_cache, block_table=block_table,
                         cu_seqlens_q=cu_seqlens_q, seq_lens=seq_lens, scale=scale, sinks=sinks,
                         window=window)  # fmt: skip


# --- definition and workload inputs --------------------------------------------------------------


def make_prefill_inputs(workload: Workload, device, gen: torch.Generator) -> dict:
    ax, spec = workload.axes, workload.inputs
    dtype = torch_dtype(spec["q"]["dtype"])
    lens, q_lens = spec["seq_lens"]["value"], spec["cu_seqlens_q"]["q_lens"]
    h, hkv, d, page = ax["H"], ax["Hkv"], ax["D"], ax["page"]
    window = spec.get("window", {}).get("value")
    table, num_pages = random_block_table(lens, q_lens, page, window, gen)
    cu = torch.tensor([0, *q_lens]).cumsum(0).to(torch.int32)
    return {
        "q": random_tensor((sum(q_lens), h, d), dtype, gen, device),
        "k_cache": random_tensor((num_pages, page, hkv, d), dtype, gen, device),
        "v_cache": random_tensor((num_pages, page, hkv, d), dtype, gen, device),
        "block_table": table.to(device),
        "cu_seqlens_q": cu.to(device),
        "seq_lens": torch.tensor(lens, dtype=torch.int32, device=device),
        "scale": None,
        "sinks": random_tensor((h,), dtype, gen, device, 1.0) if "sinks" in spec else None,
        "window": window,
    }


def _lengths(value, where: str, name: str, lowest: int) -> list[int]:
    if not isinstance(value, list) or not value or not all(isinstance(x, int) and x >= lowest for x in value):
        raise ValueError(
            f"{where}.{name} = {value!r}: need a list of lists of lengths >= {lowest}, e.g. [[7, 300]]"
        )
    return value


def prefill_workload(entry: dict, where: str) -> Workload:
    f = take(entry, where, {"heads": 8, "kv_heads": None, "head_dim": 64, "page": 16, "seq_lens": None,
                            "q_lens": None, "window": None, "sinks": False, "dtype": "float32",
                            **HARNESS_DEFAULTS})  # fmt: skip
    lens = _lengths(f["seq_lens"], where, "seq_lens", 1)
    q_lens = lens if f["q_lens"] is None else _lengths(f["q_lens"], where, "q_lens", 0)
    if len(q_lens) != len(lens) or any(tq > t for tq, t in zip(q_lens, lens, strict=True)):
        raise ValueError(f"{where}: q_lens {q_lens} must give one count <= seq_len per sequence of {lens}")
    h, hkv, d, page = f["heads"], f["kv_heads"] or f["heads"], f["head_dim"], f["page"]
    pages = [-(-t // page) for t in lens]
    inputs = {"q": dtype_input(f["dtype"]), "seq_lens": {"type": "scalar", "value": lens},
              "cu_seqlens_q": {"type": "generated", "how": "cumulative q_lens", "q_lens": q_lens},
              "k_cache": dtype_input(f["dtype"]), "v_cache": dtype_input(f["dtype"]),
              "block_table": {"type": "generated", "how": "random permutation of pages"}}  # fmt: skip
    label = f"N{len(lens)} T{sum(q_lens)} len≤{max(lens)} page{page} H{h}/{hkv} D{d}"
    label += window_and_sinks(f, inputs)
    axes = {"T": sum(q_lens), "N": len(lens), "H": h, "Hkv": hkv, "D": d, "Dv": d, "P": sum(pages) + 3,
            "page": page, "max_pages": max(pages)}  # fmt: skip
    return Workload(axes=axes, inputs=inputs, label=f"{label} {short_dtype(f['dtype'])}",
                    source=entry.get("model", ""), **harness_fields(f, where))  # fmt: skip


register_definition(
    Definition(
        name=PREFILL,
        op_type="attention",
        axes={k: {"type": "var"} for k in ("T", "N", "H", "Hkv", "D", "Dv", "P", "page", "max_pages")},
        inputs={
            "q": {"shape": ["T", "H", "D"], "dtype": "any float"},
            "k_cache": {"shape": ["P", "page", "Hkv", "D"], "dtype": "q.dtype"},
            "v_cache": {"shape": ["P", "page", "Hkv", "Dv"], "dtype": "q.dtype"},
            "block_table": {"shape": ["N", "max_pages"], "dtype": "int32"},
            "cu_seqlens_q": {"shape": ["N+1"], "dtype": "int32"},
            "seq_lens": {"shape": ["N"], "dtype": "int32"},
            "scale": {"shape": None, "dtype": "float", "optional": True},
            "sinks": {"shape": ["H"], "dtype": "q.dtype", "optional": True},
            "window": {"shape": None, "dtype": "int", "optional": True},
        },
        outputs={"o": {"shape": ["T", "H", "Dv"], "dtype": "q.dtype"}},
        reference=paged_prefill_reference,
        description="Packed query chunks over a paged KV cache (bottom-right causal), window, sinks, GQA.",
        grad_inputs=("q", "k_cache", "v_cache", "sinks"),
        make_inputs=make_prefill_inputs,
        make_workload=prefill_workload,
    )
)
register_solution(PREFILL, "torch", paged_prefill_reference, language="pytorch",
                  target_hardware=["cpu", "cuda"], backward=True,
                  description="per-sequence gather + masked softmax")  # fmt: skip
