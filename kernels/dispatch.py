"""Pick the backend that runs an op call (DESIGN.md "kernels").

Order of choice:
1. `backend="name"`: that backend, or a clear error saying why it cannot run this call here.
2. The ranking `attnlab kernels check` (or `attnlab bench kernels`) stored for this device: the
   backends that passed the correctness check on every workload, fastest first (one ranking for forward-only calls, one for calls that need
   gradients). The first that can take the call runs.
3. No ranking (nothing checked on this device yet): the op's DEFAULT_ORDER if it has one, then
   `torch_chunk`, else the `torch` reference. DEFAULT_ORDER holds the paged ops: the `c` kernel
   (CPU, fp32, forward; tested with the package), then torch's own SDPA, both measured faster than
   torch_chunk on CPU; and the state store/load ops' `c` kernels (bit-for-bit the reference, 2-30x
   faster on CPU). Each candidate must still take the call (device, dtype, gradients,
   `supports`), so a GPU, bf16 or backward paged decode skips `c`. Other kernels never run unchecked
   and unasked, so a fresh GPU machine starts on SDPA for the paged ops, `torch_chunk` for the rest.

Rankings live in one JSON file (`ATTNLAB_KERNEL_CACHE`, default ~/.cache/attnlab/kernels.json),
keyed by device and library versions: a new driver, torch, triton or fla version starts clean.
"""

from __future__ import annotations

import functools
import json
import os
import platform
from importlib import metadata
from pathlib import Path

import torch

from . import registry
from .registry import Solution

FALLBACK = ("torch_chunk", "torch")
# Tried before FALLBACK when this device has no ranking for the op.
DEFAULT_ORDER = {
    "paged_attn_decode": ("c", "sdpa"),
    "paged_attn_prefill": ("sdpa",),
    "state_store": ("c",),
    "state_load": ("c",),
}
MODES = ("fwd", "fwd+bwd")


def cache_path() -> Path:
    return Path(os.environ.get("ATTNLAB_KERNEL_CACHE", Path.home() / ".cache" / "attnlab" / "kernels.json"))


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "none"


@functools.cache
def device_name(device_type: str) -> str:
    if device_type == "cuda":
        major, minor = torch.cuda.get_device_capability()
        return f"cuda:{torch.cuda.get_device_name()} sm{major}{minor}"
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{device_type}:{model}"


@functools.cache
def device_key(device_type: str) -> str:
    """Device plus every library version that changes which kernel is correct or fastest."""
    versions = " ".join(
        f"{d}={_version(d)}" for d in ("torch", "triton", "flash-linear-attention", "attnlab")
    )
    return f"{device_name(device_type)} | {versions}"


def read_cache() -> dict:
    path = cache_path()
    if not path.exists():
        return {}
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}  # a corrupt cache only costs the stored ranking; the fallback still runs


def write_ranking(device_type: str, op: str, mode: str, ranking: list[str], details: dict) -> None:
    """Store the passed backends of `op`, fastest first, for this device (read-modify-write)."""
    assert mode in MODES
    data = read_cache()
    entry = data.setdefault(device_key(device_type), {}).setdefault(op, {})
    entry[mode] = {"ranking": ranking, **details}
    path = cache_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2))
    tmp.replace(path)  # atomic: a concurrent reader sees the old file or the new one
    forget()


@functools.cache
def stored_ranking(device_type: str, op: str, mode: str) -> tuple[str, ...]:
    entry = read_cache().get(device_key(device_type), {}).get(op, {}).get(mode, {})
    return tuple(entry.get("ranking", ()))


def forget() -> None:
    """Drop the in-memory copy of the rankings (after the cache file or its path changed)."""
    stored_ranking.cache_clear()


def _call_facts(op: str, inputs: dict) -> tuple[torch.device, torch.dtype, bool]:
    """Device, compute dtype (of the first floating tensor) and whether gradients are needed."""
    tensors = [t for t in inputs.values() if isinstance(t, torch.Tensor)]
    first = next(t for t in tensors if t.is_floating_point())
    grad_names = registry.definition(op).grad_inputs
    needs_grad = torch.is_grad_enabled() and any(
        isinstance(inputs.get(n), torch.Tensor) and inputs[n].requires_grad for n in grad_names
    )
    return first.device, first.dtype, needs_grad


def select(op: str, inputs: dict, backend: str | None = None) -> Solution:
    sols = registry.solutions(op)
    device, dtype, needs_grad = _call_facts(op, inputs)
    if backend is not None:
        if backend not in sols:
            raise ValueError(f"backend={backend!r} is not registered for op {op}; allowed: {', '.join(sols)}")
        sol = sols[backend]
        reason = sol.unusable_reason(device, dtype, needs_grad) or sol.supports(inputs)
        if reason:
            raise RuntimeError(f"backend={backend!r} cannot run {op} on {device.type} here: {reason}")
        return sol
    mode = "fwd+bwd" if needs_grad else "fwd"
    ranking = stored_ranking(device.type, op, mode) or DEFAULT_ORDER.get(op, ())
    for name in (*ranking, *FALLBACK):
        sol = sols.get(name)
        if sol is None or sol.peer:
            continue
        if sol.unusable_reason(device, dtype, needs_grad) is None and sol.supports(inputs) is None:
            return sol
    raise AssertionError(f"{op}: even the torch reference cannot run this call")  # torch takes every call


def call(op: str, backend: str | None = None, **inputs):
    """Run `op` on `inputs` with the chosen backend."""
    return select(op, inputs, backend).fn(**inputs)
