"""Results of a harness run: JSON traces, a markdown table, backend rankings, the bmm yardstick.

Speedups are latency ratios (other / this: > 1 means this backend is faster), forward and
forward+backward. Peers are the outside implementations an op is compared with: fla (chunk
kernels), fla_naive (fla's pure-torch code) and SDPA.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from pathlib import Path

import torch

from . import registry
from .definition import Trace
from .harness import FAILED, time_ms
from .lightning.torch_chunk import DEFAULT_CHUNK, matmul_shapes

PEERS = ("fla", "fla_naive", "sdpa")


def _perf(t: Trace) -> dict:
    return t.evaluation.get("performance", {})


def _by_workload(traces: list[Trace]) -> dict[tuple[str, str], list[Trace]]:
    groups: dict[tuple[str, str], list[Trace]] = defaultdict(list)
    for t in traces:
        groups[(t.definition, t.workload["uuid"])].append(t)
    return groups


def _ratio(other: dict, mine: dict, key: str) -> str:
    return f"{other[key] / mine[key]:.1f}×" if key in other and key in mine else "–"


def _speedups(mine: dict, other: dict) -> str:
    fwd = _ratio(other, mine, "latency_ms")
    both = _ratio(other, mine, "latency_fwd_bwd_ms")
    return fwd if both == "–" else f"{fwd} / {both}"


def markdown(traces: list[Trace]) -> str:
    lines = []
    for op in dict.fromkeys(t.definition for t in traces):
        lines += [
            f"### {op}",
            "",
            "| workload | backend | status | max rel-RMSE | fwd ms | fwd+bwd ms | vs torch | vs peers |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for (name, _), group in _by_workload(traces).items():
            if name != op:
                continue
            ref = next((_perf(t) for t in group if t.solution == "torch"), {})
            peers = [t for t in group if t.solution in PEERS and _perf(t)]
            for t in group:
                ev, perf = t.evaluation, _perf(t)
                err = ev.get("correctness", {}).get("max_relative_error")
                vs_peers = ", ".join(
                    f"{p.solution} {_speedups(perf, _perf(p))}" for p in peers if p is not t and perf
                )
                cells = [
                    t.workload["label"],
                    t.solution,
                    ev["status"] if ev["status"] != "UNSUPPORTED" else "n/a",
                    "–" if err is None else f"{err:.1e}",
                    f"{perf['latency_ms']:.2f}" if "latency_ms" in perf else "–",
                    f"{perf['latency_fwd_bwd_ms']:.2f}" if "latency_fwd_bwd_ms" in perf else "–",
                    _speedups(perf, ref) if perf and ref and t.solution != "torch" else "–",
                    vs_peers or "–",
                ]
                lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def rankings(traces: list[Trace]) -> dict[str, dict[str, list[str]]]:
    """op -> mode -> backends that passed every workload they ran, fastest first.

    Speed is the geometric mean over workloads of latency / (best latency on that workload), so
    one long workload does not outweigh the rest. Peers and failed backends are left out.
    """
    out: dict[str, dict[str, list[str]]] = {}
    for op in dict.fromkeys(t.definition for t in traces):
        sols = registry.solutions(op)
        mine = [t for t in traces if t.definition == op]
        failed = {t.solution for t in mine if t.evaluation["status"] in FAILED}
        out[op] = {}
        for mode, key in (("fwd", "latency_ms"), ("fwd+bwd", "latency_fwd_bwd_ms")):
            logs: dict[str, list[float]] = defaultdict(list)
            for (_, _), group in _by_workload(mine).items():
                timed = {t.solution: _perf(t)[key] for t in group if key in _perf(t)}
                if not timed:
                    continue
                best = min(timed.values())
                for name, ms in timed.items():
                    logs[name].append(math.log(ms / best))
            ok = [n for n in logs if n not in failed and not sols[n].peer]
            out[op][mode] = sorted(ok, key=lambda n: sum(logs[n]) / len(logs[n]))
    return out


def bmm_yardstick(traces: list[Trace], device: torch.device, reps: int) -> list[dict]:
    """For every timed torch_chunk lightning_prefill run: its GFLOP/s (forward+backward) and the
    rate torch.bmm reaches on the very same matmul shapes (contiguous operands, preallocated
    output: the practical limit), run right after it on this machine."""
    rows = []
    for t in traces:
        perf = _perf(t)
        if (
            t.definition != "lightning_prefill"
            or t.solution != "torch_chunk"
            or "latency_fwd_bwd_ms" not in perf
        ):
            continue
        ax = t.workload["axes"]
        cu = t.workload["inputs"].get("cu_seqlens", {}).get("value")
        n, longest = (
            (ax["B"], ax["T"])
            if cu is None
            else (len(cu) - 1, max(b - a for a, b in zip(cu, cu[1:], strict=False)))
        )
        shapes = matmul_shapes(n, longest, ax["H"], ax["K"], ax["V"], DEFAULT_CHUNK, backward=True)
        flops = sum(2 * b * m * k * nn for b, m, k, nn in shapes)
        bmm_ms = 0.0
        for b, m, k, nn in shapes:
            x, y = torch.randn(b, m, k, device=device), torch.randn(b, k, nn, device=device)
            z = torch.empty(b, m, nn, device=device)  # preallocated: the GEMM alone, no allocator
            bmm_ms += time_ms(lambda x=x, y=y, z=z: torch.bmm(x, y, out=z), device, reps)
        ms = perf["latency_fwd_bwd_ms"]
        rows.append(
            {
                "workload": t.workload["label"],
                "matmul_gflop": flops / 1e9,
                "torch_chunk_fwd_bwd_ms": ms,
                "torch_chunk_gflops": flops / ms / 1e6,
                "bmm_ms": bmm_ms,
                "bmm_gflops": flops / bmm_ms / 1e6,
                "fraction_of_bmm": bmm_ms / ms,
            }
        )
    return rows


def bmm_markdown(rows: list[dict]) -> str:
    if not rows:
        return ""
    lines = [
        "| workload | matmul GFLOP (fwd+bwd) | torch_chunk ms | torch_chunk GFLOP/s | torch.bmm GFLOP/s, same shapes | fraction |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['workload']} | {r['matmul_gflop']:.2f} | {r['torch_chunk_fwd_bwd_ms']:.1f} | "
            f"{r['torch_chunk_gflops']:.1f} | {r['bmm_gflops']:.1f} | {r['fraction_of_bmm']:.2f} |"
        )
    return "\n".join(lines) + "\n"


def write_run(out: Path, title: str, traces: list[Trace], summary: dict, bmm_rows: list[dict]) -> Path:
    """traces.jsonl (one Trace per line), definitions.json, summary.json, results.md -> results.md path."""
    out.mkdir(parents=True, exist_ok=True)
    with (out / "traces.jsonl").open("w") as f:
        for t in traces:
            f.write(json.dumps(t.to_json()) + "\n")
    ops = dict.fromkeys(t.definition for t in traces)
    (out / "definitions.json").write_text(
        json.dumps([registry.definition(op).to_json() for op in ops], indent=2)
    )
    (out / "summary.json").write_text(json.dumps({**summary, "bmm_yardstick": bmm_rows}, indent=2))
    env = traces[0].evaluation["environment"] if traces else {}
    alloc = (
        ", freed memory kept in the heap (glibc mallopt)" if summary.get("malloc_keeps_freed_memory") else ""
    )
    text = [f"## {title}", "", f"Device: {env.get('hardware', '?')}, torch threads: {env.get('threads', '?')}{alloc}, "
            f"libs: {env.get('libs', {})}", "", markdown(traces)]  # fmt: skip
    if bmm_rows:
        text += [
            "### torch_chunk lightning_prefill vs torch.bmm on the same matmul shapes",
            "",
            bmm_markdown(bmm_rows),
        ]
    path = out / "results.md"
    path.write_text("\n".join(text))
    return path
