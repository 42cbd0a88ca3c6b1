"""Op definitions and the solutions (backends) registered against them, through the project's one
registration idiom (`attnlab.common.Registry`).

Each op family is one sub-package, `kernels/<family>/`: `ops.py` registers the family's
definitions (with the torch reference as the `torch` solution), and each `<backend>.py` registers
the solutions of backend `<backend>` (the file name is the backend name). A new op = a definition
in its family's ops.py; a new backend = one module plus one word in FAMILIES. Modules load on
first lookup, so importing `attnlab.kernels` stays cheap and a backend whose library is missing
still loads (it reports itself unavailable instead of failing the import).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from ..common import Registry
from .definition import Definition

# family -> its backend modules, in the order their solutions are listed (after the `torch` reference).
FAMILIES = {
    "lightning": ("torch_chunk", "fla", "triton"),
    "attention": ("torch_chunk", "sdpa", "triton"),
    "paged": ("torch_chunk", "sdpa", "triton", "c"),
    "mla": ("torch_chunk", "sdpa"),
    "state": ("c", "triton"),
}
FLOAT_DTYPES = (torch.float32, torch.bfloat16, torch.float16, torch.float64)
_OPS_MODULES = [f"{__package__}.{family}.ops" for family in FAMILIES]

DEFINITIONS: Registry[Definition] = Registry("kernel op", modules=_OPS_MODULES)
# (op, backend) -> Solution. The ops modules come first: they register the `torch` references.
SOLUTIONS: Registry[Solution] = Registry(
    "kernel solution",
    modules=_OPS_MODULES + [f"{__package__}.{f}.{b}" for f, backends in FAMILIES.items() for b in backends],
)


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
    return DEFINITIONS.register(defn.name, defn)


def register_solution(op: str, name: str, fn: Callable, *, language: str, target_hardware: list[str], **kw):
    """Register `fn` as backend `name` of `op`; keyword arguments fill the Solution fields."""
    deps = kw.pop("dependencies", ["torch"])
    spec = {
        "language": language,
        "target_hardware": target_hardware,
        "entry_point": f"{fn.__module__}:{fn.__qualname__}",
        "dependencies": deps,
    }
    SOLUTIONS.register((op, name), Solution(name=name, definition=op, fn=fn, spec=spec, **kw))
    return fn


def load() -> None:
    """Import every op and backend module once (each registers itself)."""
    DEFINITIONS.load()
    SOLUTIONS.load()


def definition(op: str) -> Definition:
    load()
    if op not in DEFINITIONS:
        raise ValueError(f"op {op!r} is unknown; allowed: {', '.join(DEFINITIONS.names())}")
    return DEFINITIONS.get(op)


def solutions(op: str) -> dict[str, Solution]:
    """backend name -> solution of `op`, the `torch` reference first (a new dict on every call)."""
    definition(op)
    return {name: sol for (of, name), sol in SOLUTIONS.items() if of == op}


def op_names() -> list[str]:
    load()
    return DEFINITIONS.names()


def backend_names() -> list[str]:
    load()
    return sorted({name for _, name in SOLUTIONS.names()})
