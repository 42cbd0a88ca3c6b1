"""Pick the backend that runs an op call (docs/architecture.md "Kernel choice").

Order of choice:
1. `backend="name"` on the call: that backend, or a clear error saying why it cannot run it here.
2. A pin in the process's kernel choice (`kernels: {lightning_prefill: torch_chunk}` in a run
   config, `--kernels lightning_prefill=torch_chunk` on a command; `use_kernels`): that backend,
   or a clear error naming the pin.
3. With `default: ranked` in the choice: the ranking `attnlab kernels check` (or `attnlab bench
   kernels`) stored for this device — the backends that passed the correctness check on every
   workload, fastest first (one ranking for forward-only calls, one for calls that need
   gradients). The first that can take the call runs.
4. Otherwise (the default, `default: builtin`): the op's DEFAULT_ORDER for the device class (the
   fastest backend known to be correct there, e.g. SDPA for full-span softmax attention),
   then `torch_chunk`, else the `torch` reference. The built-in order depends only on the call
   (device type, dtype, gradients, window, `supports`), never on what was benchmarked on this
   machine before, so two runs of one config pick the same kernels; the map used is written into
   each run's outputs (`backends_used`).

Rankings live in one JSON file (`ATTNLAB_KERNEL_CACHE`, default ~/.cache/attnlab/kernels.json),
keyed by device and library versions: a new driver, torch, triton or fla version starts clean.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch

from . import registry
from .environment import device_key
from .registry import Solution

FALLBACK = ("torch_chunk", "torch")


def sdpa_full_span(call: dict, needs_grad: bool) -> bool:
    """Every query may see every earlier key (no window, or one that covers all keys): one fused
    SDPA call. A narrower window costs SDPA a masked square per query block."""
    window = call.get("window")
    return window is None or window >= call["k"].shape[1]


def sdpa_fastest_on_cpu(call: dict, needs_grad: bool) -> bool:
    """SDPA wins on the CPU for a full span, except bf16/fp16 with gradients (its half-precision
    backward is slow there)."""
    half = call["q"].dtype in (torch.bfloat16, torch.float16)
    return sdpa_full_span(call, needs_grad) and not (half and needs_grad)


# The built-in choice: (op, device type) -> the backends tried before FALLBACK, fastest known-correct
# first. An entry is a backend name, or (name, when): the backend is preferred only for calls where
# `when(call, needs_grad)` holds (it may be *able* to take more; `supports` says that, `when` says
# where it is the fastest). A candidate that cannot take a call (a backward call to a forward-only
# kernel, bf16 to an fp32 kernel, a GPU kernel on the CPU) is skipped by `unusable_reason` /
# `supports` as always, so one order serves forward-only calls and calls that need gradients.
DEFAULT_ORDER: dict[tuple[str, str], tuple[str | tuple[str, Callable[[dict, bool], bool]], ...]] = {
    # CPU, measured here (2 threads, median of 5; kernels/BENCH_RESULTS.md "Built-in kernel order"),
    # torch_chunk time / SDPA time, forward | forward+backward:
    #   train-step shape B8 T512 H4 D64 fp32, full causal  3.13x | 6.03x  -> sdpa
    #   B1 T2048 H16/2 D64 fp32, full causal               3.08x | 2.83x  -> sdpa
    #   the same with sinks                                1.34x | 1.83x  -> sdpa
    #   the same, bf16                                     6.53x | 0.58x  -> sdpa forward only
    #   window 128 (no sinks | sinks)            0.30x | 0.91x, 0.42x | 0.53x -> torch_chunk
    ("swa_prefill", "cpu"): (("sdpa", sdpa_fastest_on_cpu),),
    # The paged ops and the state codecs keep the serving engine's order (docs/serving.md "Kernels",
    # docs/state_precision.md): the C kernels where they take the call (fp32, forward), then SDPA.
    ("paged_attn_decode", "cpu"): ("c", "sdpa"),
    ("paged_attn_prefill", "cpu"): ("sdpa",),
    ("state_store", "cpu"): ("c",),
    ("state_load", "cpu"): ("c",),
    # lightning_* on CPU: torch_chunk (FALLBACK) is the only fast backend here (fla and triton need
    # a GPU). mla_decode on CPU: torch_chunk (FALLBACK); SDPA is 31x slower at B4 S4096 H16 R512.
    #
    # CUDA: unmeasured here (no GPU on the machine that wrote this). Chosen from what the test suite
    # checks: SDPA (flash / memory-efficient attention) for softmax attention over the full span;
    # the Triton kernels, which pass their tests under TRITON_INTERPRET=1 (tests/test_kernels_triton.py),
    # for lightning, windowed SWA (forward only), paged decode and the state codecs. fla's kernels
    # are not checked without a GPU, so they run only when pinned or ranked.
    ("swa_prefill", "cuda"): (("sdpa", sdpa_full_span), "triton"),
    ("paged_attn_decode", "cuda"): ("triton", "sdpa"),
    ("paged_attn_prefill", "cuda"): ("sdpa",),
    ("lightning_prefill", "cuda"): ("triton",),
    ("lightning_decode", "cuda"): ("triton",),
    ("state_store", "cuda"): ("triton",),
    ("state_load", "cuda"): ("triton",),
}
MODES = ("fwd", "fwd+bwd")


def cache_path() -> Path:
    return Path(os.environ.get("ATTNLAB_KERNEL_CACHE", Path.home() / ".cache" / "attnlab" / "kernels.json"))


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


@dataclass(frozen=True)
class KernelChoice:
    """How unforced calls pick a backend: pinned ops, and the rule for the rest."""

    pins: dict[str, str] = field(default_factory=dict)  # op -> backend
    ranked: bool = False  # unpinned ops follow this machine's stored ranking (else the built-in order)

    def to_json(self) -> dict:
        return {"default": "ranked" if self.ranked else "builtin", **self.pins}


_choice = KernelChoice()
_used: dict[str, dict[str, None]] = {}  # op -> backends that ran it, in first-use order


def parse_kernel_choice(value: Mapping | str | None, where: str = "kernels") -> KernelChoice:
    """A kernel choice from a config mapping or a CLI string, every name checked.

    `{default: builtin|ranked, <op>: <backend>, ...}`, or `"default=ranked,lightning_prefill=torch_chunk"`.
    """
    if value is None:
        return KernelChoice()
    if isinstance(value, str):
        pairs = {}
        for item in filter(None, (part.strip() for part in value.split(","))):
            key, sep, name = item.partition("=")
            if not sep or not key.strip() or not name.strip():
                raise ValueError(f"{where}: {item!r} is not OP=BACKEND (or default=builtin|ranked)")
            pairs[key.strip()] = name.strip()
        value = pairs
    if not isinstance(value, Mapping):
        raise ValueError(f"{where} must be a mapping of op -> backend, got {type(value).__name__}")
    pins, ranked = {}, False
    for op, name in value.items():
        if op == "default":
            if name not in ("builtin", "ranked"):
                raise ValueError(f"{where}.default = {name!r}; allowed: builtin, ranked")
            ranked = name == "ranked"
            continue
        if op not in registry.op_names():
            raise ValueError(f"{where}.{op}: not an op; allowed: default, {', '.join(registry.op_names())}")
        backends = registry.solutions(op)
        if not isinstance(name, str) or name not in backends:
            raise ValueError(
                f"{where}.{op} = {name!r} is not a backend of {op}; allowed: {', '.join(backends)}"
            )
        pins[op] = name
    return KernelChoice(pins, ranked)


def use_kernels(choice: KernelChoice) -> KernelChoice:
    """Set the process's kernel choice; returns the previous one (to restore it)."""
    global _choice
    previous, _choice = _choice, choice
    return previous


