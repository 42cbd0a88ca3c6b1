"""`attnlab bench serve`: the engine against Hugging Face `generate()` on the same models and
prompts, in one run, plus a Poisson arrival stream and lightning's decode cost against context.

Models share one shape (d 256, 4 layers, 4 heads, vocab 256, random weights: speed does not
depend on them): `full` (Llama-shaped), `lightning`, and `hybrid` (3 lightning : 1 full). Peers:
- HF Llama `generate()` with the same weights as `full` (tokens checked equal to the engine's);
- attnlab's own `generate()` (HF's GenerationMixin over the dense cache) for every family.
Throughput is output tokens / wall time of the whole batch (prefill included), greedy.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch

from ..archs import AttnLabConfig, AttnLabForCausalLM, to_llama
from ..kernels import describe_kernels, kernel_record
from .config import EngineConfig
from .engine import LLMEngine
from .sampling import SamplingParams

FAMILIES = {
    "full": {"layers": "F"},
    "lightning": {"layers": "L"},
    "hybrid": {"layers": "LLLF"},  # 3 lightning : 1 full (Qwen3-Next's ratio)
}


@dataclass
class BenchOptions:
    out: Path
    families: list[str]
    batches: list[int]
    prompt_len: int = 512
    new_tokens: int = 128
    hidden: int = 256
    layers: int = 4
    heads: int = 4
    cache_memory: str = "2GiB"
    poisson_rate: float = 2.0  # requests per second
    poisson_requests: int = 24
    decode_contexts: tuple[int, ...] = (512, 4096, 32768)
    hf: bool = True
    repeats: int = 3  # rounds in which the engine and its peers take turns; medians are reported
    seed: int = 0


def random_model(layers, *, hidden: int, depth: int, heads: int, max_positions: int, seed: int,
                 mixers: dict | None = None, device: str = "cpu") -> AttnLabForCausalLM:  # fmt: skip
    """A benchmark model: byte vocabulary, MHA, random weights (speed does not depend on them)."""
    torch.manual_seed(seed)
    cfg = AttnLabConfig(
        vocab_size=256,
        hidden_size=hidden,
        num_hidden_layers=depth,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        layers=layers,
        mixers=mixers or {},
        max_position_embeddings=max_positions,
    )
    return AttnLabForCausalLM(cfg).to(device).eval()


def bench_model(family: str, opts: BenchOptions) -> AttnLabForCausalLM:
    return random_model(
        FAMILIES[family]["layers"], hidden=opts.hidden, depth=opts.layers, heads=opts.heads,
        max_positions=max(65536, *opts.decode_contexts) + 256, seed=opts.seed,
    )  # fmt: skip


def engine_for(model, opts: BenchOptions, **overrides) -> LLMEngine:
    config = EngineConfig(cache_memory=opts.cache_memory, max_num_seqs=max(64, *opts.batches), **overrides)
    return LLMEngine(model, None, config)


def run_batch(engine: LLMEngine, prompts: list[list[int]], new: int) -> dict:
    """All prompts arrive at once; -> throughput, TTFT, time between tokens, tokens."""
    params = SamplingParams(max_tokens=new, ignore_eos=True)
    start = time.perf_counter()
    ids = [engine.add_request(p, params, arrival_time=start) for p in prompts]
    done = {}
    while engine.has_unfinished():
        for out in engine.step():
            if out.finished:
                done[out.request_id] = out
    wall = time.perf_counter() - start
    outs = [done[i] for i in ids]
    tbt = [d for o in outs for d in o.metrics.time_between_tokens]
    return {
        "output_tokens_per_s": len(prompts) * new / wall,
        "wall_s": wall,
        "ttft_mean_s": statistics.mean(o.metrics.ttft for o in outs),
        "tbt_p50_s": percentile(tbt, 50),
        "tbt_p99_s": percentile(tbt, 99),
        "tokens": [o.token_ids for o in outs],
    }


@torch.inference_mode()
def run_generate(model, prompts: list[list[int]], new: int) -> dict:
    """HF generate() on one batch of equal-length prompts: throughput and TTFT (a 1-token call)."""
    ids = torch.tensor(prompts)
    kw = {"do_sample": False, "pad_token_id": 0, "eos_token_id": None}
    start = time.perf_counter()
    model.generate(ids, max_new_tokens=1, min_new_tokens=1, **kw)
    ttft = time.perf_counter() - start
    start = time.perf_counter()
    out = model.generate(ids, max_new_tokens=new, min_new_tokens=new, **kw)
    wall = time.perf_counter() - start
    return {
        "output_tokens_per_s": len(prompts) * new / wall,
        "wall_s": wall,
        "ttft_mean_s": ttft,
        "tokens": out[:, ids.shape[1] :].tolist(),
    }


def median_run(outs: list[dict]) -> dict:
    """The run with the median throughput, plus every repeat's throughput."""
    ordered = sorted(outs, key=lambda o: o["output_tokens_per_s"])
    mid = {k: v for k, v in ordered[len(ordered) // 2].items() if k != "tokens"}
    mid["repeats_tokens_per_s"] = [o["output_tokens_per_s"] for o in outs]
    return mid


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    k = (len(ordered) - 1) * q / 100
    lo = int(k)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def poisson_stream(engine: LLMEngine, opts: BenchOptions, gen: torch.Generator) -> dict:
    """Requests arrive with exponential gaps at `poisson_rate`; the engine steps in real time."""
    gaps = torch.empty(opts.poisson_requests).exponential_(opts.poisson_rate, generator=gen).tolist()
    lens = torch.randint(opts.prompt_len // 4, opts.prompt_len + 1, (opts.poisson_requests,), generator=gen)
    prompts = [torch.randint(1, 256, (int(n),), generator=gen).tolist() for n in lens]
    params = SamplingParams(max_tokens=opts.new_tokens, ignore_eos=True)
    start = time.perf_counter()
    arrivals = [start + t for t in torch.tensor(gaps).cumsum(0).tolist()]
    pending, outs = list(zip(arrivals, prompts, strict=True)), []
    while pending or engine.has_unfinished():
        now = time.perf_counter()
        while pending and pending[0][0] <= now:
            at, p = pending.pop(0)
            engine.add_request(p, params, arrival_time=at)
        if not engine.has_unfinished():
            time.sleep(max(0.0, pending[0][0] - time.perf_counter()))
            continue
        outs += [o for o in engine.step() if o.finished]
    wall = time.perf_counter() - start
    ttft = [o.metrics.ttft for o in outs]
    tbt = [d for o in outs for d in o.metrics.time_between_tokens]
    return {
        "rate_requests_per_s": opts.poisson_rate,
        "requests": len(outs),
        "completed_requests_per_s": len(outs) / wall,
        "output_tokens_per_s": sum(len(o.token_ids) for o in outs) / wall,
        "ttft_p50_s": percentile(ttft, 50),
        "ttft_p99_s": percentile(ttft, 99),
        "tbt_p50_s": percentile(tbt, 50),
        "tbt_p99_s": percentile(tbt, 99),
    }


def decode_cost(model, opts: BenchOptions, context: int, steps: int = 32) -> float:
    """Seconds per decode step of one sequence whose context is already in the cache."""
    engine = engine_for(model, opts, max_model_len=context + steps + 8)
    gen = torch.Generator().manual_seed(opts.seed)
    prompt = torch.randint(1, 256, (context,), generator=gen).tolist()
    engine.add_request(prompt, SamplingParams(max_tokens=steps, ignore_eos=True))
    times = []
    while engine.has_unfinished():
        t0 = time.perf_counter()
        outs = engine.step()
        if outs and len(outs[0].token_ids) > 1:  # the steps after the prefill: pure decodes
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def sync(device: str) -> None:
    """Wait for queued GPU work, so a timer around it measures the work."""
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def median_seconds(fn, reps: int = 5, device: str = "cpu") -> float:
    """Median wall time of `fn()` over `reps` calls, after one warm-up call."""
    fn()
    sync(device)
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def copy_bandwidth(device: str = "cpu") -> float:
    """Bytes read + written per second by a 256 MiB fp32 copy."""
    src = torch.empty(64 << 20, dtype=torch.float32, device=device).normal_()
    dst = torch.empty_like(src)
    return 2 * src.numel() * 4 / median_seconds(lambda: dst.copy_(src), device=device)


def matmul_rate(rows: int, d: int, ff: int, reps: int = 5, device: str = "cpu") -> float:
    """fp32 FLOP/s of a [rows, d] x [d, ff] product."""
    a, b = torch.randn(rows, d, device=device), torch.randn(d, ff, device=device)
    return 2 * rows * d * ff / median_seconds(lambda: a @ b, reps, device)


def machine_rates(opts: BenchOptions, batch_rows: int) -> dict:
    """This machine's measured limits: copy bandwidth (bytes read + written / s), and fp32 matmul
    rates at the prefill shape and at the decode shape (FLOP/s), medians of a few repeats."""
    d, ff = opts.hidden, 4 * opts.hidden
    rates = {
        "memory_bandwidth_bytes_per_s": copy_bandwidth(),
        "matmul_prefill_flops_per_s": matmul_rate(min(2048, opts.prompt_len * 8), d, ff),
    }
    for rows in sorted(set(batch_rows)):
        rates[f"matmul_decode_b{rows}_flops_per_s"] = matmul_rate(rows, d, ff, reps=50)
    return rates


def roofline_seconds(model, batch: int, opts: BenchOptions, rates: dict) -> float:
    """The least time any engine could take for the batch on this machine: prefill FLOPs at the
    prefill matmul rate, then each decode step at whichever bound is slower, reading every weight
    and each sequence's cache once, or its FLOPs at the decode-shape matmul rate. FLOPs: 2 per weight
    and token, plus q.k and p.v of the full-attention layers (linear, window and latent layers add
    little at these lengths and are left out, which only lowers the floor)."""
    weights = sum(p.numel() for n, p in model.named_parameters() if "embed_tokens" not in n)
    elem = 4
    attn = sum(
        2 * m.num_heads * m.head_dim for m in model.mixers() if m.cache_spec().kind == "kv"
    )  # FLOPs per (query, key) pair over the softmax layers: q.k and p.v
    p, new = opts.prompt_len, opts.new_tokens
    prefill = batch * (2 * weights * p + attn * p * (p + 1) / 2) / rates["matmul_prefill_flops_per_s"]
    decode = 0.0
    rate = rates[f"matmul_decode_b{batch}_flops_per_s"]
    for step in range(new - 1):
        ctx = p + step + 1
        read = weights * elem + batch * model.state_bytes(ctx)
        flops = batch * (2 * weights + attn * ctx)
        decode += max(read / rates["memory_bandwidth_bytes_per_s"], flops / rate)
    return prefill + decode


def run(opts: BenchOptions, progress=print) -> dict:
    gen = torch.Generator().manual_seed(opts.seed)
    results = {
        "environment": environment(),
        "options": {k: str(v) for k, v in vars(opts).items()},
        "decode_contexts": list(opts.decode_contexts),
        "machine": machine_rates(opts, opts.batches),
        "rows": [],
    }
    progress("  machine: " + ", ".join(f"{k} {v:.3g}" for k, v in results["machine"].items()))
    for family in opts.families:
        model = bench_model(family, opts)
        llama = to_llama(model) if opts.hf and family == "full" else None
        for batch in opts.batches:
            prompts = torch.randint(1, 256, (batch, opts.prompt_len), generator=gen).tolist()
            engine = engine_for(model, opts)
            run_batch(engine, [p[:32] for p in prompts[:2]], 4)  # warm-up
            runners = {"engine": partial(run_batch, engine, prompts, opts.new_tokens)}
            if opts.hf:
                runners["attnlab_generate"] = partial(run_generate, model, prompts, opts.new_tokens)
                if llama is not None:
                    runners["hf_llama_generate"] = partial(run_generate, llama, prompts, opts.new_tokens)
            # Peers take turns, `repeats` rounds: a noisy neighbour hits every peer alike, and the
            # median of each is reported with its range.
            runs = {name: [] for name in runners}
            for _ in range(opts.repeats):
                for name, fn in runners.items():
                    runs[name].append(fn())
            row = {"family": family, "batch": batch}
            for name, outs in runs.items():
                row[name] = median_run(outs)
            row["roofline_tokens_per_s"] = (
                batch * opts.new_tokens / roofline_seconds(model, batch, opts, results["machine"])
            )
            row["tokens_equal"] = {
                peer: runs[peer][0]["tokens"] == runs["engine"][0]["tokens"]
                for peer in runs
                if peer != "engine"
            }
            results["rows"].append(row)
            progress(row_line(row))
        stream = poisson_stream(engine_for(model, opts), opts, gen)
        results.setdefault("poisson", {})[family] = stream
        progress(f"  {family} poisson: {stream['completed_requests_per_s']:.2f} req/s, TTFT p50 "
                 f"{stream['ttft_p50_s']:.3f}s p99 {stream['ttft_p99_s']:.3f}s")  # fmt: skip
        if family == "lightning" or family == "full":
            contexts = [c for c in opts.decode_contexts if family == "lightning" or c <= 4096]
            costs = {str(c): decode_cost(model, opts, c) for c in contexts}
            results.setdefault("decode_cost_s", {})[family] = costs
            progress(
                f"  {family} decode step: "
                + ", ".join(f"ctx {c}: {s * 1e3:.2f} ms" for c, s in costs.items())
            )
    opts.out.mkdir(parents=True, exist_ok=True)
    results["kernels"] = kernel_record()
    (opts.out / "results.json").write_text(json.dumps(results, indent=2))
    (opts.out / "bench_serve.md").write_text(
        markdown(results) + f"\n{describe_kernels(results['kernels'])}\n"
    )
    return results


def row_line(row: dict) -> str:
    e = row["engine"]
    text = f"  {row['family']:9s} batch {row['batch']:3d}: engine {e['output_tokens_per_s']:7.1f} tok/s"
    for peer in ("attnlab_generate", "hf_llama_generate"):
        if peer in row:
            ratio = e["output_tokens_per_s"] / row[peer]["output_tokens_per_s"]
            text += f" | {peer} {row[peer]['output_tokens_per_s']:7.1f} tok/s ({ratio:.2f}x)"
    return text


def environment() -> dict:
    return {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "time": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


def _ms(s: float | None) -> str:
    return "-" if s is None else f"{s * 1e3:.1f}"


def markdown(results: dict) -> str:
    env = results["environment"]
    lines = [
        "# attnlab bench serve",
        "",
        f"torch {env['torch']}, {env['threads']} threads, {env['time']}. Output tokens/s over the whole batch "
        "(prefill included), greedy; medians of the rounds in which the engine and its peers take turns (engine range "
        "in brackets); ratios are engine / peer. Roofline: "
        "the most tokens/s any engine could reach here (prefill FLOPs at the measured prefill matmul rate, each "
        "decode step at the slower of weights + cache bytes / measured bandwidth and its FLOPs / the measured "
        "matmul rate at that batch).",
        "",
        "Machine: " + ", ".join(f"{k} {v:.3g}" for k, v in results["machine"].items()) + ".",
        "",
        "| family | batch | engine tok/s | engine TTFT ms | engine TBT p50/p99 ms | attnlab generate() tok/s | "
        "HF Llama generate() tok/s | engine / HF Llama | engine / generate() | roofline tok/s | engine / roofline "
        "| HF Llama / roofline | tokens equal |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in results["rows"]:
        e, g, h = row["engine"], row.get("attnlab_generate"), row.get("hf_llama_generate")
        tps = e["output_tokens_per_s"]
        peer_tps = [None if p is None else p["output_tokens_per_s"] for p in (g, h)]
        cells = [
            row["family"],
            str(row["batch"]),
            f"{tps:.1f} ({min(e['repeats_tokens_per_s']):.0f}-{max(e['repeats_tokens_per_s']):.0f})",
            _ms(e["ttft_mean_s"]),
            f"{_ms(e['tbt_p50_s'])} / {_ms(e['tbt_p99_s'])}",
            *("-" if p is None else f"{p:.1f}" for p in peer_tps),
            *("-" if p is None else f"{tps / p:.2f}x" for p in reversed(peer_tps)),
            f"{row['roofline_tokens_per_s']:.0f}",
            f"{tps / row['roofline_tokens_per_s']:.2f}",
            "-" if peer_tps[1] is None else f"{peer_tps[1] / row['roofline_tokens_per_s']:.2f}",
            ", ".join(f"{k}: {v}" for k, v in row["tokens_equal"].items()) or "-",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    if results.get("poisson"):
        lines += ["", "Poisson arrivals (prompt lengths uniform in [L/4, L], same new tokens):", "",
                  "| family | rate req/s | done req/s | output tok/s | TTFT p50 / p99 ms | TBT p50 / p99 ms |",
                  "|---|---|---|---|---|---|"]  # fmt: skip
        for family, s in results["poisson"].items():
            lines.append(
                f"| {family} | {s['rate_requests_per_s']} | {s['completed_requests_per_s']:.2f} | "
                f"{s['output_tokens_per_s']:.1f} | {_ms(s['ttft_p50_s'])} / {_ms(s['ttft_p99_s'])} | "
                f"{_ms(s['tbt_p50_s'])} / {_ms(s['tbt_p99_s'])} |"
            )
    if results.get("decode_cost_s"):
        contexts = results["decode_contexts"]
        lines += ["", "Decode step of one sequence against its context (ms):", "",
                  "| family | " + " | ".join(f"ctx {c}" for c in contexts) + " |", "|---" * (1 + len(contexts)) + "|"]  # fmt: skip
        for family, costs in results["decode_cost_s"].items():
            lines.append(f"| {family} | " + " | ".join(_ms(costs.get(str(c))) for c in contexts) + " |")
    return "\n".join(lines) + "\n"
