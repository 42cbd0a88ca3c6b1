"""Every backend that runs on this CPU matches each op's plain-torch reference: outputs and every
gradient (q, k, v, initial state, sinks, caches), fp32 and bf16, odd lengths, GQA, packs.

The references are the plain statements of each op (token-by-token recurrence, masked softmax);
the comparisons use fla's relative-RMSE metric. Shapes are tiny so the whole file runs in seconds.
"""

from __future__ import annotations

import pytest
import torch

from attnlab.kernels import registry
from attnlab.kernels.tensors import relative_rmse

CPU = torch.device("cpu")
TOL = {torch.float32: 1e-5, torch.bfloat16: 1e-2}

# One small case per feature: odd lengths (not multiples of 64 or of small chunks), initial states,
# packs with an empty and a one-token sequence, windows, sinks, GQA, a query chunk over a cache.
CASES = {
    "lightning_prefill": [
        {"heads": 3, "head_dim": 16, "batch": 2, "seq_len": 67},
        {"heads": 2, "head_dim": 16, "batch": 1, "seq_len": 5, "initial_state": False},
        {"heads": 2, "head_dim": 8, "pack": [9, 0, 70, 1]},
        {"heads": 2, "head_dim": 8, "batch": 2, "seq_len": 40, "checkpoints": "every 8"},  # + states
        {"heads": 2, "head_dim": 8, "pack": [9, 0, 70, 1], "checkpoints": [79, 0, 9, 40, 40, 8]},
    ],
    "lightning_decode": [{"heads": 3, "head_dim": 16, "batch": 4}],
    "swa_prefill": [
        {"heads": 4, "kv_heads": 2, "head_dim": 16, "seq_len": 75, "window": 9, "sinks": True},
        {"heads": 4, "kv_heads": 1, "head_dim": 16, "seq_len": 40, "q_len": 7, "window": 5},
        {"heads": 2, "head_dim": 16, "seq_len": 33, "sinks": True},  # full causal, sinks
    ],
    "paged_attn_decode": [
        {"heads": 4, "kv_heads": 2, "head_dim": 16, "page": 8, "seq_lens": [1, 30, 17], "sinks": True},
        {"heads": 2, "head_dim": 16, "page": 4, "seq_lens": [5, 12]},
    ],
    "mla_decode": [
        {"heads": 3, "kv_lora_rank": 32, "qk_rope_head_dim": 8, "batch": 2, "seq_len": 21, "q_len": 1},
        {"heads": 3, "kv_lora_rank": 32, "qk_rope_head_dim": 8, "batch": 1, "seq_len": 21, "q_len": 5},
    ],
}


def cpu_backends(op: str) -> list[str]:
    """Backends other than the reference that can run here (fla's GPU kernels and Triton cannot)."""
    sols = registry.solutions(op)
    return [
        n for n, s in sols.items() if n != "torch" and s.unusable_reason(CPU, torch.float32, True) is None
    ]


def make_inputs(op: str, case: dict, dtype: torch.dtype, seed: int = 0) -> dict:
    defn = registry.definition(op)
    dtype_name = str(dtype).removeprefix("torch.")
    workload = defn.make_workload({**case, "dtype": dtype_name}, "test")
    return defn.make_inputs(workload, CPU, torch.Generator().manual_seed(seed))


# (op, backend, case) for every case the backend takes (fla's naive code has no packs).
PARAMS = [
    pytest.param(op, name, i, id=f"{op}-{name}-{i}")
    for op, cases in CASES.items()
    for name in cpu_backends(op)
    for i in range(len(cases))
    if registry.solutions(op)[name].supports(make_inputs(op, cases[i], torch.float32)) is None
]


def outputs_and_grads(fn, inputs: dict, grad_names: list[str], seed: int = 1):
    """Outputs and gradients of a fixed random linear loss over every output."""
    ins = {k: (v.detach().clone().requires_grad_() if k in grad_names else v) for k, v in inputs.items()}
    outs = fn(**ins)
    outs = [o for o in (outs if isinstance(outs, tuple) else (outs,)) if o is not None]
    gen = torch.Generator().manual_seed(seed)
    loss = sum((o.float() * torch.randn(o.shape, generator=gen)).sum() for o in outs)
    grads = torch.autograd.grad(loss, [ins[n] for n in grad_names])
    return outs, list(grads)


def check_against_reference(op: str, backend: str, inputs: dict, tol: float) -> None:
    defn, sol = registry.definition(op), registry.solutions(op)[backend]
    names = [n for n in defn.grad_inputs if isinstance(inputs.get(n), torch.Tensor)]
    # The reference answers the (already rounded) inputs in fp32.
    ref_inputs = {
        k: v.float() if isinstance(v, torch.Tensor) and v.is_floating_point() else v
        for k, v in inputs.items()
    }
    ref_outs, ref_grads = outputs_and_grads(defn.reference, ref_inputs, names)
    outs, grads = outputs_and_grads(sol.fn, inputs, names)
    assert len(outs) == len(ref_outs)
    pairs = [
        # optional trailing outputs (lightning_prefill's `states`) only when the call asks for them
        *zip(list(defn.outputs)[: len(ref_outs)], ref_outs, outs, strict=True),
        *zip([f"d{n}" for n in names], ref_grads, grads, strict=True),
    ]
    for what, r, x in pairs:
        assert x.shape == r.shape, what
        err = relative_rmse(r, x)
        assert err < tol, f"{backend} {what}: relative RMSE {err:.2e} >= {tol:.0e}"


@pytest.mark.parametrize("op, backend, case", PARAMS)
def test_backend_matches_reference_fp32(op, backend, case):
    check_against_reference(op, backend, make_inputs(op, CASES[op][case], torch.float32), TOL[torch.float32])


@pytest.mark.parametrize("op, backend", [(op, name) for op in CASES for name in cpu_backends(op)])
def test_backend_matches_reference_bf16(op, backend):
    inputs = make_inputs(op, CASES[op][0], torch.bfloat16)
    check_against_reference(op, backend, inputs, TOL[torch.bfloat16])
    out = registry.solutions(op)[backend].fn(**inputs)
    first = out[0] if isinstance(out, tuple) else out
    assert first.dtype == torch.bfloat16  # outputs keep the activation dtype


@pytest.mark.parametrize("op", list(CASES))
def test_every_op_has_a_reference_and_a_fast_cpu_path(op):
    sols = registry.solutions(op)
    assert sols["torch"].backward
    assert {"torch_chunk", "sdpa", "triton", "fla"} & set(sols), op