@contextlib.contextmanager
def kernel_choice(choice: KernelChoice):
    previous = use_kernels(choice)
    try:
        yield choice
    finally:
        use_kernels(previous)


def current_choice() -> KernelChoice:
    return _choice


def backends_used(reset: bool = False) -> dict[str, str]:
    """op -> the backend(s) that ran it in this process since the last reset ("sdpa, torch" when a
    call of another kind, e.g. one needing gradients, took a different backend)."""
    used = {op: ", ".join(names) for op, names in _used.items()}
    if reset:
        _used.clear()
    return used


def kernel_record(reset: bool = False) -> dict:
    """What a run's outputs record about its kernels: the choice in force and the backends that ran."""
    return {"choice": _choice.to_json(), "used": backends_used(reset)}


def describe_kernels(record: dict | None) -> str:
    """One line for a markdown report: "kernels (builtin choice): swa_prefill=sdpa, ..."."""
    if not record:
        return "kernels: not recorded"
    choice = record["choice"]
    pins = [f"{op}={name} (pinned)" for op, name in choice.items() if op != "default"]
    used = [f"{op}={name}" for op, name in record["used"].items() if op not in choice]
    return f"kernels ({choice['default']} choice): " + (", ".join(pins + used) or "no kernel op ran")


def kernel_choice_arg(text: str) -> KernelChoice:
    """argparse type of `--kernels`: "default=ranked,lightning_prefill=torch_chunk"."""
    try:
        return parse_kernel_choice(text, "--kernels")
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


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
        return _record(sol)
    pinned = _choice.pins.get(op)
    if pinned is not None:
        sol = sols[pinned]
        reason = sol.unusable_reason(device, dtype, needs_grad) or sol.supports(inputs)
        if reason:
            raise RuntimeError(
                f"kernels.{op} = {pinned!r} cannot run this {op} call on {device.type}: {reason}"
            )
        return _record(sol)
    mode = "fwd+bwd" if needs_grad else "fwd"
    ranking = stored_ranking(device.type, op, mode) if _choice.ranked else ()
    for name in (*(ranking or builtin_order(op, device.type, inputs, needs_grad)), *FALLBACK):
        sol = sols.get(name)
        if sol is None or sol.peer:
            continue
        if sol.unusable_reason(device, dtype, needs_grad) is None and sol.supports(inputs) is None:
            return _record(sol)
    raise AssertionError(f"{op}: even the torch reference cannot run this call")  # torch takes every call


def builtin_order(op: str, device_type: str, call: dict, needs_grad: bool) -> tuple[str, ...]:
    """The DEFAULT_ORDER candidates of `op` on `device_type` that are preferred for `call`."""
    names = []
    for entry in DEFAULT_ORDER.get((op, device_type), ()):
        name, when = (entry, None) if isinstance(entry, str) else entry
        if when is None or when(call, needs_grad):
            names.append(name)
    return tuple(names)


def _record(sol: Solution) -> Solution:
    _used.setdefault(sol.definition, {})[sol.name] = None
    return sol


def call(op: str, backend: str | None = None, **inputs):
    """Run `op` on `inputs` with the chosen backend."""
    return select(op, inputs, backend).fn(**inputs)
