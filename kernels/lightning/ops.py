"""Ops `lightning_prefill` and `lightning_decode`: MiniMax-01 lightning attention (arXiv 2501.08313;
HF `MiniMaxLightningAttention`).

    S_t = exp(-s_h) S_{t-1} + k_t^T v_t,   o_t = q_t S_t      (no 1/sqrt(D) scale)

Conventions are fla's (`chunk_simple_gla(q, k, v, g_gamma=-slope, scale=1.0)`): q, k [B, T, H, K],
v [B, T, H, V], slope [H] (decay per step exp(-slope)), initial_state [N, H, K, V], final state
[N, H, K, V] in fp32 (float64 inputs keep float64), output in v's dtype. A packed batch of N
sequences is B = 1 plus `cu_seqlens` [N + 1] (cumulative lengths, from 0 to T); otherwise N = B.

The references run the token-by-token recurrence (`reference.lightning_recurrent`),
one sequence at a time for packs: the plainest statement of the op, with autograd for gradients.

`state_checkpoints` (LongTensor [P] of indices into the flattened token order: row b, token t of
an unpacked batch is b*T + t; a pack indexes its one row) asks the prefill for the recurrent state
of each index's sequence AFTER that token, initial state included: the call then returns
(o, final_or_None, states [P, H, K, V] fp32), states in the given order (duplicates allowed).
Prefix caching stores the states at block boundaries inside a prompt from it, and speculative
decoding keeps the state after the last accepted draft token. `torch_chunk` reads them off its
chunk states; every other backend chains its own kernel over segments cut at the checkpoints
(checkpoints.py), which keeps gradients wherever the backend has a backward.
"""

from __future__ import annotations

import itertools

import torch

from .. import dispatch
from ..definition import Definition, Workload
from ..registry import register_definition, register_solution
from ..tensors import compute_dtype, random_tensor, torch_dtype
from ..workloads import HARNESS_DEFAULTS, dtype_input, harness_fields, short_dtype, take
from .checkpoints import check_state_checkpoints, sequence_bounds
from .reference import lightning_recurrent_kept

PREFILL, DECODE = "lightning_prefill", "lightning_decode"


def minimax_layer0_slopes(num_heads: int) -> torch.Tensor:
    """s_h = (2^(-8/H))^(h+1) for layer 0 (HF `get_slope_rate`; the depth factor is 1 + 1e-5 there)."""
    h = torch.arange(1, num_heads + 1, dtype=torch.float64)
    return (2.0 ** (-8.0 / num_heads)) ** h * (1 + 1e-5)


# --- references ---------------------------------------------------------------------------------


