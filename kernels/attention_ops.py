"""Ops `swa_prefill` and `paged_attn_decode`: causal softmax attention, GQA, optional window and sinks.

`swa_prefill`: q [B, Tq, H, D], k [B, Tk, Hkv, D], v [B, Tk, Hkv, Dv] -> o [B, Tq, H, Dv]. Queries are
the last Tq of the Tk positions (bottom-right aligned, as flash-attention with a KV cache), so one
op serves a full sequence (Tq = Tk), a prefill chunk after a cache, and one decode token. Query i
sees key j when j <= i and, with `window` W, i - j < W (W keys including itself; GPT-OSS /
Mistral). `window=None` is full causal attention. `sinks` [H] (GPT-OSS): one logit per head that
joins the softmax and contributes no value (REFERENCES.md).

`paged_attn_decode`: one query per sequence, q [N, H, D], over a paged cache as the serving engine
stores it (vLLM layout): k_cache [P, page, Hkv, D], v_cache [P, page, Hkv, Dv], block_table [N,
max_pages] (physical page of each logical page), seq_lens [N] (keys per sequence; the query's own
key is already in the cache, so it sits at position seq_len - 1). It sees key j when j <= seq_len - 1
and, with `window` W, seq_len - 1 - j < W. Table entries of pages wholly before the window start may
be -1 (freed pages, `paged_cache.py`): no backend reads them. The caches may be non-contiguous views
of one buffer (MLA's latent cache as key and, cut to its first R channels, as value).

The references are plain torch (`softmax_attention.attention_probs` + einsum), one sequence at a
time for the paged op.
"""

from __future__ import annotations

import torch

from . import dispatch
from .definition import Definition, Workload
from .paged_cache import first_key, random_block_table
from .registry import register_definition, register_solution
from .softmax_attention import attention_probs
from .tensors import random_tensor, torch_dtype
from .workloads import HARNESS_DEFAULTS, dtype_input, harness_fields, short_dtype, take

SWA, PAGED = "swa_prefill", "paged_attn_decode"


def default_scale(scale: float | None, head_dim: int) -> float:
    return head_dim**-0.5 if scale is None else scale


# --- references ---------------------------------------------------------------------------------


