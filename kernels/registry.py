"""Op definitions and the solutions (backends) registered against them.

A new op is one module that calls `register_definition` (with its torch reference registered as
the `torch` solution); a new backend is one module that calls `register_solution` per op it
implements, plus one line in BACKEND_MODULES. Modules load on first use, so importing
`attnlab.kernels` stays cheap and a backend whose library is missing still loads (it reports
itself unavailable instead of failing the import).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from .definition import Definition

OP_MODULES = ["lightning_ops", "attention_ops", "mla_ops", "paged_ops", "state_ops"]
BACKEND_MODULES = [
    "lightning_chunk",
    "attention_chunk",
    "sdpa_backend",
    "fla_backend",
    "triton_lightning",
    "triton_attention",
    "c_backend",
    "c_state",
    "triton_state",
]
FLOAT_DTYPES = (torch.float32, torch.bfloat16, torch.float16, torch.float64)

DEFINITIONS: dict[str, Definition] = {}
SOLUTIONS: dict[str, dict[str, Solution]] = {}  # op -> backend name -> solution
_loaded = False


def _always(*_args) -> None:
    return None


@dataclass
class Solution:
    """One backend of one op. `spec` uses FlashInfer-Bench's keys."""

    name: str  # backend: torch, torch_chunk, triton, fla, fla_naive, sdpa, c
    definition: str  # op name
    fn: Callable
    spec: dict  # {"language", "target_hardware", "entry_point", "dependencies"}
    author: str = "attnlab"
    description: str = ""
    backward: bool = False  # gradients flow through it (autograd or a hand-written backward)
    dtypes: tuple[torch.dtype, ...] = FLOAT_DTYPES
    # A peer is a comparison point for benchmarks (e.g. fla's naive code): dispatch only runs it
    # when asked by name.
    peer: bool = False
    available: Callable[[torch.device], str | None] = field(default=_always)  # why not on this device
    supports: Callable[[dict], str | None] = field(default=_always)  # why not this call

    def unusable_reason(self, device: torch.device, dtype: torch.dtype, needs_grad: bool) -> str | None:
        """Why this solution cannot run a call on `device` with `dtype` (None: it can)."""
        reason = self.available(device)
        if reason:
            return reason
        if dtype not in self.dtypes:
            allowed = ", ".join(str(d).removeprefix("torch.") for d in self.dtypes)
            return f"dtype {str(dtype).removeprefix('torch.')} is not supported (supported: {allowed})"
        if needs_grad and not self.backward:
            return "it is forward-only and this call needs gradients"
        return None

    def to_json(self) -> dict:
        return {
            "name": self.name,
            "definition": self.definition,
            "author": self.author,
            "spec": self.spec,
            "description": self.description,
        }


def register_definition(defn: Definition) -> Definition:
    assert defn.name not in DEFINITIONS, f"definition {defn.name} registered twice"
    DEFINITIONS[defn.name] = defn
    SOLUTIONS.setdefault(defn.name, {})
    return defn


def register_solution(op: str, name: str, fn: Callable, *, language: str, target_hardware: list[str], **kw):
    """Register `fn` as backend `name` of `op`; keyword arguments fill the Solution fields."""
    deps = kw.pop("dependencies", ["torch"])
    spec = {
        "language": language,
        "target_hardware": target_hardware,
        "entry_point": f"{fn.__module__}:{fn.__qualname__}",
        "dependencies": deps,
    }
    solutions = SOLUTIONS.setdefault(op, {})
    assert name not in solutions, f"backend {name} registered twice for {op}"
    solutions[name] = Solution(name=name, definition=op, fn=fn, spec=spec, **kw)
    return fn


def load() -> None:
    """Import every op and backend module once (each registers itself)."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    for name in OP_MODULES + BACKEND_MODULES:
        importlib.import_module(f"{__package__}.{name}")


def definition(op: str) -> Definition:
    load()
    if op not in DEFINITIONS:
        raise ValueError(f"op {op!r} is unknown; allowed: {', '.join(sorted(DEFINITIONS))}")
    return DEFINITIONS[op]


def solutions(op: str) -> dict[str, Solution]:
    definition(op)
    return SOLUTIONS[op]


def op_names() -> list[str]:
    load()
    return list(DEFINITIONS)


def backend_names() -> list[str]:
    load()
    return sorted({name for sols in SOLUTIONS.values() for name in sols})
