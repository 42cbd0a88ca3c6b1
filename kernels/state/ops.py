"""Ops `state_store` and `state_load`: a recurrent (lightning) state in a low-precision storage
dtype, and back to fp32 (docs/state_precision.md).

The update math stays fp32; only what sits in memory between steps changes:

    values, scales = state_store(state, dtype, rounding, group, seed)   # fp32 [N, H, K, V] -> storage
    state          = state_load(values, scales, group)                 # storage -> fp32 [N, H, K, V]

Storage dtypes: "fp32" (a copy), "bf16", "fp16", and "int8" with one fp32 scale per group of
`group = (gk, gv)` entries of each head's [K, V] matrix: (1, V) is one scale per (head, key row),
(32, 32) one per (head, 32x32 block). Scales are [N, H, K/gk, V/gv]; `amax / 127`, symmetric.

Rounding puts x on its grid of step `ulp` (int8: the group's scale; bf16/fp16: the spacing of the
target type at x's exponent, 2^(e - mantissa bits)):

    nearest:     the target type's own round-to-nearest-even (bf16/fp16); floor(x/ulp + 1/2) (int8)
    stochastic:  floor(x/ulp + u) * ulp with u ~ U[0, 1): unbiased, E[stored] = x

u comes from a counter-based hash of (seed, element index), so every backend draws the same u for
the same element and the torch, C and Triton paths agree bit for bit; the engine passes a new seed
every step. Below 2^-119 bf16's grid is 2^-126 (its smallest normal step; fp16 grids bottom out at
its subnormal step 2^-24). Values beyond a 16-bit type's range saturate at its largest finite
value instead of becoming inf.
"""

from __future__ import annotations

import torch

from .. import dispatch
from ..definition import Definition, Workload
from ..registry import register_definition, register_solution
from ..tensors import random_tensor
from ..workloads import HARNESS_DEFAULTS, harness_fields, take

STORE, LOAD = "state_store", "state_load"
STORAGE_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16, "int8": torch.int8}
ROUNDINGS = ("nearest", "stochastic")
# Mantissa bits and the lowest exponent of the grid (see the module docstring) per 16-bit type.
FLOAT_GRID = {"bf16": (7, -119), "fp16": (10, -14)}
INT8_MAX = 127.0


