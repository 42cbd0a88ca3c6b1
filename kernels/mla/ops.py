"""Op `mla_decode`: DeepSeek MLA attention in the absorbed form, over the latent cache (DeepSeek-V2, arXiv 2405.04434).

The caller folds W_UK into the query (q_lat = q_nope · W_UK, per head) and applies W_UV to the
result, so the op sees only latent-space tensors (FlashMLA / FlashInfer MLA split):

    q_lat [B, Tq, H, R], q_pe [B, Tq, H, Dr], c_kv [B, S, R], k_pe [B, S, Dr]
    score = (q_lat · c_kv + q_pe · k_pe) * scale,   o_lat = softmax(score) · c_kv    -> [B, Tq, H, R]

Every head reads the same cache (one shared "key" [c_kv | k_pe], one shared "value" c_kv).
Queries are the last Tq of the S positions (bottom-right causal), so Tq = 1 is decode and Tq > 1 a
chunk of queries over the cache.
"""

from __future__ import annotations

import torch

from .. import dispatch
from ..attention.reference import causal_window_mask
from ..definition import Definition, Workload
from ..registry import register_definition, register_solution
from ..tensors import random_tensor, torch_dtype
from ..workloads import HARNESS_DEFAULTS, dtype_input, harness_fields, short_dtype, take

MLA = "mla_decode"


def mla_reference(q_lat, q_pe, c_kv, k_pe, scale):
    logits = torch.einsum("bthr,bsr->bhts", q_lat, c_kv) + torch.einsum("bthd,bsd->bhts", q_pe, k_pe)
    tq, s = q_lat.shape[1], c_kv.shape[1]
    allowed = causal_window_mask(tq, s, s - tq, 0, None, c_kv.device)
    logits = (logits * scale).masked_fill(~allowed, float("-inf"))  # [B, H, Tq, S]
    # At least fp32 for the softmax (bf16/fp16 inputs), without rounding fp64 down.
    probs = torch.softmax(logits, dim=-1, dtype=torch.promote_types(logits.dtype, torch.float32))
    return torch.einsum("bhts,bsr->bthr", probs.to(c_kv.dtype), c_kv)  # [B, Tq, H, R]


def mla_decode(
    q_lat: torch.Tensor,
    q_pe: torch.Tensor,
    c_kv: torch.Tensor,
    k_pe: torch.Tensor,
    scale: float,
    *,
    backend: str | None = None,
) -> torch.Tensor:
    """-> o_lat [B, Tq, H, R] (apply W_UV per head afterwards)."""
    b, tq, h, r = q_lat.shape
    if q_pe.shape[:3] != (b, tq, h) or c_kv.shape[::2] != (b, r) or k_pe.shape[:2] != c_kv.shape[:2]:
        raise ValueError(
            f"{MLA}: need q_lat [B, Tq, H, R], q_pe [B, Tq, H, Dr], c_kv [B, S, R], k_pe [B, S, Dr]; got "
            f"{tuple(q_lat.shape)}, {tuple(q_pe.shape)}, {tuple(c_kv.shape)}, {tuple(k_pe.shape)}"
        )
    if tq > c_kv.shape[1]:
        raise ValueError(f"{MLA}: Tq = {tq} > S = {c_kv.shape[1]}; queries are the last Tq cache positions")
    return dispatch.call(MLA, backend, q_lat=q_lat, q_pe=q_pe, c_kv=c_kv, k_pe=k_pe, scale=scale)


def make_mla_inputs(workload: Workload, device, gen: torch.Generator) -> dict:
    ax = workload.axes
    dtype = torch_dtype(workload.inputs["q_lat"]["dtype"])
    b, tq, s, h, r, dr = ax["B"], ax["Tq"], ax["S"], ax["H"], ax["R"], ax["Dr"]
    return {
        "q_lat": random_tensor((b, tq, h, r), dtype, gen, device),
        "q_pe": random_tensor((b, tq, h, dr), dtype, gen, device),
        "c_kv": random_tensor((b, s, r), dtype, gen, device),
        "k_pe": random_tensor((b, s, dr), dtype, gen, device),
        "scale": (ax.get("Dn", 128) + dr) ** -0.5,  # DeepSeek: (qk_nope + qk_rope)^-1/2
    }


def mla_workload(entry: dict, where: str) -> Workload:
    f = take(entry, where, {"heads": 16, "kv_lora_rank": 512, "qk_rope_head_dim": 64, "qk_nope_head_dim": 128,
                            "batch": 1, "seq_len": 1024, "q_len": 1, "dtype": "float32", **HARNESS_DEFAULTS})  # fmt: skip
    axes = {"B": f["batch"], "Tq": f["q_len"], "S": f["seq_len"], "H": f["heads"], "R": f["kv_lora_rank"],
            "Dr": f["qk_rope_head_dim"], "Dn": f["qk_nope_head_dim"]}  # fmt: skip
    inputs = {name: dtype_input(f["dtype"]) for name in ("q_lat", "q_pe", "c_kv", "k_pe")}
    label = f"B{f['batch']} S{f['seq_len']} q{f['q_len']} H{f['heads']} R{f['kv_lora_rank']}+{f['qk_rope_head_dim']}"
    return Workload(axes=axes, inputs=inputs, label=f"{label} {short_dtype(f['dtype'])}",
                    source=entry.get("model", ""), **harness_fields(f, where))  # fmt: skip


register_definition(
    Definition(
        name=MLA,
        op_type="mla",
        axes={k: {"type": "var"} for k in ("B", "Tq", "S", "H", "R", "Dr")},
        inputs={
            "q_lat": {"shape": ["B", "Tq", "H", "R"], "dtype": "any float"},
            "q_pe": {"shape": ["B", "Tq", "H", "Dr"], "dtype": "q_lat.dtype"},
            "c_kv": {"shape": ["B", "S", "R"], "dtype": "q_lat.dtype"},
            "k_pe": {"shape": ["B", "S", "Dr"], "dtype": "q_lat.dtype"},
            "scale": {"shape": None, "dtype": "float"},
        },
        outputs={"o_lat": {"shape": ["B", "Tq", "H", "R"], "dtype": "q_lat.dtype"}},
        reference=mla_reference,
        description="Absorbed MLA attention over the latent cache (bottom-right causal).",
        grad_inputs=("q_lat", "q_pe", "c_kv", "k_pe"),
        make_inputs=make_mla_inputs,
        make_workload=mla_workload,
    )
)
register_solution(
    MLA,
    "torch",
    mla_reference,
    language="pytorch",
    target_hardware=["cpu", "cuda"],
    backward=True,
    description="per-head logits over the latent cache",
)