def swa_reference(q, k, v, scale=None, window=None, sinks=None):
    h, hkv = q.shape[2], k.shape[2]
    probs = attention_probs(
        q, k, k.shape[1] - q.shape[1], 0, default_scale(scale, q.shape[-1]), window, sinks
    )
    return torch.einsum("bhqk,bkhd->bqhd", probs, v.repeat_interleave(h // hkv, dim=2))  # [B, Tq, H, Dv]


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


# --- public ops ---------------------------------------------------------------------------------


def _check_heads(op: str, h: int, hkv: int, sinks) -> None:
    if h % hkv:
        raise ValueError(f"{op}: the {hkv} kv heads must divide the {h} query heads (GQA)")
    if sinks is not None and sinks.shape != (h,):
        raise ValueError(f"{op}: sinks must be [H] = [{h}], got {tuple(sinks.shape)}")


def check_window(op: str, window) -> None:
    if window is not None and (not isinstance(window, int) or window <= 0):
        raise ValueError(f"{op}: window = {window!r}; must be a positive integer or None (full causal)")


def check_paged_cache(op: str, q, k_cache, v_cache, sinks) -> None:
    if q.dim() != 3 or k_cache.dim() != 4 or v_cache.dim() != 4 or k_cache.shape[:3] != v_cache.shape[:3]:
        raise ValueError(
            f"{op}: q must be [N, H, D], k_cache [P, page, Hkv, D], v_cache [P, page, Hkv, Dv]; "
            f"got {tuple(q.shape)}, {tuple(k_cache.shape)}, {tuple(v_cache.shape)}"
        )
    if q.shape[-1] != k_cache.shape[-1]:
        raise ValueError(f"{op}: q has head dim {q.shape[-1]}, k_cache {k_cache.shape[-1]}")
    _check_heads(op, q.shape[1], k_cache.shape[2], sinks)


def swa_prefill(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    scale: float | None = None,
    window: int | None = None,
    sinks: torch.Tensor | None = None,
    *,
    backend: str | None = None,
) -> torch.Tensor:
    """-> o [B, Tq, H, Dv]; `scale` defaults to D^-1/2, `window=None` is full causal attention."""
    if q.dim() != 4 or k.dim() != 4 or k.shape[:2] != v.shape[:2] or q.shape[-1] != k.shape[-1]:
        raise ValueError(
            f"{SWA}: q must be [B, Tq, H, D], k [B, Tk, Hkv, D], v [B, Tk, Hkv, Dv]; got q {tuple(q.shape)}, "
            f"k {tuple(k.shape)}, v {tuple(v.shape)}"
        )
    if q.shape[1] > k.shape[1]:
        raise ValueError(
            f"{SWA}: Tq = {q.shape[1]} > Tk = {k.shape[1]}; queries are the last Tq key positions"
        )
    check_window(SWA, window)
    _check_heads(SWA, q.shape[2], k.shape[2], sinks)
    return dispatch.call(SWA, backend, q=q, k=k, v=v, scale=scale, window=window, sinks=sinks)


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


# --- definitions and workload inputs -------------------------------------------------------------


def make_swa_inputs(workload: Workload, device, gen: torch.Generator) -> dict:
    ax, spec = workload.axes, workload.inputs
    dtype = torch_dtype(spec["q"]["dtype"])
    b, tq, tk, h, hkv, d = ax["B"], ax["Tq"], ax["Tk"], ax["H"], ax["Hkv"], ax["D"]
    return {
        "q": random_tensor((b, tq, h, d), dtype, gen, device),
        "k": random_tensor((b, tk, hkv, d), dtype, gen, device),
        "v": random_tensor((b, tk, hkv, d), dtype, gen, device),
        "scale": None,
        "window": spec.get("window", {}).get("value"),
        # sinks around 0 with spread: some heads give the sink real mass, some almost none
        "sinks": random_tensor((h,), dtype, gen, device, 1.0) if "sinks" in spec else None,
    }


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


def swa_workload(entry: dict, where: str) -> Workload:
    f = take(entry, where, {"heads": 8, "kv_heads": None, "head_dim": 64, "batch": 1, "seq_len": 256,
                            "q_len": None, "window": None, "sinks": False, "dtype": "float32",
                            **HARNESS_DEFAULTS})  # fmt: skip
    h, hkv, d, tk = f["heads"], f["kv_heads"] or f["heads"], f["head_dim"], f["seq_len"]
    tq = f["q_len"] or tk
    inputs = {name: dtype_input(f["dtype"]) for name in ("q", "k", "v")}
    label = f"B{f['batch']} T{tk}" + (f" q{tq}" if tq != tk else "") + f" H{h}/{hkv} D{d}"
    if f["window"] is not None:
        inputs["window"] = {"type": "scalar", "value": f["window"]}
        label += f" W{f['window']}"
    if f["sinks"]:
        inputs["sinks"] = dtype_input(f["dtype"])
        label += " sinks"
    return Workload(axes={"B": f["batch"], "Tq": tq, "Tk": tk, "H": h, "Hkv": hkv, "D": d, "Dv": d},
                    inputs=inputs, label=f"{label} {short_dtype(f['dtype'])}", source=entry.get("model", ""),
                    **harness_fields(f, where))  # fmt: skip


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
    if f["window"] is not None:
        inputs["window"] = {"type": "scalar", "value": f["window"]}
        label += f" W{f['window']}"
    if f["sinks"]:
        inputs["sinks"] = dtype_input(f["dtype"])
        label += " sinks"
    axes = {"N": len(lens), "H": h, "Hkv": hkv, "D": d, "Dv": d, "P": sum(pages) + 3, "page": page,
            "max_pages": max(pages)}  # fmt: skip
    return Workload(axes=axes, inputs=inputs, label=f"{label} {short_dtype(f['dtype'])}",
                    source=entry.get("model", ""), **harness_fields(f, where))  # fmt: skip


register_definition(
    Definition(
        name=SWA,
        op_type="attention",
        axes={k: {"type": "var"} for k in ("B", "Tq", "Tk", "H", "Hkv", "D", "Dv")},
        inputs={
            "q": {"shape": ["B", "Tq", "H", "D"], "dtype": "any float"},
            "k": {"shape": ["B", "Tk", "Hkv", "D"], "dtype": "any float"},
            "v": {"shape": ["B", "Tk", "Hkv", "Dv"], "dtype": "any float"},
            "scale": {"shape": None, "dtype": "float", "optional": True},
            "window": {"shape": None, "dtype": "int", "optional": True},
            "sinks": {"shape": ["H"], "dtype": "q.dtype", "optional": True},
        },
        outputs={"o": {"shape": ["B", "Tq", "H", "Dv"], "dtype": "q.dtype"}},
        reference=swa_reference,
        description="Causal (bottom-right aligned) softmax attention with optional window and sinks, GQA.",
        grad_inputs=("q", "k", "v", "sinks"),
        make_inputs=make_swa_inputs,
        make_workload=swa_workload,
    )
)
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
_torch = {"language": "pytorch", "target_hardware": ["cpu", "cuda"], "backward": True}
register_solution(SWA, "torch", swa_reference, description="masked softmax, full [Tq, Tk] logits", **_torch)
register_solution(PAGED, "torch", paged_reference, description="per-sequence gather + softmax", **_torch)