def scale_shape(shape, group: tuple[int, int] | None) -> tuple[int, ...] | None:
    """[N, H, K, V] state -> the shape of its int8 scales [N, H, K/gk, V/gv] (None: no scales)."""
    if group is None:
        return None
    n, h, k, v = shape
    gk, gv = group
    return (n, h, k // gk, v // gv)


SCALE_GROUPS = ("row", "block")


def state_group(k: int, v: int, scales: str) -> tuple[int, int]:
    """int8 scale groups of a [K, V] state: "row" (1, V), one per key row; "block" 32x32 tiles
    (a dim that 32 does not divide is one tile)."""
    if scales not in SCALE_GROUPS:
        raise ValueError(f"state scales = {scales!r}; allowed: {', '.join(SCALE_GROUPS)}")
    if scales == "row":
        return (1, v)
    return (32 if k % 32 == 0 else k, 32 if v % 32 == 0 else v)


def stored_state_bytes(h: int, k: int, v: int, dtype: str = "fp32", scales: str = "row") -> int:
    """Bytes of one sequence's [H, K, V] state stored as `dtype` (int8: values plus fp32 scales)."""
    if dtype not in STORAGE_DTYPES:
        raise ValueError(f"state dtype = {dtype!r}; allowed: {', '.join(STORAGE_DTYPES)}")
    size = h * k * v * STORAGE_DTYPES[dtype].itemsize
    if dtype == "int8":
        gk, gv = state_group(k, v, scales)
        size += h * (k // gk) * (v // gv) * 4
    return size


def check_group(group, k: int, v: int, where: str = "group") -> tuple[int, int]:
    if (
        not isinstance(group, (tuple, list))
        or len(group) != 2
        or not all(isinstance(g, int) and g > 0 for g in group)
        or k % group[0]
        or v % group[1]
    ):
        raise ValueError(f"{where} = {group!r}: must be (gk, gv) dividing the state's [K, V] = [{k}, {v}]")
    return int(group[0]), int(group[1])


# --- the shared pieces: noise and grids ----------------------------------------------------------

_M32 = 0xFFFFFFFF


def hash_uniform(seed: int, numel: int, device) -> torch.Tensor:
    """u [numel] in [0, 1) (fp32, 24 bits) from a hash of (seed, i): the `lowbias32` integer hash
    (C. Wellons) of i * 0x9E3779B9 + seed, mod 2^32. Written with int64 arithmetic masked to 32
    bits, so it equals the uint32 code of the C and Triton backends."""
    x = torch.arange(numel, dtype=torch.int64, device=device)
    x = (x * 0x9E3779B9 + (seed & _M32)) & _M32
    x = x ^ (x >> 16)
    x = (x * 0x7FEB352D) & _M32
    x = x ^ (x >> 15)
    x = (x * 0x846CA68B) & _M32
    x = x ^ (x >> 16)
    return (x >> 8).to(torch.float32) * 2.0**-24


def float_ulp(x: torch.Tensor, dtype: str) -> torch.Tensor:
    """The grid step of bf16/fp16 at each fp32 x: 2^(max(e, e_min) - mantissa bits), e = x's exponent."""
    mantissa, e_min = FLOAT_GRID[dtype]
    e = ((x.view(torch.int32) >> 23) & 0xFF) - 127  # fp32 exponent field (0 and subnormals: -127)
    step = torch.clamp(e, min=e_min) - mantissa + 127  # biased exponent of the step; >= 1 (a normal fp32)
    return (step << 23).view(torch.float32)


# --- references ---------------------------------------------------------------------------------


def store_reference(state, dtype, rounding="nearest", group=None, seed=0):
    """fp32 state [N, H, K, V] -> (values [N, H, K, V] in the storage dtype, scales or None)."""
    state = state.float()
    target = STORAGE_DTYPES[dtype]
    if dtype == "fp32":
        return state.clone(), None
    u = None
    if rounding == "stochastic":
        u = hash_uniform(seed, state.numel(), state.device).view(state.shape)
    if dtype == "int8":
        n, h, k, v = state.shape
        gk, gv = group
        tiles = state.view(n, h, k // gk, gk, v // gv, gv)
        amax = tiles.abs().amax(dim=(3, 5))  # [N, H, K/gk, V/gv]
        scales = amax / INT8_MAX
        safe = torch.where(scales > 0, scales, torch.ones_like(scales))
        y = (tiles / safe[:, :, :, None, :, None]).reshape(state.shape)
        y = torch.floor(y + (0.5 if u is None else u))
        return y.clamp(-INT8_MAX, INT8_MAX).to(torch.int8), scales
    limit = torch.finfo(target).max
    state = state.clamp(-limit, limit)  # saturate rather than overflow to inf
    if u is None:
        return state.to(target), None
    ulp = float_ulp(state, dtype)
    y = torch.floor(state / ulp + u) * ulp  # on target's grid: exact in fp32, exact in target
    return y.clamp(-limit, limit).to(target), None


def load_reference(values, scales=None, group=None):
    """Stored values (+ int8 scales) -> fp32 state [N, H, K, V]."""
    if scales is None:
        return values.float()
    n, h, k, v = values.shape
    gk, gv = group
    tiles = values.float().view(n, h, k // gk, gk, v // gv, gv)
    return (tiles * scales[:, :, :, None, :, None]).reshape(n, h, k, v)


# --- public ops ---------------------------------------------------------------------------------


def state_store(
    state: torch.Tensor,
    dtype: str,
    rounding: str = "nearest",
    group: tuple[int, int] | None = None,
    seed: int = 0,
    *,
    backend: str | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """fp32 state [N, H, K, V] -> (values in `dtype`, int8 scales [N, H, K/gk, V/gv] or None)."""
    if state.dim() != 4:
        raise ValueError(f"state_store: state must be [N, H, K, V], got {tuple(state.shape)}")
    if dtype not in STORAGE_DTYPES:
        raise ValueError(f"state_store: dtype = {dtype!r}; allowed: {', '.join(STORAGE_DTYPES)}")
    if rounding not in ROUNDINGS:
        raise ValueError(f"state_store: rounding = {rounding!r}; allowed: {', '.join(ROUNDINGS)}")
    if dtype == "int8":
        group = check_group(group, state.shape[2], state.shape[3], "state_store: group")
    elif group is not None:
        raise ValueError(f"state_store: group is for int8 only (dtype = {dtype!r})")
    return dispatch.call(STORE, backend, state=state, dtype=dtype, rounding=rounding, group=group, seed=seed)


def state_load(
    values: torch.Tensor,
    scales: torch.Tensor | None = None,
    group: tuple[int, int] | None = None,
    *,
    backend: str | None = None,
) -> torch.Tensor:
    """(values, scales) from `state_store` -> fp32 state [N, H, K, V]."""
    if values.dim() != 4:
        raise ValueError(f"state_load: values must be [N, H, K, V], got {tuple(values.shape)}")
    if (scales is None) != (values.dtype != torch.int8):
        raise ValueError("state_load: int8 values need their scales, other dtypes take none")
    if scales is not None:
        group = check_group(group, values.shape[2], values.shape[3], "state_load: group")
        if tuple(scales.shape) != scale_shape(values.shape, group):
            raise ValueError(
                f"state_load: scales must be {list(scale_shape(values.shape, group))}, got {list(scales.shape)}"
            )
        return dispatch.call(LOAD, backend, values=values, scales=scales, group=group)
    if values.dtype == torch.float32:
        return values  # nothing to convert: the stored tensor is the state
    return dispatch.call(LOAD, backend, values=values, scales=None, group=None)


# --- definitions and workload inputs -------------------------------------------------------------


def _group(f: dict, k: int, v: int):
    if f["dtype"] != "int8":
        return None
    return (1, v) if f["scales"] == "row" else (min(k, 32), min(v, 32))


def make_store_inputs(workload: Workload, device, gen: torch.Generator) -> dict:
    ax, spec = workload.axes, workload.inputs
    n, h, k, v = ax["N"], ax["H"], ax["K"], ax["V"]
    # A decayed running sum: entries of mixed magnitude (a heavy-tailed spread across rows).
    rows = torch.exp(torch.randn(n, h, k, 1, generator=gen) * 1.5)
    state = (random_tensor((n, h, k, v), torch.float32, gen, "cpu") * rows).to(device)
    return {
        "state": state,
        "dtype": spec["dtype"]["value"],
        "rounding": spec["rounding"]["value"],
        "group": spec["group"]["value"],
        "seed": 1234,
    }


def make_load_inputs(workload: Workload, device, gen: torch.Generator) -> dict:
    stored = make_store_inputs(workload, device, gen)
    values, scales = store_reference(**stored)
    return {"values": values, "scales": scales, "group": stored["group"]}


def _workload(entry: dict, where: str) -> Workload:
    f = take(entry, where, {"heads": 8, "head_dim": 64, "batch": 4, "dtype": "int8", "scales": "row",
                            "rounding": "nearest", **HARNESS_DEFAULTS})  # fmt: skip
    n, h, d = f["batch"], f["heads"], f["head_dim"]
    if f["dtype"] not in STORAGE_DTYPES or f["dtype"] == "fp32":
        raise ValueError(f"{where}.dtype = {f['dtype']!r}; allowed: bf16, fp16, int8")
    if f["scales"] not in ("row", "block"):
        raise ValueError(f"{where}.scales = {f['scales']!r}; allowed: row, block")
    if f["rounding"] not in ROUNDINGS:
        raise ValueError(f"{where}.rounding = {f['rounding']!r}; allowed: {', '.join(ROUNDINGS)}")
    inputs = {
        "state": {"type": "random", "dtype": "float32"},
        "dtype": {"type": "scalar", "value": f["dtype"]},
        "rounding": {"type": "scalar", "value": f["rounding"]},
        "group": {"type": "scalar", "value": _group(f, d, d)},
    }
    label = f"N{n} H{h} D{d} {f['dtype']}" + (f" {f['scales']}" if f["dtype"] == "int8" else "")
    label += " stoch" if f["rounding"] == "stochastic" else ""
    return Workload(axes={"N": n, "H": h, "K": d, "V": d}, inputs=inputs, label=label,
                    source=entry.get("model", ""), **harness_fields(f, where))  # fmt: skip


_AXES = {a: {"type": "var"} for a in ("N", "H", "K", "V")}
register_definition(
    Definition(
        name=STORE,
        op_type="state_codec",
        axes=_AXES,
        inputs={
            "state": {"shape": ["N", "H", "K", "V"], "dtype": "float32"},
            "dtype": {"shape": None, "dtype": "str"},
            "rounding": {"shape": None, "dtype": "str"},
            "group": {"shape": None, "dtype": "(int, int)", "optional": True},
            "seed": {"shape": None, "dtype": "int"},
        },
        outputs={
            "values": {"shape": ["N", "H", "K", "V"], "dtype": "storage"},
            "scales": {"shape": ["N", "H", "K/gk", "V/gv"], "dtype": "float32", "optional": True},
        },
        reference=store_reference,
        description="Round a fp32 recurrent state into its storage dtype (bf16, fp16, int8 + scales).",
        make_inputs=make_store_inputs,
        make_workload=_workload,
    )
)
register_definition(
    Definition(
        name=LOAD,
        op_type="state_codec",
        axes=_AXES,
        inputs={
            "values": {"shape": ["N", "H", "K", "V"], "dtype": "bf16 | fp16 | int8"},
            "scales": {"shape": ["N", "H", "K/gk", "V/gv"], "dtype": "float32", "optional": True},
            "group": {"shape": None, "dtype": "(int, int)", "optional": True},
        },
        outputs={"state": {"shape": ["N", "H", "K", "V"], "dtype": "float32"}},
        reference=load_reference,
        description="A stored recurrent state back to fp32.",
        make_inputs=make_load_inputs,
        make_workload=_workload,
    )
)
_torch = {"language": "pytorch", "target_hardware": ["cpu", "cuda"]}
_ALL = (torch.float32, torch.bfloat16, torch.float16, torch.int8)
register_solution(STORE, "torch", store_reference, description="plain torch", **_torch)
register_solution(LOAD, "torch", load_reference, description="plain torch", dtypes=_ALL, **_torch)
