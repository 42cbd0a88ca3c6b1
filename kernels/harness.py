"""Run solutions on workloads: correctness against the reference (outputs and every gradient) and
timing, one Trace per (workload, solution).

Correctness is fla's metric (relative RMSE, `tensors.relative_rmse`) against the reference run
in fp32 (float64 stays float64) on the same, already-rounded inputs, so a bf16 backend is judged
against the exact answer to its own inputs. Gradients: every output gets a seeded random
cotangent, and the gradients of every differentiable input present (q, k, v, the initial state,
sinks, ...) are compared.
"""

from __future__ import annotations

import ctypes
import math
import statistics
import time
from collections.abc import Callable
from datetime import datetime, timezone

import torch

from . import registry
from .definition import Definition, Trace, Workload
from .environment import device_name, library_version
from .registry import Solution
from .tensors import relative_rmse

# Largest relative RMSE that passes, by input dtype. fp32 allows for TF32 dots in GPU kernels
# (Triton's and fla's default for fp32); bf16/fp16 for rounding the inputs of each dot.
TOLERANCE = {torch.float64: 1e-7, torch.float32: 2e-3, torch.bfloat16: 1e-2, torch.float16: 1e-2}
FAILED = ("INCORRECT_SHAPE", "INCORRECT_DTYPE", "INCORRECT_NUMERICAL", "RUNTIME_ERROR")


def environment(device: torch.device) -> dict:
    return {
        "hardware": device_name(device.type),
        "threads": torch.get_num_threads(),
        "libs": {d: library_version(d) for d in ("torch", "triton", "flash-linear-attention")},
    }