def prefill_reference(
    q, k, v, slope, initial_state=None, output_final_state=False, cu_seqlens=None, chunk_size=None,
    state_checkpoints=None,
):  # fmt: skip
    """chunk_size is a speed hint for blocked backends; the recurrence has no blocks. The states at
    `state_checkpoints` are the recurrence's own states after those tokens."""
    b, t, h, dk = q.shape
    dv = v.shape[-1]
    wanted = [] if state_checkpoints is None else state_checkpoints.tolist()
    kept = {}  # flattened token index -> state after it [H, K, V]
    if cu_seqlens is None:
        steps = tuple(sorted({i % t for i in wanted}))
        o, final, states = lightning_recurrent_kept(q, k, v, slope, initial_state, steps)
        for i in wanted:
            kept[i] = states[steps.index(i % t)][i // t]
    else:
        o, final = _packed_reference(q, k, v, slope, initial_state, cu_seqlens, wanted, kept)
    final = final if output_final_state else None
    if state_checkpoints is None:
        return o, final
    states = (
        torch.stack([kept[i] for i in wanted])
        if wanted
        else o.new_zeros(0, h, dk, dv, dtype=compute_dtype(q, k, v))
    )
    return o, final, states  # states [P, H, K, V]


def _packed_reference(q, k, v, slope, initial_state, cu_seqlens, wanted, kept):
    """One recurrence per packed sequence; fills `kept` with the states after the wanted tokens."""
    b, _, h, dk = q.shape
    dv = v.shape[-1]
    outs, finals = [], []
    for i, (start, end) in enumerate(sequence_bounds(b, q.shape[1], cu_seqlens)):
        h0 = None if initial_state is None else initial_state[i : i + 1]
        if end == start:  # an empty sequence outputs nothing and keeps its state
            acc = torch.promote_types(torch.float32, v.dtype)
            finals.append(torch.zeros(1, h, dk, dv, dtype=acc, device=q.device) if h0 is None else h0.to(acc))
            continue
        steps = tuple(sorted({j - start for j in wanted if start <= j < end}))
        o, final, states = lightning_recurrent_kept(
            q[:, start:end], k[:, start:end], v[:, start:end], slope, h0, steps
        )
        kept.update({start + step: state[0] for step, state in zip(steps, states, strict=True)})
        outs.append(o)
        finals.append(final)
    o = torch.cat(outs, dim=1) if outs else v.new_zeros(b, 0, h, dv)
    return o, torch.cat(finals)


def decode_reference(q, k, v, slope, state=None):
    """q, k [N, H, K], v [N, H, V], state [N, H, K, V] -> o [N, H, V], new state [N, H, K, V]."""
    o, new_state, _ = lightning_recurrent_kept(q[:, None], k[:, None], v[:, None], slope, state)
    return o[:, 0], new_state


# --- public ops ---------------------------------------------------------------------------------


def _check_prefill(q, k, v, slope, initial_state, cu_seqlens, state_checkpoints) -> None:
    if q.dim() != 4 or k.shape != q.shape or v.shape[:3] != q.shape[:3]:
        raise ValueError(
            f"lightning_prefill: q, k must be [B, T, H, K] and v [B, T, H, V]; got q {tuple(q.shape)}, "
            f"k {tuple(k.shape)}, v {tuple(v.shape)}"
        )
    b, _, h, dk = q.shape
    if slope.shape != (h,):
        raise ValueError(f"lightning_prefill: slope must be [H] = [{h}], got {tuple(slope.shape)}")
    n = b
    if cu_seqlens is not None:
        if b != 1 or cu_seqlens.dim() != 1 or cu_seqlens.dtype.is_floating_point:
            raise ValueError(
                "lightning_prefill: cu_seqlens needs B = 1 (a packed batch) and an integer [N + 1] tensor; "
                f"got B = {b}, cu_seqlens {tuple(cu_seqlens.shape)} {cu_seqlens.dtype}"
            )
        n = cu_seqlens.numel() - 1
    if initial_state is not None and initial_state.shape != (n, h, dk, v.shape[-1]):
        raise ValueError(
            f"lightning_prefill: initial_state must be [N, H, K, V] = {[n, h, dk, v.shape[-1]]}, "
            f"got {list(initial_state.shape)}"
        )
    if state_checkpoints is not None:
        check_state_checkpoints(state_checkpoints, b, q.shape[1], q.device)


def lightning_prefill(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    slope: torch.Tensor,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    cu_seqlens: torch.Tensor | None = None,
    chunk_size: int | None = None,
    *,
    state_checkpoints: torch.Tensor | None = None,
    backend: str | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None] | tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """-> o [B, T, H, V], final_state [N, H, K, V] fp32 (None unless output_final_state), and, only
    when `state_checkpoints` [P] is given, states [P, H, K, V] fp32: the state after each of those
    flattened token indices (b*T + t unpacked; the index along T of a pack), in the given order.

    `chunk_size` is a speed hint for blocked backends (the results do not depend on it).
    """
    _check_prefill(q, k, v, slope, initial_state, cu_seqlens, state_checkpoints)
    inputs = {"state_checkpoints": state_checkpoints} if state_checkpoints is not None else {}
    return dispatch.call(
        PREFILL,
        backend,
        q=q,
        k=k,
        v=v,
        slope=slope,
        initial_state=initial_state,
        output_final_state=output_final_state,
        cu_seqlens=cu_seqlens,
        chunk_size=chunk_size,
        **inputs,
    )


def lightning_decode(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    slope: torch.Tensor,
    state: torch.Tensor | None = None,
    *,
    backend: str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One token per sequence: q, k [N, H, K], v [N, H, V], state [N, H, K, V] -> o [N, H, V], new state."""
    if q.dim() != 3 or k.shape != q.shape or v.shape[:2] != q.shape[:2]:
        raise ValueError(
            f"lightning_decode: q, k must be [N, H, K] and v [N, H, V]; got {tuple(q.shape)}, "
            f"{tuple(k.shape)}, {tuple(v.shape)}"
        )
    if state is not None and state.shape != (*q.shape, v.shape[-1]):
        raise ValueError(f"lightning_decode: state must be [N, H, K, V], got {tuple(state.shape)}")
    return dispatch.call(DECODE, backend, q=q, k=k, v=v, slope=slope, state=state)


# --- definitions and workload inputs -------------------------------------------------------------


def make_prefill_inputs(workload: Workload, device, gen: torch.Generator) -> dict:
    ax, spec = workload.axes, workload.inputs
    dtype = torch_dtype(spec["q"]["dtype"])
    cu = spec.get("cu_seqlens", {}).get("value")
    b, t, h, dk, dv = ax["B"], ax["T"], ax["H"], ax["K"], ax["V"]
    n = b if cu is None else len(cu) - 1
    # q, k ~ N(0, 1/K): q.k is O(1) per key whatever K, so decayed sums stay O(1/slope).
    inputs = {
        "q": random_tensor((b, t, h, dk), dtype, gen, device, dk**-0.5),
        "k": random_tensor((b, t, h, dk), dtype, gen, device, dk**-0.5),
        "v": random_tensor((b, t, h, dv), dtype, gen, device),
        "slope": minimax_layer0_slopes(h).to(device=device, dtype=torch.float32),
        "initial_state": None,
        "output_final_state": bool(spec.get("output_final_state", {}).get("value", True)),
        "cu_seqlens": None if cu is None else torch.tensor(cu, dtype=torch.int64, device=device),
        "chunk_size": None,
    }
    if "initial_state" in spec:
        inputs["initial_state"] = random_tensor((n, h, dk, dv), torch.float32, gen, device, 0.3)
    if "state_checkpoints" in spec:
        inputs["state_checkpoints"] = torch.tensor(
            spec["state_checkpoints"]["value"], dtype=torch.int64, device=device
        )
    return inputs


def make_decode_inputs(workload: Workload, device, gen: torch.Generator) -> dict:
    ax = workload.axes
    dtype = torch_dtype(workload.inputs["q"]["dtype"])
    n, h, dk, dv = ax["N"], ax["H"], ax["K"], ax["V"]
    return {
        "q": random_tensor((n, h, dk), dtype, gen, device, dk**-0.5),
        "k": random_tensor((n, h, dk), dtype, gen, device, dk**-0.5),
        "v": random_tensor((n, h, dv), dtype, gen, device),
        "slope": minimax_layer0_slopes(h).to(device=device, dtype=torch.float32),
        "state": random_tensor((n, h, dk, dv), torch.float32, gen, device, 0.3),
    }


def prefill_workload(entry: dict, where: str) -> Workload:
    f = take(entry, where, {"heads": 8, "head_dim": 64, "batch": 1, "seq_len": 256, "pack": None,
                            "dtype": "float32", "initial_state": True, "checkpoints": None,
                            **HARNESS_DEFAULTS})  # fmt: skip
    h, d, pack = f["heads"], f["head_dim"], f["pack"]
    inputs = {name: dtype_input(f["dtype"]) for name in ("q", "k", "v")}
    inputs["output_final_state"] = {"type": "scalar", "value": True}
    if f["initial_state"]:
        inputs["initial_state"] = {"type": "random", "dtype": "float32"}
    if pack is None:
        b, t, n = f["batch"], f["seq_len"], f["batch"]
        label = f"B{b} T{t}"
    else:
        cu = [0, *itertools.accumulate(pack)]
        inputs["cu_seqlens"] = {"type": "scalar", "value": cu}
        b, t, n = 1, cu[-1], len(pack)
        label = f"pack {'+'.join(map(str, pack))}"
    label += f" H{h} D{d} {short_dtype(f['dtype'])}" + (" +h0" if f["initial_state"] else "")
    axes = {"B": b, "T": t, "H": h, "K": d, "V": d, "N": n}
    if f["checkpoints"] is not None:
        bounds = sequence_bounds(b, t, None if pack is None else torch.tensor(cu))
        points = checkpoint_indices(f["checkpoints"], bounds, f"{where}.checkpoints")
        inputs["state_checkpoints"] = {"type": "scalar", "value": points}
        axes["P"] = len(points)
        every = str(f["checkpoints"]).split()
        label += f" ckpt/{every[1]}" if every[0] == "every" else f" ckpt×{len(points)}"
    return Workload(axes=axes, inputs=inputs, label=label, source=entry.get("model", ""),
                    **harness_fields(f, where))  # fmt: skip


def checkpoint_indices(value, bounds: list[tuple[int, int]], where: str) -> list[int]:
    """A workload's `checkpoints` -> flattened token indices. `every N`: after every N-th token of
    each sequence (block boundaries, as prefix caching asks); a list: the indices themselves."""
    if isinstance(value, str) and value.startswith("every ") and value[6:].strip().isdigit():
        n = int(value[6:])
        if n > 0:
            return [i for start, end in bounds for i in range(start + n - 1, end, n)]
    if isinstance(value, list) and all(isinstance(i, int) for i in value):
        total = bounds[-1][1] if bounds else 0
        if all(0 <= i < total for i in value):
            return value
    raise ValueError(f"{where} = {value!r}: 'every N' (N > 0) or a list of token indices in [0, B*T)")


def decode_workload(entry: dict, where: str) -> Workload:
    f = take(entry, where, {"heads": 8, "head_dim": 64, "batch": 1, "dtype": "float32", **HARNESS_DEFAULTS})
    n, h, d = f["batch"], f["heads"], f["head_dim"]
    inputs = {name: dtype_input(f["dtype"]) for name in ("q", "k", "v")}
    inputs["state"] = {"type": "random", "dtype": "float32"}
    return Workload(axes={"N": n, "H": h, "K": d, "V": d}, inputs=inputs,
                    label=f"N{n} H{h} D{d} {short_dtype(f['dtype'])}", source=entry.get("model", ""),
                    **harness_fields(f, where))  # fmt: skip


register_definition(
    Definition(
        name=PREFILL,
        op_type="linear_attention",
        axes={
            "B": {"type": "var"},
            "T": {"type": "var"},
            "H": {"type": "var"},
            "K": {"type": "var"},
            "V": {"type": "var"},
            "N": {"type": "var"},
            "P": {"type": "var"},
        },
        inputs={
            "q": {"shape": ["B", "T", "H", "K"], "dtype": "any float"},
            "k": {"shape": ["B", "T", "H", "K"], "dtype": "any float"},
            "v": {"shape": ["B", "T", "H", "V"], "dtype": "any float"},
            "slope": {"shape": ["H"], "dtype": "float32"},
            "initial_state": {"shape": ["N", "H", "K", "V"], "dtype": "float32", "optional": True},
            "output_final_state": {"shape": None, "dtype": "bool"},
            "cu_seqlens": {"shape": ["N+1"], "dtype": "int64", "optional": True},
            "chunk_size": {"shape": None, "dtype": "int", "optional": True},
            "state_checkpoints": {"shape": ["P"], "dtype": "int64", "optional": True},
        },
        outputs={
            "o": {"shape": ["B", "T", "H", "V"], "dtype": "v.dtype"},
            "final_state": {"shape": ["N", "H", "K", "V"], "dtype": "float32"},
            "states": {"shape": ["P", "H", "K", "V"], "dtype": "float32", "optional": True},
        },
        reference=prefill_reference,
        description=(
            "MiniMax-01 lightning attention over a (packed) batch, from an optional state; with "
            "state_checkpoints also the states after those tokens. Gradients through those states: "
            "the reference and chained backends (autograd through the backend's own backward); "
            "torch_chunk's native checkpoint path is forward-only and chains when a call needs them."
        ),
        grad_inputs=("q", "k", "v", "initial_state"),
        make_inputs=make_prefill_inputs,
        make_workload=prefill_workload,
    )
)
register_definition(
    Definition(
        name=DECODE,
        op_type="linear_attention",
        axes={"N": {"type": "var"}, "H": {"type": "var"}, "K": {"type": "var"}, "V": {"type": "var"}},
        inputs={
            "q": {"shape": ["N", "H", "K"], "dtype": "any float"},
            "k": {"shape": ["N", "H", "K"], "dtype": "any float"},
            "v": {"shape": ["N", "H", "V"], "dtype": "any float"},
            "slope": {"shape": ["H"], "dtype": "float32"},
            "state": {"shape": ["N", "H", "K", "V"], "dtype": "float32", "optional": True},
        },
        outputs={
            "o": {"shape": ["N", "H", "V"], "dtype": "v.dtype"},
            "new_state": {"shape": ["N", "H", "K", "V"], "dtype": "float32"},
        },
        reference=decode_reference,
        description="One lightning-attention step for a batch of recurrent states.",
        grad_inputs=("q", "k", "v", "state"),
        make_inputs=make_decode_inputs,
        make_workload=decode_workload,
    )
)
_torch = {"language": "pytorch", "target_hardware": ["cpu", "cuda"], "backward": True}
register_solution(PREFILL, "torch", prefill_reference, description="token-by-token recurrence", **_torch)
register_solution(DECODE, "torch", decode_reference, description="one recurrence step", **_torch)
