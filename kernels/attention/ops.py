"""Op `swa_prefill`: causal softmax attention, GQA, optional sliding window and sinks.

q [B, Tq, H, D], k [B, Tk, Hkv, D], v [B, Tk, Hkv, Dv] -> o [B, Tq, H, Dv]. Queries are the last Tq
of the Tk positions (bottom-right aligned, as flash-attention with a KV cache), so one op serves a
full sequence (Tq = Tk), a prefill chunk after a cache, and one decode token. Query i sees key j
when j <= i and, with `window` W, i - j < W (W keys including itself; GPT-OSS / Mistral).
`window=None` is full causal attention. `sinks` [H] (GPT-OSS): one logit per head that joins the
softmax and contributes no value: softmax over keys + sink == (softmax over keys) *
sigmoid(lse - sink), where lse is the log-sum-exp of the key logits.

The reference is plain torch (`reference.attention_probs` + einsum). The paged ops (kernels/paged/)
and MLA (kernels/mla/) reuse this module's argument checks and scale default.
"""

from __future__ import annotations

import torch

from .. import dispatch
from ..definition import Definition, Workload
from ..registry import register_definition, register_solution
from ..tensors import random_tensor, torch_dtype
from ..workloads import HARNESS_DEFAULTS, dtype_input, harness_fields, short_dtype, take, window_and_sinks
from .reference import attention_probs

SWA = "swa_prefill"


def default_scale(scale: float | None, head_dim: int) -> float:
    return head_dim**-0.5 if scale is None else scale


# --- reference ----------------------------------------------------------------------------------


def swa_reference(q, k, v, scale=None, window=None, sinks=None):
    h, hkv = q.shape[2], k.shape[2]
    probs = attention_probs(
        q, k, k.shape[1] - q.shape[1], 0, default_scale(scale, q.shape[-1]), window, sinks
    )
    return torch.einsum("bhqk,bkhd->bqhd", probs, v.repeat_interleave(h // hkv, dim=2))  # [B, Tq, H, Dv]


# --- public op ----------------------------------------------------------------------------------


def check_heads(op: str, h: int, hkv: int, sinks) -> None:
    if h % hkv:
        raise ValueError(f"{op}: the {hkv} kv heads must divide the {h} query heads (GQA)")
    if sinks is not None and sinks.shape != (h,):
        raise ValueError(f"{op}: sinks must be [H] = [{h}], got {tuple(sinks.shape)}")


def check_window(op: str, window) -> None:
    if window is not None and (not isinstance(window, int) or window <= 0):
        raise ValueError(f"{op}: window = {window!r}; must be a positive integer or None (full causal)")


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
    check_heads(SWA, q.shape[2], k.shape[2], sinks)
    return dispatch.call(SWA, backend, q=q, k=k, v=v, scale=scale, window=window, sinks=sinks)


# --- definition and workload inputs ---------------------------------------------------------------


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


def swa_workload(entry: dict, where: str) -> Workload:
    f = take(entry, where, {"heads": 8, "kv_heads": None, "head_dim": 64, "batch": 1, "seq_len": 256,
                            "q_len": None, "window": None, "sinks": False, "dtype": "float32",
                            **HARNESS_DEFAULTS})  # fmt: skip
    h, hkv, d, tk = f["heads"], f["kv_heads"] or f["heads"], f["head_dim"], f["seq_len"]
    tq = f["q_len"] or tk
    inputs = {name: dtype_input(f["dtype"]) for name in ("q", "k", "v")}
    label = f"B{f['batch']} T{tk}" + (f" q{tq}" if tq != tk else "") + f" H{h}/{hkv} D{d}"
    label += window_and_sinks(f, inputs)
    return Workload(axes={"B": f["batch"], "Tq": tq, "Tk": tk, "H": h, "Hkv": hkv, "D": d, "Dv": d},
                    inputs=inputs, label=f"{label} {short_dtype(f['dtype'])}", source=entry.get("model", ""),
                    **harness_fields(f, where))  # fmt: skip


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

_torch = {"language": "pytorch", "target_hardware": ["cpu", "cuda"], "backward": True}
register_solution(SWA, "torch", swa_reference, description="masked softmax, full [Tq, Tk] logits", **_torch)