def keep_freed_memory() -> bool:
    """Make glibc keep freed buffers in the heap instead of returning them to the OS.

    By default every buffer over 128 KiB is a fresh mmap, so each new 8 MB intermediate is
    page-faulted and zeroed by the kernel on first touch (~8 % of a chunked lightning step on the
    CPU of kernels/BENCH_RESULTS.md, and noise). PyTorch's CPU tuning guide fixes it with
    jemalloc/tcmalloc; this is the same effect for the benchmark process only (training runs can
    set MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_TRIM_THRESHOLD_=1073741824). -> applied.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False  # not glibc: nothing to tune
    m_trim_threshold, m_mmap_threshold = -1, -3  # mallopt parameter ids (malloc.h)
    return bool(libc.mallopt(m_mmap_threshold, 32 << 20)) and bool(libc.mallopt(m_trim_threshold, 1 << 30))


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_ms(fn: Callable, device: torch.device, reps: int, budget_s: float = 20.0) -> float:
    """Median wall time of fn() in ms, after one warm-up call; fewer reps when one call is slow."""
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    first = time.perf_counter() - start
    reps = max(1, min(reps, int(budget_s / max(first, 1e-9))))
    times = []
    for _ in range(reps):
        sync(device)
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def _as_list(result) -> list:
    return list(result) if isinstance(result, (tuple, list)) else [result]


def _grad_names(defn: Definition, inputs: dict) -> list[str]:
    return [n for n in defn.grad_inputs if isinstance(inputs.get(n), torch.Tensor)]


def _with_grad(inputs: dict, names: list[str]) -> dict:
    return {k: (v.detach().clone().requires_grad_() if k in names else v) for k, v in inputs.items()}


def _upcast(inputs: dict) -> dict:
    """Floating tensors to at least fp32: the reference answers the rounded inputs exactly."""
    return {
        k: v.to(torch.promote_types(v.dtype, torch.float32))
        if isinstance(v, torch.Tensor) and v.is_floating_point()
        else v
        for k, v in inputs.items()
    }


def forward_backward(fn: Callable, inputs: dict, names: list[str], cotangents: Callable | None):
    """-> outputs, gradients of `names`. `cotangents(outputs) -> list` (None: forward only)."""
    ins = _with_grad(inputs, names) if cotangents is not None else inputs
    with torch.set_grad_enabled(cotangents is not None):
        outs = _as_list(fn(**ins))
    if cotangents is None:
        return outs, None
    # not strict: a backend that returns too few outputs is reported by `evaluate` (INCORRECT_SHAPE)
    pairs = [
        (o, c) for o, c in zip(outs, cotangents(outs), strict=False) if o is not None and o.requires_grad
    ]
    grads = torch.autograd.grad(
        [o for o, _ in pairs], [ins[n] for n in names], [c.to(o.dtype) for o, c in pairs], allow_unused=True
    )
    return outs, list(grads)


class Reference:
    """The ground truth of one workload: outputs and gradients, computed once."""

    def __init__(self, defn: Definition, sol: Solution, inputs: dict, seed: int):
        self.names = _grad_names(defn, inputs)
        self.seed = seed
        # Cotangents are rounded to the inputs' dtype, so a bf16 backend sees exactly the same ones.
        self.dtype = next(
            v.dtype for v in inputs.values() if isinstance(v, torch.Tensor) and v.is_floating_point()
        )
        self.cotangents: list | None = None
        backward = sol.backward and bool(self.names)
        self.outputs, self.grads = forward_backward(
            sol.fn, _upcast(inputs), self.names, self._make_cotangents if backward else None
        )

    def _make_cotangents(self, outs: list) -> list:
        gen = torch.Generator().manual_seed(self.seed + 1)
        self.cotangents = [
            None
            if o is None
            else torch.randn(o.shape, generator=gen).to(self.dtype).to(device=o.device, dtype=o.dtype)
            for o in outs
        ]
        return self.cotangents


def _compare(name: str, ref: torch.Tensor | None, out, errors: dict) -> str | None:
    """Record the relative RMSE of one tensor; -> a failure status, or None."""
    if ref is None:
        return None
    if out is None:
        errors[name] = math.inf
        return "INCORRECT_SHAPE"
    if tuple(out.shape) != tuple(ref.shape):
        errors[name] = math.inf
        return "INCORRECT_SHAPE"
    errors[name] = relative_rmse(ref, out)
    return None


def evaluate(
    defn: Definition,
    workload: Workload,
    sol: Solution,
    inputs: dict,
    ref: Reference,
    device: torch.device,
    reps: int,
) -> Trace:
    """Correctness, then (if it passed and reps > 0) forward and forward+backward latency."""
    dtype = next(v.dtype for v in inputs.values() if isinstance(v, torch.Tensor) and v.is_floating_point())
    evaluation: dict = {"status": "PASSED", "log": "", "environment": environment(device)}
    evaluation["timestamp"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    trace = Trace(defn.name, workload.to_json(), sol.name, evaluation)
    reason = sol.unusable_reason(device, dtype, needs_grad=False) or sol.supports(inputs)
    if reason:
        evaluation.update(status="UNSUPPORTED", log=reason)
        return trace
    backward = sol.backward and ref.grads is not None
    try:
        outs, grads = forward_backward(
            sol.fn, inputs, ref.names, (lambda _: ref.cotangents) if backward else None
        )
    except Exception as exc:  # a backend's failure is a result to report, not a crash of the run
        evaluation.update(status="RUNTIME_ERROR", log=f"{type(exc).__name__}: {exc}")
        return trace
    errors: dict[str, float] = {}
    status = None
    if len(outs) != len(ref.outputs):  # e.g. lightning_prefill's `states` only with state_checkpoints
        evaluation["log"] += f"{len(outs)} outputs, the reference gave {len(ref.outputs)}. "
        status = "INCORRECT_SHAPE"
    names = list(defn.outputs)[: len(ref.outputs)]  # optional trailing outputs the call did not ask for
    for name, r, o in zip(names, ref.outputs, outs, strict=False):
        status = _compare(name, r, o, errors) or status
        if o is not None and r is not None and status is None:
            expected = _declared_dtype(defn.outputs[name]["dtype"], inputs)
            if o.dtype != expected:
                status = "INCORRECT_DTYPE"
                evaluation["log"] += f"{name} is {o.dtype}, expected {expected}. "
    for name, r, g in zip(ref.names, ref.grads or [], grads or [], strict=False):
        status = _compare(f"d{name}", r, g, errors) or status
    tol = TOLERANCE[dtype]
    worst = max(errors.values(), default=0.0)
    if status is None and worst > tol:
        status = "INCORRECT_NUMERICAL"
        evaluation["log"] += f"relative RMSE {worst:.2e} > tolerance {tol:.0e}"
    evaluation["status"] = status or "PASSED"
    evaluation["correctness"] = {
        "max_relative_error": worst,
        "relative_rmse": errors,
        "tolerance": tol,
        "checked": "outputs and gradients" if backward else "outputs",
    }
    if evaluation["status"] == "PASSED" and reps > 0:
        evaluation["performance"] = _timings(sol, inputs, ref, device, reps, backward)
    return trace


def _declared_dtype(text: str, inputs: dict) -> torch.dtype:
    """'v.dtype' -> inputs['v'].dtype; 'float32' -> torch.float32 (float64 inputs keep float64)."""
    if text.endswith(".dtype"):
        return inputs[text.removesuffix(".dtype")].dtype
    if text == "storage":  # state_store: the storage dtype named by its `dtype` input
        from .state.ops import STORAGE_DTYPES

        return STORAGE_DTYPES[inputs["dtype"]]
    first = next(v for v in inputs.values() if isinstance(v, torch.Tensor) and v.is_floating_point())
    return (
        torch.promote_types(getattr(torch, text), first.dtype) if text == "float32" else getattr(torch, text)
    )


def _timings(
    sol: Solution, inputs: dict, ref: Reference, device: torch.device, reps: int, backward: bool
) -> dict:
    with torch.no_grad():
        perf = {"latency_ms": time_ms(lambda: sol.fn(**inputs), device, reps)}
    if backward:
        ins = _with_grad(inputs, ref.names)
        targets = [ins[n] for n in ref.names]

        def step():
            outs = _as_list(sol.fn(**ins))
            pairs = [
                (o, c) for o, c in zip(outs, ref.cotangents, strict=True) if o is not None and o.requires_grad
            ]
            torch.autograd.grad(
                [o for o, _ in pairs], targets, [c.to(o.dtype) for o, c in pairs], allow_unused=True
            )

        perf["latency_fwd_bwd_ms"] = time_ms(step, device, reps)
    return perf


def run(
    workloads: dict[str, list[Workload]],
    device: torch.device,
    backends: list[str] | None = None,
    reps: int = 3,
    seed: int = 0,
    progress: Callable[[Trace], None] | None = None,
) -> list[Trace]:
    """Every solution of every op on its workloads; reference latency and speedups filled in."""
    traces = []
    for op, items in workloads.items():
        defn, sols = registry.definition(op), registry.solutions(op)
        for workload in items:
            inputs = defn.make_inputs(workload, device, torch.Generator().manual_seed(seed))
            ref = Reference(defn, sols[workload.reference], inputs, seed)
            chosen = [
                s
                for s in sols.values()
                if (backends is None or s.name in backends) and s.name not in workload.skip
            ]
            batch = []
            for sol in chosen:
                trace = evaluate(defn, workload, sol, inputs, ref, device, reps)
                batch.append(trace)
                if progress:
                    progress(trace)
            _fill_speedups(batch)
            traces += batch
            del ref
    return traces


def _fill_speedups(batch: list[Trace]) -> None:
    """performance.reference_latency_ms / speedup_factor against the `torch` reference (if timed)."""
    ref = next((t for t in batch if t.solution == "torch" and "performance" in t.evaluation), None)
    if ref is None:
        return
    ref_perf = ref.evaluation["performance"]
    for t in batch:
        perf = t.evaluation.get("performance")
        if perf is None:
            continue
        perf["reference_latency_ms"] = ref_perf["latency_ms"]
        perf["speedup_factor"] = ref_perf["latency_ms"] / perf["latency_ms"]
        if "latency_fwd_bwd_ms" in perf and "latency_fwd_bwd_ms" in ref_perf:
            perf["reference_latency_fwd_bwd_ms"] = ref_perf["latency_fwd_bwd_ms"]
            perf["speedup_factor_fwd_bwd"] = ref_perf["latency_fwd_bwd_ms"] / perf["latency_fwd_bwd_ms"]
